"""Runs that do not end well say so, and say what happened, through ``dag.test()`` as `make run` runs
them: a training job stopped from outside and a run failing after it registered its model (a localaws that
forgot everything mid-run: test_forgotten_state.py)."""

from __future__ import annotations

import json
import shutil
import threading
import time

import pytest

from tests.conftest import REPO_ROOT, unique
from tests.pipeline.test_pipeline_e2e import QUICK, airflow, run  # noqa: F401 - airflow is the module's fixture
from tests.support import wait_until

pytestmark = pytest.mark.timeout(1200)


@pytest.fixture(scope="module")
def slow_presets(tmp_path_factory):
    """The presets with a quick preset that trains for minutes, so that a run can be caught training."""
    hyperparams = tmp_path_factory.mktemp("presets") / "hyperparams"
    shutil.copytree(REPO_ROOT / "include" / "hyperparams" / "digits", hyperparams / "digits")
    quick = json.loads((hyperparams / "digits" / "quick.json").read_text())
    quick["hyperparameters"].update({"epochs": 3000, "early_stopping_patience": 0})
    (hyperparams / "digits" / "quick.json").write_text(json.dumps(quick))
    return hyperparams


def in_background(call) -> tuple[threading.Thread, dict]:
    out: dict = {}
    thread = threading.Thread(target=lambda: out.update(value=call()), daemon=True)
    thread.start()
    return thread, out


