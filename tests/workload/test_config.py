"""Presets and tuning configurations in include/hyperparams/digits, and their loaders."""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO / "plugins") not in sys.path:
    sys.path.insert(0, str(REPO / "plugins"))

from ml_pipeline import config  # noqa: E402
from ml_pipeline.config import ConfigError  # noqa: E402

HYPERPARAMS = REPO / "include" / "hyperparams" / "digits"
PRESETS = sorted(p.stem for p in HYPERPARAMS.glob("*.json")
                 if not p.name.endswith(".schema.json") and p.stem != "tuning")
TRAIN_LINES = [
    "epoch=1 train_loss=1.493440 validation_loss=0.643481 validation_accuracy=0.818519",
    "epoch=2 train_loss=0.494035 validation_loss=0.284363 validation_accuracy=0.922222",
    "best_epoch=2 train_loss=0.494035 validation_loss=0.284363 validation_accuracy=0.922222",
]


def write(tmp_path: Path, name: str, document) -> Path:
    path = tmp_path / name
    path.write_text(document if isinstance(document, str) else json.dumps(document))
    return path


def preset_document(**changes) -> dict:
    document = json.loads((HYPERPARAMS / "quick.json").read_text())
    document.update(changes)
    return document


def tuning_document(**changes) -> dict:
    document = json.loads((HYPERPARAMS / "tuning.json").read_text())
    document.update(changes)
    return document


def test_the_shipped_presets_are_there():
    assert {"default", "quick", "gpu"} <= set(PRESETS)


@pytest.mark.parametrize("name", PRESETS)
def test_shipped_preset_validates(name):
    preset = config.load_preset(name)
    assert preset["hyperparameters"]
    assert preset["objective"] == {"metric": "validation:loss", "type": "Minimize"}
    names = {d["Name"] for d in preset["metric_definitions"]}
    assert {"train:loss", "validation:loss", "validation:accuracy"} <= names


@pytest.mark.parametrize("name", PRESETS)
def test_metric_definitions_match_the_train_script_lines(name):
    preset = config.load_preset(name)
    expected = {"train:loss": ["1.493440", "0.494035", "0.494035"],
                "validation:loss": ["0.643481", "0.284363", "0.284363"],
                "validation:accuracy": ["0.818519", "0.922222", "0.922222"]}
    for definition in preset["metric_definitions"]:
        found = [m.group(1) for line in TRAIN_LINES for m in [re.search(definition["Regex"], line)] if m]
        assert found == expected[definition["Name"]], definition


def test_original_defaults_in_default_preset():
    hps = config.load_preset("default")["hyperparameters"]
    assert hps["epochs"] == 6 and hps["batch_size"] == 32 and hps["early_stopping_patience"] == 3


def test_tuning_validates_and_converts():
    tuning = config.load_tuning("tuning")
    assert tuning["max_jobs"] == 6 and tuning["max_parallel_jobs"] == 2
    ranges = config.tuning_parameter_ranges(tuning)
    assert set(ranges) == {"IntegerParameterRanges", "ContinuousParameterRanges", "CategoricalParameterRanges"}
    for kind in ("IntegerParameterRanges", "ContinuousParameterRanges"):
        for entry in ranges[kind]:
            assert set(entry) == {"Name", "MinValue", "MaxValue", "ScalingType"}
            assert all(isinstance(value, str) for value in entry.values())
            assert float(entry["MinValue"]) < float(entry["MaxValue"])
    for entry in ranges["CategoricalParameterRanges"]:
        assert isinstance(entry["Name"], str) and all(isinstance(v, str) for v in entry["Values"])
    assert {"Name": "hidden_units", "MinValue": "32", "MaxValue": "256",
            "ScalingType": "Logarithmic"} in ranges["IntegerParameterRanges"]
    static = config.tuning_static_hyperparameters(tuning)
    quick = config.load_preset("quick")["hyperparameters"]
    assert "learning_rate" not in static and static["epochs"] == str(quick["epochs"])
    assert all(isinstance(v, str) for v in static.values())


