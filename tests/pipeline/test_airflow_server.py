"""The pipeline under a real Airflow (scheduler, triggerer, api-server, as `make airflow` runs them:
scripts/airflow_standalone.py), driven through its REST API as the UI drives it: a run marked failed
stops its training job and stays failed, `airflow backfill create` trains each logical date on its own
partition, a write waits out another process's transaction on the shared SQLite file instead of
failing, and nothing listens beyond loopback."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from scripts.run_pipeline import airflow_env, bundles, dag_id
from tests.conftest import REPO_ROOT, free_port, unique
from tests.pipeline.notify_support import Inbox
from tests.support import migrate, stop_standalone, wait_until

DAG_ID = dag_id("digits")  # the digits example's DAG (experiments/digits)

REAPER_ID = "ml_pipeline_reaper"

pytestmark = [pytest.mark.timeout(1500), pytest.mark.e2e]  # a real Airflow running the pipeline


class AirflowServer:
    def __init__(self, env: dict, port: int, log_path, pid: int):
        self.env, self.base, self.log_path, self.pid = env, f"http://127.0.0.1:{port}", log_path, pid
        self.token = None

    def call(self, method: str, path: str, body: dict | None = None) -> dict:
        request = urllib.request.Request(
            self.base + path,
            method=method,
            data=json.dumps(body).encode() if body is not None else None,
            headers={
                "Content-Type": "application/json",
                **({"Authorization": f"Bearer {self.token}"} if self.token else {}),
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=90) as response:
                return json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as error:
            if error.code < 500:
                raise
            # The body says only "Internal Server Error": the cause is in the api-server's log.
            raise AssertionError(
                f"{method} {path}: HTTP {error.code}; the log's last error:\n{self.last_error()}"
            ) from error

    def last_error(self) -> str:
        """The log's last error with its traceback: the api-server logs one as "[error" and its frames."""
        log = self.log_path.read_text(errors="replace")
        start = max(log.rfind("[error"), log.rfind("Traceback (most recent call last)"))
        return log[start : start + 6000] if start >= 0 else f"(none in {self.log_path})"

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

    def page(self, path: str) -> tuple[int, str]:
        headers = {"Authorization": f"Bearer {self.token}"}
        try:
            with urllib.request.urlopen(urllib.request.Request(self.base + path, headers=headers), timeout=90) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode(errors="replace")

    def run_state(self, run_id: str) -> str:
        return self.call("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}")["state"]

    def wait(self, what, timeout: float = 600, every: float = 2):
        return wait_until(what, timeout, every, waiting_for=f"see {self.log_path}")


