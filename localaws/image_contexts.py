"""Images the process runner can run: an image URI -> a snapshot of its build context.

With no Docker engine, "pushing" an image to localaws means registering its
build context under the image's URI (``POST /_localaws/images``). The context is
copied at registration, so the URI keeps naming what was registered even when
the working tree changes afterwards, as a pushed image tag would.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import threading
from pathlib import Path


def repository_and_tag(uri: str) -> tuple[str, str]:
    """``<acct>.dkr.ecr.<region>.amazonaws.com/<repo>:<tag>`` -> (repo, tag)."""
    name = uri.split("/", 1)[1] if "/" in uri and "." in uri.split("/", 1)[0] else uri
    if "@" in name:
        repo, digest = name.split("@", 1)
        return repo, digest
    repo, _, tag = name.rpartition(":") if ":" in name.rsplit("/", 1)[-1] else (name, "", "latest")
    return repo, tag or "latest"


class ImageContexts:
    def __init__(self, root: Path):
        self.root = root
        self.lock = threading.Lock()
        self.index_file = root / "index.json"

    def _index(self) -> dict[str, dict]:
        if self.index_file.exists():
            return json.loads(self.index_file.read_text())
        return {}

    def register(self, uri: str, context: str) -> dict:
        source = Path(context).resolve()
        if not any((source / entry).is_file() for entry in ("train", "serve", "Dockerfile")):
            # A processing image may hold neither entry: its Dockerfile's ENTRYPOINT runs.
            raise ValueError(f"{source} is not a build context with a train or serve entry, or a Dockerfile")
        key = hashlib.sha256(uri.encode()).hexdigest()[:16]
        snapshot = self.root / "contexts" / key
        with self.lock:
            # Pushing a tag again replaces what it names, as a registry does.
            staging = snapshot.with_name(key + ".partial")
            shutil.rmtree(staging, ignore_errors=True)
            shutil.copytree(source, staging, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            shutil.rmtree(snapshot, ignore_errors=True)
            staging.rename(snapshot)
            index = self._index()
            index[uri] = {"context": str(snapshot), "source": str(source)}
            self.root.mkdir(parents=True, exist_ok=True)
            self.index_file.write_text(json.dumps(index, indent=2))
        return {"ImageUri": uri}

    def lookup(self, uri: str) -> Path | None:
        with self.lock:
            entry = self._index().get(uri)
        return Path(entry["context"]) if entry else None

    def list(self) -> dict[str, dict]:
        with self.lock:
            return self._index()
