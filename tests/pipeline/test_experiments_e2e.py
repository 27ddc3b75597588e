"""Experiments end to end on localaws, each as a user would run it: the README's "Train your own model"
followed to its last step, the diabetes example in train and tune mode, and a script-mode experiment
written by a stranger to SageMaker's conventions (tests/fixtures/experiments/wine), each trained,
registered, gated, deployed, smoke-tested and torn down with nothing left; and one that prepares its data
in a SageMaker processing job and scores a file by batch transform instead of serving an endpoint
(tests/fixtures/experiments/flowers)."""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from scripts.run_pipeline import airflow_env, read_summary, run_dag
from tests.conftest import REPO_ROOT, unique
from tests.examples.test_readme_tutorial import folder  # noqa: F401  the section's steps 1 to 4, as a fixture

pytestmark = [pytest.mark.timeout(1200), pytest.mark.e2e]  # whole DAG runs through dag.test()
FIXTURES = REPO_ROOT / "tests" / "fixtures" / "experiments"


def assert_nothing_left(localaws, summary: dict) -> None:
    """The run's endpoint, endpoint config and model are gone (teardown said so), and no run resource
    of any other kind is left."""
    from ml_pipeline.infra.teardown import remaining

    sm, run = localaws.client("sagemaker"), summary["run"]
    assert not summary["teardown"].get("errors"), summary["teardown"]
    assert not summary["teardown"]["endpoint_kept"], summary["teardown"]
    removed = summary["teardown"]["removed"]
    if summary["smoke_test"]:
        assert f"deleted endpoint {summary['endpoint']}" in removed, removed
    assert sm.list_endpoints(NameContains=run)["Endpoints"] == []
    assert sm.list_endpoint_configs(NameContains=run)["EndpointConfigs"] == []
    assert sm.list_models(NameContains=run)["Models"] == []
    assert set(remaining(localaws.client, run).values()) == {0}


def assert_trained_registered_gated_deployed(localaws, summary: dict, metric: str) -> None:
    assert summary["state"] == "success" and summary["failed_tasks"] is None, summary
    sm = localaws.client("sagemaker")
    job = sm.describe_training_job(TrainingJobName=summary["training_job"])
    assert job["TrainingJobStatus"] == "Completed"
    assert summary["objective"]["metric"] == metric
    assert math.isfinite(summary["metrics"][metric]) and summary["objective"]["value"] == summary["metrics"][metric]
    assert {m["MetricName"]: m["Value"] for m in job["FinalMetricDataList"]}[metric] == pytest.approx(
        summary["metrics"][metric]
    )
    package = sm.describe_model_package(ModelPackageName=summary["model_package"])
    assert package["ModelApprovalStatus"] == "Approved"
    # the run's copy of the job's weights (models/<experiment>/<run>/), which is what gets deployed
    assert (
        package["InferenceSpecification"]["Containers"][0]["ModelDataUrl"] == summary["best_weights"]["model_data_url"]
    )
    assert summary["quality_gate"]["deploy"] is True, summary["quality_gate"]
    smoke = summary["smoke_test"]
    assert smoke and smoke["response_bytes"] > 0 and summary["endpoint"], smoke


@pytest.fixture(scope="module")
def airflow(localaws_process, dag_test_home, tmp_path_factory):
    """The session's Airflow home (``airflow_home``) and this module's folder for the runs' logs (``home``)."""
    home = tmp_path_factory.mktemp("airflow-home")
    return {"home": home, "airflow_home": dag_test_home, "localaws": localaws_process}


def run_experiment(
    airflow, monkeypatch, experiment: str, conf: dict, date: str, name: str, experiments: Path | None = None
) -> tuple[dict, dict | None, str]:
    """One run of the experiment's DAG as `make run` runs it; ``experiments``: the experiments root
    (ML_PIPELINE_EXPERIMENTS_DIR) instead of the repository's."""
    if experiments is not None:
        monkeypatch.setenv("ML_PIPELINE_EXPERIMENTS_DIR", str(experiments))  # read here (the file) and by the run
    localaws = airflow["localaws"]
    env = {
        **airflow_env(localaws.endpoint_url, airflow["airflow_home"]),
        "ML_PIPELINE_BUCKET": unique(experiment),
        "ML_PIPELINE_POLL_SECONDS": "1",
    }
    conf = {"model_package_group": unique(experiment), **conf}
    log_path = airflow["home"] / f"{name}.log"
    result = run_dag(env, conf, date, log_path, experiment)
    log = log_path.read_text()
    assert result["state"] == "success", log[-6000:]
    return result, read_summary(localaws.endpoint_url, env["ML_PIPELINE_BUCKET"], result, experiment), log


