"""A local MLflow tracking server for `make run`, `make airflow` and the tests.

``ensure_mlflow(folder, s3_endpoint)`` yields the tracking URI the runs log to: ``MLFLOW_TRACKING_URI`` when
it is set (nothing is started: the deployment's server), else the URI of a server started here and stopped
on exit:

  backend     SQLite, ``<folder>/mlflow.db`` (the run's or the Airflow home: deleting it resets both)
  artifacts   proxied by the server (``--serve-artifacts``) into ``s3://ml-pipeline-mlflow/artifacts`` on
              localaws (``s3_endpoint``; the bucket is created): clients send artifacts to the server only
  address     127.0.0.1, port ``ML_PIPELINE_MLFLOW_PORT`` (default 5050, not MLflow's 5000: that is the local
              registry standing in for ECR, scripts/docker-engine.sh's; 0, or 5050 taken: a free one)
  log         ``<folder>/mlflow.log``

Run alone (``python scripts/mlflow_server.py --folder out``) it serves until Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from localaws.lifetime import die_with_parent  # noqa: E402

#: Not MLflow's own 5000: the registry standing in for ECR listens there (scripts/docker-engine.sh), and
#: a server that took it first left the registry unable to start.
DEFAULT_PORT = 5050
ARTIFACT_BUCKET = "ml-pipeline-mlflow"
#: The first start migrates the SQLite database (a minute on a busy laptop).
START_SECONDS = 180
#: localaws takes any key: these are no credentials.
LOCAL_KEYS = {"AWS_ACCESS_KEY_ID": "localaws", "AWS_SECRET_ACCESS_KEY": "localaws"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def healthy(uri: str, timeout: float = 2) -> bool:
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout) as response:
            return response.status == 200
    except OSError:
        return False


def ensure_bucket(s3_endpoint: str, bucket: str) -> None:
    import boto3  # noqa: PLC0415 - only when a server is started

    s3 = boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        region_name="us-east-1",
        aws_access_key_id=LOCAL_KEYS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=LOCAL_KEYS["AWS_SECRET_ACCESS_KEY"],
    )
    try:
        s3.head_bucket(Bucket=bucket)
    except s3.exceptions.ClientError:
        s3.create_bucket(Bucket=bucket)


class MlflowServer:
    """``mlflow server`` in a process group of its own (its uvicorn workers with it)."""

    def __init__(self, folder: Path, s3_endpoint: str, port: int | None = None, bucket: str = ARTIFACT_BUCKET):
        self.folder = folder.resolve()
        self.s3_endpoint = s3_endpoint
        self.bucket = bucket
        wanted = int(os.environ.get("ML_PIPELINE_MLFLOW_PORT", DEFAULT_PORT)) if port is None else port
        self.port = wanted if wanted and port_free(wanted) else free_port()
        self.moved = bool(wanted) and self.port != wanted
        self.uri = f"http://127.0.0.1:{self.port}"
        self.log_path = folder / "mlflow.log"
        self.process: subprocess.Popen | None = None

    def start(self) -> MlflowServer:
        self.folder.mkdir(parents=True, exist_ok=True)
        ensure_bucket(self.s3_endpoint, self.bucket)
        env = {
            **os.environ,
            **LOCAL_KEYS,
            "AWS_DEFAULT_REGION": os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
            # The server's own S3 client (the artifact proxy) talks to localaws.
            "MLFLOW_S3_ENDPOINT_URL": self.s3_endpoint,
            # MLflow's job runner (GenAI evaluation jobs, trace rollups: nothing the runs use) is seven
            # huey consumers that busy-poll, a core's worth between them on a 2-core machine.
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": os.environ.get("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false"),
        }
        env.pop("MLFLOW_TRACKING_URI", None)
        command = [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--backend-store-uri",
            f"sqlite:///{self.folder / 'mlflow.db'}",
            "--serve-artifacts",
            "--artifacts-destination",
            f"s3://{self.bucket}/artifacts",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--workers",
            "1",
        ]
        self._log = open(self.log_path, "a")
        self.process = subprocess.Popen(
            command,
            cwd=self.folder,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent(signal.SIGTERM),
        )
        deadline = time.monotonic() + START_SECONDS
        while not healthy(self.uri):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the MLflow server did not start; see {self.log_path}")
            time.sleep(0.5)
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        if self.process is not None:
            self._log.close()


@dataclasses.dataclass(frozen=True)
class Tracking:
    """Where the runs log (``uri``), and the server's pid when it was started here."""

    uri: str
    pid: int | None = None


@contextlib.contextmanager
def ensure_mlflow(folder: Path, s3_endpoint: str, port: int | None = None) -> Iterator[Tracking]:
    """Where to log: ``MLFLOW_TRACKING_URI`` when set, else a server started here (and stopped on exit),
    whose UI address is printed."""
    given = os.environ.get("MLFLOW_TRACKING_URI")
    if given:
        print("MLflow: the runs log to MLFLOW_TRACKING_URI (no server started here)", flush=True)
        yield Tracking(given)
        return
    started = time.monotonic()
    server = MlflowServer(folder, s3_endpoint, port).start()
    moved = f" (port {os.environ.get('ML_PIPELINE_MLFLOW_PORT', DEFAULT_PORT)} was taken)" if server.moved else ""
    print(
        f"MLflow UI: {server.uri}{moved}  (started in {time.monotonic() - started:.1f}s; "
        f"runs in {folder / 'mlflow.db'}, artifacts in s3://{server.bucket}/artifacts; log: {server.log_path})",
        flush=True,
    )
    try:
        yield Tracking(server.uri, server.process.pid if server.process else None)
    finally:
        server.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", type=Path, default=ROOT / "out", help="where mlflow.db and the log go")
    parser.add_argument("--s3-endpoint", default=os.environ.get("LOCALAWS_ENDPOINT", "http://127.0.0.1:4566"))
    parser.add_argument("--port", type=int, default=None)
    args = parser.parse_args()
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))
    with ensure_mlflow(args.folder.resolve(), args.s3_endpoint, args.port):
        try:
            while not stopping:
                time.sleep(1)
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
