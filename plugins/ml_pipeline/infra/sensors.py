"""Waits on the run's resources, in the provider's style (``AwsBaseSensor``).

    ResourceStateSensor(kind=..., resource_id=..., target_state=...)   a VPC, subnet, gateway, volume,
                                                                       endpoint or instance profile
    HostReadySensor(plan=..., instance_id=..., volume_id=...)         the host ready for SSM and to train

Both reschedule by default (``mode="reschedule"``): between pokes they hold no worker slot, as the
deferrable sensors do (a VPC is available in seconds, a real host takes minutes to boot).

For the instance itself use the provider's ``EC2InstanceStateSensor(target_state="running")``, and for
the training command the provider's ``SsmRunCommandCompletedSensor``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.providers.amazon.aws.hooks.ec2 import EC2Hook
from airflow.providers.amazon.aws.sensors.base_aws import AwsBaseSensor
from airflow.providers.amazon.aws.utils.mixins import aws_template_fields

if TYPE_CHECKING:
    from airflow.sdk import Context

    from ml_pipeline.aws import Client

#: States after which waiting is pointless.
FAILED_STATES = {
    "volume": {"error", "deleted", "deleting"},
    "vpc_endpoint": {"failed", "rejected", "deleted"},
    "instance": {"terminated", "shutting-down"},
}


class _StackSensor(AwsBaseSensor[EC2Hook]):
    aws_hook_class = EC2Hook

    def __init__(self, **kwargs: Any):
        kwargs.setdefault("mode", "reschedule")
        super().__init__(**kwargs)

    @property
    def _hook_parameters(self) -> dict[str, Any]:
        return {**super()._hook_parameters, "api_type": "client_type"}

    def client(self, service: str) -> Client:
        if service == "ec2":
            return self.hook.conn
        from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook  # noqa: PLC0415

        return AwsBaseHook(aws_conn_id=self.aws_conn_id, region_name=self.region_name, client_type=service).get_conn()


class ResourceStateSensor(_StackSensor):
    """Waits until one resource reports ``target_state`` (see ``stack.resource_state``); fails at once when
    it reports a state it cannot leave (a volume in error, a failed endpoint)."""

    template_fields: Sequence[str] = aws_template_fields("kind", "resource_id", "target_state")

    def __init__(self, *, kind: str, resource_id: str, target_state: str, **kwargs: Any):
        super().__init__(**kwargs)
        self.kind = kind
        self.resource_id = resource_id
        self.target_state = target_state

    def poke(self, context: Context) -> bool:
        from ml_pipeline.infra.stack import resource_state  # noqa: PLC0415

        state = resource_state(self.client, self.kind, self.resource_id)
        self.log.info("%s %s is %s (waiting for %s)", self.kind, self.resource_id, state, self.target_state)
        if state in FAILED_STATES.get(self.kind, set()):
            raise RuntimeError(f"{self.kind} {self.resource_id} is {state}: it will never be {self.target_state}")
        return state == self.target_state


class HostReadySensor(_StackSensor):
    """Waits until the host is ready to train (``host_training.host_readiness``): running with its status
    checks passed, its SSM agent Online, and the HostCheck command succeeded on it. Fails when the host
    reports it cannot train."""

    template_fields: Sequence[str] = aws_template_fields("plan", "instance_id", "volume_id")

    def __init__(self, *, plan: Any, instance_id: str, volume_id: str | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        self.plan = plan
        self.instance_id = instance_id
        self.volume_id = volume_id

    def poke(self, context: Context) -> bool:
        from ml_pipeline.infra.host_training import host_readiness  # noqa: PLC0415

        readiness = host_readiness(self.client, self.plan, self.instance_id, self.volume_id or None)
        self.log.info("host %s: %s (%s)", self.instance_id, readiness["stage"], readiness["detail"])
        return readiness["ready"]
