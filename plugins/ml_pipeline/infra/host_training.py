"""Training on the run's host through SSM Run Command, under the same contract as a SageMaker job.

The commands are SSM documents shipped as files (``include/ssm/``), created per run (tagged with it,
deleted by teardown):

    MLPipeline-HostCheck-<run>        is the host ready? (user data's mark, Docker, nvidia-smi or hl-smi;
                                      mounts the data volume)
    MLPipeline-TrainContainer-<run>   the training image's ``train`` under /opt/ml: channels from S3,
                                      hyperparameters.json, inputdataconfig.json and resourceconfig.json as
                                      SageMaker writes them (script mode: the framework image's toolkit
                                      fetches sagemaker_submit_directory with the instance profile's
                                      credentials, IMDSv2 at hop limit 2), the accelerator passed
                                      through (``--gpus all``, or Habana's ``--runtime=habana``), then
                                      /opt/ml/model uploaded as
                                      ``<output>/<job>/output/model.tar.gz`` and the log as ``train.log``;
                                      first, the host's CloudWatch agent started with
                                      include/cloudwatch/host-agent.json (the host's use, read back by
                                      ``usage.py``)

The command's output streams to CloudWatch Logs (``/ml-pipeline/host-training``, SSM's
CloudWatchOutputConfig). ``host_result`` returns what ``steps.pick_best`` returns for a SageMaker job,
so the rest of the chain (copy best weights, gate, deploy, autoscale, smoke test) takes it unchanged.

On localaws, the gateway acts as the host's SSM agent (``localaws/ssm/``): the training document's own
script runs there, its ``docker`` commands served by localaws's runners, its ``aws`` pointed at localaws.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING

from ml_pipeline import naming
from ml_pipeline.config import to_hyperparameter_string
from ml_pipeline.infra import iam, tags
from ml_pipeline.infra.params import accelerator

if TYPE_CHECKING:
    from ml_pipeline.aws import Client, Clients
    from ml_pipeline.plan import MetricDefinition, Plan

log = logging.getLogger(__name__)

SSM_DIR = Path(__file__).resolve().parents[3] / "include" / "ssm"
#: The host's CloudWatch agent config: CPU, memory, disk and nvidia-smi (or, through its statsd, hl-smi)
#: figures, which the training document starts the agent with (``usage.py`` reads them back).
AGENT_CONFIG = Path(__file__).resolve().parents[3] / "include" / "cloudwatch" / "host-agent.json"
#: Document name prefixes (localaws recognises the same ones: localaws/ssm/documents.py).
TRAINING_DOCUMENT = "MLPipeline-TrainContainer"
CHECK_DOCUMENT = "MLPipeline-HostCheck"
DOCUMENT_FILES = {TRAINING_DOCUMENT: "run-training-container.json", CHECK_DOCUMENT: "check-host.json"}
#: ResponseCode of the check command while user data has not finished: not ready yet, not broken.
NOT_YET = 3
TERMINAL = ("Success", "Failed", "Cancelled", "TimedOut")


class HostNotReady(RuntimeError):
    """The host reports it cannot train (no Docker, no accelerator, user data failed)."""


def job_name(plan: Plan) -> str:
    return naming.name(plan["experiment"]["name"], "host", plan["key"])


def document_names(plan: Plan) -> dict:
    return {
        "training_document": f"{TRAINING_DOCUMENT}-{plan['key']}",
        "check_document": f"{CHECK_DOCUMENT}-{plan['key']}",
    }


def document_content(prefix: str) -> str:
    return (SSM_DIR / DOCUMENT_FILES[prefix]).read_text()


def ensure_documents(ssm: Client, plan: Plan) -> dict:
    """The run's two command documents, created (or brought up to date) from include/ssm/."""
    names = document_names(plan)
    for prefix, name in ((TRAINING_DOCUMENT, names["training_document"]), (CHECK_DOCUMENT, names["check_document"])):
        content = document_content(prefix)
        try:
            ssm.create_document(
                Name=name,
                Content=content,
                DocumentType="Command",
                DocumentFormat="JSON",
                Tags=tags.plan_tags(plan, "ssm-document"),
            )
        except ssm.exceptions.DocumentAlreadyExists:
            current = ssm.get_document(Name=name, DocumentFormat="JSON")["Content"]
            if json.loads(current) != json.loads(content):
                version = ssm.update_document(
                    Name=name, Content=content, DocumentVersion="$LATEST", DocumentFormat="JSON"
                )["DocumentDescription"]["DocumentVersion"]
                ssm.update_document_default_version(Name=name, DocumentVersion=version)
    return names


