"""Serving instances: each one a real container or process per model container.

An instance of a variant runs, for every container of the variant's model, the
image's ``serve`` entry with the model artifact unpacked into ``/opt/ml/model``,
the container's ``Environment`` set, and its port 8080 published on its own
127.0.0.1 port (the process runner passes that port as ``SAGEMAKER_BIND_TO_PORT``).
It is healthy once every container answers ``GET /ping`` with 200 (each ping
times out after 2 s); it stops with SIGTERM, then SIGKILL after a grace period,
once the requests in flight to it have been answered (drained).

A transform job's instances start, ping and stop their model containers with the same functions
(``start_model_container``, ``wait_for_ping``, ``stop_containers``: see ``transform/executor.py``).
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tarfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from botocore.exceptions import BotoCoreError, ClientError

from localaws.sagemaker import archives, devices, frameworks, s3io, usage
from localaws.sagemaker.contract import SERVING_PORT
from localaws.sagemaker.frameworks import source
from localaws.sagemaker.hosting.logs import LogShipper, log_group
from localaws.sagemaker.hosting.upstream import ConnectionPool
from localaws.sagemaker.runners.base import ContainerSpec, ImageNotFound, Running
from localaws.sagemaker.runners.hosts import free_port, pump
from localaws.sagemaker.runners.process import EnvironmentBuildError

log = logging.getLogger(__name__)

PING_TIMEOUT_SECONDS = 2.0
_DIRECT_CONNECT_SECONDS = 0.25
#: Pings while an instance starts: every 20 ms for its first 2 s (a small server is up a few hundred ms
#: after its container starts, and the endpoint should serve from then), then slowing to every 0.5 s
#: for one that takes its time (a large model loading).
_FIRST_PING_INTERVAL_SECONDS = 0.02
_PING_INTERVAL_SECONDS = 0.5
_NAME_PREFIX = "localaws-ep"


class LaunchFailed(Exception):
    """An instance could not start or never became healthy: this is the FailureReason."""


def instance_id() -> str:
    return "i-" + uuid.uuid4().hex[:17]


def container_name(endpoint: str, variant: str, instance: str, index: int) -> str:
    return f"{_NAME_PREFIX}-{endpoint}-{variant}-{instance}-{index + 1}"


def endpoint_name_prefix(endpoint: str) -> str:
    """What the names of an endpoint's containers and processes start with."""
    return f"{_NAME_PREFIX}-{endpoint}-"


class ModelStore:
    """Model artifacts from S3, downloaded and unpacked once per object version."""

    def __init__(self, root: Path, clients):
        self.root = root
        self.clients = clients
        self._locks: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()

    def fetch(self, container: dict, index: int) -> Path | None:
        """The unpacked model directory of a container, or None when it has no model data."""
        url = container.get("ModelDataUrl")
        source = (container.get("ModelDataSource") or {}).get("S3DataSource") or {}
        if not url and not source:
            return None
        uri = url or source["S3Uri"]
        compressed = bool(url) or source.get("CompressionType", "None") == "Gzip"
        prefix = bool(source) and source.get("S3DataType") == "S3Prefix"
        failure = (
            f'Failed to download model data for container "container_{index + 1}" from URL: "{uri}". '
            "Please ensure that there is an object located at the URL and that the role passed to "
            "CreateModel has permissions to download the object."
        )
        s3 = self.clients.s3
        try:
            bucket, key = s3io.split_uri(uri)
            if prefix and not compressed:
                listing = s3.list_objects_v2(Bucket=bucket, Prefix=key).get("Contents", [])
                version = "|".join(f"{o['Key']}:{o['ETag']}" for o in listing)
                if not listing:
                    raise LaunchFailed(failure)
            else:
                version = s3.head_object(Bucket=bucket, Key=key)["ETag"]
        except (ClientError, BotoCoreError, ValueError):
            raise LaunchFailed(failure) from None
        digest = hashlib.sha256(f"{uri}\n{version}".encode()).hexdigest()[:20]
        target = self.root / digest
        with self._lock:
            lock = self._locks.setdefault(digest, threading.Lock())
        with lock:
            if target.exists():
                return target
            staging = self.root / f"{digest}.partial"
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir(parents=True)
            try:
                if prefix and not compressed:
                    objects = [
                        (bucket, o["Key"], o["Key"][len(key) :].lstrip("/") or os.path.basename(o["Key"]))
                        for o in listing
                        if not o["Key"].endswith("/")
                    ]
                    try:
                        s3io.download(s3, objects, staging)
                    except s3io.DataDownloadError as error:
                        raise LaunchFailed(
                            f'Failed to download model data for container "container_{index + 1}" from URL: '
                            f'"{uri}". {error}'
                        ) from None
                else:
                    archive = self.root / f"{digest}.tar.gz"
                    s3io.get_file(s3, bucket, key, archive)
                    try:
                        archives.extract(archive, staging, MODEL_IN_CONTAINER, "model")
                    except (tarfile.TarError, OSError) as error:
                        raise LaunchFailed(
                            f'Failed to extract model data archive from URL "{uri}". Please ensure that the '
                            f"object located at the URL is a valid tar.gz archive ({error})."
                        ) from None
                    finally:
                        archive.unlink(missing_ok=True)
            except (ClientError, BotoCoreError):
                shutil.rmtree(staging, ignore_errors=True)
                raise LaunchFailed(failure) from None
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
            staging.rename(target)
        return target


