"""Deterministic, run-keyed names within AWS's limits.

Every name a run gives AWS is derived from its logical date and a short hash of
its run id: the same run and task always ask for the same name (so a retry finds
its own job), and two runs never collide, not even two manual runs on one day.
"""
from __future__ import annotations

import hashlib
import re
from datetime import datetime

PROJECT = "digits"
#: SageMaker's limits: 63 characters for most names, 32 for a tuning job.
MAX_NAME = 63
MAX_TUNING_NAME = 32
_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")


def run_key(run_id: str, logical_date: datetime | None) -> str:
    """``<yyyymmdd>-<6 hex of the run id>``: the part of every name that says which run made it."""
    digest = hashlib.sha256(run_id.encode()).hexdigest()[:6]
    day = logical_date.strftime("%Y%m%d") if logical_date else "manual"
    return f"{day}-{digest}"


def name(kind: str, key: str, limit: int = MAX_NAME) -> str:
    value = f"{PROJECT}-{kind}-{key}"
    if len(value) > limit or not _NAME.match(value):
        raise ValueError(f"{value!r} is not a valid SageMaker name within {limit} characters")
    return value


def endpoint_name(stable: str, key: str, keep: bool) -> str:
    """A kept endpoint is the stable one, updated blue/green run after run. One the run deletes at
    its end is the run's own, ``<stable>-<key>``, so concurrent runs (a backfill) never share it."""
    if keep:
        return stable
    return f"{stable[: MAX_NAME - len(key) - 1].rstrip('-')}-{key}"


def attempt_name(base: str, attempt: int, limit: int = MAX_NAME) -> str:
    """The name of the ``attempt``-th job for one task: ``base``, ``base-r2``, ``base-r3``, ..."""
    value = base if attempt <= 1 else f"{base}-r{attempt}"
    if len(value) > limit:
        raise ValueError(f"{value!r} exceeds {limit} characters")
    return value


def run_names(key: str) -> dict[str, str]:
    """Every name a run uses, in one place: jobs, model, endpoint config, S3 prefixes."""
    return {
        "training_job": name("train", key),
        "tuning_job": name("tune", key, MAX_TUNING_NAME),
        "model": name("model", key),
        "endpoint_config": name("config", key),
        "data_prefix": f"datasets/{PROJECT}/{key.split('-')[0]}",
        "model_prefix": f"models/{PROJECT}/{key}",
        "output_prefix": f"training-jobs/{key}",
        "checkpoint_prefix": f"checkpoints/{key}",
    }
