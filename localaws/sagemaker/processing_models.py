"""SageMaker processing jobs: their records, their state machine and the calls that read or change them.

InProgress -> Completed | Failed, or InProgress -> Stopping -> Stopped on StopProcessingJob. What a job
does while it runs lives in ``processing.py``. The records share the training jobs' lock and tags
(``SageMakerBackend``): AddTags and ListTags of a processing job's ARN work as for any resource.
"""

from __future__ import annotations

import copy
import threading
import time
from dataclasses import dataclass

from localaws.sagemaker import listing
from localaws.sagemaker.persisted_jobs import PersistedJobs
from localaws.sagemaker.contract import PROCESSING_ROOT, processing_local_path
from localaws.sagemaker.errors import ResourceInUse, ValidationError
from localaws.state.pickling import runtime

TERMINAL_PROCESSING_STATUSES = ("Completed", "Failed", "Stopped")
#: What AWS answers when the container exits non-zero (its own words are in ExitMessage).
ALGORITHM_ERROR = "AlgorithmError: See job logs for more information"
#: AWS's default when StoppingCondition is not given: a day.
DEFAULT_MAX_RUNTIME_SECONDS = 86400
#: The FailureReason of a job that was running when localaws stopped (an internal error: retryable).
STOPPED_WITH_LOCALAWS = "InternalServerError: localaws stopped while the processing job was running."
#: The members of a job that its containers read in /opt/ml/config/processingjobconfig.json.
_JOB_CONFIG_MEMBERS = (
    "ProcessingJobArn",
    "ProcessingJobName",
    "AppSpecification",
    "Environment",
    "ProcessingInputs",
    "ProcessingOutputConfig",
    "ProcessingResources",
    "RoleArn",
    "StoppingCondition",
    "NetworkConfig",
)


@dataclass
class ProcessingJob:
    name: str
    arn: str
    request: dict  # as created, with AWS's defaults filled in (``_with_defaults``)
    created: float
    status: str = "InProgress"
    exit_message: str | None = None
    failure_reason: str | None = None
    last_modified: float = 0.0
    started: float | None = None  # ProcessingStartTime: its containers started
    ended: float | None = None
    #: Set by StopProcessingJob or MaxRuntimeInSeconds: how the job ends once its containers have.
    stop_reason: str | None = None
    stop_requested: threading.Event = runtime(default_factory=threading.Event)

    @property
    def done(self) -> bool:
        return self.status in TERMINAL_PROCESSING_STATUSES

    @property
    def host_count(self) -> int:
        return self.request["ProcessingResources"]["ClusterConfig"]["InstanceCount"]

    @property
    def instance_type(self) -> str:
        return self.request["ProcessingResources"]["ClusterConfig"]["InstanceType"]

    @property
    def max_runtime(self) -> int:
        return (self.request.get("StoppingCondition") or {}).get("MaxRuntimeInSeconds", DEFAULT_MAX_RUNTIME_SECONDS)

    def finish(self, status: str, failure_reason: str | None = None, now: float | None = None) -> None:
        now = now or time.time()
        self.status = status
        if failure_reason:
            self.failure_reason = failure_reason[:1024]
        self.ended = self.last_modified = now

    def end_interrupted(self, at: float) -> None:
        """localaws stopped at ``at`` while the job ran: it is over, as a job whose instances were lost
        (Failed), or Stopped if a stop had been asked for (nothing of it is uploaded after the fact)."""
        if self.stop_reason == "Stopped":
            self.finish("Stopped", now=at)
        else:
            self.finish("Failed", STOPPED_WITH_LOCALAWS, now=at)

    def job_config(self) -> dict:
        """/opt/ml/config/processingjobconfig.json: the job as created, without its tags."""
        described = self.describe()
        return {key: copy.deepcopy(described[key]) for key in _JOB_CONFIG_MEMBERS if key in described}

    def describe(self) -> dict:
        r = self.request
        out = {
            "ProcessingInputs": r.get("ProcessingInputs"),
            "ProcessingOutputConfig": r.get("ProcessingOutputConfig"),
            "ProcessingJobName": self.name,
            "ProcessingResources": r["ProcessingResources"],
            "StoppingCondition": r.get("StoppingCondition"),
            "AppSpecification": r["AppSpecification"],
            "Environment": r.get("Environment"),
            "NetworkConfig": r.get("NetworkConfig"),
            "RoleArn": r["RoleArn"],
            "ExperimentConfig": r.get("ExperimentConfig"),
            "ProcessingJobArn": self.arn,
            "ProcessingJobStatus": self.status,
            "ExitMessage": self.exit_message,
            "FailureReason": self.failure_reason,
            "ProcessingEndTime": self.ended,
            "ProcessingStartTime": self.started,
            "LastModifiedTime": self.last_modified or self.created,
            "CreationTime": self.created,
        }
        return {key: copy.deepcopy(value) for key, value in out.items() if value is not None}

    def summary(self) -> dict:
        out = {
            "ProcessingJobName": self.name,
            "ProcessingJobArn": self.arn,
            "CreationTime": self.created,
            "ProcessingEndTime": self.ended,
            "LastModifiedTime": self.last_modified or self.created,
            "ProcessingJobStatus": self.status,
            "FailureReason": self.failure_reason,
            "ExitMessage": self.exit_message,
        }
        return {key: value for key, value in out.items() if value is not None}


