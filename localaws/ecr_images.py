"""ECR's images of localaws: what ``register-image`` registers for the process runner and what is pushed to
the local registry standing in for ECR (``LOCALAWS_REGISTRY``), as ECR's ``ListImages``,
``DescribeImages`` and ``BatchGetImage`` list them and ``BatchDeleteImage`` deletes them.

moto's ECR keeps repositories and the manifests ``PutImage`` gives it, but speaks no registry protocol:
nothing pushed reaches it. So before moto answers a call about a repository's images, the repository's
records are brought into step with where localaws's images are (``sync``): a registered context whose
URI names the repository (its digest and size from its content, see ``image_contexts``) and each tag
the registry holds for the repository's name are records of moto's (its own ``Image``, marked as
ours, so that it persists with moto's state), a tag pointing at the image that holds it now (a tag
pushed again moves, as ECR moves it, leaving the image it left untagged), and a record whose image is
gone is gone. moto then answers as for any record, but for ``imageSizeInBytes`` of ours, which is the
sum of the image's layers as ECR gives it (moto's says the size of the config).

A ``BatchDeleteImage`` that deletes an image deletes it where it is, too: the context is deregistered,
the registry's manifest deleted, the Docker engine's tag of the ECR URI removed; a job naming it
afterwards fails as on AWS (``ClientError: Requested image ... not found``). A tag deleted from an
image the registry keeps under another tag comes back (the registry cannot untag).

Registering a context under an ECR URI whose repository does not exist creates it (an ECR repository
creation template's "create on push"); an image pushed to the registry shows in a repository that
exists.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from localaws import aws_errors
from localaws.aws_errors import AwsError
from localaws.image_contexts import ECR_IMAGE, ImageContexts, manifest_of
from localaws.settings import Settings

log = logging.getLogger(__name__)

TARGET_PREFIX = "AmazonEC2ContainerRegistry_V20150921."
#: Calls about a repository's images: its records are synced before moto answers.
SYNCED = frozenset({"ListImages", "DescribeImages", "BatchGetImage", "BatchDeleteImage"})
_MANIFEST_ACCEPT = ", ".join(
    (
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.oci.image.index.v1+json",
    )
)
_INDEX_TYPES = ("application/vnd.docker.distribution.manifest.list.v2+json", "application/vnd.oci.image.index.v1+json")
_REGISTRY_TIMEOUT = 10


class EcrImages:
    def __init__(self, settings: Settings, contexts: ImageContexts, docker: Callable[[], Any], moto, in_moto):
        """``docker()``: the Docker runner, or None; ``moto``: moto's WSGI application; ``in_moto(environ,
        work)``: ``work()`` in moto's gate (see the gateway)."""
        self.settings = settings
        self.contexts = contexts
        self.docker = docker
        self.moto = moto
        self.in_moto = in_moto

    # --- the request path -----------------------------------------------------------------------

    def handle(self, environ: dict, target: str, region: str | None) -> tuple[int, list, bytes] | None:
        """BatchDeleteImage's answer (moto's, once it deleted); None to let moto answer (records synced)."""
        operation = target[len(TARGET_PREFIX) :]
        if operation not in SYNCED:
            return None
        try:
            params = aws_errors.json_request(environ, aws_errors.MAX_API_BODY, "ecr", operation)
        except AwsError as error:
            return aws_errors.answer(environ, "json", error)
        name = params.get("repositoryName") if isinstance(params, dict) else None
        if not isinstance(name, str):
            return None  # moto says what is wrong with it
        backend = self._backend(params.get("registryId"), region)
        self.in_moto(environ, lambda: self.sync(backend, name))
        if operation not in ("BatchDeleteImage", "DescribeImages"):
            return None
        status, headers, body = self._moto_answer(environ)
        if status != 200:
            return status, headers, body
        answer = json.loads(body or b"{}")
        if operation == "BatchDeleteImage":
            self.in_moto(environ, lambda: self.forget(backend, name, answer.get("imageIds", [])))
            return status, headers, body
        sizes = self._sizes(backend, name)
        for detail in answer.get("imageDetails", []):
            if detail.get("imageDigest") in sizes:
                detail["imageSizeInBytes"] = sizes[detail["imageDigest"]]
        return status, headers, json.dumps(answer).encode()

    @staticmethod
    def _sizes(backend, name: str) -> dict[str, int]:
        repository = backend.repositories.get(name)
        return {
            record.get_image_digest(): record.localaws_size
            for record in (repository.images if repository else [])
            if _ours(record) and record.localaws_size is not None
        }

    def _backend(self, registry_id: str | None, region: str | None):
        from moto.ecr.models import ecr_backends  # noqa: PLC0415 - moto loads with the gateway

        return ecr_backends[registry_id or self.settings.account_id][region or self.settings.region]

    def _moto_answer(self, environ: dict) -> tuple[int, list, bytes]:
        answered: dict = {}

        def start_response(status, headers, exc_info=None):
            answered["status"], answered["headers"] = status, headers
            return lambda data: None

        chunks = self.moto(environ, start_response)
        try:
            body = b"".join(chunks)
        finally:
            if hasattr(chunks, "close"):
                chunks.close()
        headers = [(k, v) for k, v in answered["headers"] if k.lower() != "content-length"]
        return int(answered["status"].split(" ", 1)[0]), headers, body

    # --- registration ---------------------------------------------------------------------------

    def registered(self, environ: dict, uri: str) -> None:
        """A context was registered under ``uri``: its ECR repository made if missing (create on push)."""
        match = ECR_IMAGE.match(uri)
        if match is None:
            return
        backend = self._backend(match["account"], match["region"])

        def create() -> None:
            if match["repository"] not in backend.repositories:
                backend.create_repository(
                    repository_name=match["repository"],
                    registry_id=match["account"],
                    encryption_config=None,
                    image_scan_config=None,
                    image_tag_mutability=None,
                    tags=[],
                )
            self.sync(backend, match["repository"])

        self.in_moto(environ, create)

    # --- moto's records in step with the images ----------------------------------------------------

    def sync(self, backend, name: str) -> None:
        from moto.ecr.models import Image  # noqa: PLC0415 - moto loads with the gateway

        repository = backend.repositories.get(name)
        if repository is None:
            return
        wanted: dict[str, dict] = {}  # digest -> the image as it is now
        for tag, digest, manifest, media_type, size, pushed_at in self._context_images(repository.uri):
            image = wanted.setdefault(digest, _image("context", manifest, media_type, size, pushed_at))
            if tag:
                image["tags"].add(tag)
        for tag, digest, manifest, media_type, size in self._registry_images(name):
            image = wanted.setdefault(digest, _image("registry", manifest, media_type, size, None))
            image["tags"].add(tag)
        repository.images[:] = [
            record for record in repository.images if not _ours(record) or record.get_image_digest() in wanted
        ]
        for digest, image in wanted.items():
            record = next((r for r in repository.images if r.get_image_digest() == digest), None)
            for other in repository.images:  # a tag is on one image: the one that holds it now
                if other is not record:
                    for tag in image["tags"] & set(other.image_tags):
                        other.remove_tag(tag)
            if record is None:
                record = Image(
                    account_id=repository.registry_id,
                    tag=None,  # type: ignore[arg-type]  # untagged, as moto's own untagged images are
                    manifest=image["manifest"],
                    repository=name,
                    image_manifest_mediatype=image["media_type"],
                    digest=digest,
                    registry_id=repository.registry_id,
                )
                # Marked as ours: plain attributes of moto's own record, which persists with its state.
                vars(record).update(localaws_source=image["source"], localaws_size=image["size"])
                if image["pushed_at"]:
                    record.image_pushed_at = int(image["pushed_at"])
                repository.images.append(record)
            if _ours(record):
                record.image_tags = sorted(image["tags"])
            else:  # a record PutImage made for the same manifest: it gains the tags
                record.image_tags = sorted(set(record.image_tags) | image["tags"])
            record.image_tag = record.image_tags[-1] if record.image_tags else None

    def forget(self, backend, name: str, deleted: list[dict]) -> None:
        """Delete, where they are, the images ``BatchDeleteImage`` took from moto's records."""
        repository = backend.repositories.get(name)
        remaining = {record.get_image_digest() for record in repository.images} if repository else set()
        base = f"{backend.account_id}.dkr.ecr.{backend.region_name}.amazonaws.com/{name}"
        contexts = self.contexts.list()
        for image_id in deleted:
            digest, tag = image_id.get("imageDigest"), image_id.get("imageTag")
            gone = bool(digest) and digest not in remaining
            for uri, entry in contexts.items():
                if not uri.startswith(base + ":") and not uri.startswith(base + "@"):
                    continue
                same_image = gone and (entry.get("digest") == digest or uri == f"{base}@{digest}")
                if same_image or (tag and uri == f"{base}:{tag}"):
                    self.contexts.unregister(uri)
            if gone and digest:
                self._registry_delete(name, digest)
            if tag:
                self._untag(f"{base}:{tag}")

    # --- where the images are -----------------------------------------------------------------------

    def _context_images(self, repository_uri: str):
        """(tag, digest, manifest, media type, size, pushed at) of each context registered in the repository."""
        for uri, entry in self.contexts.list().items():
            if not (uri.startswith(repository_uri + ":") or uri.startswith(repository_uri + "@")):
                continue
            rest = uri[len(repository_uri) :]
            tag = rest[1:] if rest.startswith(":") else None
            if "manifest" not in entry:  # registered by an older localaws: described now
                entry = {**entry, **manifest_of(Path(entry["context"]))}
            yield (
                tag,
                entry["digest"],
                entry["manifest"],
                _media_type(entry["manifest"]),
                entry["size"],
                entry.get("pushed_at"),
            )

    def _registry_url(self, name: str, rest: str) -> str:
        registry = self.settings.registry.rstrip("/")
        for prefix in ("http://", "https://"):
            registry = registry.removeprefix(prefix)
        return f"http://{registry}/v2/{urllib.parse.quote(name)}/{rest}"

    def _registry_images(self, name: str):
        """(tag, digest, manifest, media type, size) of each tag the registry holds under ``name``."""
        try:
            with urllib.request.urlopen(self._registry_url(name, "tags/list"), timeout=_REGISTRY_TIMEOUT) as answer:
                tags = json.loads(answer.read()).get("tags") or []
        except (OSError, ValueError) as error:  # no registry, or no such repository in it
            log.debug("registry: no tags of %s (%s)", name, error)
            return
        for tag in tags:
            found = self._manifest(name, tag)
            if found is not None:
                yield (tag, *found)

    def _manifest(self, name: str, reference: str) -> tuple[str, str, str, int | None] | None:
        request = urllib.request.Request(
            self._registry_url(name, f"manifests/{urllib.parse.quote(reference)}"),
            headers={"Accept": _MANIFEST_ACCEPT},
        )
        try:
            with urllib.request.urlopen(request, timeout=_REGISTRY_TIMEOUT) as answer:
                body = answer.read()
                digest = answer.headers.get("Docker-Content-Digest")
                media_type = (answer.headers.get("Content-Type") or "").split(";", 1)[0]
        except OSError as error:
            log.debug("registry: no manifest %s:%s (%s)", name, reference, error)
            return None
        digest = digest or "sha256:" + hashlib.sha256(body).hexdigest()
        manifest = json.loads(body)
        media_type = manifest.get("mediaType") or media_type
        if media_type in _INDEX_TYPES:  # ECR: a manifest list is as large as its largest image
            sizes = [self._manifest(name, child["digest"]) for child in manifest.get("manifests", [])]
            size = max((found[3] or 0 for found in sizes if found), default=None)
        else:
            size = sum(layer.get("size", 0) for layer in manifest.get("layers", []))
        return digest, body.decode(), media_type, size

    def _registry_delete(self, name: str, digest: str) -> None:
        request = urllib.request.Request(self._registry_url(name, f"manifests/{digest}"), method="DELETE")
        try:
            with urllib.request.urlopen(request, timeout=_REGISTRY_TIMEOUT):
                log.info("registry: deleted %s@%s", name, digest)
        except urllib.error.HTTPError as error:
            if error.code != 404:
                log.warning("registry: could not delete %s@%s: %s", name, digest, error)
        except OSError:
            pass  # no registry: nothing there to delete

    def _untag(self, uri: str) -> None:
        if self.settings.runner == "process":
            return
        runner = self.docker()
        if runner is None:
            return
        import docker.errors  # noqa: PLC0415 - the Docker SDK, where a Docker runner is

        try:
            runner.client.images.remove(uri)
        except docker.errors.DockerException:
            pass  # the engine never had it


def _ours(record) -> bool:
    """Whether a record of moto's is one of localaws's images (``sync`` made it)."""
    return getattr(record, "localaws_source", None) is not None


def _image(source: str, manifest: str, media_type: str, size: int | None, pushed_at: float | None) -> dict:
    return {
        "source": source,
        "manifest": manifest,
        "media_type": media_type,
        "size": size,
        "pushed_at": pushed_at or time.time(),
        "tags": set(),
    }


def _media_type(manifest: str) -> str:
    return json.loads(manifest).get("mediaType", "application/vnd.oci.image.manifest.v1+json")
