"""The provider's SageMaker sensors, able to defer.

The provider's training, tuning and endpoint sensors only poke, holding a worker
slot (or rescheduling) for hours. These poke once, then hand the wait to the
triggerer with the provider's own ``SageMakerTrigger``, and judge the end state
as the provider's sensors do.
"""
from __future__ import annotations

import os
from typing import Any

from airflow.providers.amazon.aws.sensors.sagemaker import (
    SageMakerBaseSensor,
    SageMakerEndpointSensor,
    SageMakerTrainingSensor,
    SageMakerTuningSensor,
)
from airflow.providers.amazon.aws.triggers.sagemaker import SageMakerTrigger
from airflow.providers.common.compat.sdk import AirflowException

#: Seconds between status checks; localaws runs set it low (see README).
DEFAULT_POLL_SECONDS = int(os.environ.get("ML_PIPELINE_POLL_SECONDS", "30"))


class _Deferring(SageMakerBaseSensor):
    """Poke once, then defer to the provider's SageMakerTrigger."""

    job_type: str

    def __init__(self, *, deferrable: bool = True, waiter_delay: int | None = None,
                 waiter_max_attempts: int = 10_000, **kwargs: Any):
        super().__init__(**kwargs)
        self.deferrable = deferrable
        self.waiter_delay = waiter_delay or DEFAULT_POLL_SECONDS
        self.waiter_max_attempts = waiter_max_attempts

    def _resource_name(self) -> str:
        raise NotImplementedError

    def execute(self, context) -> None:
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

    def execute_complete(self, context, event: dict[str, Any] | None = None) -> None:
        # The trigger ends on any terminal state; the provider's poke says whether it is a failure.
        if not self.poke(context):
            raise AirflowException(f"{self._resource_name()} is not done after the trigger fired: {event}")


class DeferrableTrainingSensor(_Deferring, SageMakerTrainingSensor):
    job_type = "training"

    def _resource_name(self) -> str:
        return self.job_name


class DeferrableTuningSensor(_Deferring, SageMakerTuningSensor):
    job_type = "tuning"

    def _resource_name(self) -> str:
        return self.job_name


class DeferrableEndpointSensor(_Deferring, SageMakerEndpointSensor):
    job_type = "endpoint"

    def _resource_name(self) -> str:
        return self.endpoint_name
