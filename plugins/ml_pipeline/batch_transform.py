"""Scoring a file with the run's best model, after the gate: the experiment's ``batch_transform``.

The model is the one the gate approved, as the registry holds it: this run's model package version when it
beat production (the gate's verdict "deploy"), else production's (the group's newest approved version), so
that a week whose model does not win still has its file scored. The transform's SageMaker model is the run's
(``names["model"]``), made from that version's container (image, model data, environment) unless the run's
deploy made it already; teardown deletes it with the run's other hosting resources.

The job reads every object under ``batch_transform.input`` and writes ``<object>.out`` under
``<batch_transform.output>/<run key>/``: two runs never write over each other's scores.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ml_pipeline import sagemaker_requests as requests

if TYPE_CHECKING:
    from ml_pipeline.aws import Client
    from ml_pipeline.plan import Plan


def output_uri(plan: Plan) -> str:
    return f"{plan['experiment']['batch_transform']['output'].rstrip('/')}/{plan['key']}/"


def check_input(s3: Client, plan: Plan) -> None:
    """Refuse an input that holds nothing, before anything is created (the job would fail on it)."""
    uri = plan["experiment"]["batch_transform"]["input"]
    bucket, _, prefix = uri[len("s3://") :].partition("/")
    try:
        listed = s3.list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=1)
    except s3.exceptions.NoSuchBucket:
        listed = {}
    if not listed.get("KeyCount"):
        where = f"experiments/{plan['experiment']['name']}/experiment.yaml"
        raise ValueError(f"{where}: batch_transform.input: nothing in {uri} to score")


def scoring_version(sm: Client, plan: Plan, package_arn: str, verdict: dict | None) -> dict:
    """The model package version the gate approved (``verdict``: the quality gate's), described."""
    from ml_pipeline.steps import production_version  # noqa: PLC0415

    if verdict is None or verdict.get("deploy"):
        return sm.describe_model_package(ModelPackageName=package_arn)
    production = production_version(sm, plan["params"]["model_package_group"])
    if production is None:  # the gate keeps production only when there is one
        raise RuntimeError(f"the gate kept production, but {plan['params']['model_package_group']} has none")
    return production


def model_request(plan: Plan, package: dict, vpc_config: dict | None = None) -> dict:
    """The run's SageMaker model, from the version's inference container."""
    container = package["InferenceSpecification"]["Containers"][0]
    primary = {"Image": container["Image"], "ModelDataUrl": container["ModelDataUrl"]}
    if container.get("Environment"):
        primary["Environment"] = dict(container["Environment"])
    request = {
        "ModelName": plan["names"]["model"],
        "PrimaryContainer": primary,
        "ExecutionRoleArn": plan["params"]["role_arn"],
        "Tags": requests.tags(plan),
    }
    if vpc_config:
        request["VpcConfig"] = vpc_config
    return request


def transform_request(plan: Plan) -> dict:
    """The CreateTransformJob request: one record a line (``split_type: Line``) comes back one scored line a
    line (``AssembleWith: Line``)."""
    settings = plan["experiment"]["batch_transform"]
    split = settings["split_type"]
    output = {"S3OutputPath": output_uri(plan), "AssembleWith": "Line" if split == "Line" else "None"}
    if settings.get("accept"):
        output["Accept"] = settings["accept"]
    return {
        "TransformJobName": plan["names"]["transform_job"],
        "ModelName": plan["names"]["model"],
        "BatchStrategy": settings["strategy"],
        "MaxPayloadInMB": settings["max_payload_mb"],
        "MaxConcurrentTransforms": settings["max_concurrent_transforms"],
        "TransformInput": {
            "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": settings["input"]}},
            "ContentType": settings["content_type"],
            "SplitType": split,
            "CompressionType": "None",
        },
        "TransformOutput": output,
        "TransformResources": {"InstanceType": settings["instance_type"], "InstanceCount": settings["instance_count"]},
        "Tags": requests.tags(plan),
    }


def scoring(plan: Plan, package: dict, package_arn: str) -> dict:
    """What the summary says of the scoring: the version used and why, the input and where the scores go."""
    ours = package["ModelPackageArn"] == package_arn
    return {
        "job": plan["names"]["transform_job"],
        "model_package": package["ModelPackageArn"],
        "model": "this run's (the gate approved it)" if ours else "production's (the gate kept it)",
        "input": plan["experiment"]["batch_transform"]["input"],
        "output": output_uri(plan),
    }
