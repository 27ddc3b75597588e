"""SageMaker's state: the resources localaws holds and their state machines.

The wire protocol lives in ``responses.py``; what a training job does while it
runs lives in ``training.py``. Everything here is guarded by one lock per
backend, since jobs' threads and requests change it concurrently.
"""

from __future__ import annotations

import copy
import re
import threading
import time
from dataclasses import dataclass, field

from localaws.sagemaker import listing
from localaws.sagemaker.errors import ResourceInUse, ResourceLimitExceeded, ValidationError, not_found
from localaws.sagemaker.shapes import service_model
from localaws.settings import Settings
from localaws.state.pickling import runtime

# Secondary status -> primary status, as DescribeTrainingJob reports them.
TERMINAL_TRAINING_STATUSES = ("Completed", "Failed", "Stopped")
#: The FailureReason of a job that was running when localaws stopped (an internal error: retryable).
STOPPED_WITH_LOCALAWS = "InternalServerError: localaws stopped while the training job was running."


@dataclass
class TrainingJob:
    name: str
    arn: str
    request: dict
    created: float
    status: str = "InProgress"
    secondary_status: str = "Starting"
    transitions: list[dict] = field(default_factory=list)
    failure_reason: str | None = None
    model_artifacts: str | None = None
    final_metrics: dict[str, dict] = field(default_factory=dict)
    #: Every value each MetricDefinition matched, in log order: metric name -> [(timestamp, value)].
    metric_series: dict[str, list] = field(default_factory=dict)
    last_modified: float = 0.0
    training_start: float | None = None
    training_end: float | None = None
    #: Time spent training, not counting spot interruptions: what AWS bills an on-demand job.
    billable_seconds: float = 0.0
    #: What a managed spot job's instance-second costs against an on-demand one (``Settings``): AWS's
    #: BillableTimeInSeconds of a spot job is its training time at the spot price, in on-demand seconds.
    spot_price_fraction: float = 1.0
    #: Set by StopTrainingJob / MaxRuntimeInSeconds: the secondary status to end in.
    stop_reason: str | None = None
    stop_requested: threading.Event = runtime(default_factory=threading.Event)
    #: Set by tests and demos to interrupt a managed spot job (see README).
    interruption_requested: threading.Event = runtime(default_factory=threading.Event)

    @property
    def spot(self) -> bool:
        return bool(self.request.get("EnableManagedSpotTraining"))

    @property
    def done(self) -> bool:
        return self.status in TERMINAL_TRAINING_STATUSES

    def transition(self, secondary: str, message: str, now: float | None = None) -> None:
        now = now or time.time()
        if self.transitions and "EndTime" not in self.transitions[-1]:
            if self.transitions[-1]["Status"] == secondary:
                self.transitions[-1]["StatusMessage"] = message
                self.last_modified = now
                return
            self.transitions[-1]["EndTime"] = now
        self.transitions.append({"Status": secondary, "StartTime": now, "StatusMessage": message})
        self.secondary_status = secondary
        self.last_modified = now

    def finish(self, status: str, secondary: str, message: str, now: float | None = None) -> None:
        now = now or time.time()
        self.transition(secondary, message, now)
        self.transitions[-1]["EndTime"] = now
        self.status = status
        self.training_end = now if self.training_start else None

    def end_interrupted(self, at: float) -> None:
        """localaws stopped at ``at`` while the job ran: it is over, as a job whose instances were lost
        (Failed), or Stopped if a stop had been asked for."""
        if self.stop_reason:
            self.finish("Stopped", self.stop_reason, "Training job stopped (localaws stopped meanwhile)", at)
        else:
            self.failure_reason = STOPPED_WITH_LOCALAWS
            self.finish("Failed", "Failed", f"Training job failed. Reason: {STOPPED_WITH_LOCALAWS}", at)
        if self.training_start and not self.spot:
            self.billable_seconds = max(0.0, at - self.training_start)

    def describe(self) -> dict:
        r = self.request
        out = {
            "TrainingJobName": self.name,
            "TrainingJobArn": self.arn,
            "TrainingJobStatus": self.status,
            "SecondaryStatus": self.secondary_status,
            "AlgorithmSpecification": r["AlgorithmSpecification"],
            "RoleArn": r["RoleArn"],
            "InputDataConfig": r.get("InputDataConfig", []),
            "OutputDataConfig": r["OutputDataConfig"],
            "ResourceConfig": r["ResourceConfig"],
            "StoppingCondition": r["StoppingCondition"],
            "HyperParameters": r.get("HyperParameters", {}),
            "CreationTime": self.created,
            "LastModifiedTime": self.last_modified or self.created,
            "SecondaryStatusTransitions": copy.deepcopy(self.transitions),
            "EnableNetworkIsolation": r.get("EnableNetworkIsolation", False),
            "EnableInterContainerTrafficEncryption": r.get("EnableInterContainerTrafficEncryption", False),
            "EnableManagedSpotTraining": r.get("EnableManagedSpotTraining", False),
            "ModelArtifacts": {"S3ModelArtifacts": self.model_artifacts} if self.model_artifacts else None,
            "FailureReason": self.failure_reason,
            "FinalMetricDataList": list(self.final_metrics.values()) or None,
            "TrainingStartTime": self.training_start,
            "TrainingEndTime": self.training_end,
            "CheckpointConfig": r.get("CheckpointConfig"),
            "VpcConfig": r.get("VpcConfig"),
            "Environment": r.get("Environment"),
            "RetryStrategy": r.get("RetryStrategy"),
            "TuningJobArn": r.get("_TuningJobArn"),
            "DebugHookConfig": r.get("DebugHookConfig"),
            "ExperimentConfig": r.get("ExperimentConfig"),
        }
        if self.training_start:
            end = self.training_end or time.time()
            out["TrainingTimeInSeconds"] = max(1, round(end - self.training_start))
            if self.done:
                billed = self.billable_seconds * (self.spot_price_fraction if self.spot else 1.0)
                out["BillableTimeInSeconds"] = max(1, round(billed))
        return {key: value for key, value in out.items() if value is not None}

    def summary(self) -> dict:
        out = {
            "TrainingJobName": self.name,
            "TrainingJobArn": self.arn,
            "CreationTime": self.created,
            "TrainingEndTime": self.training_end,
            "LastModifiedTime": self.last_modified or self.created,
            "TrainingJobStatus": self.status,
            "SecondaryStatus": self.secondary_status,
        }
        return {key: value for key, value in out.items() if value is not None}


