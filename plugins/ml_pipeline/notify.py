"""A message at each run's end, sent through the Amazon provider's notifiers: what ran, how it ended.

    target(experiment, deployment)   where the run's message goes (None: nowhere)
    compose(run, summary, failures)  the message: subject, text, SNS attributes
    run_end(...)                     compose and send it; what was sent where, or why not (never raises)

**Where to.** The experiment's ``notify`` (include/experiment.schema.json, checked with the experiment before
anything is created), else the deployment's: the Airflow Variable ``ml_pipeline_notify``, the same JSON
(``AIRFLOW_VAR_ML_PIPELINE_NOTIFY`` in the environment sets it too), checked by the run's plan task; else
nowhere. ``notify: false`` turns the deployment's off for one experiment. ``sns_topic_arn`` goes through
``SnsNotifier``, ``email`` through ``SesNotifier``; ``outcomes`` picks those sent (default all three):
``succeeded`` (the model promoted), ``kept_production`` (the quality gate kept production's) and ``failed``.

**What it says.** What ran (experiment, run key, mode, jobs), the objective against production (the gate's
verdict), the endpoint, the cost and the MLflow run when the summary has them, the summary's place; on
failure the failing tasks, the job's ``FailureReason`` and the last lines of its log (CloudWatch Logs
``/aws/sagemaker/TrainingJobs``). The subject says the outcome. Nothing of the connection or the
environment goes in; the job's log lines are redacted (``redact``): a training script may print anything.

**From where.** The run's last teardown, ``outcome`` (pipeline_dag.py), once the run's verdict is known: the
same task context under ``dag.test()`` and under the scheduler. ``dag.test()`` does run DAG-level callbacks
(DagRun.update_state executes them in-process), but a run marked failed from the UI or the REST API gets
none (Airflow fires only listeners then), while its teardowns still run; and the scheduler runs DAG
callbacks in the dag-processor, away from the run's task logs. So the DAG's ``on_failure_callback``
(``unreported_failure``) only covers a run that ended before any teardown could run: refused at plan,
preflight or open_run. A failure to send is logged and never changes the run's outcome.
"""

from __future__ import annotations

import functools
import html
import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import jsonschema

from ml_pipeline import config
from ml_pipeline.closing import _is_trial, failure_sentence
from ml_pipeline.naming import run_key

if TYPE_CHECKING:
    from ml_pipeline.aws import Client, Clients

log = logging.getLogger(__name__)

#: The deployment's target: an Airflow Variable (JSON), or AIRFLOW_VAR_ML_PIPELINE_NOTIFY.
VARIABLE = "ml_pipeline_notify"
OUTCOMES = ("succeeded", "kept_production", "failed")
TRAINING_LOGS = "/aws/sagemaker/TrainingJobs"
#: How much of the failed job's log the message carries: its last lines, each cut to a length.
LOG_LINES = 20
LOG_LINE_LIMIT = 500
#: The run's last teardown, which sends the message of every run that reached it (pipeline_dag.outcome).
OUTCOME_TASK = "outcome"
#: SNS takes a subject of under 100 ASCII characters without line breaks.
SUBJECT_LIMIT = 99


class NotifyError(ValueError):
    """A notification target that cannot be used; the message names where it was set and the field."""


# --- where to --------------------------------------------------------------------------------------


@functools.cache
def _validator() -> Any:
    """The experiment schema's ``$defs/notify``, the one shape of both the experiment's and the Variable's."""
    from referencing import Registry, Resource  # noqa: PLC0415 - jsonschema's own dependency

    experiment = config.schema(config.EXPERIMENT_SCHEMA.name)
    registry = Registry().with_resource(experiment["$id"], Resource.from_contents(experiment))
    return jsonschema.Draft202012Validator({"$ref": f"{experiment['$id']}#/$defs/notify"}, registry=registry)