def training_job_of(sm, day: str, thread: threading.Thread, timeout: float = 600) -> str:
    """The name of the run's training job (its logical date is ``day``) once it is training."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert thread.is_alive(), "the run ended before its training job trained"
        for job in [
            j
            for j in sm.list_training_jobs(NameContains=f"-{day}-")["TrainingJobSummaries"]
            if j["TrainingJobStatus"] == "InProgress"
        ]:
            if sm.describe_training_job(TrainingJobName=job["TrainingJobName"])["SecondaryStatus"] == "Training":
                return job["TrainingJobName"]
        time.sleep(1)
    raise TimeoutError(f"no training job of {day} trained within {timeout} s")


@pytest.mark.parametrize(
    "states, gate, why",
    [
        ({"quality_gate": "success", "promote": "success"}, {"deploy": True}, {}),
        ({"quality_gate": "success", "promote": "skipped"}, {"deploy": False}, {}),  # the gate kept production
        (
            {"train.wait_for_training_job": "failed", "pick_best": "upstream_failed", "promote": "upstream_failed"},
            None,
            {"train.wait_for_training_job": "failed"},
        ),
        # Marked failed from the UI while the wait task was queued: no task failed, the rest were skipped.
        (
            {"train.start_training_job": "success", "train.wait_for_training_job": "skipped", "promote": "skipped"},
            None,
            {"promote": "skipped"},
        ),
        # The run reached its end, and then its teardown failed (it left part of the stack): the run fails.
        (
            {"quality_gate": "success", "promote": "success", "close_run": "failed"},
            {"deploy": True},
            {"close_run": "failed"},
        ),
    ],
)
def test_a_run_succeeds_only_when_no_task_failed_and_it_reached_its_end(states, gate, why):
    from ml_pipeline.closing import failures

    assert failures(states, gate) == why


@pytest.mark.e2e
def test_a_training_job_stopped_from_outside_fails_the_run_naming_the_job_and_how_it_ended(airflow, slow_presets):  # noqa: F811 - the fixture
    sm, s3 = airflow["localaws"].client("sagemaker"), airflow["localaws"].client("s3")
    thread, out = in_background(
        lambda: run(
            airflow,
            {"mode": "train", **QUICK},
            "2026-09-07T00:00:00+00:00",
            "stopped",
            ML_PIPELINE_HYPERPARAMS_DIR=str(slow_presets),
        )
    )
    name = training_job_of(sm, "20260907", thread)
    # Stopped once its checkpoints reach S3 (each epoch writes one, synced every second).
    wait_until(
        lambda: s3.list_objects_v2(Bucket=airflow["bucket"], Prefix="checkpoints/").get("KeyCount"),
        timeout=120,
        poll=0.5,
        waiting_for=f"a checkpoint of {name} in S3",
    )
    sm.stop_training_job(TrainingJobName=name)
    thread.join(900)
    result, summary = out["value"]
    log = (airflow["home"] / "stopped.log").read_text()
    assert result["state"] == "failed"
    assert "KeyError" not in log
    assert f"training job {name} was Stopped (" in log
    assert summary["state"] == "failed" and "train.wait_for_training_job" in summary["failed_tasks"]
    assert summary["training_job"] == name
    [job] = summary["jobs"]["training"]
    assert job["name"] == name and job["status"] == "Stopped" and job["reason"]
    # The job was stopped mid-checkpointing more than once: only the checkpoint itself is in S3.
    listed = s3.list_objects_v2(Bucket=airflow["bucket"], Prefix=f"checkpoints/{summary['run']}/")
    assert [o["Key"].rsplit("/", 1)[1] for o in listed.get("Contents", [])] == ["checkpoint.pt"]


def failing_smoke_check(tmp_path, monkeypatch) -> dict:
    """A copy of the digits experiment whose smoke check asks for more than all samples right: its runs
    train, register and deploy, then fail their smoke test. The environment that runs it."""
    root = tmp_path / "experiments"
    copy = root / "digits"
    shutil.copytree(REPO_ROOT / "experiments" / "digits", copy, ignore=shutil.ignore_patterns("__pycache__"))
    checks = copy / "checks.py"
    checks.write_text(checks.read_text().replace("\nMIN_ACCURACY = 0.9\n", "\nMIN_ACCURACY = 1.01\n", 1))
    assert "MIN_ACCURACY = 1.01" in checks.read_text()
    monkeypatch.setenv("ML_PIPELINE_EXPERIMENTS_DIR", str(root))  # the DAG file run_dag parses
    return {"ML_PIPELINE_EXPERIMENTS_DIR": str(root)}


@pytest.mark.e2e
@pytest.mark.timeout(1500)  # three whole runs: the suite's longest test, started first under make test
def test_a_failed_run_undoes_its_deploy_on_a_kept_endpoint_and_rejects_its_model_version(
    airflow,  # noqa: F811 - the fixture
    tmp_path,
    monkeypatch,
):
    """keep_endpoint: the stable endpoint serves the last good run's model. A run that fails after it deployed
    there (its smoke test) puts it back on the endpoint config it served before, and one that created it
    deletes it: a rejected model never goes on serving. A run that fails after registering its model
    rejects that version, saying why."""
    sm = airflow["localaws"].client("sagemaker")
    endpoint = unique("kept")
    kept = {"mode": "train", **QUICK, "keep_endpoint": True, "endpoint_name": endpoint}
    good, _ = run(airflow, kept, "2026-10-05T00:00:00+00:00", "kept-good")
    failing = failing_smoke_check(tmp_path, monkeypatch)  # the runs after this one fail their smoke test
    assert good["state"] == "success", (airflow["home"] / "kept-good.log").read_text()[-5000:]
    served = sm.describe_endpoint(EndpointName=endpoint)["EndpointConfigName"]
    try:
        # Its own model package group: no production to beat, so the gate deploys it.
        bad, summary = run(airflow, kept, "2026-10-12T00:00:00+00:00", "kept-bad", **failing)
        assert bad["state"] == "failed" and summary["failed_tasks"] == {"smoke_test": "failed"}
        # The endpoint answered wrongly: a retry would ask the same model the same question.
        assert (airflow["home"] / "kept-bad.log").read_text().count("starting task_id=smoke_test ") == 1
        now = sm.describe_endpoint(EndpointName=endpoint)
        assert (now["EndpointStatus"], now["EndpointConfigName"]) == ("InService", served)
        assert (
            f"rolled endpoint {endpoint} back to endpoint config {served}, which it served before this failed run"
        ) in summary["teardown"]["removed"]
        assert summary["teardown"]["endpoint_kept"] is False
        assert sm.list_endpoint_configs(NameContains=summary["run"])["EndpointConfigs"] == []
        assert sm.list_models(NameContains=summary["run"])["Models"] == []
        assert sm.describe_model_package(ModelPackageName=summary["model_package"])["ModelApprovalStatus"] == "Rejected"
        airflow["localaws"].client("sagemaker-runtime").invoke_endpoint(
            EndpointName=endpoint, ContentType="text/csv", Body=",".join(["0"] * 64).encode()
        )
    finally:
        model = sm.describe_endpoint_config(EndpointConfigName=served)["ProductionVariants"][0]["ModelName"]
        sm.delete_endpoint(EndpointName=endpoint)
        sm.delete_endpoint_config(EndpointConfigName=served)
        sm.delete_model(ModelName=model)

    first_deploy = {**kept, "endpoint_name": unique("kept-new")}
    first, summary = run(airflow, first_deploy, "2026-10-19T00:00:00+00:00", "kept-first", **failing)
    assert first["state"] == "failed" and summary["failed_tasks"] == {"smoke_test": "failed"}
    assert f"deleted endpoint {first_deploy['endpoint_name']}" in summary["teardown"]["removed"]
    package = sm.describe_model_package(ModelPackageName=summary["model_package"])
    assert package["ModelApprovalStatus"] == "Rejected"
    assert "smoke_test" in package["ApprovalDescription"]
    assert f"rejected model package version {summary['model_package']}" in " ".join(summary["teardown"]["removed"])
    assert sm.list_endpoints(NameContains=first_deploy["endpoint_name"])["Endpoints"] == []
