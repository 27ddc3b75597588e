"""The training environment as sagemaker-training-toolkit computes it from /opt/ml/input/config.

Hyperparameters are JSON-decoded (the SDK encodes each value; one that is not JSON stays as it
is); ``sagemaker_*`` ones (and ``_tuning_objective_metric``) are the framework's, the rest the
user's, passed as ``--name value`` sorted by name (``-x`` for a one-letter name) and as ``SM_HPS``.
Every ``SM_*`` variable is the toolkit's: ``SM_<KEY>`` for each key of its ``to_env_vars``, strings
as they are and anything else as compact JSON with sorted keys.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

from framework_toolkit import paths

SAGEMAKER_PREFIX = "sagemaker_"
SAGEMAKER_HYPERPARAMETERS = (
    "sagemaker_program",
    "sagemaker_submit_directory",
    "sagemaker_enable_cloudwatch_metrics",
    "sagemaker_region",
    "sagemaker_container_log_level",
    "sagemaker_job_name",
    "default_user_module_name",
    "_tuning_objective_metric",
    "sagemaker_s3_output",
)
#: The distribution switches that put the current instance group in distribution_instance_groups.
_DISTRIBUTION_SWITCHES = (
    "sagemaker_mpi_enabled",
    "sagemaker_parameter_server_enabled",
    "sagemaker_distributed_dataparallel_enabled",
    "sagemaker_pytorch_ddp_enabled",
    "sagemaker_pytorch_xla_multi_worker_enabled",
    "sagemaker_multi_worker_mirrored_strategy_enabled",
    "sagemaker_torch_distributed_enabled",
)


def _read(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def decode_hyperparameters(raw: dict) -> dict:
    decoded = {}
    for key, value in raw.items():
        try:
            decoded[key] = json.loads(value)
        except (ValueError, TypeError):
            decoded[key] = value
    return decoded


def num_gpus() -> int:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:  # a process given some of the machine's GPUs (nvidia-smi lists them all)
        return len([index for index in visible.split(",") if index.strip()])
    if not shutil.which("nvidia-smi"):
        return 0
    try:
        output = subprocess.check_output(["nvidia-smi", "--list-gpus"], text=True, stderr=subprocess.DEVNULL)
    except (OSError, subprocess.CalledProcessError):
        return 0
    return sum(1 for line in output.splitlines() if line.startswith("GPU "))


def _format_value(value) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def _arg_value(value) -> str:
    if isinstance(value, dict):
        return ",".join(f"{k}={v}" for k, v in sorted(value.items()))
    return "" if value is None else str(value)


def cmd_args(hyperparameters: dict) -> list[str]:
    args = []
    for key in sorted(hyperparameters):
        args += [f"--{key}" if len(key) > 1 else f"-{key}", _arg_value(hyperparameters[key])]
    return args


class TrainingEnv:
    def __init__(self):
        root = paths.base()
        self.base = root
        self.code_dir = root / "code"
        self.model_dir = root / "model"
        self.input_dir = root / "input"
        self.input_config_dir = root / "input" / "config"
        self.output_dir = root / "output"
        self.output_data_dir = root / "output" / "data"
        self.output_intermediate_dir = root / "output" / "intermediate"
        self.failure_file = root / "output" / "failure"

        config = self.input_config_dir
        self.resource_config = _read(config / "resourceconfig.json")
        self.input_data_config = _read(config / "inputdataconfig.json")
        everything = decode_hyperparameters(_read(config / "hyperparameters.json"))
        self.framework_hyperparameters = {
            k: v for k, v in everything.items() if k in SAGEMAKER_HYPERPARAMETERS or k.startswith(SAGEMAKER_PREFIX)
        }
        self.hyperparameters = {k: v for k, v in everything.items() if k not in self.framework_hyperparameters}
        self.additional_framework_parameters = {
            k: v for k, v in self.framework_hyperparameters.items() if k not in SAGEMAKER_HYPERPARAMETERS
        }

        self.hosts = self.resource_config.get("hosts", ["algo-1"])
        self.current_host = self.resource_config.get("current_host", "algo-1")
        self.current_instance_type = self.resource_config.get("current_instance_type", "local")
        self.current_instance_group = self.resource_config.get("current_group_name", "homogeneousCluster")
        self.network_interface_name = self.resource_config.get("network_interface_name", "eth0")
        groups = self.resource_config.get("instance_groups", [])
        self.instance_groups = [group["instance_group_name"] for group in groups]
        self.instance_groups_dict = {group["instance_group_name"]: group for group in groups}
        self.current_instance_group_hosts = next(
            (group["hosts"] for group in groups if group["instance_group_name"] == self.current_instance_group), []
        )
        distributed = any(self.additional_framework_parameters.get(switch) for switch in _DISTRIBUTION_SWITCHES)
        self.distribution_instance_groups = self.additional_framework_parameters.get(
            "sagemaker_distribution_instance_groups", [self.current_instance_group] if distributed else []
        )
        self.distribution_hosts = [
            host
            for group in groups
            if group["instance_group_name"] in self.distribution_instance_groups
            for host in group["hosts"]
        ]
        self.master_hostname = (self.distribution_hosts or self.hosts)[0]

        program = os.environ.get("SAGEMAKER_PROGRAM") or self.framework_hyperparameters.get("sagemaker_program")
        self.user_entry_point = str(program) if program else None
        entry = self.user_entry_point
        self.module_name = entry[:-3] if entry and entry.endswith(".py") else entry
        self.module_dir = str(self.framework_hyperparameters.get("sagemaker_submit_directory", str(self.code_dir)))
        self.log_level = self.framework_hyperparameters.get("sagemaker_container_log_level", 20)
        self.job_name = os.environ.get("TRAINING_JOB_NAME")
        self.framework_module = os.environ.get("SAGEMAKER_TRAINING_MODULE")
        self.num_cpus = os.cpu_count() or 1
        self.num_gpus = num_gpus()
        self.channel_input_dirs = {name: str(self.input_dir / "data" / name) for name in self.input_data_config}

    def training_env(self) -> dict:
        """``SM_TRAINING_ENV``: the toolkit's Environment as a dict (its public properties)."""
        return {
            "additional_framework_parameters": self.additional_framework_parameters,
            "channel_input_dirs": self.channel_input_dirs,
            "current_host": self.current_host,
            "current_instance_group": self.current_instance_group,
            "current_instance_group_hosts": self.current_instance_group_hosts,
            "current_instance_type": self.current_instance_type,
            "distribution_hosts": self.distribution_hosts,
            "distribution_instance_groups": self.distribution_instance_groups,
            "framework_module": self.framework_module,
            "hosts": self.hosts,
            "hyperparameters": self.hyperparameters,
            "input_config_dir": str(self.input_config_dir),
            "input_data_config": self.input_data_config,
            "input_dir": str(self.input_dir),
            "instance_groups": self.instance_groups,
            "instance_groups_dict": self.instance_groups_dict,
            "is_hetero": len(self.instance_groups) > 1,
            "is_master": self.current_host == self.master_hostname,
            "is_modelparallel_enabled": False,
            "job_name": self.job_name,
            "log_level": self.log_level,
            "master_hostname": self.master_hostname,
            "model_dir": str(self.model_dir),
            "module_dir": self.module_dir,
            "module_name": self.module_name,
            "network_interface_name": self.network_interface_name,
            "num_cpus": self.num_cpus,
            "num_gpus": self.num_gpus,
            "output_data_dir": str(self.output_data_dir),
            "output_dir": str(self.output_dir),
            "output_intermediate_dir": str(self.output_intermediate_dir),
            "resource_config": self.resource_config,
            "user_entry_point": self.user_entry_point,
        }

    def to_env_vars(self) -> dict[str, str]:
        env = {
            "hosts": self.hosts,
            "network_interface_name": self.network_interface_name,
            "hps": self.hyperparameters,
            "user_entry_point": self.user_entry_point,
            "framework_params": self.additional_framework_parameters,
            "resource_config": self.resource_config,
            "input_data_config": self.input_data_config,
            "output_data_dir": str(self.output_data_dir),
            "channels": sorted(self.channel_input_dirs),
            "current_host": self.current_host,
            "current_instance_type": self.current_instance_type,
            "current_instance_group": self.current_instance_group,
            "current_instance_group_hosts": self.current_instance_group_hosts,
            "instance_groups": self.instance_groups,
            "instance_groups_dict": self.instance_groups_dict,
            "distribution_instance_groups": self.distribution_instance_groups,
            "is_hetero": len(self.instance_groups) > 1,
            "module_name": self.module_name,
            "log_level": self.log_level,
            "framework_module": self.framework_module,
            "input_dir": str(self.input_dir),
            "input_config_dir": str(self.input_config_dir),
            "output_dir": str(self.output_dir),
            "num_cpus": self.num_cpus,
            "num_gpus": self.num_gpus,
            "model_dir": str(self.model_dir),
            "module_dir": self.module_dir,
            "training_env": self.training_env(),
            "user_args": cmd_args(self.hyperparameters),
            "output_intermediate_dir": str(self.output_intermediate_dir),
        }
        for name, path in self.channel_input_dirs.items():
            env[f"channel_{name}"] = path
        for key, value in self.hyperparameters.items():
            env[f"hp_{key}"] = value
        return {f"SM_{key.upper()}": _format_value(value) for key, value in env.items()}
