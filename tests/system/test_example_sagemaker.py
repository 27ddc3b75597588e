"""The Amazon provider's system-test DAG ``example_sagemaker`` (tests/system/example_sagemaker.py), with only
its images swapped for ours, run with ``dag.test()`` against a localaws to the end of its teardown: every
task succeeds, and its preprocessing, training, tuning, transform and registry steps did real work.

The DAG deletes its bucket and its model package group at the end, as it should; so that what they held
can be read back, the run (in a fresh interpreter, as ``make run`` runs DAGs) copies the bucket to a folder
just before ``delete_bucket`` and describes the group's packages just before ``delete_model_group``."""

from __future__ import annotations

import csv
import io
import json
import shutil
import subprocess
import sys
import tarfile
import uuid
from pathlib import Path

import pytest

from scripts.run_pipeline import airflow_env, migrate
from tests.conftest import REPO_ROOT
from tests.fixtures.docker_engine import ecr_uri
from tests.support import ROLE_ARN

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]  # the one whole-DAG run of the provider's example

HERE = Path(__file__).parent
DAG_FILE = HERE / "example_sagemaker.py"
IMAGES = HERE / "images"

INNER = """
import json, sys
from pathlib import Path
import boto3, pendulum
from airflow.dag_processing.dagbag import DagBag

dag_file, keep = sys.argv[1], Path(sys.argv[2])
bag = DagBag(dag_folder=dag_file)
dag = bag.get_dag("example_sagemaker")
if dag is None:
    sys.exit("no DAG example_sagemaker: " + json.dumps(bag.import_errors))

def keep_bucket(context):
    bucket = context["ti"].xcom_pull(task_ids="set_up", key="bucket_name")
    s3 = boto3.client("s3")
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for item in page.get("Contents", []):
            target = keep / "bucket" / item["Key"]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read())

def keep_packages(context):
    group = context["ti"].xcom_pull(task_ids="set_up", key="model_package_group_name")
    sm = boto3.client("sagemaker")
    summaries = sm.list_model_packages(ModelPackageGroupName=group)["ModelPackageSummaryList"]
    described = [sm.describe_model_package(ModelPackageName=s["ModelPackageArn"]) for s in summaries]
    (keep / "packages.json").write_text(json.dumps(described, default=str))

dag.get_task("delete_bucket")._pre_execute_hook = keep_bucket
dag.get_task("delete_model_group")._pre_execute_hook = keep_packages
run = dag.test(logical_date=pendulum.parse("2026-11-02T00:00:00+00:00"))
states = {ti.task_id: str(ti.state) for ti in run.get_task_instances()}
print("DAGRUN " + json.dumps({"state": str(run.state), "tasks": states}))
"""


def knn_labels(model: dict, rows: list[list[float]]) -> list[float]:
    sys.path.insert(0, str(IMAGES / "knn"))
    try:
        from knn import predict
    finally:
        sys.path.pop(0)
    points = [(point[0], point[1:]) for point in model["points"]]
    return [predict(points, model["k"], row) for row in rows]


def csv_rows(path: Path) -> list[list[float]]:
    return [[float(v) for v in row] for row in csv.reader(io.StringIO(path.read_text())) if row]


def model_of(path: Path) -> dict:
    with tarfile.open(path) as archive:
        return json.load(archive.extractfile("model.json"))


