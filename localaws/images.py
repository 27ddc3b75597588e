"""Container images: naming them by the content of their build context."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

_SKIP_DIRS = {"__pycache__"}
_SKIP_SUFFIXES = (".pyc", ".pyo")


def _context_files(root: Path) -> list[str]:
    files = []
    for directory, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in _SKIP_DIRS]
        for name in filenames:
            if name.endswith(_SKIP_SUFFIXES):
                continue
            files.append(os.path.relpath(os.path.join(directory, name), root).replace(os.sep, "/"))
    return sorted(files)


def context_hash(path: str | os.PathLike) -> str:
    """First 12 hex digits of a sha256 over the build context under ``path``.

    Covers each file's path relative to ``path`` (sorted, ``/``-separated) and its
    bytes, skipping ``__pycache__`` directories and ``.pyc`` files, so the same
    context gives the same tag on any machine and any edit gives a new one.
    """
    root = Path(path)
    if not root.is_dir():
        raise NotADirectoryError(f"build context {root} is not a directory")
    digest = hashlib.sha256()
    for relative in _context_files(root):
        data = (root / relative).read_bytes()
        # Lengths keep path/content boundaries unambiguous.
        digest.update(f"{len(relative)}:{relative}\0{len(data)}:".encode())
        digest.update(data)
    return digest.hexdigest()[:12]
