"""Runs on commit, in a real Airflow (scheduler, dag-processor, triggerer, api-server, as `make airflow`
runs them): a git repository holds an experiment folder and a DAG scheduled by ``gitops.schedule_for``
whose one task records ``gitops.revision``. A commit that changes the folder starts a run that records
it, one that changes another file starts none, a webhook's asset event starts one too, and after
Airflow restarts an unchanged folder starts nothing."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from scripts.airflow_standalone import airflow_environment
from tests.support import migrate, stop_standalone
from tests.conftest import REPO_ROOT, free_port
from tests.pipeline.test_airflow_server import AirflowServer, _answers

pytestmark = [pytest.mark.timeout(900), pytest.mark.e2e]  # a real Airflow starting runs

DAG_ID = "runs_on_commit_toy"
POLL_SECONDS = 1
#: Seconds a commit may take to start its run: the watcher's poll, then the scheduler's loop.
RUN_STARTS_WITHIN = 120
#: How long nothing must start after a commit elsewhere: five of the watcher's polls (POLL_SECONDS), which
#: would each have seen it. A run it started later still shows: the next run's count is exact (next_run).
QUIET_SECONDS = 5 * POLL_SECONDS

DAG_FILE = '''
"""The runs-on-commit test's DAG: scheduled by gitops.schedule_for, it records the revision it ran from."""
import os
from datetime import timedelta

import pendulum
from airflow.sdk import DAG, task

from ml_pipeline.gitops import describe, head_commit, revision, schedule_for

FOLDER = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "experiments", "toy")
# A yearly schedule whose next time is not during the test: the asset-or-time shape, runs by commit only.
EXPERIMENT = {"name": "toy", "folder": FOLDER, "file_hash": None, "schedule": "0 0 1 1 *"}

with DAG("runs_on_commit_toy", schedule=schedule_for(EXPERIMENT), doc_md=describe(EXPERIMENT),
         start_date=pendulum.datetime(2026, 1, 2, tz="UTC"), catchup=False):

    # Retried: the first run can be queued while the api-server, which its task reports to, still starts.
    @task(retries=3, retry_delay=timedelta(seconds=3))
    def record(**context):
        return revision(context) or {"commit": head_commit(FOLDER), "file_hash": None, "source": "working tree"}

    record()
