"""The docker runner against a real engine (scripts/docker-engine.sh starts one if needed).

Scripts run as the container's command from the bind-mounted /opt/ml/code, so the
tests need no image beyond the base image.
"""

from __future__ import annotations

import contextlib

import json
import queue
import socket
import textwrap
import threading
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

docker = pytest.importorskip("docker")

from localaws.sagemaker.runners.base import ContainerSpec, ImageNotFound  # noqa: E402
from localaws.sagemaker.runners.docker import (  # noqa: E402
    DockerRunner,
    cleanup_leftovers,
    engine_available,
)
from tests.fixtures.docker_engine import ecr_uri  # noqa: E402
from tests.support import wait_until  # noqa: E402


def _pongs(url: str) -> bool:
    """Whether ``url`` answers the serving contract's ping (False while it refuses or times out)."""
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.read() == b"pong"
    except OSError:
        return False


# Fixtures from tests.fixtures.docker_engine (loaded by tests/conftest.py).
pytestmark = pytest.mark.docker


@pytest.fixture
def runner(docker_engine):
    runner = DockerRunner(base_url=docker_engine["base_url"], registry=docker_engine["registry"])
    yield runner
    runner.close()


@pytest.fixture
def needs_bridge(docker_engine):
    if docker_engine["networking"] != "bridge":
        pytest.skip("the engine runs without bridge networking (host networking only)")


def unique(prefix: str) -> str:
    return f"localaws-test-{prefix}-{uuid.uuid4().hex[:8]}"


def script_spec(tmp_path: Path, base_image: str, body: str, *, host: str = "algo-1", **kwargs) -> ContainerSpec:
    """A spec whose command is a python script placed at /opt/ml/code/run in the mount."""
    host_dir = tmp_path / host
    (host_dir / "code").mkdir(parents=True, exist_ok=True)
    (host_dir / "model").mkdir(parents=True, exist_ok=True)
    script = host_dir / "code" / "run"
    script.write_text("#!/usr/bin/env python3\n" + textwrap.dedent(body))
    script.chmod(0o755)
    return ContainerSpec(
        image=base_image,
        command="/opt/ml/code/run",
        host_dir=host_dir,
        host_name=host,
        env=kwargs.pop("env", {"PYTHONUNBUFFERED": "1"}),
        name=kwargs.pop("name", unique(host)),
        **kwargs,
    )


def read_lines_in_background(running) -> "queue.Queue[str | None]":
    lines: queue.Queue = queue.Queue()

    def pump():
        try:
            for line in running.lines():
                lines.put(line)
        finally:
            lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    return lines


def next_line(lines: queue.Queue, timeout: float = 60) -> str | None:
    return lines.get(timeout=timeout)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def labelled(client, name: str) -> list:
    return client.containers.list(all=True, filters={"label": f"localaws.name={name}"})


# ---------------------------------------------------------------------------


def test_engine_available(docker_engine, tmp_path):
    assert engine_available(docker_engine["base_url"])
    started = time.monotonic()
    assert not engine_available(f"unix://{tmp_path}/no-such.sock")
    assert not engine_available("tcp://127.0.0.1:1")
    assert time.monotonic() - started < 2


def test_train_sees_opt_ml_env_and_writes_model(runner, docker_engine, tmp_path):
    spec = script_spec(
        tmp_path,
        docker_engine["base_image"],
        """
        import os, socket, sys
        print("hello from", socket.gethostname())
        print("opt_ml", sorted(os.listdir("/opt/ml")))
        print("env", os.environ["SM_MODEL_DIR"], os.environ["TRAINING_JOB_NAME"])
        print("to stderr", file=sys.stderr)
        with open(os.path.join(os.environ["SM_MODEL_DIR"], "model.txt"), "w") as f:
            f.write("weights")
        """,
        env={"SM_MODEL_DIR": "/opt/ml/model", "TRAINING_JOB_NAME": "job-1", "PYTHONUNBUFFERED": "1"},
    )
    assert runner.opt_ml_for(spec.host_dir) == Path("/opt/ml")
    running = runner.start(spec)
    lines = list(running.lines())
    assert running.wait(timeout=60) == 0
    # Docker reads stdout and stderr through separate pipes: order holds within a stream only.
    assert [line for line in lines if line != "to stderr"] == [
        "hello from algo-1",
        "opt_ml ['code', 'model']",
        "env /opt/ml/model job-1",
    ]
    assert "to stderr" in lines
    assert (spec.host_dir / "model" / "model.txt").read_text() == "weights"
    running.remove()


