"""Closing a run, whatever happened before it: what ``close_run`` (the run's teardown) does and reports.

- **Jobs**: the run's training and tuning jobs, and its ``prepare`` processing job and batch transform job
  (when the experiment has them), still in progress are stopped (nothing keeps billing), and the summary
  names every job the run started with its end state (a stopped job's included).
- **Hosting**: unless the endpoint is kept, the endpoint the run deployed, its scaling target, its
  endpoint config and model are deleted. A kept (stable) endpoint is kept only when the run succeeded: a
  failed run that updated it rolls it back to the endpoint config it served before, and one that
  created it deletes it, so a rejected model never goes on serving.
- **The registry**: the version a failed run registered is rejected with the reason, so it is never
  mistaken for a candidate awaiting approval (see ``reject_version``).
- **What is already gone** (deleted by someone else, or forgotten by an emulator restarted mid-run) is
  reported as such, per resource, and is not an error: teardown's job is that it no longer exists.
- **The cost**: the run's estimate (``cost.run_cost``: its jobs' billable seconds, its endpoint's and its host's
  time, at the prices of include/prices/) is the summary's ``cost`` and ends the one-line outcome.
- **The summary** is written beside the run's artifacts; when the bucket itself is gone it says so and
  the summary still reaches the task's log and XCom (and the run's page in the UI, see ``summary_page.py``).
- **Resource use**: each training host's, endpoint instance's and host's peak and mean CPU, memory, disk
  and GPU use, read back from CloudWatch, with plain verdicts (``usage.py``); never an error of the run's.
- **MLflow**: the run, its series, trials and model version are logged to the tracking server once the
  summary is made (``tracking.log_run``); the summary's ``mlflow`` says where, or why not.
- **Every part runs** (``close_run``): an error in one is collected, the others still run (the run's
  stack is always torn down), the summary is logged and written, and then one error names them all.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from ml_pipeline import sagemaker_requests as requests
from ml_pipeline import usage
from ml_pipeline.aws import is_missing
from ml_pipeline import tracking
from ml_pipeline.infra.teardown import TeardownIncomplete, teardown_stack

if TYPE_CHECKING:
    from ml_pipeline.aws import Client, Clients
    from ml_pipeline.plan import Plan

log = logging.getLogger(__name__)

_TERMINAL = ("Completed", "Failed", "Stopped")
#: How long teardown waits for the jobs it stopped to reach their end state (AWS gives a job 120 s of
#: grace after SIGTERM, plus the upload).
STOP_WAIT_SECONDS = 300


class Report:
    """What teardown did, resource by resource, as a user reads it."""

    def __init__(self):
        self.removed: list[str] = []
        self.already_gone: list[str] = []

    def did(self, what: str) -> None:
        self.removed.append(what)
        log.info("teardown: %s", what)

    def gone(self, what: str) -> None:
        self.already_gone.append(what)
        log.info("teardown: %s: already gone", what)

    def as_dict(self) -> dict:
        return {"removed": self.removed, "already_gone": self.already_gone}


# --- the run's verdict -------------------------------------------------------------------------------

#: The run's last task: it succeeded when this did, or when the quality gate kept production.
LAST_TASK = "promote"


def failures(states: dict[str, str], gate: dict | None) -> dict[str, str]:
    """Why the run did not succeed, ``{task_id: state}``; empty when it did. A run succeeds when none of
    its tasks failed and it reached its end: its model promoted, or production kept by the quality gate.
    A run marked failed from the UI fails the tasks then running and skips the rest: when none was
    running (a task queued, say), no task failed, and only the skipped end tells."""
    failed = {task_id: state for task_id, state in states.items() if state == "failed"}
    if failed:
        return failed
    if states.get(LAST_TASK) == "success":
        return {}
    if gate is not None and not gate.get("deploy") and states.get("quality_gate") == "success":
        return {}
    return {LAST_TASK: states.get(LAST_TASK) or "not run"}


def failure_sentence(failed: dict[str, str]) -> str:
    if any(state == "failed" for state in failed.values()):
        return f"the run failed at {', '.join(sorted(t for t, s in failed.items() if s == 'failed'))}"
    return (
        f"the run ended before its end: {LAST_TASK} is {failed.get(LAST_TASK)} (marking a run failed "
        f"skips the tasks that had not started)"
    )


# --- jobs ------------------------------------------------------------------------------------------


def name_parts(plan: Plan) -> dict[str, list[str]]:
    """What the names of the run's jobs contain, by kind: its training jobs (and host jobs), processing and
    transform jobs carry the run's key, its tuning job (and attempts, -r2...) the run's tuning name, which is
    also the start of each trial's name (``<tuning job>-<NNN>-<hex>``): a tuning job's 32 characters hold no
    room for the key itself. The processing and transform jobs only of an experiment that has them."""
    parts = {"tuning": [plan["names"]["tuning_job"]], "training": [plan["key"], plan["names"]["tuning_job"]]}
    experiment = plan["experiment"]
    if experiment.get("prepare_job"):
        parts["processing"] = [plan["key"]]
    if experiment.get("batch_transform"):
        parts["transform"] = [plan["key"]]
    return parts


@dataclass(frozen=True)
class JobKind:
    """How one kind of SageMaker job is listed, described and stopped, by the client's method names."""

    list: str
    summaries: str
    describe: str
    stop: str
    name: str  # the request member naming the job
    status: str


