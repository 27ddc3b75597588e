"""localaws's settings, read once from the environment.

Every knob a test or a demo may turn is here, with the AWS behaviour it scales.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path


def _float(name: str, default: float) -> float:
    value = os.environ.get(name)
    return float(value) if value not in (None, "") else default


def _int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value not in (None, "") else default


@dataclass
class Settings:
    host: str = field(default_factory=lambda: os.environ.get("LOCALAWS_HOST", "127.0.0.1"))
    port: int = field(default_factory=lambda: _int("LOCALAWS_PORT", 4566))
    region: str = field(default_factory=lambda: os.environ.get("AWS_DEFAULT_REGION", "us-east-1"))
    account_id: str = field(default_factory=lambda: os.environ.get("MOTO_ACCOUNT_ID", "123456789012"))
    #: Where jobs' /opt/ml trees and model snapshots live while localaws runs.
    work_dir: Path = field(default_factory=lambda: Path(os.environ.get("LOCALAWS_WORK_DIR", "") or _default_work_dir()))
    #: Where localaws keeps its state across restarts (see localaws/state); None: in memory only.
    state_dir: Path | None = field(
        default_factory=lambda: Path(os.environ["LOCALAWS_STATE_DIR"]) if os.environ.get("LOCALAWS_STATE_DIR") else None
    )
    #: Cached virtual environments of build contexts, kept across runs.
    cache_dir: Path = field(
        default_factory=lambda: Path(os.environ.get("LOCALAWS_CACHE_DIR", "") or Path.home() / ".cache" / "localaws")
    )
    #: "auto" (docker when an engine answers, else process), "docker" or "process".
    runner: str = field(default_factory=lambda: os.environ.get("LOCALAWS_RUNNER", "auto"))
    docker_host: str | None = field(default_factory=lambda: os.environ.get("DOCKER_HOST") or None)
    #: The registry standing in for ECR: images are pulled from <registry>/<repo>:<tag>.
    registry: str = field(default_factory=lambda: os.environ.get("LOCALAWS_REGISTRY", "127.0.0.1:5000"))
    #: SIGTERM to SIGKILL on StopTrainingJob and MaxRuntimeInSeconds (AWS: 120 s).
    stop_grace_seconds: float = field(default_factory=lambda: _float("LOCALAWS_STOP_GRACE_SECONDS", 120.0))
    #: How often /opt/ml/checkpoints is synced to S3 while a job trains.
    checkpoint_sync_seconds: float = field(default_factory=lambda: _float("LOCALAWS_CHECKPOINT_SYNC_SECONDS", 2.0))
    #: How often buffered log lines and metrics are shipped to CloudWatch.
    log_flush_seconds: float = field(default_factory=lambda: _float("LOCALAWS_LOG_FLUSH_SECONDS", 0.5))
    #: How long an interrupted managed spot job waits for capacity before it starts again.
    spot_capacity_wait_seconds: float = field(
        default_factory=lambda: _float("LOCALAWS_SPOT_CAPACITY_WAIT_SECONDS", 5.0)
    )
    #: The spot price as a fraction of the on-demand one, for every type (AWS's market moves; its savings are
    #: commonly 60-90%): a managed spot job's BillableTimeInSeconds is its training time times this, so that
    #: (1 - BillableTimeInSeconds / TrainingTimeInSeconds) is its savings, as AWS documents it.
    spot_price_fraction: float = field(default_factory=lambda: _float("LOCALAWS_SPOT_PRICE_FRACTION", 0.3))
    #: How often each training host's and endpoint instance's CPU, memory, disk and accelerator use is
    #: sampled and published (localaws/sagemaker/usage.py); at least 1 s, how often the engine's stats change.
    usage_metrics_seconds: float = field(
        default_factory=lambda: max(1.0, _float("LOCALAWS_USAGE_METRICS_SECONDS", 10.0))
    )
    #: Account quota: training instances of one type in use at once (ResourceLimitExceeded above it).
    training_instance_quota: int = field(default_factory=lambda: _int("LOCALAWS_TRAINING_INSTANCE_QUOTA", 16))

    # --- hosting (endpoints) ------------------------------------------------------------
    #: How long a serving container has to answer GET /ping with 200 before its endpoint is
    #: Failed, when the variant sets no ContainerStartupHealthCheckTimeoutInSeconds.
    health_check_timeout_seconds: float = field(
        default_factory=lambda: _float("LOCALAWS_HEALTH_CHECK_TIMEOUT_SECONDS", 600.0)
    )
    #: SIGTERM to SIGKILL when a serving instance stops (scale-in, update, delete; AWS: 30 s).
    serving_stop_grace_seconds: float = field(
        default_factory=lambda: _float("LOCALAWS_SERVING_STOP_GRACE_SECONDS", 30.0)
    )
    #: How long InvokeEndpoint waits for the container's answer (AWS: 60 s).
    invocation_timeout_seconds: float = field(
        default_factory=lambda: _float("LOCALAWS_INVOCATION_TIMEOUT_SECONDS", 60.0)
    )
    #: Application Auto Scaling's clock for SageMaker variants: 60 makes each minute of metrics,
    #: alarm evaluation and cooldown last one second (1: real time).
    autoscaling_time_scale: float = field(default_factory=lambda: _float("LOCALAWS_AUTOSCALING_TIME_SCALE", 1.0))
    #: How often endpoints' AWS/SageMaker metrics are shipped to CloudWatch.
    hosting_metrics_seconds: float = field(default_factory=lambda: _float("LOCALAWS_HOSTING_METRICS_SECONDS", 2.0))
    #: Account quota: endpoint instances of one type in use at once (ResourceLimitExceeded above it).
    endpoint_instance_quota: int = field(default_factory=lambda: _int("LOCALAWS_ENDPOINT_INSTANCE_QUOTA", 16))

    @property
    def endpoint_url(self) -> str:
        return f"http://{self.host}:{self.port}"


def _default_work_dir() -> Path:
    return Path(tempfile.gettempdir()) / f"localaws-{os.getuid()}"
