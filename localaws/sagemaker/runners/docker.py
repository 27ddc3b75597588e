"""Run SageMaker images as Docker containers, the way SageMaker does.

``docker run <image> train|serve`` with the host's ``/opt/ml`` tree bind-mounted
at ``/opt/ml``, SageMaker's environment, the host name (``algo-1``...) as the
container's host name and, for multi-host jobs, a user-defined bridge network on
which every host is reachable by its name. Serving ports are published on
127.0.0.1 only.

Images are named as in ECR (``<account>.dkr.ecr.<region>.amazonaws.com/<repo>:<tag>``);
a local registry (``LOCALAWS_REGISTRY``, default ``127.0.0.1:5000``) stands in
for ECR: an image the engine lacks is pulled from ``<registry>/<repo>:<tag>`` and
tagged with its ECR name.

A SageMaker framework image (PyTorch, scikit-learn: ``frameworks.recognise``) runs as our own
stand-in, built from ``frameworks/container`` on the base image at first use and kept in the engine
as ``localaws/framework-<framework>:<context hash>``.

Every container and network carries the label ``localaws=1``, and the runner's own labels (the
work dir of the localaws that made it), so leftovers of a crashed run can be found
(``cleanup_leftovers``).
"""

from __future__ import annotations

import logging
import os
import re
import socket
import struct
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import docker
import docker.errors
import docker.types
import requests.exceptions
import urllib3.exceptions
from docker.utils import parse_repository_tag

from localaws.image_contexts import ECR_IMAGE
from localaws.sagemaker import frameworks
from localaws.sagemaker.contract import OPT_ML
from localaws.sagemaker.devices import HABANA, NVIDIA, Grant
from localaws.sagemaker.runners import own_network
from localaws.sagemaker.runners.base import ContainerSpec, ImageNotFound, Running, Runner, Usage

log = logging.getLogger(__name__)

REGISTRY_ENV = "LOCALAWS_REGISTRY"
DEFAULT_REGISTRY = "127.0.0.1:5000"
LABEL = "localaws"
NAME_LABEL = "localaws.name"


_STREAM_HEADER = struct.Struct(">BxxxL")


def _client(base_url: str | None = None, timeout: float = 300) -> docker.DockerClient:
    if base_url:
        return docker.DockerClient(base_url=base_url, timeout=timeout, max_pool_size=32)
    return docker.from_env(timeout=timeout, max_pool_size=32)


def engine_available(base_url: str | None = None) -> bool:
    """Whether a Docker engine answers (at ``base_url``, else as ``DOCKER_HOST`` or the default socket says); < 1 s."""
    try:
        client = docker.DockerClient(
            base_url=base_url or os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock",
            timeout=0.8,
            version="1.41",  # no version round trip: one ping
        )
    except Exception:  # noqa: BLE001 - any failure to reach an engine means there is none
        return False
    try:
        return bool(client.ping())
    except Exception:  # noqa: BLE001 - as above
        return False
    finally:
        client.close()


def cleanup_leftovers(
    base_url: str | None = None, name_prefix: str | None = None, labels: dict[str, str] | None = None
) -> int:
    """Force-remove containers labelled ``localaws=1`` (only those named ``name_prefix...``, and
    carrying ``labels``, if given), then unused networks so labelled; returns how many containers
    were removed."""
    client = _client(base_url, timeout=60)
    removed = 0
    wanted = {"label": [f"{LABEL}=1"] + [f"{key}={value}" for key, value in (labels or {}).items()]}
    try:
        for container in client.containers.list(all=True, filters=wanted):
            if name_prefix and not container.name.startswith(name_prefix):
                continue
            try:
                container.remove(force=True)
                removed += 1
            except docker.errors.NotFound:
                pass
            except docker.errors.APIError as error:
                log.warning("could not remove leftover container %s: %s", container.name, error)
        for network in client.networks.list(filters=wanted):
            if name_prefix and not network.name.startswith(name_prefix):
                continue
            try:
                network.remove()
            except docker.errors.NotFound:
                pass
            except docker.errors.APIError as error:
                log.warning("could not remove leftover network %s: %s", network.name, error)
    finally:
        client.close()
    return removed


