"""Runs an image's build context as local processes when no Docker engine is at hand.

The context's ``requirements.txt`` is installed once into a virtual environment
cached by its content, over localaws's own packages (as an image's requirements over its base);
``train`` or ``serve`` runs with that interpreter, in its own process group, with the /opt/ml tree under
the host directory and the contract's environment pointing there. A processing job's container runs the
image's own command (its ContainerEntrypoint and ContainerArguments, else its Dockerfile's ENTRYPOINT
and CMD: ``image_command``), with the /opt/ml paths its arguments name moved under the host directory;
a program that builds /opt/ml paths itself reads ``SAGEMAKER_BASE_DIR``, or needs the Docker runner.

A SageMaker framework image (``frameworks.recognise``) needs no registration: its stand-in's
``train`` or ``serve`` runs with this Python, which has the frameworks; the user's
requirements.txt goes into a virtual environment of its own per content
(``<venvs>/script-mode``, ``LOCALAWS_FRAMEWORK_VENVS``), built by the toolkit as it starts.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import signal
import subprocess
import sys
import site
import threading
import venv
from pathlib import Path
from typing import Iterator

import psutil

from localaws.image_contexts import ImageContexts
from localaws.lifetime import die_with_parent
from localaws.sagemaker import frameworks
from localaws.sagemaker.contract import OPT_ML, OPT_ML_ENV
from localaws.sagemaker.devices import HABANA, NVIDIA
from localaws.sagemaker.runners import dockerfile
from localaws.sagemaker.runners.base import ContainerSpec, ImageNotFound, Running, Runner, Usage

# What a process inherits from localaws's environment; the rest is SageMaker's contract.
_INHERITED = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "TZ")


class EnvironmentBuildError(Exception):
    pass


class VirtualEnvs:
    """Virtual environments keyed by a requirements file's content and the Python version."""

    def __init__(self, root: Path):
        self.root = root

    def for_context(self, context: Path, log=print) -> Path:
        requirements = context / "requirements.txt"
        content = requirements.read_bytes() if requirements.exists() else b""
        key = hashlib.sha256(content + sys.version.encode()).hexdigest()[:16]
        target = self.root / key
        python = target / "bin" / "python"
        if (target / ".ready").exists():
            return python
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / f"{key}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # one builder; the others wait and reuse it
            if (target / ".ready").exists():
                return python
            log(f"Creating the image's Python environment from {requirements} (cached for next time)")
            venv.EnvBuilder(with_pip=True, clear=True).create(target)
            # localaws's own packages stay visible behind the environment's own, as a base image's are
            # behind what its requirements add: ranges the framework satisfies install nothing (offline).
            purelib = subprocess.check_output(
                [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], text=True
            ).strip()
            Path(purelib, "_localaws_base.pth").write_text("\n".join(site.getsitepackages()) + "\n")
            if content:
                result = subprocess.run(
                    [
                        str(python),
                        "-m",
                        "pip",
                        "install",
                        "--quiet",
                        "--disable-pip-version-check",
                        "-r",
                        str(requirements),
                    ],
                    capture_output=True,
                    text=True,
                )
                if result.returncode != 0:
                    raise EnvironmentBuildError(
                        f"pip install -r {requirements} failed:\n{result.stdout[-2000:]}{result.stderr[-4000:]}"
                    )
            (target / ".ready").write_text(key)
        return python