class ProcessingBackend(PersistedJobs):
    """The account's processing jobs in one region."""

    operations = ("CreateProcessingJob", "DescribeProcessingJob", "ListProcessingJobs", "StopProcessingJob")

    def __init__(self, sagemaker, executor):
        """``sagemaker`` is the SageMakerBackend: its lock, its tags, its ARNs; ``executor`` runs a job's
        lifecycle (``processing.py``: ``start(job)``, ``shutdown()``)."""
        self.sagemaker = sagemaker
        self.executor = executor
        self.lock = sagemaker.lock
        self.jobs: dict[str, ProcessingJob] = {}

    def get(self, name: str) -> ProcessingJob:
        with self.lock:
            job = self.jobs.get(name)
        if job is None:
            raise ValidationError(f"Could not find requested job with name {name}")
        return job

    def create_processing_job(self, params: dict) -> dict:
        request = _with_defaults(params)
        _check(request)
        name = request["ProcessingJobName"]
        tags = list(request.pop("Tags", None) or [])
        with self.lock:
            if name in self.jobs:
                raise ResourceInUse(
                    "Job name must be unique within an AWS account and region, and a job with this name "
                    f"already exists ({self.jobs[name].arn})"
                )
            now = time.time()
            job = ProcessingJob(name=name, arn=self.sagemaker.arn("processing-job", name), request=request, created=now)
            job.last_modified = now
            self.jobs[name] = job
            self.sagemaker.tags[job.arn] = tags
        self.executor.start(job)
        return {"ProcessingJobArn": job.arn}

    def describe_processing_job(self, params: dict) -> dict:
        job = self.get(params["ProcessingJobName"])
        with self.lock:
            return job.describe()

    def list_processing_jobs(self, params: dict) -> dict:
        with self.lock:
            summaries = [job.summary() for job in self.jobs.values()]
        page, token = listing.page(
            summaries,
            params,
            name_key="ProcessingJobName",
            status_key="ProcessingJobStatus",
            sort_keys={"Name": "ProcessingJobName", "CreationTime": "CreationTime", "Status": "ProcessingJobStatus"},
        )
        return {"ProcessingJobSummaries": page, **({"NextToken": token} if token else {})}

    def stop_processing_job(self, params: dict) -> dict:
        job = self.get(params["ProcessingJobName"])
        with self.lock:
            if job.status != "InProgress":
                raise ValidationError(f"The request was rejected because the processing job is in status {job.status}.")
            job.stop_reason = "Stopped"
            job.status = "Stopping"
            job.last_modified = time.time()
        job.stop_requested.set()
        return {}

    def shutdown(self) -> None:
        self.executor.shutdown()

    # state() and restore() across restarts: PersistedJobs.


