"""Waits, in the triggerer, for a SageMaker training or tuning job held to a budget (``max_cost_usd``).

``SageMakerBudgetTrigger`` asks for the job's state every ``waiter_delay`` seconds, as the provider's
``SageMakerTrigger`` does, and estimates its cost so far at each look (``cost.training_so_far``, a tuning job's
trials with ``cost.tuning_so_far``). The job ends on its own: the event is its end state, which the sensor
judges. Its estimate passes the budget first: the trigger stops it (``StopTrainingJob`` /
``StopHyperParameterTuningJob``) and fires ``{"status": "over_budget", "message": <why>, ...}``, which fails the
sensor's task with that sentence. The prices come with the trigger ({instance type: USD per hour}, read by
the sensor from the prices file), so the triggerer reads no file.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from ml_pipeline import cost

log = logging.getLogger(__name__)

TERMINAL = ("Completed", "Failed", "Stopped")
#: What each job type is called, asked and stopped by.
KINDS = {
    "training": ("training job", "TrainingJobStatus"),
    "tuning": ("tuning job", "HyperParameterTuningJobStatus"),
}


class SageMakerBudgetTrigger(BaseTrigger):
    """Fires when the job ends, or when its estimated cost passes ``budget_usd`` (having stopped it)."""

    def __init__(
        self,
        job_name: str,
        job_type: str,
        budget_usd: float,
        usd_per_hour: dict[str, float],
        waiter_delay: int = 30,
        waiter_max_attempts: int = 10_000,
        aws_conn_id: str | None = "aws_default",
        region_name: str | None = None,
        verify: bool | str | None = None,
        botocore_config: dict | None = None,
    ):
        super().__init__()
        if job_type not in KINDS:
            raise ValueError(f"job_type {job_type!r}: one of {', '.join(KINDS)}")
        self.job_name = job_name
        self.job_type = job_type
        self.budget_usd = float(budget_usd)
        self.usd_per_hour = dict(usd_per_hour)
        self.waiter_delay = waiter_delay
        self.waiter_max_attempts = waiter_max_attempts
        self.aws_conn_id = aws_conn_id
        self.region_name = region_name
        self.verify = verify
        self.botocore_config = botocore_config

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "job_name": self.job_name,
                "job_type": self.job_type,
                "budget_usd": self.budget_usd,
                "usd_per_hour": self.usd_per_hour,
                "waiter_delay": self.waiter_delay,
                "waiter_max_attempts": self.waiter_max_attempts,
                "aws_conn_id": self.aws_conn_id,
                "region_name": self.region_name,
                "verify": self.verify,
                "botocore_config": self.botocore_config,
            },
        )

    def _hook(self):
        from airflow.providers.amazon.aws.hooks.sagemaker import SageMakerHook  # noqa: PLC0415

        return SageMakerHook(
            aws_conn_id=self.aws_conn_id, region_name=self.region_name, verify=self.verify, config=self.botocore_config
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from botocore.exceptions import BotoCoreError, ClientError  # noqa: PLC0415

        kind, status_key = KINDS[self.job_type]
        async with await self._hook().get_async_conn() as client:
            for _ in range(self.waiter_max_attempts):
                try:
                    description = await self._describe(client)
                    status = description[status_key]
                    if status in TERMINAL:
                        yield TriggerEvent({"status": status.lower(), "job_name": self.job_name})
                        return
                    estimate = await self._estimate(client, description)
                    if estimate > self.budget_usd and status == "InProgress":
                        await self._stop(client)
                        message = cost.budget_sentence(kind, self.job_name, estimate, self.budget_usd)
                        log.info("%s", message)
                        yield TriggerEvent(
                            {
                                "status": "over_budget",
                                "job_name": self.job_name,
                                "estimate_usd": estimate,
                                "budget_usd": self.budget_usd,
                                "message": message,
                            }
                        )
                        return
                    log.info("%s %s is %s, estimated %s so far", kind, self.job_name, status, cost.money(estimate))
                except (ClientError, BotoCoreError) as error:  # throttled, or the network: look again
                    log.warning("%s %s: %s", kind, self.job_name, error)
                await asyncio.sleep(self.waiter_delay)
        yield TriggerEvent(
            {
                "status": "timeout",
                "job_name": self.job_name,
                "message": f"{kind} {self.job_name} did not end in {self.waiter_max_attempts} looks",
            }
        )

    async def _describe(self, client) -> dict:
        if self.job_type == "training":
            return await client.describe_training_job(TrainingJobName=self.job_name)
        return await client.describe_hyper_parameter_tuning_job(HyperParameterTuningJobName=self.job_name)

    async def _estimate(self, client, description: dict) -> float:
        now = time.time()
        if self.job_type == "training":
            return cost.training_so_far(description, self.usd_per_hour, now)
        trials = await list_trials(client, self.job_name)
        return cost.tuning_so_far(description, trials, self.usd_per_hour, now)

    async def _stop(self, client) -> None:
        if self.job_type == "training":
            await client.stop_training_job(TrainingJobName=self.job_name)
        else:
            await client.stop_hyper_parameter_tuning_job(HyperParameterTuningJobName=self.job_name)


async def list_trials(client, tuning_job: str) -> list[dict]:
    """Every trial summary of ``tuning_job`` (an aiobotocore client), page by page."""
    trials: list[dict] = []
    token = None
    while True:
        page = await client.list_training_jobs_for_hyper_parameter_tuning_job(
            HyperParameterTuningJobName=tuning_job, MaxResults=100, **({"NextToken": token} if token else {})
        )
        trials += page["TrainingJobSummaries"]
        token = page.get("NextToken")
        if not token:
            return trials
