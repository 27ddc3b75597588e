"""Deterministic, run-keyed names within AWS's limits, prefixed by the experiment.

Every name a run gives AWS is derived from its experiment, its logical date and a short hash of the
experiment and the run id: the same run and task always ask for the same name (so a retry finds its own
job), and two runs never collide, not even two manual runs on one day or two experiments' scheduled runs
of the same date (whose run ids are the same).
"""

from __future__ import annotations

import hashlib
import re
from datetime import datetime

#: SageMaker's limits: 63 characters for most names, 32 for a tuning job.
MAX_NAME = 63
MAX_TUNING_NAME = 32
#: A tuning job's name leaves room for a retry's "-r<n>", up to -r20 (operators/sagemaker.py's attempt_name).
TUNING_RETRY_ROOM = 4
_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")


def run_key(run_id: str, logical_date: datetime | None, experiment: str) -> str:
    """``<yyyymmdd>-<6 hex of the experiment and run id>``: the part of every name that says which run made it."""
    digest = hashlib.sha256(f"{experiment}/{run_id}".encode()).hexdigest()[:6]
    day = logical_date.strftime("%Y%m%d") if logical_date else "manual"
    return f"{day}-{digest}"


def name(experiment: str, kind: str, key: str, limit: int = MAX_NAME) -> str:
    value = f"{experiment}-{kind}-{key}"
    if len(value) > limit or not _NAME.match(value):
        raise ValueError(f"{value!r} is not a valid SageMaker name within {limit} characters")
    return value


def tuning_job_name(experiment: str, key: str) -> str:
    """``<experiment>-<hash of the run key>``, as long as a 32-character tuning job name with room for a retry
    allows: unique per run, and recognisably the experiment's."""
    room = MAX_TUNING_NAME - TUNING_RETRY_ROOM - len(experiment) - 1
    return f"{experiment}-{hashlib.sha256(key.encode()).hexdigest()[:room]}"


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


def defaults(experiment: str) -> dict[str, str]:
    """What the trigger form proposes for the experiment's ECR repository, model package group and endpoint."""
    return {"ecr_repository": experiment, "model_package_group": experiment, "endpoint_name": experiment}


def run_names(experiment: str, key: str) -> dict[str, str]:
    """Every name a run uses, in one place: jobs (``prepare``'s processing job and the batch transform's too),
    model, endpoint config, S3 prefixes. The run's training
    output and checkpoints stay under ``training-jobs/<key>`` and ``checkpoints/<key>``, the prefixes the
    host's IAM policy grants per run (include/iam/host-instance-policy.json)."""
    return {
        "training_job": name(experiment, "train", key),
        "processing_job": name(experiment, "prepare", key),
        "transform_job": name(experiment, "score", key),
        "tuning_job": tuning_job_name(experiment, key),
        "model": name(experiment, "model", key),
        "endpoint_config": name(experiment, "config", key),
        "data_prefix": f"datasets/{experiment}/{key.split('-')[0]}",
        "model_prefix": f"models/{experiment}/{key}",
        "output_prefix": f"training-jobs/{key}",
        "checkpoint_prefix": f"checkpoints/{key}",
    }
