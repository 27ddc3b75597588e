"""The provisioning steps of a run's stack, in order: the one list that the DAG's provision group,
``stack.run_step`` and ``stack.provision`` follow.

Each step has its name (its task's id in the provision group, its function in ``stack.run_step``), the part
of the stack it belongs to (``network``: compute=host, or compute=sagemaker with provision_vpc; ``host``:
compute=host), the earlier steps whose results it builds on (given to it: it never looks them up again by
tags) and, where its resource has a state to reach before the next step builds on it, what to wait for
(``Wait``).

Read when the DAG is built: the standard library only.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple


class Wait(NamedTuple):
    """The state a step's resource must reach: its kind (``stack.resource_state``), the key of its id in the
    step's result, the state."""

    kind: str
    id_key: str
    state: str


class Step(NamedTuple):
    name: str
    part: str
    needs: tuple[str, ...] = ()
    wait: Wait | None = None


STEPS = (
    Step("vpc", "network", (), Wait("vpc", "vpc_id", "available")),
    Step("internet_gateway", "network", ("vpc",), Wait("internet_gateway", "internet_gateway_id", "attached")),
    Step("subnets", "network", ("vpc",), Wait("subnet", "private_subnet_id", "available")),
    Step("route_tables", "network", ("vpc", "internet_gateway", "subnets")),
    Step("security_groups", "network", ("vpc",)),
    Step("instance_profile", "host", (), Wait("instance_profile", "instance_profile_name", "ready")),
    Step("volume", "host", ("subnets",), Wait("volume", "volume_id", "available")),
    Step("documents", "host"),
    Step("host", "host", ("subnets", "security_groups", "instance_profile")),
    Step("attach_volume", "host", ("volume", "host"), Wait("volume", "volume_id", "in-use")),
)


def steps_for(params: Mapping[str, Any]) -> list[str]:
    """The steps a run with these Params needs, in order: the network and the host with compute=host, the
    network alone with provision_vpc, none otherwise."""
    if params.get("compute") == "host":
        parts = {"network", "host"}
    elif params.get("provision_vpc"):
        parts = {"network"}
    else:
        return []
    return [step.name for step in STEPS if step.part in parts]


def merged(results: Iterable[Mapping[str, Any] | None]) -> dict[str, Any]:
    """The ids the steps returned, in one mapping (a step that did not run returned None; an id a step
    left None is not there)."""
    return {key: value for result in results if result for key, value in result.items() if value is not None}
