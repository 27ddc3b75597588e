"""Paths someone else names, kept inside their folder, under both runners: S3 keys of channels,
checkpoints and model data with ``..`` in them, hostile model archives, and links a container
leaves in /opt/ml pointing at this machine's files. Also what a container saves on SIGTERM.

The trainer is a small stand-in image (tests/localaws/images/scripted-trainer) told what to do
by its job's Environment; training itself is not what these tests are about."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest

from tests.conftest import unique
from tests.fixtures.docker_engine import ecr_uri
from tests.fixtures.images import MISBEHAVING, SCRIPTED_TRAINER, image_for
from tests.localaws.hosting_support import deploy, delete_quietly
from tests.support import ROLE_ARN, training_request, wait_for_training, wait_until

pytestmark = pytest.mark.timeout(900)

SECRET = "a file of the machine running localaws"


@pytest.fixture(scope="module", params=["process", pytest.param("docker", marks=pytest.mark.docker)])
def scripted(request):
    """(localaws, the scripted trainer's image URI) under each runner."""
    server = request.getfixturevalue(f"localaws_{request.param}")
    return server, image_for(request, server, SCRIPTED_TRAINER, "scripted-trainer")


@pytest.fixture
def bucket_of(scripted):
    server, _ = scripted
    name = unique("hostile")
    server.client("s3").create_bucket(Bucket=name)
    return name


def escaping_key(prefix: str, outside: Path) -> str:
    """A key under ``prefix`` whose '..' segments climb out of any folder to ``outside``."""
    return prefix + "../" * 40 + str(outside).lstrip("/")


def run_job(scripted, bucket: str, env: dict, channels: dict | None = None, **extra) -> dict:
    server, image = scripted
    sm = server.client("sagemaker")
    name = unique("hostile")
    sm.create_training_job(
        **training_request(name, image, channels or {}, f"s3://{bucket}/jobs", {}, Environment=env, **extra)
    )
    return wait_for_training(sm, name, timeout=300)


def members(s3, bucket: str, key: str) -> dict[str, tarfile.TarInfo | bytes]:
    body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    found = {}
    with tarfile.open(fileobj=io.BytesIO(body), mode="r:gz") as tar:
        for member in tar:
            found[member.name] = tar.extractfile(member).read() if member.isfile() else member
    return found


# --- S3 keys -------------------------------------------------------------------------------


def test_a_channel_key_that_climbs_out_of_the_channel_fails_the_job(scripted, bucket_of, tmp_path):
    s3 = scripted[0].client("s3")
    outside = tmp_path / "escaped-from-the-channel"
    hostile = escaping_key("data/train/", outside)
    s3.put_object(Bucket=bucket_of, Key="data/train/ok.csv", Body=b"1,2\n")
    s3.put_object(Bucket=bucket_of, Key=hostile, Body=b"written outside")
    assert hostile in [o["Key"] for o in s3.list_objects_v2(Bucket=bucket_of, Prefix="data/")["Contents"]]

    done = run_job(scripted, bucket_of, {}, {"train": f"s3://{bucket_of}/data/train"})
    assert done["TrainingJobStatus"] == "Failed"
    assert done["FailureReason"].startswith("ClientError: Data download failed:"), done["FailureReason"]
    assert f"s3://{bucket_of}/{hostile}" in done["FailureReason"]
    assert not outside.exists()
    assert "ModelArtifacts" not in done  # the algorithm never ran


def test_a_checkpoint_key_that_leaves_the_local_path_fails_the_job(scripted, bucket_of, tmp_path):
    s3 = scripted[0].client("s3")
    for hostile in (
        escaping_key("ckpt/run/", tmp_path / "by-dots"),
        "ckpt/run/" + str(tmp_path / "absolute"),
    ):  # "ckpt/run/" + "/tmp/...": an absolute path
        prefix = unique("ckpt")
        key = hostile.replace("ckpt/run/", f"{prefix}/", 1)
        s3.put_object(Bucket=bucket_of, Key=key, Body=b"written outside")
        done = run_job(scripted, bucket_of, {}, CheckpointConfig={"S3Uri": f"s3://{bucket_of}/{prefix}"})
        assert done["TrainingJobStatus"] == "Failed"
        assert done["FailureReason"].startswith("ClientError: Checkpoint restore failed:"), done["FailureReason"]
        assert f"s3://{bucket_of}/{key}" in done["FailureReason"]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("channel", ["climbing", "..", ".", "a/b", ""])
def test_a_host_command_whose_channel_names_a_folder_elsewhere_is_refused(localaws_process, tmp_path, channel):
    """SSM Run Command's training document: the channels in its Spec name folders, by SageMaker's rule,
    which the document's own script checks before it makes a folder (on localaws's stand-in host as on a
    real one): the command fails with nothing written."""
    import base64
    import json
    import time

    from tests.conftest import REPO_ROOT

    s3, ec2, ssm = (localaws_process.client(name) for name in ("s3", "ec2", "ssm"))
    bucket = unique("hostile-ssm")
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="data/train/x", Body=b"written outside")
    outside = tmp_path / "escaped-from-the-host"
    name = "../" * 30 + str(outside).lstrip("/") if channel == "climbing" else channel
    document = unique("MLPipeline-TrainContainer")
    ssm.create_document(
        Name=document,
        DocumentType="Command",
        DocumentFormat="JSON",
        Content=(REPO_ROOT / "include" / "ssm" / "run-training-container.json").read_text(),
    )
    instance = ec2.run_instances(ImageId="ami-12c6146b", MinCount=1, MaxCount=1, InstanceType="g5.xlarge")["Instances"][
        0
    ]["InstanceId"]
    spec = {
        "hyperparameters": {},
        "inputdataconfig": {name: {}},
        "environment": {},
        "resourceconfig": {"current_host": "algo-1", "current_instance_type": "g5.xlarge", "hosts": ["algo-1"]},
        "channels": {name: f"s3://{bucket}/data/train"},
    }
    command_id = ssm.send_command(
        DocumentName=document,
        InstanceIds=[instance],
        Parameters={
            "JobName": [unique("host")],
            "Image": [localaws_process.image_uri],
            "Spec": [base64.b64encode(json.dumps(spec).encode()).decode()],
            "OutputPath": [f"s3://{bucket}/host"],
            "Accelerator": ["nvidia"],
            "Region": ["us-east-1"],
        },
    )["Command"]["CommandId"]
    deadline = time.monotonic() + 60
    while (found := ssm.get_command_invocation(CommandId=command_id, InstanceId=instance))["Status"] in (
        "Pending",
        "InProgress",
    ):
        assert time.monotonic() < deadline, found
        time.sleep(0.2)
    assert found["Status"] == "Failed" and found["ResponseCode"] == 1
    assert f"Channel name '{name}' is not valid" in found["StandardErrorContent"]
    assert "downloading the channels" not in found["StandardOutputContent"]
    assert not outside.exists()
    ec2.terminate_instances(InstanceIds=[instance])


