"""The smoke test's check: ``accuracy(samples, response, accept)`` (deploy.smoke.check).

The pipeline sends smoke/samples.csv (100 held-out digits, raw pixels, one per line) to
the endpoint as one request and calls this with the bytes it sent and got. It compares
the predicted classes with smoke/labels.csv (one label per line, in the same order) and
raises below ``MIN_ACCURACY``, a constant of this module (0.9, the old pipeline's
``smoke_min_accuracy`` default); the figures it returns go into the run's summary.

The samples come from the seed-42 split's test set; a run's own split (its seed) may have
trained on some of them, so this says "the endpoint serves this model", not how good it is
(the job's validation metrics say that).
"""

from __future__ import annotations

import json
from pathlib import Path

MIN_ACCURACY = 0.9
LABELS = Path(__file__).resolve().parent / "smoke" / "labels.csv"


def predicted_classes(response: bytes, accept: str) -> list:
    media = (accept or "application/json").split(";", 1)[0].strip().lower()
    if media == "text/csv":
        return [int(line.split(",", 1)[0]) for line in response.decode().splitlines() if line.strip()]
    return [int(item["class"]) for item in json.loads(response)["predictions"]]


def accuracy(samples: bytes, response: bytes, accept: str) -> dict:
    labels = [int(line) for line in LABELS.read_text().split()]
    rows = sum(1 for line in samples.decode().splitlines() if line.strip())
    if rows != len(labels):
        raise ValueError(f"{rows} samples sent but {LABELS.name} has {len(labels)} labels")
    predicted = predicted_classes(response, accept)
    if len(predicted) != rows:
        raise ValueError(f"{rows} samples sent, {len(predicted)} predictions received")
    correct = sum(int(guess == label) for guess, label in zip(predicted, labels, strict=True))
    result = {
        "samples": rows,
        "accuracy": round(correct / rows, 4),
        "min_accuracy": MIN_ACCURACY,
        "examples": [
            {"label": label, "predicted": guess} for label, guess in list(zip(labels, predicted, strict=True))[:10]
        ],
    }
    if result["accuracy"] < MIN_ACCURACY:
        raise ValueError(f"smoke test failed: accuracy {result['accuracy']:.3f} < {MIN_ACCURACY} ({result})")
    return result
