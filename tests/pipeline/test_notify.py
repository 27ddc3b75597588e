"""The message at a run's end (plugins/ml_pipeline/notify.py): composed from the summaries close_run writes
(closing.summarize) of real jobs on localaws, sent through the Amazon provider's notifiers to localaws's
SNS (read back from an SQS queue subscribed to the topic) and SES (read back from moto's records), and
its target checked as the experiment file's and the deployment's. Whole runs' messages: test_pipeline_e2e."""

from __future__ import annotations

import json
import types
from datetime import datetime, timezone

import pytest

from tests.conftest import LocalAWSProcess, unique
from tests.fixtures import digits_example
from tests.fixtures.images import QUICK_TRAINER, image_for
from tests.pipeline.notify_support import Inbox, ses_messages
from tests.support import localaws_connection, training_request, wait_for_training

pytestmark = pytest.mark.timeout(300)

#: The tests' own AWS connection to localaws, with credentials no message may carry.
CONNECTION = "notify_test"
KEY_ID, SECRET = "NOTIFYTESTKEYID", "notify-test-secret-never-sent"
FAILED_TASK = "train.wait_for_training_job"


@pytest.fixture(scope="module")
def connection(localaws_process):
    patch = pytest.MonkeyPatch()
    patch.setenv(
        f"AIRFLOW_CONN_{CONNECTION.upper()}",
        localaws_connection(localaws_process.endpoint_url, KEY_ID, SECRET),
    )
    yield CONNECTION
    patch.undo()


def _job(image: str, data: dict, name: str, **hyperparameters: str) -> dict:
    from ml_pipeline.config import sagemaker_hyperparameters

    return training_request(
        name,
        image,
        {"train": data["train"], "validation": data["validation"]},
        f"s3://{data['bucket']}/training-jobs",
        {**sagemaker_hyperparameters(digits_example.preset("quick")), **hyperparameters},
        digits_example.experiment()["metric_definitions"],
    )


@pytest.fixture(scope="module")
def runs(request, localaws_process, connection):
    """Three digits runs in one model package group, as far as their jobs go, each with the summary close_run
    writes (closing.summarize of closing.jobs_of_run, the pipeline's steps' results): "promoted" (the first
    version, deployed by the gate, approved), "kept" (a job whose loss stays where it starts: the gate keeps
    the first) and "failed" (a job refusing its learning rate). The jobs are the digits trainer's stand-in."""
    from airflow.providers.amazon.aws.hooks.sagemaker import SageMakerHook

    from ml_pipeline import closing, steps
    from tests.infra.support import plan

    client = localaws_process.client
    sm, s3 = client("sagemaker"), client("s3")
    image = image_for(request, localaws_process, QUICK_TRAINER, "quick-trainer")
    bucket, group = unique("notify"), unique("digits")
    s3.create_bucket(Bucket=bucket)
    data = {"bucket": bucket, **digits_example.write_channels(s3, bucket, "datasets/digits", seed=7)}
    hyperparameters = {"promoted": {}, "kept": {"learning_rate": "1e-07"}, "failed": {"learning_rate": "-1"}}
    plans = {
        name: plan(digits_example.experiment(), bucket=bucket, model_package_group=group) for name in hyperparameters
    }
    for name, run in plans.items():
        sm.create_training_job(**_job(image, data, run["names"]["training_job"], **hyperparameters[name]))
    described = {name: wait_for_training(sm, run["names"]["training_job"]) for name, run in plans.items()}
    assert described["failed"]["TrainingJobStatus"] == "Failed"

    hook = SageMakerHook(aws_conn_id=connection)
    teardown = {"removed": [], "already_gone": [], "endpoint_kept": False, "stack": {"removed": {}}, "errors": {}}
    summaries = {}
    for name in ("promoted", "kept", "failed"):  # the first version is production when the second is judged
        run = plans[name]
        started = {"training": [run["names"]["training_job"]], "tuning": []}
        outcome: dict = {"data": {"train": data["train"]}, "gate": None}
        failures = {FAILED_TASK: "failed"} if name == "failed" else {}
        if not failures:
            best = steps.pick_best(sm, run, {"TrainingJobName": run["names"]["training_job"]}, None)
            weights = steps.copy_best_weights(s3, run, best, data)
            package = steps.register_model_version(hook, run, best, weights)
            gate = steps.quality_gate(sm, run, best)
            promoted = steps.promote(sm, run, package) if gate["deploy"] else None
            outcome |= {"best": best, "weights": weights, "model_package": package, "gate": gate, "promoted": promoted}
        jobs = closing.jobs_of_run(sm, run, started, closing.Report())
        summary = closing.summarize(run, outcome, jobs, failures, teardown)
        summary["summary"] = closing.write_summary(s3, run, summary)
        summaries[name] = {"plan": run, "summary": summary, "failures": failures, "job": described[name]}
    return summaries