# 1. README's "Train your own model", to its last step


def test_the_readme_tutorial_runs_with_make_run_to_a_smoke_tested_endpoint(localaws_process, folder):  # noqa: F811
    """Steps 1 to 4 as the section writes them (the tutorial fixture: its shell block, its files), in a
    temporary experiments root; step 5 exactly as written, `make run EXPERIMENT=iris` from the repository's
    root, pointed at that root and at this session's localaws. One liberty: make's `-o .venv/.installed`,
    so that a checkout newer than the shared virtual environment does not pip install into it."""
    env = {
        **airflow_env(localaws_process.endpoint_url, REPO_ROOT / "out" / "airflow-home"),
        "ML_PIPELINE_EXPERIMENTS_DIR": str(folder.parent),
        "LOCALAWS_ENDPOINT": localaws_process.endpoint_url,
        "ML_PIPELINE_BUCKET": unique("iris"),
        "ML_PIPELINE_POLL_SECONDS": "1",
    }
    [command] = [
        body.split()
        for language, body in re.findall(
            r"^```(\w+)\n(.*?)^```$", Path(REPO_ROOT / "README.md").read_text(), re.MULTILINE | re.DOTALL
        )
        if language == "bash" and body.startswith("make run EXPERIMENT=")
    ]
    assert command == ["make", "run", "EXPERIMENT=iris"]
    completed = subprocess.run(
        [command[0], "-o", ".venv/.installed", *command[1:]],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=1100,
    )
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output[-6000:]
    assert "iris train run finished success" in output, output[-6000:]
    [printed] = re.findall(r"^summary JSON +(\S+) ", output, re.MULTILINE)
    summary = json.loads(Path(printed).read_text())
    assert summary["experiment"] == "iris" and summary["mode"] == "train"
    assert summary["dag_run"]["state"] == "success"
    assert_trained_registered_gated_deployed(localaws_process, summary, "validation:accuracy")
    assert summary["metrics"]["validation:accuracy"] > 0.8
    smoke = summary["smoke_test"]
    assert smoke["response_content_type"].startswith("text/csv") and smoke["check"] is None
    # five flowers sent (smoke.csv), five classes back, one a line: the container's default input, predict, output
    assert [float(line) for line in smoke["response_preview"].split()] == [0.0, 0.0, 1.0, 1.0, 2.0]
    assert summary["code"]["how"] and "sourcedir.tar.gz" in json.dumps(summary["code"])
    assert_nothing_left(localaws_process, summary)


# 2. experiments/diabetes, train and tune


def test_diabetes_in_train_mode_end_to_end(airflow, monkeypatch):
    result, summary, log = run_experiment(
        airflow, monkeypatch, "diabetes", {"mode": "train"}, "2026-10-05T00:00:00+00:00", "diabetes-train"
    )
    assert_trained_registered_gated_deployed(airflow["localaws"], summary, "validation:rmse")
    assert summary["objective"]["type"] == "Minimize"
    assert 20 < summary["metrics"]["validation:rmse"] < 100  # the diabetes target's spread is about 77
    assert summary["best_hyperparameters"]["n_estimators"] in (200, "200")  # the experiment file's, untuned
    check = summary["smoke_test"]["check"]  # checks:check_predictions' figures
    assert check["samples"] == 20
    assert 25 <= check["min_prediction"] <= check["mean_prediction"] <= check["max_prediction"] <= 346
    assert "smoke test passed" in log
    assert_nothing_left(airflow["localaws"], summary)


def test_diabetes_in_tune_mode_end_to_end(airflow, monkeypatch):
    conf = {"mode": "tune", "max_jobs": 2, "max_parallel_jobs": 2}
    result, summary, log = run_experiment(
        airflow, monkeypatch, "diabetes", conf, "2026-10-12T00:00:00+00:00", "diabetes-tune"
    )
    assert_trained_registered_gated_deployed(airflow["localaws"], summary, "validation:rmse")
    sm = airflow["localaws"].client("sagemaker")
    tuning = sm.describe_hyper_parameter_tuning_job(HyperParameterTuningJobName=summary["tuning_job"])
    assert tuning["HyperParameterTuningJobStatus"] == "Completed"
    assert tuning["HyperParameterTuningJobConfig"]["HyperParameterTuningJobObjective"] == {
        "Type": "Minimize",
        "MetricName": "validation:rmse",
    }
    assert summary["trials"]["Completed"] == 2
    assert summary["training_job"] == tuning["BestTrainingJob"]["TrainingJobName"]
    best = tuning["BestTrainingJob"]["FinalHyperParameterTuningJobObjectiveMetric"]
    assert best["MetricName"] == "validation:rmse" and best["Value"] == pytest.approx(summary["objective"]["value"])
    tuned = summary["best_hyperparameters"]
    assert set(tuned) == {"n_estimators", "max_depth", "learning_rate"}, tuned
    # The job's TunedHyperParameters, as script mode sent them (JSON), decoded.
    assert tuned == {k: json.loads(v) for k, v in tuning["BestTrainingJob"]["TunedHyperParameters"].items()}
    assert isinstance(tuned["n_estimators"], int) and isinstance(tuned["learning_rate"], float)
    assert 20 <= tuned["n_estimators"] <= 200 and 2 <= tuned["max_depth"] <= 5
    assert 0.01 <= tuned["learning_rate"] <= 0.3
    assert summary["smoke_test"]["check"]["samples"] == 20
    assert math.isfinite(summary["smoke_test"]["check"]["mean_prediction"])
    assert_nothing_left(airflow["localaws"], summary)


