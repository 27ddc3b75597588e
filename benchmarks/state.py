"""What keeping localaws's state (LOCALAWS_STATE_DIR) costs: on the request path, per snapshot, at start.

    .venv/bin/python -m benchmarks.state [--requests 300]

request path   the same calls against a localaws in memory and one with a state folder, alternately
               (median and 90th percentile per call, as a client sees it);
the gate       what the wrapper itself adds to a call into moto (telling reads from writes, the gate);
snapshots      pickling moto's backends and our engine's records, with what the run left in them;
start-up       spawn to the first answer, with no state folder and with the folder the run filled.

Figures depend on the machine: nothing here is a test.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "plugins")]

from tests.conftest import LocalAWSProcess  # noqa: E402


def _server(tmp: Path, **env: str) -> LocalAWSProcess:
    tmp.mkdir(parents=True, exist_ok=True)
    return LocalAWSProcess(tmp, "process", **env).start()


def _calls(server, bucket: str) -> dict:
    s3, ec2, ssm, logs = (server.client(name) for name in ("s3", "ec2", "ssm", "logs"))
    counter = iter(range(10**9))
    return {
        "s3 PutObject 1 KiB (write)": lambda: s3.put_object(Bucket=bucket, Key=f"k/{next(counter)}", Body=b"x" * 1024),
        "s3 GetObject (read)": lambda: s3.get_object(Bucket=bucket, Key="k/0")["Body"].read(),
        "ec2 DescribeVpcs (read, query protocol)": lambda: ec2.describe_vpcs(),
        "ssm PutParameter (write, JSON)": lambda: ssm.put_parameter(
            Name="/bench/p", Value=str(next(counter)), Type="String", Overwrite=True
        ),
        "logs PutLogEvents (write, JSON)": lambda: logs.put_log_events(
            logGroupName="bench",
            logStreamName="s",
            logEvents=[{"timestamp": int(time.time() * 1000), "message": "line"}],
        ),
    }


def _prepare(server, bucket: str) -> None:
    iam = server.client("iam")  # as the pipeline does: an account's IAM holds AWS's managed policies then
    iam.create_role(RoleName="bench", AssumeRolePolicyDocument="{}")
    iam.attach_role_policy(RoleName="bench", PolicyArn="arn:aws:iam::aws:policy/AmazonSageMakerFullAccess")
    server.client("s3").create_bucket(Bucket=bucket)
    server.client("logs").create_log_group(logGroupName="bench")
    server.client("logs").create_log_stream(logGroupName="bench", logStreamName="s")
    server.client("ec2").create_vpc(CidrBlock="10.9.0.0/16")


def _fill(server, bucket: str, objects: int, size: int) -> None:
    s3 = server.client("s3")
    body = os.urandom(size)
    for index in range(objects):
        s3.put_object(Bucket=bucket, Key=f"data/{index}", Body=body)


def request_path(tmp: Path, requests: int) -> dict:
    servers = {
        "in memory": _server(tmp / "memory"),
        "state folder": _server(tmp / "state", LOCALAWS_STATE_DIR=str(tmp / "state" / "dir")),
    }
    try:
        calls = {}
        for label, server in servers.items():
            _prepare(server, "bench-bucket")
            calls[label] = _calls(server, "bench-bucket")
            for call in calls[label].values():  # warm: connections, moto's lazy loads
                for _ in range(20):
                    call()
        times: dict[str, dict[str, list[float]]] = {label: {name: [] for name in calls[label]} for label in calls}
        for _ in range(requests):
            for label in servers:
                for name, call in calls[label].items():
                    started = time.perf_counter()
                    call()
                    times[label][name].append((time.perf_counter() - started) * 1000)
        out = {}
        for name in calls["in memory"]:
            out[name] = {
                label: {
                    "median_ms": round(statistics.median(t[name]), 2),
                    "p90_ms": round(statistics.quantiles(t[name], n=10)[-1], 2),
                }
                for label, t in times.items()
            }
        return out
    finally:
        for server in servers.values():
            server.stop()


def gate_overhead() -> dict:
    from localaws.bodies import BUFFERED
    from localaws.state import _Gate, _reads_only

    gate = _Gate()
    form = b"Action=DescribeVpcs&Version=2016-11-15"
    environs = {
        "S3 GET": {"REQUEST_METHOD": "GET", "PATH_INFO": "/bucket/key", "QUERY_STRING": ""},
        "JSON target": {"REQUEST_METHOD": "POST", "HTTP_X_AMZ_TARGET": "Logs_20140328.PutLogEvents"},
        "query protocol (body read)": {
            "REQUEST_METHOD": "POST",
            "CONTENT_TYPE": "application/x-www-form-urlencoded",
            "CONTENT_LENGTH": str(len(form)),
            BUFFERED: form,
        },
    }
    out = {}
    for label, environ in environs.items():
        rounds = 20000
        started = time.perf_counter()
        for _ in range(rounds):
            _reads_only(environ)
            gate.enter()
            gate.leave()
        out[label] = f"{(time.perf_counter() - started) / rounds * 1e6:.2f} us per call"
    return out


def engine_snapshot(jobs: int = 200, points: int = 500) -> str:
    """Our engine's records as a busy account has them: jobs with long metric series (synthetic)."""
    from localaws.sagemaker.models import TrainingJob
    from localaws.state import pickling
    from tests.support import training_request

    records = {}
    for index in range(jobs):
        name = f"job-{index}"
        job = TrainingJob(
            name,
            f"arn:aws:sagemaker:us-east-1:123456789012:training-job/{name}",
            training_request(
                name,
                "123456789012.dkr.ecr.us-east-1.amazonaws.com/x:1",
                {"train": "s3://b/t"},
                "s3://b/o",
                {"epochs": "10"},
            ),
            time.time(),
            status="Completed",
        )
        job.metric_series = {"loss": [(time.time(), 0.5) for _ in range(points)]}
        records[name] = job
    took = []
    for _ in range(5):
        started = time.perf_counter()
        data = pickling.dumps({"training_jobs": records})
        took.append(time.perf_counter() - started)
    return f"{statistics.median(took) * 1000:.1f} ms for {jobs} jobs of {points} metric points ({len(data) >> 10} KiB)"


