"""Closing a run, whatever happened before it: what ``close_run`` (the run's teardown) does and reports.

- **Jobs**: the run's training and tuning jobs still in progress are stopped (nothing keeps billing),
  and the summary names every job the run started with its end state (a stopped job's included).
- **Hosting**: unless the endpoint is kept, the endpoint the run deployed, its scaling target, its
  endpoint config and model are deleted.
- **The registry**: the version a failed run registered is rejected with the reason, so it is never
  mistaken for a candidate awaiting approval (see ``reject_version``).
- **What is already gone** (deleted by someone else, or forgotten by an emulator restarted mid-run) is
  reported as such, per resource, and is not an error: teardown's job is that it no longer exists.
- **The summary** is written beside the run's artifacts; when the bucket itself is gone it says so and
  the summary still reaches the task's log and XCom (and the run's page in the UI, see ``ui.py``).
"""
from __future__ import annotations

import json
import logging
import time

from ml_pipeline import sagemaker_requests as requests

log = logging.getLogger(__name__)

#: Error codes meaning "no such resource", by service: SageMaker says ValidationException ("Could not
#: find ...", "Requested resource not found"), the others have their own.
_MISSING = ("ValidationException", "ResourceNotFound", "ObjectNotFoundException", "NoSuchBucket", "NoSuchKey",
            "404", "NotFound")
_TERMINAL = ("Completed", "Failed", "Stopped")
#: How long teardown waits for the jobs it stopped to reach their end state (AWS gives a job 120 s of
#: grace after SIGTERM, plus the upload).
STOP_WAIT_SECONDS = 300


def _missing(error) -> bool:
    response = getattr(error, "response", None) or {}
    code = response.get("Error", {}).get("Code", "")
    message = response.get("Error", {}).get("Message", "")
    return code in _MISSING and (code != "ValidationException" or "not found" in message.lower()
                                 or "could not find" in message.lower() or "does not exist" in message.lower())


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
    return (f"the run ended before its end: {LAST_TASK} is {failed.get(LAST_TASK)} (marking a run failed "
            f"skips the tasks that had not started)")


# --- jobs ------------------------------------------------------------------------------------------


def stop_jobs(sm, plan: dict, report: Report) -> None:
    """Stop the run's tuning and training jobs still in progress (found by the run's key in their names)."""
    key = plan["key"]
    for summary in sm.list_hyper_parameter_tuning_jobs(NameContains=key, StatusEquals="InProgress",
                                                       MaxResults=100)["HyperParameterTuningJobSummaries"]:
        sm.stop_hyper_parameter_tuning_job(HyperParameterTuningJobName=summary["HyperParameterTuningJobName"])
        report.did(f"stopped tuning job {summary['HyperParameterTuningJobName']}")
    for summary in sm.list_training_jobs(NameContains=key, StatusEquals="InProgress",
                                         MaxResults=100)["TrainingJobSummaries"]:
        sm.stop_training_job(TrainingJobName=summary["TrainingJobName"])
        report.did(f"stopped training job {summary['TrainingJobName']}")


