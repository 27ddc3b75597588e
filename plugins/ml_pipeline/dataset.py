"""The example data set: sklearn's 8x8 digits, split and written as SageMaker channels.

``load_digits()`` ships inside scikit-learn (no download). The split is stratified
and deterministic for a seed: 70% train, 15% validation, 15% test.

Channel layout (CSV, no header, one row per image: the label, then the 64 pixel
values as integers 0..16 exactly as sklearn gives them; the model divides by 16
itself, so a served model takes raw pixels too):

    <prefix>/train/part-0000.csv ... part-000N.csv   (``train_shards`` files, so a
                                                      multi-host job can shard by S3 key)
    <prefix>/validation/validation.csv
    <prefix>/test/test.csv

No torch here: this runs in Airflow workers. The boto3 S3 client is passed in.
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Iterable

import numpy as np

DEFAULT_SEED = 42
FRACTIONS = {"train": 0.70, "validation": 0.15, "test": 0.15}
CHANNELS = ("train", "validation", "test")
NUM_FEATURES = 64
NUM_CLASSES = 10


def load() -> tuple:
    """(features int64 (1797, 64) with values 0..16, labels int64 (1797,))."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    return digits.data.astype(np.int64), digits.target.astype(np.int64)


def split(seed: int = DEFAULT_SEED) -> dict:
    """{"train"|"validation"|"test": (features, labels)}, stratified, deterministic for ``seed``."""
    from sklearn.model_selection import train_test_split

    features, labels = load()
    rest = FRACTIONS["validation"] + FRACTIONS["test"]
    x_train, x_rest, y_train, y_rest = train_test_split(
        features, labels, test_size=rest, stratify=labels, random_state=seed)
    x_val, x_test, y_val, y_test = train_test_split(
        x_rest, y_rest, test_size=FRACTIONS["test"] / rest, stratify=y_rest, random_state=seed + 1)
    return {"train": (x_train, y_train), "validation": (x_val, y_val), "test": (x_test, y_test)}


def held_out(seed: int = DEFAULT_SEED) -> tuple:
    """The test split's (features, labels): raw pixel values 0..16, for smoke tests."""
    return split(seed)["test"]


def to_csv(features: np.ndarray, labels: np.ndarray) -> str:
    """CSV text: label first, then the features, no header."""
    table = np.column_stack([np.asarray(labels, dtype=np.int64), np.asarray(features, dtype=np.int64)])
    buffer = io.StringIO()
    np.savetxt(buffer, table, fmt="%d", delimiter=",")
    return buffer.getvalue()


def channel_files(seed: int = DEFAULT_SEED, train_shards: int = 4) -> dict:
    """{channel: [(file name, CSV text), ...]}: what ``write_channels`` writes."""
    if train_shards < 1:
        raise ValueError(f"train_shards must be >= 1, got {train_shards}")
    parts = split(seed)
    x_train, y_train = parts["train"]
    if train_shards > len(y_train):
        raise ValueError(f"train_shards={train_shards} exceeds the {len(y_train)} training rows")
    shards = np.array_split(np.arange(len(y_train)), train_shards)
    return {
        "train": [(f"part-{index:04d}.csv", to_csv(x_train[rows], y_train[rows]))
                  for index, rows in enumerate(shards)],
        "validation": [("validation.csv", to_csv(*parts["validation"]))],
        "test": [("test.csv", to_csv(*parts["test"]))],
    }


def write_local_channels(directory, *, seed: int = DEFAULT_SEED, train_shards: int = 4,
                         channels: Iterable[str] = CHANNELS) -> dict:
    """Writes ``<directory>/<channel>/*.csv``; returns {channel: Path of its directory}.

    With ``directory`` = ``<opt_ml>/input/data`` this is a SageMaker training input tree.
    """
    directory = Path(directory)
    wanted = set(channels)
    written = {}
    for channel, files in channel_files(seed, train_shards).items():
        if channel not in wanted:
            continue
        target = directory / channel
        target.mkdir(parents=True, exist_ok=True)
        for name, text in files:
            (target / name).write_text(text)
        written[channel] = target
    return written


def write_channels(s3_client, bucket: str, prefix: str, *, seed: int = DEFAULT_SEED,
                   train_shards: int = 4) -> dict:
    """Uploads the channels under ``s3://<bucket>/<prefix>/``; returns
    {"train"|"validation"|"test": "s3://<bucket>/<prefix>/<channel>/"}."""
    prefix = prefix.strip("/")
    uris = {}
    for channel, files in channel_files(seed, train_shards).items():
        key_prefix = f"{prefix}/{channel}/" if prefix else f"{channel}/"
        for name, text in files:
            s3_client.put_object(Bucket=bucket, Key=key_prefix + name, Body=text.encode(),
                                 ContentType="text/csv")
        uris[channel] = f"s3://{bucket}/{key_prefix}"
    return uris
