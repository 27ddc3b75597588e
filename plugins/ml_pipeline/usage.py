"""What the run's machines used, read back from CloudWatch: each host's peak and mean of every figure it
published, and a plain verdict where one applies (``summary["resources"]``).

Where the figures come from (published by SageMaker, and by localaws as SageMaker does):

    the run's training jobs and trials   /aws/sagemaker/TrainingJobs   Host=<job>/algo-<n>
    its processing job (``prepare``)     /aws/sagemaker/ProcessingJobs Host=<job>/algo-<n>
    its endpoint's instances             /aws/sagemaker/Endpoints      EndpointName, VariantName
    its host (compute=host)              CWAgent                       InstanceId (the agent's rollup,
                                                                       include/cloudwatch/host-agent.json)

Every host is shown in SageMaker's terms, whatever published it: ``CPUUtilization`` summed over cores
(100 a fully used core: ml.m5.4xlarge's 16 vCPUs reach 1600), ``GPUUtilization`` and
``GPUMemoryUtilization`` summed over devices, ``MemoryUtilization`` and ``DiskUtilization`` in percent.
The agent's figures (percent of the whole instance, the mean of the devices) are scaled by the instance
type's vCPUs and devices as EC2 describes the type.

Figures are read a minute at a time (SageMaker's resolution); "GPU idle" counts the minutes whose mean
was under 10% of a device. Reading them never fails the run: what CloudWatch refuses is said in
``error``, what it does not hold in ``notes``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ml_pipeline.aws import Client, Clients
    from ml_pipeline.plan import Plan

log = logging.getLogger(__name__)

TRAINING_NAMESPACE = "/aws/sagemaker/TrainingJobs"
PROCESSING_NAMESPACE = "/aws/sagemaker/ProcessingJobs"
ENDPOINT_NAMESPACE = "/aws/sagemaker/Endpoints"
AGENT_NAMESPACE = "CWAgent"
METRICS = ("CPUUtilization", "MemoryUtilization", "DiskUtilization", "GPUUtilization", "GPUMemoryUtilization")
PERIOD_SECONDS = 60
#: A minute whose mean is under this, per device, is a minute the device was idle.
IDLE_PERCENT = 10.0
#: The agent's names of each figure (nvidia-smi's or hl-smi's for the GPUs), read and scaled in ``_agent_series``.
AGENT_METRICS = {
    "CPUUtilization": ("cpu_usage_active",),
    "MemoryUtilization": ("mem_used_percent",),
    "DiskUtilization": ("disk_used_percent",),
    "GPUUtilization": ("nvidia_smi_utilization_gpu", "hl_smi_utilization_aip"),
}
#: GPUMemoryUtilization from the agent: (used, total) MiB of nvidia-smi's, or of hl-smi's.
AGENT_GPU_MEMORY = (
    ("nvidia_smi_memory_used", "nvidia_smi_memory_total"),
    ("hl_smi_memory_used", "hl_smi_memory_total"),
)


@dataclass
class Machine:
    """One host of the run whose figures are read: where CloudWatch holds them, and over what time."""

    key: str  # what the summary names it: <job>/algo-<n>, <endpoint>/<variant>, the instance id
    kind: str  # "training", "processing", "endpoint" or "host"
    instance_type: str
    namespace: str
    dimensions: list[dict[str, str]]
    start: datetime
    end: datetime


@dataclass
class TypeSpec:
    """An instance type as EC2 describes it (a SageMaker ml. type as its EC2 namesake)."""

    vcpus: int
    memory_mib: int
    gpus: int


@dataclass
class Series:
    """One figure a minute at a time: (mean, maximum, samples) of each minute."""

    minutes: list[tuple[float, float, float]] = field(default_factory=list)

    @property
    def peak(self) -> float:
        return max(high for _, high, _ in self.minutes)

    @property
    def mean(self) -> float:
        samples = sum(count for _, _, count in self.minutes)
        return sum(mean * count for mean, _, count in self.minutes) / samples if samples else 0.0

    def share_below(self, threshold: float) -> float:
        """The share of the samples in minutes whose mean was under ``threshold``."""
        samples = sum(count for _, _, count in self.minutes)
        below = sum(count for mean, _, count in self.minutes if mean < threshold)
        return below / samples if samples else 0.0

    def scaled(self, factor: float) -> Series:
        return Series([(mean * factor, high * factor, count) for mean, high, count in self.minutes])


# --- the run's machines ------------------------------------------------------------------------------


def machines_of_run(client: Clients, plan: Plan, made: dict, jobs: dict) -> tuple[list[Machine], list[str]]:
    """The run's training hosts (every job and trial it ran), its processing job's, its endpoint's variant and
    its host, each with the time it ran; and notes on those whose time could not be known."""
    from ml_pipeline import sagemaker_requests as requests  # noqa: PLC0415

    now = datetime.now(timezone.utc)
    machines: list[Machine] = []
    notes: list[str] = []
    sm = client("sagemaker")
    training_end: datetime | None = None
    for job in jobs.get("training", []):
        if job.get("status") == "gone":
            continue
        try:
            described = sm.describe_training_job(TrainingJobName=job["name"])
        except Exception as error:  # noqa: BLE001 - botocore's ClientError: the job is not to be read
            notes.append(f"training job {job['name']}: not described ({_reason(error)})")
            continue
        start = described.get("TrainingStartTime") or described["CreationTime"]
        end = described.get("TrainingEndTime") or now
        training_end = max(training_end or end, end)
        config = described["ResourceConfig"]
        machines += _job_hosts(job["name"], "training", config, TRAINING_NAMESPACE, start, end)
    for job in jobs.get("processing", []):
        if job.get("status") == "gone":
            continue
        try:
            described = sm.describe_processing_job(ProcessingJobName=job["name"])
        except Exception as error:  # noqa: BLE001 - botocore's ClientError: the job is not to be read
            notes.append(f"processing job {job['name']}: not described ({_reason(error)})")
            continue
        machines += _job_hosts(
            job["name"],
            "processing",
            described["ProcessingResources"]["ClusterConfig"],
            PROCESSING_NAMESPACE,
            described.get("ProcessingStartTime") or described["CreationTime"],
            described.get("ProcessingEndTime") or now,
        )
    if (made.get("hosting") or {}).get("endpoint"):
        endpoint, variant = plan["names"]["endpoint"], requests.PRIMARY_VARIANT
        machines.append(
            Machine(
                key=f"{endpoint}/{variant}",
                kind="endpoint",
                instance_type=plan["params"]["endpoint_instance_type"],
                namespace=ENDPOINT_NAMESPACE,
                dimensions=[{"Name": "EndpointName", "Value": endpoint}, {"Name": "VariantName", "Value": variant}],
                # Deployed once the run's training ended: a kept endpoint's earlier figures are not this run's.
                start=training_end or now - timedelta(hours=1),
                end=now,
            )
        )
    instance_id = _host_instance(made)
    if instance_id:
        try:
            reservations = client("ec2").describe_instances(InstanceIds=[instance_id])["Reservations"]
            launched = reservations[0]["Instances"][0]["LaunchTime"]
        except Exception as error:  # noqa: BLE001 - botocore's ClientError
            notes.append(f"host {instance_id}: not described ({_reason(error)})")
        else:
            machines.append(
                Machine(
                    key=instance_id,
                    kind="host",
                    instance_type=plan["params"].get("host_instance_type", ""),
                    namespace=AGENT_NAMESPACE,
                    dimensions=[{"Name": "InstanceId", "Value": instance_id}],
                    start=launched,
                    end=now,
                )
            )
    return machines, notes


def _job_hosts(name: str, kind: str, resources: dict, namespace: str, start: datetime, end: datetime) -> list[Machine]:
    """A job's hosts (``<job>/algo-N``, the Host dimension SageMaker publishes them under), from its
    ResourceConfig or ClusterConfig (InstanceType, InstanceCount)."""
    return [
        Machine(
            key=f"{name}/algo-{index}",
            kind=kind,
            instance_type=resources["InstanceType"],
            namespace=namespace,
            dimensions=[{"Name": "Host", "Value": f"{name}/algo-{index}"}],
            start=start,
            end=end,
        )
        for index in range(1, resources.get("InstanceCount", 1) + 1)
    ]


def _host_instance(made: dict) -> str | None:
    """The run's host: the one it trained on, else the one its provisioning made."""
    best = (made.get("outcome") or {}).get("best") or {}
    if best.get("compute") == "host" and best.get("instance_id"):
        return best["instance_id"]
    for result in (made.get("provisioned") or {}).values():
        if isinstance(result, dict) and isinstance(result.get("instance_id"), str):
            return result["instance_id"]
    return None