def _run(entry: dict) -> dict:
    plan = entry["plan"]
    return {
        "experiment": plan["experiment"]["name"],
        "key": plan["key"],
        "mode": plan["params"]["mode"],
        "dag_id": "train_digits",
        "run_id": f"manual__{plan['key']}",
    }


def _compose(entry: dict, clients=None):
    from ml_pipeline import notify

    job = notify.failed_job(entry["summary"])
    tail = notify.job_log_tail(clients("logs"), job["name"]) if job and clients else None
    return notify.compose(_run(entry), entry["summary"], entry["failures"], job, tail)


@pytest.mark.slow
def test_a_promoted_runs_message_says_what_ran_its_verdict_and_where_its_model_is(runs):
    entry = runs["promoted"]
    summary, message = entry["summary"], _compose(entry)
    key, job = entry["plan"]["key"], entry["job"]["TrainingJobName"]
    assert summary["quality_gate"]["deploy"] is True
    assert message.subject == f"digits train run {key}: succeeded, model promoted"
    text = message.text
    assert f"Run {key} of experiment digits succeeded" in text
    assert "Mode: train, preset quick" in text
    assert f"  training job {job}: Completed\n" in text
    objective = summary["objective"]
    assert f"Objective: validation:loss = {objective['value']:.6g} (Minimize), best job {job}" in text
    assert "Against production: deploy: no model in production yet" in text
    assert f"Model package: {summary['model_package']}" in text
    assert f"Summary: s3://{entry['plan']['params']['bucket']}/runs/{key}/summary.json" in text
    # Neither cost nor MLflow in this summary: the message says so rather than leaving them out.
    assert "Cost: not estimated" in text and "MLflow: not logged" in text
    assert "FailureReason" not in text
    assert message.attributes == {"experiment": "digits", "run": key, "outcome": "succeeded"}


@pytest.mark.slow
def test_the_cost_and_the_mlflow_link_come_from_the_summary_when_it_has_them(runs):
    from ml_pipeline import notify

    entry = runs["promoted"]
    cost = {"total_usd": 0.0042, "spot_savings_usd": 0.0011, "items": [], "prices": "p", "budget_usd": 1.5}
    url = "http://127.0.0.1:5000/#/experiments/3/runs/0123abcd"
    summary = {**entry["summary"], "cost": cost, "mlflow": {"run_id": "0123abcd", "experiment_id": "3", "url": url}}
    text = notify.compose(_run(entry), summary, {}).text
    assert "Cost: $0.0042 (estimate), spot savings $0.0011, budget $1.50" in text
    assert f"MLflow: {url}" in text
    down = {**entry["summary"], "mlflow": {"error": "the tracking server at http://127.0.0.1:1 did not answer"}}
    assert "MLflow: not logged: the tracking server at http://127.0.0.1:1 did not answer" in (
        notify.compose(_run(entry), down, {}).text
    )