def _accelerators(devices: Grant | None, environment: dict) -> dict:
    """``docker run --gpus <count>`` for NVIDIA GPUs; Habana's runtime (as Habana documents its
    ``docker run``) for Gaudi cards."""
    if devices is None or not devices.count:
        return {}
    if devices.kind == NVIDIA:
        return {"device_requests": [docker.types.DeviceRequest(count=devices.count, capabilities=[["gpu"]])]}
    if devices.kind == HABANA:
        environment["HABANA_VISIBLE_DEVICES"] = devices.visible
        environment.setdefault("OMPI_MCA_btl_vader_single_copy_mechanism", "none")
        return {"runtime": "habana", "cap_add": ["SYS_NICE"], "ipc_mode": "host"}
    return {}


def _command(spec: ContainerSpec) -> list[str] | None:
    """``docker run``'s command: the arguments where given; none after an entrypoint of the job's own
    (it replaces the image's CMD too); else ``train``/``serve``, or None: the image's own CMD."""
    if spec.arguments is not None:
        return list(spec.arguments)
    if spec.entrypoint:
        return []
    return [spec.command] if spec.command else None


def _cut(sock) -> None:
    """End a stream being read in another thread: its read returns what it has, then the end."""
    if sock is not None:
        try:  # the SDK hands out the socket's file (SocketIO) for a unix or tcp engine
            getattr(sock, "_sock", sock).shutdown(socket.SHUT_RDWR)
        except (OSError, AttributeError):  # closed already
            pass