@pytest.fixture(scope="module")
def airflow_server(localaws_process, tmp_path_factory):
    home = tmp_path_factory.mktemp("airflow-standalone")
    # The default preset trains for minutes here, so a run can be caught while its job trains.
    hyperparams = home / "hyperparams"
    shutil.copytree(REPO_ROOT / "include" / "hyperparams" / "digits", hyperparams / "digits")
    slow = json.loads((hyperparams / "digits" / "default.json").read_text())
    slow["hyperparameters"].update({"epochs": 3000, "early_stopping_patience": 0})
    (hyperparams / "digits" / "default.json").write_text(json.dumps(slow))

    # Only the experiment the tests run: another's DAG would start a scheduled run of its own at once.
    experiments = home / "experiments"
    shutil.copytree(
        REPO_ROOT / "experiments" / "digits", experiments / "digits", ignore=shutil.ignore_patterns("__pycache__")
    )
    port = free_port()
    env = airflow_env(localaws_process.endpoint_url, home)
    env.update(
        {
            "ML_PIPELINE_EXPERIMENTS_DIR": str(experiments),
            "AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST": bundles(REPO_ROOT / "dags", experiments),
            "ML_PIPELINE_BUCKET": unique("standalone"),
            "ML_PIPELINE_HYPERPARAMS_DIR": str(hyperparams),
            "ML_PIPELINE_POLL_SECONDS": "2",
            # No runs on commit: the experiments' watchers would start a run of each at once (their folders,
            # seen first, are a change); tests/pipeline/test_runs_on_commit.py tests them.
            "ML_PIPELINE_GIT_POLL_SECONDS": "0",
            "AIRFLOW__API__PORT": str(port),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            # No scheduled runs: the DAG's latest interval (and the reaper's hour) would run beside the tests for
            # minutes, on the slowed default preset. Triggered runs and backfills still run.
            "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        }
    )
    inbox = Inbox(localaws_process, unique("standalone"))
    env["AIRFLOW_VAR_ML_PIPELINE_NOTIFY"] = json.dumps({"sns_topic_arn": inbox.topic_arn})
    migrate(env)
    log_path = home / "standalone.log"
    log = open(log_path, "w")
    process = subprocess.Popen(
        [sys.executable, str(REPO_ROOT / "scripts" / "airflow_standalone.py"), "--home", str(home)],
        cwd=home,
        env={**env, "LOCALAWS_ENDPOINT": localaws_process.endpoint_url},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    server = AirflowServer(env, port, log_path, process.pid)
    server.inbox = inbox
    try:
        server.wait(lambda: _answers(server.base + "/api/v2/monitor/health"), timeout=180)
        server.token = server.call("GET", "/auth/token").get("access_token")  # all-admins mode: no password
        server.wait(lambda: _dag_known(server), timeout=180)
        yield server
    finally:
        stop_standalone(process, grace=30)
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
    run = airflow_server.call(
        "POST",
        f"/api/v2/dags/{DAG_ID}/dagRuns",
        {"logical_date": "2026-07-06T00:00:00Z", "conf": {"mode": "train", "preset": "default"}},
    )
    run_id = run["dag_run_id"]
    from ml_pipeline.naming import run_key
    import pendulum

    key = run_key(run_id, pendulum.parse("2026-07-06T00:00:00Z"), "digits")

    def training():
        jobs = sm.list_training_jobs(NameContains=key)["TrainingJobSummaries"]
        return jobs if jobs and jobs[0]["SecondaryStatus"] == "Training" else None

    airflow_server.wait(training, timeout=600)
    # Marked failed while the sensor hands its wait to the triggerer, the sensor's own "deferred" update
    # lands after the mark and overwrites its "failed" (Airflow 3.3), and the run then waits for the job.
    airflow_server.wait(
        lambda: airflow_server.task_state(run_id, "train.wait_for_training_job") == "deferred", timeout=300
    )
    airflow_server.call("PATCH", f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}", {"state": "failed"})

    airflow_server.wait(lambda: airflow_server.task_state(run_id, "close_run") in ("success", "failed"), timeout=300)
    assert airflow_server.task_state(run_id, "close_run") == "success"
    jobs = airflow_server.wait(
        lambda: [
            j
            for j in sm.list_training_jobs(NameContains=key)["TrainingJobSummaries"]
            if j["TrainingJobStatus"] in ("Stopped", "Completed", "Failed")
        ],
        timeout=120,
    )
    assert [j["TrainingJobStatus"] for j in jobs] == ["Stopped"]
    # The run stays failed: the teardown's own success does not turn it green.
    state = airflow_server.wait(
        lambda: airflow_server.run_state(run_id) if airflow_server.run_state(run_id) in ("success", "failed") else None,
        timeout=300,
    )
    assert state == "failed", airflow_server.failed_tasks(run_id)
    assert airflow_server.task_state(run_id, "train.wait_for_training_job") == "failed"
    assert airflow_server.task_state(run_id, "outcome") == "failed"
    # The outcome task notified the failure under the scheduler too (a run marked failed gets no DAG callback).
    [message] = airflow_server.inbox.of_run(key)
    assert message["attributes"]["outcome"] == "failed", message
    assert message["subject"].startswith(f"digits train run {key}: FAILED"), message
    assert "Stopped" in message["message"] and "Why it stopped: " in message["message"], message["message"]
    # The summary names the job and how it ended.
    summary = airflow_server.call(
        "GET",
        f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/close_run/xcomEntries/return_value"
        "?deserialize=true&stringify=false",
    )["value"]
    assert summary["state"] == "failed" and summary["training_job"] == jobs[0]["TrainingJobName"]
    assert [job["status"] for job in summary["jobs"]["training"]] == ["Stopped"]
    # ... and is readable on the run's page: its "Run summary" tab.
    views = [
        view
        for plugin in airflow_server.call("GET", "/api/v2/plugins")["plugins"]
        for view in plugin["external_views"]
        if view["destination"] == "dag_run"
    ]
    assert [view["name"] for view in views] == ["Run summary"], views
    tab = views[0]["href"].replace("{DAG_ID}", DAG_ID).replace("{RUN_ID}", urllib.parse.quote(run_id, safe=""))
    status, page = airflow_server.page(tab)
    assert status == 200, page
    assert f"run {key} failed" in page and f"training job {jobs[0]['TrainingJobName']} Stopped" in page


def test_nothing_listens_beyond_loopback_and_workers_fit_the_machine(airflow_server):
    """`make airflow` on a 2-core machine had started 32 LocalExecutor workers, and the log servers
    `airflow standalone` starts listened on every address."""
    import psutil

    root = psutil.Process(airflow_server.pid)
    listening, workers = set(), 0
    for process in [root, *root.children(recursive=True)]:
        try:
            # A worker is the scheduler's child: a task process it forks has the worker's title for an instant.
            parent = process.parent()
            workers += (
                "LocalExecutor" in " ".join(process.cmdline())
                and parent is not None
                and "LocalExecutor" not in " ".join(parent.cmdline())
            )
            listening |= {
                (c.laddr.ip, c.laddr.port, process.pid)
                for c in process.net_connections(kind="inet")
                if c.status == psutil.CONN_LISTEN
            }
        except psutil.NoSuchProcess:  # a task process that ended meanwhile
            continue
    ports = {port for _, port, _ in listening}
    assert int(airflow_server.base.rsplit(":", 1)[1]) in ports, listening
    assert {ip for ip, _, _ in listening} <= {"127.0.0.1", "::1"}, f"listening beyond loopback: {listening}"
    assert workers == 2 * len(os.sched_getaffinity(0)), workers


#: Stands in for ``python -m airflow <component>`` (first on the components' PYTHONPATH): the "scheduler" starts
#: a "task" in a process group of its own, as the task supervisor does, and every component stops at SIGTERM
#: without waiting for what it started.
FAKE_AIRFLOW = r"""
import signal, subprocess, sys, time
if sys.argv[1] == "scheduler":
    task = subprocess.Popen([sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, "
                             "signal.SIG_IGN); time.sleep(600)"], start_new_session=True)
    print(f"task {task.pid}", flush=True)
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
time.sleep(600)
"""
STANDALONE = r"""
import os, sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from scripts.airflow_standalone import run_components
env = {**os.environ, "PYTHONPATH": sys.argv[2], "AIRFLOW__API__HOST": "127.0.0.1", "AIRFLOW__API__PORT": "0"}
sys.exit(run_components(env, Path(sys.argv[2])))
"""


def test_stopping_make_airflow_leaves_no_task_process_behind(tmp_path):
    """A task process is in a process group of its own: killing each component's group at shutdown missed
    it, and a poking sensor or a waiting close_run outlived `make airflow`."""
    import psutil

    (tmp_path / "airflow").mkdir()
    (tmp_path / "airflow" / "__init__.py").write_text("")
    (tmp_path / "airflow" / "__main__.py").write_text(FAKE_AIRFLOW)
    standalone = subprocess.Popen(
        [sys.executable, "-c", STANDALONE, str(REPO_ROOT), str(tmp_path)],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    task = None
    try:
        for line in standalone.stdout:
            if "| task " in line:
                task = psutil.Process(int(line.rsplit(" ", 1)[1]))
                break
        assert task is not None, "the fake scheduler started no task"
        standalone.send_signal(signal.SIGINT)  # Ctrl-C
        assert standalone.wait(90) == 0
        assert not task.is_running() or task.status() == psutil.STATUS_ZOMBIE, f"task process {task.pid} survived"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(standalone.pid, signal.SIGKILL)
        if task is not None:
            with contextlib.suppress(psutil.NoSuchProcess):
                task.kill()


#: Stands in for ``python -m airflow <component>``: the "scheduler" exits 1 (as Airflow's does on a database
#: error it does not retry) each time it starts, up to the count in argv's FAILS file, and then keeps running.
CRASHING_AIRFLOW = r"""
import os, signal, sys, time
from pathlib import Path
if sys.argv[1] == "scheduler":
    starts = Path(os.environ["FAKE_STARTS"])
    starts.write_text(starts.read_text() + "x" if starts.exists() else "x")
    if len(starts.read_text()) <= int(os.environ["FAKE_FAILS"]):
        sys.exit(1)
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
time.sleep(600)
"""


@pytest.mark.parametrize("fails, exit_code", [(2, 0), (99, 1)])
def test_make_airflow_starts_a_component_that_ended_again_and_gives_up_on_one_that_keeps_ending(
    tmp_path, fails, exit_code
):
    """A scheduler that hit a StaleDataError took the whole of `make airflow` down with it (and a run's
    backfill with it); docker-compose.yaml restarts it. One that keeps ending stops everything, exit 1."""
    from scripts.airflow_standalone import RESTARTS

    (tmp_path / "airflow").mkdir()
    (tmp_path / "airflow" / "__init__.py").write_text("")
    (tmp_path / "airflow" / "__main__.py").write_text(CRASHING_AIRFLOW)
    starts = tmp_path / "starts"
    standalone = subprocess.Popen(
        [sys.executable, "-c", STANDALONE, str(REPO_ROOT), str(tmp_path)],
        env={**os.environ, "FAKE_STARTS": str(starts), "FAKE_FAILS": str(fails)},
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        if exit_code == 0:
            wait_until(lambda: starts.exists() and len(starts.read_text()) == fails + 1, 60, 0.2, "the third start")
            time.sleep(2)  # the standalone's next look at its components
            assert standalone.poll() is None, "the standalone stopped although the scheduler runs again"
            standalone.send_signal(signal.SIGINT)  # Ctrl-C
        output, _ = standalone.communicate(timeout=90)
        assert standalone.returncode == exit_code, output
        ends = output.count("standalone | scheduler ended (exit 1): starting it again")
        if exit_code == 0:
            assert ends == fails and len(starts.read_text()) == fails + 1, output
        else:
            assert ends == RESTARTS and len(starts.read_text()) == RESTARTS + 1, output
            assert f"standalone | scheduler ended (exit 1) {RESTARTS + 1} times within " in output, output
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(standalone.pid, signal.SIGKILL)


def test_backfill_trains_each_logical_date_on_its_own_partition(airflow_server, localaws_process):
    # On SQLite a write that would deadlock with the scheduler's fails at once, whatever the busy timeout,
    # and the backfill it began stays "running" with no runs until the scheduler removes it (2 minutes
    # later): retry as a user would. Postgres (docker-compose) has neither.
    deadline = time.monotonic() + 300
    while True:
        completed = subprocess.run(
            [
                sys.executable,
                "-m",
                "airflow",
                "backfill",
                "create",
                "--dag-id",
                DAG_ID,
                "--from-date",
                "2026-02-02",
                "--to-date",
                "2026-02-16",
                "--dag-run-conf",
                json.dumps({"mode": "train", "preset": "quick"}),
            ],
            env=airflow_server.env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        output = completed.stdout + completed.stderr
        retry = "database is locked" in output or "Another backfill is running" in output
        if completed.returncode == 0 or not retry or time.monotonic() > deadline:
            break
        time.sleep(15)
    assert completed.returncode == 0, completed.stdout + completed.stderr

    def finished():
        runs = airflow_server.call("GET", f"/api/v2/dags/{DAG_ID}/dagRuns?run_type=backfill&limit=10")["dag_runs"]
        return runs if len(runs) == 2 and all(r["state"] in ("success", "failed") for r in runs) else None

    runs = airflow_server.wait(finished, timeout=900, every=5)
    failed = {r["dag_run_id"]: airflow_server.failed_tasks(r["dag_run_id"]) for r in runs if r["state"] != "success"}
    assert not failed, f"failed tasks: {failed}; see {airflow_server.log_path}"
    s3 = localaws_process.client("s3")
    bucket = airflow_server.env["ML_PIPELINE_BUCKET"]
    partitions = {
        p["Prefix"]
        for p in s3.list_objects_v2(Bucket=bucket, Prefix="datasets/digits/", Delimiter="/")["CommonPrefixes"]
    }
    assert {"datasets/digits/20260208/", "datasets/digits/20260215/"} <= partitions
    models = [
        p["Prefix"] for p in s3.list_objects_v2(Bucket=bucket, Prefix="models/digits/", Delimiter="/")["CommonPrefixes"]
    ]
    assert sum(prefix.startswith(("models/digits/20260208", "models/digits/20260215")) for prefix in models) == 2


def test_a_write_waits_out_another_process_transaction_instead_of_failing(airflow_server):
    """Standalone's processes share one SQLite file. A write transaction that outlasts sqlite3's default
    5 s wait made a trigger from the REST API fail with "database is locked" (HTTP 500) on a loaded
    machine; the local Airflow waits up to 60 s (scripts/airflow_sqlite.py)."""
    db = sqlite3.connect(
        Path(airflow_server.env["AIRFLOW_HOME"]) / "airflow.db",
        timeout=60,
        isolation_level=None,
        check_same_thread=False,
    )
    db.execute("BEGIN IMMEDIATE")  # holds the write lock, as a long scheduler transaction does
    release = threading.Timer(8, db.execute, ["COMMIT"])
    release.start()
    started = time.monotonic()
    try:
        dag = airflow_server.call("PATCH", f"/api/v2/dags/{REAPER_ID}", {"is_paused": True})
    finally:
        release.join()
        db.close()
    waited = time.monotonic() - started
    airflow_server.call("PATCH", f"/api/v2/dags/{REAPER_ID}", {"is_paused": False})
    assert dag["is_paused"] is True
    assert waited >= 7, f"the PATCH answered after {waited:.1f} s, while the write lock was held for 8 s"