#: In the order teardown stops them: a tuning job first (it would start trials as they stop).
JOB_KINDS = {
    "tuning": JobKind(
        "list_hyper_parameter_tuning_jobs",
        "HyperParameterTuningJobSummaries",
        "describe_hyper_parameter_tuning_job",
        "stop_hyper_parameter_tuning_job",
        "HyperParameterTuningJobName",
        "HyperParameterTuningJobStatus",
    ),
    "training": JobKind(
        "list_training_jobs",
        "TrainingJobSummaries",
        "describe_training_job",
        "stop_training_job",
        "TrainingJobName",
        "TrainingJobStatus",
    ),
    "processing": JobKind(
        "list_processing_jobs",
        "ProcessingJobSummaries",
        "describe_processing_job",
        "stop_processing_job",
        "ProcessingJobName",
        "ProcessingJobStatus",
    ),
    "transform": JobKind(
        "list_transform_jobs",
        "TransformJobSummaries",
        "describe_transform_job",
        "stop_transform_job",
        "TransformJobName",
        "TransformJobStatus",
    ),
}


def _list_jobs(sm: Client, kind: JobKind, parts: list[str], **filters) -> list[dict]:
    found = {}
    for part in parts:
        for summary in getattr(sm, kind.list)(NameContains=part, MaxResults=100, **filters)[kind.summaries]:
            found[summary[kind.name]] = summary
    return list(found.values())


def stop_jobs(sm: Client, plan: Plan, report: Report) -> None:
    """Stop the run's jobs still in progress (found by ``name_parts``): tuning, training, processing, transform."""
    for kind, parts in sorted(name_parts(plan).items(), key=lambda item: list(JOB_KINDS).index(item[0])):
        job = JOB_KINDS[kind]
        for summary in _list_jobs(sm, job, parts, StatusEquals="InProgress"):
            getattr(sm, job.stop)(**{job.name: summary[job.name]})
            report.did(f"stopped {kind} job {summary[job.name]}")


def job_end_state(description: dict, status_key: str) -> dict:
    """A job's end state as the summary shows it: status, secondary status and why."""
    status = description[status_key]
    names = ("TrainingJobName", "HyperParameterTuningJobName", "ProcessingJobName", "TransformJobName")
    state = {"name": next(description[name] for name in names if description.get(name)), "status": status}
    if description.get("SecondaryStatus"):
        state["secondary_status"] = description["SecondaryStatus"]
    reason = stop_or_failure_reason(description) if status in ("Failed", "Stopped") else None
    if reason:
        state["reason"] = reason
    if description.get("TrainingJobStatusCounters"):
        state["trials"] = description["TrainingJobStatusCounters"]
    return state