def hostile_archive(kind: str, outside: Path) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:

        def add(name: str, data: bytes = b"written outside", **attributes):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            for key, value in attributes.items():
                setattr(info, key, value)
            tar.addfile(info, io.BytesIO(data) if info.isfile() else None)

        add("model.txt", b"fine")
        if kind == "dot-dot":
            add("../" * 40 + str(outside).lstrip("/"))
        elif kind == "absolute":
            add(str(outside))
        elif kind == "link-out":  # a link to the outside, then a file through it
            add("out", type=tarfile.SYMTYPE, linkname=str(outside.parent), size=0)
            add(f"out/{outside.name}")
        elif kind == "device":
            add("null", type=tarfile.CHRTYPE, devmajor=1, devminor=3, size=0)
        elif kind == "cve-2025-4517":
            # The public proof of concept (fixed in Python 3.11.13; this one is older): links whose real
            # path passes PATH_MAX, where tarfile's ``data`` filter resolves them by name and the kernel
            # does not, so ``escape`` points outside while the filter sees it inside.
            deep, steps, path = "d" * 247, "abcdefghijklmnop", ""
            for step in steps:
                add(os.path.join(path, deep), type=tarfile.DIRTYPE, size=0)
                add(os.path.join(path, step), type=tarfile.SYMTYPE, linkname=deep, size=0)
                path = os.path.join(path, deep)
            long_link = os.path.join("/".join(steps), "l" * 254)
            add(long_link, type=tarfile.SYMTYPE, linkname="../" * len(steps), size=0)
            add(
                "escape",
                type=tarfile.SYMTYPE,
                size=0,
                linkname=long_link + "/.." * (len(steps) + 1) + "/" + str(outside.parent).lstrip("/"),
            )
            add(f"escape/{outside.name}")
    return buffer.getvalue()


