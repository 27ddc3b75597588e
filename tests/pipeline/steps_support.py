"""Experiments and plans for the step tests, shaped as the contract says ``experiments.load`` and
``make_plan`` give them (``plan["experiment"]``, typed hyperparameters), built here so that these tests
exercise the steps alone."""

from __future__ import annotations

import uuid
from pathlib import Path

from tests.support import ROLE_ARN


def experiment(folder: Path, **keys) -> dict:
    """A resolved experiment for ``folder`` (its name is the folder's), script mode unless told."""
    from ml_pipeline.images import context_hash

    resolved = {
        "name": folder.name,
        "folder": str(folder.resolve()),
        "description": f"the {folder.name} test experiment",
        "channels": {},
        "hyperparameters": {},
        "metric_definitions": [{"Name": "validation:rmse", "Regex": "validation rmse=([0-9.eE+-]+)"}],
        "objective": {"metric": "validation:rmse", "type": "Minimize"},
        "deploy": {
            "instance_type": "ml.m5.large",
            "smoke": {"content_type": "text/csv", "accept": "text/csv", "samples": "smoke/samples.csv"},
        },
        **keys,
    }
    if "image" in keys:
        resolved["code_kind"] = "image"
    elif "dockerfile" in keys:
        resolved["code_kind"] = "dockerfile"
    else:
        resolved.setdefault("framework", "sklearn")
        resolved.setdefault("entry_point", "train.py")
        resolved["code_kind"] = "script"
    resolved["source_dir"] = str((folder / resolved.pop("source_dir_relative", ".")).resolve())
    resolved["file_hash"] = "0123456789ab"
    resolved["source_hash"] = context_hash(resolved["source_dir"]) if resolved["code_kind"] == "script" else None
    return resolved


def plan(resolved: dict, bucket: str, **params) -> dict:
    """A run's plan for ``resolved``: the form's knobs at their usual values, names prefixed by the
    experiment, a data interval of one week."""
    name, key = resolved["name"], f"20260105-{uuid.uuid4().hex[:6]}"
    return {
        "experiment": resolved,
        "key": key,
        "params": {
            "bucket": bucket,
            "role_arn": ROLE_ARN,
            "instance_type": "ml.m5.large",
            "instance_count": 1,
            "max_runtime_seconds": 600,
            "use_spot": False,
            "max_wait_seconds": 1200,
            "volume_size_gb": 30,
            "endpoint_instance_type": "ml.m5.large",
            "min_capacity": 1,
            "max_capacity": 2,
            "ecr_repository": f"{name}-training",
            "model_package_group": f"{name}-models",
            "endpoint_name": f"{name}-endpoint",
            "keep_endpoint": False,
            **params,
        },
        "names": {
            "training_job": f"{name}-train-{key}",
            "tuning_job": f"{name}-tune-{key}"[:32],
            "model": f"{name}-model-{key}",
            "endpoint_config": f"{name}-config-{key}",
            "endpoint": f"{name}-endpoint-{key}",
            "data_prefix": f"{name}/datasets/20260105",
            "model_prefix": f"{name}/models/{key}",
            "output_prefix": f"{name}/training-jobs/{key}",
            "checkpoint_prefix": f"{name}/checkpoints/{key}",
        },
        "hyperparameters": dict(resolved.get("hyperparameters") or {}),
        "static_hyperparameters": {},
        "metric_definitions": resolved["metric_definitions"],
        "objective": resolved["objective"],
        "data_seed": 20260105,
        "data_interval": {"start": "2026-01-05T00:00:00+00:00", "end": "2026-01-12T00:00:00+00:00"},
        "revision": {"file_hash": resolved["file_hash"], "source_hash": resolved["source_hash"], "commit": None},
    }


def write(folder: Path, files: dict[str, str | bytes]) -> Path:
    for relative, content in files.items():
        path = folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return folder
