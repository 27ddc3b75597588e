"""Script mode's source archive, put in place for the container as its toolkit would fetch it.

The framework containers download ``sagemaker_submit_directory`` (training's hyperparameter,
serving's ``SAGEMAKER_SUBMIT_DIRECTORY``), an s3:// sourcedir.tar.gz, and unpack it into
/opt/ml/code. Ours cannot reach localaws's S3 from a container's network, so the engine does it
before the container starts; the script sees the same /opt/ml/code. The archive is the user's,
untrusted: unpacked with ``archives.extract``'s checks, a member that would land or point
outside the code folder fails the job or endpoint naming it.
"""

from __future__ import annotations

import tarfile
from pathlib import Path

from botocore.exceptions import BotoCoreError, ClientError

from localaws.sagemaker import archives, frameworks, s3io

CODE_IN_CONTAINER = "/opt/ml/code"


class SourceUnavailable(Exception):
    """The archive cannot be had or is refused: the message says which and why."""


def submit_directory(image: str, hyperparameters: dict) -> str | None:
    """The s3:// sourcedir.tar.gz a training on ``image`` takes from its hyperparameters, or None: the
    image is not a framework image (an own container carries its code), or names no archive in S3."""
    if frameworks.recognise(image) is None:
        return None
    uri = frameworks.decoded(hyperparameters.get("sagemaker_submit_directory", ""))
    return uri if uri.startswith("s3://") else None


def fetch(s3, uri: str, scratch: Path, targets: list[Path]) -> None:
    """Download ``uri`` to ``scratch`` and unpack it into every folder of ``targets`` (each a
    container's /opt/ml/code)."""
    try:
        bucket, key = s3io.split_uri(uri)
    except ValueError:
        raise SourceUnavailable(f"sagemaker_submit_directory {uri!r} is not an s3:// URI") from None
    scratch.parent.mkdir(parents=True, exist_ok=True)
    try:
        s3io.get_file(s3, bucket, key, scratch)
    except (ClientError, BotoCoreError) as error:
        raise SourceUnavailable(
            f"the source archive {uri} (sagemaker_submit_directory) could not be downloaded: {error}"
        ) from None
    try:
        for target in targets:
            target.mkdir(parents=True, exist_ok=True)
            try:
                archives.extract(scratch, target, CODE_IN_CONTAINER, "code")
            except archives.ArchiveRefused as error:
                raise SourceUnavailable(
                    f"the source archive {uri} (sagemaker_submit_directory) was refused: {error}"
                ) from None
            except (tarfile.TarError, OSError) as error:
                raise SourceUnavailable(
                    f"the source archive {uri} (sagemaker_submit_directory) is not a valid tar.gz archive: {error}"
                ) from None
    finally:
        scratch.unlink(missing_ok=True)