def test_tuning_job_config_is_a_valid_boto3_request_shape():
    botocore_session = pytest.importorskip("botocore.session")
    from botocore.validate import ParamValidator

    tuning = config.load_tuning("tuning")
    job_config = config.tuning_job_config(tuning)
    model = botocore_session.get_session().get_service_model("sagemaker")
    shape = model.operation_model("CreateHyperParameterTuningJob").input_shape.members[
        "HyperParameterTuningJobConfig"]
    report = ParamValidator().validate(job_config, shape)
    assert not report.has_errors(), report.generate_report()
    assert job_config["ResourceLimits"] == {"MaxNumberOfTrainingJobs": 6, "MaxParallelTrainingJobs": 2}


def test_sagemaker_hyperparameters_are_strings():
    preset = {"hyperparameters": {"epochs": 5, "learning_rate": 0.001, "weight_decay": 1e-05,
                                  "dropout": 0.0, "optimizer": "adam", "flag": True, "skip": None}}
    assert config.sagemaker_hyperparameters(preset) == {
        "epochs": "5", "learning_rate": "0.001", "weight_decay": "1e-05", "dropout": "0.0",
        "optimizer": "adam", "flag": "true"}
    for name in PRESETS:
        converted = config.sagemaker_hyperparameters(config.load_preset(name))
        assert converted and all(isinstance(k, str) and isinstance(v, str) for k, v in converted.items())


@pytest.mark.parametrize("hyperparameters, field, words", [
    ({"learning_rate": -1}, "hyperparameters.learning_rate", "-1 is less than or equal to the minimum of 0"),
    ({"optimizer": "rmsprop"}, "hyperparameters.optimizer", "'rmsprop' is not one of"),
    ({"epochs": "6"}, "hyperparameters.epochs", "'6' is not of type 'integer'"),
    ({"dropout": 1.0}, "hyperparameters.dropout", "greater than or equal to the maximum of 1"),
    ({"learning_rte": 0.1}, "hyperparameters", "'learning_rte' was unexpected"),
])
def test_bad_preset_names_file_and_field(tmp_path, hyperparameters, field, words):
    document = preset_document()
    document["hyperparameters"].update(hyperparameters)
    path = write(tmp_path, "bad.json", document)
    with pytest.raises(ConfigError) as raised:
        config.load_preset(path)
    message = str(raised.value)
    assert message.startswith(f"{path}: {field}: "), message
    assert words in message
    assert isinstance(raised.value, ValueError)


def test_bad_preset_in_the_hyperparams_dir_is_named_relative_to_the_repo(tmp_path, monkeypatch):
    document = preset_document()
    document["hyperparameters"]["learning_rate"] = -1
    write(tmp_path, "bad.json", document)
    monkeypatch.setenv(config.DIR_ENV, str(tmp_path))
    with pytest.raises(ConfigError, match=r"bad\.json: hyperparameters\.learning_rate: -1 is less"):
        config.load_preset("bad")
    # the override dir has no schemas: the repository's are used
    write(tmp_path, "good.json", preset_document())
    assert config.load_preset("good")["hyperparameters"] == preset_document()["hyperparameters"]


def test_repo_relative_name_in_message():
    assert config.display(HYPERPARAMS / "bad.json") == "include/hyperparams/digits/bad.json"


@pytest.mark.parametrize("changes, field, words", [
    ({"objective": {"metric": "validation:f1", "type": "Maximize"}}, "objective.metric", "not among"),
    ({"metric_definitions": [{"Name": "validation:loss", "Regex": "validation_loss=[0-9.]+"}]},
     "metric_definitions[0].Regex", "exactly one capture group"),
    ({"metric_definitions": [{"Name": "validation:loss", "Regex": "validation_loss=([0-9.]+"}]},
     "metric_definitions[0].Regex", "not a valid regular expression"),
    ({"objective": {"metric": "validation:loss", "type": "Lowest"}}, "objective.type", "is not one of"),
    ({"instance_type": "m5.large"}, "instance_type", "does not match"),
])
def test_bad_preset_semantics(tmp_path, changes, field, words):
    path = write(tmp_path, "bad.json", preset_document(**changes))
    with pytest.raises(ConfigError) as raised:
        config.load_preset(path)
    assert str(raised.value).startswith(f"{path}: {field}: "), str(raised.value)
    assert words in str(raised.value)


