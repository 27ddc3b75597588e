"""The provider's SSM operator, made safe to retry for the run's host, and the one decision in front of
the provisioning steps.

The provider's ``SsmRunCommandOperator`` sends a new command on every try (a second training on the same
host). Its subclass here first looks for the run's command (by its document and comment) and re-attaches
to it. (The host itself is launched by its provisioning step, ``stack.create_host``, which finds it by its
tags on a retry.)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow.providers.amazon.aws.operators.ssm import SsmRunCommandOperator
from airflow.providers.standard.utils.skipmixin import SkipMixin
from airflow.sdk import BaseOperator

from ml_pipeline.infra.provisioning import steps_for

if TYPE_CHECKING:
    from airflow.sdk import Context


class SkipUnneededSteps(BaseOperator, SkipMixin):
    """Skips, at once, the provisioning tasks the run's compute does not need (every one with
    ``compute=sagemaker`` and no VPC; the host's with ``provision_vpc``), so the scheduler never queues them
    one by one only for each to skip itself.

    ``plan`` (templated) is the run's plan; ``step_tasks`` maps each step of ``provisioning.STEPS`` to the
    task ids that belong to it (the step and the sensors on its resource). The tasks of the needed steps
    run as wired; what follows the group joins on a ``NONE_FAILED`` task. It logs the needed steps, and
    returns them only when it skips nothing: skipping ends the task at once (``DownstreamTasksSkipped``),
    with no return value."""

    template_fields = ("plan",)

    def __init__(self, *, plan: Any, step_tasks: dict[str, list[str]], **kwargs: Any):
        super().__init__(**kwargs)
        self.plan = plan
        self.step_tasks = step_tasks

    def execute(self, context: Context) -> list[str] | None:
        needed = steps_for(self.plan["params"])
        skipped = [task_id for step, task_ids in self.step_tasks.items() if step not in needed for task_id in task_ids]
        p = self.plan["params"]
        self.log.info(
            "provisioning for compute=%s%s: %s",
            p["compute"],
            " with its own VPC" if p.get("provision_vpc") else "",
            ", ".join(needed) if needed else "nothing; the provisioning steps are skipped",
        )
        # Raises DownstreamTasksSkipped: the task succeeds and the listed tasks are skipped in one call.
        self.skip(ti=context["ti"], tasks=[self.dag.get_task(task_id) for task_id in skipped])
        return needed


class RunHostTrainingOperator(SsmRunCommandOperator):
    """Sends the run's training command to its host, or re-attaches to it; returns the command id.

    ``request`` (templated) is ``host_training.command_request(...)``: SendCommand's arguments with the
    ``DocumentName``. A command of the same document and comment (the job name) that is pending, running
    or succeeded on the host is this task's command. Pair with the provider's
    ``SsmRunCommandCompletedSensor(command_id=..., deferrable=True)``.
    """

    template_fields = (*SsmRunCommandOperator.template_fields, "request")

    def __init__(self, *, request: Any, **kwargs: Any):
        kwargs.setdefault("wait_for_completion", False)
        super().__init__(document_name="(from request)", **kwargs)
        self.request = request

    def execute(self, context: Context) -> str:
        from ml_pipeline.infra.host_training import find_command  # noqa: PLC0415

        request = dict(self.request)
        self.document_name = request.pop("DocumentName")
        self.run_command_kwargs = request
        instance_id = request["InstanceIds"][0]
        existing = find_command(self.hook.conn, instance_id, self.document_name, request.get("Comment"))
        if existing is not None:
            self.log.info(
                "Command %s (%s) is this run's training on %s: re-attaching",
                existing["CommandId"],
                existing["Status"],
                instance_id,
            )
            return existing["CommandId"]
        return super().execute(context)
