"""Paths named by someone else (an S3 key, an archive member, a container), kept inside their folder.

An S3 key is any string: ``data/train/../../../../tmp/x`` joined onto a channel's
folder names ``/tmp/x``. A container owns what it writes under ``/opt/ml`` and may
leave links there: ``model/secret -> /etc/shadow`` is, seen from this machine, a
link to this machine's file. Whatever localaws writes from a key stays inside the
folder it is for, and whatever it reads back from a container's tree is what the
container wrote, never what a link there points at.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path


class OutsideFolder(ValueError):
    """A name that would put a file outside its folder (or on the folder itself)."""


def join_inside(folder: Path, relative: str) -> Path:
    """``folder / relative``, refused when ``relative`` is absolute, holds a NUL, or leaves ``folder``
    (``..``); the check is on the names alone, so the folder must hold no links of its own."""
    if not relative or "\x00" in relative or os.path.isabs(relative):
        raise OutsideFolder(relative)
    base = os.path.normpath(folder)
    target = os.path.normpath(os.path.join(base, relative))
    if os.path.commonpath([base, target]) != base or target == base:
        raise OutsideFolder(relative)
    return Path(target)


def real_dir(root: Path, path: Path) -> bool:
    """Whether ``path`` is a directory reached from ``root`` through directories only, no link on the way."""
    try:
        parts = Path(path).relative_to(root).parts
    except ValueError:
        return False
    current = Path(root)
    for part in ("", *parts):
        current = current / part if part else current
        try:
            mode = os.lstat(current).st_mode
        except FileNotFoundError:
            return False
        if not stat.S_ISDIR(mode):
            return False
    return True


def tree(root: Path, directory: Path) -> list[Path]:
    """Everything under ``directory`` (files, links, empty directories...), sorted, without descending
    into a linked directory; empty when ``directory`` is not a real directory under ``root``."""
    if not real_dir(root, directory):
        return []
    found: list[Path] = []
    for parent, dirs, files in os.walk(directory, followlinks=False):
        found.extend(Path(parent) / name for name in (*dirs, *files))
    return sorted(found)


def regular_files(root: Path, directory: Path) -> list[Path]:
    """The regular files under ``directory`` (no links, devices or pipes), as ``tree`` finds them."""
    return [path for path in tree(root, directory) if stat.S_ISREG(os.lstat(path).st_mode)]


def read_bytes(root: Path, path: Path, limit: int = 65536) -> bytes:
    """The start of a regular file the container wrote; b"" when it is missing, a link or not a file."""
    if not real_dir(root, path.parent):
        return b""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:  # missing, or a link (ELOOP)
        return b""
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            return b""
        return handle.read(limit)


def read_text(root: Path, path: Path, limit: int = 65536) -> str:
    """``read_bytes`` as text (what is not UTF-8 replaced)."""
    return read_bytes(root, path, limit).decode("utf-8", "replace")
