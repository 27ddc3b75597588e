"""``train``'s main: signal handling, error reporting, exit codes.

Kept free of torch at import time so that SIGTERM is handled from the first
moment and so that even a failing ``import torch`` ends in a failure file.

Exit codes: 0 when training finished or was stopped by SIGTERM (the checkpoint
and best model are saved), 1 on any error, with ``<ErrorType>: <message>``
written to ``$SM_OUTPUT_DIR/failure`` (SageMaker's FailureReason) and the
traceback, for unexpected errors, on stderr.
"""

from __future__ import annotations

import os
import signal
import sys
import time
import traceback
from pathlib import Path

FAILURE_LIMIT = 1024  # SageMaker's FailureReason is at most 1024 characters


class StopFlag:
    """Truthy once SIGTERM has arrived."""

    def __init__(self) -> None:
        self.signum = None

    def __bool__(self) -> bool:
        return self.signum is not None

    def handler(self, signum, frame) -> None:
        self.signum = signum


def _failure_file() -> Path:
    from .paths import DEFAULT_ROOT, ROOT_ENV  # noqa: PLC0415 - the failure path imports only what it must

    output = os.environ.get("SM_OUTPUT_DIR") or os.path.join(os.environ.get(ROOT_ENV) or DEFAULT_ROOT, "output")
    return Path(output) / "failure"


def write_failure(message: str) -> None:
    path = _failure_file()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(message[:FAILURE_LIMIT] + "\n")
    except OSError as error:
        print(f"cannot write the failure file {path}: {error}", file=sys.stderr, flush=True)


def main(argv: list | None = None) -> int:
    """``train``'s main (hyperparameters from hyperparameters.json or SM_HPS), or, with ``argv``,
    ``train.py``'s: script mode's ``--name value`` arguments."""
    started = time.time()
    stop = StopFlag()
    signal.signal(signal.SIGTERM, stop.handler)
    try:
        # Imported inside the try: even a failing import ends in a failure file (see above).
        from .errors import TrainingError  # noqa: PLC0415

        try:
            from . import hyperparameters, paths  # noqa: PLC0415

            where = paths.resolve()
            raw = where.raw_hyperparameters if argv is None else hyperparameters.from_args(argv)
            hps = hyperparameters.parse(raw)  # fails fast, before torch loads
            from . import training  # noqa: PLC0415 - torch loads only after the hyperparameters parse

            training.train(where, hps, stop, started)
            return 0
        except TrainingError as error:
            message = f"{type(error).__name__}: {error}"
            print(f"ERROR {message}", file=sys.stderr, flush=True)
            write_failure(message)
            return 1
    except BaseException as error:  # noqa: BLE001  (anything else is a failed job too)
        if isinstance(error, SystemExit) and error.code in (0, None):
            return 0
        traceback.print_exc()
        sys.stderr.flush()
        write_failure(f"{type(error).__name__}: {error}")
        return 1
    finally:
        sys.stdout.flush()
