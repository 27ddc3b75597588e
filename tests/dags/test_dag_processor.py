"""Airflow's real dag-processor (``airflow dag-processor``, as `make airflow` runs it) on an experiments bundle:
two experiments become DAGs while a broken third is an import error of its own file, naming the file, the
field and what is wrong; the two DAGs stay schedulable; fixing the file clears its error and adds its DAG."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys

import pytest

from tests.dags.experiment_support import write_experiment

pytestmark = [pytest.mark.timeout(900), pytest.mark.slow]  # Airflow's own dag-processor, started and stopped


def process(env: dict, log_path) -> None:
    with open(log_path, "a") as log:
        subprocess.run(
            [sys.executable, "-m", "airflow", "dag-processor", "--num-runs", "2"],
            env=env,
            check=True,
            stdout=log,
            stderr=subprocess.STDOUT,
            timeout=600,
        )


def state(home) -> tuple[dict, dict]:
    """(import errors by (bundle, file), DAGs by id with their bundle, file and import-error flag)."""
    with sqlite3.connect(home / "airflow.db") as db:
        errors = {
            (bundle, name): text
            for bundle, name, text in db.execute("SELECT bundle_name, filename, stacktrace FROM import_error")
        }
        dags = {
            dag_id: {"bundle": bundle, "file": fileloc, "broken": bool(broken), "stale": bool(stale)}
            for dag_id, bundle, fileloc, broken, stale in db.execute(
                "SELECT dag_id, bundle_name, relative_fileloc, has_import_errors, is_stale FROM dag"
            )
        }
    return errors, dags


def test_the_real_dag_processor_records_a_broken_experiment_as_its_own_import_error(tmp_path, monkeypatch):
    from scripts.run_pipeline import airflow_env
    from tests.support import migrate

    root = tmp_path / "experiments"
    root.mkdir()
    write_experiment(root, "alpha")
    write_experiment(root, "beta", deploy=False)
    broken = write_experiment(root, "gamma", objective={"metric": "accuracy", "type": "Maximize"})
    monkeypatch.setenv("ML_PIPELINE_EXPERIMENTS_DIR", str(root))
    home = tmp_path / "home"
    env = airflow_env("http://127.0.0.1:9", home)  # nothing is called: the processor only parses
    env["AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL"] = "1"
    # Its second loop parses the files again at once, not 30 s later (the default's once every 30 s).
    env["AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL"] = "0"
    env.pop("AIRFLOW__CORE__UNIT_TEST_MODE", None)
    migrate(env)
    process(env, tmp_path / "processor.log")

    errors, dags = state(home)
    log = (tmp_path / "processor.log").read_text(errors="replace")[-3000:]
    assert errors == {
        ("experiments", "gamma/experiment.yaml"): "experiments/gamma/experiment.yaml: objective.metric: "
        "'accuracy' is not among the metric_definitions (train:rmse, validation:rmse)"
    }, log
    for name in ("alpha", "beta"):
        assert dags[f"train_{name}"] == {
            "bundle": "experiments",
            "file": f"{name}/experiment.yaml",
            "broken": False,
            "stale": False,
        }, log
    assert "train_gamma" not in dags
    assert "ml_pipeline_reaper" in dags and dags["ml_pipeline_reaper"]["bundle"] == "dags-folder"
    # Only experiment files were parsed in the experiments bundle: an experiment's own Python never is.
    assert not [line for line in log.splitlines() if "train.py" in line or "prepare.py" in line]

    (broken / "experiment.yaml").write_text(
        (broken / "experiment.yaml")
        .read_text()
        .replace("metric: accuracy", "metric: validation:rmse")
        .replace("type: Maximize", "type: Minimize")
    )
    os.utime(broken / "experiment.yaml")
    process(env, tmp_path / "processor.log")
    errors, dags = state(home)
    assert errors == {}
    assert dags["train_gamma"]["file"] == "gamma/experiment.yaml" and not dags["train_gamma"]["broken"]
