"""Runs in MLflow (``ml_pipeline.tracking``, called by ``closing.close_run``) against a real MLflow server
(scripts/mlflow_server.py: SQLite, artifacts proxied into localaws's S3) and localaws, with the digits
trainer's stand-in (tests/localaws/images/quick-trainer) as the jobs: a train run and a tune run with their
series, trials and registered version, a retried teardown that logs nothing twice, a server that is down,
the Airflow connection, and a SageMaker managed MLflow ARN through the sagemaker-mlflow plugin."""

from __future__ import annotations

import copy
import json
import os
import time

import pytest

from tests.conftest import free_port, unique
from tests.fixtures import digits_example
from tests.fixtures.images import QUICK_TRAINER, image_for
from tests.infra.support import plan as make_plan
from tests.support import TERMINAL, wait_for_training, wait_until

pytestmark = pytest.mark.timeout(600)
EPOCHS = 5


@pytest.fixture(scope="module")
def mlflow_server(localaws_process, tmp_path_factory):
    from scripts.mlflow_server import MlflowServer

    server = MlflowServer(
        tmp_path_factory.mktemp("mlflow"), localaws_process.endpoint_url, port=0, bucket=unique("mlflow")
    ).start()
    yield server
    server.stop()


@pytest.fixture
def ml(mlflow_server, monkeypatch):
    """An MLflow client of the server, which the runs log to (MLFLOW_TRACKING_URI)."""
    from mlflow import MlflowClient

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.uri)
    return MlflowClient(tracking_uri=mlflow_server.uri, registry_uri=mlflow_server.uri)


@pytest.fixture(scope="module")
def quick_image(request, localaws_process):
    return image_for(request, localaws_process, QUICK_TRAINER, "quick-trainer")


def channels(s3, bucket: str) -> dict[str, str]:
    """The stand-in reads no data: one small file per channel."""
    for name in ("train", "validation"):
        s3.put_object(Bucket=bucket, Key=f"datasets/{name}/part.csv", Body=b"0,1\n")
    return {name: f"s3://{bucket}/datasets/{name}/" for name in ("train", "validation")}


def pipeline_run(localaws, bucket: str, image: str, hook, mode: str, **params) -> tuple[dict, dict]:
    """A digits run of the stand-in as the DAG's tasks make it (the job or tuning job, the best, its weights,
    its registered version, the gate, the promotion), closed by ``close_run``: (plan, made)."""
    from ml_pipeline import sagemaker_requests as requests
    from ml_pipeline import steps

    sm, s3 = localaws.client("sagemaker"), localaws.client("s3")
    run = make_plan(
        digits_example.experiment(),
        mode=mode,
        bucket=bucket,
        model_package_group=unique("digits"),
        hyperparameters={"epochs": EPOCHS},
        **params,
    )
    code = {"training_image": image, "serving_image": image, "environment": {}, "how": "the quick trainer"}
    data = channels(s3, bucket)
    training = tuning = None
    if mode == "train":
        request = requests.training_job(run, code, data)
        sm.create_training_job(**request)
        assert wait_for_training(sm, request["TrainingJobName"])["TrainingJobStatus"] == "Completed"
        training = {"TrainingJobName": request["TrainingJobName"]}
    else:
        request = requests.tuning_job(run, code, data)
        sm.create_hyper_parameter_tuning_job(**request)
        name = request["HyperParameterTuningJobName"]
        status = "HyperParameterTuningJobStatus"
        wait_until(
            lambda: sm.describe_hyper_parameter_tuning_job(HyperParameterTuningJobName=name)[status] in TERMINAL,
            timeout=400,
            poll=1,
        )
        tuning = {"HyperParameterTuningJobName": name}
    best = steps.pick_best(sm, run, training, tuning)
    weights = steps.copy_best_weights(s3, run, best, data)
    arn = steps.register_model_version(hook, run, best, weights, code)
    gate = steps.quality_gate(sm, run, best)
    promoted = steps.promote(sm, run, arn)
    made = {
        "hosting": {"endpoint": None, "autoscaling": None, "model": None, "endpoint_config": None},
        "model_package": arn,
        "jobs": {
            "training": [training["TrainingJobName"]] if training else [],
            "tuning": [tuning["HyperParameterTuningJobName"]] if tuning else [],
        },
        "provisioned": {},
        "outcome": {
            "data": data,
            "code": code,
            "best": best,
            "weights": weights,
            "model_package": arn,
            "promoted": promoted,
            "gate": gate,
        },
    }
    return run, made


