"""The SageMaker request shapes a run sends, built from its plan (see ``plan.py``) and its code
(``code.resolve``: images, script mode's ``sagemaker_*`` hyperparameters, the model's environment)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from ml_pipeline.infra.tags import EXPERIMENT_KEY, RUN_KEY, project_tag

if TYPE_CHECKING:
    from ml_pipeline.plan import MetricDefinition, Plan

PRIMARY_VARIANT = "AllTraffic"


def _channel_options(plan: Plan, name: str) -> dict:
    entry = (plan["experiment"].get("channels") or {}).get(name)
    return entry if isinstance(entry, dict) else {}


def _channels(plan: Plan, channels: dict[str, str]) -> list[dict]:
    """Every channel of the run, with the content type and distribution its mapping gives (none, and
    FullyReplicated: every host sees all of it, unless the file says ShardedByS3Key)."""
    result = []
    for name, uri in channels.items():
        options = _channel_options(plan, name)
        channel = {
            "ChannelName": name,
            "DataSource": {
                "S3DataSource": {
                    "S3DataType": "S3Prefix",
                    "S3Uri": uri,
                    "S3DataDistributionType": options.get("distribution") or "FullyReplicated",
                }
            },
            "InputMode": "File",
        }
        if options.get("content_type"):
            channel["ContentType"] = options["content_type"]
        result.append(channel)
    return result


def script_mode(code: dict) -> bool:
    """Script mode sends its source (``code["source"]``); an own container carries its code in the image."""
    return code.get("source") is not None


def _plain(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)  # shortest exact form: 0.001, 1e-05, 0.5
    if isinstance(value, (dict, list)):
        return json.dumps(value, allow_nan=False)
    return str(value)


def encode_hyperparameters(values: dict, code: dict) -> dict[str, str]:
    """SageMaker's {name: string}. Script mode JSON-encodes each value as the SDK does (``5`` -> ``"5"``,
    ``"adam"`` -> ``"\\"adam\\""``), the toolkit decoding them for the script; an own container gets
    today's plain strings (``adam``, ``0.001``, ``true``). None leaves the name out."""
    if script_mode(code):
        return {name: json.dumps(value, allow_nan=False) for name, value in values.items() if value is not None}
    return {name: _plain(value) for name, value in values.items() if value is not None}


def _categorical(value) -> str:
    """A categorical range's value in script mode, as the SDK's ``as_json_range``: JSON (a string that is
    not JSON text already, such as ``adam``, is quoted; ``32`` or ``"adam"`` stay as they are)."""
    if isinstance(value, str):
        try:
            json.loads(value)
            return value
        except ValueError:
            return json.dumps(value)
    return json.dumps(value, allow_nan=False)


def tuning_config(plan: Plan, code: dict) -> dict:
    """The plan's ``HyperParameterTuningJobConfig`` with every range value a string: typed values (or
    today's strings) plain for an own container, categorical ones JSON in script mode."""
    config = json.loads(json.dumps(plan["tuning_config"]))
    ranges = config.get("ParameterRanges", {})
    for kind in ("IntegerParameterRanges", "ContinuousParameterRanges"):
        for entry in ranges.get(kind, []):
            entry["MinValue"], entry["MaxValue"] = _plain(entry["MinValue"]), _plain(entry["MaxValue"])
    encode = _categorical if script_mode(code) else _plain
    for entry in ranges.get("CategoricalParameterRanges", []):
        entry["Values"] = [encode(value) for value in entry["Values"]]
    return config


def _metric_definitions(plan: Plan) -> list[MetricDefinition]:
    found = plan.get("metric_definitions")
    return found if found is not None else plan["experiment"].get("metric_definitions") or []