def test_exit_code_and_partial_last_line(runner, docker_engine, tmp_path):
    spec = script_spec(
        tmp_path,
        docker_engine["base_image"],
        """
        import sys
        sys.stdout.write("no newline at the end")
        sys.exit(3)
        """,
    )
    running = runner.start(spec)
    assert list(running.lines()) == ["no newline at the end"]
    assert running.wait(timeout=60) == 3
    assert running.wait() == 3  # remembered


def test_lines_stream_live(runner, docker_engine, tmp_path):
    spec = script_spec(
        tmp_path,
        docker_engine["base_image"],
        """
        import os, time
        print("first", flush=True)
        while not os.path.exists("/opt/ml/go"):  # only the test, having seen "first", creates it
            time.sleep(0.1)
        print("last", flush=True)
        """,
    )
    running = runner.start(spec)
    lines = read_lines_in_background(running)
    assert next_line(lines) == "first"
    assert running.wait(timeout=0.5) is None  # still running: the line came live
    (spec.host_dir / "go").touch()
    assert next_line(lines) == "last"
    assert next_line(lines) is None
    assert running.wait(timeout=60) == 0


def test_terminate_sends_sigterm(runner, docker_engine, tmp_path):
    spec = script_spec(
        tmp_path,
        docker_engine["base_image"],
        """
        import signal, sys, time
        def stop(signum, frame):
            print("caught", signal.Signals(signum).name, flush=True)
            sys.exit(42)
        signal.signal(signal.SIGTERM, stop)
        print("ready", flush=True)
        while True:
            time.sleep(0.1)
        """,
    )
    running = runner.start(spec)
    lines = read_lines_in_background(running)
    assert next_line(lines) == "ready"
    running.terminate()
    assert running.wait(timeout=30) == 42
    assert next_line(lines) == "caught SIGTERM"
    running.terminate()  # no longer running: no error


def test_kill(runner, docker_engine, tmp_path):
    spec = script_spec(
        tmp_path,
        docker_engine["base_image"],
        """
        import signal, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print("ready", flush=True)
        time.sleep(600)
        """,
    )
    running = runner.start(spec)
    lines = read_lines_in_background(running)
    assert next_line(lines) == "ready"
    running.terminate()
    assert running.wait(timeout=1) is None  # ignored
    running.kill()
    assert running.wait(timeout=30) == 137


def test_serving_port_on_localhost(runner, docker_engine, docker_client, needs_bridge, tmp_path):
    port = free_port()
    spec = script_spec(
        tmp_path,
        docker_engine["base_image"],
        """
        from http.server import BaseHTTPRequestHandler, HTTPServer
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                body = b"pong" if self.path == "/ping" else b"?"
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
        print("serving", flush=True)
        HTTPServer(("0.0.0.0", 8080), Handler).serve_forever()
        """,
        ports={8080: port},
    )
    running = runner.start(spec)
    wait_until(lambda: _pongs(f"http://127.0.0.1:{port}/ping"), timeout=60, waiting_for="the published port")
    bindings = docker_client.api.port(running.id, 8080)
    assert {b["HostIp"] for b in bindings} == {"127.0.0.1"}
    # Its own address on the bridge answers too: where hosting sends invocations, past the engine's proxy.
    with urllib.request.urlopen(f"http://{running.own_address()}:8080/ping", timeout=2) as response:
        assert response.read() == b"pong"
    running.terminate()
    running.kill()
    running.remove()
    running.remove()  # idempotent