class SageMakerBackend:
    """The account's SageMaker training jobs in one region, and the tags of every resource."""

    operations = (
        "CreateTrainingJob",
        "DescribeTrainingJob",
        "ListTrainingJobs",
        "StopTrainingJob",
        "AddTags",
        "ListTags",
        "DeleteTags",
    )

    def __init__(self, settings: Settings, executor, lock: threading.RLock):
        """``executor`` runs a job's lifecycle: ``executor.start(job)`` (see ``training.py``);
        ``lock`` guards the resources' state, shared with the threads that run them."""
        self.settings = settings
        self.executor = executor
        self.lock = lock
        self.training_jobs: dict[str, TrainingJob] = {}
        self.tags: dict[str, list[dict]] = {}

    def arn(self, kind: str, name: str) -> str:
        return f"arn:aws:sagemaker:{self.settings.region}:{self.settings.account_id}:{kind}/{name.lower()}"

    # --- training jobs -------------------------------------------------------------------

    def create_training_job(self, params: dict) -> dict:
        _check_training_request(params)
        name = params["TrainingJobName"]
        with self.lock:
            if name in self.training_jobs:
                raise ResourceInUse(
                    "Training job names must be unique within an AWS account and region, and a training job "
                    f"with this name already exists ({self.training_jobs[name].arn})"
                )
            self._check_instance_quota(params["ResourceConfig"])
            job = TrainingJob(
                name=name,
                arn=self.arn("training-job", name),
                request=params,
                created=time.time(),
                spot_price_fraction=self.settings.spot_price_fraction,
            )
            job.transition("Starting", "Starting the training job")
            self.training_jobs[name] = job
            self.tags[job.arn] = list(params.get("Tags", []))
        self.executor.start(job)
        return {"TrainingJobArn": job.arn}

    def _check_instance_quota(self, resource_config: dict) -> None:
        instance_type = resource_config["InstanceType"]
        in_use = sum(
            job.request["ResourceConfig"]["InstanceCount"]
            for job in self.training_jobs.values()
            if not job.done and job.request["ResourceConfig"]["InstanceType"] == instance_type
        )
        wanted = resource_config["InstanceCount"]
        quota = self.settings.training_instance_quota
        if in_use + wanted > quota:
            raise ResourceLimitExceeded(
                f"The account-level service limit '{instance_type} for training job usage' is {quota} "
                f"Instances, with current utilization of {in_use} Instances and a request delta of {wanted} "
                "Instances. Please use AWS Service Quotas to request an increase for this quota. If AWS "
                "Service Quotas is not available, contact AWS support to request an increase for this quota."
            )

    def get_training_job(self, name: str) -> TrainingJob:
        with self.lock:
            job = self.training_jobs.get(name)
        if job is None:
            raise not_found()
        return job

    def describe_training_job(self, params: dict) -> dict:
        job = self.get_training_job(params["TrainingJobName"])
        with self.lock:
            return job.describe()

    def list_training_jobs(self, params: dict) -> dict:
        with self.lock:
            summaries = [job.summary() for job in self.training_jobs.values()]
        page, token = listing.page(
            summaries,
            params,
            name_key="TrainingJobName",
            status_key="TrainingJobStatus",
            sort_keys={"Name": "TrainingJobName", "CreationTime": "CreationTime", "Status": "TrainingJobStatus"},
        )
        return {"TrainingJobSummaries": page, **({"NextToken": token} if token else {})}

    def stop_training_job(self, params: dict) -> dict:
        job = self.get_training_job(params["TrainingJobName"])
        with self.lock:
            if job.status != "InProgress" or job.stop_reason:
                raise ValidationError(f"The request was rejected because the training job is in status {job.status}.")
            job.stop_reason = "Stopped"
            job.status = "Stopping"
            job.transition("Stopping", "Stopping the training job")
        job.stop_requested.set()
        return {}

    def interrupt_spot_training(self, name: str) -> dict:
        """localaws's own call: reclaim a managed spot job's instances (see README)."""
        job = self.get_training_job(name)
        with self.lock:
            if not job.spot:
                raise ValidationError(f"Training job {name} does not use managed spot training.")
            if job.secondary_status != "Training" or job.stop_reason:
                raise ValidationError(
                    f"Training job {name} is {job.secondary_status}: only a training job that is training "
                    "can be interrupted."
                )
        job.interruption_requested.set()
        return {"TrainingJobName": name, "Interrupted": True}

    # --- tags ----------------------------------------------------------------------------

    def _tagged(self, arn: str) -> list[dict]:
        with self.lock:
            if arn not in self.tags:
                raise ValidationError(f"Resource {arn} not found.") if arn.startswith("arn:") else not_found()
            return self.tags[arn]

    def add_tags(self, params: dict) -> dict:
        with self.lock:
            tags = self._tagged(params["ResourceArn"])
            new = {tag["Key"]: tag for tag in params["Tags"]}
            tags[:] = [tag for tag in tags if tag["Key"] not in new] + list(new.values())
            if len(tags) > 50:
                raise ResourceLimitExceeded("Tag limit of 50 exceeded for resource " + params["ResourceArn"])
            return {"Tags": list(new.values())}

    def list_tags(self, params: dict) -> dict:
        tags = self._tagged(params["ResourceArn"])
        with self.lock:
            return {"Tags": list(tags)}

    def delete_tags(self, params: dict) -> dict:
        with self.lock:
            tags = self._tagged(params["ResourceArn"])
            tags[:] = [tag for tag in tags if tag["Key"] not in set(params["TagKeys"])]
        return {}

    def shutdown(self) -> None:
        """Stop every running job's work (containers, processes) before the gateway exits."""
        self.executor.shutdown()

    # --- across restarts (localaws/state) ------------------------------------------------------

    def state(self) -> dict:
        """What is persisted (pickled by the caller, under the lock)."""
        return {"training_jobs": self.training_jobs, "tags": self.tags}

    def restore(self, state: dict, stopped_at: float) -> list[str]:
        """Put a snapshot back; the jobs that were running end as ``end_interrupted`` says (their names)."""
        interrupted = []
        with self.lock:
            self.training_jobs.update(state.get("training_jobs", {}))
            self.tags.update(state.get("tags", {}))  # shared by reference with hosting and the registry
            for job in self.training_jobs.values():
                if not job.done:
                    job.end_interrupted(stopped_at)
                    interrupted.append(job.name)
        return interrupted


