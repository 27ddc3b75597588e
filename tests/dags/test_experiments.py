"""experiments.load and discover: the resolved experiment, and every refusal naming the file and the field."""

from __future__ import annotations

import json
import os

import pytest

from tests.dags.experiment_support import PLAIN, plain, write_experiment


def refused(tmp_path, name: str = "broken", *, drop: tuple = (), setup=None, **changes) -> str:
    from ml_pipeline import experiments

    folder = write_experiment(tmp_path, name, drop=drop, **changes)
    if setup:
        setup(folder)
    with pytest.raises(experiments.ExperimentError) as raised:
        experiments.load(folder)
    assert isinstance(raised.value, ValueError)
    return str(raised.value)


def test_the_resolved_experiment_has_its_defaults_names_and_hashes():
    import hashlib

    from ml_pipeline.images import context_hash

    experiment = plain()
    assert experiment["name"] == "plain" and experiment["code_kind"] == "script"
    assert experiment["folder"] == str(PLAIN) and experiment["source_dir"] == str(PLAIN)
    assert experiment["framework_version"] == "1.2-1"  # sklearn's default
    assert experiment["file_hash"] == hashlib.sha256((PLAIN / "experiment.yaml").read_bytes()).hexdigest()[:12]
    assert experiment["source_hash"] == context_hash(PLAIN)
    assert (experiment["instance_count"], experiment["use_spot"], experiment["channels"]) == (1, False, {})
    # A preset is overrides over the experiment's hyperparameters.
    assert experiment["presets"]["quick"]["hyperparameters"] == {
        "n_estimators": 20,
        "learning_rate": 0.05,
        "max_depth": 3,
        "loss": "squared_error",
    }
    assert experiment["tuning"]["objective"] == experiment["objective"]  # the tuning's default objective
    assert experiment["deploy"]["smoke"]["samples"] == "smoke/samples.csv"  # the file's relative path
    json.dumps(experiment, allow_nan=False)  # it travels in the plan's XCom


def test_omitted_keys_take_the_documented_defaults(tmp_path):
    from ml_pipeline import experiments

    folder = write_experiment(
        tmp_path,
        "bare",
        drop=("presets", "tuning", "gate", "deploy", "schedule", "instance_type", "max_runtime_seconds", "description"),
    )
    experiment = experiments.load(folder)
    assert experiment["deploy"] is False and experiment["schedule"] is None and experiment["tuning"] is None
    assert (experiment["instance_type"], experiment["max_runtime_seconds"]) == ("ml.m5.large", 3600)
    assert experiment["gate"] == {"metric": "validation:rmse", "direction": "Minimize", "min_improvement": 0.0}


def _symlink_out(folder):
    os.symlink("/tmp", folder / "data")


def _no_dockerfile(folder):
    (folder / "container").mkdir()


