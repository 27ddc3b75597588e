"""``dag.test()`` runs, each in a fork of one warmed interpreter, as Airflow's LocalExecutor forks its tasks
from a warmed worker.

A fresh interpreter spends about 11 s of CPU before a DAG run's first task: importing Airflow, the Amazon
provider, the SageMaker SDK's image URIs and MLflow, and generating the in-process Execution API's
versioned routes (Cadwyn). This process does that once, then forks a child for each run it is sent: the
child starts from the warmed state with nothing of an earlier run in it (the database engine's pool is
emptied before each fork, and a run's Airflow state lives in the database anyway).

Protocol, one JSON object per line: on stdin ``{"id", "log", "cwd", "env", "argv"}`` (``argv``: what
INNER takes; an optional ``"code"``: a script run instead of INNER); on stdout ``READY`` once warm, then
``{"id", "exit"}`` as each run ends (what its own imports print goes to ``$AIRFLOW_HOME/dag-test-forks.log``).
End of stdin: it waits for its runs and exits. Started
by ``forks()`` for ``scripts.run_pipeline.run_dag``, with the environment of the runs it serves: Airflow's
configuration is read once, here, so runs whose ``AIRFLOW*`` settings differ get a process each (connections
and variables aside: they are read when used).
"""

from __future__ import annotations

import itertools
import json
import os
import select
import subprocess
import sys
import threading
import traceback
from pathlib import Path

#: What each run executes, in a fork here:
#: argv = experiment file, DAG id, conf JSON, logical date.
INNER = """
import json, sys, pendulum
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder=sys.argv[1])
dag = bag.get_dag(sys.argv[2])
if dag is None:
    sys.exit("no DAG " + sys.argv[2] + " in " + sys.argv[1] + ": " + json.dumps(bag.import_errors))
conf = json.loads(sys.argv[3])
when = pendulum.parse(sys.argv[4])
run = dag.test(logical_date=when, run_conf=conf)
# The summary as the run's teardown returned it (its XCom): there even when the bucket is gone.
from ml_pipeline.summary_page import stored_summary
summary = stored_summary(dag.dag_id, run.run_id)
print("DAGRUN " + json.dumps({"run_id": run.run_id, "state": str(run.state), "logical_date": str(run.logical_date),
                              "summary": summary}, default=str))
"""


class Forks:
    """A warmed interpreter (this file, run as a script) and the runs it forks for its caller."""

    def __init__(self, env: dict[str, str]):
        home = Path(env["AIRFLOW_HOME"])
        home.mkdir(parents=True, exist_ok=True)
        with open(home / "dag-test-forks.log", "a") as log:  # what its own imports print
            self.process = subprocess.Popen(
                [sys.executable, __file__],
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
            )
        self.lock = threading.Lock()
        self.ids = itertools.count()
        self.waiting: dict[str, list] = {}  # run id -> [event, exit status]
        self.ready = threading.Event()
        threading.Thread(target=self._read, daemon=True, name="dag-test-forks").start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if line.strip() == "READY":
                self.ready.set()
            elif line.startswith("{"):
                done = json.loads(line)
                slot = self.waiting[done["id"]]
                slot[1] = done["exit"]
                slot[0].set()
        self.ready.set()
        for slot in self.waiting.values():  # it ended: nothing more comes
            slot[0].set()

    def run(self, env: dict[str, str], argv: list[str], log_path: Path, code: str | None = None) -> int | None:
        """One run in a fork (``code`` instead of INNER: a script of the caller's, with these arguments); its
        exit status (None: the warmed interpreter itself died)."""
        self.ready.wait()
        slot: list = [threading.Event(), None]
        with self.lock:
            run_id = str(next(self.ids))
            self.waiting[run_id] = slot
            request = {"id": run_id, "log": str(log_path), "cwd": os.getcwd(), "env": env, "argv": argv}
            if code is not None:
                request["code"] = code
            assert self.process.stdin is not None
            self.process.stdin.write(json.dumps(request) + "\n")
            self.process.stdin.flush()
        slot[0].wait()
        return slot[1]

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        self.process.wait()