@pytest.mark.parametrize("kind", ["dot-dot", "absolute", "link-out", "device", "cve-2025-4517", "prefix-key"])
def test_model_data_that_leaves_the_model_folder_fails_the_endpoint(scripted, bucket_of, tmp_path, kind):
    server, image = scripted
    s3, sm = server.client("s3"), server.client("sagemaker")
    outside = tmp_path / "escaped-from-the-model"
    name = unique("hostile-ep")
    try:
        if kind == "prefix-key":  # uncompressed model data: a key under the prefix climbing out
            s3.put_object(Bucket=bucket_of, Key=f"{name}/model/model.txt", Body=b"fine")
            hostile = escaping_key(f"{name}/model/", outside)
            s3.put_object(Bucket=bucket_of, Key=hostile, Body=b"written outside")
            sm.create_model(
                ModelName=f"{name}-m",
                ExecutionRoleArn=ROLE_ARN,
                PrimaryContainer={
                    "Image": image,
                    "ModelDataSource": {
                        "S3DataSource": {
                            "S3Uri": f"s3://{bucket_of}/{name}/model/",
                            "S3DataType": "S3Prefix",
                            "CompressionType": "None",
                        }
                    },
                },
            )
            sm.create_endpoint_config(
                EndpointConfigName=f"{name}-c",
                ProductionVariants=[
                    {
                        "VariantName": "AllTraffic",
                        "ModelName": f"{name}-m",
                        "InstanceType": "ml.m5.large",
                        "InitialInstanceCount": 1,
                    }
                ],
            )
            sm.create_endpoint(EndpointName=name, EndpointConfigName=f"{name}-c")
            from tests.localaws.hosting_support import wait_endpoint

            described = wait_endpoint(sm, name)
            assert f"s3://{bucket_of}/{hostile}" in described.get("FailureReason", "")
        else:
            s3.put_object(Bucket=bucket_of, Key=f"{name}/model.tar.gz", Body=hostile_archive(kind, outside))
            described = deploy(sm, name, image, f"s3://{bucket_of}/{name}/model.tar.gz", env={})
            assert "Failed to extract model data archive" in described.get("FailureReason", ""), described
        assert described["EndpointStatus"] == "Failed"
        assert not outside.exists()
    finally:
        delete_quietly(sm, name)


def test_an_absolute_link_into_the_model_folder_is_served_as_the_container_sees_it(scripted, bucket_of, request):
    """A model trained with ``latest -> /opt/ml/model/ckpt`` (training uploads links as links) points
    inside the container's model folder: the endpoint serves it, under either runner."""
    server = scripted[0]
    image = image_for(request, server, MISBEHAVING, "misbehaving")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        info = tarfile.TarInfo("ckpt/weights.txt")
        info.size = len(b"the weights")
        tar.addfile(info, io.BytesIO(b"the weights"))
        link = tarfile.TarInfo("latest")
        link.type, link.linkname = tarfile.SYMTYPE, "/opt/ml/model/ckpt"
        tar.addfile(link)
    s3, sm = server.client("s3"), server.client("sagemaker")
    name = unique("linked-ep")
    s3.put_object(Bucket=bucket_of, Key=f"{name}/model.tar.gz", Body=buffer.getvalue())
    try:
        described = deploy(
            sm, name, image, f"s3://{bucket_of}/{name}/model.tar.gz", env={"MODEL_FILE": "latest/weights.txt"}
        )
        assert described["EndpointStatus"] == "InService", described.get("FailureReason")
        import json

        answer = json.loads(
            server.client("sagemaker-runtime").invoke_endpoint(EndpointName=name, Body=b"{}")["Body"].read()
        )
        assert answer["model_file"] == "the weights"
    finally:
        delete_quietly(sm, name)


