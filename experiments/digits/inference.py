"""Script-mode serving (``framework: pytorch``): the four functions SageMaker's PyTorch
inference container calls, around the same predictor as this folder's own ``serve``.

    model_fn(model_dir)              once per worker: model.pth + model_config.json, on the CPU
    input_fn(body, content_type)     application/json ({"instances": [[64 pixels], ...]}, a list of
                                     rows, or one row) or text/csv (one row per line): rows of raw
                                     8x8 pixel values 0..16
    predict_fn(rows, model)          (classes, probabilities)
    output_fn(prediction, accept)    application/json: {"predictions": [{"class": 3,
                                     "probabilities": [p0, ..., p9]}, ...]}; text/csv: one
                                     ``class,p0,...,p9`` line per row

Bad input raises (the container answers 500 with the message; an unsupported type
names the ones this model takes).
"""

import os
import sys
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.realpath(__file__)))

from digits import serving  # noqa: E402  (torch is imported by model_fn, not here)


def model_fn(model_dir):
    return serving.Predictor(Path(model_dir))


def input_fn(body, content_type):
    return serving.parse_rows(body, content_type)  # the width is checked against the model in predict_fn


def predict_fn(rows, model):
    return model.predict(serving.check_rows(rows, model.input_size))


def output_fn(prediction, accept):
    classes, probabilities = prediction
    body, _media = serving.format_predictions(classes, probabilities, accept)
    return body
