"""The SageMaker container contract, in one place.

A training container sees this layout under ``/opt/ml``; a processing container sees
``/opt/ml/config`` (its job's ``processingjobconfig.json`` and ``resourceconfig.json``),
its inputs and outputs where the job's ``LocalPath`` says, under ``/opt/ml/processing/``,
and may leave its exit message in ``/opt/ml/output/message``. The docker runner
mounts a job's host directory there, the process runner gives the process the
same tree under a per-host directory and says where through ``SM_*`` variables
and ``SAGEMAKER_BASE_DIR``, the root the sagemaker-training toolkit itself reads
(its ``environment.py``: ``os.environ.get("SAGEMAKER_BASE_DIR", "/opt/ml")``),
for paths that have no variable of their own, such as checkpoints.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from localaws.sagemaker import confined

OPT_ML = "/opt/ml"
#: Set only by the process runner: where its ``/opt/ml`` tree really is (the toolkit's name for it).
OPT_ML_ENV = "SAGEMAKER_BASE_DIR"
CHECKPOINT_LOCAL_PATH = "/opt/ml/checkpoints"
SERVING_PORT = 8080
#: Where a processing job's inputs and outputs must lie (each ``LocalPath`` under it).
PROCESSING_ROOT = "/opt/ml/processing"


def resource_config(current_host: str, hosts: list[str], instance_type: str, network_interface: str = "eth0") -> dict:
    """``resourceconfig.json`` as SageMaker writes it for a host of a training or processing job."""
    return {
        "current_host": current_host,
        "current_instance_type": instance_type,
        "current_group_name": "homogeneousCluster",
        "hosts": hosts,
        "instance_groups": [
            {"instance_group_name": "homogeneousCluster", "instance_type": instance_type, "hosts": hosts}
        ],
        "network_interface_name": network_interface,
    }


def processing_local_path(path) -> str | None:
    """``path`` normalised when it is a folder under /opt/ml/processing/ (as a processing job's
    ``LocalPath`` must be), else None: relative, ``..`` out of it, or /opt/ml/processing itself."""
    if not isinstance(path, str) or not path.startswith(PROCESSING_ROOT + "/") or "\x00" in path:
        return None
    normal = os.path.normpath(path)
    if not normal.startswith(PROCESSING_ROOT + "/"):
        return None
    return normal


@dataclass(frozen=True)
class Layout:
    """The ``/opt/ml`` tree rooted at ``root`` (``/opt/ml`` itself in a container)."""

    root: Path

    @property
    def input(self) -> Path:
        return self.root / "input"

    @property
    def input_config(self) -> Path:
        return self.root / "input" / "config"

    @property
    def input_data(self) -> Path:
        return self.root / "input" / "data"

    def channel(self, name: str) -> Path:
        """The channel's folder, never outside input/data (``confined.OutsideFolder``)."""
        return confined.join_inside(self.input_data, name)

    @property
    def model(self) -> Path:
        return self.root / "model"

    @property
    def output(self) -> Path:
        return self.root / "output"

    @property
    def output_data(self) -> Path:
        return self.root / "output" / "data"

    @property
    def failure(self) -> Path:
        return self.root / "output" / "failure"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def code(self) -> Path:
        return self.root / "code"

    # A processing container's.

    @property
    def config(self) -> Path:
        return self.root / "config"

    @property
    def message(self) -> Path:
        """What a processing container says as it exits: its job's ExitMessage."""
        return self.root / "output" / "message"

    def processing_path(self, local_path: str) -> Path:
        """Where a processing input's or output's ``LocalPath`` lies in this layout; ``ValueError``
        unless it is under /opt/ml/processing/ (``processing_local_path``)."""
        normal = processing_local_path(local_path)
        if normal is None:
            raise ValueError(f"{local_path} is not under {PROCESSING_ROOT}/")
        return confined.join_inside(self.root / "processing", os.path.relpath(normal, PROCESSING_ROOT))

    def write_processing_config(self, job_config: dict, resources: dict) -> None:
        """/opt/ml/config/processingjobconfig.json (the job as created) and resourceconfig.json."""
        self.config.mkdir(parents=True, exist_ok=True)
        (self.config / "processingjobconfig.json").write_text(json.dumps(job_config, indent=2))
        (self.config / "resourceconfig.json").write_text(json.dumps(resources, indent=2))

    def local_path(self, container_path: str) -> Path:
        """Where a container path under /opt/ml lies in this layout."""
        relative = os.path.relpath(container_path, OPT_ML)
        if relative.startswith(".."):
            raise ValueError(f"{container_path} is not under {OPT_ML}")
        return self.root / relative

    def create(self, channels: list[str]) -> None:
        for path in (self.input_config, self.model, self.output_data, self.checkpoints, self.code):
            path.mkdir(parents=True, exist_ok=True)
        for name in channels:
            self.channel(name).mkdir(parents=True, exist_ok=True)


