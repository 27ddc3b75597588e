"""requirements.txt, installed before the user's code runs, as the framework containers do.

In a container: ``pip install -r requirements.txt`` into the image's Python, from the code folder
(so ``./wheels/x.whl`` or ``./mypkg`` lines work). Under localaws's process runner
(``LOCALAWS_FRAMEWORK_VENVS`` set): into a virtual environment kept per requirements content
(and the content of the local files it names), which sees this Python's packages as the image's
Python has the framework, so the user's pins add to them instead of touching the project's
environment.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shlex
import site
import subprocess
import sys
import venv
from pathlib import Path

FILE = "requirements.txt"


class InstallRequirementsError(Exception):
    def __init__(self, command: list[str], code: int, output: str):
        self.command, self.code, self.output = command, code, output
        super().__init__(
            f'InstallRequirementsError:\nExitCode {code}\nErrorMessage "{output.strip()[-700:]}"\n'
            f'Command "{" ".join(command)}"'
        )


def install(code_dir: Path) -> str:
    """Install ``code_dir``'s requirements.txt if it has one; returns the Python to run the user's code with."""
    requirements = code_dir / FILE
    if not requirements.is_file():
        return sys.executable
    print(f"Installing dependencies from {FILE}", flush=True)
    venvs = os.environ.get("LOCALAWS_FRAMEWORK_VENVS")
    if not venvs:
        _pip([sys.executable, "-m", "pip", "install", "-r", FILE], code_dir)
        return sys.executable
    return str(_venv(Path(venvs), requirements, code_dir))


def _pip(command: list[str], cwd: Path) -> None:
    env = dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_BREAK_SYSTEM_PACKAGES="1")
    process = subprocess.Popen(
        command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
    )
    lines = []
    assert process.stdout is not None
    for line in process.stdout:
        sys.stdout.write(line)
        lines.append(line)
    code = process.wait()
    if code:
        raise InstallRequirementsError(command, code, "".join(lines[-8:]))


def _key(requirements: Path, code_dir: Path) -> str:
    digest = hashlib.sha256(requirements.read_bytes() + sys.version.encode() + sys.prefix.encode())
    for line in requirements.read_text().splitlines():
        for word in shlex.split(line, comments=True) if line.strip() else []:
            local = code_dir / word
            if not word.startswith("-") and local.is_file():  # a wheel or archive beside the code
                digest.update(word.encode() + b"\0" + local.read_bytes())
    return digest.hexdigest()[:16]


def _venv(root: Path, requirements: Path, code_dir: Path) -> Path:
    key = _key(requirements, code_dir)
    target = root / key
    python = target / "bin" / "python"
    if (target / ".ready").exists():
        print(f"Using the environment built before for this {FILE} ({target})", flush=True)
        return python
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one builder; hosts of a job and other jobs wait and reuse it
        if (target / ".ready").exists():
            return python
        venv.EnvBuilder(clear=True, symlinks=True).create(target)
        # This Python's packages (the framework, numpy...) stay visible behind the environment's own.
        purelib = subprocess.check_output(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], text=True
        ).strip()
        Path(purelib, "_localaws_base.pth").write_text("\n".join(_site_packages()) + "\n")
        # This Python's pip installs into it (pip --python): no pip of its own to bootstrap.
        _pip([sys.executable, "-m", "pip", "--python", str(python), "install", "-r", FILE], code_dir)
        (target / ".ready").write_text(key)
    return python


def _site_packages() -> list[str]:
    paths = list(site.getsitepackages())
    if site.ENABLE_USER_SITE and os.path.isdir(site.getusersitepackages()):
        paths.append(site.getusersitepackages())
    return paths
