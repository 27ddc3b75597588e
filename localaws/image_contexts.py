"""Images the process runner can run: an image URI -> a snapshot of its build context.

With no Docker engine, "pushing" an image to localaws means registering its
build context under the image's URI (``POST /_localaws/images``). The context is
copied at registration, so the URI keeps naming what was registered even when
the working tree changes afterwards, as a pushed image tag would.

A registered context is also an image as ECR lists it (``ecr_images``): its manifest names one
layer, the snapshot's files, so its digest and size follow its content (the same context
registered under two tags is one image with two tags) and it was pushed when it was registered.
Deregistering it (ECR's ``BatchDeleteImage``) leaves the URI naming nothing, as a deleted image.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import threading
import time
from pathlib import Path

MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
#: An ECR image URI: <account>.dkr.ecr.<region>.amazonaws.com/<repository>[:<tag>][@<digest>].
ECR_IMAGE = re.compile(
    r"^(?P<account>\d{12})\.dkr\.ecr\.(?P<region>[a-z0-9-]+)\.amazonaws\.com(?:\.cn)?"
    r"/(?P<repository>[a-z0-9][a-z0-9._/-]*?)"
    r"(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}))?"
    r"(?:@(?P<digest>sha256:[0-9a-f]{64}))?$"
)


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
            index[uri] = {
                "context": str(snapshot),
                "source": str(source),
                "pushed_at": time.time(),
                **manifest_of(snapshot),
            }
            self.root.mkdir(parents=True, exist_ok=True)
            self.index_file.write_text(json.dumps(index, indent=2))
        return {"ImageUri": uri}

    def unregister(self, uri: str) -> bool:
        """Forget ``uri`` (its snapshot too, unless another URI names the same one); whether it was known."""
        with self.lock:
            index = self._index()
            entry = index.pop(uri, None)
            if entry is None:
                return False
            self.index_file.write_text(json.dumps(index, indent=2))
            if all(other["context"] != entry["context"] for other in index.values()):
                shutil.rmtree(entry["context"], ignore_errors=True)
        return True

    def lookup(self, uri: str) -> Path | None:
        with self.lock:
            entry = self._index().get(uri)
        return Path(entry["context"]) if entry else None

    def list(self) -> dict[str, dict]:
        with self.lock:
            return self._index()


def manifest_of(snapshot: Path) -> dict:
    """An OCI image manifest of the snapshot (one layer: its files, by path and content), its digest and
    its size (the layer's bytes), as a registry would answer them for an image of that content."""
    layer = hashlib.sha256()
    size = 0
    for root, dirs, files in os.walk(snapshot):
        dirs.sort()
        for name in sorted(files):
            path = Path(root, name)
            if path.is_symlink() or not path.is_file():
                continue
            data = path.read_bytes()
            layer.update(path.relative_to(snapshot).as_posix().encode() + b"\0")
            layer.update(hashlib.sha256(data).digest())
            size += len(data)
    config = json.dumps({"architecture": "amd64", "os": "linux"}, sort_keys=True).encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": MANIFEST_TYPE,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": "sha256:" + hashlib.sha256(config).hexdigest(),
                "size": len(config),
            },
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": "sha256:" + layer.hexdigest(),
                    "size": size,
                }
            ],
        },
        sort_keys=True,
    )
    return {"manifest": manifest, "digest": "sha256:" + hashlib.sha256(manifest.encode()).hexdigest(), "size": size}
