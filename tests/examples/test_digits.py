"""experiments/digits in script mode: prepare.py's channels, train.py run as the training toolkit
runs it, inference.py's four functions on the model it wrote, checks.py on the answer."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest

from tests.examples.script_mode import EXPERIMENTS, experiment, load_module, metric_values, opt_ml, serve, train

FOLDER = EXPERIMENTS / "digits"
START, END = datetime(2026, 1, 5, tzinfo=timezone.utc), datetime(2026, 1, 12, tzinfo=timezone.utc)
# Small and quick: a few epochs on one thread reach well above the smoke check's 0.9.
HYPERPARAMETERS = {
    "epochs": 4,
    "batch_size": 32,
    "learning_rate": 0.01,
    "hidden_units": 64,
    "optimizer": "adam",
    "num_threads": 1,
}


def tree(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def channels(tmp_path_factory):
    prepare = load_module(FOLDER / "prepare.py")
    output = tmp_path_factory.mktemp("digits-data")
    written = prepare.write_channels(output, start=START, end=END, seed=42)
    assert set(written) == {"train", "validation", "test"}
    return output


@pytest.fixture(scope="module")
def trained(tmp_path_factory, channels):
    root = opt_ml(
        tmp_path_factory.mktemp("digits-job"), "digits", {name: channels / name for name in ("train", "validation")}
    )
    job = train(root, "train.py", {**HYPERPARAMETERS, "checkpoint_dir": str(root / "checkpoints")})
    assert job.result.returncode == 0, job.result.stdout + job.result.stderr
    return job


def test_prepare_writes_the_channels_deterministically(tmp_path, channels):
    prepare = load_module(FOLDER / "prepare.py")
    assert sorted(tree(channels)) == [
        "test/test.csv",
        "train/part-0000.csv",
        "train/part-0001.csv",
        "train/part-0002.csv",
        "train/part-0003.csv",
        "validation/validation.csv",
    ]
    prepare.write_channels(tmp_path / "again", start=START, end=END, seed=42)
    assert tree(tmp_path / "again") == tree(channels)
    prepare.write_channels(tmp_path / "other", start=START, end=END, seed=7)
    assert tree(tmp_path / "other")["validation/validation.csv"] != tree(channels)["validation/validation.csv"]
    rows = [line.split(",") for name, data in tree(channels).items() for line in data.decode().splitlines()]
    assert len(rows) == 1797 and all(len(row) == 65 for row in rows)  # every digit once: label + 64 pixels


def test_train_py_trains_with_the_toolkits_arguments_and_environment(trained):
    log = trained.result.stdout
    assert "hyperparameters: epochs=4 batch_size=32 learning_rate=0.01" in log and "hidden_units=64" in log
    metrics = metric_values(experiment("digits")["metric_definitions"], log)
    assert set(metrics) == {"train:loss", "validation:loss", "validation:accuracy"}
    assert metrics["validation:accuracy"] > 0.9
    assert sorted(p.name for p in trained.model_dir.iterdir()) == ["model.pth", "model_config.json"]
    summary = json.loads((trained.opt_ml / "output" / "data" / "metrics.json").read_text())
    assert (
        summary["epochs_completed"] == 4
        and round(summary["best"]["validation_accuracy"], 6) == metrics["validation:accuracy"]
    )
    assert (trained.opt_ml / "checkpoints" / "checkpoint.pt").is_file()
    assert trained.failure is None


@pytest.mark.slow
def test_a_second_job_on_the_same_checkpoints_resumes(tmp_path, channels, trained):
    """What a spot job restarted by SageMaker does: the checkpoint directory comes back, training goes on.
    (As a tuning trial: SageMaker's own ``_tuning_objective_metric`` argument is passed over.)"""
    root = opt_ml(tmp_path, "digits", {name: channels / name for name in ("train", "validation")})
    checkpoints = trained.opt_ml / "checkpoints"
    job = train(
        root,
        "train.py",
        {
            **HYPERPARAMETERS,
            "epochs": 5,
            "checkpoint_dir": str(checkpoints),
            "_tuning_objective_metric": "validation:loss",
        },
    )
    assert job.result.returncode == 0, job.result.stderr
    assert "resumed from checkpoint at epoch=4" in job.result.stdout
    assert "epoch=5 " in job.result.stdout and "epoch=1 " not in job.result.stdout


def test_a_misspelt_hyperparameter_fails_the_job_with_its_name(tmp_path, channels):
    root = opt_ml(tmp_path, "digits", {name: channels / name for name in ("train", "validation")})
    job = train(root, "train.py", {"epochs": 1, "learning_rte": 0.1, "checkpoint_dir": str(root / "checkpoints")})
    assert job.result.returncode == 1
    assert job.failure.startswith("HyperparameterError: unknown hyperparameter learning_rte; known: epochs")
    assert not any(job.model_dir.iterdir())


def test_inference_py_answers_the_smoke_samples_and_the_check_passes(trained):
    smoke = experiment("digits")["deploy"]["smoke"]
    samples = (FOLDER / smoke["samples"]).read_bytes()
    answer = serve(trained.opt_ml / "code", trained.model_dir, samples, smoke["content_type"], smoke["accept"])
    predictions = json.loads(answer)["predictions"]
    assert len(predictions) == 100
    assert all(len(item["probabilities"]) == 10 and 0 <= item["class"] <= 9 for item in predictions)
    checks = load_module(FOLDER / "checks.py")
    result = checks.accuracy(samples, answer, smoke["accept"])
    assert result["samples"] == 100 and result["accuracy"] >= checks.MIN_ACCURACY


def test_inference_py_takes_json_and_answers_csv(trained):
    rows = [
        [float(v) for v in line.split(",")] for line in (FOLDER / "smoke" / "samples.csv").read_text().splitlines()[:3]
    ]
    as_json = serve(
        trained.opt_ml / "code",
        trained.model_dir,
        json.dumps({"instances": rows}).encode(),
        "application/json",
        "application/json",
    )
    one_row = serve(
        trained.opt_ml / "code", trained.model_dir, json.dumps(rows[0]), "application/json", "application/json"
    )
    as_csv = serve(
        trained.opt_ml / "code",
        trained.model_dir,
        b"\n".join(",".join(map(str, r)).encode() for r in rows),
        "text/csv",
        "text/csv",
    ).decode()
    classes = [item["class"] for item in json.loads(as_json)["predictions"]]
    assert json.loads(one_row)["predictions"][0]["class"] == classes[0]
    assert [int(line.split(",")[0]) for line in as_csv.splitlines()] == classes


@pytest.mark.parametrize(
    "body, content_type, words",
    [
        (b"1,2,3", "text/csv", "row 0 has 3 features; the model takes 64"),
        (b"[[NaN" + b", 0" * 63 + b"]]", "application/json", "finite"),
        (b"\x00\x01", "application/x-npy", "unsupported Content-Type"),
    ],
)
def test_inference_py_refuses_bad_input_with_a_reason(trained, body, content_type, words):
    with pytest.raises(Exception, match=words):
        serve(trained.opt_ml / "code", trained.model_dir, body, content_type, "application/json")


def test_the_check_fails_an_endpoint_that_guesses(trained):
    checks = load_module(FOLDER / "checks.py")
    samples = (FOLDER / "smoke" / "samples.csv").read_bytes()
    wrong = json.dumps({"predictions": [{"class": 0, "probabilities": [1.0] + [0.0] * 9}] * 100}).encode()
    with pytest.raises(ValueError, match="accuracy 0.1"):
        checks.accuracy(samples, wrong, "application/json")
    with pytest.raises(ValueError, match="100 samples sent, 99 predictions"):
        checks.accuracy(
            samples, json.dumps({"predictions": json.loads(wrong)["predictions"][:99]}).encode(), "application/json"
        )