class ProcessTree:
    """The CPU time and memory of a process and every process under it, as psutil reads them (a few
    milliseconds for a handful of processes).

    CPU time is counted per process (pid and start time), so that one that started since the last
    reading counts whole and one that has ended keeps what it had used at the last reading; what it used
    between that reading and its end is not seen."""

    def __init__(self, pid: int):
        self.pid = pid
        self._last: dict[tuple[int, float], float] = {}
        self._ended = 0.0  # the CPU time of the processes gone since, as last read

    def read(self) -> Usage | None:
        try:
            root = psutil.Process(self.pid)
            if root.status() == psutil.STATUS_ZOMBIE:
                return None
            processes = [root, *root.children(recursive=True)]
        except psutil.Error:
            return None
        current: dict[tuple[int, float], float] = {}
        resident = 0
        for process in processes:
            try:
                with process.oneshot():
                    times = process.cpu_times()
                    current[(process.pid, process.create_time())] = times.user + times.system
                    resident += process.memory_info().rss
            except psutil.Error:  # ended while read
                continue
        self._ended += sum(cpu for key, cpu in self._last.items() if key not in current)
        self._last = current
        return Usage(self._ended + sum(current.values()), resident, psutil.virtual_memory().total)


class RunningProcess(Running):
    def __init__(self, process: subprocess.Popen):
        self.process = process
        self._lock = threading.Lock()
        self._tree = ProcessTree(process.pid)

    def usage(self) -> Usage | None:
        if self.process.poll() is not None:
            return None
        return self._tree.read()

    def lines(self) -> Iterator[str]:
        assert self.process.stdout is not None
        for line in iter(self.process.stdout.readline, ""):
            yield line
        self.process.stdout.close()

    def wait(self, timeout: float | None = None) -> int | None:
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def _signal(self, sig: int) -> None:
        with self._lock:
            if self.process.poll() is None:
                try:
                    os.killpg(self.process.pid, sig)
                except ProcessLookupError:
                    pass

    def terminate(self) -> None:
        self._signal(signal.SIGTERM)

    def kill(self) -> None:
        self._signal(signal.SIGKILL)

    def remove(self) -> None:
        self.kill()
        self.wait(10)


#: A path-like word in an argument: after its start, a blank, ``=``, ``:``, ``,`` or a quote.
_PATH_WORD = re.compile(r"""(^|[\s=:,'"])(/[^\s'":;,=]+)""")
#: What names the image's Python in a command: it runs as the image's environment's interpreter.
_PYTHON = re.compile(r"python(\d+(\.\d+)?)?")


def image_command(spec: ContainerSpec, context: Path, python: Path) -> tuple[list[str], Path]:
    """(argv, cwd) of a container started with the image's own command (``spec.command`` None), as
    ``docker run [--entrypoint ...] <image> [arguments]`` would run it, with the paths it names moved
    where this process finds them: /opt/ml's under the host directory, the image's own files (its
    Dockerfile's COPY) in the context, ``python3`` the context's environment's."""
    image = dockerfile.read(context)
    argv = image.command(spec.entrypoint, spec.arguments)
    if not argv:
        raise ImageNotFound(
            f"The image {spec.image} has no command to run: no ContainerEntrypoint was given and "
            f"{context / 'Dockerfile'} names no ENTRYPOINT or CMD."
        )

    def place(path: str) -> str:
        normal = os.path.normpath(path)
        if normal == OPT_ML or normal.startswith(OPT_ML + "/"):
            return str(spec.host_dir) + normal[len(OPT_ML) :]
        found = image.context_path(normal)
        return str(found) if found is not None else path

    def translate(argument: str) -> str:
        return _PATH_WORD.sub(lambda match: match.group(1) + place(match.group(2)), argument)

    program = os.path.basename(argv[0])
    first = str(python) if _PYTHON.fullmatch(program) else translate(argv[0])
    cwd = context
    if image.workdir:
        placed = Path(place(image.workdir))
        if placed.is_dir() and placed != Path(image.workdir):
            cwd = placed
    return [first, *(translate(argument) for argument in argv[1:])], cwd


