"""Hosting's figures: InvokeEndpoint through the gateway against calling the serving process
directly, in one run, and the seconds from CreateEndpoint to InService.

The model is a real training job's (the quick preset), served by the image's own ``serve``
(gunicorn). Both targets get the same load from the same client: closed-loop
keep-alive connections from a client process of its own; through the gateway each request is
an InvokeEndpoint signed with SigV4 (the signature botocore computes, without botocore's request
objects), directly it is the container's ``POST /invocations``. Rounds alternate (direct, gateway,
direct, gateway, ...) and each ratio is the median of each gateway round against the direct round
before it, so drift on a shared machine falls on both. The headline is one JSON row per request
(where the gateway's own cost weighs most); a batch of 32 rows is measured too.

Two layouts of the machine's CPUs, measured one after the other, each on an endpoint of its own
whose model server runs one worker per core it gets (the image's rule):

- ``own_cores`` (the headline): the model's instance runs on CPUs of its own, the client and
  localaws on the others, as on AWS, where an endpoint's instance has its vCPUs to itself and
  neither the caller nor the runtime front end runs on them. This asks whether the gateway
  limits what the model serves.
- ``shared_cores``: everything on every CPU, as on a laptop. Here the gateway's hop (about
  0.2 ms of Python per request) competes with the model (about 0.5 ms) for the same cores.

Goals: gateway throughput >= 0.8 x direct, gateway p99 <= 1.3 x direct.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONTEXT = ROOT / "experiments" / "digits"

# The load client, run as its own process: N threads, each a kept-alive connection, for D seconds.
# Plain sockets, not http.client: the client's own CPU is the machine's, not the gateway's, to spend.
CLIENT = r"""
import hashlib, hmac, json, socket, sys, threading, time

mode, port, path, threads, seconds = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), float(sys.argv[5])
body = sys.stdin.read().encode()
latencies, errors = [], [0]
lock = threading.Lock()
start_at = time.perf_counter() + 0.5
stop_at = start_at + seconds
base = {"Content-Type": "application/json", "Accept": "application/json"}
SIGNED = "accept;content-type;host;x-amz-date"

def _hmac(key, text):
    return hmac.new(key, text.encode(), hashlib.sha256).digest()

def sigv4(amz_date):
    # SigV4 as botocore computes it for this request (checked against botocore below), without
    # botocore's request objects: the client's own CPU is not the gateway's to pay on shared cores.
    day, scope = amz_date[:8], f"{amz_date[:8]}/us-east-1/sagemaker/aws4_request"
    canonical = "\n".join(["POST", path, "", "accept:application/json", "content-type:application/json",
                           f"host:127.0.0.1:{port}", f"x-amz-date:{amz_date}", "", SIGNED,
                           hashlib.sha256(body).hexdigest()])
    to_sign = f"AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
    key = _hmac(_hmac(_hmac(_hmac(b"AWS4bench", day), "us-east-1"), "sagemaker"), "aws4_request")
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    return {**base, "X-Amz-Date": amz_date, "Authorization": f"AWS4-HMAC-SHA256 Credential=bench/{scope}, "
            f"SignedHeaders={SIGNED}, Signature={signature}"}

if mode != "direct":
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials
    request = AWSRequest(method="POST", url=f"http://127.0.0.1:{port}{path}", data=body, headers=dict(base))
    SigV4Auth(Credentials("bench", "bench"), "sagemaker", "us-east-1").add_auth(request)
    assert sigv4(request.headers["X-Amz-Date"])["Authorization"] == request.headers["Authorization"]

def headers(now):
    if mode == "direct":
        return base
    return sigv4(time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now)))

latest = [(None, b"")]  # (second, request bytes): one tuple, replaced whole, shared by the threads

def request_bytes():
    # The same bytes as signing each request: a signature changes only with X-Amz-Date's second.
    now = int(time.time())
    second, data = latest[0]
    if second != now:
        fields = "".join(f"{name}: {value}\r\n" for name, value in headers(now).items())
        data = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: {len(body)}\r\n"
                f"{fields}\r\n").encode("latin-1") + body
        latest[0] = (now, data)
    return data

