"""`make airflow`: Airflow standalone on http://127.0.0.1:8080 against localaws.

Starts localaws unless one already listens on 127.0.0.1:4566 (as `make run` does) and stops it
again on exit if it started it; then runs `airflow standalone` (scheduler, dag-processor,
triggerer and api-server with the UI, LocalExecutor, SQLite) with:

  AIRFLOW_HOME=./.airflow                      database, logs, airflow.cfg, the admin password
  LOCALAWS_STATE_DIR=./.airflow/localaws-state the state of the localaws started here, kept across
                                               restarts (set it to move it; empty: in memory)
  DAGS_FOLDER=./dags, PLUGINS_FOLDER=./plugins no example DAGs
  api-server on 127.0.0.1 only                 AIRFLOW__API__HOST / AIRFLOW__API__PORT
  AIRFLOW_CONN_AWS_DEFAULT                     localaws's endpoint with dummy local keys

The UI's login is `admin`; standalone generates its password on first start, prints it and keeps
it in .airflow/simple_auth_manager_passwords.json.generated. Ctrl-C stops everything.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from localaws.lifetime import die_with_parent  # noqa: E402
from scripts.localaws_process import ensure_localaws  # noqa: E402
from scripts.run_pipeline import airflow_env  # noqa: E402

LOCALAWS = os.environ.get("LOCALAWS_ENDPOINT", "http://127.0.0.1:4566")
HOME = ROOT / ".airflow"


def localaws_state_dir() -> Path | None:
    """Where the localaws started here keeps its state: with Airflow's, so that deleting .airflow resets both."""
    value = os.environ.get("LOCALAWS_STATE_DIR", str(HOME / "localaws-state"))
    return Path(value) if value else None


def airflow_environment() -> dict[str, str]:
    """`make run`'s Airflow environment (repository folders, localaws connection, PATH), plus the api-server's."""
    env = airflow_env(LOCALAWS, HOME)
    env["ML_PIPELINE_POLL_SECONDS"] = os.environ.get("ML_PIPELINE_POLL_SECONDS", "5")
    host = env.setdefault("AIRFLOW__API__HOST", "127.0.0.1")
    port = env.setdefault("AIRFLOW__API__PORT", "8080")
    # Tasks reach the api-server at the address it listens on (not "localhost", which may be ::1).
    env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] = f"http://{host}:{port}/execution/"
    env.setdefault("AIRFLOW__API__WORKERS", "1")  # a laptop's api-server
    return env


def main() -> int:
    HOME.mkdir(exist_ok=True)
    env = airflow_environment()
    with ensure_localaws(LOCALAWS, HOME / "localaws.log", state_dir=localaws_state_dir()):
        return run_standalone(env)


def run_standalone(env: dict[str, str]) -> int:
    host, port = env["AIRFLOW__API__HOST"], env["AIRFLOW__API__PORT"]
    print(f"Airflow UI: http://{host}:{port}  (user admin, password in "
          f"{HOME.relative_to(ROOT)}/simple_auth_manager_passwords.json.generated)", flush=True)
    # Its own session, so that Ctrl-C reaches it once (forwarded below), not twice; SIGINT is what
    # `airflow standalone` shuts its components down on. It also gets SIGINT if this script dies.
    tie_to_this_script = die_with_parent(signal.SIGINT)

    def prepare_child() -> None:
        tie_to_this_script()
        signal.signal(signal.SIGINT, signal.SIG_DFL)  # not ignored, even if it is here (`make airflow &`)

    airflow = subprocess.Popen(
        [sys.executable, "-m", "airflow", "standalone"], cwd=ROOT, env=env,
        start_new_session=True, preexec_fn=prepare_child,
    )

    def forward(_signum, _frame):
        airflow.send_signal(signal.SIGINT)

    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGTERM, forward)
    return airflow.wait()


if __name__ == "__main__":
    sys.exit(main())
