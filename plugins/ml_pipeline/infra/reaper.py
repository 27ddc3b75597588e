"""The cost guards the hourly reaper DAG runs (``dags/reaper.py``).

    find_stacks(client)                      every run with resources tagged project=ml-pipeline: its age
                                             (the oldest ``created-at`` tag) and time-to-live (``ttl-hours``)
    expired_stacks(client, now, default_ttl) the runs older than their TTL
    reap_stacks(client, ...)                 teardown_stack for each of them
    idle_endpoints(client, idle_hours)       SageMaker endpoints tagged project=ml-pipeline, older than the
                                             window, with no ``Invocations`` (AWS/SageMaker, per variant)
                                             in the last ``idle_hours``
    reap_endpoints(client, ...)              deletes them (and their scaling targets)
    reap(client, ...)                        both, with one report of what was removed

Only what carries the project's tag is ever touched, whichever experiment's run made it (never a name: an
experiment's name prefixes its resources, and any name is an experiment's); stacks are removed through
``teardown_stack``. Reports name each one's experiment (its ``experiment`` tag) where it has one.
"""

from __future__ import annotations

import logging
import math
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING

from ml_pipeline.infra import tags
from ml_pipeline.infra.teardown import TeardownIncomplete, teardown_stack

if TYPE_CHECKING:
    from ml_pipeline.aws import Clients

log = logging.getLogger(__name__)

DEFAULT_TTL_HOURS = 12.0
DEFAULT_IDLE_HOURS = 24.0
BUSY_ENDPOINT_STATES = ("Creating", "Updating", "SystemUpdating", "RollingBack", "Deleting")


def _note(stacks: dict, tag_list: list[dict] | None) -> None:
    found = tags.as_dict(tag_list)
    if found.get(tags.PROJECT_KEY) != tags.PROJECT or not found.get(tags.RUN_KEY):
        return
    stack = stacks.setdefault(
        found[tags.RUN_KEY],
        {"run": found[tags.RUN_KEY], "experiment": None, "created_at": None, "ttl_hours": None, "resources": 0},
    )
    stack["resources"] += 1
    stack["experiment"] = stack["experiment"] or found.get(tags.EXPERIMENT_KEY)
    try:
        created = tags.parse_iso(found[tags.CREATED_AT]) if found.get(tags.CREATED_AT) else None
    except ValueError:
        created = None
    if created and (stack["created_at"] is None or created < stack["created_at"]):
        stack["created_at"] = created
    try:
        ttl = float(found[tags.TTL_HOURS]) if found.get(tags.TTL_HOURS) else None
    except ValueError:
        ttl = None
    if ttl is not None and (stack["ttl_hours"] is None or ttl < stack["ttl_hours"]):
        stack["ttl_hours"] = ttl


def find_stacks(client: Clients) -> dict[str, dict]:
    """run key -> {"run", "experiment" (str | None), "created_at" (datetime | None), "ttl_hours" (float | None),
    "resources" (count)}."""
    ec2 = client("ec2")
    project = tags.project_filter()
    stacks: dict[str, dict] = {}
    for describe, key in (
        ("describe_vpcs", "Vpcs"),
        ("describe_subnets", "Subnets"),
        ("describe_security_groups", "SecurityGroups"),
        ("describe_route_tables", "RouteTables"),
        ("describe_internet_gateways", "InternetGateways"),
        ("describe_volumes", "Volumes"),
        ("describe_vpc_endpoints", "VpcEndpoints"),
    ):
        for item in getattr(ec2, describe)(Filters=project)[key]:
            if str(item.get("State", "")).lower() in ("deleted", "deleting"):
                continue  # AWS lists a deleted endpoint for a while
            _note(stacks, item.get("Tags"))
    reservations = ec2.describe_instances(
        Filters=project
        + [{"Name": "instance-state-name", "Values": ["pending", "running", "stopping", "stopped", "shutting-down"]}]
    )["Reservations"]
    for instance in (i for r in reservations for i in r["Instances"]):
        _note(stacks, instance.get("Tags"))
    iam_client = client("iam")
    for role in iam_client.list_roles(PathPrefix=tags.IAM_PATH)["Roles"]:
        _note(stacks, iam_client.list_role_tags(RoleName=role["RoleName"])["Tags"])
    for profile in iam_client.list_instance_profiles(PathPrefix=tags.IAM_PATH)["InstanceProfiles"]:
        described = iam_client.get_instance_profile(InstanceProfileName=profile["InstanceProfileName"])
        _note(stacks, described["InstanceProfile"].get("Tags"))
    ssm = client("ssm")
    for document in ssm.list_documents(
        Filters=[{"Key": f"tag:{tags.PROJECT_KEY}", "Values": [tags.PROJECT]}, {"Key": "Owner", "Values": ["Self"]}]
    )["DocumentIdentifiers"]:
        _note(
            stacks,
            document.get("Tags")
            or ssm.list_tags_for_resource(ResourceType="Document", ResourceId=document["Name"])["TagList"],
        )
    return stacks


def expired_stacks(
    client: Clients, now: datetime | None = None, default_ttl_hours: float = DEFAULT_TTL_HOURS
) -> list[dict]:
    """The stacks older than their time-to-live (a stack with no ``created-at`` is never judged expired)."""
    now = now or datetime.now(timezone.utc)
    expired = []
    for stack in find_stacks(client).values():
        if stack["created_at"] is None:
            log.warning("run %s has resources without a created-at tag: left to its teardown", stack["run"])
            continue
        ttl = stack["ttl_hours"] if stack["ttl_hours"] is not None else default_ttl_hours
        age = (now - stack["created_at"]).total_seconds() / 3600
        if age > ttl:
            expired.append(
                {
                    "run": stack["run"],
                    "experiment": stack["experiment"],
                    "age_hours": round(age, 3),
                    "ttl_hours": ttl,
                    "resources": stack["resources"],
                }
            )
    return sorted(expired, key=lambda s: s["run"])


