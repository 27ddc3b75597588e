"""Reads a channel: every ``*.csv`` under the channel directory (sorted, recursively).

Each row is ``label,f1,...,fN`` with no header: an integer class label first,
then the features as they come (sklearn's digits: 64 pixel values 0..16; the
model scales them itself). Torch is not needed here.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import DataError


@dataclass
class Dataset:
    features: np.ndarray  # float32, (n, input_size)
    labels: np.ndarray  # int64, (n,)
    files: list

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def input_size(self) -> int:
        return int(self.features.shape[1])


def csv_files(directory: Path) -> list:
    return sorted(
        path
        for path in Path(directory).rglob("*.csv")
        if path.is_file() and not any(part.startswith(".") for part in path.relative_to(directory).parts)
    )


def read_channel(name: str, directory: Path, *, allow_empty: bool = False) -> Dataset:
    directory = Path(directory)
    if not directory.is_dir():
        raise DataError(
            f"channel {name!r} not found: {directory} does not exist "
            f"(the job needs 'train' and 'validation' channels of CSV files)"
        )
    files = csv_files(directory)
    blocks, labels = [], []
    width = None
    for path in files:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "input contained no data" for an empty file
                table = np.loadtxt(path, delimiter=",", dtype=np.float64, ndmin=2)
        except ValueError as error:
            raise DataError(f"channel {name!r}: {path.name} is not a numeric CSV: {error}") from None
        if table.size == 0:
            continue
        if table.shape[1] < 2:
            raise DataError(
                f"channel {name!r}: {path.name} has {table.shape[1]} column(s); expected a label followed by features"
            )
        if width is None:
            width = table.shape[1]
        elif table.shape[1] != width:
            raise DataError(f"channel {name!r}: {path.name} has {table.shape[1]} columns, other files have {width}")
        label = table[:, 0]
        if not np.all(np.isfinite(table)):
            raise DataError(f"channel {name!r}: {path.name} has non-finite values")
        if np.any(label < 0) or np.any(label != np.round(label)):
            raise DataError(
                f"channel {name!r}: {path.name} has labels that are not "
                f"non-negative integers (the label must be the first column)"
            )
        labels.append(label.astype(np.int64))
        blocks.append(table[:, 1:].astype(np.float32))
    if not blocks:
        if allow_empty:
            return Dataset(np.zeros((0, 0), np.float32), np.zeros((0,), np.int64), files)
        what = f"its {len(files)} CSV file(s) hold no rows" if files else "it holds no *.csv file"
        raise DataError(f"channel {name!r} is empty: {what} ({directory})")
    return Dataset(np.concatenate(blocks), np.concatenate(labels), files)
