"""Experiments for the plugin tests: the committed one (tests/dags/experiments/plain) and copies of it."""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml

PLAIN = Path(__file__).resolve().parent / "experiments" / "plain"


def plain() -> dict:
    """The committed test experiment, resolved."""
    from ml_pipeline import experiments

    return experiments.load(PLAIN)


def write_experiment(root: Path, name: str, *, drop: tuple = (), **changes) -> Path:
    """A copy of the plain experiment as ``root/<name>``, its experiment.yaml with ``changes`` (a value of
    None removes the key) and without the keys in ``drop``."""
    folder = root / name
    shutil.copytree(PLAIN, folder)
    document = yaml.safe_load((PLAIN / "experiment.yaml").read_text())
    for key in drop:
        document.pop(key, None)
    document.update(changes)
    document = {key: value for key, value in document.items() if value is not None}
    (folder / "experiment.yaml").write_text(yaml.safe_dump(document, sort_keys=False))
    return folder