def test_missing_required_field_and_bad_json(tmp_path):
    document = preset_document()
    del document["objective"]
    path = write(tmp_path, "bad.json", document)
    with pytest.raises(ConfigError, match=r"bad\.json: \(top level\): 'objective' is a required property"):
        config.load_preset(path)
    path = write(tmp_path, "broken.json", '{"hyperparameters": {')
    with pytest.raises(ConfigError, match=r"broken\.json: not valid JSON: .*line 1"):
        config.load_preset(path)
    with pytest.raises(ConfigError, match=r"no such file \(available: .*quick"):
        config.load_preset("no-such-preset")


def _ranges(**kinds) -> dict:
    return {"parameter_ranges": kinds}


@pytest.mark.parametrize("changes, field, words", [
    (_ranges(ContinuousParameterRanges=[{"Name": "learning_rate", "MinValue": 0.1, "MaxValue": 0.01}]),
     "parameter_ranges.ContinuousParameterRanges[0].MaxValue", "must be less than MaxValue"),
    (_ranges(ContinuousParameterRanges=[{"Name": "dropout", "MinValue": 0.0, "MaxValue": 0.5,
                                         "ScalingType": "Logarithmic"}]),
     "parameter_ranges.ContinuousParameterRanges[0].MinValue", "Logarithmic scaling needs MinValue > 0"),
    (_ranges(ContinuousParameterRanges=[{"Name": "learning_rate", "MinValue": 0.1, "MaxValue": 2,
                                         "ScalingType": "ReverseLogarithmic"}]),
     "parameter_ranges.ContinuousParameterRanges[0].ScalingType", "MaxValue < 1"),
    (_ranges(IntegerParameterRanges=[{"Name": "hidden_units", "MinValue": 8, "MaxValue": 64,
                                      "ScalingType": "ReverseLogarithmic"}]),
     "parameter_ranges.IntegerParameterRanges[0].ScalingType", "is not one of"),
    (_ranges(IntegerParameterRanges=[{"Name": "hidden_units", "MinValue": 8.5, "MaxValue": 64}]),
     "parameter_ranges.IntegerParameterRanges[0].MinValue", "is not of type 'integer'"),
    (_ranges(ContinuousParameterRanges=[{"Name": "learning_rte", "MinValue": 0.1, "MaxValue": 0.2}]),
     "parameter_ranges.ContinuousParameterRanges[0].Name", "not a hyperparameter"),
    (_ranges(ContinuousParameterRanges=[{"Name": "learning_rate", "MinValue": -0.1, "MaxValue": 0.2}]),
     "parameter_ranges.ContinuousParameterRanges[0].MinValue", "for hyperparameter learning_rate"),
    (_ranges(ContinuousParameterRanges=[{"Name": "hidden_units", "MinValue": 8, "MaxValue": 64}]),
     "parameter_ranges.ContinuousParameterRanges[0].Name", "cannot have a Continuous range"),
    (_ranges(CategoricalParameterRanges=[{"Name": "optimizer", "Values": ["adam", "rmsprop"]}]),
     "parameter_ranges.CategoricalParameterRanges[0].Values[1]", "'rmsprop' is not one of"),
    (_ranges(CategoricalParameterRanges=[{"Name": "optimizer", "Values": ["adam"]}],
             IntegerParameterRanges=[{"Name": "optimizer", "MinValue": 1, "MaxValue": 2}]),
     "parameter_ranges.IntegerParameterRanges[0].Name", "cannot have a Integer range"),
    (_ranges(CategoricalParameterRanges=[{"Name": "seed", "Values": [1, 2]},
                                         {"Name": "seed", "Values": [3]}]),
     "parameter_ranges.CategoricalParameterRanges[1].Name", "also tuned"),
    (_ranges(), "parameter_ranges", "no hyperparameter is tuned"),
    (_ranges(IntegerParameterRanges=[]), "parameter_ranges", "no hyperparameter is tuned"),
    ({"max_parallel_jobs": 10}, "max_parallel_jobs", "more than max_jobs"),
    ({"max_jobs": 0}, "max_jobs", "less than the minimum of 1"),
    ({"strategy": "Grid"}, "strategy", "Grid search takes CategoricalParameterRanges only"),
    ({"objective": {"metric": "validation:f1", "type": "Maximize"}, "base_preset": "quick"},
     "objective.metric", "not a metric of the base preset"),
    ({"base_preset": "no-such-preset"}, "base_preset", "no such file"),
    ({"max_jobs": 6, "parallel": 2}, "(top level)", "'parallel' was unexpected"),
])
def test_bad_tuning_names_file_and_field(tmp_path, changes, field, words):
    path = write(tmp_path, "bad_tuning.json", tuning_document(**changes))
    with pytest.raises(ConfigError) as raised:
        config.load_tuning(path)
    message = str(raised.value)
    assert message.startswith(f"{path}: {field}: "), message
    assert words in message, message