def _with_defaults(params: dict) -> dict:
    """The request as DescribeProcessingJob shows it: AWS's defaults in what was left out."""
    request = copy.deepcopy(params)
    for item in request.get("ProcessingInputs") or []:
        item.setdefault("AppManaged", False)
        if isinstance(item.get("S3Input"), dict):
            s3 = item["S3Input"]
            s3.setdefault("S3InputMode", "File")
            s3.setdefault("S3DataDistributionType", "FullyReplicated")
            s3.setdefault("S3CompressionType", "None")
    for item in (request.get("ProcessingOutputConfig") or {}).get("Outputs") or []:
        item.setdefault("AppManaged", False)
    return request


def _check(request: dict) -> None:
    """The rules across members that botocore's model cannot express, and what localaws cannot run,
    refused before anything is created (``ValidationError``)."""
    if not request["AppSpecification"]["ImageUri"]:
        raise ValidationError("AppSpecification.ImageUri must name the image to run.")
    cluster = request["ProcessingResources"]["ClusterConfig"]
    if cluster.get("InstanceType") is None or cluster.get("InstanceCount") is None:
        raise ValidationError(
            "ProcessingResources.ClusterConfig must give InstanceType and InstanceCount "
            "(localaws does not run InstancePreferences)."
        )
    names = [item["InputName"] for item in request.get("ProcessingInputs") or []]
    if len(names) != len(set(names)):
        raise ValidationError("InputName must be unique within ProcessingInputs.")
    for item in request.get("ProcessingInputs") or []:
        _check_input(item)
    outputs = (request.get("ProcessingOutputConfig") or {}).get("Outputs") or []
    names = [item["OutputName"] for item in outputs]
    if len(names) != len(set(names)):
        raise ValidationError("OutputName must be unique within ProcessingOutputConfig.Outputs.")
    for item in outputs:
        _check_output(item)


def _check_local_path(item: dict, where: dict, what: str, name: str) -> None:
    if where.get("LocalPath") is None:
        if not item["AppManaged"]:
            raise ValidationError(f"LocalPath is required for {what} '{name}' when AppManaged is false.")
        return
    if processing_local_path(where["LocalPath"]) is None:
        raise ValidationError(
            f"LocalPath {where['LocalPath']} of {what} '{name}' is not valid: it must be an absolute path "
            f"under {PROCESSING_ROOT}/ (and stay there)."
        )


def _check_s3_uri(uri: str, what: str, name: str) -> None:
    if not uri.startswith("s3://") or not uri[len("s3://") :].split("/", 1)[0]:
        raise ValidationError(f"S3Uri {uri} of {what} '{name}' is not valid: localaws reads s3://bucket/key URIs.")


def _check_input(item: dict) -> None:
    name = item["InputName"]
    if (item.get("S3Input") is None) == (item.get("DatasetDefinition") is None):
        raise ValidationError(f"Processing input '{name}' must give exactly one of S3Input and DatasetDefinition.")
    if item.get("DatasetDefinition") is not None:
        raise ValidationError(
            f"Processing input '{name}': localaws does not run Athena or Redshift DatasetDefinition inputs; "
            "use an S3Input."
        )
    s3 = item["S3Input"]
    _check_s3_uri(s3["S3Uri"], "processing input", name)
    _check_local_path(item, s3, "processing input", name)
    if s3["S3CompressionType"] == "Gzip" and s3["S3InputMode"] != "Pipe":
        raise ValidationError(
            f"Processing input '{name}': S3CompressionType Gzip can only be used when S3InputMode is Pipe."
        )
    if s3["S3InputMode"] == "Pipe":
        raise ValidationError(f"Processing input '{name}': localaws runs File mode inputs only, not Pipe.")


def _check_output(item: dict) -> None:
    name = item["OutputName"]
    if (item.get("S3Output") is None) == (item.get("FeatureStoreOutput") is None):
        raise ValidationError(f"Processing output '{name}' must give exactly one of S3Output and FeatureStoreOutput.")
    if item.get("FeatureStoreOutput") is not None:
        raise ValidationError(f"Processing output '{name}': localaws does not write to Feature Store; use S3Output.")
    s3 = item["S3Output"]
    _check_s3_uri(s3["S3Uri"], "processing output", name)
    _check_local_path(item, s3, "processing output", name)
