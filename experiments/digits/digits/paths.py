"""Where things are: the SageMaker training contract resolved from the environment.

Every location comes from its ``SM_*`` variable when set (as SageMaker and the
sagemaker-training toolkit set them) and otherwise from the ``/opt/ml`` tree.
The root of that tree is ``/opt/ml`` in a container; a process that runs the build
context directly is given its tree as the sagemaker-training toolkit takes one,
``$SAGEMAKER_BASE_DIR``.

    <root>/input/config/hyperparameters.json   SM_HPS wins when set
    <root>/input/config/resourceconfig.json    SM_HOSTS / SM_CURRENT_HOST win when set
    <root>/input/config/inputdataconfig.json   SM_INPUT_DATA_CONFIG wins when set
    <root>/input/data/<channel>/               SM_CHANNEL_<CHANNEL>
    <root>/model/                              SM_MODEL_DIR
    <root>/output/failure                      SM_OUTPUT_DIR/failure
    <root>/output/data/                        SM_OUTPUT_DATA_DIR
    <root>/checkpoints/                        the ``checkpoint_dir`` hyperparameter wins
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

DEFAULT_ROOT = "/opt/ml"
ROOT_ENV = "SAGEMAKER_BASE_DIR"
DEFAULT_MASTER_PORT = 7777


def _read_json(path: Path, default):
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return default


@dataclass(frozen=True)
class Paths:
    root: Path
    input_config_dir: Path
    model_dir: Path
    output_dir: Path
    output_data_dir: Path
    hosts: list
    current_host: str
    raw_hyperparameters: dict
    input_data_config: dict
    env: Mapping[str, str] = field(repr=False, default_factory=dict)

    @property
    def failure_file(self) -> Path:
        return self.output_dir / "failure"

    @property
    def default_checkpoint_dir(self) -> Path:
        return self.root / "checkpoints"

    def channel_dir(self, name: str) -> Path:
        value = self.env.get(f"SM_CHANNEL_{name.upper()}")
        return Path(value) if value else self.root / "input" / "data" / name

    def distribution(self, channel: str) -> str | None:
        """The channel's S3DataDistributionType (FullyReplicated, ShardedByS3Key) if known."""
        entry = self.input_data_config.get(channel) or {}
        return entry.get("S3DistributionType") or entry.get("S3DataDistributionType")

    @property
    def rank(self) -> int:
        return self.hosts.index(self.current_host)

    @property
    def world_size(self) -> int:
        return len(self.hosts)

    @property
    def master_addr(self) -> str:
        return self.env.get("SM_MASTER_ADDR") or self.hosts[0]

    @property
    def master_port(self) -> int:
        return int(self.env.get("SM_MASTER_PORT") or DEFAULT_MASTER_PORT)


def resolve(env: Mapping[str, str] | None = None) -> Paths:
    env = dict(os.environ if env is None else env)
    root = Path(env.get(ROOT_ENV) or DEFAULT_ROOT)
    input_config_dir = Path(env.get("SM_INPUT_CONFIG_DIR") or root / "input" / "config")
    output_dir = Path(env.get("SM_OUTPUT_DIR") or root / "output")

    if env.get("SM_HPS"):
        hyperparameters = json.loads(env["SM_HPS"])
    else:
        hyperparameters = _read_json(input_config_dir / "hyperparameters.json", {})

    resource_config = _read_json(input_config_dir / "resourceconfig.json", {})
    hosts = json.loads(env["SM_HOSTS"]) if env.get("SM_HOSTS") else resource_config.get("hosts")
    hosts = list(hosts or ["algo-1"])
    current_host = env.get("SM_CURRENT_HOST") or resource_config.get("current_host") or hosts[0]
    if current_host not in hosts:
        raise ValueError(f"current host {current_host!r} is not among the hosts {hosts}")

    if env.get("SM_INPUT_DATA_CONFIG"):
        input_data_config = json.loads(env["SM_INPUT_DATA_CONFIG"])
    else:
        input_data_config = _read_json(input_config_dir / "inputdataconfig.json", {})

    return Paths(
        root=root,
        input_config_dir=input_config_dir,
        model_dir=Path(env.get("SM_MODEL_DIR") or root / "model"),
        output_dir=output_dir,
        output_data_dir=Path(env.get("SM_OUTPUT_DATA_DIR") or output_dir / "data"),
        hosts=hosts,
        current_host=current_host,
        raw_hyperparameters=dict(hyperparameters or {}),
        input_data_config=dict(input_data_config or {}),
        env=env,
    )
