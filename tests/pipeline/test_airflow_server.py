"""The pipeline under a real Airflow (scheduler, triggerer, api-server: `airflow standalone`), driven
through its REST API as the UI drives it: a run marked failed stops its training job, and
`airflow backfill create` trains each logical date on its own partition."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from scripts.run_pipeline import DAG_ID, airflow_env, migrate
from tests.conftest import REPO_ROOT, free_port, unique

pytestmark = pytest.mark.timeout(1500)


class AirflowServer:
    def __init__(self, env: dict, port: int, log_path):
        self.env, self.base, self.log_path = env, f"http://127.0.0.1:{port}", log_path
        self.token = None

    def call(self, method: str, path: str, body: dict | None = None) -> dict:
        request = urllib.request.Request(
            self.base + path, method=method, data=json.dumps(body).encode() if body is not None else None,
            headers={"Content-Type": "application/json", **({"Authorization": f"Bearer {self.token}"} if self.token else {})},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read() or b"{}")

    def task_state(self, run_id: str, task_id: str) -> str | None:
        return self.call("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/{task_id}").get("state")

    def failed_tasks(self, run_id: str) -> dict[str, str]:
        """Each failed task of a run with the end of its last try's log (what CI shows of a failure)."""
        listed = self.call("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances?state=failed")
        failed = {}
        for ti in listed["task_instances"]:
            path = f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/{ti['task_id']}/logs/{ti['try_number']}"
            try:
                content = self.call("GET", path + "?full_content=true").get("content", [])
                failed[ti["task_id"]] = json.dumps(content)[-2000:]
            except (OSError, urllib.error.URLError) as error:
                failed[ti["task_id"]] = f"(no log: {error})"
        return failed

    def wait(self, what, timeout: float = 600, every: float = 2):
        deadline = time.monotonic() + timeout
        while True:
            value = what()
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"gave up waiting; see {self.log_path}")
            time.sleep(every)


@pytest.fixture(scope="module")
def airflow_server(localaws_process, tmp_path_factory):
    home = tmp_path_factory.mktemp("airflow-standalone")
    # The default preset trains for minutes here, so a run can be caught while its job trains.
    hyperparams = home / "hyperparams"
    shutil.copytree(REPO_ROOT / "include" / "hyperparams", hyperparams)
    slow = json.loads((hyperparams / "default.json").read_text())
    slow["hyperparameters"].update({"epochs": 3000, "early_stopping_patience": 0})
    (hyperparams / "default.json").write_text(json.dumps(slow))

    port = free_port()
    env = airflow_env(localaws_process.endpoint_url, home)
    env.update({
        "ML_PIPELINE_BUCKET": unique("standalone"),
        "ML_PIPELINE_HYPERPARAMS_DIR": str(hyperparams),
        "ML_PIPELINE_POLL_SECONDS": "2",
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
    })
    migrate(env)
    log_path = home / "standalone.log"
    log = open(log_path, "w")
    process = subprocess.Popen([sys.executable, "-m", "airflow", "standalone"], cwd=home, env=env,
                               stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    server = AirflowServer(env, port, log_path)
    try:
        server.wait(lambda: _answers(server.base + "/api/v2/monitor/health"), timeout=180)
        server.token = server.call("GET", "/auth/token").get("access_token")  # all-admins mode: no password
        server.wait(lambda: _dag_known(server), timeout=180)
        yield server
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
        log.close()


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5):
            return True
    except (OSError, urllib.error.URLError):
        return False


def _dag_known(server: AirflowServer) -> bool:
    try:
        return server.call("GET", f"/api/v2/dags/{DAG_ID}")["dag_id"] == DAG_ID
    except (OSError, urllib.error.URLError):
        return False


def test_a_run_marked_failed_while_training_leaves_its_job_stopped(airflow_server, localaws_process):
    sm = localaws_process.client("sagemaker")
    run = airflow_server.call("POST", f"/api/v2/dags/{DAG_ID}/dagRuns", {
        "logical_date": "2026-07-06T00:00:00Z", "conf": {"mode": "train", "preset": "default"}})
    run_id = run["dag_run_id"]
    from ml_pipeline.naming import run_key
    import pendulum

    key = run_key(run_id, pendulum.parse("2026-07-06T00:00:00Z"))

    def training():
        jobs = sm.list_training_jobs(NameContains=key)["TrainingJobSummaries"]
        return jobs if jobs and jobs[0]["SecondaryStatus"] == "Training" else None

    airflow_server.wait(training, timeout=600)
    airflow_server.call("PATCH", f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}", {"state": "failed"})

    airflow_server.wait(lambda: airflow_server.task_state(run_id, "close_run") in ("success", "failed"), timeout=300)
    assert airflow_server.task_state(run_id, "close_run") == "success"
    jobs = airflow_server.wait(
        lambda: [j for j in sm.list_training_jobs(NameContains=key)["TrainingJobSummaries"]
                 if j["TrainingJobStatus"] in ("Stopped", "Completed", "Failed")], timeout=120)
    assert [j["TrainingJobStatus"] for j in jobs] == ["Stopped"]


def test_backfill_trains_each_logical_date_on_its_own_partition(airflow_server, localaws_process):
    for _ in range(5):  # standalone's SQLite is busy while the scheduler writes: try again, as a user would
        completed = subprocess.run(
            [sys.executable, "-m", "airflow", "backfill", "create", "--dag-id", DAG_ID,
             "--from-date", "2026-02-02", "--to-date", "2026-02-16",
             "--dag-run-conf", json.dumps({"mode": "train", "preset": "quick"})],
            env=airflow_server.env, capture_output=True, text=True, timeout=300,
        )
        if "database is locked" not in completed.stdout + completed.stderr:
            break
        time.sleep(3)
    assert completed.returncode == 0, completed.stdout + completed.stderr

    def finished():
        runs = airflow_server.call("GET", f"/api/v2/dags/{DAG_ID}/dagRuns?run_type=backfill&limit=10")["dag_runs"]
        return runs if len(runs) == 2 and all(r["state"] in ("success", "failed") for r in runs) else None

    runs = airflow_server.wait(finished, timeout=900, every=5)
    failed = {r["dag_run_id"]: airflow_server.failed_tasks(r["dag_run_id"]) for r in runs if r["state"] != "success"}
    assert not failed, f"failed tasks: {failed}; see {airflow_server.log_path}"
    s3 = localaws_process.client("s3")
    bucket = airflow_server.env["ML_PIPELINE_BUCKET"]
    partitions = {p["Prefix"] for p in s3.list_objects_v2(Bucket=bucket, Prefix="datasets/digits/",
                                                          Delimiter="/")["CommonPrefixes"]}
    assert {"datasets/digits/20260208/", "datasets/digits/20260215/"} <= partitions
    models = [p["Prefix"] for p in s3.list_objects_v2(Bucket=bucket, Prefix="models/digits/",
                                                      Delimiter="/")["CommonPrefixes"]]
    assert sum(prefix.startswith(("models/digits/20260208", "models/digits/20260215")) for prefix in models) == 2