# --- reading CloudWatch --------------------------------------------------------------------------------


class Refused(Exception):
    """CloudWatch refused or could not be reached: what the summary says instead of figures."""


def type_spec(ec2: Client, instance_type: str, cache: dict[str, TypeSpec | None]) -> TypeSpec | None:
    """The instance type's vCPUs, memory and GPUs as EC2 describes it; None when EC2 does not know it."""
    name = instance_type.removeprefix("ml.")
    if name not in cache:
        try:
            described = ec2.describe_instance_types(InstanceTypes=[name])["InstanceTypes"][0]
            cache[name] = TypeSpec(
                vcpus=int(described["VCpuInfo"]["DefaultVCpus"]),
                memory_mib=int(described.get("MemoryInfo", {}).get("SizeInMiB", 0)),
                gpus=sum(int(gpu.get("Count", 0)) for gpu in described.get("GpuInfo", {}).get("Gpus", [])),
            )
        except Exception:  # noqa: BLE001 - a type EC2 does not list (a retired one, an accelerator family)
            cache[name] = None
    return cache[name]


def _series(cloudwatch: Client, machine: Machine, metric: str) -> Series:
    from botocore.exceptions import BotoCoreError, ClientError  # noqa: PLC0415

    start = machine.start.replace(second=0, microsecond=0) - timedelta(seconds=PERIOD_SECONDS)
    end = machine.end + timedelta(seconds=2 * PERIOD_SECONDS)  # the last sample comes as the host stops
    try:
        points = cloudwatch.get_metric_statistics(
            Namespace=machine.namespace,
            MetricName=metric,
            Dimensions=machine.dimensions,
            StartTime=start,
            EndTime=end,
            Period=PERIOD_SECONDS,
            Statistics=["Average", "Maximum", "SampleCount"],
        )["Datapoints"]
    except ClientError as error:
        raise Refused(f"CloudWatch refused GetMetricStatistics: {_reason(error)}") from error
    except BotoCoreError as error:
        raise Refused(f"CloudWatch could not be reached: {error}") from error
    minutes = sorted(points, key=lambda point: point["Timestamp"])
    return Series(
        [
            (float(p["Average"]), float(p["Maximum"]), float(p.get("SampleCount") or 1))
            for p in minutes
            if all(math.isfinite(float(p[key])) for key in ("Average", "Maximum"))
        ]
    )


