"""`make airflow`: Airflow standalone on http://127.0.0.1:8080 against localaws.

Starts localaws unless one already listens on 127.0.0.1:4566 (as `make run` does) and stops it
again on exit if it started it; then runs `airflow standalone` (scheduler, dag-processor,
triggerer and api-server with the UI, LocalExecutor, SQLite) with:

  AIRFLOW_HOME=./.airflow                      database, logs, airflow.cfg, the admin password
  DAGS_FOLDER=./dags, PLUGINS_FOLDER=./plugins no example DAGs
  api-server on 127.0.0.1 only                 AIRFLOW__API__HOST / AIRFLOW__API__PORT
  AIRFLOW_CONN_AWS_DEFAULT                     localaws's endpoint with dummy local keys

The UI's login is `admin`; standalone generates its password on first start, prints it and keeps
it in .airflow/simple_auth_manager_passwords.json.generated. Ctrl-C stops everything.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from localaws.lifetime import die_with_parent  # noqa: E402

LOCALAWS = os.environ.get("LOCALAWS_ENDPOINT", "http://127.0.0.1:4566")
HOME = ROOT / ".airflow"


def healthy(endpoint: str) -> bool:
    try:
        with urllib.request.urlopen(endpoint + "/_localaws/health", timeout=1):
            return True
    except OSError:
        return False


def start_localaws(endpoint: str) -> subprocess.Popen | None:
    if healthy(endpoint):
        print(f"localaws already listening on {endpoint}: using it", flush=True)
        return None
    log_path = HOME / "localaws.log"
    log = open(log_path, "w")
    process = subprocess.Popen(
        [sys.executable, "-m", "localaws", "serve", "--port", endpoint.rsplit(":", 1)[1]],
        cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
        preexec_fn=die_with_parent(signal.SIGTERM),  # a killed `make airflow` leaves no localaws behind
    )
    started = time.monotonic()
    while not healthy(endpoint):
        if process.poll() is not None or time.monotonic() - started > 30:
            process.kill()
            raise SystemExit(f"localaws did not start; see {log_path}")
        time.sleep(0.1)
    print(f"started localaws on {endpoint} in {time.monotonic() - started:.1f}s (log: {log_path})", flush=True)
    return process


def airflow_environment() -> dict[str, str]:
    env = dict(os.environ)
    host = env.setdefault("AIRFLOW__API__HOST", "127.0.0.1")
    port = env.setdefault("AIRFLOW__API__PORT", "8080")
    env.update(
        AIRFLOW_HOME=str(HOME),
        AIRFLOW__CORE__DAGS_FOLDER=str(ROOT / "dags"),
        AIRFLOW__CORE__PLUGINS_FOLDER=str(ROOT / "plugins"),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        # Tasks reach the api-server at the address it listens on (not "localhost", which may be ::1).
        AIRFLOW__CORE__EXECUTION_API_SERVER_URL=f"http://{host}:{port}/execution/",
        AIRFLOW_CONN_AWS_DEFAULT=json.dumps({
            "conn_type": "aws",
            "login": "localaws",  # dummy local credentials: localaws accepts any
            "password": "localaws",
            "extra": {"endpoint_url": LOCALAWS, "region_name": env.get("AWS_DEFAULT_REGION", "us-east-1")},
        }),
    )
    env.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    env.setdefault("AIRFLOW__API__WORKERS", "1")  # a laptop's api-server
    return env


def main() -> int:
    HOME.mkdir(exist_ok=True)
    env = airflow_environment()
    localaws = start_localaws(LOCALAWS)
    host, port = env["AIRFLOW__API__HOST"], env["AIRFLOW__API__PORT"]
    print(f"Airflow UI: http://{host}:{port}  (user admin, password in "
          f"{HOME.relative_to(ROOT)}/simple_auth_manager_passwords.json.generated)", flush=True)
    airflow = subprocess.Popen([sys.executable, "-m", "airflow", "standalone"], cwd=ROOT, env=env)

    def forward(signum, _frame):
        airflow.send_signal(signal.SIGINT if signum == signal.SIGINT else signal.SIGTERM)

    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGTERM, forward)
    try:
        return airflow.wait()
    finally:
        if localaws is not None:
            localaws.terminate()
            try:
                localaws.wait(30)
            except subprocess.TimeoutExpired:
                localaws.kill()


if __name__ == "__main__":
    sys.exit(main())