def test_the_providers_example_sagemaker_dag_runs_to_the_end_of_its_teardown(localaws_process, tmp_path):
    from localaws.client import register_image

    endpoint = localaws_process.endpoint_url
    env_id = "st" + uuid.uuid4().hex[:8]
    knn_image = ecr_uri(f"knn-{env_id}", "1")
    register_image(endpoint, knn_image, IMAGES / "knn")  # as AWS's algorithm images exist before a run
    home = tmp_path / "airflow"
    dags = tmp_path / "dags"  # the DAG's own bundle (dag.test() syncs the DAG from its bundle)
    dags.mkdir()
    shutil.copy(DAG_FILE, dags / DAG_FILE.name)
    bundle = {"name": "system-tests", "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle"}
    env = {
        **airflow_env(endpoint, home),
        "AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST": json.dumps([{**bundle, "kwargs": {"path": str(dags)}}]),
        "AWS_ENDPOINT_URL": endpoint,  # the DAG's own boto3 calls (its set up and teardown tasks)
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "SYSTEM_TESTS_ENV_ID": env_id,
        "ROLE_ARN": ROLE_ARN,
        "SYSTEM_TESTS_KNN_IMAGE": knn_image,
        "SYSTEM_TESTS_IMAGE_CONTEXTS": json.dumps({"preprocess": str(IMAGES / "preprocess")}),
    }
    migrate(env)
    keep = tmp_path / "kept"
    keep.mkdir()
    log_path = tmp_path / "dag.log"
    runner = tmp_path / "run_example.py"  # a file: the DAG's serialisation reads the hooks' source
    runner.write_text(INNER)
    with open(log_path, "w") as log:
        subprocess.run(
            [sys.executable, str(runner), str(dags / DAG_FILE.name), str(keep)],
            env=env,
            cwd=REPO_ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            timeout=800,
        )
    lines = [line for line in log_path.read_text().splitlines() if line.startswith("DAGRUN ")]
    assert lines, log_path.read_text()[-8000:]
    run = json.loads(lines[-1][len("DAGRUN ") :])
    failed = {task: state for task, state in run["tasks"].items() if state not in ("success", "skipped")}
    assert run["state"] == "success" and not failed, (failed, log_path.read_text()[-8000:])
    assert run["tasks"]["watcher"] == "skipped"  # nothing failed, teardown included
    assert all(state == "success" for task, state in run["tasks"].items() if task != "watcher")

    sm, s3, ecr = (localaws_process.client(name) for name in ("sagemaker", "s3", "ecr"))
    bucket = keep / "bucket" / env_id

    # Preprocessing split the 600 records 70/30, the label off the test set.
    processed = bucket / "processed-input-data"
    train, test = csv_rows(processed / "train.csv"), csv_rows(processed / "test.csv")
    assert (len(train), len(test)) == (420, 180)
    assert {len(row) for row in train} == {3} and {len(row) for row in test} == {2}
    assert all(row[0] == row[1] % 100 for row in train)  # each label still with its own record
    features = sorted([tuple(row[1:]) for row in train] + [tuple(row) for row in test])
    assert features == sorted((float(i), float(600 - i)) for i in range(600))
    assert sm.describe_processing_job(ProcessingJobName=f"{env_id}-processing")["ProcessingJobStatus"] == "Completed"

    # Training kept its sample (all 420 records, k=3) as the model.
    model = model_of(bucket / "results" / f"{env_id}-train" / "output" / "model.tar.gz")
    assert model["k"] == 3 and sorted(map(tuple, model["points"])) == sorted(map(tuple, train))
    training = sm.describe_training_job(TrainingJobName=f"{env_id}-train")
    assert training["TrainingJobStatus"] == "Completed"
    assert "train:accuracy" in {m["MetricName"] for m in training["FinalMetricDataList"]}

    # Tuning ran its trials on the same data: the best one's objective is its own test:accuracy.
    tuning = sm.describe_hyper_parameter_tuning_job(HyperParameterTuningJobName=f"{env_id}-tune")
    assert tuning["HyperParameterTuningJobStatus"] == "Completed"
    assert tuning["TrainingJobStatusCounters"]["Completed"] == 2
    best = tuning["BestTrainingJob"]
    best_job = sm.describe_training_job(TrainingJobName=best["TrainingJobName"])
    objective = {m["MetricName"]: m["Value"] for m in best_job["FinalMetricDataList"]}["test:accuracy"]
    assert best["FinalHyperParameterTuningJobObjectiveMetric"]["Value"] == pytest.approx(objective)
    best_model = model_of(bucket / "results" / best["TrainingJobName"] / "output" / "model.tar.gz")
    assert best_model["k"] == int(best["TunedHyperParameters"]["k"])

    # The transform scored every test record with the trained model, one label a line.
    scored = (bucket / "transform" / "test.csv.out").read_text().split()
    assert [float(label) for label in scored] == knn_labels(model, test)

    # The registry held the model's version, pointing at its weights and image.
    (package,) = json.loads((keep / "packages.json").read_text())
    container = package["InferenceSpecification"]["Containers"][0]
    assert container["Image"] == knn_image
    assert container["ModelDataUrl"] == training["ModelArtifacts"]["S3ModelArtifacts"]

    # AutoML ran to its time limit; the teardown left nothing behind.
    automl = sm.describe_auto_ml_job(AutoMLJobName=f"{env_id}-automl")
    assert (automl["AutoMLJobStatus"], automl["AutoMLJobSecondaryStatus"]) == ("Stopped", "MaxAutoMLJobRuntimeReached")
    assert f"{env_id}-sagemaker-example" not in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    assert f"{env_id}-repo" not in [r["repositoryName"] for r in ecr.describe_repositories()["repositories"]]
    experiments = [e["ExperimentName"] for e in sm.list_experiments(MaxResults=100)["ExperimentSummaries"]]
    assert not [name for name in experiments if name.startswith(env_id)]
    assert not sm.list_model_package_groups(NameContains=env_id)["ModelPackageGroupSummaryList"]
    assert not sm.list_models(NameContains=env_id)["Models"]
