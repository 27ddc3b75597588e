"""Screenshots of the runs in MLflow and of the Airflow UI's link to them, taken in headless Chromium.

    python scripts/screenshots.py --out /tmp/screens

Starts localaws, an MLflow server (scripts/mlflow_server.py) and an Airflow home as `make run` does, runs the
digits DAG in train mode then in tune mode (quick preset, 4 trials), starts Airflow's api-server on that
home, and opens in Chromium:

  mlflow-runs.png          the MLflow experiment "digits": its runs listed (the tune run's trials under it),
                           with the objective, the best trial and the gate's verdict as columns
  mlflow-trials.png        the tune run's trials compared on the objective (validation:loss)
  mlflow-curve.png         the train run's metrics, epoch by epoch
  airflow-link.png         the tune run's close_run task in the Airflow UI (Details), its "MLflow run" link
  airflow-link-opened.png  where that link leads: the tune run in MLflow

and checks what each shows (the runs' names, the link's address). Needs Debian's ``chromium`` (installed with
apt-get when missing and run as root) and Python's playwright (installed into ``--deps`` when missing:
playwright's own browser download is not used).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "plugins")]

from scripts.localaws_process import ensure_localaws  # noqa: E402
from scripts.mlflow_server import MlflowServer, free_port  # noqa: E402
from scripts.run_pipeline import airflow_env, migrate, read_summary, run_dag  # noqa: E402

PLAYWRIGHT = "playwright==1.65.2"
WIDTH, HEIGHT = 1800, 1000


def ensure_tools(deps: Path) -> str:
    """Chromium's path, with playwright importable (from ``deps`` when the environment has none)."""
    browser = shutil.which("chromium")
    if browser is None and os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], env=env, check=False)
        subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", "chromium"], env=env, check=True)
        browser = shutil.which("chromium")
    if browser is None:
        raise SystemExit("no chromium: install Debian's chromium package")
    try:
        import playwright  # noqa: F401, PLC0415
    except ImportError:
        if not (deps / "playwright").is_dir():
            subprocess.run(
                [sys.executable, "-m", "pip", "install", "--quiet", "--target", str(deps), PLAYWRIGHT], check=True
            )
        sys.path.append(str(deps))  # last: the environment's own packages (greenlet) come first
    return browser


def wait_for(url: str, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=5):
                return
        except OSError:
            time.sleep(1)
    raise SystemExit(f"{url} did not answer within {timeout:.0f} s")


@contextlib.contextmanager
def api_server(env: dict, home: Path):
    """Airflow's api-server (the UI) on the home the runs were made in; every user an admin (a local look)."""
    port = free_port()
    server_env = {
        **env,
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__CORE__AUTH_MANAGER": "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
    }
    with open(home / "api-server.log", "w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "airflow", "api-server"],
            env=server_env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            wait_for(f"http://127.0.0.1:{port}/api/v2/monitor/health")
            yield f"http://127.0.0.1:{port}"
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)


def run(env: dict, home: Path, endpoint: str, mode: str, date: str) -> dict:
    conf = {"mode": mode, "preset": "quick", **({"max_jobs": 4, "max_parallel_jobs": 2} if mode == "tune" else {})}
    started = time.monotonic()
    result = run_dag(env, conf, date, home / f"{mode}.log", "digits")
    summary = read_summary(endpoint, env["ML_PIPELINE_BUCKET"], result, "digits")
    if result["state"] != "success" or not summary or "run_id" not in (summary.get("mlflow") or {}):
        raise SystemExit(f"the {mode} run did not end logged in MLflow; see {home / (mode + '.log')}")
    print(f"{mode} run {result['run_id']}: {summary['mlflow']['url']} ({time.monotonic() - started:.0f} s)")
    return {**result, "summary": summary}


def close_assistant(page) -> None:
    """MLflow 3's assistant panel opens beside every page: closed, the page has the width."""
    with contextlib.suppress(Exception):
        page.get_by_role("button", name="Close", exact=True).click(timeout=5_000)


def add_columns(page, names: tuple[str, ...]) -> None:
    """Columns of the runs table, picked as a user does: Columns, search, tick."""
    for name in names:
        page.get_by_role("button", name="Columns", exact=True).click()
        page.keyboard.type(name)
        page.get_by_test_id("column-selector-tree").get_by_text(name, exact=True).first.click()
        page.keyboard.press("Escape")