def test_unknown_image(runner, docker_engine, tmp_path):
    missing = ecr_uri("localaws-no-such-repo", "nope")
    spec = script_spec(tmp_path, missing, "print('never')\n")
    with pytest.raises(ImageNotFound, match="localaws-no-such-repo"):
        runner.start(spec)
    with pytest.raises(ImageNotFound, match="could not be pulled"):
        runner.resolve_image(f"{docker_engine['registry']}/localaws-no-such-repo:nope")
    assert labelled(runner.client, spec.name) == []


def test_pull_by_ecr_uri_from_local_registry(runner, docker_engine, docker_client, tmp_path):
    """Push the base image under a fresh tag; the runner pulls it by its ECR-style name."""
    registry = docker_engine["registry"]
    repository = "localaws-test-pull"
    tag = uuid.uuid4().hex[:12]
    local = f"{registry}/{repository}"
    uri = ecr_uri(repository, tag)
    base = docker_client.images.get(docker_engine["base_image"])
    base.tag(local, tag=tag)
    for event in docker_client.api.push(local, tag=tag, stream=True, decode=True):
        assert "error" not in event, event
    docker_client.images.remove(f"{local}:{tag}", noprune=True)
    with pytest.raises(docker.errors.ImageNotFound):
        docker_client.images.get(uri)
    try:
        spec = script_spec(tmp_path, uri, "print('pulled and running')\n")
        running = runner.start(spec)
        assert list(running.lines()) == ["pulled and running"]
        assert running.wait(timeout=60) == 0
        assert docker_client.images.get(uri).id == base.id
    finally:
        for name in (uri, f"{local}:{tag}"):
            try:
                docker_client.images.remove(name, noprune=True)
            except docker.errors.ImageNotFound:
                pass


def test_training_image_from_registry(runner, training_image, docker_engine, docker_client):
    """The real training image, as the fixture pushed it, resolves by pulling when the engine lacks its
    URI; under a repository of its own, since another worker's runner may be starting the fixture's."""
    registry = docker_engine["registry"]
    repository, tag = training_image.rsplit("/", 1)[1].split(":")
    image = docker_client.images.pull(f"{registry}/{repository}", tag=tag)
    own = f"{repository}-pull-{uuid.uuid4().hex[:8]}"
    image.tag(f"{registry}/{own}", tag=tag)
    for event in docker_client.api.push(f"{registry}/{own}", tag=tag, stream=True, decode=True):
        assert "error" not in event, event
    docker_client.images.remove(f"{registry}/{own}:{tag}", noprune=True)
    uri = ecr_uri(own, tag)
    try:
        assert runner.resolve_image(uri) == uri
        assert uri in docker_client.images.get(uri).tags and docker_client.images.get(uri).id == image.id
    finally:
        with contextlib.suppress(docker.errors.ImageNotFound):
            docker_client.images.remove(uri, noprune=True)


def test_two_hosts_resolve_each_other(runner, docker_engine, needs_bridge, tmp_path):
    network = unique("net")
    body = """
        import json, os, socket, threading, time, urllib.request
        from http.server import BaseHTTPRequestHandler, HTTPServer
        me = socket.gethostname()
        other = [h for h in json.loads(os.environ["SM_HOSTS"]) if h != me][0]
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                body = me.encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            def log_message(self, *args):
                pass
        threading.Thread(target=HTTPServer(("0.0.0.0", 8080), Handler).serve_forever, daemon=True).start()
        deadline = time.time() + 60
        while True:
            try:
                answer = urllib.request.urlopen(f"http://{other}:8080/", timeout=1).read().decode()
                break
            except OSError:
                if time.time() > deadline:
                    raise
                time.sleep(0.2)
        print(f"{me} reached {other} at {socket.gethostbyname(other)}: {answer}", flush=True)
        time.sleep(5)  # stay up for the other host
        """
    hosts = ["algo-1", "algo-2"]
    runs = []
    for host in hosts:
        spec = script_spec(
            tmp_path,
            docker_engine["base_image"],
            body,
            host=host,
            network=network,
            env={"SM_HOSTS": json.dumps(hosts), "SM_CURRENT_HOST": host, "PYTHONUNBUFFERED": "1"},
        )
        runs.append(runner.start(spec))
    outputs = [list(r.lines()) for r in runs]
    assert [r.wait(timeout=60) for r in runs] == [0, 0], outputs
    assert outputs[0][-1].startswith("algo-1 reached algo-2 at ") and outputs[0][-1].endswith(": algo-2")
    assert outputs[1][-1].startswith("algo-2 reached algo-1 at ") and outputs[1][-1].endswith(": algo-1")
    assert runner.client.networks.list(names=[network])


