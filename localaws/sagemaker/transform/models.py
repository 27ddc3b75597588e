"""Batch transform's state: transform jobs, their state machine and their API.

What a job does while it runs (the model's containers, the records, the outputs) lives in
``executor.py``; this module validates requests as AWS does before anything runs and answers
Create/Describe/List/Stop in botocore's shapes. The job holds a copy of its model as it was created:
deleting the model later changes nothing. Tags live in the training backend's ``tags``.
"""

from __future__ import annotations

import copy
import threading
import time
from dataclasses import dataclass, field

from localaws.sagemaker import listing
from localaws.sagemaker.persisted_jobs import PersistedJobs
from localaws.sagemaker.errors import ResourceInUse, ValidationError
from localaws.sagemaker.hosting.models import Model
from localaws.sagemaker.transform import dataprocessing
from localaws.state.pickling import runtime

TERMINAL = ("Completed", "Failed", "Stopped")
#: The most MaxPayloadInMB may be, and MaxConcurrentTransforms x MaxPayloadInMB (AWS's limits).
MAX_PAYLOAD_MB = 100
#: The FailureReason of a job that was running when localaws stopped (an internal error: retryable).
STOPPED_WITH_LOCALAWS = "InternalServerError: localaws stopped while the transform job was running."


@dataclass
class TransformJob:
    name: str
    arn: str
    request: dict
    created: float
    model: Model  # as it was at CreateTransformJob
    status: str = "InProgress"
    failure_reason: str | None = None
    last_modified: float = 0.0
    started: float | None = None  # TransformStartTime: instances launching
    ended: float | None = None
    #: MaxConcurrentTransforms, MaxPayloadInMB and BatchStrategy as the job runs them: the request's,
    #: else what the container's /execution-parameters answered, else SageMaker's defaults.
    resolved: dict = field(default_factory=dict)
    stop_requested: threading.Event = runtime(default_factory=threading.Event)

    @property
    def done(self) -> bool:
        return self.status in TERMINAL

    def set_status(self, status: str, reason: str | None = None) -> None:
        now = time.time()
        self.status = status
        if reason is not None:
            self.failure_reason = reason[:1024]
        if status in TERMINAL:
            self.ended = now
        self.last_modified = now

    def describe(self) -> dict:
        r = self.request
        transform_input = copy.deepcopy(r["TransformInput"])
        transform_input.setdefault("CompressionType", "None")
        transform_input.setdefault("SplitType", "None")
        out = {
            "TransformJobName": self.name,
            "TransformJobArn": self.arn,
            "TransformJobStatus": self.status,
            "FailureReason": self.failure_reason,
            "ModelName": r["ModelName"],
            "MaxConcurrentTransforms": self.resolved.get("MaxConcurrentTransforms", r.get("MaxConcurrentTransforms")),
            "ModelClientConfig": r.get("ModelClientConfig"),
            "MaxPayloadInMB": self.resolved.get("MaxPayloadInMB", r.get("MaxPayloadInMB")),
            "BatchStrategy": self.resolved.get("BatchStrategy", r.get("BatchStrategy")),
            "Environment": r.get("Environment"),
            "TransformInput": transform_input,
            "TransformOutput": r["TransformOutput"],
            "TransformResources": r["TransformResources"],
            "CreationTime": self.created,
            "TransformStartTime": self.started,
            "TransformEndTime": self.ended,
            "DataProcessing": r.get("DataProcessing"),
            "ExperimentConfig": r.get("ExperimentConfig"),
        }
        return {key: value for key, value in out.items() if value is not None}

    def summary(self) -> dict:
        out = {
            "TransformJobName": self.name,
            "TransformJobArn": self.arn,
            "CreationTime": self.created,
            "TransformEndTime": self.ended,
            "LastModifiedTime": self.last_modified or self.created,
            "TransformJobStatus": self.status,
            "FailureReason": self.failure_reason,
        }
        return {key: value for key, value in out.items() if value is not None}

    def end_interrupted(self, at: float) -> None:
        """localaws stopped at ``at`` while the job ran: Stopped if a stop had been asked for, else Failed."""
        if self.status == "Stopping":
            self.status = "Stopped"
        else:
            self.status, self.failure_reason = "Failed", STOPPED_WITH_LOCALAWS
        self.ended = self.last_modified = at