#: Where the container sees its model: an absolute link into it is a link inside the model folder.
MODEL_IN_CONTAINER = "/opt/ml/model"


def _link_tree(source: Path, target: Path) -> None:
    """Copy a directory by hard links (a copy where links cannot be made)."""

    def link(src, dst):
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    shutil.copytree(source, target, copy_function=link, dirs_exist_ok=True)


@dataclass
class Container:
    """One model container of an instance: a container or a process, on its own 127.0.0.1 port (or,
    localaws in a container, at the container's address on their shared network: ``Running.served_at``)."""

    hostname: str
    port: int
    running: Running
    host_dir: Path
    shipper: LogShipper
    reader: threading.Thread
    pool: ConnectionPool  # invocations
    ping_pool: ConnectionPool  # health checks, each timing out after 2 s

    def ping(self) -> bool:
        try:
            return self.ping_pool.request("GET", "/ping").status == 200
        except Exception:  # noqa: BLE001 - refused, reset or timed out: not healthy
            return False

    def route_directly(self) -> None:
        """Send invocations to the container's own address when this machine reaches it (a Linux
        engine's bridge), as SageMaker's front end reaches an instance on its network: the published
        port passes each request through the engine's userland proxy (about 0.25 ms a request here)."""
        if self.pool.host != "127.0.0.1":  # served at its address on a shared network already
            return
        address = self.running.own_address()
        if not address:
            return
        # A bridge connects in well under a millisecond; a container that died leaves an address that
        # answers nothing (no refusal), so the router learns it within this and tries another instance.
        direct = ConnectionPool(SERVING_PORT, _DIRECT_CONNECT_SECONDS, self.pool.read_timeout, host=address)
        try:
            reachable = direct.request("GET", "/ping").status == 200
        except Exception:  # noqa: BLE001 - not routable from here (Docker Desktop, a remote engine)
            reachable = False
        if not reachable:
            direct.close()
            return
        published, self.pool = self.pool, direct
        published.close()

    def describe(self) -> dict:
        out = {
            "ContainerHostname": self.hostname,
            "Port": self.port,
            "InvokedAt": f"{self.pool.host}:{self.pool.port}",
        }  # the published port, or its own address
        process = getattr(self.running, "process", None)
        if process is not None:
            out["Pid"] = process.pid
        container = getattr(self.running, "container", None)
        if container is not None:
            out["ContainerId"] = container.id
        return out


