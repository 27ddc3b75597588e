"""Batch transform's figure: a transform job of 10,000 one-line records through localaws against the
same records posted straight to the model container's /invocations, with the same batching, in one run.

The model is the digits image's own ``serve`` (gunicorn, one worker) with a digits model (the hosting
tests' constant model: real weights, the same work for any input) under the process runner. The
records are 10,000 CSV lines of 64 pixel values (the held-out digits, repeated), one object in S3.

- Through localaws: ``CreateTransformJob`` to ``Completed`` as a client sees it (``DescribeTransformJob``
  every 50 ms): the container started, /ping, /execution-parameters, the object read from S3, split
  and batched, the requests, the output uploaded to S3, the container stopped.
- Directly: the same ``serve`` started by hand with the same interpreter, model folder and
  environment, /ping every 20 ms, /execution-parameters, the same file read from local disk and cut
  into the same payloads (``records.payloads``: the same MultiRecord payloads, the same
  concurrency, through the same lean HTTP client with kept-alive connections: ``http.client`` costs
  0.4 ms of CPU a request here, the model's cores' to lose), the answers written to a local file in
  order, the server stopped.

Both outputs must be the same bytes. Rounds alternate (direct, localaws, ...) and the ratio is the
median of each localaws round against the direct round before it. Two batchings: MultiRecord within
MaxPayloadInMB 1 (the headline: 2 requests), and SingleRecord (10,000 requests), both with
MaxConcurrentTransforms 2. Goal: at most 1.2 x direct.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONTEXT = ROOT / "experiments" / "digits"
RECORDS = 10_000
CASES = {
    "multi_record": {"BatchStrategy": "MultiRecord", "MaxPayloadInMB": 1, "MaxConcurrentTransforms": 2},
    "single_record": {"BatchStrategy": "SingleRecord", "MaxPayloadInMB": 1, "MaxConcurrentTransforms": 2},
}
ENV = {"SAGEMAKER_MODEL_SERVER_WORKERS": "1"}
_STRATEGY = {"MultiRecord": "MULTI_RECORD", "SingleRecord": "SINGLE_RECORD"}


def _records() -> bytes:
    from tests.fixtures import digits_example

    features, _ = digits_example.held_out(seed=11)
    rows = [features[index % len(features)] for index in range(RECORDS)]
    return "".join(",".join(str(int(v)) for v in row) + "\n" for row in rows).encode()


def _free_port() -> int:
    from localaws.sagemaker.runners.hosts import free_port

    return free_port()


def _get(port: int, path: str) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as answer:
            return answer.status
    except Exception:  # noqa: BLE001 - not up yet, or no such path
        return 0


def run_direct(python: Path, model_dir: Path, input_file: Path, params: dict, tmp: Path) -> tuple[float, bytes, dict]:
    """Seconds from starting ``serve`` to its exit after the last answer was written, the output, phases."""
    from localaws.sagemaker.hosting.upstream import ConnectionPool
    from localaws.sagemaker.transform import records

    root = tmp / "opt-ml"
    shutil.rmtree(root, ignore_errors=True)
    shutil.copytree(model_dir, root / "model")
    port = _free_port()
    env = {
        "PATH": f"{python.parent}{os.pathsep}{os.environ['PATH']}",
        "HOME": os.environ.get("HOME", "/root"),
        "SAGEMAKER_BASE_DIR": str(root),
        "SAGEMAKER_BIND_TO_PORT": str(port),
        "SAGEMAKER_BATCH": "true",
        "SAGEMAKER_MAX_CONCURRENT_TRANSFORMS": str(params["MaxConcurrentTransforms"]),
        "SAGEMAKER_BATCH_STRATEGY": _STRATEGY[params["BatchStrategy"]],
        "SAGEMAKER_MAX_PAYLOAD_IN_MB": str(params["MaxPayloadInMB"]),
        **ENV,
    }
    output = tmp / "direct.out"
    started = time.monotonic()
    process = subprocess.Popen(
        [str(python), str(CONTEXT / "serve")],
        cwd=CONTEXT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        while _get(port, "/ping") != 200:
            if process.poll() is not None:
                raise RuntimeError("serve exited before answering /ping")
            time.sleep(0.02)
        healthy = time.monotonic()
        _get(port, "/execution-parameters")  # asked as SageMaker asks it (digits answers 404)
        # The same lean HTTP/1.1 client the job's requests use (kept-alive connections, one per thread at
        # most): a client of its own's CPU would be the machine's, not localaws's, to spend.
        pool = ConnectionPool(port, 2.0, 600.0, max_idle=params["MaxConcurrentTransforms"])
        headers = {"Content-Type": "text/csv", "Accept": "text/csv"}

        def post(body: bytes) -> bytes:
            answer = pool.request("POST", "/invocations", headers, body)
            if answer.status != 200:
                raise RuntimeError(f"/invocations answered {answer.status}: {answer.data[:200]!r}")
            return answer.data

        with open(input_file, "rb") as stream, open(output, "wb") as out:
            bodies = (
                body
                for body, _ in records.payloads(
                    records.split(stream, "Line"), params["BatchStrategy"], params["MaxPayloadInMB"]
                )
            )
            with ThreadPoolExecutor(max_workers=params["MaxConcurrentTransforms"]) as threads:
                for data in threads.map(post, bodies):  # in order, as the job assembles them
                    out.write(data if data.endswith(b"\n") else data + b"\n")
        answered = time.monotonic()
        pool.close()  # as a job closes its idle connections before SIGTERM
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(60)
    ended = time.monotonic()
    phases = {
        "start_to_ping_ok": round(healthy - started, 3),
        "requests": round(answered - healthy, 3),
        "stop": round(ended - answered, 3),
    }
    return ended - started, output.read_bytes(), phases


def run_localaws(server, name: str, model: str, bucket: str, params: dict) -> tuple[float, bytes, dict]:
    sm, s3 = server.client("sagemaker"), server.client("s3")
    started = time.monotonic()
    sm.create_transform_job(
        TransformJobName=name,
        ModelName=model,
        **params,
        TransformInput={
            "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": f"s3://{bucket}/in/"}},
            "ContentType": "text/csv",
            "SplitType": "Line",
        },
        TransformOutput={"S3OutputPath": f"s3://{bucket}/out/{name}/", "Accept": "text/csv", "AssembleWith": "Line"},
        TransformResources={"InstanceType": "ml.m5.large", "InstanceCount": 1},
    )
    while True:
        described = sm.describe_transform_job(TransformJobName=name)
        if described["TransformJobStatus"] not in ("InProgress", "Stopping"):
            break
        time.sleep(0.05)
    elapsed = time.monotonic() - started
    assert described["TransformJobStatus"] == "Completed", described.get("FailureReason")
    created, start, end = (
        described[key].timestamp() for key in ("CreationTime", "TransformStartTime", "TransformEndTime")
    )
    phases = {"create_to_start": round(start - created, 3), "start_to_end": round(end - start, 3)}
    body = s3.get_object(Bucket=bucket, Key=f"out/{name}/records.csv.out")["Body"].read()
    return elapsed, body, phases


def transform_benchmark(tmp: Path, rounds: int = 3) -> dict:
    sys.path[:0] = [str(ROOT), str(ROOT / "plugins")]
    from localaws.client import register_image
    from localaws.sagemaker.runners.process import VirtualEnvs
    from localaws.settings import Settings
    from ml_pipeline.images import context_hash
    from tests.conftest import LocalAWSProcess
    from tests.localaws.hosting_support import constant_model, model_tarball
    from tests.support import ROLE_ARN

    model_dir = constant_model(tmp / "model", 3)
    input_file = tmp / "records.csv"
    input_file.write_bytes(_records())
    python = VirtualEnvs(Settings().cache_dir / "venvs").for_context(CONTEXT)
    server = LocalAWSProcess(tmp, "process").start()
    figures: dict = {}
    try:
        image = f"123456789012.dkr.ecr.us-east-1.amazonaws.com/digits-training:{context_hash(CONTEXT)}"
        register_image(server.endpoint_url, image, CONTEXT)
        s3, sm = server.client("s3"), server.client("sagemaker")
        bucket = "bench-transform"
        s3.create_bucket(Bucket=bucket)
        s3.put_object(Bucket=bucket, Key="model/model.tar.gz", Body=model_tarball(model_dir))
        s3.put_object(Bucket=bucket, Key="in/records.csv", Body=input_file.read_bytes())
        sm.create_model(
            ModelName="bench-transform",
            ExecutionRoleArn=ROLE_ARN,
            PrimaryContainer={"Image": image, "ModelDataUrl": f"s3://{bucket}/model/model.tar.gz", "Environment": ENV},
        )
        # Warm-up: the model data fetched and unpacked once, caches filled; not timed.
        run_localaws(server, "bench-warm-up", "bench-transform", bucket, CASES["multi_record"])
        for case, params in CASES.items():
            direct, through, direct_phases, through_phases = [], [], [], []
            for index in range(rounds):
                seconds, expected, phases = run_direct(python, model_dir, input_file, params, tmp)
                direct.append(seconds)
                direct_phases.append(phases)
                name = f"bench-{case.replace('_', '-')}-{index}"
                seconds, got, phases = run_localaws(server, name, "bench-transform", bucket, params)
                assert got == expected, f"{case}: the job's output differs from the direct run's"
                through.append(seconds)
                through_phases.append(phases)
            ratios = [t / d for d, t in zip(direct, through, strict=True)]
            figures[case] = {
                "params": params,
                "requests": RECORDS if params["BatchStrategy"] == "SingleRecord" else None,
                "direct_seconds": [round(x, 3) for x in direct],
                "localaws_seconds": [round(x, 3) for x in through],
                "ratio_median": round(statistics.median(ratios), 3),
                "direct_phases": direct_phases,
                "localaws_phases": through_phases,
            }
    finally:
        server.stop()
    return {
        "runner": "process",
        "records": RECORDS,
        "model": "experiments/digits serve (gunicorn, 1 worker), a digits model",
        "ratio": figures["multi_record"]["ratio_median"],
        "goal": "<= 1.2 (CreateTransformJob to Completed vs serve started, fed and stopped by hand)",
        **figures,
    }


if __name__ == "__main__":  # python benchmarks/transform.py: these figures alone
    with tempfile.TemporaryDirectory() as directory:
        print(json.dumps(transform_benchmark(Path(directory), int(os.environ.get("BENCH_ROUNDS", "3"))), indent=2))
