"""Resource use: what a training host, an endpoint instance and the run's host use, measured from the real
container or process and published to CloudWatch as SageMaker (or the host's CloudWatch agent) publishes
it; read back by the plugin (``ml_pipeline.usage``) as each host's peak and mean and plain verdicts.

The load is known: the burner image (tests/localaws/images/burner) keeps one core busy and measures the
share of a core it got itself (``time.process_time`` over wall time), so a figure is checked against
what the machine really gave it: on a machine whose 2 cores are shared with other work, a spinning
thread may get less than a whole core, and CloudWatch must show what it got.

Tolerance, 15 points of CPUUtilization (100 = one core): each sample's window is localaws's reading
interval (1 s here, read to within a few ms, about 2%), a first sample also holds the burner's start
(touching its memory: CPU work too, which its own measure leaves out), and the share a busy machine
gives it varies within each second. Anything near 200 (two cores) or 0 (idle) is far outside it.

GPUs cannot exist here: ``nvidia-smi`` is stood in for by a script on the PATH of the localaws under test
(as tests/localaws/test_devices.py does), which answers the device query with fixed figures.
"""

from __future__ import annotations

import io
import json
import math
import os
import tarfile
import textwrap
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import boto3
import pytest
from botocore.config import Config

from tests.conftest import REGION, LocalAWSProcess, free_port, unique
from tests.fixtures.images import IMAGES, image_for
from tests.support import training_request, wait_for_training

BURNER = IMAGES / "burner"
TOLERANCE = 15.0  # points of CPUUtilization: see the module's docstring
MEMORY_MB = 200

pytestmark = pytest.mark.timeout(600)


@pytest.fixture
def burner(request, localaws):
    return image_for(request, localaws, BURNER, "burner")


def samples(cloudwatch, namespace: str, metric: str, dimensions: list[dict], start=None, end=None) -> list[float]:
    """Every value published, one a second (Period 1: each in its own bucket)."""
    now = datetime.now(timezone.utc)
    points = cloudwatch.get_metric_statistics(
        Namespace=namespace,
        MetricName=metric,
        Dimensions=dimensions,
        StartTime=start or now - timedelta(hours=1),
        EndTime=end or now + timedelta(minutes=5),
        Period=1,
        Statistics=["Average", "SampleCount"],
    )["Datapoints"]
    assert all(point["SampleCount"] == 1 for point in points), points
    return [point["Average"] for point in sorted(points, key=lambda point: point["Timestamp"])]


def burn_job(localaws, image: str, bucket: str, instance_type: str = "ml.m5.large", seconds: float = 5) -> tuple:
    """A training job that burns one core for ``seconds``: its name and what the burner measured of itself."""
    s3, sm = localaws.client("s3"), localaws.client("sagemaker")
    name = unique("burn")
    request = training_request(
        name,
        image,
        {},
        f"s3://{bucket}/out",
        {},
        Environment={"BURN_SECONDS": str(seconds), "MEMORY_MB": str(MEMORY_MB)},
    )
    request["ResourceConfig"]["InstanceType"] = instance_type
    sm.create_training_job(**request)
    described = wait_for_training(sm, name, timeout=300, poll=0.2)
    assert described["TrainingJobStatus"] == "Completed", described.get("FailureReason")
    key = described["ModelArtifacts"]["S3ModelArtifacts"].split("/", 3)[3]
    with tarfile.open(fileobj=io.BytesIO(s3.get_object(Bucket=bucket, Key=key)["Body"].read())) as tar:
        burned = json.load(tar.extractfile("burn.json"))
    return name, burned


def machine_memory() -> int:
    import psutil

    return psutil.virtual_memory().total


def check_one_core(cpu: list[float], share: float) -> None:
    """Samples of a host that burned one core, ``share`` of it given by the machine."""
    assert len(cpu) >= 3, cpu  # a second apart, over seconds of burning
    mean = sum(cpu) / len(cpu)
    assert abs(mean - 100 * share) <= TOLERANCE, (cpu, share)
    assert max(cpu) <= 100 + TOLERANCE, cpu  # one thread: never two cores' worth


