"""The run's training channels in S3, from the experiment's ``channels`` and ``prepare``.

Each channel's source is one of:

    s3://bucket/prefix/          used as it is (it must hold an object)
    a folder of the experiment   uploaded once per content hash:
                                 s3://<bucket>/<experiment>/data/<hash>/<channel>/<files>, marked complete by
                                 s3://<bucket>/<experiment>/data/<hash>/<channel>.complete.json, written last
    (none; ``prepare`` writes it)  ``prepare(output_dir, start=, end=, seed=)`` from source_dir, called for the
                                 run's data interval (``plan["data_interval"]``: ISO ``start`` and ``end``) and
                                 ``plan["data_seed"]``; each ``output_dir/<channel>`` goes to
                                 s3://<bucket>/<data_prefix>/<channel>/, its manifest.json written last, and a
                                 later run of the same interval reuses the complete partition

A channel's mapping may also say ``content_type`` and ``distribution`` (``sagemaker_requests`` reads them).
Every file uploaded stays inside its folder (``images.tree_files``: links out refused); a channel with no
file is an error naming it.
"""

from __future__ import annotations

import json
import logging
import tempfile
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from ml_pipeline import code, images
from ml_pipeline.aws import object_exists

if TYPE_CHECKING:
    from ml_pipeline.aws import Client
    from ml_pipeline.plan import Plan

log = logging.getLogger(__name__)


def source_of(entry: str | dict) -> str | None:
    """A channel's source: the string itself, or a mapping's ``source`` (None: ``prepare`` writes it)."""
    return entry.get("source") if isinstance(entry, dict) else entry


def _upload_tree(s3: Client, folder: Path, files: list[str], bucket: str, prefix: str) -> None:
    for relative in files:
        s3.upload_file(str(folder / relative), bucket, f"{prefix}/{relative}")


def _channel_files(folder: Path, name: str, where: str) -> list[str]:
    try:
        files = images.tree_files(folder, skip_build_junk=False)
    except (ValueError, OSError) as error:
        raise ValueError(f"{where}: channel {name}: {error}") from None
    if not files:
        raise ValueError(f"{where}: channel {name}: {folder} holds no file (an empty channel)")
    return files


def _from_s3(s3: Client, name: str, uri: str, where: str) -> str:
    bucket, _, prefix = uri[len("s3://") :].partition("/")
    if not bucket:
        raise ValueError(f"{where}: channel {name}: {uri} names no bucket")
    listed = s3.list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=1)
    if not listed.get("KeyCount"):
        raise ValueError(f"{where}: channel {name}: nothing in {uri} (an empty channel)")
    return uri


def _from_folder(s3: Client, plan: Plan, name: str, source: str, where: str) -> str:
    experiment, bucket = plan["experiment"], plan["params"]["bucket"]
    folder = code.inside(experiment["folder"], source, f"{where}: channel {name}")
    if not folder.is_dir():
        raise ValueError(f"{where}: channel {name}: {source} is not a folder of the experiment")
    files = _channel_files(folder, name, where)
    digest = images.files_hash(folder, files)
    base = f"{experiment['name']}/data/{digest}"
    uri = f"s3://{bucket}/{base}/{name}/"
    marker = f"{base}/{name}.complete.json"  # beside the channel's prefix, so the job never downloads it
    if object_exists(s3, bucket, marker):
        log.info("channel %s: %s holds %s already", name, uri, source)
        return uri
    _upload_tree(s3, folder, files, bucket, f"{base}/{name}")
    s3.put_object(
        Bucket=bucket,
        Key=marker,
        ContentType="application/json",
        Body=json.dumps({"channel": name, "source": source, "hash": digest, "files": files}).encode(),
    )
    log.info("channel %s: %s uploaded to %s", name, source, uri)
    return uri


