"""The provider's SageMaker sensors, able to defer, and saying plainly how a job ended.

The provider's training, tuning, processing, transform and endpoint sensors only poke, holding a worker
slot (or rescheduling) for hours. These poke once, then hand the wait to the
triggerer with the provider's own ``SageMakerTrigger``, and judge the end state
themselves:

- A job that ended Failed or Stopped fails the task with one line naming it, its end state and why
  ("training job X was Stopped (Training job stopped by user)"). The provider's training sensor reads
  ``FailureReason``, which a Stopped job does not have (on AWS too), and dies with ``KeyError``; its
  tuning and transform sensors pass a Stopped job. A job's end state does not change on a retry, so the
  failure is final (``AirflowFailException``): no retries re-check it.
- A job (or endpoint) that no longer exists fails the task at once, finally, naming it: a retry cannot
  bring it back, and the provider's sensors retry the describe's error like any other.
- A training job's log is printed once, when the job has ended. The provider tails it before deferring
  and again (from the start) when the deferred task resumes in a fresh process, so each line appeared
  twice.
- With a budget (``max_cost_usd``, the run's), the training and tuning sensors watch the job's estimated
  cost (``ml_pipeline.cost``): at each poke, and while deferred through ``SageMakerBudgetTrigger`` in place
  of the provider's trigger. A job whose estimate passes it is stopped and the task fails, finally, with
  the reason ("training job X stopped: its estimated cost $A passed max_cost_usd $B"), also pushed as the
  XCom ``budget_stop`` for the run's summary.
"""

from __future__ import annotations

import math
import os
import time
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError
from airflow.providers.amazon.aws.hooks.sagemaker import LogState
from airflow.providers.amazon.aws.sensors.sagemaker import (
    SageMakerBaseSensor,
    SageMakerEndpointSensor,
    SageMakerProcessingSensor,
    SageMakerTrainingSensor,
    SageMakerTransformSensor,
    SageMakerTuningSensor,
)
from airflow.providers.amazon.aws.triggers.sagemaker import SageMakerTrigger
from airflow.providers.common.compat.sdk import AirflowException
from airflow.sdk.exceptions import AirflowFailException

from ml_pipeline.aws import is_missing

if TYPE_CHECKING:
    from airflow.sdk import Context

#: Seconds between status checks; localaws runs set it low (see README).
DEFAULT_POLL_SECONDS = int(os.environ.get("ML_PIPELINE_POLL_SECONDS", "30"))
#: The XCom key of the sentence saying that the budget stopped the job.
BUDGET_STOP_KEY = "budget_stop"


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
        try:
            response = self._response = self.get_sagemaker_response()
        except ClientError as error:
            if is_missing(error):
                message = error.response["Error"].get("Message", "")
                raise AirflowFailException(f"{self.kind} {self._resource_name()} does not exist ({message})") from None
            raise
        state = self.state_from_response(response)
        if state in self.non_terminal_states():
            self.log.info("%s %s is %s", self.kind, self._resource_name(), state)
            self.watch_budget(context, response)
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

    def watch_budget(self, context: Context, response: dict) -> None:
        """Without a budget, nothing (the endpoint sensor has none)."""

    def trigger_arguments(self) -> dict[str, Any]:
        """What every trigger of this sensor's is given: the job, the cadence, the connection."""
        return {
            "job_name": self._resource_name(),
            "job_type": self.job_type,
            "waiter_delay": self.waiter_delay,
            "waiter_max_attempts": self.waiter_max_attempts,
            "aws_conn_id": self.aws_conn_id,
            "region_name": self.region_name,
            "verify": self.verify,
            "botocore_config": self.botocore_config,
        }

    def trigger(self, response: dict):
        """What waits for the job in the triggerer: the provider's SageMakerTrigger."""
        return SageMakerTrigger(**self.trigger_arguments())

    def execute(self, context: Context) -> None:
        if not self.deferrable:
            return super().execute(context)
        if self.poke(context):  # already done: a re-attached job, or a fast one
            return None
        self.defer(trigger=self.trigger(self._response), method_name="execute_complete")
        return None

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> None:
        if event and event.get("status") == "over_budget":  # the trigger stopped the job
            fail_over_budget(context, event["message"])
        # The trigger ends on any terminal state; poke judges it (and raises for a failure).
        if not self.poke(context):
            raise AirflowException(f"{self._resource_name()} is not done after the trigger fired: {event}")


def fail_over_budget(context: Context, message: str) -> None:
    """The task fails, finally, saying why the budget stopped its job; the sentence goes to the summary too."""
    context["ti"].xcom_push(key=BUDGET_STOP_KEY, value=message)
    raise AirflowFailException(message)