@pytest.mark.runners
def test_a_training_host_burning_one_core_shows_one_core(localaws, burner, bucket):
    from ml_pipeline import usage

    name, burned = burn_job(localaws, burner, bucket)
    share = burned["cpu_seconds"] / burned["wall_seconds"]
    cloudwatch = localaws.client("cloudwatch")
    host = [{"Name": "Host", "Value": f"{name}/algo-1"}]
    cpu = samples(cloudwatch, "/aws/sagemaker/TrainingJobs", "CPUUtilization", host)
    print(f"{localaws.runner}: CPUUtilization {cpu}, the burner's own share {share:.2f}")
    check_one_core(cpu, share)

    memory = samples(cloudwatch, "/aws/sagemaker/TrainingJobs", "MemoryUtilization", host)
    held = max(memory) / 100 * machine_memory() / 2**20  # MiB
    assert 0.9 * MEMORY_MB <= held <= MEMORY_MB + 300, (memory, held)  # what it holds, and its interpreter's
    disk = samples(cloudwatch, "/aws/sagemaker/TrainingJobs", "DiskUtilization", host)
    assert disk and all(0 < value <= 100 for value in disk)
    # No device granted: no GPU figures at all.
    assert samples(cloudwatch, "/aws/sagemaker/TrainingJobs", "GPUUtilization", host) == []

    # Read back as the run's summary reads it: a minute at a time, in the same terms.
    machines, notes = usage.machines_of_run(
        localaws.client, {"names": {}, "params": {}}, {}, {"training": [{"name": name, "status": "Completed"}]}
    )
    assert notes == [] and [m.key for m in machines] == [f"{name}/algo-1"]
    read = usage.resources(cloudwatch, localaws.client("ec2"), machines)
    figures = read["hosts"][f"{name}/algo-1"]
    assert set(figures) == {"CPUUtilization", "MemoryUtilization", "DiskUtilization"}
    assert figures["CPUUtilization"]["mean"] == pytest.approx(sum(cpu) / len(cpu), abs=0.1)
    assert figures["CPUUtilization"]["peak"] == pytest.approx(max(cpu), abs=0.1)


@pytest.mark.runners
def test_an_endpoint_instance_under_load_shows_it(localaws, burner):
    from tests.localaws.hosting_support import delete_quietly, deploy

    sm, runtime = localaws.client("sagemaker"), localaws.client("sagemaker-runtime")
    cloudwatch = localaws.client("cloudwatch")
    name = unique("burn-ep")
    assert deploy(sm, name, burner, None, env={})["EndpointStatus"] == "InService"
    try:
        time.sleep(3)  # quiet seconds first: the figures follow the load, not the start
        began, spent = time.time(), 0.0
        while time.time() - began < 10:  # one core busy: invocations one after another, each burning 0.5 s
            answer = runtime.invoke_endpoint(
                EndpointName=name, Body=json.dumps({"burn": 0.5}), ContentType="application/json"
            )
            spent += json.loads(answer["Body"].read())["cpu_seconds"]
        ended = time.time()
        time.sleep(1.5)  # the sample that ends the load is published
        dimensions = [{"Name": "EndpointName", "Value": name}, {"Name": "VariantName", "Value": "AllTraffic"}]
        # The samples that lie wholly within the load (each covers the second before its timestamp).
        within = {
            "start": datetime.fromtimestamp(math.ceil(began + 1.1), timezone.utc),
            "end": datetime.fromtimestamp(math.floor(ended), timezone.utc),
        }
        cpu = samples(cloudwatch, "/aws/sagemaker/Endpoints", "CPUUtilization", dimensions, **within)
        quiet = samples(
            cloudwatch,
            "/aws/sagemaker/Endpoints",
            "CPUUtilization",
            dimensions,
            end=datetime.fromtimestamp(math.floor(began), timezone.utc),
        )
        memory = samples(cloudwatch, "/aws/sagemaker/Endpoints", "MemoryUtilization", dimensions)
    finally:
        delete_quietly(sm, name)
    share = spent / (ended - began)
    print(f"{localaws.runner}: CPUUtilization under load {cpu}, before {quiet}, the burner's own share {share:.2f}")
    check_one_core(cpu, share)
    # Idle before the load: its quietest second well below the loaded ones (the first may hold the server's start).
    assert quiet and min(quiet) < 0.5 * sum(cpu) / len(cpu), (quiet, cpu)
    assert memory and all(0 < value < 100 for value in memory)