def stop_or_failure_reason(description: dict) -> str | None:
    """Why a job ended as it did: ``FailureReason`` when AWS gives one (a Failed job; a Stopped job has
    none), with a processing container's ``ExitMessage``; else that message, or the last status
    transition's (e.g. "Training job stopped by user" or MaxRuntimeExceeded)."""
    if description.get("FailureReason"):
        # A processing container's own words, beside AWS's "AlgorithmError: See job logs ...".
        message = description.get("ExitMessage")
        return f"{description['FailureReason']}: {message}" if message else description["FailureReason"]
    if description.get("ExitMessage"):  # a stopped processing container's own words
        return description["ExitMessage"]
    transitions = description.get("SecondaryStatusTransitions") or []
    if transitions and transitions[-1].get("StatusMessage"):
        return transitions[-1]["StatusMessage"]
    if description.get("SecondaryStatus") and description["SecondaryStatus"] != description.get("TrainingJobStatus"):
        return description["SecondaryStatus"]
    return None


def jobs_of_run(sm: Client, plan: Plan, started: dict, report: Report, wait_seconds: float = STOP_WAIT_SECONDS) -> dict:
    """Every job the run started, with its end state: the jobs its tasks started (``started``: {"training":
    [names], "tuning": [names], and "processing" and "transform" where the experiment has them}) and any other
    of its jobs (a tuning job's trials, earlier attempts). A job its task started that AWS no longer knows is
    reported as gone. Jobs still stopping are waited for (up to ``wait_seconds``) so that the summary shows how
    they ended."""
    parts = name_parts(plan)
    deadline = time.monotonic() + wait_seconds
    result = {}
    for kind in (kind for kind in JOB_KINDS if kind in parts):
        job = JOB_KINDS[kind]
        describe, argument, status_key = getattr(sm, job.describe), job.name, job.status
        # Oldest first, so the last is the attempt the run ended with (a retry's -r2 after the first);
        # a job its task started that AWS no longer lists comes last.
        listed = [s[argument] for s in sorted(_list_jobs(sm, job, parts[kind]), key=lambda s: s["CreationTime"])]
        names = list(dict.fromkeys([*listed, *started.get(kind, [])]))
        states = []
        for name in names:
            try:
                description = describe(**{argument: name})
                while description[status_key] not in _TERMINAL and time.monotonic() < deadline:
                    time.sleep(2)
                    description = describe(**{argument: name})
            except Exception as error:  # noqa: BLE001 - botocore's ClientError
                if not is_missing(error):
                    raise
                report.gone(f"{kind} job {name}")
                states.append({"name": name, "status": "gone"})
                continue
            states.append(job_end_state(description, status_key))
        result[kind] = states
    return result


# --- hosting ---------------------------------------------------------------------------------------


