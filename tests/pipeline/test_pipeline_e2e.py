"""The pipeline DAG end to end against localaws, with ``dag.test()`` as `make run` runs it."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys

import pytest

from scripts.dag_test_forks import forks
from scripts.run_pipeline import airflow_env, dag_id, experiment_file, read_summary, run_dag
from tests.conftest import REPO_ROOT, unique
from tests.pipeline.notify_support import Inbox

DAG_ID = dag_id("digits")  # the digits example's DAG (experiments/digits)

pytestmark = [pytest.mark.timeout(1200), pytest.mark.e2e]  # whole DAG runs through dag.test()
QUICK = {"preset": "quick", "max_jobs": 4, "max_parallel_jobs": 2}


@pytest.fixture(scope="module")
def airflow(localaws_process, dag_test_home, tmp_path_factory):
    """Runs against localaws in the session's Airflow home (``home``: this module's folder, for the runs'
    logs), and an MLflow server (as `make run` starts one) the runs log to."""
    from scripts.mlflow_server import MlflowServer

    home = tmp_path_factory.mktemp("airflow-home")
    env = airflow_env(localaws_process.endpoint_url, dag_test_home)
    env["ML_PIPELINE_BUCKET"] = unique("pipeline")
    env["ML_PIPELINE_POLL_SECONDS"] = "1"
    # The deployment's notification target: every run's message lands in this topic's queue.
    inbox = Inbox(localaws_process, unique("runs"))
    env["AIRFLOW_VAR_ML_PIPELINE_NOTIFY"] = json.dumps({"sns_topic_arn": inbox.topic_arn})
    tracking = MlflowServer(home, localaws_process.endpoint_url, port=0, bucket=unique("mlflow")).start()
    env["MLFLOW_TRACKING_URI"] = tracking.uri
    yield {
        "inbox": inbox,
        "env": env,
        "bucket": env["ML_PIPELINE_BUCKET"],
        "localaws": localaws_process,
        "home": home,
        "group": unique("digits"),
        "mlflow": tracking,
    }
    tracking.stop()


def mlflow_client(airflow):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=airflow["mlflow"].uri, registry_uri=airflow["mlflow"].uri)


def run(airflow, conf: dict, date: str, name: str, **env) -> tuple[dict, dict | None]:
    # Each run judged against its own registry unless a test shares one: the localaws process (and
    # so the registry's production versions) is shared by every test in the session.
    conf = {"model_package_group": unique("digits"), **conf}
    environment = {**airflow["env"], **env}
    result = run_dag(environment, conf, date, airflow["home"] / f"{name}.log", "digits")
    summary = read_summary(airflow["localaws"].endpoint_url, environment["ML_PIPELINE_BUCKET"], result, "digits")
    return result, summary


def jobs_of(sm, key: str) -> list[dict]:
    return sm.list_training_jobs(NameContains=key, MaxResults=100)["TrainingJobSummaries"]


def notification(inbox: Inbox, summary: dict, outcome: str) -> dict:
    """The one message the run sent at its end (read back from the SQS queue of ``inbox``'s topic): its
    outcome, its subject, what it says of the run; nothing of the connection's credentials in it."""
    [message] = inbox.of_run(summary["run"])
    assert message["attributes"] == {"experiment": "digits", "run": summary["run"], "outcome": outcome}
    assert message["subject"].startswith(f"digits {summary['mode']} run {summary['run']}: ")
    text = message["message"]
    assert f"Run {summary['run']} of experiment digits " in text and f"/runs/{summary['run']}/summary.json" in text
    for secret in ('"password"', "localaws:localaws", "aws_secret_access_key", "AWS_SECRET"):
        assert secret not in text
    return message


DATE_A = "2026-03-02T00:00:00+00:00"


@pytest.fixture(scope="module")
def train_run(airflow):
    """One train-mode run whose outcome several tests read (and logical date A of the two-dates test)."""
    conf = {"mode": "train", "model_package_group": airflow["group"], **QUICK}
    result, summary = run(airflow, conf, DATE_A, "train")
    assert result["state"] == "success", (airflow["home"] / "train.log").read_text()[-5000:]
    return result, summary


def test_train_mode_end_to_end(airflow, train_run):
    localaws = airflow["localaws"]
    result, summary = train_run
    assert summary["metrics"]["validation:accuracy"] >= 0.9
    assert summary["smoke_test"]["check"]["accuracy"] >= 0.9
    assert summary["quality_gate"]["deploy"] is True
    weights = summary["best_weights"]["model_data_url"]
    assert weights == f"s3://{airflow['bucket']}/models/digits/{summary['run']}/model.tar.gz"
    s3 = localaws.client("s3")
    metadata = json.loads(
        s3.get_object(Bucket=airflow["bucket"], Key=f"models/digits/{summary['run']}/metadata.json")["Body"].read()
    )
    assert metadata["training_job"] == summary["training_job"]
    assert metadata["objective"]["metric"] == "validation:loss"
    assert metadata["image"] == summary["code"]["training_image"]
    sm = localaws.client("sagemaker")
    package = sm.describe_model_package(ModelPackageName=summary["model_package"])
    assert package["ModelApprovalStatus"] == "Approved"
    # Teardown removed the endpoint (keep_endpoint defaults to off), its config and model.
    assert f"deleted endpoint digits-{summary['run']}" in summary["teardown"]["removed"]
    assert sm.list_endpoints(NameContains="digits")["Endpoints"] == []
    assert [j["TrainingJobStatus"] for j in jobs_of(sm, summary["run"])] == ["Completed"]
    assert summary["jobs"]["training"] == [
        {"name": summary["training_job"], "status": "Completed", "secondary_status": "Completed"}
    ]
    # The run's cost: its training job and its endpoint, each priced (tests/pipeline/test_cost.py checks the sums).
    cost = summary["cost"]
    assert cost["total_usd"] == pytest.approx(sum(item["usd"] for item in cost["items"]), abs=1e-6)
    assert cost["total_usd"] > 0
    assert sorted(item["what"].split()[0] for item in cost["items"]) == ["endpoint", "training"]
    log = (airflow["home"] / "train.log").read_text()
    # Each task says its outcome in a plain log line; the job's log is printed once; no credential chatter.
    assert "[ml_pipeline.dag]" in next(line for line in log.splitlines() if "quality gate: deploy: " in line)
    assert "smoke test passed: smoke/samples.csv answered " in log and "'accuracy': " in log
    assert f"training job {summary['training_job']} is Completed in " in log
    assert log.count("epoch=1 ") == 1, "the training log was printed more than once"
    assert "credentials retrieved" not in log
    # Its end was notified: what ran, the gate's verdict, the endpoint, the model version.
    message = notification(airflow["inbox"], summary, "succeeded")
    assert message["subject"] == f"digits train run {summary['run']}: succeeded, model promoted"
    assert f"  training job {summary['training_job']}: Completed\n" in message["message"]
    assert f"Against production: deploy: {summary['quality_gate']['reason']}" in message["message"]
    assert f"Endpoint: {summary['endpoint']}, smoke test passed in " in message["message"]
    assert f"Model package: {summary['model_package']}" in message["message"]
    assert f"notified: {message['subject']!r} to SNS topic {airflow['inbox'].topic_arn}" in log
    # compute=sagemaker provisions nothing: one decision skipped the group's tasks, none was started.
    assert "starting task_id=provision.needed_steps" in log and "starting task_id=provision.vpc" not in log
    # What its training host and endpoint instance used, read back from CloudWatch (SageMaker's metrics).
    resources = summary["resources"]
    assert "error" not in resources, resources
    host = resources["hosts"][f"{summary['training_job']}/algo-1"]
    assert (
        0 < host["CPUUtilization"]["mean"] <= host["CPUUtilization"]["peak"] and host["MemoryUtilization"]["peak"] > 0
    )
    assert f"{summary['endpoint']}/AllTraffic" in resources["hosts"], resources
    # The run in MLflow: tagged with the run and the Airflow run, the job's series (a point per epoch line and
    # the best epoch's), the registered version linked to the SageMaker package version.
    ml = mlflow_client(airflow)
    tracked = ml.get_run(summary["mlflow"]["run_id"])
    assert tracked.data.tags["ml_pipeline.run"] == summary["run"] and tracked.info.status == "FINISHED"
    assert tracked.data.tags["airflow.dag_id"] == DAG_ID and tracked.data.tags["airflow.run_id"] == result["run_id"]
    assert tracked.data.params["image"] == summary["code"]["training_image"]
    history = ml.get_metric_history(tracked.info.run_id, "validation:loss")
    assert len(history) > 2 and [p.step for p in history] == list(range(1, len(history) + 1))
    assert history[-1].value == pytest.approx(summary["metrics"]["validation:loss"])
    [version] = ml.search_model_versions(f"name = '{airflow['group']}' and run_id = '{tracked.info.run_id}'")
    assert version.tags["sagemaker.model_package_arn"] == summary["model_package"]
    assert f"MLflow: run {tracked.info.run_id} logged in " in log


def test_clearing_the_finished_training_task_reattaches_instead_of_starting_a_second_job(airflow, train_run):
    result, _ = train_run
    completed = subprocess.run(
        [sys.executable, "-m", "airflow", "tasks", "test", DAG_ID, "train.start_training_job", result["run_id"]],
        env=airflow["env"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output[-4000:]
    assert "Re-attaching to training job" in output
    from ml_pipeline.naming import run_key
    import pendulum

    key = run_key(result["run_id"], pendulum.parse(result["logical_date"]), "digits")
    assert len(jobs_of(airflow["localaws"].client("sagemaker"), key)) == 1


def test_tune_mode_end_to_end(airflow, train_run):
    # Its trials cannot win: one epoch under weight_decay 1 leaves a near-uniform model (validation loss about
    # 2.3, the train run's about 0.1), so the gate keeps the train run's version in production.
    losing = {"epochs": 1, "weight_decay": 1.0}
    conf = {"mode": "tune", "model_package_group": airflow["group"], "hyperparameters": losing, **QUICK}
    result, summary = run(airflow, conf, "2026-03-09T00:00:00+00:00", "tune")
    assert result["state"] == "success", (airflow["home"] / "tune.log").read_text()[-5000:]
    assert summary["trials"]["Completed"] == 4
    [tuning] = summary["jobs"]["tuning"]
    assert tuning["name"] == summary["tuning_job"] and tuning["status"] == "Completed"
    assert tuning["trials"]["Completed"] == 4
    assert summary["training_job"].startswith(summary["tuning_job"] + "-")
    assert set(summary["best_hyperparameters"]) == {"hidden_units", "learning_rate", "dropout", "optimizer"}
    # Judged against the version the train-mode run put in production (same group).
    gate = summary["quality_gate"]
    assert "production's" in gate["reason"], gate
    assert gate["production"]["objective_metric"] == "validation:loss"
    assert gate["production"]["run"] == train_run[1]["run"]
    assert gate["deploy"] is False and "does not beat" in gate["reason"], gate
    assert summary["smoke_test"] is None and summary["endpoint"] is None
    # The message of a gate that kept production: its verdict against production's objective.
    message = notification(airflow["inbox"], summary, "kept_production")
    assert message["subject"] == f"digits tune run {summary['run']}: succeeded, production kept"
    assert f"Against production: keep production: {gate['reason']}" in message["message"]
    assert f"  tuning job {summary['tuning_job']}: Completed, trials 4 Completed" in message["message"]
    assert "Endpoint: none: production's model goes on serving" in message["message"]
    # In MLflow: the trials as child runs of the run, each with its series, the best one marked.
    ml = mlflow_client(airflow)
    parent = ml.get_run(summary["mlflow"]["run_id"])
    children = ml.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'"
    )
    assert len(children) == 4
    assert [c.info.run_name for c in children if c.data.tags["best"] == "true"] == [summary["training_job"]]
    # One epoch each (see above): its line and the best epoch's, a series of two points.
    assert all(len(ml.get_metric_history(c.info.run_id, "validation:loss")) >= 2 for c in children)
    assert parent.data.tags["quality_gate"] == "keep production"


def test_two_logical_dates_write_two_sets_of_artifacts_and_overwrite_nothing(airflow, train_run):
    """Date A is the train-mode run; date B also runs its SageMaker job inside the run's own VPC, which
    teardown removes."""
    from ml_pipeline.infra.teardown import remaining

    _, a = train_run
    second, b = run(
        airflow, {"mode": "train", "provision_vpc": True, **QUICK}, "2026-04-13T00:00:00+00:00", "date-b-in-vpc"
    )
    assert second["state"] == "success", (airflow["home"] / "date-b-in-vpc.log").read_text()[-5000:]
    assert a["run"] != b["run"] and a["training_job"] != b["training_job"]
    assert a["data"]["train"] != b["data"]["train"]  # each date trains on its own partition
    s3 = airflow["localaws"].client("s3")
    for prefix in (
        f"models/digits/{a['run']}/",
        f"models/digits/{b['run']}/",
        "datasets/digits/20260302/",
        "datasets/digits/20260413/",
    ):
        versions = s3.list_object_versions(Bucket=airflow["bucket"], Prefix=prefix).get("Versions", [])
        assert versions, prefix
        keys = [v["Key"] for v in versions]
        assert len(keys) == len(set(keys)), f"an object under {prefix} was overwritten"
    # provision_vpc: date B's job ran in the VPC provisioning made, and teardown left nothing of it.
    job = airflow["localaws"].client("sagemaker").describe_training_job(TrainingJobName=b["training_job"])
    assert job["VpcConfig"]["Subnets"] and job["VpcConfig"]["SecurityGroupIds"]
    assert b["teardown"]["stack"]["removed"]["vpc"]
    assert set(remaining(airflow["localaws"].client, b["run"]).values()) == {0}


def test_a_failing_training_job_fails_the_run_and_still_tears_down(airflow, tmp_path, monkeypatch):
    root = tmp_path / "experiments"
    broken = root / "digits"
    shutil.copytree(REPO_ROOT / "experiments" / "digits", broken, ignore=shutil.ignore_patterns("__pycache__"))
    (broken / "train.py").write_text(
        "print('this training script is broken on purpose', flush=True)\nraise RuntimeError('broken on purpose')\n"
    )
    # This experiment's own notification target, which wins over the deployment's.
    own = Inbox(airflow["localaws"], unique("broken"))
    with open(broken / "experiment.yaml", "a") as experiment_yaml:
        experiment_yaml.write(f'notify: {{sns_topic_arn: "{own.topic_arn}", outcomes: [failed]}}\n')
    monkeypatch.setenv("ML_PIPELINE_EXPERIMENTS_DIR", str(root))  # the DAG file run_dag parses
    result, summary = run(
        airflow,
        {"mode": "train", **QUICK},
        "2026-05-04T00:00:00+00:00",
        "broken",
        ML_PIPELINE_EXPERIMENTS_DIR=str(root),
    )
    assert result["state"] == "failed"
    assert summary is not None, "teardown did not run"
    sm = airflow["localaws"].client("sagemaker")
    jobs = jobs_of(sm, summary["run"] if summary else "none")
    assert jobs and all(j["TrainingJobStatus"] == "Failed" for j in jobs)
    # The summary names the job and how it ended, though no best job was ever picked.
    assert summary["state"] == "failed" and summary["training_job"] == jobs[0]["TrainingJobName"]
    assert summary["jobs"]["training"][0]["status"] == "Failed"
    assert "broken on purpose" in summary["jobs"]["training"][0]["reason"]
    assert f"training job {jobs[0]['TrainingJobName']} was Failed (" in (airflow["home"] / "broken.log").read_text()
    assert len(jobs) == 1  # the sensor's retries re-check the failed job; nothing starts a duplicate
    # The failure was notified to the experiment's target (not the deployment's): the failing task, the
    # job's FailureReason and the end of its log.
    message = notification(own, summary, "failed")
    assert airflow["inbox"].of_run(summary["run"], timeout=0) == []
    reason = sm.describe_training_job(TrainingJobName=jobs[0]["TrainingJobName"])["FailureReason"]
    assert "broken on purpose" in reason
    assert message["subject"] == f"digits train run {summary['run']}: FAILED at train.wait_for_training_job"
    text = message["message"]
    assert "Failing task: train.wait_for_training_job" in text
    assert f"The training job {jobs[0]['TrainingJobName']}: Failed\nFailureReason: {reason}\n" in text
    end_of_log = text.split("The end of its log (/aws/sagemaker/TrainingJobs, ", 1)[1]
    assert "    this training script is broken on purpose" in end_of_log
    assert "    RuntimeError: broken on purpose" in end_of_log
    tracked = mlflow_client(airflow).get_run(summary["mlflow"]["run_id"])
    assert tracked.info.status == "FAILED" and tracked.data.tags["state"] == "failed"
    assert sm.list_endpoints(NameContains="digits")["Endpoints"] == []
    assert sm.list_models(NameContains=summary["run"])["Models"] == []
    assert sm.list_endpoint_configs(NameContains=summary["run"])["EndpointConfigs"] == []


def test_an_invalid_hyperparameter_file_is_refused_before_anything_is_created(airflow, tmp_path):
    hyperparams = tmp_path / "hyperparams"
    shutil.copytree(REPO_ROOT / "include" / "hyperparams" / "digits", hyperparams / "digits")
    preset = json.loads((hyperparams / "digits" / "quick.json").read_text())
    preset["hyperparameters"]["learning_rate"] = [0.01]  # a preset overrides with scalars only
    (hyperparams / "digits" / "quick.json").write_text(json.dumps(preset))
    bucket = unique("never")
    # The experiment's presets are part of its DAG file: a bad one is the DAG's import error, naming the
    # file and the field, and no run starts.
    with pytest.raises(SystemExit, match="did not finish"):
        run(
            airflow,
            {"mode": "train", **QUICK},
            "2026-06-08T00:00:00+00:00",
            "badfile",
            ML_PIPELINE_HYPERPARAMS_DIR=str(hyperparams),
            ML_PIPELINE_BUCKET=bucket,
        )
    log = (airflow["home"] / "badfile.log").read_text()
    assert f"no DAG {DAG_ID}" in log
    assert "experiments/digits/experiment.yaml: presets.quick: " in log
    assert "quick.json: hyperparameters.learning_rate: [0.01] is not" in log
    s3 = airflow["localaws"].client("s3")
    assert bucket not in {b["Name"] for b in s3.list_buckets()["Buckets"]}


def test_host_compute_provisions_trains_on_the_host_deploys_and_leaves_nothing(airflow):
    # One instance type here; tests/infra/test_host_training.py runs g5 and dl1 through the same document.
    from ml_pipeline.infra.teardown import remaining

    conf = {"mode": "train", "compute": "host", "host_instance_type": "g5.xlarge", **QUICK}
    result, summary = run(airflow, conf, "2026-08-03T00:00:00+00:00", "host")
    log = (airflow["home"] / "host.log").read_text()
    assert result["state"] == "success", log[-5000:]
    assert summary["training_job"].startswith("digits-")
    assert summary["metrics"]["validation:accuracy"] >= 0.9
    assert summary["smoke_test"]["check"]["accuracy"] >= 0.9  # the host's weights, deployed like a SageMaker job's
    stack = summary["teardown"]["stack"]
    assert stack["removed"]["instance"] and stack["removed"]["vpc"]
    counts = remaining(airflow["localaws"].client, summary["run"])
    assert set(counts.values()) == {0}, counts


#: dag.test() of each case in turn, in one fork of the module's warmed interpreter; each case's output
#: between its markers, ending with how the run ended (its state, or the exception that stopped it).
REFUSALS = """
import json, sys, traceback, pendulum
from airflow.dag_processing.dagbag import DagBag
dag = DagBag(dag_folder=sys.argv[1]).get_dag(sys.argv[2])
for number, (conf, when) in enumerate(json.loads(sys.argv[3])):
    print(f"CASE {number} BEGIN", flush=True)
    try:
        outcome = str(dag.test(logical_date=pendulum.parse(when), run_conf=conf).state)
    except Exception as error:
        traceback.print_exc()
        outcome = type(error).__name__
    sys.stderr.flush()
    print(f"CASE {number} END {outcome}", flush=True)
"""

BAD_PARAMS = [
    {"instance_count": 99},
    {"mode": "sideways"},
    {"preset": "huge"},
    {"hyperparameters": {"epochs": float("nan")}},
    {"ecr_repository": "digits/../../x"},
]
BAD_HOST_SETTINGS = [
    ({"compute": "host", "allowed_cidrs": ["0.0.0.0/0"]}, "0.0.0.0/0"),
    ({"compute": "host", "ami_id": "ami-0123456789abcdef0"}, "ami-0123456789abcdef0"),
    ({"compute": "host", "ssh_key_name": "ops", "allowed_cidrs": ["::ffff:0.0.0.0/96"]}, "covers every IPv4 address"),
    ({"compute": "host", "host_instance_type": "p3.2xlarge"}, "p3.2xlarge"),  # the Param's schema refuses it
]


def test_invalid_params_and_bad_host_settings_are_refused_before_anything_is_created(airflow):
    """An invalid param is refused by the Params' validation; a bad host setting fails the run (or its Param's
    schema refuses it) naming the setting; no bucket, VPC or training job is created by any of them."""
    localaws = airflow["localaws"]
    s3, sm, ec2 = localaws.client("s3"), localaws.client("sagemaker"), localaws.client("ec2")
    buckets = {b["Name"] for b in s3.list_buckets()["Buckets"]}
    jobs = len(sm.list_training_jobs(MaxResults=100)["TrainingJobSummaries"])
    vpcs = len(ec2.describe_vpcs()["Vpcs"])
    never = unique("never")  # the bad params' bucket (the Param's default); each host case names its own
    host_buckets = [unique("never") for _ in BAD_HOST_SETTINGS]
    cases = [(conf, "2026-06-01T00:00:00+00:00") for conf in BAD_PARAMS] + [
        ({"mode": "train", **QUICK, **conf, "bucket": bucket}, f"2026-08-{24 + number}T00:00:00+00:00")
        for number, ((conf, _), bucket) in enumerate(zip(BAD_HOST_SETTINGS, host_buckets, strict=True))
    ]
    airflow["inbox"].receive()  # the earlier runs' messages, kept by run
    log_path = airflow["home"] / "refused.log"
    forks(airflow["env"]).run(
        {**airflow["env"], "ML_PIPELINE_BUCKET": never, "PYTHONUNBUFFERED": "1"},
        [str(experiment_file("digits")), DAG_ID, json.dumps(cases)],
        log_path,
        code=REFUSALS,
    )
    output = log_path.read_text()
    outputs = [output[output.index(f"CASE {n} BEGIN") : output.index(f"CASE {n} END")] for n in range(len(cases))]
    outcomes = [output.split(f"CASE {n} END ", 1)[1].split("\n", 1)[0] for n in range(len(cases))]
    for conf, out, outcome in zip(BAD_PARAMS, outputs, outcomes, strict=False):
        assert outcome == "ParamValidationError" and "ParamValidationError" in out, (conf, out[-3000:])
    for (conf, reason), out, outcome in zip(
        BAD_HOST_SETTINGS, outputs[len(BAD_PARAMS) :], outcomes[len(BAD_PARAMS) :], strict=True
    ):
        assert outcome in ("failed", "ParamValidationError"), (conf, outcome, out[-3000:])
        if outcome == "ParamValidationError":  # refused by the Param's schema: the run never started
            assert "ParamValidationError" in out
        assert reason in out, (conf, out[-3000:])
    assert {b["Name"] for b in s3.list_buckets()["Buckets"]} == buckets
    assert len(sm.list_training_jobs(MaxResults=100)["TrainingJobSummaries"]) == jobs
    assert len(ec2.describe_vpcs()["Vpcs"]) == vpcs
    # A run refused before any teardown ran is notified by the DAG's failure callback; a refused trigger
    # (bad params) is no run and sends nothing.
    messages = airflow["inbox"].receive()
    assert len(messages) == outcomes.count("failed"), [m["subject"] for m in messages]
    for message in messages:
        assert re.fullmatch(r"digits train run \d{8}-[0-9a-f]{6}: FAILED at (plan|preflight)", message["subject"])
        assert "No summary: the run ended before its teardown" in message["message"]


#: Prints what a task would read of its run's variable and connection (the environment's secrets backend).
READS = """
import sys
from airflow.models import Variable
from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook
print("VARIABLE", Variable.get(sys.argv[1]))
print("ENDPOINT", AwsBaseHook(aws_conn_id="aws_default").conn_config.endpoint_url)
"""


def test_runs_that_differ_in_variables_and_connections_share_one_warm_interpreter_and_read_their_own(airflow):
    """Airflow reads AIRFLOW_VAR_* and AIRFLOW_CONN_* when a task asks, not when it is imported: a run's
    notification target or its connection to another localaws does not cost a warm interpreter of its own."""
    from tests.support import localaws_connection

    base = airflow["env"]
    other = {
        **base,
        "AIRFLOW_VAR_ML_PIPELINE_NOTIFY": '{"sns_topic_arn": "arn:aws:sns:us-east-1:123456789012:elsewhere"}',
        "AIRFLOW_CONN_AWS_DEFAULT": localaws_connection("http://127.0.0.1:9"),
    }
    assert forks(other) is forks(base)
    for env, name in ((base, "reads-base"), (other, "reads-other")):
        log_path = airflow["home"] / f"{name}.log"
        assert forks(env).run(env, ["ML_PIPELINE_NOTIFY"], log_path, code=READS) == 0, log_path.read_text()
        lines = log_path.read_text().splitlines()
        assert f"VARIABLE {env['AIRFLOW_VAR_ML_PIPELINE_NOTIFY']}" in lines
        endpoint = "http://127.0.0.1:9" if env is other else airflow["localaws"].endpoint_url
        assert f"ENDPOINT {endpoint}" in lines
