"""Script-mode serving (``framework: sklearn``): the four functions SageMaker's
scikit-learn container calls.

    model_fn(model_dir)             model.joblib, as train.py wrote it
    input_fn(body, content_type)    text/csv: one row of features per line, no header, no target
    predict_fn(rows, model)         one predicted value per row
    output_fn(prediction, accept)   text/csv: one prediction per line; application/json:
                                    {"predictions": [...]} on request

Any other content type, a non-numeric or non-finite value, or a row of the wrong width
raises ValueError (the container answers with the message).
"""

from __future__ import annotations

import io
import json
import os

import joblib
import numpy as np

CSV = "text/csv"
JSON = "application/json"


def _media(value) -> str:
    return (value or "").split(";", 1)[0].strip().lower()


def model_fn(model_dir):
    return joblib.load(os.path.join(model_dir, "model.joblib"))


def input_fn(body, content_type):
    if _media(content_type) != CSV:
        raise ValueError(f"unsupported content type {content_type!r}: send {CSV}, one row of features per line")
    text = body.decode("utf-8") if isinstance(body, (bytes, bytearray)) else str(body)
    try:
        rows = np.loadtxt(io.StringIO(text), delimiter=",", ndmin=2, dtype=np.float64)
    except ValueError as error:
        raise ValueError(f"the CSV body is not rows of numbers: {error}") from None
    if rows.size == 0:
        raise ValueError("no rows to predict: send one row of features per line")
    if not np.all(np.isfinite(rows)):
        raise ValueError("the CSV body holds non-finite values")
    return rows


def predict_fn(rows, model):
    expected = getattr(model, "n_features_in_", rows.shape[1])
    if rows.shape[1] != expected:
        raise ValueError(f"rows have {rows.shape[1]} features; the model takes {expected}")
    return model.predict(rows)


def output_fn(prediction, accept):
    media = _media(accept) or CSV
    values = [float(value) for value in np.asarray(prediction).ravel()]
    if media in (CSV, "text/*", "*/*"):
        return "".join(f"{value:.6f}\n" for value in values)
    if media == JSON:
        return json.dumps({"predictions": values})
    raise ValueError(f"unsupported accept {accept!r}: ask for {CSV} or {JSON}")