def check(value: Any, where: str) -> dict | None:
    """A notify setting checked (None or False: nowhere); NotifyError names ``where`` and the field."""
    if value is None or value is False:
        return None
    errors = sorted(_validator().iter_errors(value), key=lambda e: len(e.absolute_path))
    if errors:
        error = config._deepest(errors[0])
        raise NotifyError(f"{where}: {config.field_path(error.absolute_path) or '(top level)'}: {error.message}")
    return dict(value)


def deployment_setting() -> Any:
    """The deployment's target as the Airflow Variable holds it (None when unset)."""
    from airflow.sdk import Variable  # noqa: PLC0415 - Airflow's task SDK, where a task runs

    raw = Variable.get(VARIABLE, default=None)
    if raw is None or raw == "":
        return None
    try:
        return json.loads(raw)
    except ValueError as error:
        raise NotifyError(f"Airflow Variable {VARIABLE}: not JSON ({error})") from None


def target(experiment: Mapping[str, Any], deployment: Any) -> dict | None:
    """Where the run's message goes: the experiment's ``notify`` (False: nowhere), else ``deployment``'s
    (``deployment_setting()``), checked."""
    own = experiment.get("notify")
    if own is False:
        return None
    if own:
        return check(own, f"experiments/{experiment['name']}/experiment.yaml: notify")
    return check(deployment, f"Airflow Variable {VARIABLE}")


def describe_target(notify: Mapping[str, Any] | None) -> str:
    if not notify:
        return "nowhere (no notify in the experiment, no Airflow Variable ml_pipeline_notify)"
    where = [f"SNS topic {notify['sns_topic_arn']}"] if notify.get("sns_topic_arn") else []
    if notify.get("email"):
        where.append(f"email to {', '.join(notify['email']['to'])} (SES)")
    return f"{' and '.join(where)}, on {', '.join(notify.get('outcomes') or OUTCOMES)}"


# --- what it says ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Message:
    subject: str
    text: str
    #: SNS message attributes, for subscription filter policies.
    attributes: dict[str, str]


def outcome_of(summary: Mapping[str, Any] | None, failures: Mapping[str, str]) -> str:
    """succeeded, kept_production or failed (``failures``: closing.failures of the run)."""
    if failures or not summary or summary.get("state") != "success":
        return "failed"
    gate = summary.get("quality_gate")
    return "kept_production" if gate and not gate.get("deploy") else "succeeded"


def failed_job(summary: Mapping[str, Any] | None) -> dict | None:
    """The job whose end the failure message explains: the run's last Failed training job (a tuning trial's
    included), else its Failed tuning job, else its last Stopped one; {"kind", "name", "status", "reason"}."""
    jobs = (summary or {}).get("jobs") or {}
    for status in ("Failed", "Stopped"):
        for kind in ("training", "tuning"):
            ended = [job for job in jobs.get(kind) or [] if job.get("status") == status]
            if ended:
                return {"kind": kind, **ended[-1]}
    return None


_SECRET = re.compile(
    r"(?i)([\w.-]*(?:secret|passw(?:or)?d|token|credential|private[_-]?key|access[_-]?key|api[_-]?key)[\w.-]*"
    r"[\"']?\s*[=:]\s*[\"']?)([^\s\"',;]+)"
)
#: AWS access key ids (long-term and temporary).
_AWS_KEY_ID = re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b")


def redact(line: str) -> str:
    """A log line without what looks like a secret: the value of a key named like one, an AWS key id."""
    return _AWS_KEY_ID.sub("***", _SECRET.sub(r"\1***", line))


def job_log_tail(logs: Client, job: str, lines: int = LOG_LINES) -> dict:
    """The last ``lines`` of a training job's log, redacted: its first host's stream (``<job>/algo-1-<time>``;
    the latest, when the job restarted), {"group", "stream", "lines"}; or {"error": why none}."""
    try:
        streams = logs.describe_log_streams(logGroupName=TRAINING_LOGS, logStreamNamePrefix=f"{job}/")["logStreams"]
        if not streams:
            return {"error": f"no log stream {job}/... in {TRAINING_LOGS}"}
        first_host = [s for s in streams if s["logStreamName"].startswith(f"{job}/algo-1-")] or streams
        stream = max(first_host, key=lambda s: (s.get("lastEventTimestamp") or 0, s["logStreamName"]))["logStreamName"]
        events = logs.get_log_events(
            logGroupName=TRAINING_LOGS, logStreamName=stream, limit=lines, startFromHead=False
        )["events"]
    except Exception as error:  # noqa: BLE001 - botocore's errors; the message goes without the log
        code = getattr(error, "response", {}).get("Error", {}).get("Code")
        return {"error": f"{TRAINING_LOGS}: {code or type(error).__name__}"}
    text = [_cut(redact(line)) for event in events[-lines:] for line in event["message"].splitlines()]
    return {"group": TRAINING_LOGS, "stream": stream, "lines": text[-lines:]}