# 3. a script-mode experiment no one on the team wrote


def test_a_strangers_script_mode_experiment_runs_end_to_end(airflow, monkeypatch, tmp_path):
    experiments = tmp_path / "experiments"
    shutil.copytree(FIXTURES / "wine", experiments / "wine")
    result, summary, log = run_experiment(
        airflow, monkeypatch, "wine", {"mode": "train"}, "2026-10-19T00:00:00+00:00", "wine-train", experiments
    )
    assert summary["experiment"] == "wine" and summary["training_job"].startswith("wine-")
    assert_trained_registered_gated_deployed(airflow["localaws"], summary, "validation:accuracy")
    assert summary["metrics"]["validation:accuracy"] >= 0.85 and summary["metrics"]["train:accuracy"] >= 0.9
    sm = airflow["localaws"].client("sagemaker")
    job = sm.describe_training_job(TrainingJobName=summary["training_job"])
    assert sorted(c["ChannelName"] for c in job["InputDataConfig"]) == ["training", "validation"]
    assert job["HyperParameters"]["n_estimators"] == "50" and job["HyperParameters"]["max_depth"] == "4"
    assert job["HyperParameters"]["sagemaker_program"] == '"train.py"'
    # the job's log, as the run printed it: requirements.txt installed before train.py ran and printed its metric
    printed = re.search(r"\] validation accuracy: [0-9.]+ ", log)
    assert printed and log.index("] Installing dependencies from requirements.txt") < printed.start()
    smoke = summary["smoke_test"]
    assert smoke["response_content_type"].startswith("application/json") and smoke["check"] is None
    sent = json.loads((FIXTURES / "wine" / "smoke" / "samples.json").read_text())["instances"]
    # the answer as inference.py's output_fn wrote it (the preview: its first 200 characters)
    assert smoke["response_preview"].startswith('{"predictions": [')
    predictions = json.loads(re.match(r'\{"predictions": (\[[^]]*\])', smoke["response_preview"]).group(1))
    labels = [
        int(line.split(",")[0])
        for line in (FIXTURES / "wine" / "data" / "validation" / "validation.csv")
        .read_text()
        .splitlines()[1 : len(sent) + 1]
    ]
    assert (
        len(predictions) == len(sent)
        and sum(p == t for p, t in zip(predictions, labels, strict=False)) >= len(sent) - 1
    )
    assert '"probabilities": [[' in smoke["response_preview"]
    assert_nothing_left(airflow["localaws"], summary)


# 4. prepare in a processing job, a weekly file scored by batch transform, no endpoint