@dataclass
class HostConfig:
    """What one training host (``algo-<n>``) is told about itself and its job."""

    job_name: str
    job_arn: str
    current_host: str
    hosts: list[str]
    hyperparameters: dict[str, str]
    channels: dict[str, dict]  # channel name -> inputdataconfig.json entry
    instance_type: str
    num_cpus: int
    num_gpus: int = 0
    network_interface: str = "eth0"
    extra_env: dict[str, str] = field(default_factory=dict)

    def resource_config(self) -> dict:
        return resource_config(self.current_host, self.hosts, self.instance_type, self.network_interface)

    def write_config_files(self, layout: Layout) -> None:
        layout.input_config.mkdir(parents=True, exist_ok=True)
        files = {
            "hyperparameters.json": self.hyperparameters,
            "inputdataconfig.json": self.channels,
            "resourceconfig.json": self.resource_config(),
        }
        for name, content in files.items():
            (layout.input_config / name).write_text(json.dumps(content, indent=2))

    def environment(self, layout: Layout) -> dict[str, str]:
        """The environment SageMaker and the sagemaker-training toolkit give ``train``.

        ``layout`` is the tree as the process sees it: ``/opt/ml`` in a
        container, a host directory under the process runner.
        """
        env = {
            "TRAINING_JOB_NAME": self.job_name,
            "TRAINING_JOB_ARN": self.job_arn,
            "SM_CURRENT_HOST": self.current_host,
            "SM_HOSTS": json.dumps(self.hosts),
            "SM_NUM_CPUS": str(self.num_cpus),
            "SM_NUM_GPUS": str(self.num_gpus),
            "SM_CURRENT_INSTANCE_TYPE": self.instance_type,
            "SM_NETWORK_INTERFACE_NAME": self.network_interface,
            "SM_MODEL_DIR": str(layout.model),
            "SM_INPUT_DIR": str(layout.input),
            "SM_INPUT_CONFIG_DIR": str(layout.input_config),
            "SM_OUTPUT_DIR": str(layout.output),
            "SM_OUTPUT_DATA_DIR": str(layout.output_data),
            "SM_OUTPUT_INTERMEDIATE_DIR": str(layout.output / "intermediate"),
            "SM_CHANNELS": json.dumps(sorted(self.channels)),
            "SM_HPS": json.dumps(self.hyperparameters),
            "SM_INPUT_DATA_CONFIG": json.dumps(self.channels),
            "SM_RESOURCE_CONFIG": json.dumps(self.resource_config()),
            "SM_USER_ARGS": json.dumps(
                [arg for key, value in self.hyperparameters.items() for arg in (f"--{key}", str(value))]
            ),
            "SM_LOG_LEVEL": "20",
            "PYTHONUNBUFFERED": "1",
        }
        for name in self.channels:
            env[f"SM_CHANNEL_{name.upper()}"] = str(layout.channel(name))
        for key, value in self.hyperparameters.items():
            env[f"SM_HP_{key.upper()}"] = str(value)
        env["SM_TRAINING_ENV"] = json.dumps(
            {
                "job_name": self.job_name,
                "current_host": self.current_host,
                "hosts": self.hosts,
                "hyperparameters": self.hyperparameters,
                "input_data_config": self.channels,
                "channel_input_dirs": {name: str(layout.channel(name)) for name in self.channels},
                "model_dir": str(layout.model),
                "output_data_dir": str(layout.output_data),
                "num_cpus": self.num_cpus,
                "num_gpus": self.num_gpus,
                "resource_config": self.resource_config(),
            }
        )
        env.update(self.extra_env)
        return env
