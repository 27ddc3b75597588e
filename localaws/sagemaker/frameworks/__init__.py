"""SageMaker's framework images (script mode), recognised by URI and run as images of our own.

A ``TrainingImage`` or model ``Image`` that the SageMaker Python SDK's ``image_uris.retrieve``
names for PyTorch (``pytorch-training``, ``pytorch-inference``) or scikit-learn
(``sagemaker-scikit-learn``, training and inference alike), in any region of the SDK's registry
list with that region's account, runs ``container/``: our stand-in for the framework container,
with the sagemaker-training and sagemaker-inference toolkits' contract (``container/framework_toolkit``).
The Docker runner builds it on the base image with PyTorch and scikit-learn (``localaws_image``);
the process runner runs it with this Python. Which framework version the tag names is checked
against the SDK's list, but what runs is the framework the base image (or this Python) has.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

#: Our build context standing in for every framework image.
CONTAINER_CONTEXT = Path(__file__).resolve().parent / "container"
#: The base image the Docker runner builds it on (scripts/docker-engine.sh base-image makes it).
DEFAULT_BASE_IMAGE = "localaws/debian-python-torch:bookworm"
BASE_IMAGE_ENV = "LOCALAWS_FRAMEWORK_BASE_IMAGE"

#: repository -> (framework, the SDK's config file, scopes the repository serves)
REPOSITORIES = {
    "pytorch-training": ("pytorch", "pytorch.json", ("training",)),
    "pytorch-inference": ("pytorch", "pytorch.json", ("inference",)),
    "sagemaker-scikit-learn": ("sklearn", "sklearn.json", ("training", "inference")),
}
#: What the framework's name is in Python, to say which version runs.
MODULES = {"pytorch": "torch", "sklearn": "sklearn"}

_ECR = re.compile(
    # amazonaws.com, amazonaws.com.cn, and the ISO partitions' own domains (c2s.ic.gov...)
    r"^(?P<account>\d{12})\.dkr\.ecr\.(?P<region>[a-z0-9-]+)\.(?:amazonaws\.com(?:\.cn)?|[a-z0-9-]+(?:\.[a-z0-9-]+)+)"
    r"/(?P<repository>[a-z0-9][a-z0-9._/-]*?):(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})$"
)


@dataclass(frozen=True)
class FrameworkImage:
    uri: str
    framework: str  # pytorch | sklearn
    repository: str
    version: str | None  # as the SDK's config names it (2.5.1, 1.2-1); None: a tag the SDK does not list
    tag: str

    @property
    def local_name(self) -> str:
        """The Docker image standing in for it: one per framework and build context."""
        return f"localaws/framework-{self.framework}:{context_hash()}"


def _config_dir() -> Path | None:
    """The SDK's image_uri_config folder, found without importing the SDK (1.4 s)."""
    spec = importlib.util.find_spec("sagemaker")
    for location in (spec.submodule_search_locations or []) if spec else []:
        folder = Path(location) / "core" / "image_uri_config"
        if folder.is_dir():
            return folder
    return None


@functools.lru_cache(maxsize=None)
def _registry(config_file: str, scopes: tuple[str, ...]) -> tuple[dict[str, set[str]], set[str]]:
    """(region -> accounts, every version and alias) of the scopes in one of the SDK's config files."""
    folder = _config_dir()
    if folder is None or not (folder / config_file).is_file():
        log.warning("the SageMaker Python SDK's image_uri_config is not installed: framework images are not recognised")
        return {}, set()
    config = json.loads((folder / config_file).read_text())
    accounts: dict[str, set[str]] = {}
    versions: set[str] = set()
    for scope in scopes:
        section = config.get(scope) or {}
        versions.update(section.get("version_aliases", {}))
        for version, details in section.get("versions", {}).items():
            versions.add(version)
            for region, account in details.get("registries", {}).items():
                accounts.setdefault(region, set()).add(account)
    return accounts, versions


def recognise(uri: str) -> FrameworkImage | None:
    """The framework image ``uri`` names, or None when it is not one of the SDK's framework images
    (another account's repository of the same name is the user's own image)."""
    match = _ECR.match(uri)
    if not match or match["repository"] not in REPOSITORIES:
        return None
    framework, config_file, scopes = REPOSITORIES[match["repository"]]
    accounts, versions = _registry(config_file, scopes)
    if match["account"] not in accounts.get(match["region"], ()):
        return None
    tag = match["tag"]
    # The tag is <version>-<processor>-<python>[-...]: the longest version the SDK lists that starts it.
    known = [version for version in versions if tag == version or tag.startswith(version + "-")]
    return FrameworkImage(uri, framework, match["repository"], max(known, key=len) if known else None, tag)


def unsupported(image: FrameworkImage) -> str | None:
    """Why ``image`` cannot run (a version the SDK does not list for it), or None."""
    if image.version is not None:
        return None
    _, config_file, scopes = REPOSITORIES[image.repository]
    _, versions = _registry(config_file, scopes)
    return (
        f"{image.uri}: the tag {image.tag!r} names no {image.repository} version that the SageMaker "
        f"Python SDK lists (tags are <version>-<processor>-<python>, e.g. "
        f"{sorted(versions)[-1]}-cpu-{'py3' if image.framework == 'sklearn' else 'py311'})."
    )


@functools.lru_cache(maxsize=1)
def context_hash() -> str:
    """Content hash of the build context: a changed toolkit is a new image, an unchanged one is not rebuilt."""
    digest = hashlib.sha256()
    for path in sorted(CONTAINER_CONTEXT.rglob("*")):
        if "__pycache__" in path.parts or not path.is_file():
            continue
        digest.update(str(path.relative_to(CONTAINER_CONTEXT)).encode() + b"\0")
        digest.update(str(os.access(path, os.X_OK)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def base_image() -> str:
    return os.environ.get(BASE_IMAGE_ENV) or DEFAULT_BASE_IMAGE


def decoded(value: str) -> str:
    """A hyperparameter as the toolkit reads it: JSON-decoded when it is JSON (the SDK encodes
    every value), else as it is."""
    try:
        decoded_value = json.loads(value)
    except (ValueError, TypeError):
        return value
    return decoded_value if isinstance(decoded_value, str) else value