class ProcessRunner(Runner):
    isolated_hosts = False

    def __init__(self, contexts: ImageContexts, venvs: VirtualEnvs, log=print):
        self.contexts = contexts
        self.venvs = venvs
        self.log = log
        self._running: list[RunningProcess] = []
        self._lock = threading.Lock()

    def opt_ml_for(self, spec_host_dir: Path) -> Path:
        return spec_host_dir

    def context_for(self, image: str) -> Path:
        context = self.contexts.lookup(image)
        if context is None or not context.exists():
            raise ImageNotFound(
                f"Requested image {image} not found: no Docker engine is available and no build context is "
                "registered under this URI (POST /_localaws/images, or `python -m localaws register-image`)."
            )
        return context

    def can_run(self, image: str) -> bool:
        return frameworks.recognise(image) is not None or self.contexts.lookup(image) is not None

    def _framework(self, image: str) -> frameworks.FrameworkImage | None:
        framework = frameworks.recognise(image)
        if framework is not None and frameworks.unsupported(framework):
            raise ImageNotFound(frameworks.unsupported(framework))
        return framework

    def prepare(self, image: str, log=print) -> Path:
        """Make sure the image can start (its environment built); returns its interpreter."""
        if self._framework(image) is not None:
            return Path(sys.executable)
        return self.venvs.for_context(self.context_for(image), log=log)

    def start(self, spec: ContainerSpec) -> RunningProcess:
        framework = self._framework(spec.image)
        if framework is not None:
            context, python = frameworks.CONTAINER_CONTEXT, Path(sys.executable)
        else:
            context = self.context_for(spec.image)
            python = self.venvs.for_context(context, log=self.log)
        if spec.command is None:
            argv, cwd = image_command(spec, context, python)
        else:
            if spec.entrypoint or spec.arguments:
                raise ImageNotFound(
                    "ContainerEntrypoint and ContainerArguments of a training job run only in a container (the "
                    "commands they name read /opt/ml itself): this needs a Docker engine (make docker-engine), "
                    "not the process runner."
                )
            entry = context / spec.command
            if not entry.is_file():
                raise ImageNotFound(f"The image {spec.image} has no {spec.command} entry ({entry} is missing).")
            argv, cwd = [str(python), str(entry)], context
        env = {name: os.environ[name] for name in _INHERITED if name in os.environ}
        env["PATH"] = f"{python.parent}{os.pathsep}{context}{os.pathsep}{env.get('PATH', '/usr/bin:/bin')}"
        env.update(spec.env)
        env[OPT_ML_ENV] = str(spec.host_dir)
        if spec.devices is not None:
            # The GPUs its instance type gets, and none for one without: a process sees every GPU of
            # the machine unless told otherwise, a container none unless given them.
            env["CUDA_VISIBLE_DEVICES"] = spec.devices.visible if spec.devices.kind == NVIDIA else ""
            if spec.devices.kind == HABANA and spec.devices.count:
                env["HABANA_VISIBLE_DEVICES"] = spec.devices.visible
        if framework is not None:
            env["LOCALAWS_FRAMEWORK"] = framework.framework
            env["LOCALAWS_FRAMEWORK_VENVS"] = str(self.venvs.root / "script-mode")
        if spec.ports:
            # No network namespace of its own: the process listens on its published port itself
            # (SAGEMAKER_BIND_TO_PORT, as SageMaker tells a container of a multi-container model).
            env["SAGEMAKER_BIND_TO_PORT"] = str(next(iter(spec.ports.values())))
        try:
            process = self._popen(argv, cwd, env)
        except OSError as error:  # as an engine refuses a command it cannot exec
            raise ImageNotFound(f"The image {spec.image} cannot run {argv[0]!r}: {error}") from None
        running = RunningProcess(process)
        running.ports = dict(spec.ports)
        with self._lock:
            self._running.append(running)
        return running

    @staticmethod
    def _popen(argv: list[str], cwd: Path, env: dict[str, str]) -> subprocess.Popen:
        return subprocess.Popen(
            argv,  # argv[0] is looked up on env's PATH, as exec in the container would
            cwd=str(cwd),
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
            start_new_session=True,  # its own process group: signals reach its children too
            preexec_fn=die_with_parent(),  # killed if localaws dies without cleaning up
        )

    def close(self) -> None:
        with self._lock:
            running, self._running = self._running, []
        for process in running:
            process.remove()
