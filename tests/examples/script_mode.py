"""Runs an experiment's script-mode code as SageMaker's framework containers run it, without one.

``train`` lays out a temporary /opt/ml (the source copied into ``code/`` as ``sourcedir.tar.gz``
unpacks there, channels in ``input/data/<name>``, ``input/config/*.json``), sets the environment
the sagemaker-training toolkit sets, as localaws's framework toolkit computes it inside the framework
containers (``framework_toolkit/environment.py``: one builder of it, only that, no variable of ours), and
runs ``python <entry_point> --name value ...`` in ``code/`` as a subprocess, with the toolkit's arguments.
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
TOOLKIT = REPO_ROOT / "localaws" / "sagemaker" / "frameworks" / "container"


def experiment(name: str) -> dict:
    return yaml.safe_load((EXPERIMENTS / name / "experiment.yaml").read_text())


def load_module(path: Path):
    """A module of an experiment's source by its file, under a name of its own (two experiments
    may both have a checks.py)."""
    spec = importlib.util.spec_from_file_location(f"example_{path.stem}_{uuid.uuid4().hex[:8]}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def toolkit_environment(root: Path) -> dict[str, str]:
    """The SM_* variables the toolkit sets for the /opt/ml tree at ``root``: the framework containers' own
    module (it runs inside a container, where localaws cannot be imported, so it is loaded by its path)."""
    if str(TOOLKIT) not in sys.path:
        sys.path.insert(0, str(TOOLKIT))
    from framework_toolkit import environment  # noqa: PLC0415

    before = os.environ.get("SAGEMAKER_BASE_DIR")
    os.environ["SAGEMAKER_BASE_DIR"] = str(root)  # the toolkit's own way of naming the tree elsewhere
    try:
        return environment.TrainingEnv().to_env_vars()
    finally:
        if before is None:
            del os.environ["SAGEMAKER_BASE_DIR"]
        else:
            os.environ["SAGEMAKER_BASE_DIR"] = before


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
    (root / "input" / "config" / "hyperparameters.json").write_text(
        json.dumps(
            {
                **{key: json.dumps(value) for key, value in hyperparameters.items()},
                "sagemaker_program": json.dumps(entry_point),
                "sagemaker_container_log_level": "20",
            }
        )
    )
    (root / "input" / "config" / "resourceconfig.json").write_text(
        json.dumps({"current_host": hosts[0], "hosts": hosts, "network_interface_name": "eth0"})
    )
    (root / "input" / "config" / "inputdataconfig.json").write_text(
        json.dumps(
            {channel: {"TrainingInputMode": "File", "S3DistributionType": "FullyReplicated"} for channel in channels}
        )
    )
    env = toolkit_environment(root)
    args = json.loads(env["SM_USER_ARGS"])
    env.update({"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/root"), "PYTHONUNBUFFERED": "1"})
    result = subprocess.run(
        [sys.executable, entry_point, *args],
        cwd=root / "code",
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
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
