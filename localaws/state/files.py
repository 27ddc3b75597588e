"""The state folder on disk: one localaws at a time, snapshots replaced atomically, S3 bodies as blobs.

    <state dir>/
      .lock          held (flock) by the localaws using the folder, released by the kernel if it dies
      alive          touched every second while localaws runs: when it last ran, after a SIGKILL
      moto.pickle    moto's backends (every service but SageMaker)
      engine.pickle  our engine: SageMaker's jobs, models, endpoints, registry; autoscaling; SSM commands
      blobs/<name>   the body of one S3 object, written once

A snapshot is written to a temporary file of its own (``<name>.<random>.tmp``), flushed to disk and
renamed over the old one, so a reader (the next start) sees the old snapshot or the new one, never a
part of one, and no two writers ever share a temporary file.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, TextIO


class StateDirInUse(RuntimeError):
    pass


class StateFolder:
    MOTO = "moto.pickle"
    ENGINE = "engine.pickle"

    def __init__(self, root: Path):
        self.root = Path(root)
        self.blobs = self.root / "blobs"
        self._lock_file: TextIO | None = None

    def open(self) -> None:
        """Create the folder and take it; ``StateDirInUse`` when another localaws has it."""
        self.blobs.mkdir(parents=True, exist_ok=True)
        handle = open(self.root / ".lock", "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            owner = handle.read().strip()
            handle.close()
            raise StateDirInUse(
                f"the state folder {self.root} is in use by another localaws ({owner or 'unknown'}): "
                "give this one another LOCALAWS_STATE_DIR, or stop the other first"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}\n")
        handle.flush()
        self._lock_file = handle
        for leftover in self.root.glob("*.tmp"):  # a write cut short by a kill
            leftover.unlink(missing_ok=True)
        for leftover in self.blobs.glob("*.tmp"):
            leftover.unlink(missing_ok=True)

    def close(self) -> None:
        if self._lock_file is not None:
            self._lock_file.close()  # releases the flock
            self._lock_file = None

    # --- snapshots ------------------------------------------------------------------------------

    def read(self, name: str) -> bytes | None:
        try:
            return (self.root / name).read_bytes()
        except FileNotFoundError:
            return None

    def write(self, name: str, data: bytes) -> None:
        _write_atomically(self.root / name, data)

    def set_aside(self, name: str, why: str, with_blobs: bool = False) -> Path | None:
        """Keep an unreadable snapshot for inspection, out of the next start's way; ``with_blobs``: the
        S3 bodies too (as ``<aside>.blobs/``), which nothing else refers to then."""
        path = self.root / name
        if not path.exists():
            return None
        aside = path.with_name(f"{name}.unreadable-{time.strftime('%Y%m%dT%H%M%S')}")
        path.rename(aside)
        (aside.with_name(aside.name + ".why")).write_text(why + "\n")
        if with_blobs and any(self.blobs.iterdir()):
            self.blobs.rename(aside.with_name(aside.name + ".blobs"))
            self.blobs.mkdir()
        return aside

    # --- S3 bodies ------------------------------------------------------------------------------

    def read_blob(self, name: str) -> bytes:
        return (self.blobs / _blob_name(name)).read_bytes()

    def write_blob(self, name: str, source) -> None:
        """Copy ``source`` (a file object at the body's start) to the blob ``name``."""
        path = self.blobs / _blob_name(name)
        with _temporary(path) as (out, temporary):
            shutil.copyfileobj(source, out, 1 << 20)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)

    def prune_blobs(self, keep: set[str]) -> int:
        """Delete the blobs no committed snapshot refers to; how many."""
        removed = 0
        for path in self.blobs.iterdir():
            if path.suffix != ".tmp" and path.name not in keep:
                path.unlink(missing_ok=True)
                removed += 1
        return removed

    # --- when localaws last ran ---------------------------------------------------------------

    def touch_alive(self) -> None:
        path = self.root / "alive"
        try:
            os.utime(path)
        except FileNotFoundError:
            path.touch()

    def last_alive(self) -> float | None:
        try:
            return (self.root / "alive").stat().st_mtime
        except FileNotFoundError:
            return None


def _blob_name(name: str) -> str:
    if not name.isalnum():  # names are uuid4 hex: anything else is not ours
        raise ValueError(f"not a blob name: {name!r}")
    return name


def _write_atomically(path: Path, data: bytes) -> None:
    with _temporary(path) as (out, temporary):
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
    os.replace(temporary, path)


@contextlib.contextmanager
def _temporary(path: Path) -> Iterator[tuple[BinaryIO, str]]:
    """A new temporary file beside ``path`` (its name unique: mkstemp), removed if writing it fails."""
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    with os.fdopen(fd, "wb") as out:
        try:
            yield out, name
        except BaseException:
            out.close()
            Path(name).unlink(missing_ok=True)
            raise