def check_channel_name(name) -> None:
    """SageMaker's rule for a channel's name, which names its folder ``input/data/<name>``: ChannelName's
    pattern and length in botocore's model, and not dots only (the pattern admits those; their folder
    would be input/data itself or the one above). ``ValidationError`` otherwise."""
    rule = service_model().shape_for("ChannelName").metadata
    if (
        not isinstance(name, str)
        or not rule["min"] <= len(name) <= rule["max"]
        or not re.fullmatch(rule["pattern"], name)
    ):
        raise ValidationError(
            f"Channel name '{name}' is not valid: it must match {rule['pattern']} (at most {rule['max']} characters)."
        )
    if name.strip(".") == "":
        raise ValidationError(f"Channel name '{name}' is not valid: it must not consist of dots only.")


def _check_training_request(params: dict) -> None:
    """Rules across members that botocore's model cannot express."""
    algorithm = params["AlgorithmSpecification"]
    if not algorithm.get("TrainingImage") and not algorithm.get("AlgorithmName"):
        raise ValidationError("Either the training image or the algorithm name must be specified.")
    if algorithm.get("AlgorithmName"):
        raise ValidationError(
            "localaws runs your own training images only: AlgorithmName (marketplace or built-in "
            "algorithms) is not supported; pass AlgorithmSpecification.TrainingImage."
        )
    channels = [channel["ChannelName"] for channel in params.get("InputDataConfig", [])]
    if len(channels) != len(set(channels)):
        raise ValidationError("Channel names must be unique within InputDataConfig.")
    for channel in channels:
        check_channel_name(channel)
    for channel in params.get("InputDataConfig", []):
        source = channel["DataSource"].get("S3DataSource")
        if source is None:
            raise ValidationError("localaws supports S3DataSource input channels only.")
        if not source["S3Uri"].startswith("s3://"):
            raise ValidationError(f"S3Uri {source['S3Uri']} is not a valid S3 URI.")
    if not params["OutputDataConfig"]["S3OutputPath"].startswith("s3://"):
        raise ValidationError("OutputDataConfig.S3OutputPath must be an S3 URI (s3://bucket/prefix).")
    stopping = params["StoppingCondition"]
    if params.get("EnableManagedSpotTraining"):
        wait = stopping.get("MaxWaitTimeInSeconds")
        if wait is None:
            raise ValidationError("MaxWaitTimeInSeconds is required when managed spot training is enabled.")
        if wait < stopping.get("MaxRuntimeInSeconds", 86400):
            raise ValidationError(
                "Invalid MaxWaitTimeInSeconds. It must be present and be greater than or equal to MaxRuntimeInSeconds"
            )
    elif "MaxWaitTimeInSeconds" in stopping:
        raise ValidationError("MaxWaitTimeInSeconds can only be specified with managed spot training.")
    for key, value in params.get("HyperParameters", {}).items():
        if not isinstance(value, str):
            raise ValidationError(f"Hyperparameter {key} must be a string.")
