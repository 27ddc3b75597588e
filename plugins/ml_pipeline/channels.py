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
                                 later run of the same interval reuses the complete partition. With
                                 ``prepare_job`` (``compute: processing``) a SageMaker processing job of the
                                 run calls it instead (``prepare_job.py``) and its output lands at the same
                                 prefixes; here its channels are read back from S3 and the manifest written

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


def upload_tree(s3: Client, folder: Path, files: list[str], bucket: str, prefix: str) -> None:
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
    upload_tree(s3, folder, files, bucket, f"{base}/{name}")
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


def manifest_key(plan: Plan) -> str:
    """The key of the data partition's manifest: written last, it says the partition is complete."""
    return f"{plan['names']['data_prefix'].strip('/')}/manifest.json"


def partition_complete(s3: Client, plan: Plan) -> bool:
    return object_exists(s3, plan["params"]["bucket"], manifest_key(plan))


def _written_by_job(s3: Client, plan: Plan, where: str, processing_job: str | None) -> dict[str, int]:
    """{channel: number of files} the run's processing job left under the partition's prefix: each object
    must lie in a channel folder (``<prefix>/<channel>/<files>``), as the worker's prepare must write them."""
    bucket, prefix = plan["params"]["bucket"], plan["names"]["data_prefix"].strip("/")
    if processing_job is None:
        raise ValueError(
            f"{where}: prepare: s3://{bucket}/{prefix}/ has no manifest and no processing job of this run wrote it"
        )
    counts: dict[str, int] = {}
    stray = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{prefix}/"):
        for entry in page.get("Contents", []):
            channel, _, rest = entry["Key"][len(prefix) + 1 :].partition("/")
            if rest:
                counts[channel] = counts.get(channel, 0) + 1
            else:
                stray.append(channel)
    spec = plan["experiment"]["prepare"]
    if stray:
        raise ValueError(
            f"{where}: prepare: {spec} (processing job {processing_job}) wrote {', '.join(sorted(stray))} "
            "outside a channel folder (output_dir/<channel>/<files>)"
        )
    if not counts:
        raise ValueError(f"{where}: prepare: {spec} (processing job {processing_job}) wrote no channel")
    return dict(sorted(counts.items()))


def _prepared(s3: Client, plan: Plan, where: str, processing_job: str | None = None) -> dict[str, str]:
    """``prepare``'s channels for the run's data interval: the partition's manifest when complete, else
    written now (every file first, the manifest last): here, or by ``processing_job``."""
    experiment, bucket = plan["experiment"], plan["params"]["bucket"]
    prefix = plan["names"]["data_prefix"].strip("/")
    if partition_complete(s3, plan):
        manifest = json.loads(s3.get_object(Bucket=bucket, Key=manifest_key(plan))["Body"].read())
        log.info("data partition s3://%s/%s exists: reused", bucket, prefix)
        return manifest["channels"]
    start, end = data_interval(plan)
    if experiment.get("prepare_job"):
        counts = _written_by_job(s3, plan, where, processing_job)
        channels = {name: f"s3://{bucket}/{prefix}/{name}/" for name in counts}
        _write_manifest(s3, plan, channels, counts, start, end, processing_job)
        log.info("data partition s3://%s/%s written by processing job %s", bucket, prefix, processing_job)
        return channels
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
            upload_tree(s3, output / name, files, bucket, f"{prefix}/{name}")
            channels[name] = f"s3://{bucket}/{prefix}/{name}/"
    _write_manifest(s3, plan, channels, {name: len(files) for name, files in listings.items()}, start, end)
    log.info("data partition s3://%s/%s written by %s", bucket, prefix, experiment["prepare"])
    return channels


def _write_manifest(
    s3: Client,
    plan: Plan,
    channels: dict[str, str],
    files: dict[str, int],
    start: datetime,
    end: datetime,
    processing_job: str | None = None,
) -> None:
    manifest = {
        "channels": channels,
        "seed": plan["data_seed"],
        "experiment": plan["experiment"]["name"],
        "prepare": plan["experiment"]["prepare"],
        "start": start.isoformat(),
        "end": end.isoformat(),
        "files": files,
    }
    if processing_job:
        manifest["processing_job"] = processing_job
    s3.put_object(
        Bucket=plan["params"]["bucket"],
        Key=manifest_key(plan),
        ContentType="application/json",
        Body=json.dumps(manifest).encode(),
    )


def prepare(s3: Client, plan: Plan, processing_job: str | None = None) -> dict[str, str]:
    """{channel: s3 URI} for every channel of the run, in the experiment's order (then prepare's);
    ``processing_job``: the run's processing job that wrote prepare's partition (``prepare_job``)."""
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
        for name, uri in _prepared(s3, plan, where, processing_job).items():
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