class DockerRunning(Running):
    """One container started by a ``DockerRunner``."""

    def __init__(self, runner: "DockerRunner", container, spec: ContainerSpec):
        self._runner = runner
        self.container = container
        self.spec = spec
        self.ports = dict(spec.ports)
        self.name = spec.name
        #: The shared network it was attached to instead of publishing its ports (runner.shared_network).
        self.shared_network: str | None = None
        self._shared_address: str | None = None
        self._exit_code: int | None = None
        self._removed = False
        #: Set when the watch below ends: the container exited (or is gone, or the engine stopped answering).
        self._ended = threading.Event()
        self._follow_lock = threading.Lock()
        self._following = None  # the socket of the log stream lines() follows

    def watch(self) -> None:
        """Hold one ``wait`` request open to the engine until the container exits, in a thread of its
        own from its start: ``wait()`` is then an event, never a poll of the container's state."""
        threading.Thread(target=self._watch, name=f"exit-{self.name}", daemon=True).start()

    def _watch(self) -> None:
        try:
            while True:
                try:
                    result = self.container.wait(timeout=None)  # no read timeout: a job runs for days
                except (requests.exceptions.ReadTimeout, requests.exceptions.ConnectionError):
                    if self._removed:
                        return
                    time.sleep(0.5)  # the engine restarting: ask again
                    continue
                with self._follow_lock:
                    self._exit_code = int(result.get("StatusCode", -1))
                    following = self._following
                # The engine ends a follow only at its next look at the log file (up to 200 ms later,
                # its file watcher polls): end it now, lines() reads the rest of the log itself.
                _cut(following)
                return
        except docker.errors.DockerException:  # removed (404) or refused: wait() asks the engine itself
            log.debug("watching %s ended", self.name, exc_info=True)
        finally:
            self._ended.set()

    @property
    def id(self) -> str:
        return self.container.id

    def _frames(self, follow: bool) -> Iterator[tuple[int, bytes]]:
        """(stream, bytes) frames of the container's log: 1 stdout, 2 stderr."""
        api = self._runner.client.api
        response = api._get(
            api._url("/containers/{0}/logs", self.container.id),
            params={"stdout": 1, "stderr": 1, "follow": int(follow), "timestamps": 0},
            stream=True,
        )
        try:
            api._raise_for_status(response)
        except docker.errors.APIError as error:
            response.close()
            # 404: removed; 409: dead or being removed. Either way there is no log left to read.
            if error.status_code in (404, 409):
                return
            raise
        sock = api._get_raw_response_socket(response)
        # A quiet process must not time the stream out.
        api._disable_socket_timeout(sock)
        if follow:
            with self._follow_lock:
                self._following = sock
                exited = self._exit_code is not None
            if exited:
                _cut(sock)
        try:
            while True:
                try:
                    header = response.raw.read(_STREAM_HEADER.size)
                    if len(header) < _STREAM_HEADER.size:
                        return
                    stream, length = _STREAM_HEADER.unpack(header)
                    if not length:
                        continue
                    data = response.raw.read(length)
                except (urllib3.exceptions.HTTPError, OSError):
                    if follow:  # cut at the exit, or broken: lines() reads the rest once it has exited
                        return
                    raise
                if not data:
                    return
                yield stream, data
        finally:
            if follow:
                with self._follow_lock:
                    self._following = None
            response.close()

    def lines(self) -> Iterator[str]:
        """Stdout and stderr lines as they are written (each stream split on its own); ends when the container exits.

        Order holds within a stream; across stdout and stderr it is only as good as Docker's.
        """
        buffers: dict[int, bytes] = {}
        received: dict[int, int] = {}

        def split(stream: int, data: bytes) -> list[bytes]:
            *complete, buffers[stream] = (buffers.get(stream, b"") + data).split(b"\n")
            return complete

        for stream, data in self._frames(follow=True):
            received[stream] = received.get(stream, 0) + len(data)
            for line in split(stream, data):
                yield line.decode("utf-8", "replace").rstrip("\r")
        # Docker ends a follow when the container stops, which can be before it has logged
        # what the process wrote last (a final line without a newline, for one): once it has
        # exited, read the whole log again and take what the follow missed.
        if self.wait(timeout=30) is not None:
            seen: dict[int, int] = {}
            for stream, data in self._frames(follow=False):
                offset = seen.get(stream, 0)
                seen[stream] = offset + len(data)
                skip = received.get(stream, 0) - offset
                if skip >= len(data):
                    continue
                for line in split(stream, data[max(skip, 0) :]):
                    yield line.decode("utf-8", "replace").rstrip("\r")
        for pending in buffers.values():
            if pending:
                yield pending.decode("utf-8", "replace").rstrip("\r")

    def wait(self, timeout: float | None = None) -> int | None:
        if self._ended.wait(timeout) and self._exit_code is None:  # the watch ended without a code
            try:
                self.container.reload()
            except docker.errors.NotFound:
                return None
            if self.container.status in ("exited", "dead"):
                self._exit_code = int(self.container.attrs["State"]["ExitCode"])
        return self._exit_code

    def usage(self) -> Usage | None:
        """The container's cgroup figures from the engine's stats, one-shot: one request of about 10-20 ms
        (without one-shot the engine takes two samples a second apart). The engine refreshes them once a
        second; asked sooner, it answers at its next refresh."""
        if self._exit_code is not None or self._removed:
            return None
        try:
            stats = self._runner.client.api.stats(self.container.id, stream=False, one_shot=True)
        except (docker.errors.DockerException, requests.exceptions.RequestException):
            return None
        cpu = ((stats.get("cpu_stats") or {}).get("cpu_usage") or {}).get("total_usage")
        memory = stats.get("memory_stats") or {}
        if not cpu and not memory.get("usage"):  # not running: the engine answers zeros
            return None
        # What `docker stats` shows: the cgroup's usage less its inactive page cache (v1 and v2 name it apart).
        cache = (memory.get("stats") or {}).get(
            "total_inactive_file", (memory.get("stats") or {}).get("inactive_file", 0)
        )
        return Usage(
            cpu_seconds=(cpu or 0) / 1e9,
            memory_bytes=max(0, int(memory.get("usage") or 0) - int(cache or 0)),
            memory_total_bytes=int(memory.get("limit") or 0),
        )

    def served_at(self, port: int) -> tuple[str, int]:
        """The published 127.0.0.1 port; on a shared network, its address there and its own port."""
        if self.shared_network is None:
            return super().served_at(port)
        if self._shared_address is None:
            self.container.reload()
            networks = (self.container.attrs.get("NetworkSettings") or {}).get("Networks") or {}
            address = (networks.get(self.shared_network) or {}).get("IPAddress")
            if not address:
                raise RuntimeError(f"container {self.name} has no address on network {self.shared_network}")
            self._shared_address = address
        return self._shared_address, int(port)

    def own_address(self) -> str | None:
        try:
            self.container.reload()
        except docker.errors.DockerException:
            return None
        settings = self.container.attrs.get("NetworkSettings") or {}
        networks = (settings.get("Networks") or {}).values()
        addresses = [settings.get("IPAddress")] + [network.get("IPAddress") for network in networks]
        return next((address for address in addresses if address), None)  # none with host networking

    def _signal(self, signal: str) -> None:
        if self._exit_code is not None:  # exited: nothing to signal, no request to make
            return
        try:
            self.container.kill(signal=signal)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as error:
            if error.status_code != 409:  # 409: not running
                raise

    def terminate(self) -> None:
        self._signal("SIGTERM")

    def kill(self) -> None:
        self._signal("SIGKILL")

    def remove(self) -> None:
        if self._removed:
            return
        try:
            self.container.remove(force=True)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as error:
            if "already in progress" not in str(error):
                raise
        self._removed = True
        self._runner._forget(self)


