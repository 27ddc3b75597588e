"""What a training or processing host, an endpoint instance or the run's host uses, measured from its real
container or process and published to CloudWatch as AWS publishes it, every
``LOCALAWS_USAGE_METRICS_SECONDS`` (10 s by default) and once more as it stops.

SageMaker's instance metrics (Unit Percent), for training and processing hosts and endpoint instances:

    namespace                      dimensions                    metrics
    /aws/sagemaker/TrainingJobs    Host=<job>/algo-<n>           CPUUtilization, MemoryUtilization,
    /aws/sagemaker/Endpoints       EndpointName, VariantName     DiskUtilization; GPUUtilization and
    /aws/sagemaker/ProcessingJobs  Host=<job>/algo-<n>           GPUMemoryUtilization when it got devices

with SageMaker's meanings: CPUUtilization is summed over cores (100 a fully used core: two busy cores
show 200), GPUUtilization and GPUMemoryUtilization over devices likewise; MemoryUtilization is of the
memory it may use (a container's limit, else the machine's), DiskUtilization of the file system its
/opt/ml lies on. An endpoint instance's figures are its containers' together.

The run's host (``ssm/dockerd.py``'s ``docker run``) publishes as the CloudWatch agent does with the
project's config (include/cloudwatch/host-agent.json): namespace CWAgent, the InstanceId rollup it
configures, the agent's names and meanings (cpu_usage_active: percent of all the instance type's vCPUs;
nvidia_smi_* and hl_smi_*: the mean over the devices).

Readings come from the runner (``Running.usage``: the engine's one-shot stats for a container, psutil
for a process tree) and, for devices, from ``devices.figures``. What a host did between its last
reading and its exit is not seen: its counters go with it.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from localaws.sagemaker import devices
from localaws.sagemaker.cloudwatch import put_metrics
from localaws.sagemaker.runners.base import Running

log = logging.getLogger(__name__)

TRAINING_NAMESPACE = "/aws/sagemaker/TrainingJobs"
PROCESSING_NAMESPACE = "/aws/sagemaker/ProcessingJobs"
ENDPOINT_NAMESPACE = "/aws/sagemaker/Endpoints"
AGENT_NAMESPACE = "CWAgent"
#: The agent's names of each kind's device figures (its nvidia_gpu section; hl-smi's fed to its statsd).
AGENT_DEVICE_METRICS = {
    devices.NVIDIA: ("nvidia_smi_utilization_gpu", "nvidia_smi_memory_used", "nvidia_smi_memory_total"),
    devices.HABANA: ("hl_smi_utilization_aip", "hl_smi_memory_used", "hl_smi_memory_total"),
}


@dataclass
class Sample:
    """One host's use over the interval since the last sample."""

    cores: float  # CPU cores busy on average (CPU seconds used / seconds elapsed)
    memory_percent: float | None
    disk_percent: float | None
    kind: str | None = None  # devices.NVIDIA, devices.HABANA or None
    devices: list[devices.DeviceFigures] = field(default_factory=list)


#: A sample as datapoints: (metric name, value, unit or None).
Metrics = Callable[[Sample], list[tuple[str, float, str | None]]]


def sagemaker_metrics(sample: Sample) -> list[tuple[str, float, str | None]]:
    out: list[tuple[str, float, str | None]] = [("CPUUtilization", 100.0 * sample.cores, "Percent")]
    if sample.memory_percent is not None:
        out.append(("MemoryUtilization", sample.memory_percent, "Percent"))
    if sample.disk_percent is not None:
        out.append(("DiskUtilization", sample.disk_percent, "Percent"))
    if sample.devices:
        out.append(("GPUUtilization", sum(d.utilization for d in sample.devices), "Percent"))
        out.append(("GPUMemoryUtilization", sum(d.memory_percent for d in sample.devices), "Percent"))
    return out


