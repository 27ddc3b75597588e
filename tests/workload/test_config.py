"""config.py: presets (hyperparameter overrides) and tuning configurations, from files or inline, and their
refusals naming the file and the field. The experiment-level checks are tests/dags/test_experiments.py."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO / "plugins") not in sys.path:
    sys.path.insert(0, str(REPO / "plugins"))

from ml_pipeline import config  # noqa: E402
from ml_pipeline.config import ConfigError  # noqa: E402

HYPERPARAMETERS = {"epochs": 6, "learning_rate": 0.005, "dropout": 0.2, "optimizer": "adam", "hidden_units": 128}
METRICS = {"train:loss", "validation:loss"}
OBJECTIVE = {"metric": "validation:loss", "type": "Minimize"}


def write(tmp_path: Path, name: str, document) -> Path:
    path = tmp_path / name
    path.write_text(document if isinstance(document, str) else json.dumps(document))
    return path


def tuning_document(**changes) -> dict:
    document = {
        "base_preset": "quick",
        "strategy": "Bayesian",
        "max_jobs": 6,
        "max_parallel_jobs": 2,
        "parameter_ranges": {
            "IntegerParameterRanges": [
                {"Name": "hidden_units", "MinValue": 32, "MaxValue": 256, "ScalingType": "Logarithmic"}
            ],
            "ContinuousParameterRanges": [
                {"Name": "learning_rate", "MinValue": 0.001, "MaxValue": 0.05, "ScalingType": "Logarithmic"}
            ],
            "CategoricalParameterRanges": [{"Name": "optimizer", "Values": ["adam", "sgd"]}],
        },
    }
    document.update(changes)
    return document


def check_tuning(document, presets=None):
    presets = {"quick": {"hyperparameters": {**HYPERPARAMETERS, "epochs": 2}}} if presets is None else presets
    return config.check_tuning(document, "tuning.json", (), HYPERPARAMETERS, presets, METRICS, OBJECTIVE)


def test_a_preset_is_hyperparameter_overrides_and_resources(tmp_path):
    path = write(
        tmp_path,
        "quick.json",
        {
            "description": "short",
            "hyperparameters": {"epochs": 2, "flag": True},
            "instance_type": "ml.m5.large",
            "max_runtime_seconds": 600,
        },
    )
    preset = config.load_preset(path)
    assert preset["hyperparameters"] == {"epochs": 2, "flag": True} and preset["max_runtime_seconds"] == 600
    assert config.check_preset({}, "inline", ("presets", "none")) == {"hyperparameters": {}}


@pytest.mark.parametrize(
    "document, field, words",
    [
        ({"hyperparameters": {"layers": [1, 2]}}, "hyperparameters.layers", "is not of type"),
        ({"hyperparameters": {"sagemaker_program": "x.py"}}, "hyperparameters", "should not be valid"),
        ({"metric_definitions": []}, "(top level)", "'metric_definitions' was unexpected"),
        ({"instance_type": "p4d.24xlarge"}, "instance_type", "does not match"),
        ({"instance_count": 99}, "instance_count", "greater than the maximum of 8"),
    ],
)
def test_bad_presets_name_the_file_and_the_field(tmp_path, document, field, words):
    path = write(tmp_path, "bad.json", document)
    with pytest.raises(ConfigError) as raised:
        config.load_preset(path)
    assert str(raised.value).startswith(f"{path}: {field}: "), str(raised.value)
    assert words in str(raised.value)
    with pytest.raises(ConfigError) as raised:  # the same checks inline, named by where it is in its file
        config.check_preset(document, "experiments/x/experiment.yaml", ("presets", "bad"))
    assert str(raised.value).startswith(
        f"experiments/x/experiment.yaml: presets.bad.{field}".replace(".(top level)", "")
    ), str(raised.value)


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_non_finite_numbers_in_a_file_are_refused_naming_the_field(tmp_path, token):
    path = write(tmp_path, "nan.json", '{"hyperparameters": {"learning_rate": %s}}' % token)
    with pytest.raises(ConfigError, match=r"hyperparameters\.learning_rate: .* is not a finite number"):
        config.load_preset(path)


def test_bad_json_and_a_missing_file_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match=r"bad.json: not valid JSON: .*line 1"):
        config.load_preset(write(tmp_path, "bad.json", "{"))
    with pytest.raises(ConfigError, match=r"missing.json: no such file"):
        config.load_preset(tmp_path / "missing.json")


def test_tuning_resolves_its_defaults_and_converts_to_boto3s_shape():
    botocore_session = pytest.importorskip("botocore.session")
    from botocore.validate import ParamValidator

    tuning = check_tuning(tuning_document(strategy="Random"))
    assert tuning["objective"] == OBJECTIVE and tuning["early_stopping"] == "Off"  # the experiment's objective
    job_config = config.tuning_job_config(tuning)
    shape = (
        botocore_session.get_session()
        .get_service_model("sagemaker")
        .operation_model("CreateHyperParameterTuningJob")
        .input_shape.members["HyperParameterTuningJobConfig"]
    )
    report = ParamValidator().validate(job_config, shape)
    assert not report.has_errors(), report.generate_report()
    assert job_config["ResourceLimits"] == {"MaxNumberOfTrainingJobs": 6, "MaxParallelTrainingJobs": 2}
    assert job_config["ParameterRanges"]["ContinuousParameterRanges"][0] == {
        "Name": "learning_rate",
        "MinValue": "0.001",
        "MaxValue": "0.05",
        "ScalingType": "Logarithmic",
    }
    assert config.tuned_names(tuning) == {"hidden_units", "learning_rate", "optimizer"}


def _range(kind: str, index: int = 0, **changes) -> dict:
    document = tuning_document()
    document["parameter_ranges"][kind][index].update(changes)
    return document


@pytest.mark.parametrize(
    "document, field, words",
    [
        (
            _range("ContinuousParameterRanges", MinValue=0.1, MaxValue=0.01),
            "parameter_ranges.ContinuousParameterRanges[0].MaxValue",
            "must be less than MaxValue",
        ),
        (
            _range("ContinuousParameterRanges", MinValue=0.0),
            "parameter_ranges.ContinuousParameterRanges[0].MinValue",
            "Logarithmic scaling needs MinValue > 0",
        ),
        (
            _range("ContinuousParameterRanges", ScalingType="ReverseLogarithmic", MaxValue=1.5),
            "parameter_ranges.ContinuousParameterRanges[0].ScalingType",
            "MaxValue < 1",
        ),
        (
            _range("ContinuousParameterRanges", Name="momentum"),
            "parameter_ranges.ContinuousParameterRanges[0].Name",
            "'momentum' is not a hyperparameter",
        ),
        (
            _range("ContinuousParameterRanges", Name="optimizer"),
            "parameter_ranges.ContinuousParameterRanges[0].Name",
            "cannot have a Continuous range",
        ),
        (
            _range("IntegerParameterRanges", Name="dropout", MinValue=0, MaxValue=1),
            "parameter_ranges.IntegerParameterRanges[0].Name",
            "cannot have an Integer range",
        ),
        (
            _range("CategoricalParameterRanges", Name="hidden_units"),
            "parameter_ranges.CategoricalParameterRanges[0].Name",
            "also tuned",
        ),
        (tuning_document(parameter_ranges={}), "parameter_ranges", "no hyperparameter is tuned"),
        (tuning_document(max_jobs=2, max_parallel_jobs=3), "max_parallel_jobs", "more than max_jobs"),
        (tuning_document(strategy="Grid"), "strategy", "Grid search takes CategoricalParameterRanges only"),
        (
            tuning_document(objective={"metric": "validation:accuracy", "type": "Maximize"}),
            "objective.metric",
            "not among the experiment's metric_definitions",
        ),
        (tuning_document(base_preset="huge"), "base_preset", "not a preset of the experiment"),
        (tuning_document(max_jobs=float("nan")), "max_jobs", "not a finite number"),
        (tuning_document(colour="blue"), "(top level)", "'colour' was unexpected"),
    ],
)
def test_bad_tuning_names_the_file_and_the_field(document, field, words):
    with pytest.raises(ConfigError) as raised:
        check_tuning(document)
    assert str(raised.value).startswith(f"tuning.json: {field}: "), str(raised.value)
    assert words in str(raised.value), str(raised.value)


def test_a_hyperparameter_added_by_the_base_preset_can_be_tuned():
    presets = {"quick": {"hyperparameters": {**HYPERPARAMETERS, "momentum": 0.9}}}
    tuning = check_tuning(
        _range("ContinuousParameterRanges", Name="momentum", ScalingType="Linear", MinValue=0.5, MaxValue=0.99), presets
    )
    assert "momentum" in config.tuned_names(tuning)


def test_experiment_files_are_found_per_experiment(tmp_path, monkeypatch):
    monkeypatch.setenv(config.DIR_ENV, str(tmp_path))
    assert config.experiment_files("none") == {"presets": {}, "tuning": None}
    (tmp_path / "mine").mkdir()
    write(tmp_path / "mine", "quick.json", {"hyperparameters": {}})
    write(tmp_path / "mine", "tuning.json", tuning_document())
    write(tmp_path / "mine", "x.schema.json", {})
    found = config.experiment_files("mine")
    assert set(found["presets"]) == {"quick"} and found["tuning"] == tmp_path / "mine" / "tuning.json"


def test_a_schema_in_the_data_folder_does_not_replace_the_codes(tmp_path, monkeypatch):
    """ML_PIPELINE_HYPERPARAMS_DIR supplies presets, never the rules: a permissive preset.schema.json there
    is not what a preset is checked against."""
    write(tmp_path, config.PRESET_SCHEMA, {"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object"})
    monkeypatch.setenv(config.DIR_ENV, str(tmp_path))
    config.schema.cache_clear()
    config.validator.cache_clear()
    with pytest.raises(ConfigError, match=r"hyperparameters\.layers: \[1\] is not of type"):
        config.load_preset(write(tmp_path, "listy.json", {"hyperparameters": {"layers": [1]}}))


def test_a_malformed_schema_is_a_config_error_naming_the_file(tmp_path, monkeypatch):
    write(tmp_path, config.PRESET_SCHEMA, {"type": "object", "properties": {"epochs": {"type": 12}}})
    monkeypatch.setattr(config, "SCHEMA_DIR", tmp_path)
    config.schema.cache_clear()
    config.validator.cache_clear()
    try:
        with pytest.raises(ConfigError) as raised:
            config.load_preset(write(tmp_path, "quick.json", {}))
        message = str(raised.value)
        assert message.startswith(f"{tmp_path / config.PRESET_SCHEMA}: not a valid JSON Schema: "), message
        assert "properties.epochs.type" in message and "12" in message, message
    finally:
        config.schema.cache_clear()  # the next test reads the repository's schemas again
        config.validator.cache_clear()


def test_the_schemas_are_valid_and_the_experiment_schema_refers_to_the_others():
    for name in (config.PRESET_SCHEMA, config.TUNING_SCHEMA):
        config.schema(name)
    experiment = config.load_schema(config.EXPERIMENT_SCHEMA)
    assert experiment["properties"]["presets"]["additionalProperties"] == {"$ref": "preset.schema.json"}
    assert experiment["properties"]["tuning"]["$ref"] == "tuning.schema.json"
    assert experiment["$schema"] == "https://json-schema.org/draft/2020-12/schema"