# --- what the container leaves in /opt/ml --------------------------------------------------


@pytest.fixture
def secret(tmp_path) -> Path:
    path = tmp_path / "secret.txt"
    path.write_text(SECRET)
    return path


def test_links_in_the_model_and_output_are_uploaded_as_links_never_followed(scripted, bucket_of, secret):
    s3 = scripted[0].client("s3")
    done = run_job(scripted, bucket_of, {"LINK_TO": str(secret)})
    assert done["TrainingJobStatus"] == "Completed", done.get("FailureReason")
    key = done["ModelArtifacts"]["S3ModelArtifacts"].split("/", 3)[3]
    model = members(s3, bucket_of, key)
    assert model["written.txt"] == b"written by the container"
    assert model["leak"].issym() and model["leak"].linkname == str(secret)  # the link, as tar keeps it
    output = members(s3, bucket_of, key.replace("model.tar.gz", "output.tar.gz"))
    assert output["leak"].issym()
    assert not any(
        isinstance(value, bytes) and SECRET.encode() in value for value in [*model.values(), *output.values()]
    )


def test_links_are_not_uploaded_without_compression(scripted, bucket_of, secret):
    s3 = scripted[0].client("s3")
    done = run_job(
        scripted,
        bucket_of,
        {"LINK_TO": str(secret)},
        OutputDataConfig={"S3OutputPath": f"s3://{bucket_of}/jobs", "CompressionType": "NONE"},
    )
    assert done["TrainingJobStatus"] == "Completed", done.get("FailureReason")
    prefix = done["ModelArtifacts"]["S3ModelArtifacts"].split("/", 3)[3]
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket_of, Prefix=prefix)["Contents"]]
    assert keys == [prefix + "written.txt"]  # S3 has no links: the link is left out, not followed


def test_a_model_folder_replaced_by_a_link_uploads_nothing_of_the_link_target(scripted, bucket_of, secret):
    s3 = scripted[0].client("s3")
    done = run_job(scripted, bucket_of, {"MODEL_DIR_LINK_TO": str(secret.parent)})
    assert done["TrainingJobStatus"] == "Completed", done.get("FailureReason")
    key = done["ModelArtifacts"]["S3ModelArtifacts"].split("/", 3)[3]
    assert members(s3, bucket_of, key) == {}


def test_a_checkpoint_folder_replaced_by_a_link_deletes_no_checkpoint(scripted, bucket_of, secret):
    """The sync sees no files in a folder that is now a link: what it restored or sent stays in S3,
    and nothing of the link's target is uploaded."""
    s3 = scripted[0].client("s3")
    prefix = unique("ckpt")
    s3.put_object(Bucket=bucket_of, Key=f"{prefix}/epoch-1.pt", Body=b"restored")
    done = run_job(
        scripted,
        bucket_of,
        {"CHECKPOINT_DIR_LINK_TO": str(secret.parent)},
        CheckpointConfig={"S3Uri": f"s3://{bucket_of}/{prefix}"},
    )
    assert done["TrainingJobStatus"] == "Completed", done.get("FailureReason")
    listed = s3.list_objects_v2(Bucket=bucket_of, Prefix=f"{prefix}/").get("Contents", [])
    assert [o["Key"] for o in listed] == [f"{prefix}/epoch-1.pt"]


def test_a_failure_file_that_is_a_link_is_not_read(scripted, bucket_of, secret):
    done = run_job(scripted, bucket_of, {"LINK_TO": str(secret), "FAIL": "1"})
    assert done["TrainingJobStatus"] == "Failed"
    assert SECRET not in done["FailureReason"]
    assert done["FailureReason"] == "AlgorithmError: See job logs for more information, exit code: 1"


