"""Accelerators: a job on a GPU instance type gets the machine's GPUs, or runs on the CPU and says so.

This machine has no GPU: ``nvidia-smi`` is stood in for by a script on the PATH of the localaws under
test (the one thing that cannot exist here), and everything from there on is localaws's own: the
device query, the grant, the process runner's CUDA_VISIBLE_DEVICES, SM_NUM_GPUS, resourceconfig.json,
the status messages. The docker runner's device request is checked in what it gives ``docker create``
(an engine without NVIDIA's runtime refuses it).
"""

from __future__ import annotations

import io
import json
import os
import tarfile
import textwrap
from pathlib import Path

import pytest

from localaws.sagemaker import devices
from localaws.sagemaker.runners.base import ContainerSpec
from tests.conftest import LocalAWSProcess, unique
from tests.fixtures.docker_engine import ecr_uri
from tests.support import training_request, wait_for_training

# What `train` reports of what it was given: its environment and its resourceconfig.json.
TRAIN = """\
#!/usr/bin/env python3
import json, os
opt_ml = os.environ.get("SAGEMAKER_BASE_DIR", "/opt/ml")
with open(os.path.join(opt_ml, "input", "config", "resourceconfig.json")) as handle:
    resource = json.load(handle)
seen = {name: os.environ.get(name) for name in ("CUDA_VISIBLE_DEVICES", "HABANA_VISIBLE_DEVICES", "SM_NUM_GPUS",
                                                "SM_CURRENT_INSTANCE_TYPE")}
seen["training_env_num_gpus"] = json.loads(os.environ["SM_TRAINING_ENV"])["num_gpus"]
seen["resourceconfig"] = resource
with open(os.path.join(opt_ml, "model", "seen.json"), "w") as handle:
    json.dump(seen, handle)
"""