# --- GPUs and the run's host, with a stand-in nvidia-smi -----------------------------------------------

#: What the stand-in nvidia-smi reports of each of its four GPUs: 3% busy, 1200 of 24000 MiB used.
GPU_UTILIZATION, GPU_USED, GPU_TOTAL = 3.0, 1200.0, 24000.0


def stand_in_nvidia_smi(directory: Path) -> Path:
    """nvidia-smi as on a machine with four A10Gs: ``-L`` lists them, ``--query-gpu`` gives their figures."""
    directory.mkdir(parents=True, exist_ok=True)
    script = directory / "nvidia-smi"
    script.write_text(
        "#!/bin/sh\n"
        + textwrap.dedent(
            f"""\
            case "$1" in
              -L) for i in 0 1 2 3; do echo "GPU $i: NVIDIA A10G (UUID: GPU-0000000$i-aaaa-bbbb-cccc-dd)"; done ;;
              --query-gpu=index,utilization.gpu,memory.used,memory.total)
                for i in 0 1 2 3; do echo "$i, {GPU_UTILIZATION:g}, {GPU_USED:g}, {GPU_TOTAL:g}"; done ;;
              *) exit 2 ;;
            esac
            """
        )
    )
    script.chmod(0o755)
    return directory


def test_device_figures_are_read_from_nvidia_smi_and_hl_smi(tmp_path, monkeypatch):
    """The figures of the devices a host was given, and only those: nvidia-smi's, or hl-smi's for Gaudi
    cards; a device the tool cannot measure ([N/A]) is left out, and no tool means no figures."""
    from localaws.sagemaker import devices

    stand_in_nvidia_smi(tmp_path / "bin")
    (tmp_path / "bin" / "hl-smi").write_text(
        "#!/bin/sh\n"
        '[ "$2" = "index,utilization.aip,memory.used,memory.total" ] || exit 2\n'
        'echo "0, 71, 20000, 98304"; echo "1, [N/A], [N/A], 98304"; echo "2, 12, 500, 98304"\n'
    )
    (tmp_path / "bin" / "hl-smi").chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    two = devices.figures(devices.Grant("ml.g5.12xlarge", devices.NVIDIA, 2, 4))
    assert two == [devices.DeviceFigures(GPU_UTILIZATION, GPU_USED, GPU_TOTAL)] * 2
    gaudis = devices.figures(devices.Grant("ml.dl1.24xlarge", devices.HABANA, 3, 8))
    assert gaudis == [devices.DeviceFigures(71, 20000, 98304), devices.DeviceFigures(12, 500, 98304)]
    assert devices.figures(devices.Grant("ml.m5.large", None, 0, 0)) == []
    monkeypatch.setenv("PATH", "/nonexistent")
    assert devices.figures(devices.Grant("ml.g5.xlarge", devices.NVIDIA, 1, 1)) == []


@pytest.fixture(scope="module")
def gpu_localaws(tmp_path_factory):
    """localaws (process runner) on a "machine" with four GPUs."""
    tmp = tmp_path_factory.mktemp("gpu-localaws")
    stubs = stand_in_nvidia_smi(tmp / "bin")
    server = LocalAWSProcess(tmp, "process", PATH=f"{stubs}{os.pathsep}{os.environ['PATH']}").start()
    yield server
    server.stop()