def job_end_state(description: dict, status_key: str) -> dict:
    """A job's end state as the summary shows it: status, secondary status and why."""
    status = description[status_key]
    state = {"name": description.get("TrainingJobName") or description.get("HyperParameterTuningJobName"),
             "status": status}
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
    none), else the last status transition's message (e.g. "Training job stopped by user" or
    MaxRuntimeExceeded)."""
    if description.get("FailureReason"):
        return description["FailureReason"]
    transitions = description.get("SecondaryStatusTransitions") or []
    if transitions and transitions[-1].get("StatusMessage"):
        return transitions[-1]["StatusMessage"]
    if description.get("SecondaryStatus") and description["SecondaryStatus"] != description.get("TrainingJobStatus"):
        return description["SecondaryStatus"]
    return None


def jobs_of_run(sm, plan: dict, started: dict, report: Report, wait_seconds: float = STOP_WAIT_SECONDS) -> dict:
    """Every training and tuning job the run started, with its end state: the jobs its tasks started
    (``started``: {"training": [names], "tuning": [names]}) and any other of its jobs (a tuning job's
    trials, earlier attempts). A job its task started that AWS no longer knows is reported as gone. Jobs
    still stopping are waited for (up to ``wait_seconds``) so that the summary shows how they ended."""
    key = plan["key"]
    deadline = time.monotonic() + wait_seconds
    result = {}
    for kind, lister, field, describe, argument, status_key in (
        ("tuning", sm.list_hyper_parameter_tuning_jobs, "HyperParameterTuningJobSummaries",
         sm.describe_hyper_parameter_tuning_job, "HyperParameterTuningJobName", "HyperParameterTuningJobStatus"),
        ("training", sm.list_training_jobs, "TrainingJobSummaries",
         sm.describe_training_job, "TrainingJobName", "TrainingJobStatus"),
    ):
        listed = [s[argument] for s in lister(NameContains=key, MaxResults=100)[field]]
        names = list(dict.fromkeys([*started.get(kind, []), *sorted(listed)]))
        states = []
        for name in names:
            try:
                description = describe(**{argument: name})
                while description[status_key] not in _TERMINAL and time.monotonic() < deadline:
                    time.sleep(2)
                    description = describe(**{argument: name})
            except Exception as error:  # noqa: BLE001 - botocore's ClientError
                if not _missing(error):
                    raise
                report.gone(f"{kind} job {name}")
                states.append({"name": name, "status": "gone"})
                continue
            states.append(job_end_state(description, status_key))
        result[kind] = states
    return result


# --- hosting ---------------------------------------------------------------------------------------


def remove_hosting(sm, aas, plan: dict, made: dict, report: Report) -> bool:
    """Unless the endpoint is kept: the run's endpoint, scaling target, endpoint config and model.
    ``made`` says what the run's tasks created ({"endpoint", "autoscaling", "model", "endpoint_config"}:
    truthy when created), so that one created and no longer there is reported as gone, and one never
    created (the gate kept the deploy from happening) is not mentioned. Returns whether the endpoint is kept."""
    p, names = plan["params"], plan["names"]
    endpoint = _describe_endpoint(sm, names["endpoint"])
    ours = endpoint is not None and endpoint.get("EndpointConfigName") == names["endpoint_config"]
    keep = bool(p["keep_endpoint"] and ours and endpoint["EndpointStatus"] == "InService")
    if keep:
        return True
    target = requests.scalable_target_id(plan)
    if made.get("autoscaling") or ours:
        try:
            aas.deregister_scalable_target(ServiceNamespace="sagemaker", ResourceId=target,
                                           ScalableDimension="sagemaker:variant:DesiredInstanceCount")
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
    for kind, delete, argument in (("endpoint_config", sm.delete_endpoint_config, "EndpointConfigName"),
                                   ("model", sm.delete_model, "ModelName")):
        try:
            delete(**{argument: names[kind]})
            report.did(f"deleted {kind.replace('_', ' ')} {names[kind]}")
        except sm.exceptions.ClientError as error:
            if not _missing(error):
                raise
            if made.get(kind):
                report.gone(f"{kind.replace('_', ' ')} {names[kind]}")
    return False


def _describe_endpoint(sm, name: str) -> dict | None:
    try:
        return sm.describe_endpoint(EndpointName=name)
    except sm.exceptions.ClientError as error:
        if not _missing(error):
            raise
        return None


def _wait_gone(sm, name: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while _describe_endpoint(sm, name) is not None and time.monotonic() < deadline:
        time.sleep(1)


# --- the registry ----------------------------------------------------------------------------------


def reject_version(sm, package_arn: str | None, failures: dict[str, str], plan: dict, report: Report) -> None:
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
        if not _missing(error):
            raise
        report.gone(f"model package version {package_arn}")
        return
    if package["ModelApprovalStatus"] in ("Approved", "Rejected"):
        return
    reason = f"Run {plan['key']}: {failure_sentence(failures)}"
    sm.update_model_package(ModelPackageArn=package_arn, ModelApprovalStatus="Rejected",
                            ApprovalDescription=reason[:1024])
    report.did(f"rejected model package version {package_arn} ({reason})")


# --- the stack --------------------------------------------------------------------------------------


def stack_gone(provisioned: dict, stack_report: dict) -> list[str]:
    """The ids the run's provisioning steps reported that teardown found nothing of: already gone."""
    removed = {item for items in stack_report.get("removed", {}).values() for item in items}
    expected = {value for result in provisioned.values() if isinstance(result, dict)
                for key, value in result.items()
                if isinstance(value, str) and key.endswith(("_id", "_name")) and key != "availability_zone"}
    return sorted(expected - removed)


# --- the summary -----------------------------------------------------------------------------------


def summary_key(plan: dict) -> str:
    return f"runs/{plan['key']}/summary.json"


def summarize(plan: dict, outcome: dict, jobs: dict, failures: dict[str, str], teardown_result: dict) -> dict:
    """One JSON a newcomer can read: how the run ended, which jobs it ran and how they ended, what they
    scored, where the weights are, what was removed."""
    best = outcome.get("best") or {}
    training = [job for job in jobs.get("training", []) if not _is_trial(job["name"], jobs)]
    return {
        "run": plan["key"],
        "state": "failed" if failures else "success",
        "failed_tasks": failures or None,
        "mode": plan["params"]["mode"],
        "preset": plan["params"]["preset"],
        "data": outcome.get("data"),
        "image": outcome.get("image"),
        # The best job once one was picked; before that, the job the run trained (or the last attempt).
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
        "endpoint": plan["names"]["endpoint"] if outcome.get("smoke_test") else None,
        "autoscaling": outcome.get("autoscaling"),
        "smoke_test": outcome.get("smoke_test"),
        "promoted": outcome.get("promoted"),
        "teardown": teardown_result,
    }


def _is_trial(name: str, jobs: dict) -> bool:
    return any(name.startswith(tuning["name"] + "-") for tuning in jobs.get("tuning", []))


def write_summary(s3, plan: dict, summary: dict) -> str:
    """``s3://<bucket>/runs/<run>/summary.json``, or a sentence saying why it could not be written there
    (the bucket is gone); either way the caller still has the summary to log and return."""
    bucket, key = plan["params"]["bucket"], summary_key(plan)
    body = json.dumps(summary, indent=2, default=str).encode()
    try:
        s3.put_object(Bucket=bucket, Key=key, Body=body, ContentType="application/json")
    except s3.exceptions.ClientError as error:
        if error.response.get("Error", {}).get("Code") != "NoSuchBucket":
            raise
        where = (f"not written to S3: bucket {bucket} no longer exists (it is in this task's log, its XCom "
                 f"and the run's summary tab)")
        log.warning("summary %s", where)
        return where
    return f"s3://{bucket}/{key}"


def outcome_line(summary: dict) -> str:
    """The run's end in one line: state, jobs and their end states, the gate, the smoke test."""
    parts = [f"run {summary['run']} {summary['state']}"]
    if summary.get("failed_tasks"):
        parts[0] += f" ({failure_sentence(summary['failed_tasks'])})"
    for kind in ("tuning", "training"):
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
    if summary.get("smoke_test"):
        parts.append(f"smoke test accuracy {summary['smoke_test']['accuracy']:.1%}")
    return "; ".join(parts)