def _cut(line: str) -> str:
    return line if len(line) <= LOG_LINE_LIMIT else line[:LOG_LINE_LIMIT] + " [...]"


def _subject(run: Mapping[str, Any], outcome: str, failures: Mapping[str, str]) -> str:
    failed = sorted(task for task, state in failures.items() if state == "failed")
    said = {
        "succeeded": "succeeded, model promoted",
        "kept_production": "succeeded, production kept",
        "failed": f"FAILED at {failed[0]}" if failed else "FAILED",
    }[outcome]
    subject = f"{run['experiment']} {run.get('mode') or ''} run {run['key']}: {said}".replace("  ", " ")
    subject = " ".join(subject.encode("ascii", "replace").decode().split())
    return subject if len(subject) <= SUBJECT_LIMIT else subject[: SUBJECT_LIMIT - 3] + "..."


def _jobs(summary: Mapping[str, Any]) -> list[str]:
    jobs = summary.get("jobs") or {}
    lines = []
    for kind in ("processing", "tuning", "training", "transform"):
        for job in jobs.get(kind) or []:
            if kind == "training" and _is_trial(job["name"], jobs):
                continue  # counted on the tuning job's line
            line = f"  {kind} job {job['name']}: {job['status']}"
            if job.get("trials"):
                line += ", trials " + ", ".join(f"{n} {status}" for status, n in job["trials"].items() if n)
            lines.append(line)
    return lines or ["  no job was started"]


def _gate(summary: Mapping[str, Any]) -> str:
    gate = summary.get("quality_gate")
    if not gate:
        return "not judged (the run ended before its quality gate)"
    return f"{'deploy' if gate['deploy'] else 'keep production'}: {gate['reason']}"


def _endpoint(summary: Mapping[str, Any]) -> str:
    if summary.get("deploy"):  # deploy: false in the experiment
        return f"none ({summary['deploy']})"
    if summary.get("endpoint"):
        smoke = summary.get("smoke_test") or {}
        kept = (summary.get("teardown") or {}).get("endpoint_kept")
        return f"{summary['endpoint']}, smoke test passed in {smoke.get('latency_seconds')} s; " + (
            "kept in service" if kept else "removed at the run's end (keep_endpoint is off)"
        )
    gate = summary.get("quality_gate")
    if gate and not gate.get("deploy"):
        return "none: production's model goes on serving"
    return "none"


def _cost(summary: Mapping[str, Any]) -> str:
    cost = summary.get("cost")
    if not isinstance(cost, Mapping) or cost.get("total_usd") is None:
        return "not estimated"
    text = f"${float(cost['total_usd']):.4f} (estimate)"
    if cost.get("spot_savings_usd"):
        text += f", spot savings ${float(cost['spot_savings_usd']):.4f}"
    if cost.get("budget_usd") is not None:
        text += f", budget ${float(cost['budget_usd']):.2f}"
    return text


def _mlflow(summary: Mapping[str, Any]) -> str:
    mlflow = summary.get("mlflow")
    if not isinstance(mlflow, Mapping):
        return "not logged"
    return str(mlflow.get("url") or f"not logged: {mlflow.get('error') or 'no link'}")


