"""The shared runner's figures (docker runner), each beside the bare path in the same run.

One bring-your-own image (``benchmarks/images/byo``: a ``train`` that works for a fixed 3 s, a
``serve`` answering one-row JSON), three figures:

- ``training``: CreateTrainingJob to Completed (model.tar.gz in S3) through localaws, against the
  bench doing the job by hand: an /opt/ml tree laid out (config files, the channel copied), a bare
  ``docker run --rm <image> train``, the model tarred and uploaded to the same S3. Goal: <= 1.05x.
- ``endpoint``: CreateEndpoint to the first successful InvokeEndpoint. Goal: <= 1.5 s. Beside it the
  bare path: ``docker run -d -p ... <image> serve`` to the first answer of its /invocations.
- ``invocation``: the median InvokeEndpoint through localaws against the same one-row request sent
  straight to the container's /invocations, the same client both ways (a requests.Session), request
  by request alternating so drift falls on both; beside it the same through boto3, and what boto3's
  client costs by itself. Every client keeps its connection alive (the connections each opened are
  written beside the figure). Goal: <= 1.3x.

Alone: ``.venv/bin/python benchmarks/run.py --only runner``.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONTEXT = ROOT / "benchmarks" / "images" / "byo"
REGISTRY = "127.0.0.1:5000"
WORK_SECONDS = "3"
ROW = json.dumps([[1, 2, 3, 4, 5, 6, 7, 8]])
#: How often both endpoint clients try (DescribeEndpoint's waiter asks every 30 s; the SageMaker SDK's
#: local mode every 5 s): each try of boto3's costs the CPU a starting server needs on 2 cores.
POLL_SECONDS = 0.05


def _image(client) -> tuple[str, str]:
    """The byo image built and pushed: its ECR-style URI (what localaws runs) and its local name."""
    from ml_pipeline.images import context_hash
    from tests.fixtures.docker_engine import build_and_push

    uri = build_and_push(client, CONTEXT, "bench-byo", REGISTRY, untag_uri=False)
    return uri, f"{REGISTRY}/bench-byo:{context_hash(CONTEXT)}"


def _channel(tmp: Path) -> Path:
    data = tmp / "byo-data"
    data.mkdir(exist_ok=True)
    for index in range(4):
        (data / f"part-{index}.csv").write_text("".join(f"{index},{row},{row * row}\n" for row in range(5000)))
    return data


def bare_training(tmp: Path, s3, bucket: str, data: Path, image: str, index: int) -> float:
    """The job by hand: layout, channel copied, docker run, model tarred and uploaded."""
    from localaws.sagemaker.contract import OPT_ML, HostConfig, Layout

    started = time.monotonic()
    layout = Layout(tmp / f"bare-{index}")
    layout.create(["train"])
    for path in data.iterdir():
        shutil.copyfile(path, layout.channel("train") / path.name)
    config = HostConfig(
        job_name=f"bare-{index}",
        job_arn=f"arn:aws:sagemaker:us-east-1:123456789012:training-job/bare-{index}",
        current_host="algo-1",
        hosts=["algo-1"],
        hyperparameters={"work_seconds": WORK_SECONDS},
        channels={
            "train": {"TrainingInputMode": "File", "S3DistributionType": "FullyReplicated", "RecordWrapperType": "None"}
        },
        instance_type="ml.m5.large",
        num_cpus=os.cpu_count() or 1,
    )
    config.write_config_files(layout)
    env = [arg for key, value in config.environment(Layout(Path(OPT_ML))).items() for arg in ("-e", f"{key}={value}")]
    subprocess.run(
        ["docker", "run", "--rm", "-v", f"{layout.root.resolve()}:{OPT_ML}", *env, image, "train"],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w:gz") as tar:
        for path in sorted(layout.model.iterdir()):
            tar.add(path, arcname=path.name)
    s3.put_object(Bucket=bucket, Key=f"bare/{index}/model.tar.gz", Body=archive.getvalue())
    elapsed = time.monotonic() - started
    shutil.rmtree(layout.root, ignore_errors=True)
    return elapsed


def localaws_training(sm, bucket: str, image: str, index: int) -> tuple[float, dict]:
    from tests.support import training_request

    name = f"bench-byo-{int(time.time())}-{index}"
    request = training_request(
        name, image, {"train": f"s3://{bucket}/data/"}, f"s3://{bucket}/jobs", {"work_seconds": WORK_SECONDS}
    )
    started = time.monotonic()
    sm.create_training_job(**request)
    while True:  # a client polling as closely as it likes: what it sees is localaws's own latency
        description = sm.describe_training_job(TrainingJobName=name)
        if description["TrainingJobStatus"] in ("Completed", "Failed", "Stopped"):
            break
        time.sleep(0.01)
    elapsed = time.monotonic() - started
    assert description["TrainingJobStatus"] == "Completed", description.get("FailureReason")
    return elapsed, description


def _ready(url: str, body: bytes | None, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            if time.monotonic() > deadline:
                raise
        time.sleep(POLL_SECONDS)


def bare_endpoint(tmp: Path, image: str, model: Path, index: int) -> float:
    """docker run <image> serve with the model mounted, to the first answer of /invocations (tried every 50 ms)."""
    from tests.conftest import free_port

    port = free_port()
    name = f"localaws-bench-bare-serve-{os.getpid()}-{index}"
    started = time.monotonic()
    subprocess.run(
        [
            "docker",
            "run",
            "-d",
            "--rm",
            "--name",
            name,
            "-p",
            f"127.0.0.1:{port}:8080",
            "-v",
            f"{model.resolve()}:/opt/ml/model",
            image,
            "serve",
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    try:
        _ready(f"http://127.0.0.1:{port}/invocations", ROW.encode())
        return time.monotonic() - started
    finally:
        subprocess.run(["docker", "rm", "-f", name], check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def localaws_endpoint(sm, runtime, config: str, name: str) -> float:
    """CreateEndpoint to the first InvokeEndpoint that succeeds (a client trying every 50 ms)."""
    started = time.monotonic()
    sm.create_endpoint(EndpointName=name, EndpointConfigName=config)
    while True:
        try:
            runtime.invoke_endpoint(EndpointName=name, Body=ROW, ContentType="application/json")
            return time.monotonic() - started
        except runtime.exceptions.ClientError as error:  # not serving yet (ValidationError, ...)
            if time.monotonic() - started > 120:
                raise
            if sm.describe_endpoint(EndpointName=name)["EndpointStatus"] == "Failed":
                raise RuntimeError(f"{name} failed: {error}") from None
        time.sleep(POLL_SECONDS)


def _timed(call) -> float:
    began = time.perf_counter()
    call()
    return time.perf_counter() - began


def _connections(pool_manager) -> int:
    return sum(pool.num_connections for pool in pool_manager.pools._container.values())


def invocations(runtime, endpoint_url: str, endpoint: str, port: int, rounds: int, count: int) -> dict:
    """One-row requests straight to the container and through localaws, one after the other, request by
    request, so that the load others put on a shared machine falls on all alike; a median per round of
    ``count`` each.

    The same client both ways (a requests.Session; the InvokeEndpoint request SigV4-signed as botocore
    signs it, the signature made once a second as its X-Amz-Date changes) is the gateway's figure;
    boto3's own client beside it adds what boto3 itself costs over requests (``boto3_client_ms``:
    both clients against the container's own server, no localaws)."""
    import requests
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    session = requests.Session()
    direct_url = f"http://127.0.0.1:{port}/invocations"
    gateway_url = f"{endpoint_url}/endpoints/{endpoint}/invocations"
    headers = {"Content-Type": "application/json"}
    signed: list = [None, None]

    def signature() -> dict:
        now = int(time.time())
        if signed[0] != now:
            request = AWSRequest(method="POST", url=gateway_url, data=ROW, headers=dict(headers))
            SigV4Auth(Credentials("testing", "testing"), "sagemaker", "us-east-1").add_auth(request)
            signed[:] = [now, dict(request.headers)]
        return signed[1]

    def direct():
        response = session.post(direct_url, data=ROW, headers=headers)
        assert response.status_code == 200, response.text

    def gateway():
        response = session.post(gateway_url, data=ROW, headers=signature())
        assert response.status_code == 200, response.text

    def through_boto3():
        runtime.invoke_endpoint(EndpointName=endpoint, Body=ROW, ContentType="application/json")["Body"].read()

    for _ in range(50):  # warm all three: connections, the first requests
        direct(), gateway(), through_boto3()
    figures: dict[str, list[float]] = {"direct": [], "localaws": [], "localaws_boto3": []}
    for _ in range(rounds):
        triples = [(_timed(direct), _timed(gateway), _timed(through_boto3)) for _ in range(count)]
        for index, key in enumerate(figures):
            figures[key].append(statistics.median(triple[index] for triple in triples) * 1000)

    def ratio(key: str) -> float:
        return round(statistics.median(y / x for x, y in zip(figures["direct"], figures[key], strict=True)), 3)

    return {
        **{f"{key}_median_ms": [round(x, 3) for x in values] for key, values in figures.items()},
        "ratio_median": ratio("localaws"),
        "boto3_ratio_median": ratio("localaws_boto3"),
        "connections_opened": {
            "requests_session_both_ways": _connections(session.get_adapter(direct_url).poolmanager),
            "boto3": _connections(runtime._endpoint.http_session._manager),
        },
        "client": "one-row JSON, kept-alive connections; ratio_median: the same requests.Session both ways; "
        "boto3_ratio_median: boto3's sagemaker-runtime through localaws against that direct figure; "
        f"{rounds} rounds of {count} (direct, localaws, localaws by boto3) triples",
        "goal": "<= 1.3",
    }