# --- the job ---------------------------------------------------------------------------------------


def hyperparameters(plan: Plan, code: dict | None = None) -> dict[str, str]:
    """hyperparameters.json as a SageMaker job of the same code gets it (``sagemaker_requests``): script
    mode's JSON-encoded values and ``sagemaker_*`` entries, which a framework image's toolkit reads to
    fetch and run the source; an own container's plain strings (``code`` None: an own container)."""
    from ml_pipeline import sagemaker_requests as requests  # noqa: PLC0415

    if code is None or not requests.script_mode(code):
        return {name: to_hyperparameter_string(value) for name, value in plan["hyperparameters"].items()}
    return {
        **requests.encode_hyperparameters(plan["hyperparameters"], code),
        **code["hyperparameters"],
        "sagemaker_job_name": json.dumps(job_name(plan)),
    }


def job_spec(plan: Plan, channels: dict[str, str], code: dict | None = None) -> dict:
    """What the host writes under /opt/ml/input/config, exactly as SageMaker would for the same job
    (``localaws/sagemaker/contract.py``'s HostConfig), plus the channels to download and the environment."""
    p = plan["params"]
    job = job_name(plan)
    instance_type = p["host_instance_type"]
    return {
        "job_name": job,
        "hyperparameters": hyperparameters(plan, code),
        "inputdataconfig": {
            name: {
                "TrainingInputMode": "File",
                "S3DistributionType": "FullyReplicated",
                "RecordWrapperType": "None",
                "ContentType": "text/csv",
            }
            for name in channels
        },
        "resourceconfig": {
            "current_host": "algo-1",
            "current_instance_type": instance_type,
            "current_group_name": "homogeneousCluster",
            "hosts": ["algo-1"],
            "instance_groups": [
                {"instance_group_name": "homogeneousCluster", "instance_type": instance_type, "hosts": ["algo-1"]}
            ],
            "network_interface_name": "eth0",
        },
        "channels": dict(channels),
        "environment": {
            "TRAINING_JOB_NAME": job,
            "ML_PIPELINE_RUN": plan["key"],
            "ML_PIPELINE_ACCELERATOR": accelerator(instance_type),
        },
        "metric_definitions": plan["metric_definitions"],
    }


def encode(spec: dict) -> str:
    return base64.b64encode(json.dumps(spec, separators=(",", ":")).encode()).decode()


def agent_config() -> str:
    """include/cloudwatch/host-agent.json as the training document's AgentConfig takes it (base64)."""
    return encode(json.loads(AGENT_CONFIG.read_text()))


def output_path(plan: Plan) -> str:
    return f"s3://{plan['params']['bucket']}/{plan['names']['output_prefix']}"


def command_request(
    client: Clients, plan: Plan, image: str, channels: dict[str, str], instance_id: str, code: dict | None = None
) -> dict:
    """SendCommand's arguments (``DocumentName`` included) for the run's training on its host:
    what ``RunHostTrainingOperator(request=...)`` takes. ``code`` is ``code.resolve``'s (script mode's
    hyperparameters); None trains ``image`` as an own container."""
    p = plan["params"]
    region = client("ssm").meta.region_name
    timeout = int(p.get("max_runtime_seconds", 3600))
    spec = job_spec(plan, channels, code)
    # boto3 in the container (a framework image's toolkit fetching the source) finds the region here.
    spec["environment"].update(AWS_REGION=region, AWS_DEFAULT_REGION=region)
    return {
        "DocumentName": document_names(plan)["training_document"],
        "InstanceIds": [instance_id],
        "Comment": job_name(plan),
        "TimeoutSeconds": 600,  # to be delivered; the training itself has ExecutionTimeout
        "Parameters": {
            "JobName": [job_name(plan)],
            "Image": [image],
            "Spec": [encode(spec)],
            "AgentConfig": [agent_config()],
            "OutputPath": [output_path(plan)],
            "Accelerator": [accelerator(p["host_instance_type"])],
            "Region": [region],
            "ExecutionTimeout": [str(timeout)],
        },
        "CloudWatchOutputConfig": {"CloudWatchLogGroupName": iam.HOST_LOG_GROUP, "CloudWatchOutputEnabled": True},
    }


