"""The request builders' shapes, checked by botocore's own validator against SageMaker's model (and the
patterns, which botocore's client does not check), in script mode and for an own container."""

from __future__ import annotations

import json

import pytest
import regex  # SageMaker's patterns are Java's (\p{L} ...): the regex module reads them

from tests.pipeline.steps_support import experiment, plan, write

SCRIPT_CODE = {
    "training_image": "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-training:2.5-cpu-py311",
    "serving_image": "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-inference:2.5-cpu-py311",
    "hyperparameters": {
        "sagemaker_program": '"train.py"',
        "sagemaker_submit_directory": '"s3://b/wine/source/abc/sourcedir.tar.gz"',
        "sagemaker_region": '"us-east-1"',
        "sagemaker_container_log_level": "20",
    },
    "environment": {
        "SAGEMAKER_PROGRAM": "inference.py",
        "SAGEMAKER_SUBMIT_DIRECTORY": "s3://b/wine/source/abc/sourcedir.tar.gz",
        "SAGEMAKER_REGION": "us-east-1",
        "SAGEMAKER_CONTAINER_LOG_LEVEL": "20",
    },
    "source": {"uri": "s3://b/wine/source/abc/sourcedir.tar.gz", "hash": "abc"},
    "how": "script mode",
}
IMAGE_CODE = {
    "training_image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/mine:1.0",
    "serving_image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/mine:1.0",
    "hyperparameters": {},
    "environment": {"SAGEMAKER_MODEL_SERVER_WORKERS": "2"},
    "source": None,
    "how": "image",
}
CHANNELS = {
    "train": "s3://b/wine/datasets/20260105/train/",
    "validation": "s3://b/wine/datasets/20260105/validation/",
    "extra": "s3://elsewhere/extra/",
}
HYPERPARAMETERS = {
    "epochs": 5,
    "learning_rate": 0.05,
    "optimizer": "adam",
    "augment": True,
    "layers": [64, 32],
    "unset": None,
}


def validate(operation: str, request: dict) -> None:
    """botocore's validator (types, required members, lengths) and each string's pattern, as the service
    checks them."""
    import botocore.session
    from botocore.validate import ParamValidator

    model = botocore.session.get_session().get_service_model("sagemaker")
    shape = model.operation_model(operation).input_shape
    report = ParamValidator().validate(request, shape)
    assert not report.has_errors(), report.generate_report()
    problems = []

    def walk(value, shape, path):
        if shape.type_name == "structure":
            for name, member in value.items():
                walk(member, shape.members[name], f"{path}.{name}")
        elif shape.type_name == "list":
            for index, item in enumerate(value):
                walk(item, shape.member, f"{path}[{index}]")
        elif shape.type_name == "map":
            for key, item in value.items():
                walk(key, shape.key, f"{path} key")
                walk(item, shape.value, f"{path}.{key}")
        elif shape.type_name == "string":
            pattern = shape.metadata.get("pattern")
            if pattern and not regex.fullmatch(pattern, value):
                problems.append(f"{path}={value!r} !~ {pattern}")
            if shape.enum and value not in shape.enum:
                problems.append(f"{path}={value!r} not in the enum")

    walk(request, shape, operation)
    assert problems == []


@pytest.fixture
def run(tmp_path):
    folder = write(tmp_path / "wine", {"train.py": "", "prepare.py": ""})
    resolved = experiment(
        folder,
        framework="pytorch",
        hyperparameters=HYPERPARAMETERS,
        channels={
            "train": {"content_type": "text/csv", "distribution": "ShardedByS3Key"},
            "validation": {"content_type": "application/x-npy"},
        },
        prepare="prepare:write",
    )
    made = plan(resolved, "b")
    made["revision"]["commit"] = "0f1e2d3c4b5a69788796a5b4c3d2e1f001234567"
    made["static_hyperparameters"] = {"epochs": 5, "optimizer": "adam"}
    made["tuning_config"] = {
        "Strategy": "Bayesian",
        "HyperParameterTuningJobObjective": {"Type": "Minimize", "MetricName": "validation:rmse"},
        "ResourceLimits": {"MaxNumberOfTrainingJobs": 4, "MaxParallelTrainingJobs": 2},
        "ParameterRanges": {
            "IntegerParameterRanges": [],
            "ContinuousParameterRanges": [
                {"Name": "learning_rate", "MinValue": "0.001", "MaxValue": "0.1", "ScalingType": "Logarithmic"}
            ],
            "CategoricalParameterRanges": [
                {"Name": "optimizer", "Values": ["adam", "sgd"]},
                {"Name": "batch_size", "Values": ["32", 64]},
            ],
        },
        "TrainingJobEarlyStoppingType": "Off",
    }
    return made


