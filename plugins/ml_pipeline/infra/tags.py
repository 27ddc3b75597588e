"""What every resource of a run carries, so a partly created stack can always be found and removed.

    project=ml-pipeline    this project made it, for any experiment
    experiment=<name>      which experiment's run (reports say it; nothing is found by it)
    run=<plan key>         which run made it (teardown and the reaper find resources by it)
    created-at=<ISO 8601>  when (the reaper's clock; AWS gives no creation time for most of these)
    ttl-hours=<n>          how long the run's stack may live before the reaper removes it
    Name=ml-pipeline-<run>-<part>

Resources are always found by these tags, never by names alone.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ml_pipeline.plan import Plan

PROJECT = "ml-pipeline"
PROJECT_KEY = "project"
RUN_KEY = "run"
EXPERIMENT_KEY = "experiment"
CREATED_AT = "created-at"
TTL_HOURS = "ttl-hours"
#: IAM roles and instance profiles of this project live under this path.
IAM_PATH = f"/{PROJECT}/"


def now_iso() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso(value: str) -> datetime:
    return datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)


def project_tag() -> dict[str, str]:
    """The tag on everything this project makes (S3, EC2, IAM, SSM, ECR and SageMaker take this shape)."""
    return {"Key": PROJECT_KEY, "Value": PROJECT}


def run_tags(
    run_key: str,
    part: str | None = None,
    ttl_hours: float | None = None,
    created_at: str | None = None,
    experiment: str | None = None,
) -> list[dict]:
    tags = [
        project_tag(),
        {"Key": RUN_KEY, "Value": run_key},
        {"Key": CREATED_AT, "Value": created_at or now_iso()},
    ]
    if experiment:
        tags.append({"Key": EXPERIMENT_KEY, "Value": experiment})
    if ttl_hours is not None:
        tags.append({"Key": TTL_HOURS, "Value": f"{float(ttl_hours):g}"})
    if part:
        tags.append({"Key": "Name", "Value": f"{PROJECT}-{run_key}-{part}"})
    return tags


def plan_tags(plan: Plan, part: str | None = None) -> list[dict]:
    return run_tags(
        plan["key"], part, plan["params"].get("stack_ttl_hours"), experiment=(plan.get("experiment") or {}).get("name")
    )


def tag_spec(resource_type: str, tags: list[dict]) -> list[dict]:
    return [{"ResourceType": resource_type, "Tags": tags}]


def run_filter(run_key: str) -> list[dict]:
    """EC2 filters selecting the run's resources."""
    return [{"Name": f"tag:{PROJECT_KEY}", "Values": [PROJECT]}, {"Name": f"tag:{RUN_KEY}", "Values": [run_key]}]


def project_filter() -> list[dict]:
    return [{"Name": f"tag:{PROJECT_KEY}", "Values": [PROJECT]}]


def as_dict(tags: list[dict] | None) -> dict[str, str]:
    return {tag["Key"]: tag["Value"] for tag in tags or []}


def is_run(tags: list[dict] | None, run_key: str) -> bool:
    found = as_dict(tags)
    return found.get(PROJECT_KEY) == PROJECT and found.get(RUN_KEY) == run_key