class DockerRunner(Runner):
    """Starts containers on a Docker engine, pulling images from the local registry standing in for ECR."""

    def __init__(
        self,
        base_url: str | None = None,
        registry: str | None = None,
        client: docker.DockerClient | None = None,
        labels: dict[str, str] | None = None,
        shared_network: str | None | bool = True,
    ):
        self.client = client or _client(base_url)
        #: Where localaws runs in a container of this engine (or LOCALAWS_DOCKER_NETWORK says): the network
        #: serving containers join, unpublished, for localaws to reach them; None: publish on 127.0.0.1.
        #: ``True``: find it (own_network.find); a name or None: as given.
        self.shared_network = own_network.find(self.client) if shared_network is True else shared_network or None
        self.labels = {LABEL: "1", **(labels or {})}
        self._own_client = client is None
        self.registry = (registry or os.environ.get(REGISTRY_ENV) or DEFAULT_REGISTRY).rstrip("/")
        for prefix in ("http://", "https://"):
            if self.registry.startswith(prefix):
                self.registry = self.registry[len(prefix) :]
        self._lock = threading.RLock()
        self._image_locks: dict[str, threading.Lock] = {}
        self._running: dict[str, DockerRunning] = {}  # container id -> started here
        self._networks: dict[str, Any] = {}  # name -> networks created here (the SDK's Network)

    # -- images ----------------------------------------------------------------

    def _has_image(self, name: str) -> bool:
        try:
            self.client.images.get(name)
            return True
        except docker.errors.ImageNotFound:
            return False
        except docker.errors.APIError as error:
            if error.status_code == 404:
                return False
            raise

    def _pull(self, reference: str):
        repository, tag = parse_repository_tag(reference)
        if tag and tag.startswith("sha256:"):
            return self.client.images.pull(f"{repository}@{tag}")
        return self.client.images.pull(repository, tag=tag or "latest")

    def resolve_image(self, image: str) -> str:
        """The name to run ``image`` as, pulling it first if the engine lacks it; ``ImageNotFound`` if impossible."""
        with self._lock:
            lock = self._image_locks.setdefault(image, threading.Lock())
        with lock:  # hosts of one job start together: pull once
            framework = frameworks.recognise(image)
            if framework is not None:
                return self._framework_image(framework)
            if self._has_image(image):
                return image
            match = ECR_IMAGE.match(image)
            if match:
                return self._pull_from_registry(image, match)
            try:
                self._pull(image)
            except (docker.errors.DockerException, requests.exceptions.RequestException) as error:
                raise ImageNotFound(
                    f"image {image} is not in the Docker engine and could not be pulled: {error}"
                ) from error
            return image

    def _framework_image(self, framework: frameworks.FrameworkImage) -> str:
        """Our stand-in for a SageMaker framework image, built on the base image on first use."""
        reason = frameworks.unsupported(framework)
        if reason:
            raise ImageNotFound(reason)
        name = framework.local_name
        if self._has_image(name):
            return name
        base = frameworks.base_image()
        if not self._has_image(base):
            raise ImageNotFound(
                f"{framework.uri} runs as localaws's own {framework.framework} image, built on {base}, which the "
                f"Docker engine lacks: build it with `scripts/docker-engine.sh base-image` (or set "
                f"{frameworks.BASE_IMAGE_ENV} to an image with Python 3, numpy, torch and scikit-learn)."
            )
        log.info("building %s for %s on %s", name, framework.uri, base)
        output: list[str] = []
        try:
            # No localaws labels on the image: its containers would inherit them, and leftovers
            # cleanup would take a container someone else started from it for one of ours.
            for event in self.client.api.build(
                path=str(frameworks.CONTAINER_CONTEXT),
                tag=name,
                rm=True,
                forcerm=True,
                pull=False,
                decode=True,
                buildargs={"BASE_IMAGE": base, "FRAMEWORK": framework.framework},
            ):
                output.append(event.get("stream", ""))
                if "error" in event:
                    raise ImageNotFound(
                        f"building {name} for {framework.uri} failed: {event['error']}\n{''.join(output)[-2000:]}"
                    )
        except (docker.errors.DockerException, requests.exceptions.RequestException) as error:
            raise ImageNotFound(f"building {name} for {framework.uri} failed: {error}") from error
        return name

    def _pull_from_registry(self, image: str, match: re.Match) -> str:
        repository, tag, digest = match["repository"], match["tag"], match["digest"]
        source = f"{self.registry}/{repository}" + (f"@{digest}" if digest else f":{tag or 'latest'}")
        log.info("pulling %s from the local registry as %s", image, source)
        try:
            pulled = self._pull(source)
        except (docker.errors.DockerException, requests.exceptions.RequestException) as error:
            raise ImageNotFound(
                f"image {image} is not in the Docker engine, and {source} could not be pulled from the "
                f"local registry standing in for ECR ({self.registry}): {error}. Push it there first "
                f"(docker tag ... {self.registry}/{repository}:<tag> && docker push ...)."
            ) from error
        if digest:  # a digest cannot be a tag: run the pulled reference itself
            return source
        ecr_repository = image.rsplit(":", 1)[0] if tag else image
        pulled.tag(ecr_repository, tag=tag or "latest")
        return image

    # -- networks ---------------------------------------------------------------

    def _ensure_network(self, name: str) -> None:
        with self._lock:
            if name in self._networks:
                return
            existing = [n for n in self.client.networks.list(names=[name]) if n.name == name]
            if existing:
                return
            try:
                network = self.client.networks.create(
                    name, driver="bridge", check_duplicate=True, labels=dict(self.labels)
                )
            except docker.errors.APIError as error:
                if error.status_code == 409:  # created meanwhile by someone else
                    return
                raise
            self._networks[name] = network

    # -- containers -------------------------------------------------------------

    def opt_ml_for(self, spec_host_dir: Path) -> Path:
        return Path(OPT_ML)

    def _remove_stale(self, name: str) -> None:
        try:
            stale = self.client.containers.get(name)
        except docker.errors.NotFound:
            return
        log.warning("removing stale container %s (%s)", name, stale.short_id)
        try:
            stale.remove(force=True)
        except docker.errors.NotFound:
            pass

    def start(self, spec: ContainerSpec) -> DockerRunning:
        image = self.resolve_image(spec.image)
        host_dir = Path(spec.host_dir).resolve()
        host_dir.mkdir(parents=True, exist_ok=True)
        self._remove_stale(spec.name)
        options = self.create_options(spec, image, host_dir)
        container = self.client.containers.create(**options)
        running = DockerRunning(self, container, spec)
        if spec.ports and not options["ports"]:
            running.shared_network = self.shared_network
        with self._lock:
            self._running[container.id] = running
        try:
            container.start()
        except Exception:
            running.remove()
            raise
        running.watch()
        return running

    def create_options(self, spec: ContainerSpec, image: str, host_dir: Path) -> dict:
        """What ``docker create`` is given for ``spec`` (the SDK's ``containers.create`` arguments)."""
        kwargs: dict = dict(
            image=image,
            command=_command(spec),
            entrypoint=spec.entrypoint,
            name=spec.name,
            hostname=spec.host_name,
            environment=dict(spec.env),
            volumes={str(host_dir): {"bind": OPT_ML, "mode": "rw"}},
            labels={**self.labels, NAME_LABEL: spec.name},
            ports={f"{inside}/tcp": ("127.0.0.1", int(outside)) for inside, outside in spec.ports.items()},
            extra_hosts=dict(spec.extra_hosts) or None,
            detach=True,
        )
        if spec.ports and not spec.network and self.shared_network:
            # A port published on the engine host's 127.0.0.1 is out of reach of localaws's container
            # (and one free in here may be taken there): join its network, publish nothing.
            kwargs["ports"] = {}
            kwargs["network"] = self.shared_network
        if spec.network:
            self._ensure_network(spec.network)
            kwargs["network"] = spec.network
            kwargs["networking_config"] = {
                spec.network: self.client.api.create_endpoint_config(aliases=[spec.host_name])
            }
        kwargs.update(_accelerators(spec.devices, kwargs["environment"]))
        return kwargs

    def _forget(self, running: DockerRunning) -> None:
        with self._lock:
            self._running.pop(running.container.id, None)

    def close(self) -> None:
        """Remove every container and network this runner created."""
        with self._lock:
            running = list(self._running.values())
            networks = list(self._networks.items())
            self._networks.clear()
        for item in running:
            try:
                item.remove()
            except Exception as error:  # noqa: BLE001 - keep cleaning up
                log.warning("could not remove container %s: %s", item.name, error)
        for name, network in networks:
            try:
                network.remove()
            except docker.errors.NotFound:
                pass
            except docker.errors.APIError as error:
                log.warning("could not remove network %s: %s", name, error)
        if self._own_client:
            self.client.close()