# --- StopTrainingJob ----------------------------------------------------------------------


def test_what_the_container_saves_on_sigterm_is_uploaded(scripted, bucket_of):
    """Stopped once the algorithm waits (its handler in place), as a user may: SIGTERM reaches it, and
    what it saves is uploaded. ("Training" alone is not enough: a container runs before its interpreter
    has started.)"""
    server, image = scripted
    sm, s3, logs = server.client("sagemaker"), server.client("s3"), server.client("logs")
    name = unique("sigterm")
    sm.create_training_job(
        **training_request(
            name, image, {}, f"s3://{bucket_of}/jobs", {}, Environment={"WAIT_FOR_SIGTERM": "1", "SIGTERM_WORK": "3"}
        )
    )

    def waiting() -> bool:
        try:
            return bool(
                logs.filter_log_events(
                    logGroupName="/aws/sagemaker/TrainingJobs",
                    logStreamNamePrefix=name,
                    filterPattern='"waiting for SIGTERM"',
                )["events"]
            )
        except logs.exceptions.ResourceNotFoundException:
            return False

    wait_until(waiting, timeout=300, waiting_for="the trainer's 'waiting for SIGTERM'")
    sm.stop_training_job(TrainingJobName=name)
    done = wait_for_training(sm, name, timeout=120)
    assert done["TrainingJobStatus"] == "Stopped"
    key = done["ModelArtifacts"]["S3ModelArtifacts"].split("/", 3)[3]
    model = members(s3, bucket_of, key)
    assert model.get("on-sigterm.txt") == b"saved on SIGTERM", sorted(model)
    assert model["written.txt"] == b"written by the container"


@pytest.mark.slow
def test_a_job_stopped_before_its_containers_run_ends_stopped_untrained(localaws_process, tmp_path):
    """Stopped while its instances start, the algorithm never runs. Deterministically so: the job's image
    is a build context whose Python environment is being built by someone else sharing localaws's cache
    (this test holds the builder's lock), so the job cannot get past Starting until the stop is in."""
    import fcntl
    import hashlib
    import shutil
    import sys

    from localaws.client import register_image
    from localaws.settings import Settings
    from ml_pipeline.images import context_hash

    context = tmp_path / "context"
    shutil.copytree(SCRIPTED_TRAINER, context)
    requirements = f"# {unique('an environment of its own')}\n".encode()
    (context / "requirements.txt").write_bytes(requirements)
    image = ecr_uri("scripted-building", context_hash(context))
    register_image(localaws_process.endpoint_url, image, context)
    venvs = Settings().cache_dir / "venvs"  # as the process runner keys its environments
    key = hashlib.sha256(requirements + sys.version.encode()).hexdigest()[:16]
    venvs.mkdir(parents=True, exist_ok=True)
    sm = localaws_process.client("sagemaker")
    bucket = unique("early-stop")
    localaws_process.client("s3").create_bucket(Bucket=bucket)
    name = unique("early-stop")
    try:
        with open(venvs / f"{key}.lock", "w") as building:
            fcntl.flock(building, fcntl.LOCK_EX)
            sm.create_training_job(
                **training_request(name, image, {}, f"s3://{bucket}/jobs", {}, Environment={"WAIT_FOR_SIGTERM": "1"})
            )
            assert sm.describe_training_job(TrainingJobName=name)["SecondaryStatus"] == "Starting"
            sm.stop_training_job(TrainingJobName=name)
        done = wait_for_training(sm, name, timeout=300)
    finally:
        shutil.rmtree(venvs / key, ignore_errors=True)
        (venvs / f"{key}.lock").unlink(missing_ok=True)
    assert (done["TrainingJobStatus"], done["SecondaryStatus"]) == ("Stopped", "Stopped")
    assert [t["Status"] for t in done["SecondaryStatusTransitions"]] == ["Starting", "Stopping", "Stopped"]
    assert "ModelArtifacts" not in done
