"""Where the /opt/ml tree is, and the framework this container stands in for."""

from __future__ import annotations

import os
from pathlib import Path

OPT_ML = "/opt/ml"


def base() -> Path:
    """/opt/ml in a container; elsewhere what SAGEMAKER_BASE_DIR says, as the sagemaker-training toolkit
    reads it (localaws's process runner sets it)."""
    return Path(os.environ.get("SAGEMAKER_BASE_DIR") or OPT_ML)


def in_container() -> bool:
    return "SAGEMAKER_BASE_DIR" not in os.environ


def local(path: str) -> Path:
    """A path as the container names it (/opt/ml/...), where it is here."""
    if path == OPT_ML or path.startswith(OPT_ML + "/"):
        return base() / os.path.relpath(path, OPT_ML)
    return Path(path)


def framework() -> str:
    name = os.environ.get("LOCALAWS_FRAMEWORK", "")
    if name not in ("pytorch", "sklearn"):
        raise SystemExit(f"LOCALAWS_FRAMEWORK must be pytorch or sklearn, not {name!r}")
    return name
