"""The digits channels for a run: ``write_channels(output_dir, *, start, end, seed)``.

scikit-learn's 8x8 digits (``load_digits()``, bundled with scikit-learn: no download),
split stratified and deterministically for ``seed``: 70% train, 15% validation, 15% test.
The data set has no time axis, so every data interval ``[start, end)`` gets the whole
set; an experiment whose data grows would select the interval's rows here.

    <output_dir>/train/part-0000.csv ... part-0003.csv   (four files, so that a job on
                                                          several hosts can shard by S3 key)
    <output_dir>/validation/validation.csv
    <output_dir>/test/test.csv                           (held out: never trained or tuned on)

CSV, no header, one row per image: the label, then the 64 pixel values as integers
0..16 exactly as scikit-learn gives them (the model divides by 16 itself, so the served
model takes raw pixels too). Runs where the pipeline runs (numpy and scikit-learn; no torch).
"""

from __future__ import annotations

import io
from datetime import datetime
from pathlib import Path

import numpy as np

FRACTIONS = {"train": 0.70, "validation": 0.15, "test": 0.15}
TRAIN_SHARDS = 4


def split(seed: int) -> dict:
    """{"train"|"validation"|"test": (features int64 (n, 64), labels int64 (n,))}."""
    # scikit-learn loads only to make the data, not with the module's constants.
    from sklearn.datasets import load_digits  # noqa: PLC0415
    from sklearn.model_selection import train_test_split  # noqa: PLC0415

    digits = load_digits()
    features, labels = digits.data.astype(np.int64), digits.target.astype(np.int64)
    rest = FRACTIONS["validation"] + FRACTIONS["test"]
    x_train, x_rest, y_train, y_rest = train_test_split(
        features, labels, test_size=rest, stratify=labels, random_state=seed
    )
    x_val, x_test, y_val, y_test = train_test_split(
        x_rest, y_rest, test_size=FRACTIONS["test"] / rest, stratify=y_rest, random_state=seed + 1
    )
    return {"train": (x_train, y_train), "validation": (x_val, y_val), "test": (x_test, y_test)}


def to_csv(features: np.ndarray, labels: np.ndarray) -> str:
    """CSV text: label first, then the features, no header."""
    table = np.column_stack([np.asarray(labels, dtype=np.int64), np.asarray(features, dtype=np.int64)])
    buffer = io.StringIO()
    np.savetxt(buffer, table, fmt="%d", delimiter=",")
    return buffer.getvalue()


def write_channels(output_dir: Path, *, start: datetime, end: datetime, seed: int) -> dict:
    """Writes ``<output_dir>/{train,validation,test}/*.csv``; returns {channel: its folder}."""
    output_dir = Path(output_dir)
    parts = split(seed)
    x_train, y_train = parts["train"]
    files = {
        "train": [
            (f"part-{index:04d}.csv", to_csv(x_train[rows], y_train[rows]))
            for index, rows in enumerate(np.array_split(np.arange(len(y_train)), TRAIN_SHARDS))
        ],
        "validation": [("validation.csv", to_csv(*parts["validation"]))],
        "test": [("test.csv", to_csv(*parts["test"]))],
    }
    written = {}
    for channel, named in files.items():
        folder = output_dir / channel
        folder.mkdir(parents=True, exist_ok=True)
        for name, text in named:
            (folder / name).write_text(text)
        written[channel] = folder
    return written