class _Budgeted(_Deferring):
    """A training or tuning sensor held to ``max_cost_usd`` (a number, or its rendered template: "None" or
    empty for no budget)."""

    def __init__(self, *, max_cost_usd: float | str | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        self.max_cost_usd = max_cost_usd

    def budget(self) -> float | None:
        value = self.max_cost_usd
        if value is None or (isinstance(value, str) and value.strip() in ("", "None")):
            return None
        try:
            budget = float(value)
        except ValueError:
            budget = math.nan
        if not math.isfinite(budget) or budget <= 0:
            raise AirflowFailException(f"max_cost_usd {value!r} is not a positive number of US dollars")
        return budget

    def instance_types(self, response: dict) -> set[str | None]:
        raise NotImplementedError

    def estimate(self, response: dict, usd_per_hour: dict[str, float]) -> float:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def usd_per_hour(self, response: dict) -> dict[str, float]:
        """The training price of each instance type the job runs on, from the prices file."""
        from ml_pipeline import cost  # noqa: PLC0415

        prices = cost.load_prices()
        found = {t: prices.usd_per_hour("training", t) for t in self.instance_types(response)}
        missing = sorted(str(t) for t, price in found.items() if price is None)
        if missing:
            raise AirflowFailException(
                f"max_cost_usd is set, but {prices.path.name} has no SageMaker training price for "
                f"{', '.join(missing)}: the budget cannot be watched"
            )
        return {str(t): float(price) for t, price in found.items() if price is not None}

    def watch_budget(self, context: Context, response: dict) -> None:
        """Stop the job, and fail, once its estimated cost passes the budget."""
        from ml_pipeline import cost  # noqa: PLC0415

        budget = self.budget()
        if budget is None:
            return
        estimate = self.estimate(response, self.usd_per_hour(response))
        if estimate > budget and self.state_from_response(response) == "InProgress":
            self.stop()
            fail_over_budget(context, cost.budget_sentence(self.kind, self._resource_name(), estimate, budget))
        self.log.info(
            "%s %s: estimated %s so far, budget %s",
            self.kind,
            self._resource_name(),
            cost.money(estimate),
            cost.money(budget),
        )

    def trigger(self, response: dict):
        budget = self.budget()
        if budget is None:
            return super().trigger(response)
        from ml_pipeline.triggers.sagemaker import SageMakerBudgetTrigger  # noqa: PLC0415

        return SageMakerBudgetTrigger(
            **self.trigger_arguments(), budget_usd=budget, usd_per_hour=self.usd_per_hour(response)
        )


class DeferrableTrainingSensor(_Budgeted, SageMakerTrainingSensor):
    job_type = "training"
    kind = "training job"
    template_fields = (*SageMakerTrainingSensor.template_fields, "max_cost_usd")

    def __init__(self, **kwargs: Any):
        # The log is printed once, at the end (see ended), not tailed by the provider's poke.
        super().__init__(print_log=False, **kwargs)

    def instance_types(self, response: dict) -> set[str | None]:
        from ml_pipeline import cost  # noqa: PLC0415

        return {cost.resources(response)[0]}

    def estimate(self, response: dict, usd_per_hour: dict[str, float]) -> float:
        from ml_pipeline import cost  # noqa: PLC0415

        return cost.training_so_far(response, usd_per_hour, time.time())

    def stop(self) -> None:
        self.hook.conn.stop_training_job(TrainingJobName=self.job_name)

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


class DeferrableTuningSensor(_Budgeted, SageMakerTuningSensor):
    job_type = "tuning"
    kind = "tuning job"
    template_fields = (*SageMakerTuningSensor.template_fields, "max_cost_usd")

    def _resource_name(self) -> str:
        return self.job_name

    def instance_types(self, response: dict) -> set[str | None]:
        from ml_pipeline import cost  # noqa: PLC0415

        return {instance_type for instance_type, _ in cost.definition_resources(response).values()}

    def estimate(self, response: dict, usd_per_hour: dict[str, float]) -> float:
        from ml_pipeline import cost  # noqa: PLC0415

        pages = self.hook.conn.get_paginator("list_training_jobs_for_hyper_parameter_tuning_job").paginate(
            HyperParameterTuningJobName=self.job_name
        )
        trials = [trial for page in pages for trial in page["TrainingJobSummaries"]]
        return cost.tuning_so_far(response, trials, usd_per_hour, time.time())

    def stop(self) -> None:
        self.hook.conn.stop_hyper_parameter_tuning_job(HyperParameterTuningJobName=self.job_name)

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


#: A processing job's log group in CloudWatch Logs (streams ``<job>/algo-<n>-<epoch>``).
PROCESSING_LOG_GROUP = "/aws/sagemaker/ProcessingJobs"


class DeferrableProcessingSensor(_Deferring, SageMakerProcessingSensor):
    job_type = "processing"
    kind = "processing job"

    def _resource_name(self) -> str:
        return self.job_name

    def ended(self, response: dict) -> None:
        """The job's log from CloudWatch Logs, once, every instance's interleaved by time."""
        from botocore.exceptions import ClientError  # noqa: PLC0415

        try:
            streams = [
                stream["logStreamName"]
                for stream in self.hook.logs_hook.conn.describe_log_streams(
                    logGroupName=PROCESSING_LOG_GROUP, logStreamNamePrefix=f"{self.job_name}/"
                )["logStreams"]
            ]
            for index, event in self.hook.multi_stream_iter(PROCESSING_LOG_GROUP, streams):
                self.log.info("[%s] %s", streams[index].split("/")[1], event["message"])
        except ClientError as error:  # no log (it never ran) is no reason to fail
            self.log.info("processing job %s: no log to show (%s)", self.job_name, error)

    def success_line(self, response: dict) -> str:
        message = response.get("ExitMessage")
        return f"processing job {self.job_name} is Completed" + (f": {message}" if message else "")


class DeferrableTransformSensor(_Deferring, SageMakerTransformSensor):
    job_type = "transform"
    kind = "transform job"

    def _resource_name(self) -> str:
        return self.job_name

    def success_line(self, response: dict) -> str:
        output = (response.get("TransformOutput") or {}).get("S3OutputPath")
        return f"transform job {self.job_name} is Completed: its output is in {output}"
