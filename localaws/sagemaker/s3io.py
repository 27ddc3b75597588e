"""Moving a job's files between S3 and its /opt/ml tree, as SageMaker's agent does."""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
import tarfile
from pathlib import Path

from localaws.sagemaker import confined

log = logging.getLogger(__name__)


class DataDownloadError(Exception):
    """A channel cannot be downloaded: the job fails with a ClientError."""


def _outside(bucket: str, key: str, what: str) -> DataDownloadError:
    return DataDownloadError(
        f'{what} failed:The S3 object "s3://{bucket}/{key}" cannot be downloaded: its key names a path '
        "outside the directory it is downloaded into (a '..' segment or an absolute path)."
    )


def split_uri(uri: str) -> tuple[str, str]:
    if not uri.startswith("s3://"):
        raise ValueError(f"not an S3 URI: {uri}")
    bucket, _, key = uri[len("s3://") :].partition("/")
    return bucket, key


def _list_keys(s3, bucket: str, prefix: str) -> list[str]:
    keys: list[str] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys.extend(obj["Key"] for obj in page.get("Contents", []) if not obj["Key"].endswith("/"))
    return sorted(keys)


def channel_objects(s3, source: dict, role_arn: str, region: str) -> list[tuple[str, str, str]]:
    """(bucket, key, path relative to the channel dir) of every object a channel names."""
    bucket, prefix = split_uri(source["S3Uri"])
    data_type = source.get("S3DataType", "S3Prefix")
    try:
        if data_type == "ManifestFile":
            manifest = json.loads(s3.get_object(Bucket=bucket, Key=prefix)["Body"].read())
            base_bucket, base_prefix = split_uri(manifest[0]["prefix"])
            return [(base_bucket, base_prefix + rel, rel) for rel in manifest[1:]]
        keys = _list_keys(s3, bucket, prefix)
    except s3.exceptions.NoSuchBucket:
        keys = []
    if not keys:
        raise DataDownloadError(
            f'Data download failed:No S3 objects found under S3 URL "{source["S3Uri"]}" given in input data '
            f"source. Please ensure that the bucket exists in the selected region ({region}), that objects "
            f'exist under that S3 prefix, and that the role "{role_arn}" has "s3:ListBucket" permissions on '
            f'bucket "{bucket}".'
        )
    if keys == [prefix]:  # the URI names one object
        return [(bucket, prefix, os.path.basename(prefix))]
    # Paths are relative to the prefix, as SageMaker lays them out: s3://b/data/train + data/train/a.csv -> a.csv
    return [(bucket, key, key[len(prefix) :].lstrip("/") or os.path.basename(key)) for key in keys]


def shard(objects: list, host_index: int, host_count: int, distribution: str) -> list:
    """ShardedByS3Key gives host i every host_count-th object; FullyReplicated gives all."""
    if distribution == "ShardedByS3Key" and host_count > 1:
        return objects[host_index::host_count]
    return objects


#: Objects up to this size move in one request; larger ones through boto3's transfer manager (parts
#: in parallel). Its thread pool and HeadObject cost a small object more than the transfer itself.
_ONE_REQUEST_BYTES = 8 * 1024 * 1024


def get_file(s3, bucket: str, key: str, target: Path) -> None:
    """Download one object to ``target``: a GetObject streamed to the file."""
    body = s3.get_object(Bucket=bucket, Key=key)["Body"]
    try:
        with open(target, "wb") as handle:
            shutil.copyfileobj(body, handle, 1024 * 1024)
    finally:
        body.close()


def put_file(s3, source, bucket: str, key: str, size: int) -> None:
    """Upload a file (a path or a binary file object) of ``size`` bytes."""
    if size > _ONE_REQUEST_BYTES:
        if isinstance(source, (str, Path)):
            s3.upload_file(str(source), bucket, key)
        else:
            s3.upload_fileobj(source, bucket, key)
    elif isinstance(source, (str, Path)):
        with open(source, "rb") as handle:
            s3.put_object(Bucket=bucket, Key=key, Body=handle)
    else:
        s3.put_object(Bucket=bucket, Key=key, Body=source)


def download(s3, objects: list[tuple[str, str, str]], into: Path) -> int:
    """Download each (bucket, key, relative path) into ``into``; every path is checked before the first
    download: a key that would land outside ``into`` fails the whole download (``DataDownloadError``)."""
    targets = []
    for bucket, key, relative in objects:
        try:
            targets.append((bucket, key, confined.join_inside(into, relative)))
        except confined.OutsideFolder:
            raise _outside(bucket, key, "Data download") from None
    total = 0
    for bucket, key, target in targets:
        target.parent.mkdir(parents=True, exist_ok=True)
        get_file(s3, bucket, key, target)
        total += target.stat().st_size
    return total