@dataclass
class Instance:
    """One ML instance of a variant: its containers, the requests in flight to it."""

    id: str
    endpoint: str
    variant: str
    containers: list[Container] = field(default_factory=list)
    mode: str = "Serial"  # a multi-container model's InferenceExecutionConfig
    started: float = field(default_factory=time.time)
    inflight: int = 0
    served: int = 0  # requests routed to it, ever
    accepting: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)
    ping_failures: int = 0
    sampler: usage.UsageSampler | None = None  # its CPU, memory, disk and GPU figures, from its start

    def acquire(self) -> bool:
        """Count a request in; False once the instance is draining or stopped."""
        with self.lock:
            if not self.accepting:
                return False
            self.inflight += 1
            self.served += 1
            return True

    def release(self) -> None:
        with self.lock:
            self.inflight -= 1

    def ping(self) -> bool:
        return all(container.ping() for container in self.containers)

    def exit_code(self) -> int | None:
        for container in self.containers:
            code = container.running.wait(0)
            if code is not None:
                return code
        return None

    def drain(self, timeout: float) -> None:
        """Stop taking requests and wait for those in flight to be answered."""
        with self.lock:
            self.accepting = False
        deadline = time.monotonic() + timeout
        while self.inflight > 0 and time.monotonic() < deadline:
            time.sleep(0.02)

    def stop(self, grace: float) -> None:
        """SIGTERM, SIGKILL after ``grace`` seconds, then remove everything it holds."""
        with self.lock:
            self.accepting = False
        if self.sampler is not None:
            self.sampler.close()  # its last sample, while its containers can still be read
        stop_containers(self.containers, grace)

    def describe(self) -> dict:
        return {
            "InstanceId": self.id,
            "VariantName": self.variant,
            "Containers": [container.describe() for container in self.containers],
            "InFlight": self.inflight,
            "Served": self.served,
            "Accepting": self.accepting,
        }


def stop_containers(containers: list[Container], grace: float) -> None:
    """Stop model containers as SageMaker stops an instance's: SIGTERM, SIGKILL after ``grace`` seconds,
    then everything they hold removed (their connections, log shipping, host folders)."""
    for container in containers:
        # Idle kept-alive connections first: a server stopping gracefully waits for them.
        container.pool.close()
        container.ping_pool.close()
    for container in containers:
        try:
            container.running.terminate()
        except Exception:  # noqa: BLE001 - already gone
            log.debug("terminate of %s failed", container.hostname, exc_info=True)
    deadline = time.monotonic() + grace
    for container in containers:
        remaining = max(0.0, deadline - time.monotonic())
        if container.running.wait(remaining) is None:
            container.running.kill()
            container.running.wait(10)
    for container in containers:
        # Its last lines first: once Docker's follow ends the reader reads the log again for what the
        # follow missed, which a removed container no longer has.
        container.reader.join(timeout=10)
        try:
            container.running.remove()
        except Exception:  # noqa: BLE001 - keep cleaning up
            log.warning("could not remove the container %s", container.hostname, exc_info=True)
        container.shipper.close()
        shutil.rmtree(container.host_dir, ignore_errors=True)


def wait_for_ping(
    containers: list[Container], timeout: float, cancelled: threading.Event | None = None, cancelled_message: str = ""
) -> tuple[Container, int | None] | None:
    """Ping every container until it answers 200 (every 20 ms for its first 2 s, then slowing to every
    0.5 s). None once all do; else the first that exited, with its exit code, or the first still not
    answering when ``timeout`` seconds have passed, with None. ``LaunchFailed(cancelled_message)`` when
    ``cancelled`` is set meanwhile."""
    began = time.monotonic()
    deadline = began + float(timeout)
    pending = list(containers)
    while pending:
        if cancelled is not None and cancelled.is_set():
            raise LaunchFailed(cancelled_message)
        for container in list(pending):
            code = container.running.wait(0)
            if code is not None:
                container.reader.join(timeout=2)  # its last lines say why
                return container, code
            if container.ping():
                pending.remove(container)
        if not pending:
            break
        now = time.monotonic()
        if now >= deadline:
            return pending[0], None
        time.sleep(min(_PING_INTERVAL_SECONDS, max(_FIRST_PING_INTERVAL_SECONDS, (now - began - 2) / 10)))
    return None


def exit_detail(container: Container, code: int | None) -> str:
    """What a failure reason adds for a container that exited: its code and last lines."""
    if code is None:
        return ""
    lines = [line for line in container.shipper.tail if line.strip()][-3:]
    return f" The container exited with code {code}" + (": " + " | ".join(lines) if lines else ".")