'''
STANDALONE = r"""
import os, sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from scripts.airflow_standalone import run_components
sys.exit(run_components(dict(os.environ), Path(sys.argv[2])))
"""


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


def commit(repo: Path, files: dict[str, str], message: str) -> str:
    for name, text in files.items():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text(text)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)
    return git(repo, "rev-parse", "HEAD")


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:12]


class Deployment:
    """The repository the DAGs are deployed from, and the Airflow that runs them (started and stopped
    on its own home, as a restart keeps the database)."""

    def __init__(self, root: Path):
        self.repo, self.home = root / "repo", root / "airflow-home"
        self.process = self.log = self.server = None
        self.starts = 0

    def start(self) -> AirflowServer:
        port = free_port()
        env = airflow_environment(self.home)
        env.update(
            {
                "AIRFLOW__API__PORT": str(port),
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
                "AIRFLOW__CORE__DAGS_FOLDER": str(self.repo / "dags"),
                # This deployment's DAGs only: not the project's own bundles (its dags/ and experiments/).
                "AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST": json.dumps(
                    [
                        {
                            "name": "dags-folder",
                            "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle",
                            "kwargs": {"path": str(self.repo / "dags")},
                        }
                    ]
                ),
                "AIRFLOW__CORE__PARALLELISM": "2",
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
                "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
                "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
                "ML_PIPELINE_GIT_POLL_SECONDS": str(POLL_SECONDS),
            }
        )
        env.pop("ML_PIPELINE_GIT_REPO", None)  # the folder's own repository
        migrate(env)
        self.starts += 1
        log_path = self.home / f"standalone-{self.starts}.log"
        self.log = open(log_path, "w")
        self.process = subprocess.Popen(
            [sys.executable, "-c", STANDALONE, str(REPO_ROOT), str(self.home)],
            cwd=self.home,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.server = AirflowServer(env, port, log_path, self.process.pid)
        self.server.wait(lambda: _answers(self.server.base + "/api/v2/monitor/health"), timeout=180)
        self.server.token = self.server.call("GET", "/auth/token").get("access_token")  # all-admins mode
        self.server.wait(lambda: _known(self.server), timeout=180)
        return self.server

    def stop(self) -> None:
        if self.process is None:
            return
        stop_standalone(self.process, grace=90)
        self.log.close()
        self.process = None

    def runs(self) -> list[dict]:
        """The runs asset events started, oldest first."""
        listed = self.server.call("GET", f"/api/v2/dags/{DAG_ID}/dagRuns?run_type=asset_triggered&limit=100")
        return sorted(listed["dag_runs"], key=lambda run: run["run_after"])

    def recorded(self, run: dict) -> dict:
        """What the run's task recorded: ``gitops.revision`` (or the fallback), once the run has ended."""
        assert run["state"] == "success", f"{run}; see {self.server.log_path}"
        return self.server.call(
            "GET",
            f"/api/v2/dags/{DAG_ID}/dagRuns/{run['dag_run_id']}/taskInstances/record/xcomEntries/"
            "return_value?deserialize=true&stringify=false",
        )["value"]

    def next_run(self, after: int, timeout: float = RUN_STARTS_WITHIN) -> dict:
        """The run after the first ``after`` ones, once it ended; no other run beside it."""

        def ended():
            runs = self.runs()
            return runs if len(runs) > after and runs[after]["state"] in ("success", "failed") else None

        runs = self.server.wait(ended, timeout=timeout, every=1)
        assert len(runs) == after + 1, [(r["dag_run_id"], r["state"]) for r in runs]
        return runs[after]


def _known(server: AirflowServer) -> bool:
    try:
        return server.call("GET", f"/api/v2/dags/{DAG_ID}")["dag_id"] == DAG_ID
    except OSError:
        return False


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    made = Deployment(tmp_path_factory.mktemp("runs-on-commit"))
    git(made.repo.parent, "init", "-q", "-b", "main", str(made.repo))
    made.first = commit(
        made.repo,
        {
            "experiments/toy/experiment.yaml": "hyperparameters: {n: 1}\n",
            "experiments/toy/train.py": "print('train')\n",
            "README.md": "toy\n",
            "dags/runs_on_commit.py": DAG_FILE,
        },
        "a new experiment",
    )
    made.start()
    try:
        yield made
    finally:
        made.stop()


def test_a_commit_to_the_experiment_starts_a_run_that_records_it_and_one_elsewhere_starts_none(deployment):
    # The experiment is new to Airflow: its watcher's first look is a change.
    first = deployment.next_run(0)
    assert deployment.recorded(first) == {
        "commit": deployment.first,
        "file_hash": digest("hyperparameters: {n: 1}\n"),
        "source": "watcher",
    }

    changed = "hyperparameters: {n: 2}\n"
    started = time.monotonic()
    second_commit = commit(deployment.repo, {"experiments/toy/experiment.yaml": changed}, "n: 2")
    second = deployment.next_run(1)
    took = time.monotonic() - started
    assert deployment.recorded(second) == {"commit": second_commit, "file_hash": digest(changed), "source": "watcher"}

    elsewhere = commit(deployment.repo, {"README.md": "toy, documented\n"}, "docs only")
    time.sleep(QUIET_SECONDS)
    assert len(deployment.runs()) == 2, deployment.runs()
    # The watcher was alive all along: the next change in the folder starts the next run, and the commit
    # elsewhere never started one.
    code = commit(deployment.repo, {"experiments/toy/train.py": "print('train better')\n"}, "train better")
    third = deployment.next_run(2)
    assert deployment.recorded(third) == {"commit": code, "file_hash": digest(changed), "source": "watcher"}
    assert elsewhere not in [deployment.recorded(run)["commit"] for run in deployment.runs()]
    print(f"a commit started its run, which ended, {took:.0f} s after it")


def readme_webhook() -> str:
    """README's webhook call ("Runs on commit"), as it is written there."""
    blocks = re.findall(r"```bash\n(.*?)```", (REPO_ROOT / "README.md").read_text(), re.S)
    [block] = [block for block in blocks if "/api/v2/assets/events" in block]
    return block


def test_a_webhook_asset_event_starts_a_run_that_records_its_commit(deployment):
    before = len(deployment.runs())
    head = git(deployment.repo, "rev-parse", "HEAD")
    # README's curl lines, literally (the all-admins Airflow takes any password).
    posted = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", readme_webhook()],
        check=True,
        timeout=60,
        capture_output=True,
        text=True,
        env={
            **os.environ,
            "AIRFLOW": deployment.server.base,
            "AIRFLOW_PASSWORD": "any",
            "EXPERIMENT": "toy",
            "COMMIT": head,
        },
    )
    assert json.loads(posted.stdout)["extra"] == {"commit": head, "from_rest_api": True}  # the event it created
    run = deployment.next_run(before)
    assert deployment.recorded(run) == {"commit": head, "file_hash": None, "source": "webhook"}


def test_a_run_started_by_hand_records_the_working_trees_head(deployment):
    server = deployment.server
    run = server.call("POST", f"/api/v2/dags/{DAG_ID}/dagRuns", {"logical_date": None})
    ended = server.wait(
        lambda: (
            (r := server.call("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{run['dag_run_id']}"))["state"]
            in ("success", "failed")
            and r
        ),
        timeout=RUN_STARTS_WITHIN,
        every=1,
    )
    assert deployment.recorded(ended) == {
        "commit": git(deployment.repo, "rev-parse", "HEAD"),
        "file_hash": None,
        "source": "working tree",
    }


def test_after_a_restart_an_unchanged_folder_starts_nothing(deployment):
    """What the watcher saw last is in Airflow's database (the asset's state store): a restarted
    triggerer starts from it."""
    head_tree = git(deployment.repo, "rev-parse", "HEAD:experiments/toy")
    # The watcher has seen HEAD (its last run recorded a commit whose folder is HEAD's).
    deployment.server.wait(
        lambda: [
            run
            for run in deployment.runs()
            if run["state"] == "success"
            and git(deployment.repo, "rev-parse", deployment.recorded(run)["commit"] + ":experiments/toy") == head_tree
        ],
        timeout=60,
    )
    before = len(deployment.runs())
    deployment.stop()
    deployment.start()
    log = deployment.server.log_path
    deployment.server.wait(lambda: f"last seen: tree {head_tree}" in log.read_text(errors="replace"), timeout=180)
    time.sleep(QUIET_SECONDS)
    assert len(deployment.runs()) == before, deployment.runs()
    changed = commit(deployment.repo, {"experiments/toy/experiment.yaml": "hyperparameters: {n: 3}\n"}, "n: 3")
    run = deployment.next_run(before)
    assert deployment.recorded(run)["commit"] == changed
