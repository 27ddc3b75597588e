"""k nearest neighbours over CSV rows (the label first), shared by train and serve. Standard library only."""

import csv
import math
import os
from collections import Counter

OPT_ML = os.environ.get("SAGEMAKER_BASE_DIR", "/opt/ml")


def rows(folder, labelled=True):
    """Every CSV row of every file under ``folder``: (label, features), or (None, features)."""
    found = []
    for root, _, files in sorted(os.walk(folder)):
        for name in sorted(files):
            with open(os.path.join(root, name), newline="") as handle:
                for row in csv.reader(handle):
                    if row:
                        values = [float(v) for v in row]
                        found.append((values[0], values[1:]) if labelled else (None, values))
    return found


def predict(points, k, features):
    """The most common label of the ``k`` points nearest ``features`` (ties: the nearest's label first)."""
    nearest = sorted(points, key=lambda point: math.dist(point[1], features))[: max(1, min(k, len(points)))]
    counts = Counter(label for label, _ in nearest)
    best = max(counts.values())
    return next(label for label, _ in nearest if counts[label] == best)