def upload_tar(s3, directory: Path, uri: str, *, within: Path) -> None:
    """Pack ``directory``'s contents (not the directory itself) as a .tar.gz at ``uri``.

    ``directory`` is a container's (under its ``/opt/ml`` tree ``within``): a link in it is stored as
    the link it is, as ``tar`` stores it, never followed; a linked ``directory`` packs nothing."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", dereference=False) as tar:
        for path in confined.tree(within, directory):
            tar.add(path, arcname=str(path.relative_to(directory)), recursive=False)
    size = buffer.tell()
    buffer.seek(0)
    bucket, key = split_uri(uri)
    put_file(s3, buffer, bucket, key, size)


def upload_tree(s3, directory: Path, uri: str, *, within: Path) -> None:
    """Upload every regular file under ``directory`` to ``uri``/<relative path> (CompressionType None).

    S3 has no links: a link the container left is skipped (uploading it would upload what it points
    at, a file of this machine's), and so is everything under a linked ``directory``."""
    bucket, prefix = split_uri(uri.rstrip("/") + "/")
    for path in confined.tree(within, directory):
        if path.is_symlink():
            log.warning("not uploading %s: a link (S3 objects cannot be links)", path)
        elif path.is_file():
            put_file(s3, path, bucket, prefix + str(path.relative_to(directory)), path.stat().st_size)


class CheckpointSync:
    """Mirrors a local checkpoint directory to S3: restored before training, synced during and after.
    A processing output's ``Continuous`` upload is the same sync without ``deletes``."""

    def __init__(self, s3, uri: str, local: Path, within: Path | None = None, deletes: bool = True):
        """``within``: the container's /opt/ml tree holding ``local``, whose links are never followed;
        ``deletes``: what was uploaded and is gone from ``local`` is deleted from S3 too."""
        self.s3 = s3
        self.deletes = deletes
        self.bucket, prefix = split_uri(uri.rstrip("/") + "/")
        self.prefix = prefix
        self.local = local
        self.within = within or local
        self._sent: dict[str, tuple[float, int]] = {}

    def restore(self) -> int:
        """Download the checkpoints; a key that would land outside the local path fails it before any
        download (``DataDownloadError``)."""
        targets = []
        for key in _list_keys(self.s3, self.bucket, self.prefix):
            try:
                targets.append((key, confined.join_inside(self.local, key[len(self.prefix) :])))
            except confined.OutsideFolder:
                raise _outside(self.bucket, key, "Checkpoint restore") from None
        count = 0
        for key, target in targets:
            target.parent.mkdir(parents=True, exist_ok=True)
            get_file(self.s3, self.bucket, key, target)
            stat = target.stat()
            self._sent[str(target.relative_to(self.local))] = (stat.st_mtime, stat.st_size)
            count += 1
        return count

    def sync(self) -> int:
        """Upload files that are new or changed since the last sync; returns how many. What was uploaded
        (or restored) and is no longer there is deleted from S3: SageMaker mirrors a checkpoint deleted in
        the container, so a file renamed away (a checkpoint's temp file) leaves nothing behind."""
        count = 0
        if not confined.real_dir(self.within, self.local):
            # Gone, or replaced by a link (whose target is not the job's): nothing to upload, and what was
            # sent stays, as it would if the files had not been deleted one by one.
            return 0
        present: set[str] = set()
        for path in confined.regular_files(self.within, self.local):  # a link's target is not the job's
            relative = str(path.relative_to(self.local))
            if relative.endswith((".tmp", ".partial")):  # being written: the next sync takes it
                present.add(relative)
                continue
            try:
                stat = path.stat()
            except FileNotFoundError:  # renamed away between listing and stat
                continue
            present.add(relative)
            signature = (stat.st_mtime, stat.st_size)
            if self._sent.get(relative) == signature:
                continue
            try:
                put_file(self.s3, path, self.bucket, self.prefix + relative, stat.st_size)
            except FileNotFoundError:
                present.discard(relative)
                continue
            self._sent[relative] = signature
            count += 1
        for relative in sorted(set(self._sent) - present) if self.deletes else ():
            self.s3.delete_object(Bucket=self.bucket, Key=self.prefix + relative)
            del self._sent[relative]
        return count