@pytest.mark.slow
def test_a_run_whose_gate_kept_production_says_so_against_productions_objective(runs):
    entry = runs["kept"]
    summary, message = entry["summary"], _compose(entry)
    gate = summary["quality_gate"]
    assert gate["deploy"] is False and gate["production"]["run"] == runs["promoted"]["plan"]["key"]
    assert message.subject == f"digits train run {entry['plan']['key']}: succeeded, production kept"
    assert "succeeded: the quality gate kept production's model" in message.text
    assert f"Against production: keep production: {gate['reason']}" in message.text
    assert "does not beat production's" in gate["reason"]
    assert "Endpoint: none: production's model goes on serving" in message.text
    assert message.attributes["outcome"] == "kept_production"


@pytest.mark.slow
def test_a_failed_runs_message_names_the_task_the_failure_reason_and_the_end_of_the_jobs_log(runs, localaws_process):
    from ml_pipeline import notify

    entry = runs["failed"]
    message = _compose(entry, localaws_process.client)
    job, key = entry["job"], entry["plan"]["key"]
    assert message.subject == f"digits train run {key}: FAILED at {FAILED_TASK}"
    text = message.text
    assert f"FAILED: the run failed at {FAILED_TASK}" in text
    assert f"Failing task: {FAILED_TASK}" in text
    assert "Against production: not judged (the run ended before its quality gate)" in text
    assert f"The training job {job['TrainingJobName']}: Failed" in text
    assert job["FailureReason"] and f"FailureReason: {job['FailureReason']}\n" in text
    assert "learning_rate" in job["FailureReason"]
    # The job's log as CloudWatch Logs holds it: its last lines, in order.
    logs = localaws_process.client("logs")
    [stream] = logs.describe_log_streams(
        logGroupName=notify.TRAINING_LOGS, logStreamNamePrefix=job["TrainingJobName"] + "/"
    )["logStreams"]
    events = logs.get_log_events(
        logGroupName=notify.TRAINING_LOGS, logStreamName=stream["logStreamName"], startFromHead=True
    )["events"]
    last = [line for event in events for line in event["message"].splitlines()][-notify.LOG_LINES :]
    assert any("HyperparameterError" in line for line in last)
    shown = text.split(f"The end of its log ({notify.TRAINING_LOGS}, {stream['logStreamName']}):\n", 1)[1]
    assert shown.splitlines() == [f"    {line}" for line in last]
    assert message.attributes["outcome"] == "failed"


def test_log_lines_that_look_like_secrets_are_redacted():
    from ml_pipeline.notify import redact

    assert redact("AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG") == "AWS_SECRET_ACCESS_KEY=***"
    assert redact('config {"password": "hunter2", "user": "ml"}') == 'config {"password": "***", "user": "ml"}'
    assert redact("db_token: abc.def and more") == "db_token: *** and more"
    assert redact("key id AKIAIOSFODNN7EXAMPLE in use") == "key id *** in use"
    plain = "epoch=3 train_loss=0.12 validation_loss=0.15 validation_accuracy=0.96"
    assert redact(plain) == plain


def test_a_long_log_line_is_cut():
    from ml_pipeline.notify import LOG_LINE_LIMIT, _cut

    assert _cut("x" * LOG_LINE_LIMIT) == "x" * LOG_LINE_LIMIT
    assert _cut("x" * (LOG_LINE_LIMIT + 1)) == "x" * LOG_LINE_LIMIT + " [...]"


@pytest.mark.slow
def test_the_message_goes_to_sns_without_credentials_and_is_read_back_from_sqs(runs, localaws_process, connection):
    from ml_pipeline import notify

    inbox = Inbox(localaws_process, unique("notify"))
    entry = runs["failed"]
    notified = notify.run_end(
        localaws_process.client,
        _run(entry),
        entry["summary"],
        entry["failures"],
        {"sns_topic_arn": inbox.topic_arn},
        {},
        connection,
    )
    assert notified["sent"] == [f"SNS topic {inbox.topic_arn}"] and notified["errors"] == []
    [received] = inbox.of_run(entry["plan"]["key"])
    expected = _compose(entry, localaws_process.client)
    assert received["subject"] == expected.subject == notified["subject"]
    assert received["message"] == expected.text
    assert received["attributes"] == {"experiment": "digits", "run": entry["plan"]["key"], "outcome": "failed"}
    assert len(received["subject"]) < 100 and received["subject"].isascii()
    for secret in (KEY_ID, SECRET, localaws_process.endpoint_url):
        assert secret not in received["message"] and secret not in received["subject"]