def test_stale_container_is_replaced(runner, docker_engine, tmp_path):
    name = unique("stale")
    spec = script_spec(tmp_path, docker_engine["base_image"], "import time; time.sleep(600)\n", name=name)
    first = runner.start(spec)
    second = runner.start(spec)  # same name: the first is removed
    assert second.id != first.id
    ids = [c.id for c in labelled(runner.client, name)]
    assert ids == [second.id]


def test_remove_and_close_leave_nothing(docker_engine, docker_client, tmp_path):
    runner = DockerRunner(base_url=docker_engine["base_url"], registry=docker_engine["registry"])
    network = unique("net") if docker_engine["networking"] == "bridge" else None
    specs = [
        script_spec(tmp_path, docker_engine["base_image"], "import time; time.sleep(600)\n", host=host, network=network)
        for host in ("algo-1", "algo-2")
    ]
    runs = [runner.start(spec) for spec in specs]
    assert all(labelled(docker_client, spec.name) for spec in specs)
    runs[0].remove()
    runs[0].remove()
    assert labelled(docker_client, specs[0].name) == []
    runner.close()
    for spec in specs:
        assert labelled(docker_client, spec.name) == []
    if network:
        assert [n for n in docker_client.networks.list(names=[network]) if n.name == network] == []


def test_cleanup_leftovers(docker_engine, docker_client, tmp_path):
    prefix = unique("leftover")
    runner = DockerRunner(base_url=docker_engine["base_url"], registry=docker_engine["registry"])
    spec = script_spec(tmp_path, docker_engine["base_image"], "import time; time.sleep(600)\n", name=f"{prefix}-algo-1")
    runner.start(spec)  # and "crash": never closed
    assert cleanup_leftovers(docker_engine["base_url"], name_prefix=prefix) == 1
    assert labelled(docker_client, spec.name) == []


def test_serving_on_a_shared_network_publishes_nothing(docker_engine, docker_client, needs_bridge, tmp_path):
    """localaws in a container (own_network.find, or LOCALAWS_DOCKER_NETWORK): a serving container joins
    localaws's network unpublished and is served at its address there, on its own port."""
    name = unique("shared")
    network = docker_client.networks.create(name, driver="bridge", labels={"localaws": "1"})
    runner = DockerRunner(base_url=docker_engine["base_url"], registry=docker_engine["registry"], shared_network=name)
    try:
        spec = script_spec(
            tmp_path,
            docker_engine["base_image"],
            """
            from http.server import BaseHTTPRequestHandler, HTTPServer
            class Handler(BaseHTTPRequestHandler):
                def do_GET(self):
                    self.send_response(200)
                    self.send_header("Content-Length", "4")
                    self.end_headers()
                    self.wfile.write(b"pong")
            HTTPServer(("0.0.0.0", 8080), Handler).serve_forever()
            """,
            ports={8080: free_port()},
        )
        running = runner.start(spec)
        address, port = running.served_at(8080)
        network.reload()
        assert port == 8080 and running.id in network.attrs["Containers"]
        assert address == network.attrs["Containers"][running.id]["IPv4Address"].split("/")[0]
        assert not docker_client.api.inspect_container(running.id)["HostConfig"]["PortBindings"]
        # This machine reaches the bridge, as localaws's container reaches its network.
        wait_until(lambda: _pongs(f"http://{address}:{port}/ping"), timeout=60, waiting_for="the shared network")
    finally:
        runner.close()
        network.remove()