def connect():
    sock = socket.create_connection(("127.0.0.1", port), timeout=70)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock

def exchange(sock):
    # One request and its answer on a kept-alive connection; both servers answer with Content-Length.
    sock.sendall(request_bytes())
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    at = head.lower().index(b"\r\ncontent-length:") + 17
    end = head.find(b"\r\n", at)
    length = int(head[at:end if end > 0 else None])
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed mid-answer")
        rest += chunk
    return int(head[9:12])

def run():
    sock = connect()
    mine = []
    while time.perf_counter() < start_at:
        time.sleep(0.001)
    while True:
        began = time.perf_counter()
        if began >= stop_at:
            break
        try:
            ok = exchange(sock) == 200
        except Exception:
            ok = False
            sock.close()
            sock = connect()
        if ok:
            mine.append(time.perf_counter() - began)
        else:
            with lock:
                errors[0] += 1
    with lock:
        latencies.extend(mine)

workers = [threading.Thread(target=run) for _ in range(threads)]
for w in workers: w.start()
for w in workers: w.join()
latencies.sort()
def pct(p): return latencies[min(len(latencies) - 1, int(p * len(latencies)))] if latencies else None
print(json.dumps({"requests": len(latencies), "errors": errors[0], "seconds": seconds,
                  "throughput_rps": len(latencies) / seconds, "p50_ms": pct(0.50) * 1000, "p99_ms": pct(0.99) * 1000}))
"""


def _load(mode: str, port: int, path: str, body: str, threads: int, seconds: float) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", CLIENT, mode, str(port), path, str(threads), str(seconds)],
        input=body,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(result.stdout)


def _wait(sm, name: str, timeout: float = 600) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        described = sm.describe_endpoint(EndpointName=name)
        if described["EndpointStatus"] in ("InService", "Failed"):
            return described
        if time.monotonic() > deadline:
            raise TimeoutError(f"{name} still {described['EndpointStatus']}")
        time.sleep(0.1)


def _process_tree(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            children.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(int(entry))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def _pin(pids: list[int], cpus: set[int]) -> None:
    """Every thread of these processes onto these CPUs (threads and processes they start inherit it)."""
    for pid in pids:
        try:
            for thread in os.listdir(f"/proc/{pid}/task"):
                os.sched_setaffinity(int(thread), cpus)
        except (FileNotFoundError, ProcessLookupError):
            pass  # gone meanwhile


def _instance_root(instance: dict) -> int:
    """The serving instance's first process: the process runner's, or the docker container's."""
    container = instance["Containers"][0]
    if "Pid" in container:
        return container["Pid"]
    import docker

    return docker.from_env().containers.get(container["ContainerId"]).attrs["State"]["Pid"]