class TransformBackend(PersistedJobs):
    """The account's transform jobs in one region."""

    operations = ("CreateTransformJob", "DescribeTransformJob", "ListTransformJobs", "StopTransformJob")

    def __init__(self, sagemaker, hosting, executor) -> None:
        """``sagemaker`` is the training backend (ARNs, tags and the lock are shared with it); ``hosting``
        holds the models; ``executor`` runs a job (``executor.TransformExecutor``)."""
        self.sagemaker = sagemaker
        self.hosting = hosting
        self.executor = executor
        self.lock: threading.RLock = sagemaker.lock
        self.tags: dict[str, list[dict]] = sagemaker.tags
        self.jobs: dict[str, TransformJob] = {}

    def create_transform_job(self, params: dict) -> dict:
        _check_request(params)
        name = params["TransformJobName"]
        with self.lock:
            if name in self.jobs:
                raise ResourceInUse(
                    "Job name must be unique within an AWS account and region, and a job with this name already "
                    f"exists ({self.jobs[name].arn})"
                )
            model = self.hosting.models.get(params["ModelName"])
            if model is None:
                raise ValidationError(f'Could not find model "{self.sagemaker.arn("model", params["ModelName"])}".')
            if model.execution_mode == "Direct" and len(model.containers) > 1:
                raise ValidationError(
                    "A transform job's model runs its containers as a Serial inference pipeline: the model "
                    f'"{model.arn}" invokes them Direct.'
                )
            job = TransformJob(
                name=name,
                arn=self.sagemaker.arn("transform-job", name),
                request=params,
                created=time.time(),
                model=copy.deepcopy(model),
            )
            self.jobs[name] = job
            self.tags[job.arn] = list(params.get("Tags", []))
        self.executor.start(job)
        return {"TransformJobArn": job.arn}

    def _job(self, name: str) -> TransformJob:
        job = self.jobs.get(name)
        if job is None:
            raise ValidationError(f"Could not find requested job with name {name}")
        return job

    def describe_transform_job(self, params: dict) -> dict:
        with self.lock:
            return self._job(params["TransformJobName"]).describe()

    def list_transform_jobs(self, params: dict) -> dict:
        with self.lock:
            summaries = [job.summary() for job in self.jobs.values()]
        page, token = listing.page(
            summaries,
            params,
            name_key="TransformJobName",
            status_key="TransformJobStatus",
            sort_keys={"Name": "TransformJobName", "CreationTime": "CreationTime", "Status": "TransformJobStatus"},
            default_order="Descending",
        )
        return {"TransformJobSummaries": page, **({"NextToken": token} if token else {})}

    def stop_transform_job(self, params: dict) -> dict:
        with self.lock:
            job = self._job(params["TransformJobName"])
            if job.status != "InProgress":
                raise ValidationError(f"The request was rejected because the transform job is in status {job.status}.")
            job.set_status("Stopping")
        job.stop_requested.set()
        return {}

    def shutdown(self) -> None:
        self.executor.shutdown()

    # state() and restore() across restarts: PersistedJobs.


def _check_request(params: dict) -> None:
    """What AWS refuses before anything runs, beyond botocore's model (which ``validate_request`` checked)."""
    source = params["TransformInput"]["DataSource"]["S3DataSource"]
    if source["S3DataType"] not in ("S3Prefix", "ManifestFile"):
        raise ValidationError(
            f"localaws reads S3DataType S3Prefix and ManifestFile input only, not {source['S3DataType']}."
        )
    if not source["S3Uri"].startswith("s3://"):
        raise ValidationError(f"S3Uri {source['S3Uri']} must be an S3 URI (s3://bucket/prefix).")
    output = params["TransformOutput"]
    if not output["S3OutputPath"].startswith("s3://"):
        raise ValidationError(f"S3OutputPath {output['S3OutputPath']} must be an S3 URI (s3://bucket/prefix).")
    if params.get("DataCaptureConfig"):
        raise ValidationError("localaws does not support DataCaptureConfig for transform jobs.")
    payload = params.get("MaxPayloadInMB")
    if payload is not None and payload > MAX_PAYLOAD_MB:
        raise ValidationError(f"MaxPayloadInMB must be at most {MAX_PAYLOAD_MB} MB; it is {payload}.")
    concurrency = params.get("MaxConcurrentTransforms")
    if payload and concurrency and payload * concurrency > MAX_PAYLOAD_MB:
        raise ValidationError(
            f"The value of MaxConcurrentTransforms ({concurrency}) times MaxPayloadInMB ({payload}) must not exceed "
            f"{MAX_PAYLOAD_MB} MB."
        )
    transform_input = params["TransformInput"]
    split_type = transform_input.get("SplitType", "None")
    try:
        dataprocessing.checked(
            params.get("DataProcessing"), transform_input.get("ContentType"), output.get("Accept"), split_type
        )
    except dataprocessing.PathError as error:
        raise ValidationError(f"Invalid JSONPath in DataProcessing: {error}.") from None
    except ValueError as error:
        raise ValidationError(str(error)) from None
