"""Fixtures shared by every test: a running localaws over HTTP, boto3 clients to it, the data."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

import boto3
import pytest

from localaws.lifetime import die_with_parent

REPO_ROOT = Path(__file__).resolve().parents[1]
TRAINING_CONTEXT = REPO_ROOT / "experiments" / "digits"
for path in (REPO_ROOT / "plugins", TRAINING_CONTEXT):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

# Airflow, imported by DAG tests, keeps its home and database out of the user's ~/airflow: one for each
# pytest-xdist worker (gw0, gw1 ...), which would otherwise migrate the same SQLite file at once.
WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")
_AIRFLOW_HOME = f"ml-pipeline-tests-airflow-{os.getuid()}{WORKER and '-' + WORKER}"
os.environ.setdefault("AIRFLOW_HOME", str(Path(tempfile.gettempdir()) / _AIRFLOW_HOME))
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
# MLflow servers that the scripts under test start take a free port: never a fixed one that the other
# worker's server, or the registry standing in for ECR, may need.
os.environ.setdefault("ML_PIPELINE_MLFLOW_PORT", "0")

pytest_plugins = ["tests.fixtures.docker_engine"]

REGION = "us-east-1"
ROLE_ARN = "arn:aws:iam::123456789012:role/SageMakerExecution"
LOCAL_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LocalAWSProcess:
    """``python -m localaws serve`` in a subprocess, as a user runs it."""

    def __init__(self, tmp: Path, runner: str, **env: str):
        self.port = free_port()
        self.endpoint_url = f"http://127.0.0.1:{self.port}"
        self.log_path = tmp / f"localaws-{runner}-{self.port}.log"
        self.env = {
            **os.environ,
            **LOCAL_CREDENTIALS,
            "AWS_DEFAULT_REGION": REGION,
            "LOCALAWS_WORK_DIR": str(tmp / f"work-{self.port}"),
            # Tests need not wait AWS's 120 s between SIGTERM and SIGKILL.
            "LOCALAWS_STOP_GRACE_SECONDS": "15",
            "LOCALAWS_CHECKPOINT_SYNC_SECONDS": "1",
            # An interrupted spot job finds capacity again after a second rather than 5.
            "LOCALAWS_SPOT_CAPACITY_WAIT_SECONDS": "1",
            # Hosts' CPU, memory and disk figures every second rather than 10: a job of seconds has some.
            "LOCALAWS_USAGE_METRICS_SECONDS": "1",
            # Endpoints: a minute of autoscaling's clock lasts a second (see README, Hosting), and
            # a serving container ignoring SIGTERM is killed after 10 s rather than AWS's 30.
            "LOCALAWS_AUTOSCALING_TIME_SCALE": "60",
            "LOCALAWS_SERVING_STOP_GRACE_SECONDS": "10",
            # In memory, whatever the developer's shell says (tests that restart localaws set one).
            "LOCALAWS_STATE_DIR": "",
            **env,
        }
        self.runner = runner
        self.process: subprocess.Popen | None = None

    def start(self) -> "LocalAWSProcess":
        self._log = open(self.log_path, "w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "localaws", "serve", "--port", str(self.port), "--runner", self.runner],
            cwd=REPO_ROOT,
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent(signal.SIGTERM),  # a killed test run leaves no localaws behind
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(self.endpoint_url + "/_localaws/health", timeout=1):
                    return self
            except OSError:
                if self.process.poll() is not None:
                    break
                time.sleep(0.1)
        raise RuntimeError(f"localaws did not start:\n{self.log_path.read_text()}")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self._log.close()

    def client(self, service: str):
        return boto3.client(
            service,
            endpoint_url=self.endpoint_url,
            region_name=REGION,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )


@pytest.fixture(scope="session")
def localaws_process(tmp_path_factory):
    """localaws with the process runner (no Docker engine needed), the example image registered."""
    from localaws.client import register_image
    from ml_pipeline.images import context_hash
    from tests.fixtures.docker_engine import ecr_uri

    server = LocalAWSProcess(tmp_path_factory.mktemp("localaws"), "process").start()
    server.image_uri = ecr_uri("digits-training", context_hash(TRAINING_CONTEXT))
    register_image(server.endpoint_url, server.image_uri, TRAINING_CONTEXT)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def dag_test_home(localaws_process, tmp_path_factory) -> Path:
    """The AIRFLOW_HOME of this test process's ``dag.test()`` runs, migrated once: one database and one warmed
    interpreter (scripts/dag_test_forks.py) for every module's runs. Each run's own settings (its bucket,
    experiments root, connection to another localaws, notification target) travel in its environment."""
    from scripts.run_pipeline import airflow_env
    from tests.support import migrate

    home = tmp_path_factory.mktemp("dag-test-home")
    migrate(airflow_env(localaws_process.endpoint_url, home))
    return home


@pytest.fixture(scope="session")
def localaws_docker(tmp_path_factory, docker_engine, training_image):
    """localaws with the docker runner, against a real engine; the image is in the local registry only."""
    server = LocalAWSProcess(
        tmp_path_factory.mktemp("localaws-docker"), "docker", LOCALAWS_REGISTRY=docker_engine["registry"]
    ).start()
    server.image_uri = training_image
    yield server
    server.stop()


@pytest.fixture(scope="session")
def localaws(request):
    """localaws with the process runner; under both runners (the process runner, then real containers)
    for a test marked ``runners``, where the runner is what the test is about."""
    return request.getfixturevalue(f"localaws_{getattr(request, 'param', 'process')}")


def pytest_generate_tests(metafunc):
    if "localaws" in metafunc.fixturenames and metafunc.definition.get_closest_marker("runners"):
        metafunc.parametrize(
            "localaws", ["process", pytest.param("docker", marks=pytest.mark.docker)], indirect=True, scope="session"
        )


@pytest.fixture
def bucket(localaws):
    name = f"test-{uuid.uuid4().hex[:12]}"
    localaws.client("s3").create_bucket(Bucket=name)
    return name


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


#: The layers, heaviest first: under pytest-xdist the modules that take longest start first (within a layer,
#: those with the longest time limit first), so that none of them starts last and keeps one worker busy
#: after the others are done. make test keeps this order (--dist loadfile --no-loadscope-reorder). A module
#: with a test that needs the Docker engine goes no earlier than the slow layer: on a fresh machine the
#: engine's install and base image (a few minutes, begun in the background once collection is done) are
#: ready by the time the end-to-end modules before it are done.
LAYERS = ("e2e", "slow", "docker")


@pytest.hookimpl(wrapper=True)  # around pytest's and xdist's own: marks before them, the order after
def pytest_collection_modifyitems(config, items):
    """Whatever needs a Docker engine is marked ``docker`` (``make test-fast`` leaves it out). On a
    pytest-xdist worker (make test: ``--dist loadfile``, each module one unit of work, so that a module's
    fixtures, a shared DAG run or a trained model, are made once), the modules go heaviest first.
    (Not ``loadgroup``: with pytest 9 its group names never reach the node ids, and every test was a unit.)"""
    distributed = hasattr(config, "workerinput")  # collection happens on the workers
    rank: dict[str, tuple[int, float]] = {}
    needs_docker: set[str] = set()
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        if {"docker_engine", "localaws_docker", "training_image"} & fixtures or "[docker" in item.nodeid:
            item.add_marker(pytest.mark.docker)
            needs_docker.add(item.module.__name__)
        layer = next((n for n, name in enumerate(LAYERS) if item.get_closest_marker(name)), len(LAYERS))
        limit = item.get_closest_marker("timeout")
        weight = (layer, -(limit.args[0] if limit and limit.args else 0))
        rank[item.module.__name__] = min(weight, rank.get(item.module.__name__, weight))
    for module in needs_docker:  # at the slow layer's head, unless it ranks later already
        rank[module] = max(rank[module], (LAYERS.index("slow"), float("-inf")))
    result = yield  # pytest's own hooks deselect here (-m, -k)
    if not config.option.collectonly and any(item.get_closest_marker("docker") for item in items):
        from tests.fixtures.docker_engine import start_in_background

        start_in_background(config)
    if distributed:
        items.sort(key=lambda item: rank[item.module.__name__])  # stable: within a module, as pytest had it
    return result
