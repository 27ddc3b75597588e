"""The provider's SageMaker sensors, able to defer, and saying plainly how a job ended.

The provider's training, tuning and endpoint sensors only poke, holding a worker
slot (or rescheduling) for hours. These poke once, then hand the wait to the
triggerer with the provider's own ``SageMakerTrigger``, and judge the end state
themselves:

- A job that ended Failed or Stopped fails the task with one line naming it, its end state and why
  ("training job X was Stopped (Training job stopped by user)"). The provider's training sensor reads
  ``FailureReason``, which a Stopped job does not have (on AWS too), and dies with ``KeyError``; its
  tuning sensor passes a Stopped tuning job. A job's end state does not change on a retry, so the
  failure is final (``AirflowFailException``): no retries re-check it.
- A training job's log is printed once, when the job has ended. The provider tails it before deferring
  and again (from the start) when the deferred task resumes in a fresh process, so each line appeared
  twice.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from airflow.providers.amazon.aws.hooks.sagemaker import LogState
from airflow.providers.amazon.aws.sensors.sagemaker import (
    SageMakerBaseSensor,
    SageMakerEndpointSensor,
    SageMakerTrainingSensor,
    SageMakerTuningSensor,
)
from airflow.providers.amazon.aws.triggers.sagemaker import SageMakerTrigger
from airflow.providers.common.compat.sdk import AirflowException
from airflow.sdk.exceptions import AirflowFailException

if TYPE_CHECKING:
    from airflow.sdk import Context

#: Seconds between status checks; localaws runs set it low (see README).
DEFAULT_POLL_SECONDS = int(os.environ.get("ML_PIPELINE_POLL_SECONDS", "30"))


class _Deferring(SageMakerBaseSensor):
    """Poke once, then defer to the provider's SageMakerTrigger."""

    job_type: str
    #: What the resource is called in messages ("training job").
    kind: str

    def __init__(
        self,
        *,
        deferrable: bool = True,
        waiter_delay: int | None = None,
        waiter_max_attempts: int = 10_000,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self.deferrable = deferrable
        self.waiter_delay = waiter_delay or DEFAULT_POLL_SECONDS
        self.waiter_max_attempts = waiter_max_attempts

    def _resource_name(self) -> str:
        raise NotImplementedError

    def failed_states(self) -> set[str]:
        return {"Failed", "Stopped"}

    def poke(self, context: Context) -> bool:
        response = self.get_sagemaker_response()
        state = self.state_from_response(response)
        if state in self.non_terminal_states():
            self.log.info("%s %s is %s", self.kind, self._resource_name(), state)
            return False
        self.ended(response)
        if state in self.failed_states():
            from ml_pipeline.closing import stop_or_failure_reason  # noqa: PLC0415 - not at DAG parse time

            reason = stop_or_failure_reason(response) or "no reason given"
            raise AirflowFailException(f"{self.kind} {self._resource_name()} was {state} ({reason})")
        self.log.info("%s", self.success_line(response))
        return True

    def ended(self, response: dict) -> None:
        """Called once the resource has reached an end state, before it is judged."""

    def success_line(self, response: dict) -> str:
        return f"{self.kind} {self._resource_name()} is {self.state_from_response(response)}"

    def execute(self, context: Context) -> None:
        if not self.deferrable:
            return super().execute(context)
        if self.poke(context):  # already done: a re-attached job, or a fast one
            return None
        self.defer(
            trigger=SageMakerTrigger(
                job_name=self._resource_name(),
                job_type=self.job_type,
                waiter_delay=self.waiter_delay,
                waiter_max_attempts=self.waiter_max_attempts,
                aws_conn_id=self.aws_conn_id,
                region_name=self.region_name,
                verify=self.verify,
                botocore_config=self.botocore_config,
            ),
            method_name="execute_complete",
        )
        return None

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> None:
        # The trigger ends on any terminal state; poke judges it (and raises for a failure).
        if not self.poke(context):
            raise AirflowException(f"{self._resource_name()} is not done after the trigger fired: {event}")


class DeferrableTrainingSensor(_Deferring, SageMakerTrainingSensor):
    job_type = "training"
    kind = "training job"

    def __init__(self, **kwargs: Any):
        # The log is printed once, at the end (see ended), not tailed by the provider's poke.
        super().__init__(print_log=False, **kwargs)

    def _resource_name(self) -> str:
        return self.job_name

    def ended(self, response: dict) -> None:
        """The job's whole log from CloudWatch Logs, once."""
        self.hook.describe_training_job_with_log(
            self.job_name, {}, [], response["ResourceConfig"]["InstanceCount"], LogState.COMPLETE, response, 0
        )

    def success_line(self, response: dict) -> str:
        metrics = ", ".join(f"{m['MetricName']}={m['Value']:.4f}" for m in response.get("FinalMetricDataList", []))
        return f"training job {self.job_name} is Completed in {response.get('TrainingTimeInSeconds')} s" + (
            f": {metrics}" if metrics else ""
        )


class DeferrableTuningSensor(_Deferring, SageMakerTuningSensor):
    job_type = "tuning"
    kind = "tuning job"

    def _resource_name(self) -> str:
        return self.job_name

    def success_line(self, response: dict) -> str:
        best = (response.get("BestTrainingJob") or {}).get("TrainingJobName")
        return (
            f"tuning job {self.job_name} is Completed: trials {response.get('TrainingJobStatusCounters')}, best {best}"
        )


class DeferrableEndpointSensor(_Deferring, SageMakerEndpointSensor):
    job_type = "endpoint"
    kind = "endpoint"

    def _resource_name(self) -> str:
        return self.endpoint_name

    def failed_states(self) -> set[str]:
        return {"Failed"}