def shoot(browser: str, out: Path, tracking: str, airflow: str, train: dict, tune: dict) -> list[str]:
    from mlflow import MlflowClient  # noqa: PLC0415
    from playwright.sync_api import sync_playwright  # noqa: PLC0415

    ml = MlflowClient(tracking_uri=tracking)
    experiment = train["summary"]["mlflow"]["experiment_id"]
    parent = tune["summary"]["mlflow"]["run_id"]
    trials = ml.search_runs([experiment], filter_string=f"tags.`mlflow.parentRunId` = '{parent}'")
    quoted = urllib.parse.quote(json.dumps([experiment]))
    said = []
    with sync_playwright() as driver:
        chromium = driver.chromium.launch(executable_path=browser, args=["--no-sandbox", "--disable-gpu"])
        page = chromium.new_page(viewport={"width": WIDTH, "height": HEIGHT})

        page.goto(f"{tracking}/#/experiments/{experiment}/runs")
        row = page.get_by_role("row").filter(has_text=f"tune-{tune['summary']['run']}").first
        row.wait_for(timeout=60_000)
        close_assistant(page)
        row.locator("[col-id='attributes.`Run Name`'] button").first.click()  # its trials, under it
        add_columns(page, ("validation:loss", "best", "quality_gate"))
        page.wait_for_timeout(2_000)
        page.screenshot(path=str(out / "mlflow-runs.png"))
        said.append(f"mlflow-runs.png: the experiment's runs, the tune run's {len(trials)} trials under it")

        ids = urllib.parse.quote(json.dumps([run.info.run_id for run in trials]))
        page.goto(f"{tracking}/#/compare-runs?runs={ids}&experiments={quoted}")
        page.get_by_text("Parallel Coordinates Plot").first.wait_for(timeout=60_000)
        close_assistant(page)
        metrics = page.get_by_role("combobox").nth(1)  # parameters, then metrics: the objective alone
        metrics.click()
        page.keyboard.press("Backspace")
        metrics.type("validation:loss")
        page.keyboard.press("Enter")
        page.keyboard.press("Escape")
        page.wait_for_timeout(3_000)
        page.screenshot(path=str(out / "mlflow-trials.png"), full_page=True)
        said.append(f"mlflow-trials.png: the {len(trials)} trials compared on validation:loss")

        train_run = train["summary"]["mlflow"]["run_id"]
        page.goto(f"{tracking}/#/experiments/{experiment}/runs/{train_run}/model-metrics")
        # A visible one: MLflow's screen-reader announcer holds the same text, hidden, and may come first.
        # The charts searched down to the losses: the run's resource figures (one point each) come first otherwise.
        page.get_by_placeholder("Search metric charts").first.fill("loss", timeout=60_000)
        try:
            page.locator("text=validation:loss >> visible=true").first.wait_for(timeout=60_000)
        except Exception:
            page.screenshot(path=str(out / "mlflow-curve-failed.png"), full_page=True)  # what it showed instead
            raise
        close_assistant(page)
        page.wait_for_timeout(3_000)
        page.screenshot(path=str(out / "mlflow-curve.png"))
        history = ml.get_metric_history(train_run, "validation:loss")
        said.append(f"mlflow-curve.png: the train run's metrics, validation:loss in {len(history)} points")

        run_id = urllib.parse.quote(tune["run_id"], safe="")
        page.goto(f"{airflow}/dags/train_digits/runs/{run_id}/tasks/close_run/details")
        link = page.get_by_role("link", name="MLflow run").first
        link.wait_for(timeout=90_000)
        page.wait_for_timeout(2_000)
        page.screenshot(path=str(out / "airflow-link.png"))
        href = link.get_attribute("href") or ""
        if href != tune["summary"]["mlflow"]["url"]:
            raise SystemExit(f"the Airflow link points to {href!r}, not {tune['summary']['mlflow']['url']}")
        said.append(f"airflow-link.png: the tune run's close_run task, its link to {href}")
        page.goto(href)
        page.get_by_text(f"tune-{tune['summary']['run']}").first.wait_for(timeout=60_000)
        close_assistant(page)
        page.wait_for_timeout(2_000)
        page.screenshot(path=str(out / "airflow-link-opened.png"), full_page=True)
        said.append("airflow-link-opened.png: the MLflow run the link opens")
        chromium.close()
    return said


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "out" / "screens")
    parser.add_argument("--deps", type=Path, default=Path.home() / ".cache" / "ml-pipeline" / "screenshots")
    args = parser.parse_args()
    browser = ensure_tools(args.deps)
    args.out.mkdir(parents=True, exist_ok=True)
    home = Path(tempfile.mkdtemp(prefix="ml-pipeline-screens-"))
    endpoint = f"http://127.0.0.1:{free_port()}"
    with ensure_localaws(endpoint, home / "localaws.log"):
        server = MlflowServer(home / "mlflow", endpoint, port=0).start()
        try:
            env = airflow_env(endpoint, home / "airflow")
            env.update(MLFLOW_TRACKING_URI=server.uri, ML_PIPELINE_BUCKET="screens", ML_PIPELINE_POLL_SECONDS="1")
            migrate(env)
            train = run(env, home, endpoint, "train", "2026-03-02T00:00:00+00:00")
            tune = run(env, home, endpoint, "tune", "2026-03-09T00:00:00+00:00")
            with api_server(env, home) as airflow:
                said = shoot(browser, args.out, server.uri, airflow, train, tune)
        finally:
            server.stop()
    print("\n".join(f"{args.out}/{line}" for line in said))
    return 0


if __name__ == "__main__":
    sys.exit(main())