def close(localaws, run: dict, made: dict) -> dict:
    from ml_pipeline.closing import close_run

    return close_run(localaws.client, run, made, {})


def runs_of(ml, key: str, tag: str = "ml_pipeline.run") -> list:
    experiment = ml.get_experiment_by_name("digits")
    return ml.search_runs([experiment.experiment_id], filter_string=f"tags.`{tag}` = '{key}'")


def final_metrics(sm, job_name: str) -> dict[str, float]:
    job = sm.describe_training_job(TrainingJobName=job_name)
    return {m["MetricName"]: m["Value"] for m in job["FinalMetricDataList"]}


def test_a_train_run_is_logged_with_its_series_artifacts_and_registered_version(
    localaws_process, bucket, quick_image, hook, ml, mlflow_server, tmp_path
):
    run, made = pipeline_run(localaws_process, bucket, quick_image, hook, "train")
    summary = close(localaws_process, run, made)
    logged = summary["mlflow"]
    assert "error" not in logged, logged
    [found] = runs_of(ml, run["key"])
    assert found.info.run_id == logged["run_id"] and found.info.status == "FINISHED"
    assert logged["url"] == f"{ml.tracking_uri}/#/experiments/{logged['experiment_id']}/runs/{logged['run_id']}"
    assert ml.get_experiment(logged["experiment_id"]).name == "digits"

    params = found.data.params
    assert params["epochs"] == str(EPOCHS) and params["learning_rate"] == "0.01"  # the quick preset's
    assert params["instance_type"] == "ml.m5.large" and params["instance_count"] == "1"
    assert params["image"] == quick_image
    assert params["data.train"] == made["outcome"]["data"]["train"]
    assert params["revision.file_hash"] == run["revision"]["file_hash"]
    tags = found.data.tags
    assert tags["quality_gate"] == "deploy" and tags["quality_gate.reason"] == made["outcome"]["gate"]["reason"]
    assert tags["endpoint"] == "none" and tags["state"] == "success"
    assert tags["sagemaker.model_package_arn"] == made["model_package"]

    # Each metric's whole series: one point per epoch line, and the "best_epoch" line the stand-in ends with.
    sm = localaws_process.client("sagemaker")
    job = summary["training_job"]
    final = final_metrics(sm, job)
    for metric in ("train:loss", "validation:loss", "validation:accuracy"):
        history = ml.get_metric_history(found.info.run_id, metric)
        assert [point.step for point in history] == list(range(1, EPOCHS + 2)), metric
        assert history[-1].value == pytest.approx(final[metric])
    losses = [point.value for point in ml.get_metric_history(found.info.run_id, "validation:loss")]
    assert all(later < earlier for earlier, later in zip(losses[: EPOCHS - 1], losses[1:EPOCHS], strict=True))

    # The summary (with the MLflow run in it) and the metadata, as the server stored them in S3.
    artifacts = {item.path for item in ml.list_artifacts(found.info.run_id)}
    assert {"summary.json", "metadata.json"} <= artifacts
    stored = localaws_process.client("s3").list_objects_v2(Bucket=mlflow_server.bucket)["Contents"]
    assert any(obj["Key"].endswith(f"{found.info.run_id}/artifacts/summary.json") for obj in stored)
    with open(ml.download_artifacts(found.info.run_id, "summary.json", dst_path=str(tmp_path))) as handle:
        downloaded = json.load(handle)
    assert downloaded["run"] == run["key"] and downloaded["mlflow"]["run_id"] == found.info.run_id

    # The model: a version of the group's registered model, linked to the SageMaker package version.
    group = run["params"]["model_package_group"]
    [version] = ml.search_model_versions(f"name = '{group}'")
    assert logged["model_version"] == {"name": group, "version": version.version}
    assert version.run_id == found.info.run_id
    assert version.tags["sagemaker.model_package_arn"] == made["model_package"]
    assert made["model_package"] in version.description
    assert version.source == summary["best_weights"]["model_data_url"]
    assert version.tags["sagemaker.approval_status"] == "Approved"
    assert ml.get_model_version_by_alias(group, "production").version == version.version