def data_interval(plan: Plan) -> tuple[datetime, datetime]:
    interval = plan.get("data_interval")
    try:
        if interval and interval["start"] and interval["end"]:
            return datetime.fromisoformat(interval["start"]), datetime.fromisoformat(interval["end"])
    except ValueError:
        pass
    raise ValueError(f"the plan has no data interval to prepare the data for (data_interval: {interval!r})")


def _prepared(s3: Client, plan: Plan, where: str) -> dict[str, str]:
    """``prepare``'s channels for the run's data interval: the partition's manifest when complete, else
    written now (every file first, the manifest last)."""
    experiment, bucket = plan["experiment"], plan["params"]["bucket"]
    prefix = plan["names"]["data_prefix"].strip("/")
    manifest_key = f"{prefix}/manifest.json"
    if object_exists(s3, bucket, manifest_key):
        manifest = json.loads(s3.get_object(Bucket=bucket, Key=manifest_key)["Body"].read())
        log.info("data partition s3://%s/%s exists: reused", bucket, prefix)
        return manifest["channels"]
    start, end = data_interval(plan)
    with tempfile.TemporaryDirectory(prefix="ml-pipeline-prepare-") as tmp:
        output = Path(tmp)
        code.call(experiment, experiment["prepare"], output, start=start, end=end, seed=plan["data_seed"])
        stray = sorted(entry.name for entry in output.iterdir() if not entry.is_dir() or entry.is_symlink())
        if stray:
            raise ValueError(
                f"{where}: prepare: {experiment['prepare']} wrote {', '.join(stray)} outside a "
                "channel folder (output_dir/<channel>/<files>)"
            )
        written = sorted(entry.name for entry in output.iterdir())
        if not written:
            raise ValueError(f"{where}: prepare: {experiment['prepare']} wrote no channel")
        listings = {name: _channel_files(output / name, name, where) for name in written}
        channels = {}
        for name, files in listings.items():
            _upload_tree(s3, output / name, files, bucket, f"{prefix}/{name}")
            channels[name] = f"s3://{bucket}/{prefix}/{name}/"
    s3.put_object(
        Bucket=bucket,
        Key=manifest_key,
        ContentType="application/json",
        Body=json.dumps(
            {
                "channels": channels,
                "seed": plan["data_seed"],
                "experiment": experiment["name"],
                "prepare": experiment["prepare"],
                "start": start.isoformat(),
                "end": end.isoformat(),
                "files": {name: len(files) for name, files in listings.items()},
            }
        ).encode(),
    )
    log.info("data partition s3://%s/%s written by %s", bucket, prefix, experiment["prepare"])
    return channels


def prepare(s3: Client, plan: Plan) -> dict[str, str]:
    """{channel: s3 URI} for every channel of the run, in the experiment's order (then prepare's)."""
    experiment = plan["experiment"]
    where = f"experiments/{experiment['name']}/experiment.yaml"
    declared = experiment.get("channels") or {}
    result: dict[str, str] = {}
    for name, entry in declared.items():
        source = source_of(entry)
        if source is None:
            continue
        if not isinstance(source, str) or not source:
            raise ValueError(f"{where}: channels.{name}: {source!r} is not an s3:// prefix or a folder")
        if source.startswith("s3://"):
            result[name] = _from_s3(s3, name, source, where)
        else:
            result[name] = _from_folder(s3, plan, name, source, where)
    if experiment.get("prepare"):
        for name, uri in _prepared(s3, plan, where).items():
            if name in result:
                raise ValueError(f"{where}: channels.{name}: prepare writes it and the file names a source too")
            result[name] = uri
    missing = [name for name in declared if name not in result]
    if missing:
        raise ValueError(
            f"{where}: channels.{', '.join(missing)}: no source, and "
            + (
                f"{experiment['prepare']} does not write it"
                if experiment.get("prepare")
                else "no prepare function writes it"
            )
        )
    if not result:
        raise ValueError(f"{where}: channels: the experiment has no channel (channels or prepare)")
    ordered = {name: result[name] for name in declared if name in result}
    ordered.update((name, uri) for name, uri in result.items() if name not in ordered)
    return ordered
