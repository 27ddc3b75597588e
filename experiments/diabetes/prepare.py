"""The diabetes channels for a run: ``write_channels(output_dir, *, start, end, seed)``.

scikit-learn's diabetes data (``load_diabetes()``, bundled with scikit-learn: no download):
442 patients, 10 standardised features, the target a measure of disease progression one year
later. Shuffled and split for ``seed``: 80% train, 20% validation. The data set has no time
axis, so every data interval ``[start, end)`` gets all of it.

    <output_dir>/train/train.csv
    <output_dir>/validation/validation.csv

CSV, no header, the target first (SageMaker's convention for CSV training data), then the
features.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import numpy as np
from sklearn.datasets import load_diabetes
from sklearn.model_selection import train_test_split

VALIDATION_FRACTION = 0.2


def write_channels(output_dir: Path, *, start: datetime, end: datetime, seed: int) -> dict:
    """Writes ``<output_dir>/{train,validation}/*.csv``; returns {channel: its folder}."""
    features, target = load_diabetes(return_X_y=True)
    x_train, x_val, y_train, y_val = train_test_split(
        features, target, test_size=VALIDATION_FRACTION, random_state=seed
    )
    written = {}
    for channel, x, y in (("train", x_train, y_train), ("validation", x_val, y_val)):
        folder = Path(output_dir) / channel
        folder.mkdir(parents=True, exist_ok=True)
        np.savetxt(folder / f"{channel}.csv", np.column_stack([y, x]), fmt="%.10g", delimiter=",")
        written[channel] = folder
    return written