def _job_parts(plan: Plan, code: dict, channels: dict[str, str], vpc_config: dict | None) -> dict:
    p, names = plan["params"], plan["names"]
    stopping = {"MaxRuntimeInSeconds": p["max_runtime_seconds"]}
    if p["use_spot"]:
        stopping["MaxWaitTimeInSeconds"] = p["max_wait_seconds"]
    parts = {
        "AlgorithmSpecification": {
            "TrainingImage": code["training_image"],
            "TrainingInputMode": "File",
            "MetricDefinitions": _metric_definitions(plan),
        },
        "RoleArn": p["role_arn"],
        "InputDataConfig": _channels(plan, channels),
        "OutputDataConfig": {"S3OutputPath": f"s3://{p['bucket']}/{names['output_prefix']}"},
        "ResourceConfig": {
            "InstanceType": p["instance_type"],
            "InstanceCount": p["instance_count"],
            "VolumeSizeInGB": p.get("volume_size_gb", 30),  # the preset's (plan.resolve_from_preset)
        },
        "StoppingCondition": stopping,
        "EnableManagedSpotTraining": bool(p["use_spot"]),
        "CheckpointConfig": {"S3Uri": f"s3://{p['bucket']}/{names['checkpoint_prefix']}"},
    }
    if vpc_config:  # jobs inside the run's own VPC
        parts["VpcConfig"] = vpc_config
    return parts


def tags(plan: Plan, *, run: bool = True) -> list[dict]:
    """project, experiment, run (not on a kept endpoint, which outlives runs) and the revision trained
    from: the experiment file's hash, its source's, and the commit when known."""
    result = [project_tag(), {"Key": EXPERIMENT_KEY, "Value": plan["experiment"]["name"]}]
    if run:
        result.append({"Key": RUN_KEY, "Value": plan["key"]})
        for name in ("file_hash", "source_hash", "commit"):
            value = (plan.get("revision") or {}).get(name)
            if value:
                result.append({"Key": name, "Value": str(value)})
    return result


def training_job(plan: Plan, code: dict, channels: dict[str, str], vpc_config: dict | None = None) -> dict:
    name = plan["names"]["training_job"]
    hyperparameters = encode_hyperparameters(plan["hyperparameters"], code)
    if script_mode(code):
        hyperparameters.update(code["hyperparameters"], sagemaker_job_name=json.dumps(name))
    return {
        "TrainingJobName": name,
        **_job_parts(plan, code, channels, vpc_config),
        "HyperParameters": hyperparameters,
        "Tags": tags(plan),
    }


def tuning_job(plan: Plan, code: dict, channels: dict[str, str], vpc_config: dict | None = None) -> dict:
    name = plan["names"]["tuning_job"]
    definition = _job_parts(plan, code, channels, vpc_config)
    static = encode_hyperparameters(plan["static_hyperparameters"], code)
    if script_mode(code):  # the SDK's tuner sends the sagemaker_* entries as static ones
        static.update(code["hyperparameters"], sagemaker_job_name=json.dumps(name))
    definition["StaticHyperParameters"] = static
    return {
        "HyperParameterTuningJobName": name,
        "HyperParameterTuningJobConfig": tuning_config(plan, code),
        "TrainingJobDefinition": definition,
        "Tags": tags(plan),
    }


def model(plan: Plan, code: dict, model_data_url: str, vpc_config: dict | None = None) -> dict:
    request = {
        "ModelName": plan["names"]["model"],
        "PrimaryContainer": {
            "Image": code["serving_image"],
            "ModelDataUrl": model_data_url,
            "Environment": dict(code["environment"]),
        },
        "ExecutionRoleArn": plan["params"]["role_arn"],
        "Tags": tags(plan),
    }
    if vpc_config:
        request["VpcConfig"] = vpc_config
    return request


def endpoint_config(plan: Plan) -> dict:
    p = plan["params"]
    return {
        "EndpointConfigName": plan["names"]["endpoint_config"],
        "ProductionVariants": [
            {
                "VariantName": PRIMARY_VARIANT,
                "ModelName": plan["names"]["model"],
                "InstanceType": p["endpoint_instance_type"],
                "InitialInstanceCount": p["min_capacity"],
                "InitialVariantWeight": 1.0,
            }
        ],
        "Tags": tags(plan),
    }


def endpoint(plan: Plan) -> dict:
    return {
        "EndpointName": plan["names"]["endpoint"],
        "EndpointConfigName": plan["names"]["endpoint_config"],
        "Tags": tags(plan, run=not plan["params"].get("keep_endpoint")),
    }


def scalable_target_id(plan: Plan) -> str:
    return f"endpoint/{plan['names']['endpoint']}/variant/{PRIMARY_VARIANT}"