def host_command(localaws, image: str, bucket: str, instance_id: str, seconds: float) -> dict:
    """The project's training document, as the run's host runs it, for the burner image."""
    import base64

    from ml_pipeline.infra import host_training

    ssm = localaws.client("ssm")
    document = f"{host_training.TRAINING_DOCUMENT}-{unique('usage')}"
    ssm.create_document(
        Name=document,
        Content=host_training.document_content(host_training.TRAINING_DOCUMENT),
        DocumentType="Command",
        DocumentFormat="JSON",
    )
    spec = {
        "hyperparameters": {},
        "inputdataconfig": {},
        "resourceconfig": {"current_host": "algo-1", "hosts": ["algo-1"]},
        "channels": {},
        "environment": {"BURN_SECONDS": str(seconds), "MEMORY_MB": str(MEMORY_MB)},
    }
    command = ssm.send_command(
        DocumentName=document,
        InstanceIds=[instance_id],
        Parameters={
            "JobName": [unique("host-burn")],
            "Image": [image],
            "Spec": [base64.b64encode(json.dumps(spec).encode()).decode()],
            "AgentConfig": [host_training.agent_config()],
            "OutputPath": [f"s3://{bucket}/out"],
            "Accelerator": ["nvidia"],
            "Region": [REGION],
            "ExecutionTimeout": ["300"],
        },
    )["Command"]
    deadline = time.monotonic() + 300
    while (found := ssm.get_command_invocation(CommandId=command["CommandId"], InstanceId=instance_id))["Status"] in (
        "Pending",
        "InProgress",
    ):
        assert time.monotonic() < deadline, found
        time.sleep(0.3)
    assert found["Status"] == "Success", found["StandardOutputContent"][-2000:] + found["StandardErrorContent"][-3000:]
    return found


def test_gpu_figures_from_nvidia_smi_on_a_training_host_and_on_the_run_s_host(request, gpu_localaws):
    """A job on ml.g5.12xlarge gets the four GPUs and publishes them summed, as SageMaker does; the run's
    host (``--gpus all``) publishes as the CloudWatch agent does; one reader makes the same of both, and
    says that GPUs 3% busy are idle."""
    from ml_pipeline import usage

    localaws = gpu_localaws
    image = image_for(request, localaws, BURNER, "burner")
    s3, ec2, cloudwatch = localaws.client("s3"), localaws.client("ec2"), localaws.client("cloudwatch")
    bucket = unique("gpu-usage")
    s3.create_bucket(Bucket=bucket)

    name, burned = burn_job(localaws, image, bucket, "ml.g5.12xlarge", seconds=4)
    host = [{"Name": "Host", "Value": f"{name}/algo-1"}]
    gpu = samples(cloudwatch, "/aws/sagemaker/TrainingJobs", "GPUUtilization", host)
    gpu_memory = samples(cloudwatch, "/aws/sagemaker/TrainingJobs", "GPUMemoryUtilization", host)
    assert gpu and set(gpu) == {4 * GPU_UTILIZATION}  # summed over the four: 100 a fully busy GPU
    assert gpu_memory and all(value == pytest.approx(4 * 100 * GPU_USED / GPU_TOTAL, abs=0.01) for value in gpu_memory)
    check_one_core(
        samples(cloudwatch, "/aws/sagemaker/TrainingJobs", "CPUUtilization", host),
        burned["cpu_seconds"] / burned["wall_seconds"],
    )

    # The run's host: an instance of g5.12xlarge (48 vCPUs, 4 GPUs), the project's training document.
    image_id = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    instance_id = ec2.run_instances(ImageId=image_id, InstanceType="g5.12xlarge", MinCount=1, MaxCount=1)["Instances"][
        0
    ]["InstanceId"]
    invocation = host_command(localaws, image, bucket, instance_id, seconds=4)
    assert "[ml-pipeline] CloudWatch agent: this host" in invocation["StandardOutputContent"], invocation
    agent = [{"Name": "InstanceId", "Value": instance_id}]
    active = samples(cloudwatch, "CWAgent", "cpu_usage_active", agent)
    assert len(active) >= 3 and max(active) <= (100 + TOLERANCE) / 48, active  # one core of 48: about 2%
    assert set(samples(cloudwatch, "CWAgent", "nvidia_smi_utilization_gpu", agent)) == {GPU_UTILIZATION}  # mean
    assert set(samples(cloudwatch, "CWAgent", "nvidia_smi_memory_total", agent)) == {GPU_TOTAL}
    assert samples(cloudwatch, "CWAgent", "mem_used_percent", agent)

    # As the run's summary finds them: its job from SageMaker, its host (where it trained) from EC2.
    plan = {"names": {}, "params": {"host_instance_type": "g5.12xlarge"}}
    made = {"outcome": {"best": {"compute": "host", "instance_id": instance_id}}}
    machines, notes = usage.machines_of_run(
        localaws.client, plan, made, {"training": [{"name": name, "status": "Completed"}]}
    )
    assert notes == [] and [(m.key, m.kind, m.instance_type) for m in machines] == [
        (f"{name}/algo-1", "training", "ml.g5.12xlarge"),
        (instance_id, "host", "g5.12xlarge"),
    ]
    read = usage.resources(cloudwatch, ec2, machines)
    for key in (f"{name}/algo-1", instance_id):
        figures = read["hosts"][key]
        assert figures["GPUUtilization"] == {"peak": 4 * GPU_UTILIZATION, "mean": 4 * GPU_UTILIZATION}
        assert figures["GPUMemoryUtilization"]["peak"] == pytest.approx(4 * 100 * GPU_USED / GPU_TOTAL, abs=0.1)
        assert 0 < figures["CPUUtilization"]["mean"] <= 100 + TOLERANCE, figures  # one core, in SageMaker's terms
        assert f"{key}: GPU idle 100% of the job: a smaller type would do" in read["verdicts"]


