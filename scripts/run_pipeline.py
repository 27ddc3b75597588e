"""`make run`: experiments' DAGs, end to end on localaws.

``make run`` runs the digits experiment in train and tune mode and the diabetes experiment in train mode;
``make run EXPERIMENT=<name>`` (``--experiment``) runs that experiment's DAG (``--modes``, train by default).
Starts localaws unless one listens already, and an MLflow tracking server unless MLFLOW_TRACKING_URI is set
(scripts/mlflow_server.py: its UI address is printed), prepares a local Airflow home, runs each DAG with
``dag.test()``, and prints each run's summary (also written as JSON; the paths are printed). The same
DAGs run against real AWS unchanged: see the README.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import boto3

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "plugins")]

from ml_pipeline.closing import summary_key  # noqa: E402
from ml_pipeline.cost import cost_line  # noqa: E402
from ml_pipeline.naming import run_key  # noqa: E402

from scripts.dag_test_forks import INNER, forks  # noqa: E402, F401 - INNER: what each run executes
from scripts.localaws_process import ensure_localaws  # noqa: E402
from scripts.mlflow_server import ensure_mlflow  # noqa: E402

#: What plain `make run` runs: (experiment, mode).
DEFAULT_RUNS = (("digits", "train"), ("digits", "tune"), ("diabetes", "train"))
#: Settings for a run of the examples that takes minutes, not hours (tune: 4 trials, 2 at a time).
RUN_CONF = {"tune": {"max_jobs": 4, "max_parallel_jobs": 2}}


def dag_id(experiment: str) -> str:
    return f"train_{experiment}"  # ml_pipeline.pipeline_dag.dag_id, without importing Airflow here


def experiments_root() -> Path:
    return Path(os.environ.get("ML_PIPELINE_EXPERIMENTS_DIR") or ROOT / "experiments")


def bundles(dags: Path, experiments: Path) -> str:
    """Airflow's DAG bundles: the DAG files of dags/, and the experiments folder, whose DAG files are the
    experiment files (ml_pipeline.experiment_importer)."""
    local = "airflow.dag_processing.bundles.local.LocalDagBundle"
    return json.dumps(
        [
            {"name": "dags-folder", "classpath": local, "kwargs": {"path": str(dags)}},
            {"name": "experiments", "classpath": local, "kwargs": {"path": str(experiments)}},
        ]
    )


def airflow_env(endpoint: str, home: Path) -> dict[str, str]:
    """Airflow pointed at this repository and at localaws; dummy credentials (localaws takes any)."""
    return {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
        "AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST": bundles(ROOT / "dags", experiments_root()),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": os.environ.get("AIRFLOW__LOGGING__LOGGING_LEVEL", "INFO"),
        # The provider logs where each hook's connection got its credentials, one line per hook (several
        # per task): kept at WARNING, its warnings (a missing connection) still show.
        "AIRFLOW__LOGGING__NAMESPACE_LEVELS": os.environ.get(
            "AIRFLOW__LOGGING__NAMESPACE_LEVELS", "airflow.providers.amazon.aws.utils.connection_wrapper=WARNING"
        ),
        # The hooks' sessions share one botocore loader: each service's model parsed once per process.
        "AIRFLOW__AWS__SESSION_FACTORY": "ml_pipeline.aws_sessions.SharedLoaderSessionFactory",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS": "scripts.airflow_sqlite.CONNECT_ARGS",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS_ASYNC": "scripts.airflow_sqlite.CONNECT_ARGS",
        "AIRFLOW_CONN_AWS_DEFAULT": json.dumps(
            {
                "conn_type": "aws",
                "login": "localaws",
                "password": "localaws",
                "extra": {"endpoint_url": endpoint, "region_name": "us-east-1"},
            }
        ),
        "AWS_DEFAULT_REGION": "us-east-1",
        "ML_PIPELINE_POLL_SECONDS": os.environ.get("ML_PIPELINE_POLL_SECONDS", "2"),
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "plugins"), os.environ.get("PYTHONPATH", "")]),
        # Airflow's own processes (standalone's scheduler, triggerer...) start `airflow` from PATH.
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
    }


def migrate(env: dict) -> None:
    home = Path(env["AIRFLOW_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    stamp = home / ".migrated"
    if stamp.exists():
        return
    subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], env=env, check=True, stdout=subprocess.DEVNULL)
    stamp.write_text("ok")


def experiment_file(experiment: str) -> Path:
    return experiments_root() / experiment / "experiment.yaml"


def run_dag(env: dict, conf: dict, logical_date: str, log_path: Path, experiment: str) -> dict:
    """One ``dag.test()`` of the experiment's DAG in a fork of a warmed interpreter (scripts/dag_test_forks.py,
    as LocalExecutor forks a task from a warmed worker), its log kept in a file."""
    argv = [str(experiment_file(experiment)), dag_id(experiment), json.dumps(conf), logical_date]
    forks(env).run(env, argv, log_path)
    lines = [line for line in log_path.read_text().splitlines() if line.startswith("DAGRUN ")]
    if not lines:
        raise SystemExit(f"the DAG run did not finish; see {log_path}")
    return json.loads(lines[-1][len("DAGRUN ") :])


def read_summary(endpoint: str, bucket: str, run: dict, experiment: str) -> dict | None:
    key = run_key(run["run_id"], datetime.fromisoformat(run["logical_date"]), experiment)
    s3 = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="localaws",
        aws_secret_access_key="localaws",
    )
    try:
        body = s3.get_object(Bucket=bucket, Key=summary_key({"key": key}))["Body"].read()
    except (s3.exceptions.NoSuchKey, s3.exceptions.NoSuchBucket):  # the run ended before teardown wrote it
        return None
    return json.loads(body)


def print_summary(summary: dict, run: dict, path: Path) -> None:
    print(f"\n=== {summary.get('experiment')} {summary['mode']} run {summary['run']}: {run['state']} ===")
    revision = summary.get("revision") or {}
    print(
        f"revision        experiment.yaml {revision.get('file_hash')}, source {revision.get('source_hash')}, "
        f"commit {revision.get('commit')}"
    )
    print(f"code            {(summary.get('code') or {}).get('how')}")
    for kind in ("tuning", "training"):
        for job in (summary.get("jobs") or {}).get(kind, []):
            if kind == "training" and summary.get("tuning_job") and job["name"].startswith(summary["tuning_job"] + "-"):
                continue  # a trial: counted on the tuning job's line
            print(
                f"{kind + ' job':15} {job['name']}: {job['status']}"
                + (f" ({job['reason']})" if job.get("reason") else "")
                + (f", trials {job['trials']}" if job.get("trials") else "")
            )
    print(f"best job        {summary['training_job'] if summary.get('objective') else None}")
    if summary.get("objective"):
        objective = summary["objective"]
        print(f"objective       {objective['metric']} ({objective['type']}) = {objective['value']:.4f}")
    print(f"metrics         {summary['metrics']}")
    print(f"hyperparameters {summary['best_hyperparameters']}")
    print(f"best weights    {(summary.get('best_weights') or {}).get('model_data_url')}")
    print(f"model package   {summary['model_package']}")
    gate = summary.get("quality_gate") or {}
    print(f"quality gate    {'deploy' if gate.get('deploy') else 'no deploy'}: {gate.get('reason')}")
    smoke = summary.get("smoke_test")
    if smoke:
        print(
            f"endpoint        {summary['endpoint']}: {smoke['samples']} answered {smoke['response_bytes']} bytes "
            f"({smoke['response_content_type']}) in {smoke['latency_seconds']} s: "
            f"{smoke['response_preview'][:80]!r}; check {smoke['check']}"
        )
        print(f"autoscaling     {summary['autoscaling']}")
    elif summary.get("deploy"):
        print(f"endpoint        none: {summary['deploy']}")
    print("teardown        " + ("; ".join(summary["teardown"]["removed"]) or "nothing to remove"))
    if summary["teardown"].get("already_gone"):
        print("already gone    " + "; ".join(summary["teardown"]["already_gone"]))
    if summary.get("cost"):
        print(f"cost            {cost_line(summary['cost'])} (estimate, prices of {summary['cost'].get('prices')})")
    for host, figures in ((summary.get("resources") or {}).get("hosts") or {}).items():
        shown = ", ".join(f"{name} peak {f['peak']:.1f}% mean {f['mean']:.1f}%" for name, f in figures.items())
        print(f"used            {host}: {shown}")
    for verdict in (summary.get("resources") or {}).get("verdicts") or []:
        print(f"verdict         {verdict}")
    tracked = summary.get("mlflow") or {}
    print(f"MLflow run      {tracked.get('url') or 'not logged: ' + str(tracked.get('error'))}")
    print(f"summary JSON    {path} (the run wrote it to {summary.get('summary')})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--endpoint-url", default=os.environ.get("LOCALAWS_ENDPOINT", "http://127.0.0.1:4566"))
    parser.add_argument(
        "--experiment",
        default=os.environ.get("EXPERIMENT") or None,
        help="run this experiment's DAG (default: the examples, digits train and tune, diabetes train)",
    )
    parser.add_argument("--modes", default=None, help="with --experiment: train,tune (default train)")
    parser.add_argument("--out", default=str(ROOT / "out"))
    args = parser.parse_args()
    if args.experiment:
        runs = [(args.experiment, mode) for mode in (args.modes or "train").split(",")]
    else:
        runs = [(name, mode) for name, mode in DEFAULT_RUNS if not args.modes or mode in args.modes.split(",")]
    missing = sorted({name for name, _ in runs if not experiment_file(name).is_file()})
    if missing:
        raise SystemExit(f"no experiment file {', '.join(str(experiment_file(name)) for name in missing)}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with ensure_localaws(args.endpoint_url, out / "localaws.log"), ensure_mlflow(out, args.endpoint_url) as tracking:
        env = airflow_env(args.endpoint_url, out / "airflow-home")
        env["MLFLOW_TRACKING_URI"] = tracking.uri
        started = time.monotonic()
        migrate(env)
        print(f"Airflow home ready in {time.monotonic() - started:.1f}s ({env['AIRFLOW_HOME']})")
        failures = 0
        for index, (experiment, mode) in enumerate(runs):
            conf = {"mode": mode, **RUN_CONF.get(mode, {})}
            logical_date = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(time.time() + index))
            started = time.monotonic()
            log_path = out / f"dag-{experiment}-{mode}.log"
            print(f"\nrunning {dag_id(experiment)} in {mode} mode (log: {log_path}) ...")
            run = run_dag(env, conf, logical_date, log_path, experiment)
            print(f"{experiment} {mode} run finished {run['state']} in {time.monotonic() - started:.0f}s")
            summary = run.pop("summary")
            if summary is None:
                print(f"no summary was written; see {log_path}")
                failures += 1
                continue
            path = out / f"summary-{experiment}-{mode}.json"
            path.write_text(json.dumps({"dag_run": run, **summary}, indent=2))
            print_summary(summary, run, path)
            failures += run["state"] != "success"
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