@dataclass
class Launch:
    """Where and as what one model container starts: an endpoint instance's, a transform job's."""

    purpose: str  # what failure reasons name: "production variant AllTraffic", "transform job nightly"
    name: str  # the container's (or process group's) name
    host_dir: Path  # its /opt/ml tree on this machine
    hostname: str
    instance_type: str
    log_group: str
    log_stream: str
    env: dict[str, str] = field(default_factory=dict)  # over the container definition's Environment
    read_timeout: float = 60.0  # of its invocations pool


class Fleet:
    """Starts, health-checks and stops instances for the engine."""

    def __init__(self, settings, clients, runners):
        self.settings = settings
        self.clients = clients
        self.runners = runners
        self.models = ModelStore(settings.work_dir / "hosting" / "models", clients)
        self.root = settings.work_dir / "hosting" / "instances"
        # Containers and processes are started from these long-lived threads: the process runner
        # ties a child's life to the thread that started it (PR_SET_PDEATHSIG), and the threads
        # that launch instances come and go.
        self._spawner = ThreadPoolExecutor(max_workers=4, thread_name_prefix="hosting-spawn")

    def close(self) -> None:
        self._spawner.shutdown(wait=False)

    def launch(self, endpoint: str, variant, cancelled: threading.Event | None = None) -> Instance:
        """Start one instance of ``variant`` (a models.VariantState); not yet healthy."""
        instance = Instance(
            id=instance_id(), endpoint=endpoint, variant=variant.name, mode=variant.model.execution_mode
        )
        containers = variant.model.containers
        try:
            for index, definition in enumerate(containers):
                if cancelled is not None and cancelled.is_set():
                    raise LaunchFailed("The endpoint is being deleted.")
                instance.containers.append(self._start_container(endpoint, variant, instance, index, definition))
        except BaseException:
            instance.stop(0)
            raise
        instance.sampler = usage.endpoint_instance(
            self.clients,
            endpoint,
            variant.name,
            [container.running for container in instance.containers],
            self.root / endpoint,
            devices.grant(variant.instance_type),
            self.settings.usage_metrics_seconds,
        )
        return instance

    def _start_container(self, endpoint: str, variant, instance: Instance, index: int, definition: dict) -> Container:
        several = len(variant.model.containers) > 1
        hostname = definition.get("ContainerHostname") or (f"container-{index + 1}" if several else "primary")
        launch = Launch(
            purpose=f"production variant {variant.name}",
            name=container_name(endpoint, variant.name, instance.id, index),
            host_dir=self.root / endpoint / f"{variant.name}-{instance.id}" / f"container-{index + 1}",
            hostname=hostname,
            instance_type=variant.instance_type,
            log_group=log_group(endpoint),
            log_stream=f"{variant.name}/{instance.id}" + (f"/{hostname}" if several else ""),
            read_timeout=self.settings.invocation_timeout_seconds,
        )
        return self.start_model_container(definition, index, launch, several)

    def start_model_container(self, definition: dict, index: int, launch: Launch, several: bool = False) -> Container:
        """Start one container of a model (its ``serve``, its model data in /opt/ml/model, its
        Environment); not yet healthy. ``several``: one of a multi-container model's, each binding the
        port it is given. ``LaunchFailed`` with the reason SageMaker would give."""
        image = definition["Image"]
        try:
            runner = self.runners(image)
        except (ImageNotFound, EnvironmentBuildError) as error:
            raise LaunchFailed(f"Failed to pull the image {image} for {launch.purpose}: {error}") from None
        model_dir = self.models.fetch(definition, index)
        host_dir = launch.host_dir
        shutil.rmtree(host_dir, ignore_errors=True)
        (host_dir / "model").mkdir(parents=True)
        if model_dir is not None:
            _link_tree(model_dir, host_dir / "model")
        port = free_port()
        env = {str(key): str(value) for key, value in (definition.get("Environment") or {}).items()}
        env.update(launch.env)
        submit = env.get("SAGEMAKER_SUBMIT_DIRECTORY", "")
        if submit.startswith("s3://") and frameworks.recognise(image) is not None:
            # Script mode's inference code, where the framework container would have downloaded it.
            try:
                source.fetch(self.clients.s3, submit, host_dir / "sourcedir.tar.gz", [host_dir / "code"])
            except source.SourceUnavailable as error:
                raise LaunchFailed(f"Failed to start the container for {launch.purpose}: {error}") from None
        if several:  # SageMaker's multi-container contract: each container binds the port it is given
            env["SAGEMAKER_BIND_TO_PORT"] = str(SERVING_PORT)
            env["SAGEMAKER_SAFE_PORT_RANGE"] = f"{SERVING_PORT}-{SERVING_PORT}"
        grant = devices.grant(launch.instance_type)
        spec = ContainerSpec(
            image=image,
            command="serve",
            host_dir=host_dir,
            host_name=launch.hostname,
            env=env,
            name=launch.name,
            ports={SERVING_PORT: port},
            devices=grant,
        )
        try:
            running = self._spawner.submit(runner.start, spec).result()
        except (ImageNotFound, EnvironmentBuildError) as error:
            raise LaunchFailed(f"Failed to start the container for {launch.purpose}: {error}") from None
        except Exception as error:  # noqa: BLE001 - the engine refused: the endpoint fails, localaws goes on
            raise LaunchFailed(
                f"Failed to start the container for {launch.purpose}: {type(error).__name__}: {error}"
            ) from None
        shipper = LogShipper(self.clients, launch.log_group, launch.log_stream, self.settings.log_flush_seconds)
        if grant.note:  # a GPU type on a machine without: its log says where it runs
            shipper.write(f"[localaws] {grant.note}")
            log.info("%s: %s", launch.purpose, grant.note)
        try:
            # 127.0.0.1 and its published port, or (localaws in a container) its address on the shared network.
            address, port = running.served_at(SERVING_PORT)
        except Exception as error:  # noqa: BLE001 - the engine lost it meanwhile: the launch fails
            running.remove()
            shipper.close()
            raise LaunchFailed(f"Failed to start the container for {launch.purpose}: {error}") from None
        reader = threading.Thread(target=pump, args=(running, shipper.write), name=f"lines-{spec.name}", daemon=True)
        reader.start()
        return Container(
            hostname=launch.hostname,
            port=port,
            running=running,
            host_dir=host_dir,
            shipper=shipper,
            reader=reader,
            pool=ConnectionPool(port, PING_TIMEOUT_SECONDS, launch.read_timeout, host=address),
            ping_pool=ConnectionPool(port, PING_TIMEOUT_SECONDS, PING_TIMEOUT_SECONDS, max_idle=2, host=address),
        )

    def wait_healthy(self, instance: Instance, variant, cancelled: threading.Event | None = None) -> None:
        """Until every container answers /ping with 200; ``LaunchFailed`` if one exits or the
        variant's ContainerStartupHealthCheckTimeoutInSeconds passes first."""
        timeout = (
            variant.spec.get("ContainerStartupHealthCheckTimeoutInSeconds")
            or self.settings.health_check_timeout_seconds
        )
        failed = wait_for_ping(instance.containers, float(timeout), cancelled, "The endpoint is being deleted.")
        if failed is not None:
            raise LaunchFailed(self._ping_failure(variant, *failed))
        for container in instance.containers:
            container.route_directly()
        with instance.lock:
            instance.accepting = True

    @staticmethod
    def _ping_failure(variant, container: Container, code: int | None) -> str:
        which = "primary container" if container.hostname == "primary" else f"container {container.hostname}"
        reason = (
            f"The {which} for production variant {variant.name} did not pass the ping health check. "
            "Please check CloudWatch logs for this endpoint."
        )
        return (reason + exit_detail(container, code))[:1024]

    def start_healthy(self, endpoint: str, variant, cancelled: threading.Event | None = None) -> Instance:
        """Launch an instance and wait until it is healthy; stops it and raises ``LaunchFailed`` if not."""
        instance = self.launch(endpoint, variant, cancelled)
        try:
            self.wait_healthy(instance, variant, cancelled)
        except BaseException:
            instance.stop(0)
            raise
        for index in range(len(instance.containers)):
            variant.resolved_images.setdefault(index, variant.model.containers[index]["Image"])
        return instance

    def retire(self, instance: Instance, drain_timeout: float | None = None) -> None:
        """Drain, then stop with SIGTERM and, after the grace period, SIGKILL."""
        if drain_timeout is None:
            drain_timeout = self.settings.invocation_timeout_seconds + 5
        instance.drain(drain_timeout)
        instance.stop(self.settings.serving_stop_grace_seconds)
