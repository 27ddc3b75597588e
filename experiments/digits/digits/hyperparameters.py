"""The training script's hyperparameters: names, defaults, parsing and validation.

SageMaker hands hyperparameters over as strings (``hyperparameters.json``); the
SageMaker Python SDK's framework estimators JSON-encode them first, so ``"adam"``
may arrive as ``"\\"adam\\""``: both are accepted. Keys starting with
``sagemaker_`` or ``_`` (``sagemaker_program``, ``_tuning_objective_metric``...)
belong to SageMaker and are ignored; any other unknown name is an error, so that
a typo (``learning_rte``) fails the job instead of silently training with a default.

In script mode (``train.py``) SageMaker's training toolkit passes the same names as
arguments, ``--epochs 6 --optimizer adam ...`` (its ``to_cmd_args``): ``from_args``.

    name                     default  rule
    epochs                   6        integer >= 1
    batch_size               32       integer >= 1 (per host)
    learning_rate            0.005    number > 0, <= 10
    dropout                  0.2      number >= 0, < 1
    hidden_units             128      integer >= 1 (first hidden layer; the second has half)
    optimizer                adam     adam | sgd
    momentum                 0.9      number >= 0, < 1 (sgd only)
    weight_decay             0.0      number >= 0, <= 1 (L2, both optimizers)
    early_stopping_patience  3        integer >= 0: stop once the validation loss has been above
                                      its best for this many epochs in a row; 0 = never stop early
    seed                     42       integer 0..2**32-1 (init, shuffling, dropout)
    num_threads              0        integer >= 0: torch CPU threads; 0 = torch's default
    checkpoint_dir           (none)   path; default <opt_ml>/checkpoints
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import asdict, dataclass
from typing import Any, Callable, Mapping

from .errors import HyperparameterError

OPTIMIZERS = ("adam", "sgd")


@dataclass(frozen=True)
class Hyperparameters:
    epochs: int = 6
    batch_size: int = 32
    learning_rate: float = 0.005
    dropout: float = 0.2
    hidden_units: int = 128
    optimizer: str = "adam"
    momentum: float = 0.9
    weight_decay: float = 0.0
    early_stopping_patience: int = 3
    seed: int = 42
    num_threads: int = 0
    checkpoint_dir: str | None = None

    def as_dict(self) -> dict:
        return asdict(self)


def _unquote(value: Any) -> Any:
    if isinstance(value, str):
        text = value.strip()
        if len(text) >= 2 and text[0] == text[-1] == '"':
            try:
                return json.loads(text)
            except ValueError:
                return text
        return text
    return value


def _integer(name: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, bool):
        raise HyperparameterError(f"{name} must be an integer, got {value!r}")
    try:
        number = float(value) if not isinstance(value, int) else value
        if isinstance(number, float) and not number.is_integer():
            raise ValueError
        number = int(number)
    except (TypeError, ValueError, OverflowError):
        raise HyperparameterError(f"{name} must be an integer, got {value!r}") from None
    if not low <= number <= high:
        raise HyperparameterError(f"{name} must be between {low} and {high}, got {value!r}")
    return number


def _number(name: str, value: Any, check: Callable[[float], bool], rule: str) -> float:
    if isinstance(value, bool):
        raise HyperparameterError(f"{name} must be a number, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise HyperparameterError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(number) or not check(number):
        raise HyperparameterError(f"{name} must be {rule}, got {value!r}")
    return number


def _choice(name: str, value: Any, choices: tuple) -> str:
    text = str(value).strip().lower()
    if text not in choices:
        raise HyperparameterError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    return text


def _path(name: str, value: Any) -> str | None:
    text = str(value).strip()
    return text or None


PARSERS: dict[str, Callable[[Any], Any]] = {
    "epochs": lambda v: _integer("epochs", v, 1, 100_000),
    "batch_size": lambda v: _integer("batch_size", v, 1, 1_048_576),
    "learning_rate": lambda v: _number("learning_rate", v, lambda x: 0 < x <= 10, "> 0 and <= 10"),
    "dropout": lambda v: _number("dropout", v, lambda x: 0 <= x < 1, ">= 0 and < 1"),
    "hidden_units": lambda v: _integer("hidden_units", v, 1, 65_536),
    "optimizer": lambda v: _choice("optimizer", v, OPTIMIZERS),
    "momentum": lambda v: _number("momentum", v, lambda x: 0 <= x < 1, ">= 0 and < 1"),
    "weight_decay": lambda v: _number("weight_decay", v, lambda x: 0 <= x <= 1, ">= 0 and <= 1"),
    "early_stopping_patience": lambda v: _integer("early_stopping_patience", v, 0, 100_000),
    "seed": lambda v: _integer("seed", v, 0, 2**32 - 1),
    "num_threads": lambda v: _integer("num_threads", v, 0, 4096),
    "checkpoint_dir": lambda v: _path("checkpoint_dir", v),
}


def is_reserved(name: str) -> bool:
    """Keys SageMaker and its SDKs add (sagemaker_program, _tuning_objective_metric...)."""
    return name.startswith("sagemaker_") or name.startswith("_")


def from_args(argv: list) -> dict:
    """{name: text} from script mode's ``--name value`` (or ``--name=value``) arguments.

    Reserved names (``--_tuning_objective_metric``, ``--sagemaker_...``) are skipped with their value;
    ``parse`` then refuses unknown names and bad values, as it does for hyperparameters.json."""
    parser = argparse.ArgumentParser(prog="train.py", add_help=False, allow_abbrev=False, exit_on_error=False)
    for name in PARSERS:
        parser.add_argument(f"--{name}")
    try:
        known, rest = parser.parse_known_args(list(argv))
    except argparse.ArgumentError as error:
        raise HyperparameterError(f"bad arguments: {error}") from None
    raw = {name: value for name, value in vars(known).items() if value is not None}
    words = iter(rest)
    for word in words:
        if not word.startswith("--") or len(word) < 3:
            raise HyperparameterError(f"unexpected argument {word!r}: hyperparameters come as --name value")
        name, equals, value = word[2:].partition("=")
        if not equals:
            value = next(words, None)
            if value is None or value.startswith("--"):
                raise HyperparameterError(f"hyperparameter {name} has no value")
        if not is_reserved(name):
            raw[name] = value  # unknown: parse says so, with the known names
    return raw


def parse(raw: Mapping[str, Any]) -> Hyperparameters:
    """Validated hyperparameters from SageMaker's string map; raises HyperparameterError."""
    unknown = sorted(key for key in raw if key not in PARSERS and not is_reserved(key))
    if unknown:
        raise HyperparameterError(
            f"unknown hyperparameter{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}; known: {', '.join(PARSERS)}"
        )
    values = {}
    for key, value in raw.items():
        if key in PARSERS:
            values[key] = PARSERS[key](_unquote(value))
    return Hyperparameters(**values)