# --- the plugin's reading and verdicts, from figures put into CloudWatch ---------------------------------


def put_minutes(cloudwatch, host: str, minutes: int, **per_minute) -> datetime:
    """One value a minute for ``minutes`` minutes ending now, of each metric ``per_minute`` gives (a function
    of the minute), under Host=<host>: what SageMaker publishes for a training host."""
    start = datetime.now(timezone.utc).replace(second=0, microsecond=0) - timedelta(minutes=minutes)
    data = [
        {
            "MetricName": metric,
            "Dimensions": [{"Name": "Host", "Value": host}],
            "Timestamp": start + timedelta(minutes=minute, seconds=30),
            "Value": float(value(minute)),
            "Unit": "Percent",
        }
        for minute in range(minutes)
        for metric, value in per_minute.items()
    ]
    cloudwatch.put_metric_data(Namespace="/aws/sagemaker/TrainingJobs", MetricData=data)
    return start


def machine(host: str, instance_type: str, start: datetime):
    from ml_pipeline import usage

    return usage.Machine(
        key=host,
        kind="training",
        instance_type=instance_type,
        namespace=usage.TRAINING_NAMESPACE,
        dimensions=[{"Name": "Host", "Value": host}],
        start=start,
        end=datetime.now(timezone.utc),
    )


def test_verdicts_say_what_the_figures_show(localaws_process):
    from ml_pipeline import usage

    cloudwatch, ec2 = localaws_process.client("cloudwatch"), localaws_process.client("ec2")
    idle_gpu, small_cpu, full, fitting = (f"{unique('job')}/algo-1" for _ in range(4))
    machines = [
        # A GPU busy two minutes of ten; CPU steady, memory half.
        machine(
            idle_gpu,
            "ml.g5.xlarge",
            put_minutes(
                cloudwatch,
                idle_gpu,
                10,
                GPUUtilization=lambda m: 90 if m < 2 else 1,
                GPUMemoryUtilization=lambda m: 40,
                CPUUtilization=lambda m: 150,
                MemoryUtilization=lambda m: 50,
            ),
        ),
        # 16 vCPUs, two of them busy (1600 is all of them).
        machine(
            small_cpu,
            "ml.m5.4xlarge",
            put_minutes(cloudwatch, small_cpu, 5, CPUUtilization=lambda m: 192, MemoryUtilization=lambda m: 20),
        ),
        # Both vCPUs busy throughout, memory and disk near full.
        machine(
            full,
            "ml.m5.large",
            put_minutes(
                cloudwatch,
                full,
                5,
                CPUUtilization=lambda m: 196,
                MemoryUtilization=lambda m: 80 + 3 * m,
                DiskUtilization=lambda m: 93,
            ),
        ),
        # What fits its type: nothing to say.
        machine(
            fitting,
            "ml.m5.xlarge",
            put_minutes(cloudwatch, fitting, 5, CPUUtilization=lambda m: 250, MemoryUtilization=lambda m: 60),
        ),
    ]
    read = usage.resources(cloudwatch, ec2, machines)
    assert read["hosts"][idle_gpu]["GPUUtilization"] == {"peak": 90.0, "mean": 18.8}
    assert read["hosts"][small_cpu]["CPUUtilization"] == {"peak": 192.0, "mean": 192.0}
    assert read["hosts"][full]["MemoryUtilization"] == {"peak": 92.0, "mean": 86.0}
    assert read["verdicts"] == [
        f"{idle_gpu}: GPU idle 80% of the job: a smaller type would do",
        f"{small_cpu}: CPU at 12% of ml.m5.4xlarge's 16 vCPUs: a type with fewer vCPUs would do",
        f"{full}: CPU at 98% of ml.m5.large's 2 vCPUs all along: CPU-bound; more vCPUs would go faster",
        f"{full}: memory peaked at 92%: close to running out; a type with more memory",
        f"{full}: disk peaked at 93%: close to full; a larger volume (VolumeSizeInGB)",
    ]
    assert "notes" not in read and "error" not in read