def test_a_tune_run_logs_its_trials_as_child_runs_and_a_retried_close_logs_nothing_twice(
    localaws_process, bucket, quick_image, hook, ml
):
    run, made = pipeline_run(localaws_process, bucket, quick_image, hook, "tune", max_jobs=3, max_parallel_jobs=3)
    summary = close(localaws_process, run, made)
    logged = summary["mlflow"]
    assert "error" not in logged, logged
    [parent] = runs_of(ml, run["key"])
    children = runs_of(ml, run["key"], "ml_pipeline.trial_of")
    sm = localaws_process.client("sagemaker")
    trials = sm.list_training_jobs_for_hyper_parameter_tuning_job(HyperParameterTuningJobName=summary["tuning_job"])
    names = {trial["TrainingJobName"] for trial in trials["TrainingJobSummaries"]}
    assert len(names) == 3 and {child.info.run_name for child in children} == names
    assert {child.data.tags["mlflow.parentRunId"] for child in children} == {parent.info.run_id}
    best = [child for child in children if child.data.tags["best"] == "true"]
    assert [child.info.run_name for child in best] == [summary["training_job"]]
    assert parent.data.tags["best_trial_run_id"] == best[0].info.run_id
    for child in children:
        history = ml.get_metric_history(child.info.run_id, "validation:loss")
        assert len(history) == EPOCHS + 1, child.info.run_name
        assert history[-1].value == pytest.approx(final_metrics(sm, child.info.run_name)["validation:loss"])
        # The trial's own hyperparameters: the tuned ones as the trial got them.
        tuned = next(t for t in trials["TrainingJobSummaries"] if t["TrainingJobName"] == child.info.run_name)
        for name, value in tuned["TunedHyperParameters"].items():
            assert child.data.params[name] == value
        assert child.info.status == "FINISHED"
    # The parent's series is the best trial's, and its params say how the tuning ran.
    assert len(ml.get_metric_history(parent.info.run_id, "validation:loss")) == EPOCHS + 1
    assert parent.data.params["tuning.max_jobs"] == "3" and parent.data.params["mode"] == "tune"

    # close_run again (a retry): the same MLflow run, the same trials, one version, no doubled series.
    again = close(localaws_process, run, made)
    assert again["mlflow"]["run_id"] == logged["run_id"]
    assert len(runs_of(ml, run["key"])) == 1
    assert len(runs_of(ml, run["key"], "ml_pipeline.trial_of")) == 3
    assert len(ml.search_model_versions(f"name = '{run['params']['model_package_group']}'")) == 1
    assert len(ml.get_metric_history(parent.info.run_id, "validation:loss")) == EPOCHS + 1


def test_a_run_with_the_server_down_still_closes_and_says_so_quickly(
    localaws_process, bucket, quick_image, hook, ml, monkeypatch
):
    from ml_pipeline import tracking

    run, made = pipeline_run(localaws_process, bucket, quick_image, hook, "train")
    down = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", down)
    started = time.monotonic()
    result = tracking.log_run(localaws_process.client, run, {"state": "success", "run": run["key"]})
    assert time.monotonic() - started < 20
    assert result["error"].startswith(f"MLflow at {down} (MLFLOW_TRACKING_URI): ")
    assert set(result) == {"error"}
    # The whole teardown: the run still succeeds, its summary (in S3 too) says why it is not in MLflow.
    summary = close(localaws_process, run, made)
    assert summary["state"] == "success" and summary["mlflow"]["error"].startswith(f"MLflow at {down}")
    written = json.loads(
        localaws_process.client("s3").get_object(Bucket=bucket, Key=f"runs/{run['key']}/summary.json")["Body"].read()
    )
    assert written["mlflow"] == summary["mlflow"]
    assert runs_of(ml, run["key"]) == []


def test_no_server_configured_logs_nothing_and_says_how_to_set_one(localaws_process, monkeypatch):
    from ml_pipeline import tracking

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("AIRFLOW_CONN_MLFLOW_DEFAULT", raising=False)
    result = tracking.log_run(localaws_process.client, make_plan(digits_example.experiment()), {})
    assert result == {
        "error": "no MLflow tracking server: set MLFLOW_TRACKING_URI or the Airflow connection mlflow_default"
    }


