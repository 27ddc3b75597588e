"""What the engine asks of a runner: start an image's entry (``train``, ``serve``, or the image's own
command for a processing job) for one host, read its output as it comes, signal it, wait for it, clean it up.

The docker runner runs the image as a container with the host directory mounted
at ``/opt/ml``; the process runner runs the image's build context as a process
with the same tree elsewhere (see ``contract.py``).
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from localaws.sagemaker.devices import Grant


class ImageNotFound(Exception):
    """The image cannot be found or pulled: the job fails with this message."""


@dataclass
class ContainerSpec:
    image: str  # ECR-style URI, e.g. 123456789012.dkr.ecr.us-east-1.amazonaws.com/repo:tag
    #: "train" or "serve"; None for the image's own ENTRYPOINT and CMD (a processing job's container).
    command: str | None
    host_dir: Path  # this host's /opt/ml tree on the machine running localaws
    host_name: str  # algo-1, algo-2, ...
    env: dict[str, str]  # SageMaker's environment, with paths as seen inside the container
    name: str  # unique name for the container or process group (job + host)
    ports: dict[int, int] = field(default_factory=dict)  # container port -> 127.0.0.1 port
    network: str | None = None  # shared network of a multi-host job
    extra_hosts: dict[str, str] = field(default_factory=dict)  # host name -> address
    #: ContainerEntrypoint and ContainerArguments (AlgorithmSpecification's, AppSpecification's): instead
    #: of ``command``, as ``docker run --entrypoint <entrypoint> <image> <arguments>`` (what the SageMaker
    #: SDK 3's ModelTrainer sends with SourceCode: ``/bin/bash -c sm_train.sh``; a processing script).
    entrypoint: list[str] | None = None
    arguments: list[str] | None = None
    #: The accelerators its instance type gets on this machine (devices.grant); None: the runner's default.
    devices: Grant | None = None


@dataclass(frozen=True)
class Usage:
    """What one container or process tree has used, read at one moment (``Running.usage``)."""

    cpu_seconds: float  # CPU time since it started, every process and core of it together
    memory_bytes: int  # memory in use now: resident, a container's without its page cache
    memory_total_bytes: int  # what it may use: a container's limit, else the machine's memory


class Running(abc.ABC):
    """One started container or process."""

    #: Its spec's ports: container port -> 127.0.0.1 port (set by the runner that started it).
    ports: dict[int, int] = {}

    @abc.abstractmethod
    def lines(self) -> Iterator[str]:
        """Stdout and stderr, line by line as they are written; ends when it exits."""

    @abc.abstractmethod
    def wait(self, timeout: float | None = None) -> int | None:
        """The exit code, or None if still running after ``timeout`` seconds."""

    @abc.abstractmethod
    def terminate(self) -> None:
        """SIGTERM, as SageMaker sends on stop, scale-in and spot interruption."""

    @abc.abstractmethod
    def kill(self) -> None:
        """SIGKILL."""

    @abc.abstractmethod
    def remove(self) -> None:
        """Release everything it holds (container, process group); idempotent."""

    def usage(self) -> Usage | None:
        """What it has used so far, cheaply (a usage sample reads it every few seconds); None once it has
        exited, or where it cannot be read."""
        return None

    def served_at(self, port: int) -> tuple[str, int]:
        """Where localaws reaches the container port ``port`` that ``spec.ports`` published: by default
        127.0.0.1 and the port it was published on (a process binds that port itself)."""
        return "127.0.0.1", int(self.ports[port])

    def own_address(self) -> str | None:
        """Its own network address, where it has one this machine may reach (a container's on the
        engine's bridge); None for a process, which shares this machine's."""
        return None


class Runner(abc.ABC):
    #: Whether each host runs isolated under its own name (containers on a shared network), or as
    #: processes sharing this machine's network (hosts then meet on 127.0.0.1 at distinct ports).
    isolated_hosts: bool = True

    #: How the process inside sees /opt/ml: "/opt/ml" in a container, host_dir for a process.
    @abc.abstractmethod
    def opt_ml_for(self, spec_host_dir: Path) -> Path: ...

    @abc.abstractmethod
    def start(self, spec: ContainerSpec) -> Running: ...

    def close(self) -> None:  # noqa: B027 - optional: a runner that keeps nothing has nothing to stop
        """Stop everything this runner started."""
