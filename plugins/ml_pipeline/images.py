"""Container images: naming them by the content of their build context; building and pushing them."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ml_pipeline.infra.tags import project_tag

if TYPE_CHECKING:
    from ml_pipeline.aws import Client

#: The Docker SDK's ``docker.DockerClient``. Named here, not imported: to a type checker run from the
#: repository, ``docker`` is the repository's docker/ folder.
DockerClient = Any
_SKIP_DIRS = {"__pycache__"}
_SKIP_SUFFIXES = (".pyc", ".pyo")


def tree_files(root: str | os.PathLike, *, skip_build_junk: bool = True) -> list[str]:
    """The files under ``root``, relative, sorted and ``/``-separated. A link is followed only where it
    stays inside ``root`` and leads to a file: one that leads out, to a directory, or nowhere is refused
    (``ValueError``), so nothing outside the folder is ever read, hashed or uploaded. ``skip_build_junk``
    leaves out ``__pycache__`` directories and ``.pyc`` files (for code; data keeps every file)."""
    base = Path(root)
    if not base.is_dir():
        raise NotADirectoryError(f"{base} is not a directory")
    real_root = os.path.realpath(base)
    files = []
    for directory, dirnames, filenames in os.walk(base):
        for name in sorted(dirnames):
            if os.path.islink(os.path.join(directory, name)):
                relative = os.path.relpath(os.path.join(directory, name), base)
                raise ValueError(f"{base}: {relative} is a link to a directory (links to directories are not followed)")
        dirnames[:] = [d for d in dirnames if not (skip_build_junk and d in _SKIP_DIRS)]
        for name in filenames:
            if skip_build_junk and name.endswith(_SKIP_SUFFIXES):
                continue
            path = os.path.join(directory, name)
            relative = os.path.relpath(path, base).replace(os.sep, "/")
            if os.path.islink(path):
                target = os.path.realpath(path)
                if os.path.commonpath([real_root, target]) != real_root:
                    raise ValueError(f"{base}: {relative} is a link leading out of the folder (to {target})")
                if not os.path.isfile(target):
                    raise ValueError(f"{base}: {relative} is a link to no regular file")
            elif not os.path.isfile(path):
                raise ValueError(f"{base}: {relative} is not a regular file")
            files.append(relative)
    return sorted(files)


def files_hash(root: str | os.PathLike, files: list[str]) -> str:
    """First 12 hex digits of a sha256 over ``files`` (relative to ``root``): each one's path and bytes."""
    digest = hashlib.sha256()
    for relative in files:
        data = (Path(root) / relative).read_bytes()
        # Lengths keep path/content boundaries unambiguous.
        digest.update(f"{len(relative)}:{relative}\0{len(data)}:".encode())
        digest.update(data)
    return digest.hexdigest()[:12]


def context_hash(path: str | os.PathLike) -> str:
    """First 12 hex digits of a sha256 over the build context under ``path``.

    Covers each file's path relative to ``path`` (sorted, ``/``-separated) and its
    bytes, skipping ``__pycache__`` directories and ``.pyc`` files, so the same
    context gives the same tag on any machine and any edit gives a new one. A link
    out of the context is refused (``tree_files``).
    """
    return files_hash(path, tree_files(path))


# --- building and pushing an experiment's image ------------------------------------------

#: The base image a local build starts from when ML_PIPELINE_BASE_IMAGE names none (see scripts/docker-engine.sh).
LOCAL_BASE_IMAGE = "localaws/debian-python-torch:bookworm"


def ensure_repository(ecr: Client, name: str) -> dict:
    """The ECR repository, created encrypted, scanned on push and with immutable tags if missing."""
    try:
        return ecr.describe_repositories(repositoryNames=[name])["repositories"][0]
    except ecr.exceptions.RepositoryNotFoundException:
        return ecr.create_repository(
            repositoryName=name,
            imageTagMutability="IMMUTABLE",
            imageScanningConfiguration={"scanOnPush": True},
            encryptionConfiguration={"encryptionType": "AES256"},
            tags=[project_tag()],
        )["repository"]


def has_tag(ecr: Client, repository: str, tag: str) -> bool:
    try:
        return bool(ecr.describe_images(repositoryName=repository, imageIds=[{"imageTag": tag}])["imageDetails"])
    except ecr.exceptions.ImageNotFoundException:
        return False


def localaws_endpoint(endpoint_url: str | None) -> str | None:
    """``endpoint_url`` if it is a localaws (it answers /_localaws/health), else None: its ECR keeps
    manifests but speaks no registry protocol, so images go to the registry standing in for it."""
    if not endpoint_url:
        return None
    import urllib.request  # noqa: PLC0415

    try:
        with urllib.request.urlopen(endpoint_url.rstrip("/") + "/_localaws/health", timeout=2):
            return endpoint_url
    except OSError:
        return None


