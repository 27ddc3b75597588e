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


# --- building and pushing the training image ------------------------------------------------

REPO_ROOT = Path(__file__).resolve().parents[2]
#: The training image's build context; ML_PIPELINE_BUILD_CONTEXT overrides it (e.g. in a container).
BUILD_CONTEXT = Path(os.environ.get("ML_PIPELINE_BUILD_CONTEXT", "") or REPO_ROOT / "experiments" / "digits")
LOCAL_BASE_IMAGE = "localaws/debian-python-torch:bookworm"


def ensure_repository(ecr, name: str) -> dict:
    """The ECR repository, created encrypted, scanned on push and with immutable tags if missing."""
    try:
        return ecr.describe_repositories(repositoryNames=[name])["repositories"][0]
    except ecr.exceptions.RepositoryNotFoundException:
        return ecr.create_repository(
            repositoryName=name,
            imageTagMutability="IMMUTABLE",
            imageScanningConfiguration={"scanOnPush": True},
            encryptionConfiguration={"encryptionType": "AES256"},
            tags=[{"Key": "project", "Value": "ml-pipeline"}],
        )["repository"]


def has_tag(ecr, repository: str, tag: str) -> bool:
    try:
        return bool(ecr.describe_images(repositoryName=repository, imageIds=[{"imageTag": tag}])["imageDetails"])
    except ecr.exceptions.ImageNotFoundException:
        return False


def localaws_endpoint(endpoint_url: str | None) -> str | None:
    """``endpoint_url`` if it is a localaws (it answers /_localaws/health), else None."""
    if not endpoint_url:
        return None
    import urllib.request  # noqa: PLC0415

    try:
        with urllib.request.urlopen(endpoint_url.rstrip("/") + "/_localaws/health", timeout=2):
            return endpoint_url
    except OSError:
        return None


def _docker_client():
    """A Docker engine's client, or None when no engine answers."""
    try:
        import docker  # noqa: PLC0415

        client = docker.from_env(timeout=600)
        client.ping()
        return client
    except Exception:  # noqa: BLE001 - no engine, no socket, no permission: all mean "none here"
        return None


def _record_in_ecr(ecr, repository: str, tag: str, digest: str) -> None:
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


def build_and_push(ecr, repository: str, endpoint_url: str | None, log=print, context: Path = BUILD_CONTEXT) -> dict:
    """The training image for ``context``, tagged by its content hash, in ECR (or what stands in for it).

    Skipped when ECR already holds the tag. With a Docker engine the image is built with the docker SDK and
    pushed (to ECR, or on localaws to the local registry standing in for ECR); on localaws without an engine,
    the same build context is registered with localaws's process runner under the same URI.
    """
    tag = context_hash(context)
    repo = ensure_repository(ecr, repository)
    uri = f"{repo['repositoryUri']}:{tag}"
    if has_tag(ecr, repository, tag):
        log(f"{uri} is in ECR already: build skipped")
        return {"image": uri, "tag": tag, "built": False, "how": "already in ECR"}
    local = localaws_endpoint(endpoint_url)
    client = _docker_client()
    if client is not None:
        base = os.environ.get("ML_PIPELINE_BASE_IMAGE", "")
        if not base and local:
            base = LOCAL_BASE_IMAGE
        if base and not _image_available(client, base):
            client = None
            log(f"base image {base} is not available to the Docker engine")
    hows = []
    if client is not None:
        hows.append(_docker_build_push(client, ecr, uri, repository, tag, base, local, log, context))
    if local:
        # Whichever runner localaws picks (a container, or a process without an engine), the image is there.
        try:
            from localaws.client import register_image  # noqa: PLC0415 - only on localaws

            register_image(local, uri, context)
            hows.append("registered the build context with localaws's process runner")
        except (ImportError, RuntimeError) as error:  # localaws elsewhere (compose): the pushed image serves
            if not hows:
                raise RuntimeError(f"No Docker engine, and localaws cannot take the build context: {error}") from None
    if not hows:
        raise RuntimeError(f"No Docker engine to build {uri}: run the task where one is available.")
    how = "; ".join(hows)
    if local:
        _record_in_ecr(ecr, repository, tag, "sha256:" + hashlib.sha256(uri.encode()).hexdigest())
    log(f"{uri}: {how}")
    return {"image": uri, "tag": tag, "built": True, "how": how}


def _image_available(client, name: str) -> bool:
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


def _docker_build_push(client, ecr, uri, repository, tag, base, local, log, context: Path) -> str:
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


def _push(client, repository: str, tag: str, auth: dict | None) -> None:
    for line in client.images.push(repository, tag=tag, auth_config=auth, stream=True, decode=True):
        if "error" in line:
            raise RuntimeError(f"push of {repository}:{tag} failed: {line['error']}")