def remove_hosting(sm: Client, aas: Client, plan: Plan, made: dict, failed: bool, report: Report) -> bool:
    """The run's endpoint, scaling target, endpoint config and model, unless the endpoint is kept.

    ``made`` says what the run's tasks created ({"endpoint", "autoscaling", "model", "endpoint_config"}:
    truthy when created), so that one created and no longer there is reported as gone, and one never
    created (the gate kept the deploy from happening) is not mentioned; and, with ``keep_endpoint``, what
    the stable endpoint served before this run's deploy ("serving_before": {"endpoint_config": name, or
    None when the run created it}). The stable endpoint is kept on this run's config only when the run
    succeeded (``failed`` false). A failed run's deploy is undone: the endpoint goes back to the config it
    served before (and is waited for), or is deleted when this run created it; this run's config and model
    go in both cases. Returns whether the endpoint is kept on this run's config."""
    p, names = plan["params"], plan["names"]
    endpoint = _describe_endpoint(sm, names["endpoint"])
    if endpoint is not None and _deploying(endpoint, names["endpoint_config"]):
        endpoint = _wait_settled(sm, names["endpoint"])  # this run's deploy ends before it is judged
    ours = endpoint is not None and endpoint.get("EndpointConfigName") == names["endpoint_config"]
    if p["keep_endpoint"] and ours and endpoint is not None and endpoint["EndpointStatus"] == "InService":
        if not failed:
            return True
        before = made.get("serving_before")
        if before is None:
            raise RuntimeError(
                f"endpoint {names['endpoint']} serves the model of this failed run and the endpoint "
                "config it served before was not recorded: update it to the config it should serve"
            )
        if before["endpoint_config"]:
            _roll_back(sm, names["endpoint"], before["endpoint_config"], report)
            ours = False  # it stays, on the config it served before: only this run's config and model go
    target = requests.scalable_target_id(plan)
    # The scaling target is the run's own endpoint's, or the stable endpoint's: that one goes only with it.
    if ours or (made.get("autoscaling") and not p["keep_endpoint"]):
        try:
            aas.deregister_scalable_target(
                ServiceNamespace="sagemaker",
                ResourceId=target,
                ScalableDimension="sagemaker:variant:DesiredInstanceCount",
            )
            report.did(f"deregistered scalable target {target}")
        except aas.exceptions.ObjectNotFoundException:
            if made.get("autoscaling"):
                report.gone(f"scalable target {target}")
    if ours:
        sm.delete_endpoint(EndpointName=names["endpoint"])
        report.did(f"deleted endpoint {names['endpoint']}")
        _wait_gone(sm, names["endpoint"])
    elif made.get("endpoint") and endpoint is None:
        report.gone(f"endpoint {names['endpoint']}")
    for kind, delete, argument, name in (
        ("endpoint_config", sm.delete_endpoint_config, "EndpointConfigName", names["endpoint_config"]),
        ("model", sm.delete_model, "ModelName", names["model"]),
    ):
        try:
            delete(**{argument: name})
            report.did(f"deleted {kind.replace('_', ' ')} {name}")
        except sm.exceptions.ClientError as error:
            if not is_missing(error):
                raise
            if made.get(kind):
                report.gone(f"{kind.replace('_', ' ')} {name}")
    return False


#: An endpoint in these states is still being created, updated or rolled back.
_CHANGING = ("Creating", "Updating", "SystemUpdating", "RollingBack")


def _deploying(endpoint: dict, config: str) -> bool:
    """Whether a deploy of ``config`` is still under way on the endpoint (an update shows the config it
    goes to in its PendingDeploymentSummary until it is done)."""
    pending = (endpoint.get("PendingDeploymentSummary") or {}).get("EndpointConfigName")
    return endpoint["EndpointStatus"] in _CHANGING and config in (pending, endpoint.get("EndpointConfigName"))


def _wait_settled(sm: Client, name: str, timeout: float = STOP_WAIT_SECONDS) -> dict | None:
    deadline = time.monotonic() + timeout
    endpoint = _describe_endpoint(sm, name)
    while endpoint is not None and endpoint["EndpointStatus"] in _CHANGING and time.monotonic() < deadline:
        time.sleep(2)
        endpoint = _describe_endpoint(sm, name)
    return endpoint


def _roll_back(sm: Client, name: str, config: str, report: Report) -> None:
    """The stable endpoint back on ``config`` (blue/green, as any update), waited for."""
    sm.update_endpoint(EndpointName=name, EndpointConfigName=config)
    endpoint = _wait_settled(sm, name)
    status = endpoint["EndpointStatus"] if endpoint else "gone"
    if endpoint is None or status != "InService" or endpoint["EndpointConfigName"] != config:
        where = f" on {endpoint['EndpointConfigName']} ({endpoint.get('FailureReason')})" if endpoint else ""
        raise RuntimeError(f"endpoint {name} did not go back to {config}: {status}{where}")
    report.did(f"rolled endpoint {name} back to endpoint config {config}, which it served before this failed run")


