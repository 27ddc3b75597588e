"""Helpers for the infrastructure tests: plans, a failing client, counting what a run left."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone

ZERO = {
    "instances": 0,
    "volumes": 0,
    "security_groups": 0,
    "subnets": 0,
    "route_tables": 0,
    "internet_gateways": 0,
    "vpc_endpoints": 0,
    "vpcs": 0,
    "roles": 0,
    "instance_profiles": 0,
    "ssm_documents": 0,
}


def params(experiment: dict | None = None, **overrides) -> dict:
    """The pipeline's and the infrastructure's Params of ``experiment`` (default: the tests' plain one,
    tests/dags/experiments/plain) at their defaults, with ``overrides``."""
    from ml_pipeline.infra.params import infra_params
    from ml_pipeline.params import pipeline_params
    from tests.dags.experiment_support import plain

    form = {**pipeline_params(experiment or plain()), **infra_params()}
    values = {name: param.value for name, param in form.items()}
    values.update({"preset": "quick", "bucket": "infra-tests", **overrides})
    return values


def plan(experiment: dict | None = None, **overrides) -> dict:
    """A run's plan as ``make_plan`` makes it (a fresh run id each time)."""
    from ml_pipeline.plan import make_plan
    from tests.dags.experiment_support import plain

    experiment = experiment or plain()
    return make_plan(
        params(experiment, **overrides), f"manual__{uuid.uuid4().hex}", datetime.now(timezone.utc), experiment
    )


def key_pair(client, name: str = "ops") -> str:
    """An EC2 key pair the preflight finds (it refuses an ssh_key_name that does not exist)."""
    ec2 = client("ec2")
    if not ec2.describe_key_pairs(Filters=[{"Name": "key-name", "Values": [name]}])["KeyPairs"]:
        ec2.create_key_pair(KeyName=name)
    return name


class Failure(Exception):
    """Injected."""


class FailingClients:
    """``client(service)`` whose ``operation`` fails with Failure right after AWS carried it out (``after=True``:
    a half-created resource) or instead of it."""

    def __init__(self, client, operation: str, after: bool = True):
        self.client = client
        self.operation = operation
        self.after = after

    def __call__(self, service: str):
        real = self.client(service)
        if not hasattr(real, self.operation):
            return real
        operation, after = self.operation, self.after

        class Wrapped:
            def __getattr__(self, name):
                attribute = getattr(real, name)
                if name != operation:
                    return attribute

                def failing(*args, **kwargs):
                    if after:
                        attribute(*args, **kwargs)
                    raise Failure(f"injected after {operation}" if after else f"injected instead of {operation}")

                return failing

        return Wrapped()
