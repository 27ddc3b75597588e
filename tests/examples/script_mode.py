"""Runs an experiment's script-mode code as SageMaker's framework containers run it, without one.

``train`` lays out a temporary /opt/ml (the source copied into ``code/`` as ``sourcedir.tar.gz``
unpacks there, channels in ``input/data/<name>``, ``input/config/*.json``), sets the environment
the sagemaker-training toolkit sets (only that: no variable of ours) and runs
``python <entry_point> --name value ...`` in ``code/`` as a subprocess, with the arguments
the toolkit's ``to_cmd_args`` makes (sorted, ``str`` of each JSON-decoded value).
``serve`` calls inference.py's four functions as the inference toolkit does.
"""
from __future__ import annotations

import importlib.util
import json
import re
import os
import shutil
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
EXPERIMENTS = REPO_ROOT / "experiments"


def experiment(name: str) -> dict:
    return yaml.safe_load((EXPERIMENTS / name / "experiment.yaml").read_text())


def load_module(path: Path):
    """A module of an experiment's source by its file, under a name of its own (two experiments
    may both have a checks.py)."""
    spec = importlib.util.spec_from_file_location(f"example_{path.stem}_{uuid.uuid4().hex[:8]}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def cmd_args(hyperparameters: dict) -> list:
    """sagemaker-training's mapping.to_cmd_args: ``--name value`` in sorted order."""
    args = []
    for name in sorted(hyperparameters):
        args += [f"--{name}" if len(name) > 1 else f"-{name}", str(hyperparameters[name])]
    return args


@dataclass
class Job:
    opt_ml: Path
    result: subprocess.CompletedProcess

    @property
    def model_dir(self) -> Path:
        return self.opt_ml / "model"

    @property
    def failure(self) -> str | None:
        path = self.opt_ml / "output" / "failure"
        return path.read_text() if path.exists() else None


def opt_ml(tmp: Path, name: str | Path, channels: dict) -> Path:
    """A fresh /opt/ml under ``tmp``: the experiment's source (``experiments/<name>``, or a folder)
    in code/, ``channels`` ({name: folder}) copied into input/data/."""
    root = tmp / "opt_ml"
    source = name if isinstance(name, Path) else EXPERIMENTS / name
    shutil.copytree(source, root / "code", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for channel, folder in channels.items():
        shutil.copytree(folder, root / "input" / "data" / channel)
    for folder in ("model", "output/data", "input/config"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    return root


def train(root: Path, entry_point: str, hyperparameters: dict, *, timeout: float = 300) -> Job:
    channels = sorted(p.name for p in (root / "input" / "data").iterdir())
    hosts = ["algo-1"]
    # What SageMaker writes (strings, the SDK's JSON encoding, plus its own keys) and what the toolkit
    # makes of it: the user's hyperparameters JSON-decoded.
    (root / "input" / "config" / "hyperparameters.json").write_text(json.dumps(
        {**{key: json.dumps(value) for key, value in hyperparameters.items()},
         "sagemaker_program": json.dumps(entry_point), "sagemaker_container_log_level": "20"}))
    (root / "input" / "config" / "resourceconfig.json").write_text(json.dumps(
        {"current_host": hosts[0], "hosts": hosts, "network_interface_name": "eth0"}))
    (root / "input" / "config" / "inputdataconfig.json").write_text(json.dumps(
        {channel: {"TrainingInputMode": "File", "S3DistributionType": "FullyReplicated"} for channel in channels}))
    args = cmd_args(hyperparameters)
    env = {
        "PATH": os.environ["PATH"],
        "HOME": os.environ.get("HOME", "/root"),
        "PYTHONUNBUFFERED": "1",
        "SM_HPS": json.dumps(hyperparameters),
        "SM_USER_ARGS": json.dumps(args),
        "SM_USER_ENTRY_POINT": entry_point,
        "SM_MODULE_NAME": Path(entry_point).stem,
        "SM_MODULE_DIR": "s3://bucket/experiment/source/0123456789ab/sourcedir.tar.gz",
        "SM_CHANNELS": json.dumps(channels),
        **{f"SM_CHANNEL_{channel.upper()}": str(root / "input" / "data" / channel) for channel in channels},
        "SM_INPUT_DIR": str(root / "input"),
        "SM_INPUT_CONFIG_DIR": str(root / "input" / "config"),
        "SM_INPUT_DATA_CONFIG": (root / "input" / "config" / "inputdataconfig.json").read_text(),
        "SM_MODEL_DIR": str(root / "model"),
        "SM_OUTPUT_DIR": str(root / "output"),
        "SM_OUTPUT_DATA_DIR": str(root / "output" / "data"),
        "SM_HOSTS": json.dumps(hosts),
        "SM_CURRENT_HOST": hosts[0],
        "SM_NUM_GPUS": "0",
        "SM_NUM_CPUS": str(os.cpu_count() or 1),
        "SM_LOG_LEVEL": "20",
    }
    result = subprocess.run([sys.executable, entry_point, *args], cwd=root / "code", env=env,
                            capture_output=True, text=True, timeout=timeout)
    return Job(root, result)


def serve(code_dir: Path, model_dir: Path, body: bytes, content_type: str, accept: str):
    """inference.py's model_fn, input_fn, predict_fn and output_fn, as the inference toolkit chains
    them for one request; returns what output_fn returned."""
    inference = load_module(code_dir / "inference.py")
    model = inference.model_fn(str(model_dir))
    return inference.output_fn(inference.predict_fn(inference.input_fn(body, content_type), model), accept)


def metric_values(definitions: list, log: str) -> dict:
    """What SageMaker's MetricDefinitions make of a log: {Name: last value matched}."""
    values = {}
    for definition in definitions:
        found = re.findall(definition["Regex"], log)
        if found:
            values[definition["Name"]] = float(found[-1])
    return values
