"""ECR lists localaws's images: a build context registered for the process runner (``register-image``) and
an image pushed to the local registry standing in for ECR are in ``ListImages``, ``DescribeImages`` and
``BatchGetImage``, and ``BatchDeleteImage`` deletes them where they are: a job naming a deleted image
fails as on AWS."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import pytest

from tests.conftest import unique
from tests.fixtures.docker_engine import ecr_uri, registry_has
from tests.fixtures.images import QUICK_TRAINER, SCRIPTED_TRAINER
from tests.support import training_request, wait_for_training

pytestmark = pytest.mark.timeout(300)


def files_size(context: Path) -> int:
    return sum(path.stat().st_size for path in context.rglob("*") if path.is_file() and "__pycache__" not in path.parts)


def run_job(server, image: str, data: dict) -> dict:
    sm = server.client("sagemaker")
    name = unique("ecr-job")
    channels = {"train": data["train"], "validation": data["validation"]}
    sm.create_training_job(**training_request(name, image, channels, f"s3://{data['bucket']}/jobs", {"epochs": "1"}))
    return wait_for_training(sm, name, timeout=120)


def stock_teardown(ecr, repository: str) -> None:
    """The provider's system test's delete_ecr_repository, call for call."""
    image_ids = ecr.list_images(repositoryName=repository)["imageIds"]
    ecr.batch_delete_image(
        repositoryName=repository, imageIds=[{"imageDigest": image["imageDigest"]} for image in image_ids]
    )
    ecr.delete_repository(repositoryName=repository)


def test_a_registered_image_is_listed_described_and_deleted(localaws_process, process_data):
    from localaws.client import register_image

    ecr = localaws_process.client("ecr")
    repository = unique("registered")
    ecr.create_repository(repositoryName=repository)
    before = time.time()
    v1, v2, other = ecr_uri(repository, "v1"), ecr_uri(repository, "v2"), ecr_uri(repository, "other")
    register_image(localaws_process.endpoint_url, v1, QUICK_TRAINER)
    register_image(localaws_process.endpoint_url, v2, QUICK_TRAINER)  # the same content: one image, two tags
    register_image(localaws_process.endpoint_url, other, SCRIPTED_TRAINER)

    ids = ecr.list_images(repositoryName=repository)["imageIds"]
    assert sorted(i["imageTag"] for i in ids) == ["other", "v1", "v2"]
    assert len({i["imageDigest"] for i in ids}) == 2
    details = {tuple(d["imageTags"]): d for d in ecr.describe_images(repositoryName=repository)["imageDetails"]}
    quick = details[("v1", "v2")]
    assert quick["imageSizeInBytes"] == files_size(QUICK_TRAINER)
    assert details[("other",)]["imageSizeInBytes"] == files_size(SCRIPTED_TRAINER)
    assert quick["imageManifestMediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert before - 1 <= quick["imagePushedAt"].timestamp() <= time.time() + 1
    # The digest is the manifest's, as a registry's is.
    got = ecr.batch_get_image(repositoryName=repository, imageIds=[{"imageTag": "v1"}])["images"][0]
    assert quick["imageDigest"] == "sha256:" + hashlib.sha256(got["imageManifest"].encode()).hexdigest()

    assert run_job(localaws_process, v1, process_data)["TrainingJobStatus"] == "Completed"
    deleted = ecr.batch_delete_image(repositoryName=repository, imageIds=[{"imageDigest": quick["imageDigest"]}])
    assert sorted(i["imageTag"] for i in deleted["imageIds"]) == ["v1", "v2"] and deleted["failures"] == []
    assert [i["imageTag"] for i in ecr.list_images(repositoryName=repository)["imageIds"]] == ["other"]
    failed = run_job(localaws_process, v2, process_data)
    assert failed["TrainingJobStatus"] == "Failed"
    assert failed["FailureReason"].startswith(f"ClientError: Requested image {v2} not found")

    stock_teardown(ecr, repository)
    assert repository not in [r["repositoryName"] for r in ecr.describe_repositories()["repositories"]]
    assert not _registered(localaws_process, other)


def test_registering_into_a_missing_repository_creates_it_and_a_new_push_moves_the_tag(localaws_process):
    from localaws.client import register_image

    ecr = localaws_process.client("ecr")
    repository = unique("pushed-on")
    uri = ecr_uri(repository, "latest")
    register_image(localaws_process.endpoint_url, uri, QUICK_TRAINER)
    assert (
        ecr.describe_repositories(repositoryNames=[repository])["repositories"][0]["repositoryUri"]
        == (uri.rsplit(":", 1)[0])
    )
    first = ecr.describe_images(repositoryName=repository, imageIds=[{"imageTag": "latest"}])["imageDetails"][0]
    register_image(localaws_process.endpoint_url, uri, SCRIPTED_TRAINER)
    now = ecr.describe_images(repositoryName=repository, imageIds=[{"imageTag": "latest"}])["imageDetails"][0]
    assert now["imageDigest"] != first["imageDigest"]
    assert [i["imageDigest"] for i in ecr.list_images(repositoryName=repository)["imageIds"]] == [now["imageDigest"]]
    stock_teardown(ecr, repository)


def _registered(server, uri: str) -> bool:
    import json
    import urllib.request

    with urllib.request.urlopen(server.endpoint_url + "/_localaws/images", timeout=10) as answer:
        return uri in json.loads(answer.read())


@pytest.mark.docker
def test_an_image_pushed_to_the_registry_is_listed_and_deleted_there(
    request, localaws_docker, docker_engine, docker_client
):
    from tests.fixtures import digits_example
    from tests.fixtures.images import image_for

    bucket = unique("ecr-data")
    localaws_docker.client("s3").create_bucket(Bucket=bucket)
    data = {"bucket": bucket, **digits_example.write_channels(localaws_docker.client("s3"), bucket, "digits", seed=7)}

    source = image_for(request, localaws_docker, QUICK_TRAINER, "quick-trainer")  # in the registry already
    registry = docker_engine["registry"]
    repository, tag = unique("pushed"), "v1"
    source_local = f"{registry}/quick-trainer:{source.rsplit(':', 1)[1]}"
    if not docker_client.images.list(name=source_local):
        docker_client.images.pull(source_local)
    docker_client.images.get(source_local).tag(f"{registry}/{repository}", tag=tag)
    for line in docker_client.images.push(f"{registry}/{repository}", tag=tag, stream=True, decode=True):
        assert "error" not in line, line
    docker_client.images.remove(f"{registry}/{repository}:{tag}", noprune=True)

    ecr = localaws_docker.client("ecr")
    ecr.create_repository(repositoryName=repository)
    uri = ecr_uri(repository, tag)
    (detail,) = ecr.describe_images(repositoryName=repository)["imageDetails"]
    assert detail["imageTags"] == [tag]
    assert detail["imageManifestMediaType"] == "application/vnd.docker.distribution.manifest.v2+json"
    manifest = ecr.batch_get_image(repositoryName=repository, imageIds=[{"imageTag": tag}])["images"][0]
    assert detail["imageDigest"] == "sha256:" + hashlib.sha256(manifest["imageManifest"].encode()).hexdigest()
    import json

    layers = json.loads(manifest["imageManifest"])["layers"]
    assert detail["imageSizeInBytes"] == sum(layer["size"] for layer in layers) > 0

    done = run_job(localaws_docker, uri, data)  # pulled from the registry, tagged in the engine
    assert done["TrainingJobStatus"] == "Completed", done.get("FailureReason")
    stock_teardown(ecr, repository)
    assert not registry_has(registry, repository, tag)
    failed = run_job(localaws_docker, uri, data)
    assert failed["TrainingJobStatus"] == "Failed"
    assert failed["FailureReason"].startswith("ClientError: ") and uri in failed["FailureReason"]