def test_the_airflow_connection_names_the_server_and_its_credentials_stay_out_of_the_summary(
    localaws_process, bucket, quick_image, hook, ml, mlflow_server, monkeypatch
):
    from ml_pipeline import tracking

    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    port = mlflow_server.uri.rsplit(":", 1)[1]
    secret = "not-a-real-password"
    monkeypatch.setenv(
        "AIRFLOW_CONN_MLFLOW_DEFAULT",
        json.dumps({"conn_type": "http", "host": "127.0.0.1", "port": int(port), "login": "ml", "password": secret}),
    )
    server = tracking.tracking_server()
    assert server is not None and server.uri == mlflow_server.uri and server.source.endswith("mlflow_default")
    run, made = pipeline_run(localaws_process, bucket, quick_image, hook, "train")
    summary = close(localaws_process, run, made)
    assert "error" not in summary["mlflow"], summary["mlflow"]
    [found] = runs_of(ml, run["key"])
    assert found.info.run_id == summary["mlflow"]["run_id"]
    assert secret not in json.dumps(summary) and secret not in json.dumps(found.data.to_dictionary())
    # A host with the scheme in it, or the extra's tracking_uri, name it too (connections of their own: the
    # process caches the ones it read).
    monkeypatch.setenv("AIRFLOW_CONN_MLFLOW_URI", json.dumps({"conn_type": "http", "host": mlflow_server.uri}))
    assert tracking.tracking_server("mlflow_uri").uri == mlflow_server.uri
    arn = "arn:aws:sagemaker:us-east-1:123456789012:mlflow-tracking-server/ml-pipeline"
    monkeypatch.setenv("AIRFLOW_CONN_MLFLOW_ARN", json.dumps({"conn_type": "generic", "extra": {"tracking_uri": arn}}))
    assert tracking.tracking_server("mlflow_arn").uri == arn


def test_a_sagemaker_managed_mlflow_arn_logs_through_the_sagemaker_mlflow_plugin(
    localaws_process, bucket, quick_image, hook, ml, mlflow_server, monkeypatch
):
    """A managed tracking server's runs keep their artifacts in S3, written by the client (the task's AWS
    credentials); its requests are SigV4-signed by the plugin. Here the plugin's endpoint is the test's
    server (SAGEMAKER_MLFLOW_CUSTOM_ENDPOINT) and the experiment's artifacts go to localaws's S3."""
    import mlflow

    from ml_pipeline import tracking

    run, made = pipeline_run(localaws_process, bucket, quick_image, hook, "train")
    run = copy.deepcopy(run)
    run["experiment"]["name"] = unique("managed")
    ml.create_experiment(run["experiment"]["name"], artifact_location=f"s3://{bucket}/mlflow")
    arn = "arn:aws:sagemaker:us-east-1:123456789012:mlflow-tracking-server/ml-pipeline"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", arn)
    monkeypatch.setenv("SAGEMAKER_MLFLOW_CUSTOM_ENDPOINT", mlflow_server.uri)
    monkeypatch.setenv("MLFLOW_S3_ENDPOINT_URL", localaws_process.endpoint_url)
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}.items():
        monkeypatch.setenv(name, value)
    from ml_pipeline.closing import summarize

    summary = summarize(run, made["outcome"], {}, {}, {})
    result = tracking.log_run(localaws_process.client, run, summary)
    assert "error" not in result, result
    assert os.environ["MLFLOW_TRACKING_URI"] == arn  # as it was before the call (the plugin needs it set)
    assert type(mlflow.MlflowClient(tracking_uri=arn)._tracking_client.store).__name__ == "MlflowSageMakerStore"
    logged = ml.get_run(result["run_id"])
    assert logged.data.tags["ml_pipeline.run"] == run["key"]
    assert len(ml.get_metric_history(result["run_id"], "validation:loss")) == EPOCHS + 1
    listed = localaws_process.client("s3").list_objects_v2(Bucket=bucket, Prefix="mlflow/")["Contents"]
    keys = [item["Key"] for item in listed]
    assert f"mlflow/{result['run_id']}/artifacts/summary.json" in keys