def test_a_processing_prepare_feeds_training_and_a_batch_transform_scores_every_line(airflow, monkeypatch, tmp_path):
    """The flowers' channels are written by a SageMaker processing job (the experiment's prepare.py, in its
    training image) to the data partition training reads; after the gate the approved version scores a file
    of flowers, one species a line, under a prefix of the run's own; teardown leaves no job running and no
    model, endpoint or stack of the run's."""
    import numpy as np
    from sklearn.datasets import load_iris

    localaws = airflow["localaws"]
    s3, sm = localaws.client("s3"), localaws.client("sagemaker")
    scores = unique("flowers-weekly")
    s3.create_bucket(Bucket=scores)
    features, species = load_iris(return_X_y=True)
    weekly = list(range(0, 150, 5))  # 30 flowers, 10 of each species
    s3.put_object(
        Bucket=scores,
        Key="in/flowers.csv",
        Body="".join(",".join(f"{v:g}" for v in features[i]) + "\n" for i in weekly).encode(),
    )
    experiments = tmp_path / "experiments"
    shutil.copytree(FIXTURES / "flowers", experiments / "flowers")
    file = experiments / "flowers" / "experiment.yaml"
    document = yaml.safe_load(file.read_text())
    document["batch_transform"].update(input=f"s3://{scores}/in/", output=f"s3://{scores}/scores")
    file.write_text(yaml.safe_dump(document, sort_keys=False))

    result, summary, log = run_experiment(
        airflow, monkeypatch, "flowers", {"mode": "train"}, "2026-10-26T00:00:00+00:00", "flowers-train", experiments
    )
    assert summary["state"] == "success" and summary["failed_tasks"] is None, summary
    run = summary["run"]
    # The processing job ran prepare.py and wrote the partition's channels; the worker wrote its manifest.
    [processing] = summary["jobs"]["processing"]
    assert processing == {"name": f"flowers-prepare-{run}", "status": "Completed"}
    job = sm.describe_processing_job(ProcessingJobName=processing["name"])
    assert job["ExitMessage"] == "prepare:write_channels wrote train (1 files), validation (1 files)"
    assert job["AppSpecification"]["ImageUri"].endswith("/sagemaker-scikit-learn:1.2-1-cpu-py3")
    partition = "datasets/flowers/20261026"
    assert job["ProcessingOutputConfig"]["Outputs"][0]["S3Output"]["S3Uri"].endswith(f"/{partition}/")
    data_bucket = job["ProcessingOutputConfig"]["Outputs"][0]["S3Output"]["S3Uri"].split("/")[2]
    assert summary["data"] == {
        "train": f"s3://{data_bucket}/{partition}/train/",
        "validation": f"s3://{data_bucket}/{partition}/validation/",
    }
    manifest = json.loads(s3.get_object(Bucket=data_bucket, Key=f"{partition}/manifest.json")["Body"].read())
    assert manifest["processing_job"] == processing["name"] and manifest["files"] == {"train": 1, "validation": 1}
    rows = s3.get_object(Bucket=data_bucket, Key=f"{partition}/train/train.csv")["Body"].read().decode().splitlines()
    assert len(rows) == 105  # 70% of 150, as prepare.py splits them
    assert "prepared 105 train and 45 validation flowers for 2026-10-26" in log  # the job's log, as the run shows it
    # Training read the job's channels, and nothing else.
    training = sm.describe_training_job(TrainingJobName=summary["training_job"])
    assert {c["ChannelName"]: c["DataSource"]["S3DataSource"]["S3Uri"] for c in training["InputDataConfig"]} == (
        summary["data"]
    )
    assert re.search(r"\] train: 105 rows from \['train.csv'\]", log), "train.py's log"
    assert summary["metrics"]["validation:accuracy"] >= 0.85
    assert summary["deploy"] and summary["endpoint"] is None and summary["quality_gate"]["deploy"] is True

    # The batch transform scored the file with this run's (approved) version, into the run's own prefix.
    scored = summary["batch_transform"]
    assert scored["job"] == f"flowers-score-{run}" and scored["status"] == "Completed", scored
    assert scored["model_package"] == summary["model_package"] and scored["model"].startswith("this run's")
    assert scored["output"] == f"s3://{scores}/scores/{run}/"
    assert [obj["Key"] for obj in s3.list_objects_v2(Bucket=scores, Prefix="scores/")["Contents"]] == [
        f"scores/{run}/flowers.csv.out"
    ]
    lines = s3.get_object(Bucket=scores, Key=f"scores/{run}/flowers.csv.out")["Body"].read().decode().splitlines()
    assert len(lines) == len(weekly)  # one scored line per input line
    predicted = np.array([float(line) for line in lines])
    assert set(predicted) <= {0.0, 1.0, 2.0} and (predicted == species[weekly]).mean() >= 0.9
    transform = sm.describe_transform_job(TransformJobName=scored["job"])
    assert transform["ModelName"] == f"flowers-model-{run}"
    assert transform["TransformInput"]["DataSource"]["S3DataSource"]["S3Uri"] == f"s3://{scores}/in/"

    # Teardown: the transform's model is gone, no job of the run runs, nothing else is left.
    assert f"deleted model flowers-model-{run}" in summary["teardown"]["removed"]
    for kind, status in (("processing", "ProcessingJobStatus"), ("transform", "TransformJobStatus")):
        listed = getattr(sm, f"list_{kind}_jobs")(NameContains=run)[f"{kind.capitalize()}JobSummaries"]
        assert [job[status] for job in listed] == ["Completed"], (kind, listed)
    assert_nothing_left(localaws, summary)
    assert f"{processing['name']}/algo-1" in summary["resources"]["hosts"]  # its host's use, from CloudWatch
    assert any(item["what"] == f"processing job {processing['name']}" for item in summary["cost"]["items"])
    assert any(item["what"] == f"transform job {scored['job']}" for item in summary["cost"]["items"])
