"""steps.register_model_version and steps.create_model_and_config through the provider's SageMakerHook,
against localaws: the experiment's description and content types, script mode's serving container."""

from __future__ import annotations

import json
import uuid


from tests.pipeline.steps_support import experiment, plan, write


def script_run(tmp_path, bucket="b"):
    folder = write(tmp_path / f"wine{uuid.uuid4().hex[:4]}", {"train.py": "", "inference.py": ""})
    resolved = experiment(
        folder,
        description="Gradient boosting on wine",
        deploy={
            "instance_type": "ml.m5.large",
            "smoke": {"content_type": "text/csv", "accept": "text/csv", "samples": "smoke/samples.csv"},
        },
    )
    run = plan(resolved, bucket)
    run["revision"]["commit"] = "0f1e2d3c4b5a69788796a5b4c3d2e1f001234567"
    return run


CODE = {
    "training_image": "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-scikit-learn:1.2-1-cpu-py3",
    "serving_image": "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-scikit-learn:1.2-1-cpu-py3",
    "hyperparameters": {"sagemaker_program": '"train.py"'},
    "environment": {
        "SAGEMAKER_PROGRAM": "inference.py",
        "SAGEMAKER_SUBMIT_DIRECTORY": "s3://b/x/sourcedir.tar.gz",
        "SAGEMAKER_REGION": "us-east-1",
        "SAGEMAKER_CONTAINER_LOG_LEVEL": "20",
    },
    "source": {"uri": "s3://b/x/sourcedir.tar.gz", "hash": "x"},
    "how": "",
}
BEST = {
    "training_job": "wine-train-1",
    "image": CODE["training_image"],
    "objective": {"metric": "validation:rmse", "type": "Minimize", "value": 52.5},
}
WEIGHTS = {"model_data_url": "s3://b/wine/models/k/model.tar.gz", "metadata_url": "s3://b/wine/models/k/metadata.json"}


def test_a_version_says_what_the_experiment_serves(hook, tmp_path):
    from ml_pipeline import steps

    run = script_run(tmp_path)
    run["params"]["model_package_group"] = f"wine-{uuid.uuid4().hex[:8]}"
    arn = steps.register_model_version(hook, run, BEST, WEIGHTS, CODE)
    assert steps.register_model_version(hook, run, BEST, WEIGHTS, CODE) == arn  # a retry: the same version
    sm = hook.conn
    group = sm.describe_model_package_group(ModelPackageGroupName=run["params"]["model_package_group"])
    assert group["ModelPackageGroupDescription"].startswith("Gradient boosting on wine")
    package = sm.describe_model_package(ModelPackageName=arn)
    spec = package["InferenceSpecification"]
    assert spec["SupportedContentTypes"] == ["text/csv"] and spec["SupportedResponseMIMETypes"] == ["text/csv"]
    container = spec["Containers"][0]
    assert container["Image"] == CODE["serving_image"] and container["Environment"] == CODE["environment"]
    assert container["Framework"] == "SKLEARN" and container["FrameworkVersion"] == "1.2-1"
    props = package["CustomerMetadataProperties"]
    assert props["experiment"] == run["experiment"]["name"] and props["commit"] == run["revision"]["commit"]
    assert "Digits" not in json.dumps(package, default=str)


def test_the_model_is_the_codes_serving_container(hook, tmp_path):
    from ml_pipeline import steps

    run = script_run(tmp_path)
    made = steps.create_model_and_config(hook, run, CODE, WEIGHTS["model_data_url"])
    assert steps.create_model_and_config(hook, run, CODE, WEIGHTS["model_data_url"]) == made
    described = hook.conn.describe_model(ModelName=made["model"])
    assert described["PrimaryContainer"]["Image"] == CODE["serving_image"]
    assert described["PrimaryContainer"]["Environment"] == CODE["environment"]
    config = hook.conn.describe_endpoint_config(EndpointConfigName=made["endpoint_config"])
    assert config["ProductionVariants"][0]["ModelName"] == made["model"]