def hosting_benchmark(
    tmp: Path,
    runner: str = "process",
    image: str | None = None,
    env: dict | None = None,
    threads: int = 4,
    seconds: float = 5.0,
    rounds: int = 4,
) -> dict:
    sys.path[:0] = [str(ROOT), str(ROOT / "plugins")]
    from localaws.client import register_image
    from ml_pipeline.images import context_hash
    from ml_pipeline.config import sagemaker_hyperparameters
    from tests.conftest import LocalAWSProcess
    from tests.fixtures import digits_example
    from tests.support import ROLE_ARN, training_request, wait_for_training

    server = LocalAWSProcess(tmp, runner, **(env or {})).start()
    try:
        if runner == "process":
            image = f"123456789012.dkr.ecr.us-east-1.amazonaws.com/digits-training:{context_hash(CONTEXT)}"
            register_image(server.endpoint_url, image, CONTEXT)
        s3, sm = server.client("s3"), server.client("sagemaker")
        s3.create_bucket(Bucket="bench-hosting")
        channels = digits_example.write_channels(s3, "bench-hosting", "digits", seed=11)
        sm.create_training_job(
            **training_request(
                "bench-serve",
                image,
                {"train": channels["train"], "validation": channels["validation"]},
                "s3://bench-hosting/jobs",
                sagemaker_hyperparameters(digits_example.preset("quick")),
                digits_example.experiment()["metric_definitions"],
            )
        )
        job = wait_for_training(sm, "bench-serve", timeout=900)
        assert job["TrainingJobStatus"] == "Completed", job.get("FailureReason")
        sm.create_model(
            ModelName="bench-model",
            ExecutionRoleArn=ROLE_ARN,
            PrimaryContainer={"Image": image, "ModelDataUrl": job["ModelArtifacts"]["S3ModelArtifacts"]},
        )
        sm.create_endpoint_config(
            EndpointConfigName="bench-config",
            ProductionVariants=[
                {
                    "VariantName": "AllTraffic",
                    "ModelName": "bench-model",
                    "InstanceType": "ml.m5.large",
                    "InitialInstanceCount": 1,
                }
            ],
        )

        # CreateEndpoint -> InService, a few times (the first also warms caches: model data, image).
        create_seconds = []
        for index in range(3):
            name = f"bench-ready-{index}"
            started = time.monotonic()
            sm.create_endpoint(EndpointName=name, EndpointConfigName="bench-config")
            described = _wait(sm, name)
            assert described["EndpointStatus"] == "InService", described.get("FailureReason")
            create_seconds.append(round(time.monotonic() - started, 2))
            sm.delete_endpoint(EndpointName=name)

        features, _ = digits_example.held_out(seed=11)
        all_cpus = sorted(os.sched_getaffinity(0))
        model_cpus, other_cpus = set(all_cpus[len(all_cpus) // 2 :]), set(all_cpus[: len(all_cpus) // 2])
        layouts = {}
        if other_cpus:
            layouts["own_cores"] = (model_cpus, other_cpus)
        layouts["shared_cores"] = None
        loads: dict[str, dict] = {}
        for layout, cpus in layouts.items():
            # Each layout its own endpoint, its model server sized to the cores it gets (one worker
            # per core, the image's rule): more workers than cores would only contend.
            workers = len(cpus[0]) if cpus else len(all_cpus)
            name = f"bench-{layout.replace('_', '-')}"
            sm.create_model(
                ModelName=name,
                ExecutionRoleArn=ROLE_ARN,
                PrimaryContainer={
                    "Image": image,
                    "ModelDataUrl": job["ModelArtifacts"]["S3ModelArtifacts"],
                    "Environment": {"SAGEMAKER_MODEL_SERVER_WORKERS": str(workers)},
                },
            )
            sm.create_endpoint_config(
                EndpointConfigName=name,
                ProductionVariants=[
                    {
                        "VariantName": "AllTraffic",
                        "ModelName": name,
                        "InstanceType": "ml.m5.large",
                        "InitialInstanceCount": 1,
                    }
                ],
            )
            sm.create_endpoint(EndpointName=name, EndpointConfigName=name)
            described = _wait(sm, name)
            assert described["EndpointStatus"] == "InService", described.get("FailureReason")
            with urllib.request.urlopen(f"{server.endpoint_url}/_localaws/endpoints/{name}", timeout=10) as response:
                (instance,) = json.loads(response.read())["Instances"]
            direct_port = instance["Containers"][0]["Port"]
            if cpus:
                model = _process_tree(_instance_root(instance))
                try:
                    _pin(model, cpus[0])
                except PermissionError as error:  # a container of another user's engine: not ours to move
                    print(f"{layout} not measured: {error}", file=sys.stderr)
                    sm.delete_endpoint(EndpointName=name)
                    continue
                _pin([pid for pid in _process_tree(server.process.pid) if pid not in model], cpus[1])
                os.sched_setaffinity(0, cpus[1])  # the load client, started from here
            loads[layout] = {"workers": workers}
            for label, rows in (("one_row", 1), ("batch_32_rows", 32)):
                body = json.dumps({"instances": [[int(v) for v in row] for row in features[:rows]]})
                # Warm both paths (connections, the workers' first requests).
                _load("direct", direct_port, "/invocations", body, threads, 1.0)
                _load("gateway", server.port, f"/endpoints/{name}/invocations", body, threads, 1.0)
                direct, gateway = [], []
                for _ in range(rounds):
                    direct.append(_load("direct", direct_port, "/invocations", body, threads, seconds))
                    gateway.append(
                        _load("gateway", server.port, f"/endpoints/{name}/invocations", body, threads, seconds)
                    )
                loads[layout][label] = (direct, gateway)
            if cpus:  # the next layout starts from every CPU
                os.sched_setaffinity(0, set(all_cpus))
                _pin(_process_tree(server.process.pid), set(all_cpus))
            sm.delete_endpoint(EndpointName=name)
    finally:
        server.stop()

    def summary(runs: list[dict]) -> dict:
        return {
            "throughput_rps": round(statistics.median(r["throughput_rps"] for r in runs), 1),
            "p50_ms": round(statistics.median(r["p50_ms"] for r in runs), 2),
            "p99_ms": round(statistics.median(r["p99_ms"] for r in runs), 2),
            "requests": sum(r["requests"] for r in runs),
            "errors": sum(r["errors"] for r in runs),
        }

    def compare(direct: list[dict], gateway: list[dict]) -> dict:
        d, g = summary(direct), summary(gateway)
        # Each gateway round against the direct round just before it: drift on a shared machine cancels.
        pairs = list(zip(direct, gateway, strict=True))
        return {
            "direct": d,
            "gateway": g,
            "throughput_ratio": round(
                statistics.median(y["throughput_rps"] / x["throughput_rps"] for x, y in pairs), 3
            ),
            "p99_ratio": round(statistics.median(y["p99_ms"] / x["p99_ms"] for x, y in pairs), 3),
            "p50_added_ms": round(g["p50_ms"] - d["p50_ms"], 2),
            "rounds": {"direct": direct, "gateway": gateway},
        }

    figures = {}
    for layout, by_payload in loads.items():
        one = compare(*by_payload["one_row"])
        figures[layout] = {
            "model_server_workers": by_payload["workers"],
            **{key: one[key] for key in ("direct", "gateway", "throughput_ratio", "p99_ratio", "p50_added_ms")},
            "rounds": one["rounds"],
            "batch_32_rows": compare(*by_payload["batch_32_rows"]),
        }
    headline = figures.get("own_cores", figures["shared_cores"])
    return {
        "runner": runner,
        "client": f"{threads} keep-alive connections from a client process of their own, closed loop, "
        f"{rounds} alternating rounds x {seconds:g} s per target; gateway requests SigV4-signed",
        "serving": "the image's serve (gunicorn gthread, one worker per core of its layout), one instance",
        "cpus": {
            "all": all_cpus,
            "own_cores": {"model": sorted(model_cpus), "client_and_localaws": sorted(other_cpus)},
        },
        "throughput_ratio": headline["throughput_ratio"],
        "p99_ratio": headline["p99_ratio"],
        "goal": "throughput_ratio >= 0.8 and p99_ratio <= 1.3 (one JSON row per request, model on its own cores)",
        **figures,
        "create_to_in_service_seconds": create_seconds,
        "create_to_in_service_median_seconds": statistics.median(create_seconds),
    }


def brief(figures: dict) -> dict:
    """The figures without each round's own."""
    if isinstance(figures, dict):
        return {key: brief(value) for key, value in figures.items() if key != "rounds"}
    return figures


if __name__ == "__main__":  # python benchmarks/hosting.py: these figures alone
    with tempfile.TemporaryDirectory() as directory:
        print(
            json.dumps(
                brief(hosting_benchmark(Path(directory), seconds=float(os.environ.get("BENCH_SECONDS", "5")))), indent=2
            )
        )
