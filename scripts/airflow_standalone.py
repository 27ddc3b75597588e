"""`make airflow`: a local Airflow on http://127.0.0.1:8080 against localaws.

Starts localaws unless one already listens on 127.0.0.1:4566 (as `make run` does) and stops it
again on exit if it started it; then runs what `airflow standalone` runs (scheduler with the
LocalExecutor, dag-processor, triggerer, api-server with the UI; SQLite), one process each, with:

  AIRFLOW_HOME=./.airflow (--home)             database, logs, airflow.cfg, the admin password
  LOCALAWS_STATE_DIR=<home>/localaws-state     the state of the localaws started here, kept across
                                               restarts (set it to move it; empty: in memory)
  DAGS_FOLDER=./dags, PLUGINS_FOLDER=./plugins no example DAGs
  api-server on 127.0.0.1 only                 AIRFLOW__API__HOST / AIRFLOW__API__PORT
  parallelism: 2 per CPU (at most 32)          AIRFLOW__CORE__PARALLELISM (the LocalExecutor forks
                                               that many workers at start; Airflow's default is 32)
  no log servers                               see below
  AIRFLOW_CONN_AWS_DEFAULT                     localaws's endpoint with dummy local keys
  MLFLOW_TRACKING_URI                          an MLflow server started here unless set (SQLite in the
                                               home, artifacts in localaws's S3; its UI address is
                                               printed, on port 5050 or ML_PIPELINE_MLFLOW_PORT)

Why not `airflow standalone` itself: it starts the scheduler's and the triggerer's log servers (ports
8793 and 8794), which Airflow binds to every address with no setting to change that, and it cannot be
told to skip them. They serve task logs to other machines; here every component shares the log
folder, and the api-server reads the logs from it. Nothing else listens: the api-server is on the
address above and the scheduler's health check server stays off (bound to 127.0.0.1 if turned on).

The UI's login is `admin`; the api-server generates its password on first start, prints it and keeps
it in .airflow/simple_auth_manager_passwords.json.generated. A component that ends on its own (the scheduler
exits on a database error it does not retry) is started again, as docker-compose.yaml restarts its services;
one that keeps ending stops everything. Ctrl-C stops everything: each component
gets SIGTERM (the scheduler waits for its running tasks), what has not stopped after STOP_SECONDS is
killed, and then so is whatever is left of this script's descendants (task processes run in process
groups of their own; the script is their subreaper, so even one whose component died is found).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from collections.abc import Collection
from typing import IO, cast

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from localaws.lifetime import die_with_parent  # noqa: E402
from scripts.localaws_process import ensure_localaws  # noqa: E402
from scripts.mlflow_server import ensure_mlflow  # noqa: E402
from scripts.run_pipeline import airflow_env, migrate  # noqa: E402 - puts the plugins on the path
from ml_pipeline.preload import ENV as PRELOAD_ENV  # noqa: E402

LOCALAWS = os.environ.get("LOCALAWS_ENDPOINT", "http://127.0.0.1:4566")
HOME = ROOT / ".airflow"
#: What `airflow standalone` runs, each with the log server it would start left out.
COMPONENTS = {
    "scheduler": ["scheduler", "--skip-serve-logs"],
    "dag-processor": ["dag-processor"],
    "triggerer": ["triggerer", "--skip-serve-logs"],
    "api-server": ["api-server"],
}
STOP_SECONDS = 60
#: A component is started again when it ends on its own, up to RESTARTS times within RESTART_WINDOW_SECONDS.
RESTARTS = 3
RESTART_WINDOW_SECONDS = 600
_PR_SET_CHILD_SUBREAPER = 36


def localaws_state_dir(home: Path) -> Path | None:
    """Where the localaws started here keeps its state: with Airflow's, so that deleting the home resets both."""
    value = os.environ.get("LOCALAWS_STATE_DIR", str(home / "localaws-state"))
    return Path(value) if value else None


def parallelism() -> int:
    """Task slots for this machine: tasks here mostly wait on AWS, so two per CPU this process may use, and
    no more than Airflow's default."""
    return min(2 * len(os.sched_getaffinity(0)), 32)


def airflow_environment(home: Path = HOME) -> dict[str, str]:
    """`make run`'s Airflow environment (repository folders, localaws connection, PATH), plus what
    `airflow standalone` sets and the api-server's address."""
    env = airflow_env(LOCALAWS, home)
    env["ML_PIPELINE_POLL_SECONDS"] = os.environ.get("ML_PIPELINE_POLL_SECONDS", "5")
    env["AIRFLOW__CORE__EXECUTOR"] = "LocalExecutor"
    env["AIRFLOW__CORE__AUTH_MANAGER"] = (
        "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
    )
    env.setdefault("AIRFLOW__CORE__PARALLELISM", str(parallelism()))
    env.setdefault("AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK", "False")
    env.setdefault("AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_HOST", "127.0.0.1")
    host = env.setdefault("AIRFLOW__API__HOST", "127.0.0.1")
    port = env.setdefault("AIRFLOW__API__PORT", "8080")
    # Tasks reach the api-server at the address it listens on (not "localhost", which may be ::1).
    env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] = f"http://{host}:{port}/execution/"
    env.setdefault("AIRFLOW__API__WORKERS", "1")  # a laptop's api-server
    return env