def boto3_client_ms(port: int, count: int = 400) -> dict:
    """What boto3's client costs over a requests.Session, without localaws: both at the container's server
    (which answers any path), alternating."""
    import boto3
    import requests

    session = requests.Session()
    runtime = boto3.client(
        "sagemaker-runtime",
        endpoint_url=f"http://127.0.0.1:{port}",
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )

    def by_requests():
        session.post(f"http://127.0.0.1:{port}/invocations", data=ROW, headers={"Content-Type": "application/json"})

    def by_boto3():
        runtime.invoke_endpoint(EndpointName="any", Body=ROW, ContentType="application/json")["Body"].read()

    for _ in range(50):
        by_requests(), by_boto3()
    pairs = [(_timed(by_requests), _timed(by_boto3)) for _ in range(count)]
    return {
        "requests_median_ms": round(statistics.median(a for a, _ in pairs) * 1000, 3),
        "boto3_median_ms": round(statistics.median(b for _, b in pairs) * 1000, 3),
    }


def runner_benchmark(tmp: Path, repeats: int = 3, rounds: int = 5, count: int = 400) -> dict:
    import docker

    from tests.conftest import LocalAWSProcess
    from tests.support import ROLE_ARN

    client = docker.from_env(timeout=600)
    uri, local_image = _image(client)
    data = _channel(tmp)
    server = LocalAWSProcess(tmp, "docker", LOCALAWS_REGISTRY=REGISTRY).start()
    try:
        s3, sm, runtime = server.client("s3"), server.client("sagemaker"), server.client("sagemaker-runtime")
        bucket = "bench-runner"
        s3.create_bucket(Bucket=bucket)
        for path in data.iterdir():
            s3.upload_file(str(path), bucket, f"data/{path.name}")
        # Warm-up, outside the timings: localaws pulls the image from the registry once.
        _, warm = localaws_training(sm, bucket, uri, 0)
        bare, through, phases = [], [], []
        for index in range(1, repeats + 1):
            bare.append(bare_training(tmp, s3, bucket, data, local_image, index))
            elapsed, description = localaws_training(sm, bucket, uri, index)
            through.append(elapsed)
            phases.append(
                {
                    t["Status"]: round(t["EndTime"].timestamp() - t["StartTime"].timestamp(), 3)
                    for t in description["SecondaryStatusTransitions"]
                    if "EndTime" in t
                }
            )
        training = {
            "work_seconds": float(WORK_SECONDS),
            "bare_docker_run_seconds": [round(x, 3) for x in bare],
            "localaws_seconds": [round(x, 3) for x in through],
            "ratio_median": round(statistics.median(through) / statistics.median(bare), 3),
            "goal": "<= 1.05",
            "phases_seconds": phases,
        }
        print(json.dumps(training, indent=2), flush=True)

        model_dir = tmp / "byo-model"
        model_dir.mkdir(exist_ok=True)
        bucket_key = warm["ModelArtifacts"]["S3ModelArtifacts"].split("/", 3)[3]
        with tarfile.open(fileobj=io.BytesIO(s3.get_object(Bucket=bucket, Key=bucket_key)["Body"].read())) as tar:
            tar.extractall(model_dir, filter="data")
        sm.create_model(
            ModelName="bench-byo",
            ExecutionRoleArn=ROLE_ARN,
            PrimaryContainer={"Image": uri, "ModelDataUrl": warm["ModelArtifacts"]["S3ModelArtifacts"]},
        )
        sm.create_endpoint_config(
            EndpointConfigName="bench-byo",
            ProductionVariants=[
                {
                    "VariantName": "AllTraffic",
                    "ModelName": "bench-byo",
                    "InstanceType": "ml.m5.large",
                    "InitialInstanceCount": 1,
                }
            ],
        )
        bare_first, first = [], []
        for index in range(repeats + 1):  # the first of each warms the model cache and the page cache
            bare_first.append(bare_endpoint(tmp, local_image, model_dir, index))
            name = f"bench-byo-{index}"
            first.append(localaws_endpoint(sm, runtime, "bench-byo", name))
            if index < repeats:
                sm.delete_endpoint(EndpointName=name)
        endpoint = {
            "bare_docker_run_to_first_answer_seconds": [round(x, 3) for x in bare_first[1:]],
            "create_endpoint_to_first_invocation_seconds": [round(x, 3) for x in first[1:]],
            "median_seconds": round(statistics.median(first[1:]), 3),
            # Against the bare path in the same run: what a busy machine adds falls on both.
            "ratio_to_bare_median": round(statistics.median(first[1:]) / statistics.median(bare_first[1:]), 3),
            "goal": "<= 1.5 s",
        }
        print(json.dumps(endpoint, indent=2), flush=True)

        with urllib.request.urlopen(
            f"{server.endpoint_url}/_localaws/endpoints/bench-byo-{repeats}", timeout=10
        ) as response:
            (instance,) = json.loads(response.read())["Instances"]
        # A client of its own: the connections it opens are the measurement's alone.
        port = instance["Containers"][0]["Port"]
        invocation = invocations(
            server.client("sagemaker-runtime"), server.endpoint_url, f"bench-byo-{repeats}", port, rounds, count
        )
        invocation["boto3_client_alone"] = boto3_client_ms(port)
        print(json.dumps(invocation, indent=2), flush=True)
        sm.delete_endpoint(EndpointName=f"bench-byo-{repeats}")
    finally:
        server.stop()
    return {"image": "benchmarks/images/byo", "training": training, "endpoint": endpoint, "invocation": invocation}


if __name__ == "__main__":  # python benchmarks/runner.py: these figures alone
    import tempfile

    sys.path[:0] = [str(ROOT), str(ROOT / "plugins")]
    with tempfile.TemporaryDirectory() as directory:
        print(json.dumps(runner_benchmark(Path(directory)), indent=2))