def serving_before(sm: Client, plan: Plan) -> dict | None:
    """What the stable endpoint (keep_endpoint) serves before this run deploys to it, for ``remove_hosting``
    to undo the deploy of a run that fails: {"endpoint_config": its config, or None when there is no endpoint
    and the deploy creates it}. While another deploy is changing it, raises (the task retries once it
    settles). None when it is on this run's config already (the task was cleared after the deploy): what it
    served before is no longer known."""
    names = plan["names"]
    endpoint = _describe_endpoint(sm, names["endpoint"])
    if endpoint is None:
        return {"endpoint_config": None}
    if endpoint["EndpointStatus"] in _CHANGING:
        raise RuntimeError(
            f"endpoint {names['endpoint']} is {endpoint['EndpointStatus']} for another deployment; "
            "this task retries once it settles"
        )
    if endpoint["EndpointConfigName"] == names["endpoint_config"]:
        log.warning(
            "endpoint %s is on this run's config already: what it served before is not known", names["endpoint"]
        )
        return None
    return {"endpoint_config": endpoint["EndpointConfigName"]}


def _describe_endpoint(sm: Client, name: str) -> dict | None:
    try:
        return sm.describe_endpoint(EndpointName=name)
    except sm.exceptions.ClientError as error:
        if not is_missing(error):
            raise
        return None