def agent_metrics(vcpus: Callable[[], int]) -> Metrics:
    """The CloudWatch agent's names and meanings, for an instance of ``vcpus()`` vCPUs."""

    def metrics(sample: Sample) -> list[tuple[str, float, str | None]]:
        out: list[tuple[str, float, str | None]] = [
            ("cpu_usage_active", min(100.0, 100.0 * sample.cores / max(1, vcpus())), "Percent")
        ]
        if sample.memory_percent is not None:
            out.append(("mem_used_percent", sample.memory_percent, "Percent"))
        if sample.disk_percent is not None:
            out.append(("disk_used_percent", sample.disk_percent, "Percent"))
        if sample.devices and sample.kind in AGENT_DEVICE_METRICS:
            utilization, used, total = AGENT_DEVICE_METRICS[sample.kind]
            count = len(sample.devices)
            out.append((utilization, sum(d.utilization for d in sample.devices) / count, "Percent"))
            out.append((used, sum(d.memory_used_mib for d in sample.devices) / count, "Megabytes"))
            out.append((total, sum(d.memory_total_mib for d in sample.devices) / count, "Megabytes"))
        return out

    return metrics


class UsageSampler:
    """Samples one host (a container or process; an endpoint instance's several) every ``interval`` seconds
    in a thread of its own, and publishes the samples from another (so that a slow PutMetricData, the
    first of a freshly started localaws under load, delays no reading: each keeps its own time). ``close``
    takes the last sample and publishes what is left. Publishing is best effort: the host goes on."""

    def __init__(
        self,
        cloudwatch,
        namespace: str,
        dimensions: list[dict[str, str]],
        hosts: Sequence[Running],
        interval: float,
        disk: Path,
        grant: devices.Grant | None,
        metrics: Metrics = sagemaker_metrics,
        name: str = "usage",
    ):
        self.cloudwatch = cloudwatch
        self.namespace = namespace
        self.dimensions = dimensions
        self.hosts = list(hosts)
        self.interval = interval
        self.disk = disk
        self.grant = grant
        self.metrics = metrics
        started = time.monotonic()
        # Each host's CPU time and when it was read: a host started just now, from nothing.
        self._read = [(0.0, started) for _ in self.hosts]
        self._outbox: list[dict] = []
        self._lock = threading.Lock()
        self._ready = threading.Event()  # datapoints wait in the outbox
        self._warned = False
        self._stopped = threading.Event()
        self._sampling = threading.Thread(target=self._sample_all, name=f"usage-{name}", daemon=True)
        self._publishing = threading.Thread(target=self._publish_all, name=f"usage-put-{name}", daemon=True)
        self._sampling.start()
        self._publishing.start()

    def _sample_all(self) -> None:
        while not self._stopped.wait(self.interval):
            self._take()
        self._take()  # the last, as the host stops

    def sample(self) -> Sample | None:
        """The use since the last sample; None when no host could be read (all have exited)."""
        cores, memory, total, read = 0.0, 0, 0, False
        for index, host in enumerate(self.hosts):
            usage = host.usage()
            now = time.monotonic()
            if usage is None:
                continue
            before, then = self._read[index]
            if now > then:
                cores += max(0.0, usage.cpu_seconds - before) / (now - then)
            self._read[index] = (usage.cpu_seconds, now)
            memory += usage.memory_bytes
            total = max(total, usage.memory_total_bytes)
            read = True
        if not read:
            return None
        try:
            disk = shutil.disk_usage(self.disk)
            disk_percent = 100.0 * disk.used / disk.total if disk.total else None
        except OSError:  # the host's folder is gone
            disk_percent = None
        return Sample(
            cores=cores,
            memory_percent=100.0 * memory / total if total else None,
            disk_percent=disk_percent,
            kind=self.grant.kind if self.grant else None,
            devices=devices.figures(self.grant),
        )

    def _take(self) -> None:
        try:
            sample = self.sample()
        except Exception:  # noqa: BLE001 - figures are best effort; the host goes on
            log.debug("could not sample %s", self.dimensions, exc_info=True)
            return
        if sample is None:
            return
        timestamp = time.time()
        datapoints = [
            {
                "MetricName": name,
                "Dimensions": self.dimensions,
                "Timestamp": timestamp,
                "Value": round(value, 3),
                **({"Unit": unit} if unit else {}),
            }
            for name, value, unit in self.metrics(sample)
            if math.isfinite(value)  # CloudWatch refuses NaN and infinities
        ]
        with self._lock:
            self._outbox.extend(datapoints)
        self._ready.set()

    def _publish_all(self) -> None:
        while True:
            self._ready.wait()
            self._ready.clear()
            self._publish()
            if self._stopped.is_set() and not self._sampling.is_alive():
                self._publish()  # what the last sample added
                return

    def _publish(self) -> None:
        with self._lock:
            datapoints, self._outbox = self._outbox, []
        if not datapoints:
            return
        try:
            put_metrics(self.cloudwatch, self.namespace, datapoints)
        except Exception:  # noqa: BLE001 - figures are best effort; the host goes on
            if not self._warned:
                log.warning("could not publish the usage of %s", self.dimensions, exc_info=True)
            self._warned = True

    def close(self) -> None:
        """Take the last sample (before the host is killed or removed, while it can still be read), publish
        what is left, and stop."""
        self._stopped.set()
        self._sampling.join(timeout=30)
        self._ready.set()
        self._publishing.join(timeout=30)