_FORKS: dict[tuple, Forks] = {}
_READ_AT_USE = ("AIRFLOW_CONN_", "AIRFLOW_VAR_")
_FORKS_LOCK = threading.Lock()


def forks(env: dict[str, str]) -> Forks:
    """The warmed interpreter for runs with ``env``'s Airflow settings (Airflow reads them once, when imported):
    one per distinct set of ``AIRFLOW*`` variables and ``PYTHONPATH``, started on first use. Connections and
    variables (``AIRFLOW_CONN_*``, ``AIRFLOW_VAR_*``) are read from each run's environment when a task asks
    for them, so they do not count."""
    key = tuple(
        sorted(
            (k, v)
            for k, v in env.items()
            if (k.startswith("AIRFLOW") and not k.startswith(_READ_AT_USE)) or k == "PYTHONPATH"
        )
    )
    with _FORKS_LOCK:
        found = _FORKS.get(key)
        if found is None or found.process.poll() is not None:
            found = _FORKS[key] = Forks(env)
        return found


def close_all() -> None:
    with _FORKS_LOCK:
        for found in _FORKS.values():
            found.close()
        _FORKS.clear()


def warm() -> None:
    """Import what every run imports, and build what every run builds, before the first fork."""
    import airflow  # noqa: F401, PLC0415 - configures Airflow from this environment
    import airflow.providers.amazon.aws.operators.sagemaker  # noqa: F401, PLC0415
    import airflow.providers.amazon.aws.triggers.sagemaker  # noqa: F401, PLC0415
    import pendulum  # noqa: F401, PLC0415
    from airflow.dag_processing.dagbag import DagBag  # noqa: F401, PLC0415
    from airflow.sdk.execution_time.supervisor import in_process_api_server  # noqa: PLC0415

    # What every task loads, as a scheduler's LocalExecutor workers have it (plugins are on the path once
    # Airflow is imported).
    from ml_pipeline.preload import task_modules  # noqa: PLC0415

    task_modules()

    # dag.test()'s in-process Execution API is cached per interpreter (lru_cache): built here, its
    # versioned routes generated up front (Cadwyn does it on the first request otherwise). Its event-loop
    # thread starts only when a run first sends it a request, in the child.
    app = in_process_api_server().app
    initialize = getattr(app, "_cadwyn_initialize", None)
    if initialize is not None and not getattr(app, "_cadwyn_initialized", True):
        initialize()
    _release_connections()


def _release_connections() -> None:
    from airflow import settings  # noqa: PLC0415 - only in the warmed interpreter

    if settings.engine is not None:
        settings.engine.dispose()


def child(request: dict, inner: str) -> int:
    """One run, in the forked child: its log on stdout and stderr, its environment, INNER's arguments."""
    log = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    sys.argv = ["-c", *request["argv"]]
    try:
        exec(compile(inner, "<run_pipeline.INNER>", "exec"), {"__name__": "__main__"})
        return 0
    except SystemExit as stop:
        if stop.code is None or isinstance(stop.code, int):
            return stop.code or 0
        print(stop.code, file=sys.stderr)
        return 1
    except BaseException:  # noqa: BLE001 - the run's own failure, reported in its log and exit status
        traceback.print_exc()
        return 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()


def serve(inner: str) -> None:
    # The answers go out on a copy of stdout; stdout itself becomes stderr, where whatever the imports print goes.
    answers = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    warm()

    def answer(line: str) -> None:
        answers.write(line + "\n")
        answers.flush()

    answer("READY")
    running: dict[int, str] = {}  # pid -> request id
    reading = True
    while reading or running:
        if reading and select.select([sys.stdin], [], [], 0.2)[0]:
            line = sys.stdin.readline()
            if not line:
                reading = False
                continue
            request = json.loads(line)
            _release_connections()
            pid = os.fork()
            if pid == 0:
                answers.close()
                os._exit(child(request, request.get("code", inner)))
            running[pid] = request["id"]
            continue
        while running:
            pid, status = os.waitpid(-1, 0 if not reading else os.WNOHANG)
            if pid == 0:
                break
            answer(json.dumps({"id": running.pop(pid), "exit": os.waitstatus_to_exitcode(status)}))


if __name__ == "__main__":
    serve(INNER)