def _wait_gone(sm: Client, name: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while _describe_endpoint(sm, name) is not None and time.monotonic() < deadline:
        time.sleep(1)


# --- the registry ----------------------------------------------------------------------------------


def reject_version(sm: Client, package_arn: str | None, failures: dict[str, str], plan: Plan, report: Report) -> None:
    """The model package version of a run that failed becomes ``Rejected``, with the reason.

    Rejecting rather than deleting: the registry is the record of what was trained, on which data and
    how it scored, and ``Rejected`` with an ``ApprovalDescription`` is how it records that a version must
    not go to production (the gate only compares against ``Approved`` versions). Left
    ``PendingManualApproval`` it would look like a candidate waiting for a reviewer. A version already
    approved (production) is never touched."""
    if not package_arn or not failures:
        return
    try:
        package = sm.describe_model_package(ModelPackageName=package_arn)
    except sm.exceptions.ClientError as error:
        if not is_missing(error):
            raise
        report.gone(f"model package version {package_arn}")
        return
    if package["ModelApprovalStatus"] in ("Approved", "Rejected"):
        return
    reason = f"Run {plan['key']}: {failure_sentence(failures)}"
    sm.update_model_package(
        ModelPackageArn=package_arn, ModelApprovalStatus="Rejected", ApprovalDescription=reason[:1024]
    )
    report.did(f"rejected model package version {package_arn} ({reason})")


# --- the stack --------------------------------------------------------------------------------------


#: The ids the provisioning steps return (their XComs) that teardown looks for; the rest (an AMI, ARNs, a
#: zone, a device) it does not remove and so cannot find gone.
TORN_DOWN_IDS = (
    "vpc_id",
    "internet_gateway_id",
    "public_subnet_id",
    "private_subnet_id",
    "public_route_table_id",
    "private_route_table_id",
    "s3_endpoint_id",
    "host_security_group_id",
    "sagemaker_security_group_id",
    "instance_profile_name",
    "role_name",
    "volume_id",
    "instance_id",
    "training_document",
    "check_document",
)


def stack_gone(provisioned: dict, stack_report: dict) -> list[str]:
    """The ids of what the run's provisioning steps made, that teardown looked for and found nothing of:
    already gone. What teardown removed (``stack_report["removed"]``, an earlier try's included) or failed to
    remove (named in its errors) is not gone."""
    removed = {item for items in stack_report.get("removed", {}).values() for item in items}
    expected = {
        value
        for result in provisioned.values()
        if isinstance(result, dict)
        for key, value in result.items()
        if key in TORN_DOWN_IDS and isinstance(value, str)
    }
    failed = {value for value in expected if any(value in error for error in stack_report.get("errors", []))}
    return sorted(expected - removed - failed)


def earlier_removed(s3: Client, plan: Plan) -> dict[str, list[str]]:
    """What an earlier try of this run's teardown removed of its stack, from the summary it wrote ({} when
    there is none): a retry finds those resources gone because that try removed them."""
    try:
        written = json.loads(s3.get_object(Bucket=plan["params"]["bucket"], Key=summary_key(plan))["Body"].read())
        return dict(written["teardown"]["stack"].get("removed") or {})
    except (ClientError, BotoCoreError, ValueError, KeyError, TypeError, AttributeError):
        return {}


# --- the summary -----------------------------------------------------------------------------------


def summary_key(plan: Mapping[str, Any]) -> str:
    """Where the run's summary lies in its bucket: the plan, or anything with its key."""
    return f"runs/{plan['key']}/summary.json"


def summarize(
    plan: Plan,
    outcome: dict,
    jobs: dict,
    failures: dict[str, str],
    teardown_result: dict,
    cost: dict | None = None,
    resources: dict | None = None,
) -> dict:
    """One JSON a newcomer can read: how the run ended, which jobs it ran and how they ended, what they
    scored, where the weights are, what was removed, what it cost (``cost.run_cost``'s estimate, when
    given) and what its machines used (``resources``: ``usage.run_resources``)."""
    best = outcome.get("best") or {}
    training = [job for job in jobs.get("training", []) if not _is_trial(job["name"], jobs)]
    summary = {
        "run": plan["key"],
        "experiment": plan["experiment"]["name"],
        "revision": plan.get("revision"),
        "code": outcome.get("code"),
        "state": "failed" if failures else "success",
        "failed_tasks": failures or None,
        "mode": plan["params"]["mode"],
        "preset": plan["params"]["preset"],
        "data": outcome.get("data"),
        # The best job once one was picked; before that, the last attempt the run started (jobs_of_run
        # lists them oldest first).
        "training_job": best.get("training_job") or (training[-1]["name"] if training else None),
        "tuning_job": best.get("tuning_job") or next((j["name"] for j in jobs.get("tuning", [])), None),
        "jobs": jobs,
        "trials": best.get("trial_counters"),
        "metrics": best.get("metrics"),
        "objective": best.get("objective"),
        "best_hyperparameters": best.get("tuned_hyperparameters") or best.get("hyperparameters"),
        "best_weights": outcome.get("weights"),
        "model_package": outcome.get("model_package"),
        "quality_gate": outcome.get("gate"),
        "deploy": "deploy: false in the experiment: no endpoint" if not plan["experiment"]["deploy"] else None,
        "endpoint": plan["names"]["endpoint"] if outcome.get("smoke_test") else None,
        "autoscaling": outcome.get("autoscaling"),
        "smoke_test": outcome.get("smoke_test"),
        "promoted": outcome.get("promoted"),
        "batch_transform": _scored(outcome.get("batch_transform"), jobs),
        "teardown": teardown_result,
        "resources": resources,
    }
    if cost is not None:
        summary["cost"] = cost
    return summary


def _scored(scoring: dict | None, jobs: dict) -> dict | None:
    """The batch transform as the summary shows it: what it scored with and where (``batch_transform.scoring``)
    and how its job ended (the attempt the run ended with)."""
    if not scoring:
        return None
    shown = dict(scoring)
    for job in (jobs.get("transform") or [])[-1:]:
        shown.update(job=job["name"], status=job["status"])
        if job.get("reason"):
            shown["reason"] = job["reason"]
    return shown


def _is_trial(name: str, jobs: dict) -> bool:
    return any(name.startswith(tuning["name"] + "-") for tuning in jobs.get("tuning", []))


def write_summary(s3: Client, plan: Plan, summary: dict) -> str:
    """``s3://<bucket>/runs/<run>/summary.json``, or a sentence saying why it could not be written there
    (the bucket is gone, or S3 refused: a bucket policy, a KMS key the role may not use); either way the
    caller still has the summary to log and return."""
    bucket, key = plan["params"]["bucket"], summary_key(plan)
    body = json.dumps(summary, indent=2, default=str).encode()
    try:
        s3.put_object(Bucket=bucket, Key=key, Body=body, ContentType="application/json")
    except (ClientError, BotoCoreError) as error:
        error_info = getattr(error, "response", {}).get("Error", {})
        if error_info.get("Code") == "NoSuchBucket":
            reason = f"bucket {bucket} no longer exists"
        elif error_info:
            reason = f"s3://{bucket}/{key}: {error_info.get('Code')} ({error_info.get('Message') or 'no message'})"
        else:
            reason = f"s3://{bucket}/{key}: {error}"
        where = f"not written to S3: {reason} (it is in this task's log, its XCom and the run's summary tab)"
        log.warning("summary %s", where)
        return where
    return f"s3://{bucket}/{key}"


def outcome_line(summary: dict) -> str:
    """The run's end in one line: state, jobs and their end states, the gate, the smoke test."""
    parts = [f"run {summary['run']} {summary['state']}"]
    if summary.get("failed_tasks"):
        parts[0] += f" ({failure_sentence(summary['failed_tasks'])})"
    for kind in ("processing", "tuning", "training"):
        for job in summary["jobs"].get(kind, []):
            if kind == "training" and _is_trial(job["name"], summary["jobs"]):
                continue
            text = f"{kind} job {job['name']} {job['status']}"
            if job.get("reason"):
                text += f" ({job['reason']})"
            parts.append(text)
    if summary.get("objective"):
        objective = summary["objective"]
        parts.append(f"best {summary['training_job']}: {objective['metric']}={objective['value']:.4f}")
    if summary.get("quality_gate"):
        gate = summary["quality_gate"]
        parts.append(f"gate: {'deploy' if gate['deploy'] else 'keep production'} ({gate['reason']})")
    if summary.get("deploy"):
        parts.append(f"not deployed ({summary['deploy']})")
    scored = summary.get("batch_transform")
    if scored:
        parts.append(f"transform job {scored['job']} {scored.get('status', 'not started')}: {scored['output']}")
    if summary.get("smoke_test"):  # smoke.run's result: the experiment's check may add figures
        smoke = summary["smoke_test"]
        figures = smoke.get("check") if isinstance(smoke.get("check"), dict) else {}
        shown = ", ".join(
            f"{name} {value:.4g}" if isinstance(value, float) else f"{name} {value}" for name, value in figures.items()
        )
        parts.append(f"smoke test passed in {smoke.get('latency_seconds')} s" + (f" ({shown})" if shown else ""))
    if isinstance(summary.get("cost"), dict):  # cost.run_cost's estimate
        from ml_pipeline.cost import cost_line  # noqa: PLC0415

        parts += summary["cost"].get("budget_stopped") or []
        line = cost_line(summary["cost"])
        if line:
            parts.append(line)
    return "; ".join(parts)


# --- the run's teardown, every part of it ----------------------------------------------------------


def _endpoint_usage(client: Clients, plan: Plan) -> dict | None:
    """What the run's endpoint runs, for its cost (``cost.endpoint_usage``); {"endpoint", "error"} when it
    cannot be read (the estimate says it leaves the endpoint out, and the run goes on)."""
    from ml_pipeline.cost import endpoint_usage  # noqa: PLC0415

    try:
        return endpoint_usage(client("sagemaker"), plan)
    except Exception as error:  # noqa: BLE001 - the estimate never fails the run
        log.warning("close_run: the endpoint's usage could not be read for the cost", exc_info=True)
        return {"endpoint": plan["names"]["endpoint"], "error": f"{type(error).__name__}: {error}"}


def close_run(client: Clients, plan: Plan, made: dict, failures: dict[str, str]) -> dict:
    """The run's teardown (the DAG's ``close_run``): stop its jobs, remove its hosting (undo a failed run's
    deploy on a kept endpoint), reject a failed run's model version, name its jobs, tear down its stack,
    and summarize. ``made`` is what the run's tasks returned: {"hosting": remove_hosting's ``made``,
    "model_package": ARN, "jobs": {"training": [names], "tuning": [names]}, "provisioned": {step: ids},
    "outcome": {name: what the task the DAG reports under it returned, "gate": verdict}, "budget_stops":
    [why max_cost_usd stopped a job], optional}; ``failures`` is ``failures()`` so far.

    Each part runs whatever the others did: an error is collected and the rest goes on, the stack
    included. The summary (whose state counts this task's own failure) is logged before anything else can
    fail, then written to S3; returns it, or raises TeardownIncomplete naming every part that failed, with
    the summary in its report."""
    report, errors = Report(), {}

    def part(name: str, call, default=None):
        try:
            return call()
        except Exception as error:  # noqa: BLE001 - whatever failed, the rest still runs
            log.exception("close_run: %s failed", name)
            errors[name] = f"{type(error).__name__}: {error}"
            return default

    failed = bool(failures)
    part("stop_jobs", lambda: stop_jobs(client("sagemaker"), plan, report))
    serving = _endpoint_usage(client, plan)  # for the cost, before teardown deletes the endpoint
    kept = part(
        "remove_hosting",
        lambda: remove_hosting(
            client("sagemaker"), client("application-autoscaling"), plan, made["hosting"], failed, report
        ),
        False,
    )
    serving_end = time.time()
    part("reject_version", lambda: reject_version(client("sagemaker"), made["model_package"], failures, plan, report))
    jobs = part("jobs_of_run", lambda: jobs_of_run(client("sagemaker"), plan, made["jobs"], report), {})
    # Then the run's own network and host, found by their tags (nothing, if it provisioned none).
    try:
        stack_report = teardown_stack(client, plan["key"])
    except TeardownIncomplete as error:
        stack_report = error.report
        errors["teardown_stack"] = "; ".join(error.report["errors"])
    except Exception as error:  # noqa: BLE001
        log.exception("close_run: teardown_stack failed")
        stack_report = {"run": plan["key"], "removed": {}, "errors": [f"{type(error).__name__}: {error}"]}
        errors["teardown_stack"] = stack_report["errors"][0]
    for kind, ids in part("earlier_removed", lambda: earlier_removed(client("s3"), plan), {}).items():
        stack_report.setdefault("removed", {}).setdefault(kind, [])
        stack_report["removed"][kind] += [i for i in ids if i not in stack_report["removed"][kind]]
    stack_report["already_gone"] = stack_gone(made["provisioned"], stack_report)

    from ml_pipeline.cost import run_cost  # noqa: PLC0415

    # The estimate never fails the run: what it could not count, it says.
    estimate = run_cost(client, plan, jobs or {}, serving, serving_end, made.get("budget_stops") or ())
    if errors:  # this task fails, and with it the run: the summary says so
        failures = {**failures, "close_run": "failed"}
    # Read once the run's machines are gone, their last samples in; never an error of the run's.
    resources = usage.run_resources(client, plan, made, jobs or {})
    summary = summarize(
        plan,
        made["outcome"],
        jobs or {},
        failures,
        {**report.as_dict(), "endpoint_kept": kept, "stack": stack_report, "errors": errors},
        cost=estimate,
        resources=resources,
    )
    log.info("the run's summary:\n%s", json.dumps(summary, indent=2, default=str))
    # The run in MLflow (never raises: a tracking server that is down is said in the log and the summary).
    summary["mlflow"] = tracking.log_run(client, plan, summary)
    summary["summary"] = part(
        "write_summary", lambda: write_summary(client("s3"), plan, summary), "not written to S3 (see the error above)"
    )
    log.info(
        "teardown done: %s removed, %s already gone%s; summary %s",
        len(report.removed),
        len(report.already_gone),
        f", {len(errors)} part(s) failed" if errors else "",
        summary["summary"],
    )
    if errors:
        raise TeardownIncomplete(
            {"run": plan["key"], "summary": summary, "errors": [f"{name}: {error}" for name, error in errors.items()]}
        )
    return summary
