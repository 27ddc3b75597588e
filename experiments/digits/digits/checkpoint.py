"""Checkpoints: written atomically, nothing temporary in the synced directory; read back with
``torch.load(weights_only=True)``.

torch 1.13's weights-only unpickler knows tensors, ints, strings, lists and dicts
but not floats, so a checkpoint is stored as ``{"tensors": [...], "meta": "<json>"}``:
every tensor of the (nested) state goes in the list and the rest of the structure,
floats included, is JSON with ``{"$tensor": i}`` where the tensors were. That
loads safely on torch 1.13 and 2.x alike.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch

from .errors import CheckpointError
from .model import torch_load

FILE_NAME = "checkpoint.pt"
FORMAT = 1


def _encode(value: Any, tensors: list) -> Any:
    if isinstance(value, torch.Tensor):
        tensors.append(value.detach().to("cpu"))
        return {"$tensor": len(tensors) - 1}
    if isinstance(value, dict):
        if all(isinstance(key, str) and not key.startswith("$") for key in value):
            return {key: _encode(item, tensors) for key, item in value.items()}
        return {"$items": [[_encode(key, tensors), _encode(item, tensors)] for key, item in value.items()]}
    if isinstance(value, tuple):
        return {"$tuple": [_encode(item, tensors) for item in value]}
    if isinstance(value, list):
        return [_encode(item, tensors) for item in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"cannot checkpoint a {type(value).__name__}")


def _decode(value: Any, tensors: list) -> Any:
    if isinstance(value, dict):
        if "$tensor" in value:
            return tensors[value["$tensor"]]
        if "$items" in value:
            return {_decode(key, tensors): _decode(item, tensors) for key, item in value["$items"]}
        if "$tuple" in value:
            return tuple(_decode(item, tensors) for item in value["$tuple"])
        return {key: _decode(item, tensors) for key, item in value.items()}
    if isinstance(value, list):
        return [_decode(item, tensors) for item in value]
    return value


def save(directory: Path, state: dict) -> Path:
    """Writes ``<directory>/checkpoint.pt`` atomically, and never a partial or temporary file inside
    ``<directory>``: SageMaker uploads every file that appears in the checkpoint directory while the job
    runs, so a temp file written there would reach S3 (and stay, when the job is stopped mid-write). The
    file is written and synced beside the directory (``.<directory>.staging/``) and renamed into place;
    where that is another filesystem (a rename cannot cross one), it is copied in under a dot-name and
    renamed, which the sync then sees removed."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors: list = []
    meta = json.dumps({"format": FORMAT, "state": _encode(state, tensors)})
    path = directory / FILE_NAME
    staging = directory.parent / f".{directory.name}.staging"
    try:
        staging.mkdir(exist_ok=True)
    except OSError:  # the parent is not ours to write: stage inside after all
        staging = directory
    tmp = staging / f".{FILE_NAME}.tmp-{os.getpid()}"
    with open(tmp, "wb") as handle:
        torch.save({"tensors": tensors, "meta": meta}, handle)
        handle.flush()
        os.fsync(handle.fileno())
    try:
        os.replace(tmp, path)
    except OSError as error:
        if error.errno != errno.EXDEV:
            raise
        inside = directory / tmp.name
        shutil.copyfile(tmp, inside)
        with open(inside, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(inside, path)
        tmp.unlink()
    return path


def load(directory: Path):
    """The state saved by ``save``, or None when there is no checkpoint."""
    path = Path(directory) / FILE_NAME
    if not path.exists():
        return None
    try:
        stored = torch_load(path, "cpu")
        meta = json.loads(stored["meta"])
        if meta.get("format") != FORMAT:
            raise ValueError(f"format {meta.get('format')!r}, expected {FORMAT}")
        return _decode(meta["state"], list(stored["tensors"]))
    except Exception as error:  # noqa: BLE001 - whatever breaks the read, the job says which file and how
        raise CheckpointError(
            f"cannot read the checkpoint {path}: {type(error).__name__}: {error} (remove it to start afresh)"
        ) from None
