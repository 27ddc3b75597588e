"""The pipeline DAG's figures: how long each DAG file takes to parse, how long 20 experiments' DAGs take,
and how much the chain adds to the time its jobs take themselves."""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PARSE = r"""
import importlib, importlib.util, sys, time
import airflow.sdk  # loaded once by the dag-processor; not the file's cost
if sys.argv[2] == "processor":
    # As Airflow's dag-processor does before it forks the parsing process
    # ([dag_processor] parsing_pre_import_modules, on by default): the file's own airflow.* imports.
    from airflow.utils.file import iter_airflow_imports
    for module in iter_airflow_imports(sys.argv[1]):
        importlib.import_module(module)
started = time.perf_counter()
spec = importlib.util.spec_from_file_location("dag_file", sys.argv[1])
spec.loader.exec_module(importlib.util.module_from_spec(spec))
print("PARSE %.4f" % (time.perf_counter() - started))
"""


def dag_parse_times(repeats: int = 5) -> dict:
    """Each DAG file's parse time in a fresh interpreter, two ways. ``processor``: what Airflow's
    dag-processor spends on each parse, after pre-importing the file's ``airflow.*`` imports (the
    Amazon provider, with boto3) before it forks. Goal: < 0.2 s. ``cold``: everything after
    ``airflow.sdk``, the provider's import included (what ``python dags/<file>`` adds to Airflow)."""
    env = {
        **os.environ,
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "PYTHONPATH": os.pathsep.join([str(ROOT / "plugins"), str(ROOT)]),
    }
    out = {}
    for path in sorted((ROOT / "dags").glob("*.py")):
        figures = {}
        for how in ("processor", "cold"):
            times = []
            for _ in range(repeats):
                result = subprocess.run(
                    [sys.executable, "-c", PARSE, str(path), how], env=env, capture_output=True, text=True, check=True
                )
                times.append(float(result.stdout.split("PARSE ")[1]))
            figures[how] = {"median_seconds": round(statistics.median(times), 3), "all": times}
        out[path.name] = {**figures, "goal": "processor < 0.2"}
    return out


PARSE_EXPERIMENTS = r"""
import gc, importlib, sys, time
from pathlib import Path
import airflow.sdk  # loaded once by the dag-processor; not the files' cost
# The dag-processor's manager freezes its objects out of the collector's sight before it forks the parsing
# processes (DagFileProcessorManager.before_run: gc.freeze()), then pre-imports each file's airflow.* imports.
gc.freeze()
from airflow.utils.file import iter_airflow_imports
# The airflow.* imports of the module that builds the DAGs, as the dag-processor pre-imports a DAG file's.
for module in iter_airflow_imports(sys.argv[2]):
    importlib.import_module(module)
from airflow.dag_processing.importers.base import AbstractDagImporter  # the dag-processor's own
started, cpu = time.perf_counter(), time.process_time()
from ml_pipeline.experiment_importer import ExperimentDagImporter
importer = ExperimentDagImporter()
results = [importer.import_file(path, bundle_path=Path(sys.argv[1])) for path in importer.list_dag_files(sys.argv[1])]
wall, cpu = time.perf_counter() - started, time.process_time() - cpu
assert all(r.dags and not r.errors for r in results), [r.errors for r in results]
print("PARSE %.4f %.4f %d %d" % (wall, cpu, len(results), sum(len(r.dags[0].tasks) for r in results)))
"""