def training_host(
    clients,
    job: str,
    host: str,
    running: Running,
    disk: Path,
    grant: devices.Grant | None,
    interval: float,
    namespace: str = TRAINING_NAMESPACE,
) -> UsageSampler:
    """A training (or, in ``PROCESSING_NAMESPACE``, processing) host's ``Host=<job>/<host>`` figures."""
    return UsageSampler(
        clients.cloudwatch,
        namespace,
        [{"Name": "Host", "Value": f"{job}/{host}"}],
        [running],
        interval,
        disk,
        grant,
        name=f"{job}-{host}",
    )


def endpoint_instance(
    clients,
    endpoint: str,
    variant: str,
    containers: Sequence[Running],
    disk: Path,
    grant: devices.Grant | None,
    interval: float,
) -> UsageSampler:
    """An endpoint instance's figures (its containers' together) under its endpoint's and variant's names."""
    return UsageSampler(
        clients.cloudwatch,
        ENDPOINT_NAMESPACE,
        [{"Name": "EndpointName", "Value": endpoint}, {"Name": "VariantName", "Value": variant}],
        containers,
        interval,
        disk,
        grant,
        name=f"{endpoint}-{variant}",
    )


#: The agent's config section each of its metric names comes from (hl-smi's: the document feeds its statsd).
AGENT_SECTIONS = {"cpu_": "cpu", "mem_": "mem", "disk_": "disk", "nvidia_smi_": "nvidia_gpu", "hl_smi_": "statsd"}


def agent_host(
    clients,
    instance_id: str,
    config: dict,
    running: Running,
    disk: Path,
    grant: devices.Grant | None,
    interval: float,
) -> UsageSampler:
    """The run's host's container, as the CloudWatch agent on that instance reports it with ``config``
    (include/cloudwatch/host-agent.json): its namespace, and the metrics of the sections it collects, on
    the InstanceId rollup its aggregation_dimensions ask for. At ``interval``, not the config's."""
    found: list[int] = []

    def vcpus() -> int:  # asked once, at the first sample (EC2's figure for the instance's type)
        if not found:
            found.append(instance_vcpus(clients, instance_id))
        return found[0]

    metrics = config.get("metrics") or {}
    sections = set(metrics.get("metrics_collected") or {})
    everything = agent_metrics(vcpus)

    def collected(sample: Sample) -> list[tuple[str, float, str | None]]:
        return [
            point
            for point in everything(sample)
            if any(point[0].startswith(prefix) and section in sections for prefix, section in AGENT_SECTIONS.items())
        ]

    return UsageSampler(
        clients.cloudwatch,
        metrics.get("namespace") or AGENT_NAMESPACE,
        [{"Name": "InstanceId", "Value": instance_id}],
        [running],
        interval,
        disk,
        grant,
        metrics=collected,
        name=instance_id,
    )


def instance_vcpus(clients, instance_id: str) -> int:
    """The vCPUs of the instance's type, as EC2 describes it; this machine's cores when EC2 cannot say."""
    ec2 = clients.client("ec2")
    try:
        reservations = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"]
        instance_type = reservations[0]["Instances"][0]["InstanceType"]
        described = ec2.describe_instance_types(InstanceTypes=[instance_type])["InstanceTypes"][0]
        return int(described["VCpuInfo"]["DefaultVCpus"])
    except Exception:  # noqa: BLE001 - gone, or a type EC2 does not list
        return os.cpu_count() or 1
