"""The smoke test's check: ``check_predictions(samples, response, accept)`` (deploy.smoke.check).

smoke/samples.csv holds 20 rows of features (no target); the endpoint must answer one finite
number per row (text/csv: one per line). Raises otherwise; returns the figures for the summary.
"""

from __future__ import annotations

import json
import math


def check_predictions(samples: bytes, response: bytes, accept: str) -> dict:
    rows = sum(1 for line in samples.decode().splitlines() if line.strip())
    media = (accept or "text/csv").split(";", 1)[0].strip().lower()
    if media == "application/json":
        values = json.loads(response)["predictions"]
    else:
        values = [line for line in response.decode().splitlines() if line.strip()]
    if len(values) != rows:
        raise ValueError(f"{rows} rows sent, {len(values)} predictions received")
    predictions = [float(value) for value in values]
    bad = [value for value in predictions if not math.isfinite(value)]
    if bad:
        raise ValueError(f"{len(bad)} of {rows} predictions are not finite numbers: {bad[:5]}")
    return {
        "samples": rows,
        "mean_prediction": round(sum(predictions) / rows, 3),
        "min_prediction": round(min(predictions), 3),
        "max_prediction": round(max(predictions), 3),
    }
