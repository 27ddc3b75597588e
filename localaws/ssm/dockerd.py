"""The Docker daemon of one command on localaws's stand-in host: what the ``docker`` on the command's PATH
(``bin/docker``) asks for, served with the runner that localaws's training jobs use.

The script of the document runs as it would on the host; its ``docker login``, ``docker pull`` and
``docker run`` come here over a socket of the command's own (``DOCKER_HOST=unix://...``, a folder only
localaws can enter), as JSON lines: the request, then the output as it comes and the exit code.

* ``login``: the registry must be an ECR registry and the password what ECR's GetAuthorizationToken gives.
* ``pull``: the runner readies the image (the engine pulls it, or the process runner builds its
  environment); a registry not logged in to refuses, as ECR does.
* ``run``: one ``-v <folder>:/opt/ml`` inside the command's folder (never elsewhere), the image's
  ``train`` (or ``serve``) started through the runner with the ``-e``/``--env-file`` environment, its
  lines streamed back, SIGTERM passed on (``signal``), the container removed at the end. Script mode on a
  SageMaker framework image: ``sagemaker_submit_directory`` is unpacked into /opt/ml/code first, where the
  framework container's toolkit would fetch it on a host (the toolkit's container here cannot reach
  localaws's S3). The accelerator flags (``--gpus``, ``--runtime``) are reported, and the runner gives
  the devices it has. Once the script has configured the host's CloudWatch agent
  (``bin/amazon-cloudwatch-agent-ctl``), the containers' use goes to CloudWatch as that agent would send it
  (``sagemaker/usage.py``'s ``agent_host``).
"""

from __future__ import annotations

import base64
import json
import logging
import re
import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path

from localaws import bodies
from localaws.sagemaker import confined, devices, usage
from localaws.sagemaker.contract import OPT_ML
from localaws.sagemaker.frameworks import source
from localaws.sagemaker.runners.base import ContainerSpec, ImageNotFound
from localaws.sagemaker.runners.hosts import Host
from localaws.sagemaker.runners.process import EnvironmentBuildError

log = logging.getLogger(__name__)

SHIM_DIR = Path(__file__).resolve().parent / "bin"
_ECR_REGISTRY = re.compile(r"^[0-9]{12}\.dkr\.ecr\.[a-z0-9-]+\.amazonaws\.com(\.cn)?$")
_MAX_REQUEST = 1 << 20
_COMMANDS = ("train", "serve")
_SOCKET_PREFIX = "localaws-docker-"


class Refused(Exception):
    """What the daemon answers instead (its message on stderr, then ``code``)."""

    def __init__(self, message: str, code: int = 125):
        super().__init__(message)
        self.code = code