def test_tuning_without_base_preset_and_with_a_relative_one(tmp_path):
    document = tuning_document()
    del document["base_preset"]
    tuning = config.load_tuning(write(tmp_path, "t.json", document))
    assert config.tuning_static_hyperparameters(tuning) == {}
    (tmp_path / "mine.json").write_text(json.dumps(preset_document()))
    document["base_preset"] = "mine"  # found beside the tuning file
    tuning = config.load_tuning(write(tmp_path, "t.json", document))
    assert tuning["_preset"]["_path"] == str(tmp_path / "mine.json")


def test_grid_with_categorical_ranges_only(tmp_path):
    document = tuning_document(strategy="Grid", parameter_ranges={
        "CategoricalParameterRanges": [{"Name": "hidden_units", "Values": [32, 64]},
                                       {"Name": "optimizer", "Values": ["adam", "sgd"]}]})
    tuning = config.load_tuning(write(tmp_path, "grid.json", document))
    assert config.tuning_parameter_ranges(tuning)["CategoricalParameterRanges"][0] == {
        "Name": "hidden_units", "Values": ["32", "64"]}


@pytest.mark.parametrize("name, token", [
    ("learning_rate", "NaN"), ("dropout", "Infinity"), ("weight_decay", "-Infinity"),
    ("learning_rate", "1e999"),  # json.loads reads it as infinity
])
def test_non_finite_numbers_in_a_preset_are_refused_naming_the_field(tmp_path, name, token):
    document = preset_document()
    document["hyperparameters"][name] = "@"
    path = write(tmp_path, "nan.json", json.dumps(document).replace('"@"', token))
    with pytest.raises(ConfigError) as raised:
        config.load_preset(path)
    assert str(raised.value).startswith(f"{path}: hyperparameters.{name}: "), str(raised.value)
    assert "is not a finite number" in str(raised.value)


def test_non_finite_numbers_in_a_tuning_file_are_refused_naming_the_field(tmp_path):
    document = json.dumps(tuning_document()).replace('"MinValue": 0.001', '"MinValue": NaN')
    path = write(tmp_path, "nan_tuning.json", document)
    with pytest.raises(ConfigError, match=r"parameter_ranges\.ContinuousParameterRanges\[0\]\.MinValue: nan is not "
                                          r"a finite number"):
        config.load_tuning(path)


def test_a_schema_in_the_data_folder_does_not_replace_the_codes(tmp_path, monkeypatch):
    """ML_PIPELINE_HYPERPARAMS_DIR supplies presets, never the rules: a permissive preset.schema.json there
    is not what the preset is checked against."""
    write(tmp_path, config.PRESET_SCHEMA, {"$schema": "https://json-schema.org/draft/2020-12/schema",
                                           "type": "object"})
    write(tmp_path, config.TUNING_SCHEMA, {"type": "object"})
    document = preset_document()
    document["hyperparameters"]["epochs"] = -5
    write(tmp_path, "negative.json", document)
    monkeypatch.setenv(config.DIR_ENV, str(tmp_path))
    config.schema.cache_clear()
    with pytest.raises(ConfigError, match=r"hyperparameters\.epochs: -5 is less than the minimum of 1"):
        config.load_preset("negative")


def test_a_malformed_schema_is_a_config_error_naming_the_file(tmp_path, monkeypatch):
    write(tmp_path, config.PRESET_SCHEMA, {"type": "object", "properties": {"epochs": {"type": 12}}})
    monkeypatch.setattr(config, "SCHEMA_DIR", tmp_path)
    config.schema.cache_clear()
    try:
        with pytest.raises(ConfigError) as raised:
            config.load_preset("quick")
        message = str(raised.value)
        assert message.startswith(f"{tmp_path / config.PRESET_SCHEMA}: not a valid JSON Schema: "), message
        assert "properties.epochs.type" in message and "12" in message, message
    finally:
        config.schema.cache_clear()  # the next test reads the repository's schemas again