def find_command(
    ssm: Client,
    instance_id: str,
    document: str,
    comment: str | None = None,
    statuses: tuple[str, ...] = ("Pending", "InProgress", "Delayed", "Success"),
) -> dict | None:
    """The newest command of ``document`` on the instance in one of ``statuses`` (a retry re-attaches to it)."""
    commands = ssm.list_commands(InstanceId=instance_id, Filters=[{"key": "DocumentName", "value": document}])[
        "Commands"
    ]
    commands = [c for c in commands if c["Status"] in statuses and (comment is None or c.get("Comment") == comment)]
    return max(commands, key=lambda c: c["RequestedDateTime"]) if commands else None


def invocation(ssm: Client, command_id: str, instance_id: str) -> dict | None:
    try:
        return ssm.get_command_invocation(CommandId=command_id, InstanceId=instance_id)
    except ssm.exceptions.InvocationDoesNotExist:
        return None


# --- readiness --------------------------------------------------------------------------------------


def host_readiness(client: Clients, plan: Plan, instance_id: str, volume_id: str | None = None) -> dict:
    """Whether the host can train: ``{"ready", "stage", "detail"}``. Honest on AWS and on localaws:

    1. EC2 says the instance is running and its status checks pass;
    2. SSM says its agent is Online (it registered with the instance profile's permissions);
    3. the HostCheck command ran on it and succeeded: user data's readiness mark, Docker, the accelerator
       (on localaws, localaws's own agent answers it with what it really has: its runner, no accelerator).

    Sends the check command when none is running; raises HostNotReady when the host reports a failure.
    """
    ec2, ssm = client("ec2"), client("ssm")
    statuses = ec2.describe_instance_status(InstanceIds=[instance_id], IncludeAllInstances=True)["InstanceStatuses"]
    if not statuses or statuses[0]["InstanceState"]["Name"] != "running":
        state = statuses[0]["InstanceState"]["Name"] if statuses else "unknown"
        if state in ("shutting-down", "terminated", "stopping", "stopped"):
            raise HostNotReady(f"host {instance_id} is {state}")
        return {"ready": False, "stage": "instance", "detail": f"instance {state}"}
    checks = statuses[0].get("InstanceStatus", {}).get("Status"), statuses[0].get("SystemStatus", {}).get("Status")
    if any(check not in ("ok", None) for check in checks):
        return {"ready": False, "stage": "instance", "detail": f"status checks {checks}"}
    info = ssm.describe_instance_information(Filters=[{"Key": "InstanceIds", "Values": [instance_id]}])[
        "InstanceInformationList"
    ]
    if not info or info[0].get("PingStatus") != "Online":
        return {
            "ready": False,
            "stage": "ssm",
            "detail": f"SSM agent {info[0].get('PingStatus') if info else 'not registered'}",
        }
    document = document_names(plan)["check_document"]
    command = find_command(
        ssm, instance_id, document, statuses=("Pending", "InProgress", "Delayed", "Success", "Failed")
    )
    if command is not None and command["Status"] == "Failed":
        found = invocation(ssm, command["CommandId"], instance_id) or {}
        if found.get("ResponseCode") != NOT_YET:
            raise HostNotReady(f"host {instance_id} failed its check: {found.get('StandardErrorContent', '')[-2000:]}")
        command = None if time.time() - _epoch(command["RequestedDateTime"]) > 10 else command
        if command is not None:
            return {"ready": False, "stage": "check", "detail": "user data has not finished"}
    if command is None:
        p = plan["params"]
        ssm.send_command(
            DocumentName=document,
            InstanceIds=[instance_id],
            TimeoutSeconds=300,
            Comment=f"readiness of run {plan['key']}",
            Parameters={"Accelerator": [accelerator(p["host_instance_type"])], "DataVolumeId": [volume_id or ""]},
            CloudWatchOutputConfig={"CloudWatchLogGroupName": iam.HOST_LOG_GROUP, "CloudWatchOutputEnabled": True},
        )
        return {"ready": False, "stage": "check", "detail": "check command sent"}
    if command["Status"] != "Success":
        return {"ready": False, "stage": "check", "detail": f"check command {command['Status']}"}
    found = invocation(ssm, command["CommandId"], instance_id) or {}
    return {"ready": True, "stage": "ready", "detail": found.get("StandardOutputContent", "")[-2000:]}