def snapshots_and_start(tmp: Path, objects: int, size: int) -> dict:
    folder = tmp / "filled" / "dir"
    server = _server(tmp / "filled", LOCALAWS_STATE_DIR=str(folder))
    try:
        _prepare(server, "bench-bucket")
        _fill(server, "bench-bucket", objects, size)
        time.sleep(2)
    finally:
        server.stop()
    sizes = {path.name: path.stat().st_size for path in folder.iterdir() if path.is_file()}
    blobs = sum(path.stat().st_size for path in (folder / "blobs").iterdir())

    # Pickling what the folder holds, as the write-behind thread does (moto's backends loaded here).
    from localaws.state.moto_backends import MotoState
    from localaws.state.pickling import Blobs

    MotoState.load(
        (folder / "moto.pickle").read_bytes(), Blobs(read=lambda name: (folder / "blobs" / name).read_bytes())
    )
    state = MotoState()
    dumps = []
    for _ in range(5):
        started = time.perf_counter()
        state.dump(Blobs())
        dumps.append(time.perf_counter() - started)

    starts = {}
    for label, env in (
        ("no state folder", {}),
        (f"state: {objects} objects, {blobs >> 20} MiB", {"LOCALAWS_STATE_DIR": str(folder)}),
    ):
        took, restores = [], []
        for _ in range(3):
            started = time.perf_counter()
            again = _server(tmp / "starts", **env)
            took.append(time.perf_counter() - started)
            again.stop()
            restores += [
                float(line.rsplit("'seconds': ", 1)[1].rstrip("}\n"))
                for line in open(again.log_path)
                if "localaws state: restored" in line
            ]
        starts[label] = f"{statistics.median(took):.2f} s" + (
            f" (of which the restore: {statistics.median(restores) * 1000:.0f} ms)" if restores else ""
        )
    return {
        "files": {**sizes, "blobs (total)": blobs},
        "moto snapshot (pickle, with the gate shut)": f"{statistics.median(dumps) * 1000:.1f} ms",
        "start to first answer": starts,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--objects", type=int, default=200)
    parser.add_argument("--object-size", type=int, default=256 * 1024)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-state-") as tmp:
        tmp = Path(tmp)
        out = {
            "the gate": gate_overhead(),
            "engine snapshot (pickle, under the engine's lock, every half second)": engine_snapshot(),
            "request path": request_path(tmp, args.requests),
            "snapshots and start-up": snapshots_and_start(tmp, args.objects, args.object_size),
        }
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