def _stub(directory: Path, name: str, script: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text("#!/bin/sh\n" + textwrap.dedent(script))
    path.chmod(0o755)
    return directory


def four_gpus(directory: Path) -> Path:
    """nvidia-smi -L as on a machine with four A10Gs."""
    lines = "".join(
        f'echo "GPU {i}: NVIDIA A10G (UUID: GPU-0000000{i}-aaaa-bbbb-cccc-dddddddddddd)"\n' for i in range(4)
    )
    return _stub(directory, "nvidia-smi", f'[ "$1" = "-L" ] || exit 2\n{lines}')


def no_driver(directory: Path) -> Path:
    """nvidia-smi where the driver is missing: what a machine without a usable GPU answers."""
    return _stub(
        directory,
        "nvidia-smi",
        'echo "NVIDIA-SMI has failed because it couldn\'t communicate with the NVIDIA driver." >&2\nexit 9\n',
    )


@pytest.fixture
def fresh_query():
    devices.query.cache_clear()
    yield
    devices.query.cache_clear()


@pytest.mark.parametrize(
    "instance_type, expected",
    [
        ("ml.g5.xlarge", ("nvidia", 1)),
        ("ml.g5.12xlarge", ("nvidia", 4)),
        ("ml.g5.48xlarge", ("nvidia", 8)),
        ("ml.g4dn.xlarge", ("nvidia", 1)),
        ("ml.g6e.24xlarge", ("nvidia", 4)),
        ("ml.p3.2xlarge", ("nvidia", 1)),
        ("ml.p3.8xlarge", ("nvidia", 4)),
        ("ml.p4d.24xlarge", ("nvidia", 8)),
        ("ml.p5.48xlarge", ("nvidia", 8)),
        ("ml.dl1.24xlarge", ("habana", 8)),
        ("ml.m5.large", (None, 0)),
        ("ml.c5.xlarge", (None, 0)),
        ("ml.g4ad.xlarge", (None, 0)),
    ],
)
def test_instance_type_accelerators(instance_type, expected):
    assert devices.instance_accelerators(instance_type) == expected


def test_query_counts_what_nvidia_smi_lists(tmp_path, monkeypatch, fresh_query):
    monkeypatch.setenv("PATH", f"{four_gpus(tmp_path / 'bin')}{os.pathsep}{os.environ['PATH']}")
    assert devices.query() == {"nvidia": 4, "habana": 0}
    grant = devices.grant("ml.g5.12xlarge")
    assert (grant.kind, grant.count, grant.visible, grant.note) == ("nvidia", 4, "0,1,2,3", None)
    capped = devices.grant("ml.p4d.24xlarge")
    assert (capped.count, capped.visible) == (4, "0,1,2,3")
    assert capped.note == "ml.p4d.24xlarge has 8 GPUs; this machine has 4: it gets those"


def test_query_without_a_driver_is_none(tmp_path, monkeypatch, fresh_query):
    monkeypatch.setenv("PATH", f"{no_driver(tmp_path / 'bin')}{os.pathsep}{os.environ['PATH']}")
    assert devices.query() == {"nvidia": 0, "habana": 0}
    grant = devices.grant("ml.g5.xlarge")
    assert (grant.count, grant.visible) == (0, "")
    assert grant.note == "ml.g5.xlarge has 1 GPU; this machine has none: it runs on the CPU"


def _runner():
    docker = pytest.importorskip("docker")
    from localaws.sagemaker.runners.docker import DockerRunner

    # An explicit API version: the client is made without asking any engine.
    return DockerRunner(client=docker.DockerClient(base_url="unix:///nonexistent.sock", version="1.41"))


def _spec(tmp_path: Path, grant: devices.Grant | None) -> ContainerSpec:
    return ContainerSpec(
        image="img",
        command="train",
        host_dir=tmp_path,
        host_name="algo-1",
        env={"SM_NUM_GPUS": str(grant.count if grant else 0)},
        name="job-algo-1",
        devices=grant,
    )


def test_docker_gpu_types_get_a_device_request(tmp_path):
    options = _runner().create_options(
        _spec(tmp_path, devices.Grant("ml.g5.12xlarge", "nvidia", 4, 4)), "img", tmp_path
    )
    (request,) = options["device_requests"]
    assert request["Count"] == 4 and request["Capabilities"] == [["gpu"]]
    assert "runtime" not in options


def test_docker_habana_types_get_the_habana_runtime(tmp_path):
    options = _runner().create_options(
        _spec(tmp_path, devices.Grant("ml.dl1.24xlarge", "habana", 2, 8)), "img", tmp_path
    )
    assert options["runtime"] == "habana"
    assert options["environment"]["HABANA_VISIBLE_DEVICES"] == "0,1"
    assert "device_requests" not in options


@pytest.mark.parametrize(
    "grant", [None, devices.Grant("ml.m5.large", None, 0, 0), devices.Grant("ml.g5.xlarge", "nvidia", 0, 1)]
)
def test_docker_without_accelerators_asks_for_none(tmp_path, grant):
    options = _runner().create_options(_spec(tmp_path, grant), "img", tmp_path)
    assert "device_requests" not in options and "runtime" not in options


def _context(tmp_path: Path) -> Path:
    context = tmp_path / "reporting-trainer"
    context.mkdir()
    (context / "train").write_text(TRAIN)
    (context / "train").chmod(0o755)
    return context


def _run_job(server, context: Path, instance_type: str) -> tuple[dict, dict]:
    from localaws.client import register_image

    image = ecr_uri("reporting-trainer", "v1")
    register_image(server.endpoint_url, image, context)
    s3, sm = server.client("s3"), server.client("sagemaker")
    bucket = unique("devices")
    s3.create_bucket(Bucket=bucket)
    name = unique("gpu-job")
    request = training_request(name, image, {}, f"s3://{bucket}/out", {})
    request["ResourceConfig"]["InstanceType"] = instance_type
    sm.create_training_job(**request)
    description = wait_for_training(sm, name, timeout=120, poll=0.1)
    assert description["TrainingJobStatus"] == "Completed", description.get("FailureReason")
    key = description["ModelArtifacts"]["S3ModelArtifacts"].split("/", 3)[3]
    with tarfile.open(fileobj=io.BytesIO(s3.get_object(Bucket=bucket, Key=key)["Body"].read())) as tar:
        seen = json.load(tar.extractfile("seen.json"))
    return description, seen


def _starting(description: dict) -> str:
    return next(t["StatusMessage"] for t in description["SecondaryStatusTransitions"] if t["Status"] == "Starting")


def test_process_runner_gives_a_g5_job_its_gpus(tmp_path):
    stubs = four_gpus(tmp_path / "bin")
    server = LocalAWSProcess(tmp_path, "process", PATH=f"{stubs}{os.pathsep}{os.environ['PATH']}").start()
    try:
        context = _context(tmp_path)
        description, seen = _run_job(server, context, "ml.g5.12xlarge")
        assert seen["CUDA_VISIBLE_DEVICES"] == "0,1,2,3"
        assert seen["SM_NUM_GPUS"] == "4" and seen["training_env_num_gpus"] == 4
        assert seen["SM_CURRENT_INSTANCE_TYPE"] == "ml.g5.12xlarge"
        assert seen["resourceconfig"]["current_instance_type"] == "ml.g5.12xlarge"
        assert seen["resourceconfig"]["instance_groups"][0]["instance_type"] == "ml.g5.12xlarge"
        assert _starting(description) == "Preparing the instances for training"

        # A GPU type bigger than the machine: what the machine has.
        description, seen = _run_job(server, context, "ml.p4d.24xlarge")
        assert seen["CUDA_VISIBLE_DEVICES"] == "0,1,2,3" and seen["SM_NUM_GPUS"] == "4"
        assert "ml.p4d.24xlarge has 8 GPUs; this machine has 4" in _starting(description)

        # A CPU type on the same machine sees none of its GPUs, as its instance would have none.
        description, seen = _run_job(server, context, "ml.m5.large")
        assert seen["CUDA_VISIBLE_DEVICES"] == "" and seen["SM_NUM_GPUS"] == "0"
    finally:
        server.stop()


def test_without_gpus_a_g5_job_runs_on_the_cpu_and_says_so(tmp_path):
    stubs = no_driver(tmp_path / "bin")
    server = LocalAWSProcess(tmp_path, "process", PATH=f"{stubs}{os.pathsep}{os.environ['PATH']}").start()
    try:
        description, seen = _run_job(server, _context(tmp_path), "ml.g5.xlarge")
    finally:
        server.stop()
    assert seen["CUDA_VISIBLE_DEVICES"] == "" and seen["SM_NUM_GPUS"] == "0"
    assert seen["training_env_num_gpus"] == 0
    assert _starting(description) == (
        "Preparing the instances for training (ml.g5.xlarge has 1 GPU; this machine has none: it runs on the CPU)"
    )