def _epoch(value) -> float:
    return value.timestamp() if hasattr(value, "timestamp") else float(value)


# --- the result, as pick_best returns it --------------------------------------------------------------


def parse_metrics(text: str, definitions: list[MetricDefinition]) -> dict[str, float]:
    """The last value of each metric definition found in the log, as SageMaker reports FinalMetricDataList."""
    found: dict[str, float] = {}
    compiled = []
    for definition in definitions:
        try:
            compiled.append((definition["Name"], re.compile(definition["Regex"])))
        except re.error:
            continue
    for line in text.splitlines():
        for name, regex in compiled:
            match = regex.search(line)
            if not match:
                continue
            try:
                value = float(match.group(1) if regex.groups else match.group(0))
            except (ValueError, IndexError):
                continue
            if value == value and value not in (float("inf"), float("-inf")):
                found[name] = value
    return found


def host_result(
    client: Clients, plan: Plan, command_id: str, instance_id: str, image: str, code: dict | None = None
) -> dict:
    """The host's training as ``steps.pick_best`` describes a SageMaker job: training_job, model_artifact
    (S3 URI of model.tar.gz), image, objective {metric, type, value}, metrics, hyperparameters, ..."""
    ssm, s3 = client("ssm"), client("s3")
    found = invocation(ssm, command_id, instance_id)
    if found is None or found["Status"] != "Success":
        status = found["Status"] if found else "unknown"
        error = (found or {}).get("StandardErrorContent", "")[-2000:]
        raise RuntimeError(f"host training command {command_id} on {instance_id} is {status}: {error}")
    job = job_name(plan)
    base = f"{output_path(plan)}/{job}/output"
    bucket, prefix = base[len("s3://") :].split("/", 1)
    s3.head_object(Bucket=bucket, Key=f"{prefix}/model.tar.gz")  # the weights must be there
    text = s3.get_object(Bucket=bucket, Key=f"{prefix}/train.log")["Body"].read().decode(errors="replace")
    metrics = parse_metrics(text, plan["metric_definitions"])
    objective = plan["objective"]
    if objective["metric"] not in metrics:
        raise RuntimeError(f"{job} reported no {objective['metric']}: nothing to compare or deploy")
    seconds = _elapsed(found.get("ExecutionStartDateTime"), found.get("ExecutionEndDateTime"))
    return {
        "training_job": job,
        "tuning_job": None,
        "trial_counters": None,
        "model_artifact": f"{base}/model.tar.gz",
        "image": image,
        "objective": {**objective, "value": metrics[objective["metric"]]},
        "metrics": metrics,
        "hyperparameters": hyperparameters(plan, code),
        "tuned_hyperparameters": None,
        "training_seconds": seconds,
        "billable_seconds": seconds,
        "compute": "host",
        "instance_id": instance_id,
        "instance_type": plan["params"]["host_instance_type"],
        "command_id": command_id,
        "log": f"{base}/train.log",
    }


def _elapsed(start: str | None, end: str | None) -> int | None:
    from datetime import datetime  # noqa: PLC0415

    if start is None or end is None:
        return None
    try:
        return int(
            (
                datetime.fromisoformat(end.replace("Z", "+00:00"))
                - datetime.fromisoformat(start.replace("Z", "+00:00"))
            ).total_seconds()
        )
    except ValueError:
        return None