def _agent_series(cloudwatch: Client, machine: Machine, spec: TypeSpec | None, metric: str) -> Series:
    """A figure of the host's agent, in SageMaker's terms (summed over vCPUs and devices)."""
    if metric == "GPUMemoryUtilization":
        for used_name, total_name in AGENT_GPU_MEMORY:
            used, total = _series(cloudwatch, machine, used_name), _series(cloudwatch, machine, total_name)
            if used.minutes and total.minutes and spec and spec.gpus:
                capacity = max(mean for mean, _, _ in total.minutes)
                return Series(
                    [(m / capacity * 100, h / capacity * 100, c) for m, h, c in used.minutes] if capacity else []
                ).scaled(spec.gpus)
        return Series()
    for name in AGENT_METRICS[metric]:
        found = _series(cloudwatch, machine, name)
        if not found.minutes:
            continue
        if metric == "CPUUtilization":  # percent of the whole instance
            return found.scaled(spec.vcpus) if spec else Series()
        if metric == "GPUUtilization":  # the mean of the devices
            return found.scaled(spec.gpus) if spec and spec.gpus else Series()
        return found
    return Series()


def read_machine(cloudwatch: Client, machine: Machine, spec: TypeSpec | None) -> dict[str, Series]:
    """Every figure CloudWatch holds for the machine over its time, in SageMaker's terms."""
    found = {}
    for metric in METRICS:
        if machine.kind == "host":
            series = _agent_series(cloudwatch, machine, spec, metric)
        else:
            series = _series(cloudwatch, machine, metric)
        if series.minutes:
            found[metric] = series
    return found


# --- verdicts ------------------------------------------------------------------------------------------