def test_what_cloudwatch_lacks_or_refuses_is_said_not_raised(localaws_process):
    from ml_pipeline import usage

    ec2 = localaws_process.client("ec2")
    never = machine(f"{unique('never-ran')}/algo-1", "ml.m5.large", datetime.now(timezone.utc) - timedelta(minutes=5))
    read = usage.resources(localaws_process.client("cloudwatch"), ec2, [never])
    assert read["hosts"] == {} and read["verdicts"] == []
    assert read["notes"] == [f"{never.key}: no figures in CloudWatch (ran shorter than a sample, or none published)"]

    # Nothing listens where this CloudWatch is: unreachable, said in one line.
    unreachable = boto3.client(
        "cloudwatch",
        endpoint_url=f"http://127.0.0.1:{free_port()}",
        region_name=REGION,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(retries={"max_attempts": 1}, connect_timeout=1),
    )
    read = usage.resources(unreachable, ec2, [never])
    assert read["hosts"] == {} and read["error"].startswith("CloudWatch could not be reached: ")

    # A run whose reading fails outright (SageMaker unreachable too) still gets its field, with the reason.
    def clients(service):
        return boto3.client(
            service,
            endpoint_url=f"http://127.0.0.1:{free_port()}",
            region_name=REGION,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            config=Config(retries={"max_attempts": 1}, connect_timeout=1),
        )

    plan = {"names": {"endpoint": "ep"}, "params": {"endpoint_instance_type": "ml.m5.large"}}
    read = usage.run_resources(clients, plan, {"hosting": {"endpoint": "ep"}}, {"training": [{"name": "j"}]})
    assert read["hosts"] == {} and "error" in read


def test_the_agent_config_collects_what_localaws_and_the_reader_use():
    """include/cloudwatch/host-agent.json names (as the agent makes them: <section>_<measurement>, nvidia_smi_
    for nvidia_gpu) every figure localaws publishes for the host and the reader reads, on the InstanceId
    rollup both use."""
    from localaws.sagemaker import devices
    from localaws.sagemaker import usage as published
    from ml_pipeline import usage as reader
    from ml_pipeline.infra.host_training import AGENT_CONFIG

    config = json.loads(AGENT_CONFIG.read_text())
    metrics = config["metrics"]
    assert metrics["namespace"] == published.AGENT_NAMESPACE == reader.AGENT_NAMESPACE
    assert metrics["aggregation_dimensions"] == [["InstanceId"]]
    collected = metrics["metrics_collected"]
    names = {
        f"{'nvidia_smi' if section == 'nvidia_gpu' else section}_{measurement}"
        for section, spec in collected.items()
        for measurement in spec.get("measurement", [])
    }
    assert "statsd" in collected  # hl-smi's figures, fed by the training document
    names |= set(published.AGENT_DEVICE_METRICS[devices.HABANA])
    sample = published.Sample(
        cores=1.0,
        memory_percent=10.0,
        disk_percent=20.0,
        kind=devices.NVIDIA,
        devices=[devices.DeviceFigures(5.0, 100.0, 1000.0)],
    )
    assert {name for name, _, _ in published.agent_metrics(lambda: 4)(sample)} <= names
    read = {name for choices in reader.AGENT_METRICS.values() for name in choices}
    assert read | {name for pair in reader.AGENT_GPU_MEMORY for name in pair} <= names
