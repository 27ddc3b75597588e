"""Paths someone else names, kept inside their folder, under both runners: S3 keys of channels,
checkpoints and model data with ``..`` in them, hostile model archives, and links a container
leaves in /opt/ml pointing at this machine's files. Also what a container saves on SIGTERM.

The trainer is a small stand-in image (tests/localaws/images/scripted-trainer) told what to do
by its job's Environment; training itself is not what these tests are about."""
from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from tests.conftest import unique
from tests.fixtures.docker_engine import ecr_uri
from tests.localaws.hosting_support import deploy, delete_quietly
from tests.support import ROLE_ARN, training_request, wait_for_training

pytestmark = pytest.mark.timeout(900)

SCRIPTED = Path(__file__).parent / "images" / "scripted-trainer"
SECRET = "a file of the machine running localaws"


@pytest.fixture(scope="module", params=["process", pytest.param("docker", marks=pytest.mark.docker)])
def scripted(request):
    """(localaws, the scripted trainer's image URI) under each runner."""
    from localaws.client import register_image
    from ml_pipeline.images import context_hash

    server = request.getfixturevalue(f"localaws_{request.param}")
    if request.param == "docker":
        from tests.fixtures.docker_engine import build_and_push

        engine = request.getfixturevalue("docker_engine")
        image = build_and_push(request.getfixturevalue("docker_client"), SCRIPTED, "scripted-trainer",
                               engine["registry"], base_image=engine["base_image"])
    else:
        image = ecr_uri("scripted-trainer", context_hash(SCRIPTED))
        register_image(server.endpoint_url, image, SCRIPTED)
    return server, image


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
    sm.create_training_job(**training_request(name, image, channels or {}, f"s3://{bucket}/jobs", {},
                                              Environment=env, **extra))
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
    for hostile in (escaping_key("ckpt/run/", tmp_path / "by-dots"),
                    "ckpt/run/" + str(tmp_path / "absolute")):  # "ckpt/run/" + "/tmp/...": an absolute path
        prefix = unique("ckpt")
        key = hostile.replace("ckpt/run/", f"{prefix}/", 1)
        s3.put_object(Bucket=bucket_of, Key=key, Body=b"written outside")
        done = run_job(scripted, bucket_of, {}, CheckpointConfig={"S3Uri": f"s3://{bucket_of}/{prefix}"})
        assert done["TrainingJobStatus"] == "Failed"
        assert done["FailureReason"].startswith("ClientError: Checkpoint restore failed:"), done["FailureReason"]
        assert f"s3://{bucket_of}/{key}" in done["FailureReason"]
    assert list(tmp_path.iterdir()) == []


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
    return buffer.getvalue()


@pytest.mark.parametrize("kind", ["dot-dot", "absolute", "link-out", "device", "prefix-key"])
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
            sm.create_model(ModelName=f"{name}-m", ExecutionRoleArn=ROLE_ARN, PrimaryContainer={
                "Image": image, "ModelDataSource": {"S3DataSource": {
                    "S3Uri": f"s3://{bucket_of}/{name}/model/", "S3DataType": "S3Prefix", "CompressionType": "None"}}})
            sm.create_endpoint_config(EndpointConfigName=f"{name}-c", ProductionVariants=[{
                "VariantName": "AllTraffic", "ModelName": f"{name}-m", "InstanceType": "ml.m5.large",
                "InitialInstanceCount": 1}])
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
    assert not any(isinstance(value, bytes) and SECRET.encode() in value for value in [*model.values(), *output.values()])


def test_links_are_not_uploaded_without_compression(scripted, bucket_of, secret):
    s3 = scripted[0].client("s3")
    done = run_job(scripted, bucket_of, {"LINK_TO": str(secret)},
                   OutputDataConfig={"S3OutputPath": f"s3://{bucket_of}/jobs", "CompressionType": "NONE"})
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


def test_a_failure_file_that_is_a_link_is_not_read(scripted, bucket_of, secret):
    done = run_job(scripted, bucket_of, {"LINK_TO": str(secret), "FAIL": "1"})
    assert done["TrainingJobStatus"] == "Failed"
    assert SECRET not in done["FailureReason"]
    assert done["FailureReason"] == "AlgorithmError: See job logs for more information, exit code: 1"


# --- StopTrainingJob ----------------------------------------------------------------------


def test_what_the_container_saves_on_sigterm_is_uploaded(scripted, bucket_of):
    """Stopped the moment it shows Training, as a user may: SIGTERM reaches the algorithm, which saves."""
    server, image = scripted
    sm, s3 = server.client("sagemaker"), server.client("s3")
    name = unique("sigterm")
    sm.create_training_job(**training_request(name, image, {}, f"s3://{bucket_of}/jobs", {},
                                              Environment={"WAIT_FOR_SIGTERM": "1", "SIGTERM_WORK": "3"}))
    wait_for_training(sm, name, until=("Training",), timeout=300, poll=0.02)
    sm.stop_training_job(TrainingJobName=name)
    done = wait_for_training(sm, name, timeout=120)
    assert done["TrainingJobStatus"] == "Stopped"
    key = done["ModelArtifacts"]["S3ModelArtifacts"].split("/", 3)[3]
    model = members(s3, bucket_of, key)
    assert model.get("on-sigterm.txt") == b"saved on SIGTERM", sorted(model)
    assert model["written.txt"] == b"written by the container"


def test_a_job_stopped_before_its_containers_run_ends_stopped_untrained(scripted, bucket_of):
    server, image = scripted
    sm = server.client("sagemaker")
    name = unique("early-stop")
    sm.create_training_job(**training_request(name, image, {}, f"s3://{bucket_of}/jobs", {},
                                              Environment={"WAIT_FOR_SIGTERM": "1"}))
    sm.stop_training_job(TrainingJobName=name)
    done = wait_for_training(sm, name, timeout=120)
    assert (done["TrainingJobStatus"], done["SecondaryStatus"]) == ("Stopped", "Stopped")
    assert "Training" not in [t["Status"] for t in done["SecondaryStatusTransitions"]]
    assert "ModelArtifacts" not in done