def compose(
    run: Mapping[str, Any],
    summary: Mapping[str, Any] | None,
    failures: Mapping[str, str],
    job: Mapping[str, Any] | None = None,
    job_log: Mapping[str, Any] | None = None,
) -> Message:
    """The run's message. ``run``: {"experiment", "key", "mode", "dag_id", "run_id"} (the plan's and the
    task's, for when there is no summary); ``summary``: close_run's; ``failures``: closing.failures;
    ``job``: failed_job's, ``job_log``: its job_log_tail."""
    outcome = outcome_of(summary, failures)
    headline = {
        "succeeded": "succeeded: its model is production's now",
        "kept_production": "succeeded: the quality gate kept production's model",
        "failed": f"FAILED: {failure_sentence(dict(failures))}" if failures else "FAILED",
    }[outcome]
    lines = [
        f"Run {run['key']} of experiment {run['experiment']} {headline}.",
        f"Airflow: DAG {run.get('dag_id')}, run {run.get('run_id')}",
    ]
    if outcome == "failed":
        failed = sorted(task for task, state in failures.items() if state == "failed")
        lines.append(f"Failing task: {', '.join(failed) or '(none failed: ' + failure_sentence(dict(failures)) + ')'}")
    if summary:
        revision = summary.get("revision") or {}
        lines += [
            f"Mode: {summary.get('mode')}, preset {summary.get('preset')}"
            + (f", commit {revision['commit']}" if revision.get("commit") else ""),
            "Jobs:",
            *_jobs(summary),
        ]
        objective = summary.get("objective")
        if objective:
            lines.append(
                f"Objective: {objective['metric']} = {objective['value']:.6g} ({objective['type']}), "
                f"best job {summary.get('training_job')}"
            )
        lines += [
            f"Against production: {_gate(summary)}",
            f"Endpoint: {_endpoint(summary)}",
            f"Model package: {summary.get('model_package') or 'none registered'}",
            f"Cost: {_cost(summary)}",
            f"MLflow: {_mlflow(summary)}",
            f"Summary: {summary.get('summary')}",
        ]
    else:
        lines.append("No summary: the run ended before its teardown (close_run) wrote one; see the tasks' logs.")
    if outcome == "failed" and job:
        label = "FailureReason" if job.get("status") == "Failed" else "Why it stopped"
        lines += ["", f"The {job['kind']} job {job['name']}: {job.get('status')}"]
        lines.append(f"{label}: {job.get('reason') or '(none given)'}")
        if job_log and job_log.get("lines"):
            lines.append(f"The end of its log ({job_log['group']}, {job_log['stream']}):")
            lines += [f"    {line}" for line in job_log["lines"]]
        elif job_log:
            lines.append(f"Its log: {job_log.get('error')}")
    attributes = {"experiment": str(run["experiment"]), "run": str(run["key"]), "outcome": outcome}
    return Message(subject=_subject(run, outcome, failures), text="\n".join(lines) + "\n", attributes=attributes)


# --- sending ---------------------------------------------------------------------------------------


def send(notify: Mapping[str, Any], message: Message, context: Mapping[str, Any], aws_conn_id: str) -> dict:
    """The message to each of ``notify``'s destinations through the provider's notifiers, each whatever the
    other did: {"sent": [where], "errors": [where: why]}. Their ``notify(context)`` is called rather than
    the notifier itself, which renders the message as a Jinja template first: the message is text, and a
    log line holding "{{" would break the rendering (or be evaluated)."""
    sent, errors = [], []
    if notify.get("sns_topic_arn"):
        from airflow.providers.amazon.aws.notifications.sns import SnsNotifier  # noqa: PLC0415 - when sent

        where = f"SNS topic {notify['sns_topic_arn']}"
        try:
            SnsNotifier(
                aws_conn_id=aws_conn_id,
                target_arn=notify["sns_topic_arn"],
                subject=message.subject,
                message=message.text,
                message_attributes=message.attributes,
            ).notify(dict(context))
            sent.append(where)
        except Exception as error:  # noqa: BLE001 - whatever refused it, the run goes on
            errors.append(f"{where}: {_why(error)}")
    if notify.get("email"):
        from airflow.providers.amazon.aws.notifications.ses import SesNotifier  # noqa: PLC0415

        email = notify["email"]
        where = f"email to {', '.join(email['to'])} (SES)"
        try:
            SesNotifier(
                aws_conn_id=aws_conn_id,
                mail_from=email["from"],
                to=list(email["to"]),
                subject=message.subject,
                html_content=f"<pre>{html.escape(message.text)}</pre>",
            ).notify(dict(context))
            sent.append(where)
        except Exception as error:  # noqa: BLE001
            errors.append(f"{where}: {_why(error)}")
    return {"sent": sent, "errors": errors}


