"""experiments/diabetes in script mode: prepare.py's channels, train.py run as the training toolkit
runs it, inference.py's four functions on the model.joblib it wrote, checks.py on the answer."""

from __future__ import annotations

import json
import math
from datetime import datetime, timezone

import pytest

from tests.examples.script_mode import EXPERIMENTS, experiment, load_module, metric_values, opt_ml, serve, train

FOLDER = EXPERIMENTS / "diabetes"
START, END = datetime(2026, 1, 5, tzinfo=timezone.utc), datetime(2026, 1, 12, tzinfo=timezone.utc)
HYPERPARAMETERS = {"n_estimators": 20, "learning_rate": 0.1, "max_depth": 2, "subsample": 0.8}


def tree(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def channels(tmp_path_factory):
    output = tmp_path_factory.mktemp("diabetes-data")
    written = load_module(FOLDER / "prepare.py").write_channels(output, start=START, end=END, seed=42)
    assert set(written) == {"train", "validation"}
    return output


@pytest.fixture(scope="module")
def trained(tmp_path_factory, channels):
    root = opt_ml(
        tmp_path_factory.mktemp("diabetes-job"),
        "diabetes",
        {"train": channels / "train", "validation": channels / "validation"},
    )
    job = train(root, "train.py", HYPERPARAMETERS)
    assert job.result.returncode == 0, job.result.stdout + job.result.stderr
    return job


def test_prepare_writes_the_channels_deterministically(tmp_path, channels):
    prepare = load_module(FOLDER / "prepare.py")
    assert sorted(tree(channels)) == ["train/train.csv", "validation/validation.csv"]
    prepare.write_channels(tmp_path / "again", start=START, end=END, seed=42)
    assert tree(tmp_path / "again") == tree(channels)
    prepare.write_channels(tmp_path / "other", start=START, end=END, seed=1)
    assert tree(tmp_path / "other")["train/train.csv"] != tree(channels)["train/train.csv"]
    counts = {name: len(data.splitlines()) for name, data in tree(channels).items()}
    assert counts == {"train/train.csv": 353, "validation/validation.csv": 89}  # all 442 patients
    assert all(len(line.split(b",")) == 11 for data in tree(channels).values() for line in data.splitlines())


def test_train_py_writes_model_joblib_and_the_rmse_metric(trained):
    metrics = metric_values(experiment("diabetes")["metric_definitions"], trained.result.stdout)
    assert set(metrics) == {"train:rmse", "validation:rmse"}
    # the target spans 25..346 (sd about 77): a model that learnt something is well under that
    assert 30 < metrics["validation:rmse"] < 70 and metrics["train:rmse"] < metrics["validation:rmse"]
    assert [p.name for p in trained.model_dir.iterdir()] == ["model.joblib"]
    written = json.loads((trained.opt_ml / "output" / "data" / "metrics.json").read_text())
    assert round(written["validation_rmse"], 6) == metrics["validation:rmse"]
    assert written["hyperparameters"]["n_estimators"] == 20


def test_more_trees_fit_the_training_data_better(tmp_path, channels):
    """The hyperparameters reach the model: tuning has something to tune."""
    root = opt_ml(tmp_path, "diabetes", {"train": channels / "train", "validation": channels / "validation"})
    job = train(root, "train.py", {**HYPERPARAMETERS, "n_estimators": 2})
    assert job.result.returncode == 0, job.result.stderr
    few = metric_values(experiment("diabetes")["metric_definitions"], job.result.stdout)
    assert few["train:rmse"] > 60


def test_a_channel_without_data_fails_the_job_with_a_reason(tmp_path, channels):
    empty = tmp_path / "empty"
    empty.mkdir()
    root = opt_ml(tmp_path, "diabetes", {"train": channels / "train", "validation": empty})
    job = train(root, "train.py", HYPERPARAMETERS)
    assert job.result.returncode == 1
    assert job.failure.startswith("ValueError: channel 'validation' has no CSV file")
    assert not any(job.model_dir.iterdir())


def test_inference_py_answers_one_prediction_per_line_and_the_check_passes(trained):
    smoke = experiment("diabetes")["deploy"]["smoke"]
    assert smoke["content_type"] == smoke["accept"] == "text/csv"
    samples = (FOLDER / smoke["samples"]).read_bytes()
    answer = serve(trained.opt_ml / "code", trained.model_dir, samples, smoke["content_type"], smoke["accept"])
    answer = answer.encode() if isinstance(answer, str) else answer
    lines = answer.decode().splitlines()
    assert len(lines) == len(samples.decode().splitlines()) == 20
    assert all(25 <= float(line) <= 350 for line in lines)
    result = load_module(FOLDER / "checks.py").check_predictions(samples, answer, smoke["accept"])
    assert result["samples"] == 20 and math.isfinite(result["mean_prediction"])


def test_inference_py_answers_json_when_asked(trained):
    row = (FOLDER / "smoke" / "samples.csv").read_text().splitlines()[0]
    as_json = json.loads(
        serve(trained.opt_ml / "code", trained.model_dir, row.encode(), "text/csv", "application/json")
    )
    as_csv = serve(trained.opt_ml / "code", trained.model_dir, row, "text/csv", "text/csv")
    assert len(as_json["predictions"]) == 1 and f"{as_json['predictions'][0]:.6f}\n" == as_csv


@pytest.mark.parametrize(
    "body, content_type, words",
    [
        (b'{"instances": [[1, 2]]}', "application/json", "unsupported content type"),
        (b"0.1,0.2,0.3", "text/csv", "rows have 3 features; the model takes 10"),
        (b"nan" + b",0" * 9, "text/csv", "non-finite"),
        (b"a,b", "text/csv", "not rows of numbers"),
    ],
)
def test_inference_py_refuses_bad_input_with_a_reason(trained, body, content_type, words):
    with pytest.raises(ValueError, match=words):
        serve(trained.opt_ml / "code", trained.model_dir, body, content_type, "text/csv")


@pytest.mark.parametrize(
    "response, words",
    [
        (b"1.0\n" * 19, "20 rows sent, 19 predictions"),
        (b"1.0\n" * 19 + b"nan\n", "1 of 20 predictions are not finite"),
    ],
)
def test_the_check_fails_a_wrong_answer(response, words):
    samples = (FOLDER / "smoke" / "samples.csv").read_bytes()
    with pytest.raises(ValueError, match=words):
        load_module(FOLDER / "checks.py").check_predictions(samples, response, "text/csv")