@pytest.mark.slow
def test_the_message_goes_by_email_through_ses(runs, tmp_path, monkeypatch):
    """On a localaws of its own: moto's record of sent mail is read from its whole state's dump
    (/moto-api/data.json), which on the session's busy localaws takes longer than the test."""
    from ml_pipeline import notify

    server = LocalAWSProcess(tmp_path, "process").start()
    try:
        monkeypatch.setenv(
            "AIRFLOW_CONN_NOTIFY_SES_TEST",
            localaws_connection(server.endpoint_url, KEY_ID, SECRET),
        )
        sender, to = f"{unique('ml')}@example.com", ["data-science@example.com"]
        server.client("ses").verify_email_identity(EmailAddress=sender)
        entry = runs["kept"]
        notified = notify.run_end(
            None, _run(entry), entry["summary"], {}, {"email": {"from": sender, "to": to}}, {}, "notify_ses_test"
        )
        assert notified["sent"] == ["email to data-science@example.com (SES)"], notified
        [mail] = [m for m in ses_messages(server.endpoint_url) if m["source"] == sender]
    finally:
        server.stop()
    assert set(mail["destinations"]) == set(to)
    raw = mail["raw_data"]
    assert f"Subject: digits train run {entry['plan']['key']}: succeeded, production kept" in raw
    assert SECRET not in raw and KEY_ID not in raw


@pytest.mark.slow
def test_a_refused_send_is_reported_and_a_filtered_outcome_is_not_sent(runs, localaws_process, connection):
    from ml_pipeline import notify

    entry = runs["promoted"]
    missing = "arn:aws:sns:us-east-1:123456789012:no-such-topic-" + unique("x")
    notified = notify.run_end(None, _run(entry), entry["summary"], {}, {"sns_topic_arn": missing}, {}, connection)
    assert notified["sent"] == [] and len(notified["errors"]) == 1
    assert notified["errors"][0].startswith(f"SNS topic {missing}: NotFound")
    inbox = Inbox(localaws_process, unique("notify"))
    only_failures = {"sns_topic_arn": inbox.topic_arn, "outcomes": ["failed"]}
    notified = notify.run_end(None, _run(entry), entry["summary"], {}, only_failures, {}, connection)
    assert notified == {"outcome": "succeeded", "skipped": "succeeded is not among notify.outcomes (failed)"}
    assert inbox.receive() == []


def test_a_run_that_failed_before_its_teardown_is_notified_by_the_dags_failure_callback(
    localaws_process, connection, monkeypatch
):
    """A run refused at its preflight never reaches the outcome task; the DAG's on_failure_callback sends
    its message (the deployment's target). When the last task to fail is the outcome, it has sent it."""
    from ml_pipeline import notify
    from ml_pipeline.naming import run_key

    inbox = Inbox(localaws_process, unique("notify"))
    monkeypatch.setenv("AIRFLOW_VAR_ML_PIPELINE_NOTIFY", json.dumps({"sns_topic_arn": inbox.topic_arn}))
    experiment = digits_example.experiment()
    when = datetime(2026, 8, 24, tzinfo=timezone.utc)
    context = {
        "ti": types.SimpleNamespace(task_id="preflight"),
        "run_id": "manual__2026-08-24T00:00:00+00:00",
        "logical_date": when,
        "params": {"mode": "train"},
        "dag": types.SimpleNamespace(dag_id="train_digits"),
    }
    key = run_key(context["run_id"], when, "digits")
    notified = notify.unreported_failure(experiment, context, localaws_process.client, connection)
    assert notified["sent"] == [f"SNS topic {inbox.topic_arn}"]
    [received] = inbox.of_run(key)
    assert received["subject"] == f"digits train run {key}: FAILED at preflight"
    assert "Failing task: preflight" in received["message"]
    assert "No summary: the run ended before its teardown (close_run) wrote one" in received["message"]
    reported = {**context, "ti": types.SimpleNamespace(task_id="outcome")}
    assert notify.unreported_failure(experiment, reported, localaws_process.client, connection) is None
    assert inbox.receive() == []


