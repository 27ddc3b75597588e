"""The provider's SageMaker training, tuning, processing and transform operators, made safe to retry.

The provider either fails when the job name exists or appends a timestamp, so a
retried task starts a second, paid job. These subclasses re-attach instead: the
run's job keeps its deterministic name; if it is running or done, the task takes
it as its own; only when it failed or was stopped does the task start the next
attempt (``<name>-r2``, ``-r3``...). They only create: a deferrable sensor waits (and prints a
training job's log).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from airflow.providers.amazon.aws.operators.sagemaker import (
    SageMakerEndpointOperator,
    SageMakerProcessingOperator,
    SageMakerTrainingOperator,
    SageMakerTransformOperator,
    SageMakerTuningOperator,
)
from airflow.providers.amazon.aws.utils import trim_none_values
from botocore.exceptions import ClientError

from ml_pipeline.naming import MAX_NAME, MAX_TUNING_NAME, attempt_name

if TYPE_CHECKING:
    from airflow.sdk import Context

#: States in which the existing job is this task's job: it is running, stopping on its own, or done well.
REATTACH_STATES = ("InProgress", "Stopping", "Completed")
_MAX_ATTEMPTS = 20


def _describe_or_none(describe: Callable[[str], dict], name: str) -> dict | None:
    try:
        return describe(name)
    except ClientError as error:
        if error.response["Error"]["Code"] in ("ValidationException", "ResourceNotFound"):
            return None
        raise


def resolve_attempt(base: str, describe: Callable[[str], dict], status_key: str, limit: int) -> tuple[str, dict | None]:
    """The name this task must use and, when it re-attaches, the existing job's description."""
    for attempt in range(1, _MAX_ATTEMPTS + 1):
        candidate = attempt_name(base, attempt, limit)
        description = _describe_or_none(describe, candidate)
        if description is None:
            return candidate, None
        if description[status_key] in REATTACH_STATES:
            return candidate, description
    raise RuntimeError(f"{base} has failed {_MAX_ATTEMPTS} times; clear the task with a new run instead")


class RunTrainingJobOperator(SageMakerTrainingOperator):
    """Starts the run's training job, or re-attaches to it; returns ``{"Training": description}``."""

    def __init__(self, **kwargs: Any):
        kwargs.setdefault("wait_for_completion", False)
        # The sensor prints the job's log once it has ended. The provider's print_log here would print the
        # first lines after waiting a check interval (30 s) for them, and the sensor print them again.
        kwargs.setdefault("print_log", False)
        super().__init__(check_if_job_exists=False, **kwargs)

    def execute(self, context: Context) -> dict:
        base = self.config["TrainingJobName"]
        name, existing = resolve_attempt(base, self.hook.describe_training_job, "TrainingJobStatus", MAX_NAME)
        if existing is not None:
            self.log.info("Re-attaching to training job %s (%s)", name, existing["TrainingJobStatus"])
            return {"Training": trim_none_values(_serializable(existing))}
        if name != base:
            self.log.info("Training job %s failed or was stopped earlier: starting %s", base, name)
        self.config["TrainingJobName"] = name
        return super().execute(context)


class RunTuningJobOperator(SageMakerTuningOperator):
    """Starts the run's hyperparameter tuning job, or re-attaches to it; returns ``{"Tuning": description}``."""

    def __init__(self, **kwargs: Any):
        kwargs.setdefault("wait_for_completion", False)
        super().__init__(**kwargs)

    def execute(self, context: Context) -> dict:
        base = self.config["HyperParameterTuningJobName"]
        name, existing = resolve_attempt(
            base, self.hook.describe_tuning_job, "HyperParameterTuningJobStatus", MAX_TUNING_NAME
        )
        if existing is not None:
            self.log.info("Re-attaching to tuning job %s (%s)", name, existing["HyperParameterTuningJobStatus"])
            return {"Tuning": trim_none_values(_serializable(existing))}
        self.config["HyperParameterTuningJobName"] = name
        return super().execute(context)