class Connection:
    """One client's socket: JSON lines out, a write that fails once the client has gone."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.lock = threading.Lock()
        self.gone = False

    def send(self, message: dict) -> None:
        with self.lock:
            if self.gone:
                return
            try:
                self.sock.sendall(json.dumps(message).encode() + b"\n")
            except OSError:
                self.gone = True

    def out(self, text: str, stream: str = "stdout") -> None:
        self.send({"stream": stream, "text": text})

    def err(self, text: str) -> None:
        self.out(text.rstrip("\n") + "\n", "stderr")


class DockerDaemon:
    """Serves one command's ``docker`` until ``close``."""

    def __init__(
        self,
        clients,
        runners,
        folder: Path,
        name_suffix: str,
        instance_id: str | None = None,
        usage_seconds: float = 10.0,
    ):
        """``folder``: the command's own; /opt/ml mounts must lie inside it. Container names get
        ``name_suffix`` (two commands may run the same job name). The containers of ``instance_id`` (the
        host the command runs on) report their use as the CloudWatch agent on it would, every
        ``usage_seconds``."""
        self.clients = clients
        self.runners = runners
        self.folder = folder.resolve()
        self.suffix = name_suffix
        self.instance_id = instance_id
        self.usage_seconds = usage_seconds
        #: The host's CloudWatch agent's config, once the script has given it (``amazon-cloudwatch-agent-ctl``).
        self.agent: dict | None = None
        self.hosts: dict[str, Host] = {}
        self.logged_in: set[str] = set()
        self._lock = threading.Lock()
        self._closed = threading.Event()
        # A short folder of its own: a socket's path has at most 107 bytes, and only localaws may enter.
        _remove_dead_sockets()
        self._socket_dir = Path(tempfile.mkdtemp(prefix=_SOCKET_PREFIX))
        self.path = self._socket_dir / "docker.sock"
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._server.bind(str(self.path))
        self._server.listen(8)
        self._thread = threading.Thread(target=self._accept, name=f"dockerd-{name_suffix}", daemon=True)
        self._thread.start()

    @property
    def docker_host(self) -> str:
        return f"unix://{self.path}"

    # --- stopping what it runs ---------------------------------------------------------------------

    def terminate(self) -> None:
        with self._lock:
            hosts = list(self.hosts.values())
        for host in hosts:
            host.terminate()

    def kill_after(self, grace_seconds: float) -> None:
        with self._lock:
            hosts = list(self.hosts.values())
        for host in hosts:
            host.kill_after(grace_seconds)

    def close(self, grace_seconds: float) -> None:
        """What still runs gets SIGTERM, then SIGKILL after the grace period; the socket goes."""
        self.terminate()
        deadline = time.monotonic() + grace_seconds + 10
        while time.monotonic() < deadline:
            with self._lock:
                if all(host.poll() is not None for host in self.hosts.values()):
                    break
            self.kill_after(grace_seconds)
            time.sleep(0.2)
        with self._lock:
            hosts = list(self.hosts.values())
        for host in hosts:
            host.close()
            host.running.remove()
        self._closed.set()
        self._server.close()
        shutil.rmtree(self._socket_dir, ignore_errors=True)

    # --- serving -----------------------------------------------------------------------------------

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                sock, _ = self._server.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(sock,), name="dockerd-client", daemon=True).start()

    def _serve(self, sock: socket.socket) -> None:
        connection = Connection(sock)
        try:
            line = sock.makefile("rb").readline(_MAX_REQUEST)
            request = bodies.loads(line)
            if not isinstance(request, dict) or not isinstance(request.get("op"), str):
                raise Refused("docker: a request localaws does not understand")
            code = getattr(self, "_" + request["op"], self._unknown)(request, connection)
        except Refused as refused:
            connection.err(str(refused))
            code = refused.code
        except (bodies.NotJSON, ValueError) as error:
            connection.err(f"docker: {error}")
            code = 125
        except Exception as error:  # noqa: BLE001 - the command fails, localaws goes on
            log.exception("docker request failed")
            connection.err(f"docker: localaws failed: {type(error).__name__}: {error}")
            code = 125
        connection.send({"exit": code})
        try:
            sock.close()
        except OSError:
            pass

    @staticmethod
    def _unknown(request: dict, connection: Connection) -> int:
        raise Refused(f"docker: '{request['op']}' is not a docker command localaws serves")

    def _login(self, request: dict, connection: Connection) -> int:
        registry = str(request.get("registry", ""))
        if not _ECR_REGISTRY.match(registry):
            raise Refused(
                f'Error response from daemon: Get "https://{registry}/v2/": localaws serves ECR registries only', 1
            )
        token = self.clients.client("ecr").get_authorization_token()["authorizationData"][0]["authorizationToken"]
        user, _, password = base64.b64decode(token).decode().partition(":")
        if request.get("username") != user or request.get("password") != password:
            raise Refused(
                f"Error response from daemon: login attempt to https://{registry}/v2/ failed with "
                "status: 400 Bad Request",
                1,
            )
        self.logged_in.add(registry)
        connection.out("Login Succeeded\n")
        return 0

    def _ready(self, image: str):
        registry = image.split("/", 1)[0]
        if _ECR_REGISTRY.match(registry) and registry not in self.logged_in:
            raise Refused(f'Error response from daemon: Head "https://{registry}/v2/": no basic auth credentials', 1)
        try:
            return self.runners(image)
        except (ImageNotFound, EnvironmentBuildError) as error:
            raise Refused(f"Error response from daemon: {error}", 1) from None

    def _agent(self, request: dict, connection: Connection) -> int:
        """``amazon-cloudwatch-agent-ctl`` (``bin/``): the agent's config taken (``fetch-config``), dropped
        (``stop``), or its state told (``status``), as the agent's own ctl does."""
        action = request.get("action")
        if action == "fetch-config":
            config = request.get("config")
            metrics = config.get("metrics") if isinstance(config, dict) else None
            collected = metrics.get("metrics_collected") if isinstance(metrics, dict) else None
            if not isinstance(config, dict) or not isinstance(metrics, dict) or not isinstance(collected, dict):
                raise Refused("amazon-cloudwatch-agent-ctl: the config collects no metrics (metrics_collected)", 1)
            self.agent = config
            where = f" of {self.instance_id}" if self.instance_id else ""
            connection.out(
                f"[localaws] the CloudWatch agent{where} collects {', '.join(sorted(collected))} into "
                f"{metrics.get('namespace', usage.AGENT_NAMESPACE)}, every {self.usage_seconds:g} s\n"
            )
            return 0
        if action == "stop":
            self.agent = None
            return 0
        if action == "status":
            connection.out(json.dumps({"status": "running" if self.agent else "stopped"}) + "\n")
            return 0
        raise Refused(f"amazon-cloudwatch-agent-ctl: localaws serves fetch-config, stop and status, not {action}", 1)

    def _pull(self, request: dict, connection: Connection) -> int:
        image = str(request.get("image", ""))
        self._ready(image)
        connection.out(f"{image}\n" if request.get("quiet") else f"Status: Image is up to date for {image}\n")
        return 0

    def _signal(self, request: dict, connection: Connection) -> int:
        with self._lock:
            host = self.hosts.get(str(request.get("name", "")))
        if host is not None and request.get("signal") in ("SIGTERM", "SIGINT"):
            host.terminate()
        return 0

    def _opt_ml(self, volumes) -> Path:
        """The one ``-v <folder>:/opt/ml``: a folder inside the command's own."""
        if not isinstance(volumes, list) or len(volumes) != 1 or not isinstance(volumes[0], str):
            raise Refused("docker: localaws runs a container with exactly one volume, -v <folder>:/opt/ml")
        folder, _, target = volumes[0].rpartition(":")
        if target.rstrip("/") != OPT_ML or not folder:
            raise Refused(f"docker: localaws mounts a folder at {OPT_ML} only, not {volumes[0]}")
        root = Path(folder).resolve()
        if not root.is_relative_to(self.folder) or not root.is_dir():
            raise Refused(f"docker: invalid mount {volumes[0]}: not a folder of this command's")
        return root

    def _place_source(self, image: str, root: Path, connection: Connection) -> None:
        config = root / "input" / "config" / "hyperparameters.json"
        try:
            hyperparameters = json.loads(confined.read_text(root, config) or "{}")
        except ValueError:
            return
        uri = source.submit_directory(image, hyperparameters if isinstance(hyperparameters, dict) else {})
        if uri is None:
            return
        connection.err(f"[localaws] script mode: {uri} into /opt/ml/code (on a host, the image's toolkit fetches it)")
        try:
            source.fetch(self.clients.s3, uri, self._socket_dir / "sourcedir.tar.gz", [root / "code"])
        except source.SourceUnavailable as error:
            raise Refused(f"AlgorithmError: {error}", 1) from None

    def _run(self, request: dict, connection: Connection) -> int:
        image = str(request.get("image", ""))
        command = request.get("command") or []
        if command not in ([c] for c in _COMMANDS):
            raise Refused(f"docker: localaws runs an image's {' or '.join(_COMMANDS)}, not {command}")
        root = self._opt_ml(request.get("volumes"))
        env = request.get("env") or {}
        if not isinstance(env, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in env.items()):
            raise Refused("docker: the environment must be names and strings")
        runner = self._ready(image)
        accelerator = [str(flag) for flag in request.get("flags", []) if str(flag).startswith(("--gpus", "--runtime"))]
        grant = None
        if accelerator:
            # The document's --gpus all / --runtime=habana: every device of that kind this machine has.
            kind = devices.HABANA if any("habana" in flag for flag in accelerator) else devices.NVIDIA
            grant = devices.every(kind)
            given = (
                f"it gets this machine's {grant.count} {kind} devices"
                if grant.count
                else f"this machine has no {kind} device: it runs on the CPU"
            )
            connection.err(f"[localaws] {' '.join(accelerator)}: {given}")
        self._place_source(image, root, connection)
        given = str(request.get("name") or "container")
        name = f"{given}-{self.suffix}"
        with self._lock:
            if given in self.hosts:
                raise Refused(
                    f'docker: Error response from daemon: Conflict. The container name "/{given}" is already in use',
                    125,
                )
        spec = ContainerSpec(
            image=image,
            command=command[0],
            host_dir=root,
            host_name=str(request.get("hostname") or given),
            env=dict(env),
            name=name,
            devices=grant,
        )
        try:
            running = runner.start(spec)
        except (ImageNotFound, EnvironmentBuildError) as error:
            raise Refused(f"docker: Error response from daemon: {error}", 125) from None
        host = Host(running, connection.out, name)
        sampler = (
            usage.agent_host(self.clients, self.instance_id, self.agent, running, root, grant, self.usage_seconds)
            if self.instance_id and self.agent
            else None
        )
        with self._lock:
            self.hosts[given] = host
        try:
            while (code := host.wait(0.2)) is None:
                if connection.gone or self._closed.is_set():  # the client went (killed): so does the container
                    running.kill()
            host.close()
            return code
        finally:
            if sampler is not None:
                sampler.close()
            running.remove()
            with self._lock:
                self.hosts.pop(given, None)


def _remove_dead_sockets() -> None:
    """The socket folders a killed localaws left: nothing listens on them any more (and they are not
    one being made, between its bind and its listen)."""
    for folder in Path(tempfile.gettempdir()).glob(_SOCKET_PREFIX + "*"):
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            if time.time() - folder.stat().st_mtime < 60:
                continue
            probe.connect(str(folder / "docker.sock"))
        except ConnectionRefusedError:
            shutil.rmtree(folder, ignore_errors=True)
        except OSError:
            pass  # not ours to judge (not a socket, not ours to enter, just being made)
        finally:
            probe.close()
