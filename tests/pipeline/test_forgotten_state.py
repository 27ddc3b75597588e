"""A localaws that forgot everything mid-run (as a restarted one without persistence does): teardown says
what is gone and the run still summarizes. Its own localaws and Airflow home, so its own module (another
worker's unit of work under make test)."""

from __future__ import annotations

import pytest

from scripts.run_pipeline import airflow_env, run_dag
from tests.conftest import TRAINING_CONTEXT, LocalAWSProcess, unique
from tests.pipeline.test_pipeline_e2e import QUICK
from tests.pipeline.test_runs_tell_the_truth import in_background, slow_presets, training_job_of  # noqa: F401

pytestmark = pytest.mark.timeout(1200)


@pytest.mark.e2e
def test_after_localaws_forgot_everything_teardown_says_what_is_gone_and_still_summarizes(
    tmp_path,
    slow_presets,  # noqa: F811 - the fixture
    dag_test_home,
):
    from localaws.client import register_image
    from ml_pipeline.images import context_hash
    from tests.fixtures.docker_engine import ecr_uri

    server = LocalAWSProcess(tmp_path / "first", "process")
    (tmp_path / "first").mkdir()
    server.start()
    register_image(server.endpoint_url, ecr_uri("digits-training", context_hash(TRAINING_CONTEXT)), TRAINING_CONTEXT)
    # The same address, nothing of the first one's state: what a restart without persistence gives.
    restarted = LocalAWSProcess(tmp_path / "second", "process")
    (tmp_path / "second").mkdir()
    restarted.port, restarted.endpoint_url = server.port, server.endpoint_url
    env = airflow_env(server.endpoint_url, dag_test_home)  # its connection: this test's own localaws
    env.update(
        {
            "ML_PIPELINE_BUCKET": unique("forgotten"),
            "ML_PIPELINE_POLL_SECONDS": "1",
            "ML_PIPELINE_HYPERPARAMS_DIR": str(slow_presets),
        }
    )
    log_path = tmp_path / "forgotten.log"
    conf = {"mode": "train", **QUICK, "model_package_group": unique("digits")}
    try:
        thread, out = in_background(lambda: run_dag(env, conf, "2026-09-21T00:00:00+00:00", log_path, "digits"))
        name = training_job_of(server.client("sagemaker"), "20260921", thread)
        server.stop()
        restarted.start()
        thread.join(900)
    finally:
        server.stop()
        if restarted.process is not None:
            restarted.stop()
    result, log = out["value"], log_path.read_text()
    assert result["state"] == "failed"
    summary = result["summary"]  # close_run's return value: it ran to the end
    assert summary is not None, log[-5000:]
    assert "NoSuchBucket" not in log
    assert f"training job {name}" in summary["teardown"]["already_gone"]
    assert f"teardown: training job {name}: already gone" in log
    assert summary["summary"].startswith(f"not written to S3: bucket {env['ML_PIPELINE_BUCKET']} no longer exists")
    assert summary["jobs"]["training"] == [{"name": name, "status": "gone"}]
    assert f'"run": "{summary["run"]}"' in log  # the whole summary is in the task's log