@pytest.mark.parametrize(
    "changes, field, words",
    [
        ({"image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/mine:1.0"}, "(top level)", "exactly one of"),
        ({"framework": None, "entry_point": None}, "(top level)", "exactly one"),
        ({"entry_point": "missing.py"}, "entry_point", "no such file"),
        ({"source_dir": ".."}, "source_dir", "leads out"),
        ({"source_dir": "/etc"}, "source_dir", "relative"),
        ({"channels": {"train": "/etc"}}, "channels.train", "relative"),
        ({"channels": {"train": "../other"}}, "channels.train", "leads out"),
        ({"channels": {"train": "data"}, "setup": _symlink_out}, "channels.train", "symlink"),
        ({"channels": {"train": "http://example.com/x"}}, "channels.train", "s3:// prefix or a folder"),
        (
            {"channels": {"train": {"source": "s3://b/x", "distribution": "Everywhere"}}},
            "channels.train.distribution",
            "is not one of",
        ),
        ({"prepare": "prepare"}, "prepare", "does not match"),
        ({"prepare": "nowhere:write"}, "prepare", "no module nowhere.py"),
        (
            {"metric_definitions": [{"Name": "validation:rmse", "Regex": "rmse=([0-9]+) ([0-9]+)"}]},
            "metric_definitions[0].Regex",
            "exactly one capture group",
        ),
        (
            {"metric_definitions": [{"Name": "validation:rmse", "Regex": "rmse=([0-9]+"}]},
            "metric_definitions[0].Regex",
            "not a valid regular expression",
        ),
        ({"objective": {"metric": "accuracy", "type": "Maximize"}}, "objective.metric", "not among"),
        ({"gate": {"metric": "accuracy"}}, "gate.metric", "not among"),
        ({"hyperparameters": {"n_estimators": float("nan")}}, "hyperparameters.n_estimators", "not a finite number"),
        ({"hyperparameters": {"n_estimators": float("inf")}}, "hyperparameters.n_estimators", "not a finite number"),
        ({"hyperparameters": {"layers": [1, 2]}}, "hyperparameters.layers", "is not of type"),
        ({"hyperparameters": {"sagemaker_program": "x.py"}}, "hyperparameters", ""),
        ({"colour": "blue"}, "(top level)", "'colour' was unexpected"),
        ({"schedule": "every day"}, "schedule", "neither a cron expression"),
        (
            {
                "deploy": {
                    "min_capacity": 3,
                    "max_capacity": 2,
                    "smoke": {"content_type": "text/csv", "accept": "text/csv", "samples": "smoke/samples.csv"},
                }
            },
            "deploy.min_capacity",
            "above max_capacity",
        ),
        (
            {"deploy": {"smoke": {"content_type": "text/csv", "accept": "text/csv", "samples": "nope.csv"}}},
            "deploy.smoke.samples",
            "no such file",
        ),
        (
            {
                "deploy": {
                    "smoke": {
                        "content_type": "text/csv",
                        "accept": "text/csv",
                        "samples": "smoke/samples.csv",
                        "check": "checks:check:again",
                    }
                }
            },
            "deploy.smoke.check",
            "does not match",
        ),
        ({"deploy": True}, "deploy", ""),
        (
            {"presets": {"quick": {"hyperparameters": {"n_estimators": 20}, "metric_definitions": []}}},
            "presets.quick",
            "unexpected",
        ),
        (
            {
                "tuning": {
                    "max_jobs": 4,
                    "max_parallel_jobs": 2,
                    "parameter_ranges": {"IntegerParameterRanges": [{"Name": "depth", "MinValue": 2, "MaxValue": 5}]},
                }
            },
            "tuning.parameter_ranges.IntegerParameterRanges[0].Name",
            "'depth' is not a hyperparameter",
        ),
        (
            {
                "tuning": {
                    "max_jobs": 4,
                    "max_parallel_jobs": 2,
                    "parameter_ranges": {
                        "IntegerParameterRanges": [{"Name": "learning_rate", "MinValue": 1, "MaxValue": 5}]
                    },
                }
            },
            "tuning.parameter_ranges.IntegerParameterRanges[0].Name",
            "cannot have an Integer range",
        ),
        (
            {
                "tuning": {
                    "max_jobs": 4,
                    "max_parallel_jobs": 2,
                    "base_preset": "huge",
                    "parameter_ranges": {
                        "IntegerParameterRanges": [{"Name": "max_depth", "MinValue": 1, "MaxValue": 5}]
                    },
                }
            },
            "tuning.base_preset",
            "not a preset",
        ),
        (
            {
                "tuning": {
                    "max_jobs": 2,
                    "max_parallel_jobs": 4,
                    "parameter_ranges": {
                        "IntegerParameterRanges": [{"Name": "max_depth", "MinValue": 1, "MaxValue": 5}]
                    },
                }
            },
            "tuning.max_parallel_jobs",
            "more than max_jobs",
        ),
        (
            {"framework": None, "entry_point": None, "dockerfile": "container", "setup": _no_dockerfile},
            "dockerfile",
            "has no Dockerfile",
        ),
        ({"image": "not a uri", "framework": None, "entry_point": None}, "image", "does not match"),
    ],
)
def test_each_refusal_names_the_file_and_the_field(tmp_path, changes, field, words):
    changes = dict(changes)
    message = refused(tmp_path, setup=changes.pop("setup", None), **changes)
    assert message.startswith(f"experiments/broken/experiment.yaml: {field}: "), message
    assert words in message, message