def verdicts(machine: Machine, figures: dict[str, Series], spec: TypeSpec | None) -> list[str]:
    """Plain verdicts on one machine's figures, where one applies (none when its use fits its type)."""
    said = []
    what = "the time it served" if machine.kind == "endpoint" else "the job"
    name, kind = machine.key, machine.instance_type
    gpu = figures.get("GPUUtilization")
    devices = spec.gpus if spec and spec.gpus else 0
    if gpu is not None and devices:
        idle = gpu.share_below(IDLE_PERCENT * devices)
        if idle >= 0.5:
            said.append(f"{name}: GPU idle {idle:.0%} of {what}: a smaller type would do")
        memory = figures.get("GPUMemoryUtilization")
        if memory is not None and memory.peak / devices >= 95:
            said.append(
                f"{name}: GPU memory peaked at {memory.peak / devices:.0f}% of {kind}'s: near full; "
                "a smaller batch, or a type with more GPU memory"
            )
    cpu = figures.get("CPUUtilization")
    if cpu is not None and spec is not None and spec.vcpus:
        capacity = 100.0 * spec.vcpus
        mean, peak = cpu.mean / capacity, cpu.peak / capacity
        if not spec.gpus and spec.vcpus >= 4 and mean < 0.25 and peak < 0.5:
            said.append(f"{name}: CPU at {mean:.0%} of {kind}'s {spec.vcpus} vCPUs: a type with fewer vCPUs would do")
        elif mean >= 0.9:
            said.append(
                f"{name}: CPU at {mean:.0%} of {kind}'s {spec.vcpus} vCPUs all along: CPU-bound; "
                + (
                    "the GPU waits on it (more data loader workers, or more vCPUs)"
                    if spec.gpus
                    else "more vCPUs would go faster"
                )
            )
    memory = figures.get("MemoryUtilization")
    if memory is not None and memory.peak >= 90:
        said.append(f"{name}: memory peaked at {memory.peak:.0f}%: close to running out; a type with more memory")
    disk = figures.get("DiskUtilization")
    if disk is not None and disk.peak >= 90:
        volume = "the data volume" if machine.kind == "host" else "VolumeSizeInGB"
        said.append(f"{name}: disk peaked at {disk.peak:.0f}%: close to full; a larger volume ({volume})")
    return said


# --- the summary's field -------------------------------------------------------------------------------


def resources(cloudwatch: Client, ec2: Client, machines: list[Machine], notes: list[str] | None = None) -> dict:
    """``{"hosts": {key: {metric: {"peak", "mean"}}}, "verdicts": [...]}``, with ``notes`` on machines
    CloudWatch holds nothing of and ``error`` when it refused (the hosts read before it stay)."""
    result: dict[str, Any] = {"hosts": {}, "verdicts": []}
    notes = list(notes or [])
    specs: dict[str, TypeSpec | None] = {}
    for machine in machines:
        spec = type_spec(ec2, machine.instance_type, specs)
        try:
            figures = read_machine(cloudwatch, machine, spec)
        except Refused as refused:
            result["error"] = str(refused)
            break
        if not figures:
            notes.append(f"{machine.key}: no figures in CloudWatch (ran shorter than a sample, or none published)")
            continue
        result["hosts"][machine.key] = {
            metric: {"peak": round(series.peak, 1), "mean": round(series.mean, 1)} for metric, series in figures.items()
        }
        result["verdicts"].extend(verdicts(machine, figures, spec))
    if notes:
        result["notes"] = notes
    return result


def run_resources(client: Clients, plan: Plan, made: dict, jobs: dict) -> dict:
    """The run's ``summary["resources"]``. Never raises: whatever fails is said in it."""
    try:
        machines, notes = machines_of_run(client, plan, made, jobs)
        return resources(client("cloudwatch"), client("ec2"), machines, notes)
    except Exception as error:  # noqa: BLE001 - the figures are a report; the run is judged without them
        log.warning("the run's resource use could not be read", exc_info=True)
        return {"hosts": {}, "verdicts": [], "error": f"not read: {type(error).__name__}: {error}"}


def _reason(error: Exception) -> str:
    info = getattr(error, "response", {}).get("Error", {})
    return f"{info.get('Code')}: {info.get('Message')}" if info else str(error)
