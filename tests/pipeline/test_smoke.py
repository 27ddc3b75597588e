"""smoke.run against a real endpoint on localaws (process runner): the stand-in serving image
tests/localaws/images/misbehaving, deployed with the request builders, answers with what it received."""

from __future__ import annotations

import io
import json
import tarfile
import uuid
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from tests.localaws.hosting_support import delete_quietly, wait_endpoint
from tests.pipeline.steps_support import experiment, plan, write

MISBEHAVING = Path(__file__).resolve().parents[1] / "localaws" / "images" / "misbehaving"
SAMPLES = "5.1,3.5,1.4,0.2\n6.2,2.9,4.3,1.3\n"
CHECKS = """
import json

def check_echo(samples, response, accept):
    answer = json.loads(response)
    if answer["bytes_received"] != len(samples):
        raise AssertionError(f"the endpoint saw {answer['bytes_received']} bytes of {len(samples)}")
    return {"rows": samples.count(b"\\n"), "accept": accept, "served_by": answer["served_by"]}

def refuse(samples, response, accept):
    raise AssertionError("predictions out of range")

def not_a_dict(samples, response, accept):
    return [1, 2]
"""


def deploy(localaws_process, folder: Path, bucket: str, **environment) -> dict:
    """An endpoint of the stand-in image, made by the request builders from an ``image`` experiment."""
    from localaws.client import register_image  # tests may: the process runner needs the context
    from ml_pipeline import code
    from ml_pipeline import sagemaker_requests as requests
    from ml_pipeline.images import context_hash

    image = f"123456789012.dkr.ecr.us-east-1.amazonaws.com/misbehaving:{context_hash(MISBEHAVING)}"
    register_image(localaws_process.endpoint_url, image, MISBEHAVING)
    s3, sm = localaws_process.client("s3"), localaws_process.client("sagemaker")
    resolved = experiment(
        folder,
        image=image,
        deploy={
            "instance_type": "ml.m5.large",
            "smoke": {
                "content_type": "text/csv",
                "accept": "application/json",
                "samples": "smoke/samples.csv",
                "check": "checks:check_echo",
            },
        },
    )
    run = plan(resolved, bucket)
    made = code.resolve(None, s3, run)
    made["environment"].update(SAGEMAKER_MODEL_SERVER_WORKERS="1", **environment)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        archive.addfile(tarfile.TarInfo("empty"), io.BytesIO(b""))
    s3.put_object(Bucket=bucket, Key=f"{run['names']['model_prefix']}/model.tar.gz", Body=buffer.getvalue())
    sm.create_model(**requests.model(run, made, f"s3://{bucket}/{run['names']['model_prefix']}/model.tar.gz"))
    sm.create_endpoint_config(**requests.endpoint_config(run))
    sm.create_endpoint(**requests.endpoint(run))
    assert wait_endpoint(sm, run["names"]["endpoint"])["EndpointStatus"] == "InService"
    return run


@pytest.fixture(scope="module")
def bucket(localaws_process):
    name = f"smoke-{uuid.uuid4().hex[:12]}"
    localaws_process.client("s3").create_bucket(Bucket=name)
    return name


@pytest.fixture(scope="module")
def served(localaws_process, tmp_path_factory, bucket):
    folder = write(tmp_path_factory.mktemp("smoke") / "echo", {"smoke/samples.csv": SAMPLES, "checks.py": CHECKS})
    run = deploy(localaws_process, folder, bucket)
    yield run, localaws_process.client("sagemaker-runtime")
    delete_quietly(localaws_process.client("sagemaker"), run["names"]["endpoint"])


def with_smoke(run: dict, **smoke) -> dict:
    """A copy of ``run`` whose smoke test says ``smoke`` (None: without that key)."""
    changed = json.loads(json.dumps(run))
    settings = changed["experiment"]["deploy"]["smoke"]
    settings.update(smoke)
    changed["experiment"]["deploy"]["smoke"] = {key: value for key, value in settings.items() if value is not None}
    return changed


def test_the_samples_go_as_one_body_and_the_check_s_figures_come_back(served):
    from ml_pipeline import smoke

    run, runtime = served
    result = smoke.run(runtime, run)
    assert result["check"] == {"rows": 2, "accept": "application/json", "served_by": "misbehaving"}
    assert result["samples"] == "smoke/samples.csv" and result["samples_bytes"] == len(SAMPLES)
    assert result["variant"] == "AllTraffic"
    assert result["content_type"] == "text/csv" and result["response_content_type"] == "application/json"
    assert json.loads(result["response_preview"])["bytes_received"] == len(SAMPLES)
    assert 0 < result["latency_seconds"] < 30
    json.dumps(result)  # XCom carries it


def test_without_a_check_a_non_empty_200_passes(served):
    from ml_pipeline import smoke

    run, runtime = served
    result = smoke.run(runtime, with_smoke(run, check=None))
    assert result["check"] is None and result["response_bytes"] > 0


@pytest.mark.parametrize(
    "check, message",
    [
        ("checks:refuse", "checks:refuse refused the answer: AssertionError: predictions out of range"),
        ("checks:not_a_dict", "checks:not_a_dict returned list, not a dict or None"),
    ],
)
def test_a_check_that_raises_or_answers_nonsense_fails_the_smoke_test(served, check, message):
    from ml_pipeline import smoke

    run, runtime = served
    with pytest.raises(smoke.SmokeTestFailed, match=message):
        smoke.run(runtime, with_smoke(run, check=check))


def test_an_endpoint_that_errs_fails_the_smoke_test(localaws_process, tmp_path, bucket):
    """A non-200 answer is InvokeEndpoint's ModelError, with the container's status: the task fails on it."""
    from ml_pipeline import smoke

    run = deploy(
        localaws_process,
        write(tmp_path / "failing", {"smoke/samples.csv": SAMPLES, "checks.py": CHECKS}),
        bucket,
        INVOKE_STATUS="500",
    )
    try:
        with pytest.raises(ClientError) as error:
            smoke.run(localaws_process.client("sagemaker-runtime"), run)
        assert error.value.response["Error"]["Code"] == "ModelError"
        assert error.value.response["OriginalStatusCode"] == 500
    finally:
        delete_quietly(localaws_process.client("sagemaker"), run["names"]["endpoint"])


def test_samples_that_are_missing_empty_or_outside_the_folder_are_refused(served, tmp_path):
    from ml_pipeline import smoke

    run, runtime = served
    with pytest.raises(ValueError, match="deploy.smoke.samples: smoke/none.csv is not a file"):
        smoke.run(runtime, with_smoke(run, samples="smoke/none.csv"))
    with pytest.raises(ValueError, match="deploy.smoke.samples: ../../etc/passwd leads out of"):
        smoke.run(runtime, with_smoke(run, samples="../../etc/passwd"))
    (Path(run["experiment"]["folder"]) / "smoke" / "empty.csv").write_bytes(b"")
    with pytest.raises(ValueError, match="empty.csv is empty"):
        smoke.run(runtime, with_smoke(run, samples="smoke/empty.csv"))
    no_smoke = json.loads(json.dumps(run))
    no_smoke["experiment"]["deploy"].pop("smoke")
    with pytest.raises(ValueError, match="deploy.smoke.samples: no samples"):
        smoke.run(runtime, no_smoke)
