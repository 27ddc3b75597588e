"""Script-mode training (``framework: sklearn``): gradient boosting regression on
scikit-learn's diabetes data, in SageMaker's conventions.

SageMaker's training toolkit runs ``python train.py --n_estimators 200 --learning_rate 0.05 ...``
with ``SM_CHANNEL_TRAIN`` and ``SM_CHANNEL_VALIDATION`` (CSV files, no header, the target
first), ``SM_MODEL_DIR`` (model.joblib goes there) and ``SM_OUTPUT_DATA_DIR`` (metrics.json).
The log ends with ``validation rmse=<x>`` (the objective, ``validation:rmse``) and
``train rmse=<x>``. A failure exits 1 with its reason in ``SM_OUTPUT_DIR/failure``.
"""

from __future__ import annotations

import argparse
import glob
import json
import math
import os
import sys

import joblib
import numpy as np
from sklearn.ensemble import GradientBoostingRegressor
from sklearn.metrics import mean_squared_error


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # hyperparameters: the job's, one --name value each
    parser.add_argument("--n_estimators", type=int, default=200)
    parser.add_argument("--learning_rate", type=float, default=0.05)
    parser.add_argument("--max_depth", type=int, default=3)
    parser.add_argument("--subsample", type=float, default=1.0)
    parser.add_argument("--random_state", type=int, default=0)
    # where things are: the toolkit's environment
    parser.add_argument("--train", default=os.environ.get("SM_CHANNEL_TRAIN"))
    parser.add_argument("--validation", default=os.environ.get("SM_CHANNEL_VALIDATION"))
    parser.add_argument("--model-dir", default=os.environ.get("SM_MODEL_DIR"))
    parser.add_argument("--output-data-dir", default=os.environ.get("SM_OUTPUT_DATA_DIR"))
    args = parser.parse_args(argv)
    if args.n_estimators < 1 or args.max_depth < 1:
        parser.error("n_estimators and max_depth must be at least 1")
    if not (math.isfinite(args.learning_rate) and args.learning_rate > 0):
        parser.error(f"learning_rate must be a positive number, got {args.learning_rate}")
    if not (math.isfinite(args.subsample) and 0 < args.subsample <= 1):
        parser.error(f"subsample must be in (0, 1], got {args.subsample}")
    for name in ("train", "validation", "model_dir"):
        if not getattr(args, name):
            parser.error(
                f"no {name} folder: set SM_CHANNEL_TRAIN, SM_CHANNEL_VALIDATION and SM_MODEL_DIR "
                "(SageMaker's training toolkit does)"
            )
    return args


def read_channel(name: str, folder: str) -> tuple[np.ndarray, np.ndarray]:
    """(features, target) from every *.csv in the channel's folder: target first, no header."""
    files = sorted(glob.glob(os.path.join(folder, "**", "*.csv"), recursive=True))
    if not files:
        raise ValueError(f"channel {name!r} has no CSV file in {folder}")
    table = np.concatenate([np.loadtxt(path, delimiter=",", ndmin=2) for path in files])
    if table.shape[0] == 0 or table.shape[1] < 2:
        raise ValueError(f"channel {name!r}: expected rows of a target and at least one feature")
    if not np.all(np.isfinite(table)):
        raise ValueError(f"channel {name!r} holds non-finite values")
    return table[:, 1:], table[:, 0]


def rmse(model, features, target) -> float:
    return float(math.sqrt(mean_squared_error(target, model.predict(features))))


def main(argv=None) -> int:
    args = parse_args(argv)
    x_train, y_train = read_channel("train", args.train)
    x_val, y_val = read_channel("validation", args.validation)
    if x_val.shape[1] != x_train.shape[1]:
        raise ValueError(f"validation rows have {x_val.shape[1]} features, train rows {x_train.shape[1]}")
    print(f"train {len(y_train)} rows, validation {len(y_val)} rows, {x_train.shape[1]} features", flush=True)

    model = GradientBoostingRegressor(
        n_estimators=args.n_estimators,
        learning_rate=args.learning_rate,
        max_depth=args.max_depth,
        subsample=args.subsample,
        random_state=args.random_state,
    )
    model.fit(x_train, y_train)
    metrics = {"train_rmse": rmse(model, x_train, y_train), "validation_rmse": rmse(model, x_val, y_val)}
    print(f"train rmse={metrics['train_rmse']:.6f}", flush=True)
    print(f"validation rmse={metrics['validation_rmse']:.6f}", flush=True)

    os.makedirs(args.model_dir, exist_ok=True)
    joblib.dump(model, os.path.join(args.model_dir, "model.joblib"))
    if args.output_data_dir:
        os.makedirs(args.output_data_dir, exist_ok=True)
        with open(os.path.join(args.output_data_dir, "metrics.json"), "w") as handle:
            json.dump(
                {
                    **metrics,
                    "hyperparameters": {
                        k: v
                        for k, v in vars(args).items()
                        if k in ("n_estimators", "learning_rate", "max_depth", "subsample", "random_state")
                    },
                },
                handle,
                indent=2,
            )
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception as error:  # the job's FailureReason: the toolkit's failure file, written here too
        output = os.environ.get("SM_OUTPUT_DIR")
        if output:
            os.makedirs(output, exist_ok=True)
            with open(os.path.join(output, "failure"), "w") as handle:
                handle.write(f"{type(error).__name__}: {error}"[:1024] + "\n")
        raise
