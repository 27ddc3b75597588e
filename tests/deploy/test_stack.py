"""The production stack for real: docker-compose.yaml brought up by scripts/stack.py (make stack) from the
images built here, driven through Airflow's REST API as a team drives it.

One stack for the module, in the order of the tests: an experiment run on CeleryExecutor (its tasks in a
worker container, its sensors deferred to the triggerer, its training job and endpoint on the localaws
service's docker runner, its run in the MLflow service); a second worker container taking tasks of one run;
a worker SIGKILLed while it holds the task that started the training job, the run completing on the other
worker with the job re-attached; and the stack stopped with its volumes kept and started again, with its
runs, task history, connections, MLflow runs and localaws's state all still there.

Marker ``stack``: not part of `make test` (pytest.ini deselects it); `make test-stack` runs it. It uses
its own compose project and .env, and removes both (volumes too) at the end. Ports 8080, 5050 and 4566 on
127.0.0.1 must be free (no `make stack`, `make airflow` or `make run` at the same time).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from scripts.stack import ensure_env, read_env
from tests.conftest import REPO_ROOT
from tests.support import wait_until

pytestmark = [pytest.mark.stack, pytest.mark.timeout(3600)]

STACK = [sys.executable, str(REPO_ROOT / "scripts" / "stack.py")]
PROJECT = "ml-pipeline-stack-test"
DAG_ID = "train_diabetes"  # experiments/diabetes: script mode, scikit-learn, an autoscaled endpoint
API = "http://127.0.0.1:8080"
MLFLOW = "http://127.0.0.1:5050"
LOCALAWS = "http://127.0.0.1:4566"
#: A worker whose task stops heartbeating counts as dead after this (Airflow's default is 300 s).
HEARTBEAT_TIMEOUT = 60
RUN_TIMEOUT = 900


# ----------------------------------------------------------------------------------------- the stack
class Stack:
    def __init__(self, env: dict, log: Path):
        self.env, self.log = env, log
        self.token: str | None = None
        self.took: dict[str, float] = {}

    def run(self, *args: str, timeout: float = 3000) -> str:
        with self.log.open("a") as out:
            out.write(f"\n$ stack.py {' '.join(args)}\n")
            out.flush()
            result = subprocess.run(
                [*STACK, *args], env=self.env, cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT, timeout=timeout
            )
        text = self.log.read_text(errors="replace")
        assert result.returncode == 0, f"stack.py {' '.join(args)} failed:\n{text[-8000:]}"
        return text

    def up(self, *args: str) -> dict[str, float]:
        before = len(self.log.read_text(errors="replace")) if self.log.exists() else 0
        text = self.run("up", *args)[before:]
        took = {m[1]: float(m[2]) for m in re.finditer(r"stack: (\S+): (?:healthy|done) after (\d+)s", text)}
        self.token = None
        return took

    def compose_ps(self, service: str) -> list[str]:
        command = ["docker", "ps", "-q", "--filter", f"label=com.docker.compose.project={PROJECT}"]
        command += ["--filter", f"label=com.docker.compose.service={service}"]
        return subprocess.run(command, capture_output=True, text=True, check=True).stdout.split()

    # -- Airflow's REST API --------------------------------------------------------------------------
    def login(self) -> None:
        secrets = read_env(Path(self.env["ML_PIPELINE_STACK_ENV_FILE"]))
        body = {"username": secrets["_AIRFLOW_WWW_USER_USERNAME"], "password": secrets["_AIRFLOW_WWW_USER_PASSWORD"]}
        self.token = self.call("POST", "/auth/token", body, auth=False)["access_token"]

    def call(self, method: str, path: str, body: dict | None = None, auth: bool = True):
        if auth and self.token is None:
            self.login()
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if auth:
            headers["Authorization"] = f"Bearer {self.token}"
        request = urllib.request.Request(
            API + path, method=method, data=None if body is None else json.dumps(body).encode(), headers=headers
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            raw = response.read()
        return json.loads(raw or b"{}")

    def trigger(self, run_id: str, logical_date: str, **conf) -> str:
        body = {"dag_run_id": run_id, "logical_date": logical_date, "conf": {"mode": "train", **conf}}
        return self.call("POST", f"/api/v2/dags/{DAG_ID}/dagRuns", body)["dag_run_id"]

    def run_state(self, run_id: str) -> str:
        return self.call("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}")["state"]

    def wait_for_run(self, run_id: str, timeout: float = RUN_TIMEOUT) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = self.run_state(run_id)
            if state in ("success", "failed"):
                return state
            time.sleep(3)
        raise AssertionError(f"{run_id} not finished within {timeout:.0f}s: {self.task_states(run_id)}")

    def task_instances(self, run_id: str) -> list[dict]:
        return self.call("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances?limit=200")["task_instances"]

    def task_states(self, run_id: str) -> dict[str, str]:
        return {ti["task_id"]: ti["state"] for ti in self.task_instances(run_id)}

    def tries(self, run_id: str, task_id: str) -> list[dict]:
        path = f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/{task_id}/tries"
        return self.call("GET", path)["task_instances"]

    def task_log(self, run_id: str, task_id: str, try_number: int) -> str:
        """A try's log as text: the API's structured lines, each its event (and error detail)."""
        path = f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/{task_id}/logs/{try_number}?full_content=true"
        content = self.call("GET", path).get("content") or []
        if isinstance(content, str):
            return content
        return "\n".join(
            " ".join(str(line.get(key, "")) for key in ("event", "error_detail") if line.get(key))
            if isinstance(line, dict)
            else str(line)
            for line in content
        )

    def xcom(self, run_id: str, task_id: str):
        path = f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/return_value"
        return self.call("GET", path)["value"]

    def failures(self, run_id: str) -> str:
        lines = []
        for ti in self.task_instances(run_id):
            if ti["state"] in ("failed", "upstream_failed", "up_for_retry"):
                lines.append(f"--- {ti['task_id']} ({ti['state']})")
                if ti["state"] != "upstream_failed":
                    lines.append(self.task_log(run_id, ti["task_id"], max(ti["try_number"], 1))[-3000:])
        return "\n".join(lines)


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status < 500
    except urllib.error.HTTPError as error:
        return error.code < 500
    except OSError:
        return False


def _container(name_or_id: str) -> dict:
    out = subprocess.run(["docker", "inspect", name_or_id], capture_output=True, text=True, check=True).stdout
    return json.loads(out)[0]


def _sagemaker():
    import boto3

    return boto3.client(
        "sagemaker",
        endpoint_url=LOCALAWS,
        region_name="us-east-1",
        aws_access_key_id="localaws",
        aws_secret_access_key="localaws",
    )


def _mlflow_runs(key: str) -> list[dict]:
    def post(path: str, body: dict) -> dict:
        request = urllib.request.Request(
            MLFLOW + path, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())

    with urllib.request.urlopen(f"{MLFLOW}/api/2.0/mlflow/experiments/get-by-name?experiment_name=diabetes") as r:
        experiment = json.loads(r.read())["experiment"]["experiment_id"]
    found = post(
        "/api/2.0/mlflow/runs/search",
        {"experiment_ids": [experiment], "filter": f"tags.`ml_pipeline.run` = '{key}'", "max_results": 10},
    )
    return found.get("runs", [])


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    folder = tmp_path_factory.mktemp("stack")
    env = {
        **os.environ,
        "COMPOSE_PROJECT_NAME": PROJECT,
        "ML_PIPELINE_STACK_ENV_FILE": str(folder / "stack.env"),
        "AIRFLOW_TASK_HEARTBEAT_TIMEOUT": str(HEARTBEAT_TIMEOUT),
        # Only the test's own runs: unpausing the DAG would otherwise start its latest scheduled interval.
        "AIRFLOW_USE_JOB_SCHEDULE": "false",
    }
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AIRFLOW_CONN_AWS_DEFAULT"):
        env.pop(name, None)  # the stack's identity is localaws's, whatever this shell holds
    stack = Stack(env, folder / "stack.log")
    # What an interrupted run of this test left (its volumes hold another run's passwords) goes first.
    ensure_env(Path(env["ML_PIPELINE_STACK_ENV_FILE"]))
    subprocess.run([*STACK, "down", "--volumes"], env=env, cwd=REPO_ROOT, capture_output=True, timeout=600)
    started = time.monotonic()
    stack.took = stack.up()
    stack.took["up (build included)"] = time.monotonic() - started
    print(f"\nstack up: {json.dumps({k: round(v) for k, v in stack.took.items()})}")
    yield stack
    subprocess.run([*STACK, "down", "--volumes"], env=env, cwd=REPO_ROOT, capture_output=True, timeout=600)


@pytest.fixture(scope="module")
def dag(stack):
    wait_until(lambda: _dag_parsed(stack), timeout=300, poll=3, waiting_for=f"{DAG_ID} parsed by the dag-processor")
    stack.call("PATCH", f"/api/v2/dags/{DAG_ID}", {"is_paused": False})
    return DAG_ID


def _dag_parsed(stack: Stack) -> bool:
    try:
        return stack.call("GET", f"/api/v2/dags/{DAG_ID}")["dag_id"] == DAG_ID
    except urllib.error.HTTPError as error:
        if error.code == 404:
            return False
        raise


def _workers(stack: Stack) -> dict[str, str]:
    """Every running worker container's hostname (what a task instance's hostname says) -> its id."""
    ids = stack.compose_ps("airflow-worker")
    ids += subprocess.run(
        ["docker", "ps", "-q", "--filter", f"label=ml-pipeline.extra-worker={PROJECT}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return {_container(cid)["Config"]["Hostname"]: cid for cid in ids}


def _ran_on(stack: Stack, run_id: str) -> dict[str, str]:
    """Each task that ran (not skipped) -> the host of its last try."""
    return {
        ti["task_id"]: ti["hostname"]
        for ti in stack.task_instances(run_id)
        if ti["state"] == "success" and ti.get("hostname")
    }


RUNS: dict[str, str] = {}  # name -> run id, for the restart test


# ------------------------------------------------------------------------------------------- tests
def test_an_experiment_runs_on_celery_workers_with_deferred_sensors_localaws_and_mlflow(stack, dag):
    print(f"services healthy after (s): {json.dumps({k: round(v) for k, v in stack.took.items()})}")
    stack.call(
        "POST",
        "/api/v2/connections",
        {"connection_id": "stack_probe", "conn_type": "http", "host": "example.invalid", "description": "kept?"},
    )
    started = time.time()
    run_id = RUNS["first"] = stack.trigger("stack-first", "2026-07-01T00:00:00Z")
    state = stack.wait_for_run(run_id)
    assert state == "success", stack.failures(run_id)

    # Every task ran in a worker container of the stack.
    workers = _workers(stack)
    ran_on = _ran_on(stack, run_id)
    assert ran_on and set(ran_on.values()) <= set(workers), (ran_on, workers)

    # The training sensor deferred: the worker let it go, the triggerer fired its event.
    sensor = "train.wait_for_training_job"
    log = stack.task_log(run_id, sensor, stack.tries(run_id, sensor)[-1]["try_number"])
    assert "Pausing task as DEFERRED" in log and "Trigger fired event" in log, log[-3000:]
    triggerer = stack.compose_ps("airflow-triggerer")[0]
    triggerer_log = subprocess.run(["docker", "logs", triggerer], capture_output=True, text=True).stdout
    assert "trigger" in triggerer_log.lower(), triggerer_log[-2000:]

    # The training job and the endpoint were localaws's, run as containers through the mounted socket (its
    # docker runner: a training container and at least one serving container started in the run's time),
    # and the endpoint answered the smoke test through localaws from inside its container.
    job = stack.xcom(run_id, "train.start_training_job")["Training"]["TrainingJobName"]
    described = _sagemaker().describe_training_job(TrainingJobName=job)
    assert described["TrainingJobStatus"] == "Completed"
    states = stack.task_states(run_id)
    assert states["deploy.wait_for_endpoint"] == "success" and states["smoke_test"] == "success", states
    events = subprocess.run(
        ["docker", "events", "--since", str(int(started)), "--until", str(int(time.time()))]
        + ["--filter", "type=container", "--filter", "event=start", "--filter", "label=localaws=1"]
        + ["--format", "{{.Actor.Attributes.name}}"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.split()
    assert any(job in name for name in events), events
    assert any(job not in name for name in events), f"no serving container was started: {events}"

    # The run is in the MLflow service.
    key = re.search(r"-train-(\d{8}-[0-9a-f]{6})", job)[1]
    runs = _mlflow_runs(key)
    assert runs and runs[0]["info"]["status"] == "FINISHED", runs


def test_a_second_worker_takes_tasks_of_one_run(stack, dag):
    before = set(_workers(stack))
    stack.run("worker", "--name", f"{PROJECT}-worker-b")
    wait_until(lambda: len(_workers(stack)) == len(before) + 1, timeout=60, poll=1, waiting_for="the second worker")
    added = _container(f"{PROJECT}-worker-b")
    wait_until(
        lambda: (_container(f"{PROJECT}-worker-b")["State"].get("Health") or {}).get("Status") == "healthy",
        timeout=300,
        poll=3,
        waiting_for="the second worker healthy",
    )
    run_id = RUNS["second"] = stack.trigger("stack-second", "2026-07-02T00:00:00Z")
    assert stack.wait_for_run(run_id) == "success", stack.failures(run_id)
    hosts = set(_ran_on(stack, run_id).values())
    assert added["Config"]["Hostname"] in hosts and hosts - {added["Config"]["Hostname"]}, hosts


#: A worker can finish the task between the job's creation and the next freeze (a window of a few hundred
#: milliseconds on a quiet machine): the run then ends without a kill, and the next run tries again.
KILL_ATTEMPTS = 3
#: How long a frozen worker's last request is given to land before its task's state is read.
SETTLE_SECONDS = 3


def _freeze_after_the_job_is_created(stack: Stack, client, run_id: str, task: str, jobs) -> object | None:
    """The worker running ``task``, frozen with the run's training job created and the task still running;
    None when the task ended first (the race the caller retries)."""
    deadline = time.monotonic() + RUN_TIMEOUT
    holder = None
    while time.monotonic() < deadline and holder is None:
        ti = next((t for t in stack.task_instances(run_id) if t["task_id"] == task), None)
        if ti and ti["state"] == "running" and ti.get("hostname"):
            holder = client.containers.get(_workers(stack)[ti["hostname"]])
            holder.pause()  # before it parses the DAG and reaches CreateTrainingJob, most of the time
        else:
            assert stack.run_state(run_id) not in ("success", "failed"), f"{task} never ran"
            time.sleep(0.1)
    assert holder is not None, f"{task} never ran"
    # Let it go on in the smallest steps the engine gives, until the job exists.
    for _ in range(2000):
        if jobs():
            break
        holder.unpause()
        holder.pause()
    # A request the worker sent in its last step (its task's success, say) may still be reaching the
    # api-server: the task's state is read once that has landed. Paused, the worker sends nothing new.
    time.sleep(SETTLE_SECONDS)
    if jobs() and stack.task_states(run_id)[task] == "running":
        return holder
    holder.unpause()
    return None


def test_a_worker_killed_mid_task_leaves_the_run_to_the_other_with_its_job_reattached(stack, dag):
    import docker

    client = docker.from_env()
    task = "train.start_training_job"
    sm = _sagemaker()
    for attempt in range(1, KILL_ATTEMPTS + 1):
        day = f"2026-07-{2 + attempt:02d}"
        run_id = RUNS[f"killed-{attempt}"] = stack.trigger(f"stack-killed-{attempt}", f"{day}T00:00:00Z")

        def jobs(prefix: str = f"diabetes-train-{day.replace('-', '')}") -> list[str]:
            listed = sm.list_training_jobs(NameContains=prefix, MaxResults=100)
            return [j["TrainingJobName"] for j in listed["TrainingJobSummaries"]]

        holder = _freeze_after_the_job_is_created(stack, client, run_id, task, jobs)
        if holder is not None:
            break
        print(f"attempt {attempt}: {task} ended before its worker was frozen; another run")
        assert stack.wait_for_run(run_id) == "success", stack.failures(run_id)
    else:
        pytest.fail(f"{task} ended before the freeze in all {KILL_ATTEMPTS} runs")
    holder.kill(signal="SIGKILL")
    killed_host = holder.attrs["Config"]["Hostname"]

    state = stack.wait_for_run(run_id, timeout=RUN_TIMEOUT + 2 * HEARTBEAT_TIMEOUT)
    assert state == "success", stack.failures(run_id)
    assert len(jobs()) == 1, jobs()  # re-attached, not started twice
    tries = stack.tries(run_id, task)
    last = tries[-1]
    assert last["try_number"] >= 2 and last["hostname"] != killed_host, tries
    assert "Re-attaching to training job" in stack.task_log(run_id, task, last["try_number"])


def test_the_stack_restarts_with_its_runs_connections_mlflow_runs_and_localaws_state(stack, dag):
    assert RUNS, "the earlier tests made no runs"
    jobs = {name: stack.xcom(run_id, "train.start_training_job")["Training"] for name, run_id in RUNS.items()}
    histories = {run_id: stack.task_instances(run_id) for run_id in RUNS.values()}
    stack.run("down")
    took = stack.up("--no-build")
    print(f"restart: services healthy after (s): {json.dumps({k: round(v) for k, v in took.items()})}")
    wait_until(lambda: _answers(f"{API}/api/v2/monitor/health"), timeout=120, poll=2)

    for run_id, before in histories.items():
        assert stack.run_state(run_id) == "success"
        after = {(ti["task_id"], ti["try_number"], ti["state"], ti["hostname"]) for ti in stack.task_instances(run_id)}
        assert {(ti["task_id"], ti["try_number"], ti["state"], ti["hostname"]) for ti in before} == after
    connection = stack.call("GET", "/api/v2/connections/stack_probe")
    assert connection["host"] == "example.invalid"
    sm, s3 = _sagemaker(), None
    for name, job in jobs.items():
        described = sm.describe_training_job(TrainingJobName=job["TrainingJobName"])
        assert described["TrainingJobStatus"] == "Completed", name
        artifact = described["ModelArtifacts"]["S3ModelArtifacts"]
        import boto3

        s3 = s3 or boto3.client(
            "s3", endpoint_url=LOCALAWS, region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x"
        )
        bucket, _, key = artifact[len("s3://") :].partition("/")
        assert s3.head_object(Bucket=bucket, Key=key)["ContentLength"] > 0, artifact
        run_key = re.search(r"-train-(\d{8}-[0-9a-f]{6})", job["TrainingJobName"])[1]
        assert _mlflow_runs(run_key), f"MLflow lost the run of {name}"