class RunProcessingJobOperator(SageMakerProcessingOperator):
    """Starts the run's processing job, or re-attaches to it; returns ``{"Processing": description}``."""

    def __init__(self, **kwargs: Any):
        kwargs.setdefault("wait_for_completion", False)
        # The name is resolved here: the provider's "timestamp" would start a second job on a retry.
        super().__init__(action_if_job_exists="fail", **kwargs)

    def execute(self, context: Context) -> dict:
        base = self.config["ProcessingJobName"]
        name, existing = resolve_attempt(base, self.hook.describe_processing_job, "ProcessingJobStatus", MAX_NAME)
        if existing is not None:
            self.log.info("Re-attaching to processing job %s (%s)", name, existing["ProcessingJobStatus"])
            return {"Processing": trim_none_values(_serializable(existing))}
        if name != base:
            self.log.info("Processing job %s failed or was stopped earlier: starting %s", base, name)
        self.config["ProcessingJobName"] = name
        return super().execute(context)


class RunTransformJobOperator(SageMakerTransformOperator):
    """Starts the run's batch transform job (config ``{"Model": ..., "Transform": ...}``), creating its model
    unless it exists already, or re-attaches to the job; returns ``{"Transform": description, ...}``."""

    def __init__(self, **kwargs: Any):
        kwargs.setdefault("wait_for_completion", False)
        super().__init__(check_if_job_exists=False, check_if_model_exists=False, **kwargs)

    def execute(self, context: Context) -> dict:
        transform = self.config["Transform"]
        base = transform["TransformJobName"]
        name, existing = resolve_attempt(base, self.hook.describe_transform_job, "TransformJobStatus", MAX_NAME)
        if existing is not None:
            self.log.info("Re-attaching to transform job %s (%s)", name, existing["TransformJobStatus"])
            return {"Transform": trim_none_values(_serializable(existing))}
        transform["TransformJobName"] = name
        model = self.config.get("Model")
        if model and _describe_or_none(self.hook.describe_model, model["ModelName"]) is not None:
            # The run's model exists (its deploy made it, or an earlier try): the provider would make another.
            self.log.info("Model %s exists: transform job %s uses it", model["ModelName"], name)
            del self.config["Model"]
        return super().execute(context)


class DeployEndpointOperator(SageMakerEndpointOperator):
    """Creates the endpoint, or updates it blue/green to this run's endpoint config (a kept, stable
    endpoint, deployed run after run). A retry that finds the endpoint already on this run's config
    re-attaches instead of deploying again."""

    def __init__(self, **kwargs: Any):
        kwargs.setdefault("wait_for_completion", False)
        super().__init__(**kwargs)

    def execute(self, context: Context) -> dict:
        endpoint = self.config.get("Endpoint", self.config)
        try:
            current = self.hook.describe_endpoint(endpoint["EndpointName"])
        except ClientError:
            current = None
        if (
            current
            and current["EndpointConfigName"] == endpoint["EndpointConfigName"]
            and current["EndpointStatus"] != "Failed"
        ):
            self.log.info(
                "Endpoint %s is on %s already (%s): re-attaching",
                endpoint["EndpointName"],
                endpoint["EndpointConfigName"],
                current["EndpointStatus"],
            )
            return {"Endpoint": _serializable(current)}
        if current and current["EndpointStatus"] in ("Creating", "Updating", "SystemUpdating", "RollingBack"):
            raise RuntimeError(
                f"Endpoint {endpoint['EndpointName']} is {current['EndpointStatus']} for another deployment; "
                "this task retries once it settles"
            )
        return super().execute(context)


def _serializable(description: dict) -> dict:
    from airflow.providers.amazon.aws.operators.sagemaker import serialize  # noqa: PLC0415

    description = dict(description)
    description.pop("ResponseMetadata", None)
    return serialize(description)
