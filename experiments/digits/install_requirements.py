#!/usr/bin/env python3
"""Installs requirements.txt into the image's Python, keeping what the base provides.

Run by the Dockerfile (``python3 install_requirements.py requirements.txt``):

* a base without torch (python:3.11-slim) gets every requirement
  as written, with ``$TORCH_INDEX_URL`` (the Dockerfile's build argument; PyTorch's CPU wheel
  index by default) as an extra index, so that ``torch==X`` resolves to ``X+cpu``
  rather than PyPI's CUDA build;
* a base with torch (an AWS Deep Learning Container, pytorch/pytorch, Habana's
  pytorch-installer, Debian's python3-torch) keeps its own torch build and every
  package it already has; only the missing distributions are installed, unpinned
  but constrained to the torch and numpy already there, so that nothing the base's
  torch was built against gets upgraded.

Standard library only; works on Python 3.8+.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from importlib import metadata

KEEP = ("torch", "numpy")  # never replaced when the base has them


def installed(name: str):
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def requirements(path: str) -> dict:
    specs = {}
    with open(path) as handle:
        for line in handle:
            spec = line.split("#", 1)[0].strip()
            if spec:
                specs[re.split(r"[\s=<>!~;\[]", spec, maxsplit=1)[0]] = spec
    return specs


def has_torch() -> bool:
    try:
        import torch  # noqa: F401, PLC0415 - whether it imports is the question
    except Exception:  # noqa: BLE001 - a broken install counts as none
        return False
    return True


def pip(*args: str) -> None:
    env = dict(os.environ, PIP_BREAK_SYSTEM_PACKAGES="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
    command = [sys.executable, "-m", "pip", "install", "--no-cache-dir", *args]
    print("+", " ".join(command), flush=True)
    subprocess.check_call(command, env=env)


def main(path: str) -> int:
    specs = requirements(path)
    if not has_torch():
        index = os.environ.get("TORCH_INDEX_URL", "").strip()
        print(
            "base image has no torch: installing every requirement as pinned"
            + (f" (torch from {index} too)" if index else ""),
            flush=True,
        )
        pip(*(["--extra-index-url", index] if index else []), "-r", path)
        return 0
    missing = [name for name in specs if name != "torch" and installed(name) is None]
    if not missing:
        print("base image provides every requirement: nothing to install", flush=True)
        return 0
    keep = [f"{name}=={installed(name)}" for name in KEEP if installed(name)]
    print(
        f"base image provides torch; adding {', '.join(missing)} (keeping {', '.join(keep) or 'the base packages'})",
        flush=True,
    )
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as constraints:
        constraints.write("\n".join(keep) + "\n")
    try:
        pip("-c", constraints.name, *missing)
    except subprocess.CalledProcessError as error:
        # Training needs only the framework the base has; the rest (scikit-learn, the
        # server for `serve`) is not worth failing the image over: say so loudly instead.
        print(
            f"WARNING: could not install {', '.join(missing)} (pip exited {error.returncode}); "
            f"the image lacks them: add them to the base image",
            flush=True,
        )
    finally:
        os.unlink(constraints.name)
    return 0


def report() -> int:
    """Fails the build unless what `train` needs imports; lists the versions."""
    versions = {name: installed(name) for name in ("torch", "numpy", "scikit-learn", "gunicorn")}
    print("installed: " + ", ".join(f"{name} {version or '-'}" for name, version in versions.items()), flush=True)
    try:
        import numpy  # noqa: F401, PLC0415 - whether they import is the question
        import torch  # noqa: F401, PLC0415
    except Exception as error:  # noqa: BLE001 - reported, with its type
        print(f"ERROR: the training code needs torch and numpy: {type(error).__name__}: {error}", flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "requirements.txt") or report())