def component_env(env: dict[str, str], name: str) -> dict[str, str]:
    """The scheduler's LocalExecutor forks its workers, and they their tasks: it preloads what tasks load
    (ml_pipeline.preload), and each task starts with that done."""
    return {**env, PRELOAD_ENV: "1"} if name == "scheduler" else env


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, default=HOME, help="AIRFLOW_HOME (default: ./.airflow)")
    args = parser.parse_args()
    home = args.home.resolve()
    home.mkdir(parents=True, exist_ok=True)
    env = airflow_environment(home)
    with (
        ensure_localaws(LOCALAWS, home / "localaws.log", state_dir=localaws_state_dir(home)) as localaws,
        ensure_mlflow(home, LOCALAWS) as tracking,
    ):
        env["MLFLOW_TRACKING_URI"] = tracking.uri
        migrate(env)
        spare = [pid for pid in (localaws.pid if localaws else None, tracking.pid) if pid]
        return run_components(env, home, spare=spare)


def run_components(env: dict[str, str], home: Path, spare: Collection[int] = ()) -> int:
    """Runs COMPONENTS until Ctrl-C or SIGTERM (starting one that ends on its own again, up to RESTARTS times
    within RESTART_WINDOW_SECONDS, else stopping them all and returning 1), then stops them and every process
    they left; ``spare`` (the localaws and MLflow server started for them) and their descendants are left to
    their owners."""
    _become_subreaper()
    stopping = threading.Event()
    failed = False

    def stop(_signum=None, _frame=None):
        stopping.set()

    # Before anything starts: a Ctrl-C from now on stops what was started.
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    host, port = env["AIRFLOW__API__HOST"], env["AIRFLOW__API__PORT"]
    print(
        f"Airflow UI: http://{host}:{port}  (user admin, password in "
        f"{home}/simple_auth_manager_passwords.json.generated)",
        flush=True,
    )

    # Each component in a process group of its own (with its workers and task processes): a Ctrl-C or a
    # SIGTERM reaches this script only, which signals each component once (a second signal makes
    # Airflow's components abandon their shutdown half-way, leaving workers behind). They die with it.
    def start(name: str) -> subprocess.Popen[bytes]:
        process = subprocess.Popen(
            [sys.executable, "-m", "airflow", *COMPONENTS[name]],
            cwd=ROOT,
            env=component_env(env, name),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent(signal.SIGTERM),
        )
        threading.Thread(target=_prefix_output, args=(name, process), daemon=True).start()
        return process

    processes = {name: start(name) for name in COMPONENTS}
    restarts: dict[str, list[float]] = {name: [] for name in COMPONENTS}
    # Until Ctrl-C (or SIGTERM). A component that ends on its own is started again, as docker-compose.yaml's
    # `restart: always` does (Airflow's scheduler exits on a database error it does not retry, such as a
    # StaleDataError); one that keeps ending stops them all.
    while not stopping.wait(1):
        ended = {name: process for name, process in processes.items() if process.poll() is not None}
        for name, process in ended.items():
            now = time.monotonic()
            recent = restarts[name] = [t for t in restarts[name] if now - t < RESTART_WINDOW_SECONDS] + [now]
            if len(recent) > RESTARTS:
                print(
                    f"standalone | {name} ended (exit {process.returncode}) {len(recent)} times within "
                    f"{RESTART_WINDOW_SECONDS} s: stopping the other components",
                    flush=True,
                )
                stopping.set()
                failed = True
                break
            print(f"standalone | {name} ended (exit {process.returncode}): starting it again", flush=True)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)  # what is left of its group (its workers)
            processes[name] = start(name)
    for process in processes.values():
        if process.poll() is None:
            process.terminate()
    deadline = time.monotonic() + STOP_SECONDS
    for name, process in processes.items():
        try:
            process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            print(f"standalone | {name} did not stop within {STOP_SECONDS} s: killed", flush=True)
        # Whatever is left of its group (its workers) goes too.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    # Task processes are in groups of their own: whatever of them is left (a poking sensor, a teardown that
    # waits) goes last.
    left = end_descendants(spare)
    if left:
        print(f"standalone | killed {len(left)} process(es) left behind: {', '.join(map(str, left))}", flush=True)
    return 1 if failed else 0


def _become_subreaper() -> None:
    """Orphans among this script's descendants become its children (not init's), so that it can find them."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def end_descendants(spare: Collection[int] = (), timeout: float = 10) -> list[int]:
    """SIGKILLs every descendant of this process but those in ``spare`` and theirs, and reaps those that
    became its children; returns their pids."""
    import psutil  # noqa: PLC0415 - installed with Airflow

    spared: set[int] = set()
    for pid in spare:
        with contextlib.suppress(psutil.NoSuchProcess):
            spared |= {pid, *(child.pid for child in psutil.Process(pid).children(recursive=True))}
    left = [child for child in psutil.Process().children(recursive=True) if child.pid not in spared]
    for child in left:
        with contextlib.suppress(psutil.NoSuchProcess):
            child.kill()
    deadline = time.monotonic() + timeout
    while not all(_ended(child) for child in left) and time.monotonic() < deadline:
        time.sleep(0.1)
    return [child.pid for child in left]


def _ended(process) -> bool:
    import psutil  # noqa: PLC0415

    with contextlib.suppress(ChildProcessError):
        os.waitpid(process.pid, os.WNOHANG)  # an orphan this script adopted: reaped here
    try:
        return process.status() == psutil.STATUS_ZOMBIE  # another's child: its parent reaps it
    except psutil.NoSuchProcess:
        return True


def _prefix_output(name: str, process: subprocess.Popen[bytes]) -> None:
    for line in cast(IO[bytes], process.stdout):  # started with stdout=PIPE: a stream
        sys.stdout.write(f"{name:13} | {line.decode(errors='replace')}")
        sys.stdout.flush()


if __name__ == "__main__":
    sys.exit(main())