# --- the target ------------------------------------------------------------------------------------


GOOD = {"sns_topic_arn": "arn:aws:sns:eu-west-1:123456789012:ml-runs"}


@pytest.mark.parametrize(
    ("notify", "refusal"),
    [
        ({"sns_topic_arn": "arn:aws:sns:eu-west-1:123456789012:ml-runs.fifo"}, "notify.sns_topic_arn: "),
        ({"sns_topic_arn": "ml-runs"}, "notify.sns_topic_arn: 'ml-runs' does not match"),
        ({"email": {"from": "ml@example.com", "to": ["a@example.com\nBcc: x@example.com"]}}, "notify.email.to[0]: "),
        ({"email": {"from": "ml@example.com", "to": []}}, "notify.email.to: [] should be non-empty"),
        ({"email": {"to": ["a@example.com"]}}, "notify.email: 'from' is a required property"),
        ({**GOOD, "outcomes": ["sometimes"]}, "notify.outcomes[0]: 'sometimes' is not one of"),
        ({**GOOD, "webhook": "https://example.com"}, "Additional properties are not allowed ('webhook'"),
        ({"outcomes": ["failed"]}, "notify: 'sns_topic_arn' is a required property"),
        (True, "notify: True is not of type 'object'"),
    ],
)
def test_a_bad_notify_in_the_experiment_file_is_refused_naming_the_field(tmp_path, notify, refusal):
    from ml_pipeline.experiments import ExperimentError, load
    from tests.dags.experiment_support import write_experiment

    with pytest.raises(ExperimentError, match="experiments/noisy/experiment.yaml: ") as refused:
        load(write_experiment(tmp_path, "noisy", notify=notify))
    assert refusal in str(refused.value)


def test_the_experiments_target_wins_over_the_deployments_and_false_turns_it_off(tmp_path):
    from ml_pipeline import notify
    from ml_pipeline.experiments import load
    from tests.dags.experiment_support import write_experiment

    email = {"email": {"from": "ml@example.com", "to": ["a@example.com", "b@example.com"]}, "outcomes": ["failed"]}
    own = load(write_experiment(tmp_path, "own", notify=email))
    off = load(write_experiment(tmp_path, "off", notify=False))
    default = load(write_experiment(tmp_path, "default"))
    assert notify.target(own, GOOD) == email
    assert notify.target(off, GOOD) is None
    assert notify.target(default, GOOD) == GOOD
    assert notify.target(default, None) is None
    assert notify.describe_target(email) == "email to a@example.com, b@example.com (SES), on failed"


def test_a_bad_deployment_target_is_refused_naming_the_variable(monkeypatch):
    from ml_pipeline import notify
    from tests.dags.experiment_support import plain

    with pytest.raises(notify.NotifyError, match=r"^Airflow Variable ml_pipeline_notify: sns_topic_arn: "):
        notify.target(plain(), {"sns_topic_arn": "arn:aws:sns:us-east-1:123:short"})
    monkeypatch.setenv("AIRFLOW_VAR_ML_PIPELINE_NOTIFY", "{not json")
    with pytest.raises(notify.NotifyError, match=r"^Airflow Variable ml_pipeline_notify: not JSON"):
        notify.deployment_setting()
    monkeypatch.setenv("AIRFLOW_VAR_ML_PIPELINE_NOTIFY", json.dumps(GOOD))
    assert notify.target(plain(), notify.deployment_setting()) == GOOD