def _why(error: Exception) -> str:
    """An error in one line, without the request it failed on (botocore's own message names no secret)."""
    info = getattr(error, "response", {}).get("Error", {})
    if info:
        return f"{info.get('Code')}: {info.get('Message') or 'no message'}"
    return f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"


def run_end(
    clients: Clients | None,
    run: Mapping[str, Any],
    summary: Mapping[str, Any] | None,
    failures: Mapping[str, str],
    notify: Mapping[str, Any] | None,
    context: Mapping[str, Any],
    aws_conn_id: str,
) -> dict:
    """The run's message, composed and sent to ``notify`` (``target``'s); ``clients``: the task's AWS
    clients (CloudWatch Logs, for the failed job's log). Never raises: returns what was sent where ("sent",
    "errors"), or why nothing was ("skipped"), and logs it."""
    try:
        outcome = outcome_of(summary, failures)
        if not notify:
            result: dict = {"outcome": outcome, "skipped": "no notification target"}
        elif outcome not in (notify.get("outcomes") or OUTCOMES):
            result = {
                "outcome": outcome,
                "skipped": f"{outcome} is not among notify.outcomes ({', '.join(notify['outcomes'])})",
            }
        else:
            job = failed_job(summary) if outcome == "failed" else None
            tail = job_log_tail(clients("logs"), job["name"]) if job and job["kind"] == "training" and clients else None
            message = compose(run, summary, failures, job, tail)
            result = {"outcome": outcome, "subject": message.subject, **send(notify, message, context, aws_conn_id)}
    except Exception as error:  # noqa: BLE001 - a notification never changes the run's outcome
        log.exception("notification of run %s not sent", run.get("key"))
        return {"sent": [], "errors": [f"composing the message: {type(error).__name__}: {error}"]}
    if result.get("errors"):
        log.warning("notification of run %s: %s", run.get("key"), "; ".join(result["errors"]))
    log.info(
        "notified: %s",
        f"{result['subject']!r} to {', '.join(result['sent']) or 'nowhere'}"
        if "subject" in result
        else f"nothing sent: {result['skipped']}",
    )
    return result


def unreported_failure(
    experiment: Mapping[str, Any], context: Mapping[str, Any], clients: Clients, aws_conn_id: str
) -> dict | None:
    """The DAG's on_failure_callback: the message of a run that failed before any teardown could run (refused
    at plan, preflight or open_run: the teardowns run once a setup succeeded). The failed task Airflow hands
    the callback is the last one to fail; when that is ``outcome``, the outcome task reported the run itself."""
    ti = context.get("ti")
    if ti is not None and ti.task_id == OUTCOME_TASK:
        return None
    run_id = str(context.get("run_id"))
    # The run's date as the plan task takes it (its key is every name the run would have used).
    dag_run = context.get("dag_run")
    when = context.get("logical_date") or context.get("data_interval_start") or getattr(dag_run, "run_after", None)
    run = {
        "experiment": experiment["name"],
        "key": run_key(run_id, when, experiment["name"]),
        "mode": (context.get("params") or {}).get("mode"),
        "dag_id": getattr(context.get("dag"), "dag_id", None),
        "run_id": run_id,
    }
    try:
        notify = target(experiment, deployment_setting())
    except NotifyError as error:
        log.warning("notification of run %s not sent: %s", run["key"], error)
        return {"sent": [], "errors": [str(error)]}
    failures = {ti.task_id: "failed"} if ti is not None else {"(unknown)": "failed"}
    return run_end(clients, run, None, failures, notify, context, aws_conn_id)