def docker_engine() -> DockerClient | None:
    """A Docker engine's client, or None when no engine answers."""
    try:
        import docker  # noqa: PLC0415

        client = docker.from_env(timeout=600)
        client.ping()
        return client
    except Exception:  # noqa: BLE001 - no SDK, no engine, no socket, no permission: all mean "none here"
        return None


def _record_in_ecr(ecr: Client, repository: str, tag: str, digest: str) -> None:
    """localaws's ECR (moto) stores manifests but speaks no registry protocol: record the tag there."""
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "size": 0, "digest": digest},
        "layers": [],
    }
    import json  # noqa: PLC0415

    try:
        ecr.put_image(repositoryName=repository, imageManifest=json.dumps(manifest), imageTag=tag)
    except ecr.exceptions.ImageAlreadyExistsException:
        pass


def build_and_push(
    ecr: Client,
    repository: str,
    context: str | os.PathLike,
    endpoint_url: str | None = None,
    log: Callable[[str], object] = print,
) -> dict:
    """The image of the build context ``context``, tagged by its content hash, in ECR.

    Skipped when ECR already holds the tag. Otherwise built with the Docker engine's SDK and pushed to
    ECR (on localaws: to the local registry standing in for it, and the tag recorded in its ECR). With no
    engine this raises; ``code.preflight`` refuses such a run before anything is created.
    """
    context = Path(context)
    tag = context_hash(context)
    repo = ensure_repository(ecr, repository)
    uri = f"{repo['repositoryUri']}:{tag}"
    if has_tag(ecr, repository, tag):
        log(f"{uri} is in ECR already: build skipped")
        return {"image": uri, "tag": tag, "built": False, "how": "already in ECR"}
    client = docker_engine()
    if client is None:
        raise RuntimeError(
            f"No Docker engine to build {uri} from {context}: install one (Debian: docker.io) "
            "where the task runs, or train in script mode or from an image."
        )
    local = localaws_endpoint(endpoint_url)
    base = ""
    if _takes_base_image(context):  # a Dockerfile with `ARG BASE_IMAGE` (docker/training's) is given one
        base = os.environ.get("ML_PIPELINE_BASE_IMAGE", "") or (LOCAL_BASE_IMAGE if local else "")
    if base and not _image_available(client, base):
        raise RuntimeError(f"base image {base} is not available to the Docker engine (ML_PIPELINE_BASE_IMAGE)")
    how = _docker_build_push(client, ecr, uri, repository, tag, base, local, log, context)
    if local:
        _record_in_ecr(ecr, repository, tag, "sha256:" + hashlib.sha256(uri.encode()).hexdigest())
    log(f"{uri}: {how}")
    return {"image": uri, "tag": tag, "built": True, "how": how}


def _takes_base_image(context: Path) -> bool:
    import re  # noqa: PLC0415

    dockerfile = context / "Dockerfile"
    return dockerfile.is_file() and bool(re.search(r"^\s*ARG\s+BASE_IMAGE\b", dockerfile.read_text(), re.M | re.I))


def _image_available(client: DockerClient, name: str) -> bool:
    import docker.errors  # noqa: PLC0415

    try:
        client.images.get(name)
        return True
    except docker.errors.ImageNotFound:
        try:
            client.images.pull(name)
            return True
        except docker.errors.APIError:
            return False


def _docker_build_push(client: DockerClient, ecr: Client, uri, repository, tag, base, local, log, context: Path) -> str:
    buildargs = {"BASE_IMAGE": base} if base else {}
    client.images.build(path=str(context), tag=uri, buildargs=buildargs, rm=True, pull=False)
    if local:
        registry = os.environ.get("LOCALAWS_REGISTRY", "127.0.0.1:5000")
        target = f"{registry}/{repository}"
        client.images.get(uri).tag(target, tag=tag)
        _push(client, target, tag, None)
        return f"built with Docker and pushed to {target}:{tag}, the registry standing in for ECR"
    import base64  # noqa: PLC0415

    token = ecr.get_authorization_token()["authorizationData"][0]
    user, password = base64.b64decode(token["authorizationToken"]).decode().split(":", 1)
    _push(client, uri.rsplit(":", 1)[0], tag, {"username": user, "password": password})
    return "built with Docker and pushed to ECR"


def _push(client: DockerClient, repository: str, tag: str, auth: dict | None) -> None:
    for line in client.images.push(repository, tag=tag, auth_config=auth, stream=True, decode=True):
        if "error" in line:
            raise RuntimeError(f"push of {repository}:{tag} failed: {line['error']}")