def test_a_script_mode_training_job(run):
    from ml_pipeline import sagemaker_requests as requests

    request = requests.training_job(run, SCRIPT_CODE, CHANNELS, {"SecurityGroupIds": ["sg-1"], "Subnets": ["subnet-1"]})
    validate("CreateTrainingJob", request)
    assert request["HyperParameters"] == {
        "epochs": "5",
        "learning_rate": "0.05",
        "optimizer": '"adam"',
        "augment": "true",
        "layers": "[64, 32]",
        **SCRIPT_CODE["hyperparameters"],
        "sagemaker_job_name": json.dumps(run["names"]["training_job"]),
    }
    assert request["AlgorithmSpecification"]["TrainingImage"] == SCRIPT_CODE["training_image"]
    assert request["AlgorithmSpecification"]["MetricDefinitions"] == run["metric_definitions"]
    channels = {c["ChannelName"]: c for c in request["InputDataConfig"]}
    assert list(channels) == ["train", "validation", "extra"]
    assert channels["train"]["ContentType"] == "text/csv"
    assert channels["train"]["DataSource"]["S3DataSource"]["S3DataDistributionType"] == "ShardedByS3Key"
    assert channels["validation"]["ContentType"] == "application/x-npy"
    assert channels["validation"]["DataSource"]["S3DataSource"]["S3DataDistributionType"] == "FullyReplicated"
    assert "ContentType" not in channels["extra"]  # none unless the experiment says
    assert channels["extra"]["DataSource"]["S3DataSource"]["S3Uri"] == "s3://elsewhere/extra/"
    assert {t["Key"]: t["Value"] for t in request["Tags"]} == {
        "project": "ml-pipeline",
        "experiment": "wine",
        "run": run["key"],
        "file_hash": "0123456789ab",
        "source_hash": run["revision"]["source_hash"],
        "commit": run["revision"]["commit"],
    }
    assert request["VpcConfig"] == {"SecurityGroupIds": ["sg-1"], "Subnets": ["subnet-1"]}


def test_an_own_containers_training_job_gets_plain_strings(run):
    from ml_pipeline import sagemaker_requests as requests

    request = requests.training_job(run, IMAGE_CODE, CHANNELS)
    validate("CreateTrainingJob", request)
    assert request["HyperParameters"] == {
        "epochs": "5",
        "learning_rate": "0.05",
        "optimizer": "adam",
        "augment": "true",
        "layers": "[64, 32]",
    }
    assert "VpcConfig" not in request


def test_a_script_mode_tuning_job(run):
    from ml_pipeline import sagemaker_requests as requests

    request = requests.tuning_job(run, SCRIPT_CODE, CHANNELS)
    validate("CreateHyperParameterTuningJob", request)
    definition = request["TrainingJobDefinition"]
    assert definition["StaticHyperParameters"] == {
        "epochs": "5",
        "optimizer": '"adam"',
        **SCRIPT_CODE["hyperparameters"],
        "sagemaker_job_name": json.dumps(run["names"]["tuning_job"]),
    }
    ranges = request["HyperParameterTuningJobConfig"]["ParameterRanges"]
    assert ranges["CategoricalParameterRanges"] == [
        {"Name": "optimizer", "Values": ['"adam"', '"sgd"']},
        {"Name": "batch_size", "Values": ["32", "64"]},
    ]
    assert ranges["ContinuousParameterRanges"][0]["MinValue"] == "0.001"
    assert run["tuning_config"]["ParameterRanges"]["CategoricalParameterRanges"][0]["Values"] == ["adam", "sgd"]
    assert len(definition["InputDataConfig"]) == 3

    plain = requests.tuning_job(run, IMAGE_CODE, CHANNELS)
    validate("CreateHyperParameterTuningJob", plain)
    assert plain["TrainingJobDefinition"]["StaticHyperParameters"] == {"epochs": "5", "optimizer": "adam"}
    assert plain["HyperParameterTuningJobConfig"]["ParameterRanges"]["CategoricalParameterRanges"] == [
        {"Name": "optimizer", "Values": ["adam", "sgd"]},
        {"Name": "batch_size", "Values": ["32", "64"]},
    ]


def test_the_model_endpoint_config_and_endpoint(run):
    from ml_pipeline import sagemaker_requests as requests

    model = requests.model(run, SCRIPT_CODE, "s3://b/wine/models/k/model.tar.gz")
    validate("CreateModel", model)
    assert model["PrimaryContainer"] == {
        "Image": SCRIPT_CODE["serving_image"],
        "ModelDataUrl": "s3://b/wine/models/k/model.tar.gz",
        "Environment": SCRIPT_CODE["environment"],
    }
    config = requests.endpoint_config(run)
    validate("CreateEndpointConfig", config)
    endpoint = requests.endpoint(run)
    validate("CreateEndpoint", endpoint)
    assert {t["Key"] for t in endpoint["Tags"]} >= {"project", "experiment", "run"}
    run["params"]["keep_endpoint"] = True  # the stable endpoint outlives the run that created it
    assert {t["Key"] for t in requests.endpoint(run)["Tags"]} == {"project", "experiment"}


def test_non_finite_hyperparameters_are_refused(run):
    from ml_pipeline import sagemaker_requests as requests

    run["hyperparameters"]["learning_rate"] = float("nan")
    with pytest.raises(ValueError):
        requests.training_job(run, SCRIPT_CODE, CHANNELS)
