"""Each example's experiment.yaml, read as the pipeline reads it (PyYAML's safe_load), holds the
contract's keys, and every file and module:function it names is in its folder."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys

import pytest

from tests.examples.script_mode import EXPERIMENTS, REPO_ROOT, experiment, load_module

NAME = re.compile(r"^[a-z][a-z0-9-]{0,19}$")
EXAMPLES = ["digits", "diabetes"]
REQUIRED = {
    "description",
    "framework",
    "entry_point",
    "prepare",
    "hyperparameters",
    "metric_definitions",
    "objective",
    "instance_type",
    "instance_count",
    "max_runtime_seconds",
    "use_spot",
    "gate",
    "deploy",
    "schedule",
}
KNOWN = REQUIRED | {"framework_version", "source_dir", "image", "dockerfile", "channels", "presets", "tuning"}


def non_finite(value):
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, dict):
        return any(non_finite(item) for item in value.values())
    if isinstance(value, list):
        return any(non_finite(item) for item in value)
    return False


def function(folder, reference: str):
    module, _, name = reference.partition(":")
    return getattr(load_module(folder / f"{module.replace('.', '/')}.py"), name)


def test_the_examples_are_experiments_folders():
    assert set(EXAMPLES) <= {p.name for p in EXPERIMENTS.iterdir() if (p / "experiment.yaml").is_file()}


@pytest.mark.parametrize("name", EXAMPLES)
def test_experiment_file_has_the_contracts_keys(name):
    document = experiment(name)
    folder = EXPERIMENTS / name
    assert NAME.match(name) and not name.endswith("-")
    assert REQUIRED <= set(document) <= KNOWN, set(document) ^ REQUIRED
    assert not non_finite(document)
    assert document["framework"] in ("pytorch", "sklearn")
    assert isinstance(document["framework_version"], str)
    assert not {"image", "dockerfile"} & set(document)  # script mode: exactly one kind of code
    source = folder / document.get("source_dir", ".")
    assert (source / document["entry_point"]).is_file()
    assert (source / "inference.py").is_file() and (source / "requirements.txt").is_file()
    assert callable(function(source, document["prepare"]))

    names = [definition["Name"] for definition in document["metric_definitions"]]
    for definition in document["metric_definitions"]:
        assert re.compile(definition["Regex"]).groups == 1, definition
    assert document["objective"]["metric"] in names and document["objective"]["type"] in ("Minimize", "Maximize")
    assert document["gate"]["metric"] in names
    assert document["gate"]["direction"] in ("Minimize", "Maximize")
    assert document["gate"]["min_improvement"] >= 0
    assert isinstance(document["hyperparameters"], dict) and document["hyperparameters"]
    assert document["instance_type"].startswith("ml.") and document["instance_count"] >= 1
    assert document["schedule"] == "@weekly"

    deploy = document["deploy"]
    assert {"instance_type", "min_capacity", "max_capacity", "target_invocations_per_instance", "smoke"} <= set(deploy)
    assert 1 <= deploy["min_capacity"] <= deploy["max_capacity"]
    smoke = deploy["smoke"]
    samples = (folder / smoke["samples"]).resolve()
    assert samples.is_file() and samples.is_relative_to(folder.resolve()) and samples.stat().st_size > 0
    assert callable(function(source, smoke["check"]))


def test_digits_presets_and_tuning_are_files_beside_the_schemas():
    folder = REPO_ROOT / "include" / "hyperparams" / "digits"
    assert sorted(p.name for p in folder.glob("*.json")) == ["default.json", "gpu.json", "quick.json", "tuning.json"]
    default = json.loads((folder / "default.json").read_text())
    document = experiment("digits")
    assert "presets" not in document and "tuning" not in document
    # the file's defaults are the experiment's (one picture of the default run, whichever is read)
    for key in ("hyperparameters", "instance_type", "instance_count", "max_runtime_seconds"):
        assert document[key] == default[key], key
    # a preset is overrides and resources: the metrics and objective are the experiment's alone
    for path in sorted(folder.glob("*.json")):
        if path.name != "tuning.json":
            assert not {"metric_definitions", "objective"} & set(json.loads(path.read_text())), path.name
    assert json.loads((folder / "tuning.json").read_text())["objective"] == document["objective"]


def test_diabetes_tuning_is_inline_and_tunes_hyperparameters_train_py_takes():
    document = experiment("diabetes")
    tuning = document["tuning"]
    assert 2 <= tuning["max_jobs"] <= 4 and tuning["max_parallel_jobs"] <= tuning["max_jobs"]
    assert tuning["base_preset"] in document["presets"]
    assert tuning["objective"] == document["objective"] == {"metric": "validation:rmse", "type": "Minimize"}
    tuned = {entry["Name"] for ranges in tuning["parameter_ranges"].values() for entry in ranges}
    assert tuned == {"n_estimators", "learning_rate", "max_depth"}
    usage = subprocess.run(
        [sys.executable, "train.py", "--help"], cwd=EXPERIMENTS / "diabetes", capture_output=True, text=True, check=True
    ).stdout
    for name in tuned | set(document["hyperparameters"]) | set(document["presets"]["quick"]["hyperparameters"]):
        assert f"--{name} " in usage, name