def experiments_parse_time(tmp: Path, count: int = 20, repeats: int = 5) -> dict:
    """``count`` experiments (copies of the tests' experiment, each with a 20-character name) parsed into their
    DAGs in a fresh interpreter, as the dag-processor reads experiment files (ml_pipeline.experiment_importer),
    after the airflow.* imports of the module that builds them, with the objects loaded before them frozen out of
    the garbage collector's sight as the dag-processor freezes its own (without that, collections traversing
    Airflow's modules add about 0.1 s). Goal: at most 0.3 s in all. Wall time and the process's CPU time (the
    machine is shared: CPU time is what the parse itself costs)."""
    root = tmp / "experiments"
    source = ROOT / "tests" / "dags" / "experiments" / "plain"
    for index in range(count):
        shutil.copytree(source, root / f"parse-benchmarked-{index:02d}")
    env = {
        **os.environ,
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "ML_PIPELINE_EXPERIMENTS_DIR": str(root),
        "PYTHONPATH": os.pathsep.join([str(ROOT / "plugins"), str(ROOT)]),
    }
    walls, cpus = [], []
    for _ in range(repeats):
        result = subprocess.run(
            [
                sys.executable,
                "-c",
                PARSE_EXPERIMENTS,
                str(root),
                str(ROOT / "plugins" / "ml_pipeline" / "pipeline_dag.py"),
            ],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        wall, cpu, dags, tasks = result.stdout.split("PARSE ")[1].split()
        walls.append(float(wall))
        cpus.append(float(cpu))
    return {
        "experiments": int(dags),
        "tasks": int(tasks),
        "median_wall_seconds": round(statistics.median(walls), 3),
        "median_cpu_seconds": round(statistics.median(cpus), 3),
        "all_wall": walls,
        "all_cpu": cpus,
        "goal": "<= 0.3 in all",
    }


def _epochs_lasting(seconds: float, preset: dict, tmp: Path) -> int:
    """How many epochs of the preset train for about ``seconds`` here: two direct runs of the image's
    ``train``, whose difference leaves the process's start-up out."""
    from benchmarks.run import run_direct_process
    from ml_pipeline.config import sagemaker_hyperparameters

    took = {}
    for epochs in (30, 230):
        hyperparameters = {**preset["hyperparameters"], "epochs": epochs, "early_stopping_patience": 0}
        took[epochs] = run_direct_process(
            tmp / f"calibrate-{epochs}", sagemaker_hyperparameters({"hyperparameters": hyperparameters})
        )
    per_epoch = max((took[230] - took[30]) / 200, 1e-3)
    return max(100, round(seconds / per_epoch))


def pipeline_overhead(tmp: Path) -> dict:
    """One train-mode run of the DAG (``dag.test()``) on localaws with a training job of several
    minutes: the run's wall time against the sum of its jobs' own wall times (the training job, from
    creation to its end, and the endpoint, from creation to InService). Goal: at most 1.3 times.

    The ratio depends on the job's length (the chain's own steps take about half a minute whatever the
    job), and this machine's speed varies threefold from day to day, so the epochs are calibrated: as
    many as the image's ``train`` runs in BENCH_PIPELINE_TRAINING_SECONDS (300) alone. Inside the
    pipeline, with Airflow and localaws on the same cores, the job takes longer (its seconds are in
    the figures). BENCH_PIPELINE_EPOCHS fixes the epochs instead."""
    sys.path[:0] = [str(ROOT), str(ROOT / "plugins")]
    import boto3

    from scripts.run_pipeline import airflow_env, migrate, read_summary, run_dag
    from tests.conftest import LocalAWSProcess

    hyperparams = tmp / "hyperparams"
    shutil.copytree(ROOT / "include" / "hyperparams" / "digits", hyperparams / "digits", dirs_exist_ok=True)
    preset = json.loads((hyperparams / "digits" / "default.json").read_text())
    epochs = os.environ.get("BENCH_PIPELINE_EPOCHS") or _epochs_lasting(
        float(os.environ.get("BENCH_PIPELINE_TRAINING_SECONDS", "300")), preset, tmp
    )
    preset["hyperparameters"].update({"epochs": int(epochs), "early_stopping_patience": 0})
    (hyperparams / "digits" / "default.json").write_text(json.dumps(preset))

    server = LocalAWSProcess(tmp, "process").start()
    try:
        env = airflow_env(server.endpoint_url, tmp / "airflow-home")
        env.update(
            {
                "ML_PIPELINE_HYPERPARAMS_DIR": str(hyperparams),
                "ML_PIPELINE_BUCKET": "bench-pipeline",
                "ML_PIPELINE_POLL_SECONDS": "2",
            }
        )
        migrate(env)
        # Warm-up outside the timing: the image's cached environment and the bucket.
        run_dag(env, {"mode": "train", "preset": "quick"}, "2026-01-05T00:00:00+00:00", tmp / "warmup.log", "digits")
        started = time.monotonic()
        run = run_dag(
            env,
            {"mode": "train", "preset": "default", "keep_endpoint": True},
            "2026-01-12T00:00:00+00:00",
            tmp / "bench.log",
            "digits",
        )
        wall = time.monotonic() - started
        summary = read_summary(server.endpoint_url, "bench-pipeline", run, "digits")
        sm = boto3.client(
            "sagemaker",
            endpoint_url=server.endpoint_url,
            region_name="us-east-1",
            aws_access_key_id="x",
            aws_secret_access_key="x",
        )
        job = sm.describe_training_job(TrainingJobName=summary["training_job"])
        training = (job["TrainingEndTime"] - job["CreationTime"]).total_seconds()
        described = sm.describe_endpoint(EndpointName=summary["endpoint"])  # kept for this measurement
        endpoint = (described["LastModifiedTime"] - described["CreationTime"]).total_seconds()
        sm.delete_endpoint(EndpointName=summary["endpoint"])
    finally:
        server.stop()
    jobs = training + endpoint
    return {
        "state": run["state"],
        "epochs": int(epochs),
        "pipeline_wall_seconds": round(wall, 1),
        "training_job_seconds": round(training, 1),
        "endpoint_create_to_in_service_seconds": round(endpoint, 1),
        "chain_seconds": round(wall - jobs, 1),  # everything around the two jobs
        "ratio": round(wall / jobs, 3),
        "goal": "<= 1.3",
    }