def reap_stacks(
    client: Clients,
    now: datetime | None = None,
    default_ttl_hours: float = DEFAULT_TTL_HOURS,
    dry_run: bool = False,
    timeout: float = 900,
    poll: float = 5,
) -> dict:
    removed, errors = [], []
    for stack in expired_stacks(client, now, default_ttl_hours):
        if dry_run:
            removed.append({**stack, "removed": "dry run"})
            continue
        try:
            report = teardown_stack(client, stack["run"], timeout=timeout, poll=poll)
            removed.append({**stack, "removed": report["removed"]})
        except TeardownIncomplete as error:
            removed.append({**stack, "removed": error.report["removed"]})
            errors.extend(error.report["errors"])
        log.info(
            "reaper: run %s (%.1f h old, TTL %.1f h) removed", stack["run"], stack["age_hours"], stack["ttl_hours"]
        )
    return {"stacks": removed, "errors": errors}


def _invocations(cloudwatch, endpoint: str, variant: str, start: datetime, end: datetime) -> float:
    seconds = max(60.0, (end - start).total_seconds())
    period = max(60, int(math.ceil(seconds / 1440 / 60)) * 60)  # at most 1,440 datapoints per call
    points = cloudwatch.get_metric_statistics(
        Namespace="AWS/SageMaker",
        MetricName="Invocations",
        StartTime=start,
        EndTime=end,
        Period=period,
        Statistics=["Sum"],
        Dimensions=[{"Name": "EndpointName", "Value": endpoint}, {"Name": "VariantName", "Value": variant}],
    )["Datapoints"]
    return sum(point.get("Sum", 0.0) for point in points)


def idle_endpoints(client: Clients, idle_hours: float = DEFAULT_IDLE_HOURS, now: datetime | None = None) -> list[dict]:
    """The project's endpoints (tag project=ml-pipeline) in service for longer than ``idle_hours`` with no
    invocation on any variant during the last ``idle_hours``."""
    sm, cloudwatch = client("sagemaker"), client("cloudwatch")
    now = now or datetime.now(timezone.utc)
    start = now - timedelta(hours=idle_hours)
    # EndTime is exclusive and compared in whole seconds (moto drops its fraction): a call in the second
    # before ``now`` would be missed. A minute past ``now`` only adds calls, and a call never makes an
    # endpoint idle.
    end = now + timedelta(minutes=1)
    idle = []
    for page in sm.get_paginator("list_endpoints").paginate():
        for summary in page["Endpoints"]:
            name = summary["EndpointName"]
            endpoint_tags = tags.as_dict(sm.list_tags(ResourceArn=summary["EndpointArn"])["Tags"])
            if endpoint_tags.get(tags.PROJECT_KEY) != tags.PROJECT:
                continue
            try:
                described = sm.describe_endpoint(EndpointName=name)
            except sm.exceptions.ClientError:
                continue  # deleted meanwhile
            if described["EndpointStatus"] in BUSY_ENDPOINT_STATES:
                continue
            since = described.get("LastModifiedTime") or described["CreationTime"]
            if since > start:
                continue  # too young to be judged idle
            variants = [v["VariantName"] for v in described.get("ProductionVariants", [])]
            calls = sum(_invocations(cloudwatch, name, variant, start, end) for variant in variants)
            if calls == 0:
                idle.append(
                    {
                        "endpoint": name,
                        "experiment": endpoint_tags.get(tags.EXPERIMENT_KEY),
                        "variants": variants,
                        "idle_hours": idle_hours,
                        "status": described["EndpointStatus"],
                    }
                )
    return idle


def reap_endpoints(
    client: Clients, idle_hours: float = DEFAULT_IDLE_HOURS, now: datetime | None = None, dry_run: bool = False
) -> dict:
    sm, aas = client("sagemaker"), client("application-autoscaling")
    removed, errors = [], []
    for endpoint in idle_endpoints(client, idle_hours, now):
        if dry_run:
            removed.append({**endpoint, "removed": "dry run"})
            continue
        for variant in endpoint["variants"]:
            try:
                aas.deregister_scalable_target(
                    ServiceNamespace="sagemaker",
                    ResourceId=f"endpoint/{endpoint['endpoint']}/variant/{variant}",
                    ScalableDimension="sagemaker:variant:DesiredInstanceCount",
                )
            except aas.exceptions.ObjectNotFoundException:
                pass
        try:
            sm.delete_endpoint(EndpointName=endpoint["endpoint"])
            removed.append({**endpoint, "removed": "endpoint deleted"})
            log.info("reaper: endpoint %s had no invocations in %.1f h: deleted", endpoint["endpoint"], idle_hours)
        except sm.exceptions.ClientError as error:
            errors.append(f"endpoint {endpoint['endpoint']}: {error}")
    return {"endpoints": removed, "errors": errors}


def reap(
    client: Clients,
    default_ttl_hours: float = DEFAULT_TTL_HOURS,
    idle_hours: float = DEFAULT_IDLE_HOURS,
    now: datetime | None = None,
    dry_run: bool = False,
    timeout: float = 900,
    poll: float = 5,
) -> dict:
    """Expired stacks and idle endpoints removed; ``{"stacks": [...], "endpoints": [...], "errors": [...]}``."""
    stacks = reap_stacks(client, now, default_ttl_hours, dry_run, timeout, poll)
    endpoints = reap_endpoints(client, idle_hours, now, dry_run)
    return {
        "stacks": stacks["stacks"],
        "endpoints": endpoints["endpoints"],
        "errors": stacks["errors"] + endpoints["errors"],
    }