def test_a_bad_folder_name_and_bad_yaml_are_refused(tmp_path):
    for name in ("Upper", "trailing-", "a" * 21, "9lives"):
        message = refused(tmp_path / name, name)
        assert message.startswith(f"experiments/{name}/experiment.yaml: (folder name): "), message
    folder = write_experiment(tmp_path, "yaml")
    (folder / "experiment.yaml").write_text("description: [unclosed\n")
    from ml_pipeline import experiments

    with pytest.raises(
        experiments.ExperimentError,
        match=r"^experiments/yaml/experiment.yaml: \(top level\): not "
        r"valid YAML.*line",
    ):
        experiments.load(folder)


def test_presets_and_tuning_from_include_hyperparams(tmp_path, monkeypatch):
    from ml_pipeline import config, experiments

    hyperparams = tmp_path / "hyperparams"
    (hyperparams / "filed").mkdir(parents=True)
    (hyperparams / "filed" / "slow.json").write_text(json.dumps({"hyperparameters": {"n_estimators": 5000}}))
    (hyperparams / "filed" / "tuning.json").write_text(
        json.dumps(
            {
                "base_preset": "slow",
                "max_jobs": 3,
                "max_parallel_jobs": 1,
                "parameter_ranges": {"IntegerParameterRanges": [{"Name": "max_depth", "MinValue": 2, "MaxValue": 4}]},
            }
        )
    )
    monkeypatch.setenv(config.DIR_ENV, str(hyperparams))
    experiment = experiments.load(write_experiment(tmp_path, "filed", drop=("presets", "tuning")))
    assert experiment["presets"]["slow"]["hyperparameters"]["n_estimators"] == 5000
    assert experiment["presets"]["slow"]["hyperparameters"]["max_depth"] == 3  # the experiment's
    assert experiment["tuning"]["base_preset"] == "slow" and experiment["tuning"]["max_jobs"] == 3

    (hyperparams / "filed" / "slow.json").write_text('{"hyperparameters": {"n_estimators": NaN}}')
    with pytest.raises(
        experiments.ExperimentError,
        match=r"^experiments/filed/experiment.yaml: presets.slow: .*"
        r"slow.json: hyperparameters.n_estimators: nan",
    ):
        experiments.load(tmp_path / "filed")
    # Inline and filed under one name: which one is meant is unclear, so neither.
    (hyperparams / "filed" / "slow.json").write_text(json.dumps({"hyperparameters": {"n_estimators": 1}}))
    both = write_experiment(
        tmp_path / "b", "filed", drop=("tuning",), presets={"slow": {"hyperparameters": {"n_estimators": 2}}}
    )
    with pytest.raises(
        experiments.ExperimentError,
        match=r"^experiments/filed/experiment.yaml: presets.slow: "
        r"defined inline and in",
    ):
        experiments.load(both)


def test_discover_loads_every_experiment_and_keeps_each_error_to_its_own(tmp_path):
    from ml_pipeline import experiments

    write_experiment(tmp_path, "first")
    write_experiment(tmp_path, "second", deploy=False)
    write_experiment(tmp_path, "third", objective={"metric": "nope", "type": "Minimize"})
    (tmp_path / "not-an-experiment").mkdir()
    found = {folder.name: result for folder, result in experiments.discover(tmp_path)}
    assert set(found) == {"first", "second", "third"}
    assert found["first"]["name"] == "first" and found["second"]["deploy"] is False
    assert isinstance(found["third"], experiments.ExperimentError)
    assert str(found["third"]).startswith("experiments/third/experiment.yaml: objective.metric: ")
