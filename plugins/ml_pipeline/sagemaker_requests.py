"""The SageMaker request shapes a run sends, built from its plan (see ``plan.py``)."""
from __future__ import annotations

CHANNELS = ("train", "validation")
PRIMARY_VARIANT = "AllTraffic"


def _channels(channels: dict[str, str]) -> list[dict]:
    return [
        {
            "ChannelName": name,
            "DataSource": {
                "S3DataSource": {
                    "S3DataType": "S3Prefix",
                    "S3Uri": channels[name],
                    # Each host trains on its own shards of the training data, all see the validation set.
                    "S3DataDistributionType": "ShardedByS3Key" if name == "train" else "FullyReplicated",
                }
            },
            "ContentType": "text/csv",
            "InputMode": "File",
        }
        for name in CHANNELS
    ]


def _job_parts(plan: dict, image: str, channels: dict[str, str], vpc_config: dict | None) -> dict:
    p, names = plan["params"], plan["names"]
    stopping = {"MaxRuntimeInSeconds": p["max_runtime_seconds"]}
    if p["use_spot"]:
        stopping["MaxWaitTimeInSeconds"] = p["max_wait_seconds"]
    parts = {
        "AlgorithmSpecification": {
            "TrainingImage": image,
            "TrainingInputMode": "File",
            "MetricDefinitions": plan["metric_definitions"],
        },
        "RoleArn": p["role_arn"],
        "InputDataConfig": _channels(channels),
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


def _tags(plan: dict) -> list[dict]:
    return [{"Key": "project", "Value": "ml-pipeline"}, {"Key": "run", "Value": plan["key"]}]


def training_job(plan: dict, image: str, channels: dict[str, str], vpc_config: dict | None = None) -> dict:
    return {
        "TrainingJobName": plan["names"]["training_job"],
        **_job_parts(plan, image, channels, vpc_config),
        "HyperParameters": plan["hyperparameters"],
        "Tags": _tags(plan),
    }


def tuning_job(plan: dict, image: str, channels: dict[str, str], vpc_config: dict | None = None) -> dict:
    definition = _job_parts(plan, image, channels, vpc_config)
    definition["StaticHyperParameters"] = plan["static_hyperparameters"]
    return {
        "HyperParameterTuningJobName": plan["names"]["tuning_job"],
        "HyperParameterTuningJobConfig": plan["tuning_config"],
        "TrainingJobDefinition": definition,
        "Tags": _tags(plan),
    }


def model(plan: dict, image: str, model_data_url: str, vpc_config: dict | None = None) -> dict:
    request = {
        "ModelName": plan["names"]["model"],
        "PrimaryContainer": {
            "Image": image,
            "ModelDataUrl": model_data_url,
            "Environment": {"SAGEMAKER_MODEL_SERVER_WORKERS": "2", "SAGEMAKER_MODEL_SERVER_TIMEOUT": "60"},
        },
        "ExecutionRoleArn": plan["params"]["role_arn"],
        "Tags": _tags(plan),
    }
    if vpc_config:
        request["VpcConfig"] = vpc_config
    return request


def endpoint_config(plan: dict) -> dict:
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
        "Tags": _tags(plan),
    }


def endpoint(plan: dict) -> dict:
    return {
        "EndpointName": plan["names"]["endpoint"],
        "EndpointConfigName": plan["names"]["endpoint_config"],
        "Tags": [{"Key": "project", "Value": "ml-pipeline"}],
    }


def scalable_target_id(plan: dict) -> str:
    return f"endpoint/{plan['names']['endpoint']}/variant/{PRIMARY_VARIANT}"
