"""Every run of every experiment in MLflow: what ``close_run`` logs once the run's summary is made.

- **Where**: ``MLFLOW_TRACKING_URI`` (MLflow's own variable), else the Airflow connection ``mlflow_default``
  (its extra's ``tracking_uri``; else its host, a URI or a SageMaker managed MLflow ARN, or schema, host and
  port; its login and password, if any, are MLflow's basic auth). A SageMaker ARN
  (``arn:aws:sagemaker:<region>:<account>:mlflow-tracking-server/<name>``) works through the
  ``sagemaker-mlflow`` plugin (SigV4 with the task's AWS credentials). Neither set: nothing is logged.
- **What**: one MLflow run per pipeline run, in the MLflow experiment named after the experiment, named and
  tagged with the run's key: its parameters (hyperparameters, instance type and count, images, the data
  partition, the revision: experiment file, source and commit), each metric's whole series, the gate's
  verdict and the endpoint as tags, the summary and the best weights' metadata as artifacts, and the model
  as a version of the registered model named after the model package group, linked to the SageMaker
  model package version (its ARN as tag and description; the weights as its source; alias
  ``production`` once approved). A tuning run's trials are its child runs, the best one tagged.
- **The series** are the training job's metrics as the job emitted them, one point per line its
  MetricDefinitions matched (step 1, 2, ...; the line's time), read from the job's log stream in
  ``/aws/sagemaker/TrainingJobs``, as SageMaker reads them (a regex's first group, else its match; NaN and
  infinities dropped). CloudWatch's metrics of the same names are per period (a second at best), and the
  examples' epochs take less than one: their curve would be one point.
- **Once per run**: the MLflow run is found by its key (tag ``ml_pipeline.run``) before one is made, its
  trials by name, its model version by run: a retried ``close_run`` completes the same run.
- **Never fails the run**: a server that is down or refuses costs seconds (MLflow's HTTP retries and
  timeout are short here unless the deployment sets them), and ``log_run`` returns
  ``{"error": "<why>"}`` for the summary and says it in the log.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import time
import urllib.parse
from collections.abc import Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ml_pipeline.aws import is_missing

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from ml_pipeline.aws import Client, Clients
    from ml_pipeline.plan import Plan

log = logging.getLogger(__name__)

CONN_ID = "mlflow_default"
#: The pipeline run's key on its MLflow run, and on each trial's (child) run with the trial's job name.
RUN_TAG = "ml_pipeline.run"
TRIAL_OF_TAG = "ml_pipeline.trial_of"
TRIAL_TAG = "ml_pipeline.trial"
TRAINING_LOG_GROUP = "/aws/sagemaker/TrainingJobs"
#: What the MLflow UI shows an experiment as: model training (runs, metrics), not GenAI (traces).
EXPERIMENT_KIND_TAG, MODEL_TRAINING = "mlflow.experimentKind", "custom_model_development"
#: The alias of the registered model's version that production serves (approved in SageMaker's registry).
PRODUCTION_ALIAS = "production"
#: MLflow's HTTP settings when the deployment sets none: MLflow's own (7 retries with backoff, 120 s
#: timeouts) keep a run waiting minutes on a server that is down.
HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0.5",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
}
#: The MLflow UI's address when it is not the tracking URI's (a server behind a proxy, compose's service name).
UI_URL_VARIABLE = "ML_PIPELINE_MLFLOW_UI_URL"
_TERMINAL = {"Completed": "FINISHED", "Failed": "FAILED", "Stopped": "KILLED"}


class TrackingServer:
    """Where the run logs: the URI (or ARN) and, from a connection, basic-auth credentials (never shown)."""

    def __init__(self, uri: str, source: str, username: str | None = None, password: str | None = None):
        self.uri = uri
        self.source = source
        self.username = username
        self.password = password

    @property
    def is_arn(self) -> bool:
        return self.uri.startswith("arn:")

    @property
    def shown(self) -> str:
        """The URI without any credentials in it, for logs and the summary."""
        parts = urllib.parse.urlsplit(self.uri)
        if parts.username or parts.password:
            host = parts.hostname or ""
            return urllib.parse.urlunsplit(parts._replace(netloc=host + (f":{parts.port}" if parts.port else "")))
        return self.uri


def tracking_server(conn_id: str = CONN_ID) -> TrackingServer | None:
    """``MLFLOW_TRACKING_URI``, else the Airflow connection ``conn_id``, else None."""
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return TrackingServer(os.environ["MLFLOW_TRACKING_URI"], "MLFLOW_TRACKING_URI")
    from airflow.sdk import BaseHook  # noqa: PLC0415
    from airflow.sdk.exceptions import AirflowNotFoundException  # noqa: PLC0415

    try:
        connection = BaseHook.get_connection(conn_id)
    except AirflowNotFoundException:
        return None
    extra = connection.extra_dejson or {}
    host = connection.host or ""
    if extra.get("tracking_uri"):
        uri = str(extra["tracking_uri"])
    elif host.startswith("arn:") or "://" in host:
        uri = host
    elif host:
        uri = f"{connection.schema or 'http'}://{host}" + (f":{connection.port}" if connection.port else "")
    else:
        return None
    return TrackingServer(uri, f"the Airflow connection {conn_id}", connection.login, connection.password)


@contextlib.contextmanager
def _settings(server: TrackingServer) -> Iterator[None]:
    """MLflow's environment for this call: short HTTP retries (unless set), the connection's credentials;
    and sagemaker-mlflow's header provider, which warns at every request to a server that is no ARN, quiet."""
    wanted = {name: value for name, value in HTTP_DEFAULTS.items() if not os.environ.get(name)}
    if server.username:
        wanted["MLFLOW_TRACKING_USERNAME"] = server.username
    if server.password:
        wanted["MLFLOW_TRACKING_PASSWORD"] = server.password
    before = {name: os.environ.get(name) for name in wanted}
    headers = logging.getLogger("mlflow.tracking.request_header.registry")
    level = headers.level
    os.environ.update(wanted)
    if not server.is_arn:
        headers.setLevel(logging.ERROR)
    tracking_before = os.environ.get("MLFLOW_TRACKING_URI")
    if server.is_arn:
        import mlflow  # noqa: PLC0415

        # sagemaker-mlflow's SigV4 signer and headers read the process's tracking URI, not the client's.
        mlflow.set_tracking_uri(server.uri)
    try:
        yield
    finally:
        headers.setLevel(level)
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        if server.is_arn:  # as it was (set_tracking_uri sets MLFLOW_TRACKING_URI too)
            # None unsets it (MLflow's stub says str).
            mlflow.set_tracking_uri(tracking_before)  # type: ignore[arg-type]


# --- the entry point -------------------------------------------------------------------------------


def log_run(client: Clients, plan: Plan, summary: dict, conn_id: str = CONN_ID) -> dict:
    """The run in MLflow: {"run_id", "experiment_id", "url", "model_version"}, or {"error": why} (with the
    run's id when it was made before the error). Never raises."""
    started = time.monotonic()
    try:
        server = tracking_server(conn_id)
    except Exception as error:  # noqa: BLE001 - a connection that cannot be read is the same: not logged
        return _failed(f"the Airflow connection {conn_id} could not be read ({type(error).__name__}: {error})")
    if server is None:
        reason = f"no MLflow tracking server: set MLFLOW_TRACKING_URI or the Airflow connection {conn_id}"
        log.info("MLflow: %s; the run is not logged", reason)
        return {"error": reason}
    progress: dict[str, Any] = {}
    try:
        with _settings(server):
            result = _log(client, plan, summary, server, progress)
    except Exception as error:  # noqa: BLE001 - whatever MLflow or the server did, the run goes on
        said = _first_line(error).replace(server.uri, server.shown)  # no credentials from the URI in it
        reason = f"MLflow at {server.shown} ({server.source}): {type(error).__name__}: {said}"
        return _failed(reason, progress.get("run_id"), time.monotonic() - started)
    log.info(
        "MLflow: run %s logged in %.1f s to %s (%s): %s",
        result["run_id"],
        time.monotonic() - started,
        server.shown,
        server.source,
        result["url"],
    )
    return result


def _failed(reason: str, run_id: str | None = None, seconds: float | None = None) -> dict:
    took = f" after {seconds:.1f} s" if seconds is not None else ""
    log.warning("MLflow: the run is not (fully) logged%s: %s; the run goes on", took, reason)
    return {"error": reason, **({"run_id": run_id} if run_id else {})}


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return (text[0] if text else "")[:500]


def _log(client: Clients, plan: Plan, summary: dict, server: TrackingServer, progress: dict) -> dict:
    import mlflow  # noqa: PLC0415 - only the task that logs imports MLflow

    ml = mlflow.MlflowClient(tracking_uri=server.uri, registry_uri=server.uri)
    sm, logs = client("sagemaker"), client("logs")
    experiment_id = _experiment_id(ml, plan["experiment"]["name"])
    best_job = _training_job(sm, summary.get("training_job"))
    tuning_job = _tuning_job(sm, summary.get("tuning_job"))
    run = _find_run(ml, experiment_id, plan["key"]) or ml.create_run(
        experiment_id,
        run_name=f"{plan['params']['mode']}-{plan['key']}",
        start_time=_start_ms(best_job, tuning_job),
        tags={RUN_TAG: plan["key"]},
    )
    run_id = run.info.run_id
    progress["run_id"] = run_id
    result: dict[str, Any] = {
        "run_id": run_id,
        "experiment_id": experiment_id,
        "url": f"{_ui_base(server, sm)}/#/experiments/{experiment_id}/runs/{run_id}",
    }
    _log_batch(ml, run, params=run_params(plan, summary, best_job, tuning_job), tags=run_tags(plan, summary))
    metrics = _series_metrics(job_series(logs, best_job)) if best_job else []
    _log_batch(ml, run, metrics=metrics + _summary_metrics(summary, best_job, bool(metrics)))
    if tuning_job:
        best = _log_trials(ml, experiment_id, run_id, sm, logs, plan, tuning_job)
        if best:
            ml.set_tag(run_id, "best_trial", best[0])
            ml.set_tag(run_id, "best_trial_run_id", best[1])
    version = _register(ml, sm, plan, summary, run_id)
    result["model_version"] = version
    ml.log_dict(run_id, {**summary, "mlflow": result}, "summary.json")
    metadata = _metadata(client("s3"), summary)
    if metadata is not None:
        ml.log_dict(run_id, metadata, "metadata.json")
    ml.set_terminated(run_id, "FINISHED" if summary.get("state") == "success" else "FAILED")
    return result


# --- the experiment and the run ---------------------------------------------------------------------


def _experiment_id(ml: MlflowClient, name: str) -> str:
    from mlflow.exceptions import MlflowException  # noqa: PLC0415

    found = ml.get_experiment_by_name(name)
    if found is not None:
        if found.lifecycle_stage == "deleted":  # deleted in the UI: logging to it again brings it back
            ml.restore_experiment(found.experiment_id)
        if EXPERIMENT_KIND_TAG not in found.tags:
            ml.set_experiment_tag(found.experiment_id, EXPERIMENT_KIND_TAG, MODEL_TRAINING)
        return found.experiment_id
    try:
        return ml.create_experiment(name, tags={"ml_pipeline.experiment": name, EXPERIMENT_KIND_TAG: MODEL_TRAINING})
    except MlflowException:  # another run created it meanwhile
        found = ml.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id


def _find_run(ml: MlflowClient, experiment_id: str, key: str):
    runs = ml.search_runs([experiment_id], filter_string=f"tags.`{RUN_TAG}` = '{key}'", max_results=1)
    return runs[0] if runs else None


def _ui_base(server: TrackingServer, sm: Client) -> str:
    """The MLflow UI's address: ML_PIPELINE_MLFLOW_UI_URL, else the tracking URI; for a SageMaker ARN,
    the tracking server's URL (its UI, reached through SageMaker's presigned login)."""
    if os.environ.get(UI_URL_VARIABLE):
        return os.environ[UI_URL_VARIABLE].rstrip("/")
    if not server.is_arn:
        return server.shown.rstrip("/")
    try:
        name = server.uri.rsplit("/", 1)[-1]
        return sm.describe_mlflow_tracking_server(TrackingServerName=name)["TrackingServerUrl"].rstrip("/")
    except Exception:  # noqa: BLE001 - an app, or no permission to describe it: the plugin's address
        from sagemaker_mlflow.host_creds import get_host_creds  # noqa: PLC0415

        return get_host_creds(server.uri).host.rstrip("/")


def _chunks(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _log_batch(ml: MlflowClient, run, params: dict | None = None, tags: dict | None = None, metrics=()) -> None:
    """Params, tags and metrics, in MLflow's batch limits; what the run holds already (an earlier try's)
    is not logged again: a param cannot change, and a metric's series would be doubled."""
    from mlflow.entities import Param, RunTag  # noqa: PLC0415

    data = ml.get_run(run.info.run_id).data
    new_params = [Param(k, _text(v, 6000)) for k, v in (params or {}).items() if k not in data.params]
    for batch in _chunks(new_params, 100):
        ml.log_batch(run.info.run_id, params=batch)
    for batch in _chunks([RunTag(k, _text(v, 8000)) for k, v in (tags or {}).items()], 100):
        ml.log_batch(run.info.run_id, tags=batch)
    for batch in _chunks([m for m in metrics if m.key not in data.metrics], 1000):
        ml.log_batch(run.info.run_id, metrics=batch)


def _text(value: Any, limit: int) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str, sort_keys=True)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --- what the run logs ------------------------------------------------------------------------------


def run_params(plan: Plan, summary: dict, best_job: dict | None, tuning_job: dict | None) -> dict[str, Any]:
    """The run's parameters: the best (or only) job's hyperparameters as the job got them, its resources
    and images, the data partition, the revision; in tune mode the tuning's settings too."""
    from ml_pipeline.steps import user_hyperparameters  # noqa: PLC0415

    p, revision = plan["params"], plan.get("revision") or {}
    if best_job:
        hyperparameters = user_hyperparameters(best_job.get("HyperParameters") or {})
        resources = best_job.get("ResourceConfig") or {}
        instance = (resources.get("InstanceType"), resources.get("InstanceCount"))
    else:  # no SageMaker job (host compute, or the run ended before training): what the run set
        hyperparameters = dict(plan.get("static_hyperparameters") or plan["hyperparameters"])
        hyperparameters.update(summary.get("best_hyperparameters") or {})
        instance = (
            (p["host_instance_type"], 1) if p.get("compute") == "host" else (p["instance_type"], p["instance_count"])
        )
    code = summary.get("code") or {}
    params: dict[str, Any] = {
        **hyperparameters,
        "mode": p["mode"],
        "preset": p.get("preset"),
        "compute": p.get("compute", "sagemaker"),
        "instance_type": instance[0],
        "instance_count": instance[1],
        "use_spot": p.get("use_spot"),
        "image": code.get("training_image") or (best_job or {}).get("AlgorithmSpecification", {}).get("TrainingImage"),
        "serving_image": code.get("serving_image"),
        "code": code.get("how"),
        "objective": f"{plan['objective']['type']} {plan['objective']['metric']}",
        "model_package_group": p["model_package_group"],
        "revision.file_hash": revision.get("file_hash"),
        "revision.source_hash": revision.get("source_hash"),
        "revision.commit": revision.get("commit"),
        "revision.trigger": revision.get("trigger"),
        "data_interval": f"{plan['data_interval']['start']} .. {plan['data_interval']['end']}",
    }
    for channel, uri in (summary.get("data") or {}).items():
        params[f"data.{channel}"] = uri
    if tuning_job:
        config = tuning_job.get("HyperParameterTuningJobConfig") or {}
        limits = config.get("ResourceLimits") or {}
        params.update(
            {
                "tuning.strategy": config.get("Strategy"),
                "tuning.max_jobs": limits.get("MaxNumberOfTrainingJobs"),
                "tuning.max_parallel_jobs": limits.get("MaxParallelTrainingJobs"),
                "tuning.parameter_ranges": config.get("ParameterRanges"),
            }
        )
    return {name: value for name, value in params.items() if value is not None}


def run_tags(plan: Plan, summary: dict) -> dict[str, str]:
    """How the run ended (state, the gate's verdict, the endpoint), what it made (jobs, the model package),
    and where it ran (the Airflow run), with the outcome line as the run's description."""
    from ml_pipeline.closing import outcome_line  # noqa: PLC0415

    gate = summary.get("quality_gate")
    tags = {
        RUN_TAG: plan["key"],
        "experiment": plan["experiment"]["name"],
        "state": summary.get("state") or "unknown",
        "quality_gate": ("deploy" if gate["deploy"] else "keep production") if gate else "not reached",
        "quality_gate.reason": gate["reason"] if gate else "the run ended before the gate",
        "endpoint": summary.get("endpoint") or summary.get("deploy") or "none",
        "sagemaker.training_job": summary.get("training_job"),
        "sagemaker.tuning_job": summary.get("tuning_job"),
        "sagemaker.model_package_arn": summary.get("model_package"),
        "promoted": "true" if summary.get("promoted") else "false",
        "mlflow.note.content": outcome_line(summary),
    }
    if summary.get("failed_tasks"):
        tags["failed_tasks"] = ", ".join(sorted(summary["failed_tasks"]))
    resources = summary.get("resources") or {}
    if resources.get("verdicts"):
        tags["resources.verdicts"] = "; ".join(resources["verdicts"])
    cost = summary.get("cost") or {}
    if cost.get("prices"):
        tags["cost.prices"] = str(cost["prices"])
    tags.update(_airflow_tags())
    return {name: str(value) for name, value in tags.items() if value is not None}


def _airflow_tags() -> dict[str, str]:
    """The Airflow run this is (inside a task only), and its page when the api-server's base_url is set."""
    try:
        from airflow.sdk import get_current_context  # noqa: PLC0415

        context = get_current_context()
        dag_id, run_id = context["dag"].dag_id, context["run_id"]
    except Exception:  # noqa: BLE001 - called outside a task (tests, scripts)
        return {}
    tags = {"airflow.dag_id": dag_id, "airflow.run_id": run_id, "mlflow.source.name": dag_id}
    with contextlib.suppress(Exception):
        from airflow.configuration import conf  # noqa: PLC0415

        base = conf.get("api", "base_url", fallback="")
        if base:
            quoted = urllib.parse.quote(run_id, safe="")
            tags["airflow.run_url"] = f"{base.rstrip('/')}/dags/{dag_id}/runs/{quoted}"
    return tags


def _summary_metrics(summary: dict, best_job: dict | None, have_series: bool) -> list:
    """The run's figures that are no series: the jobs' seconds, the cost and the hosts' use (when the
    summary has them); and the final metrics when no series was found (a host run's)."""
    from mlflow.entities import Metric  # noqa: PLC0415

    now = int(time.time() * 1000)
    figures: dict[str, Any] = {}
    if best_job:
        figures["training_seconds"] = best_job.get("TrainingTimeInSeconds")
        figures["billable_seconds"] = best_job.get("BillableTimeInSeconds")
    if not have_series:
        figures.update(summary.get("metrics") or {})
    cost = summary.get("cost") or {}
    figures["cost.total_usd"] = cost.get("total_usd")
    figures["cost.spot_savings_usd"] = cost.get("spot_savings_usd")
    for host, metrics in ((summary.get("resources") or {}).get("hosts") or {}).items():
        for metric, values in (metrics or {}).items():
            for stat in ("peak", "mean"):
                if isinstance(values, dict):
                    figures[f"resources.{host}.{metric}.{stat}"] = values.get(stat)
    return [
        Metric(key=_metric_key(name), value=float(value), timestamp=now, step=0)
        for name, value in figures.items()
        if isinstance(value, (int, float)) and not isinstance(value, bool) and _finite(float(value))
    ]


def _metric_key(name: str) -> str:
    """MLflow takes letters, digits, _ - . / : and spaces in a metric's name."""
    return re.sub(r"[^\w\-./: ]", "_", name)[:250]


def _finite(value: float) -> bool:
    return value == value and value not in (float("inf"), float("-inf"))


# --- the jobs and their series -----------------------------------------------------------------------


def _training_job(sm: Client, name: str | None) -> dict | None:
    """The job's description, or None: no job, or no SageMaker job of that name (a host run's)."""
    if not name:
        return None
    try:
        return sm.describe_training_job(TrainingJobName=name)
    except sm.exceptions.ClientError as error:
        if is_missing(error):
            return None
        raise


def _tuning_job(sm: Client, name: str | None) -> dict | None:
    if not name:
        return None
    try:
        return sm.describe_hyper_parameter_tuning_job(HyperParameterTuningJobName=name)
    except sm.exceptions.ClientError as error:
        if is_missing(error):
            return None
        raise


def _ms(value: Any) -> int | None:
    if isinstance(value, datetime):
        return int(value.timestamp() * 1000)
    return None


def _start_ms(*jobs: dict | None) -> int | None:
    times = [t for t in (_ms((job or {}).get("CreationTime")) for job in jobs) if t is not None]
    return min(times) if times else None


def job_series(logs: Client, job: dict, host: str = "algo-1") -> dict[str, list[tuple[int, float]]]:
    """Each metric of the job's MetricDefinitions as it emitted them: {name: [(time in ms, value)...]},
    from its host's log stream(s) (``<job>/<host>-<epoch>``; a restarted spot job has several), in order."""
    definitions = []
    for definition in (job.get("AlgorithmSpecification") or {}).get("MetricDefinitions") or []:
        with contextlib.suppress(re.error, KeyError):
            definitions.append((definition["Name"], re.compile(definition["Regex"])))
    series: dict[str, list[tuple[int, float]]] = {}
    if not definitions:
        return series
    prefix = f"{job['TrainingJobName']}/{host}-"
    try:
        streams = [
            stream
            for page in logs.get_paginator("describe_log_streams").paginate(
                logGroupName=TRAINING_LOG_GROUP, logStreamNamePrefix=prefix
            )
            for stream in page["logStreams"]
        ]
    except logs.exceptions.ResourceNotFoundException:
        return series
    for stream in sorted(streams, key=lambda s: (s.get("creationTime", 0), s["logStreamName"])):
        for event in _events(logs, stream["logStreamName"]):
            for name, regex in definitions:
                value = _matched(regex, event["message"])
                if value is not None:
                    series.setdefault(name, []).append((int(event["timestamp"]), value))
    return series


def _matched(regex: re.Pattern, line: str) -> float | None:
    match = regex.search(line)
    if not match:
        return None
    try:
        value = float(match.group(1) if regex.groups else match.group(0))
    except (ValueError, IndexError):
        return None
    return value if _finite(value) else None


def _events(logs: Client, stream: str) -> Iterator[dict]:
    token = None
    while True:
        kwargs: dict[str, str] = {"nextToken": token} if token else {}
        page = logs.get_log_events(
            logGroupName=TRAINING_LOG_GROUP, logStreamName=stream, startFromHead=True, limit=10_000, **kwargs
        )
        yield from page["events"]
        if not page["events"] or page.get("nextForwardToken") in (None, token):
            return
        token = page["nextForwardToken"]


def _series_metrics(series: dict[str, list[tuple[int, float]]]) -> list:
    from mlflow.entities import Metric  # noqa: PLC0415

    return [
        Metric(key=_metric_key(name), value=value, timestamp=timestamp, step=step)
        for name, points in series.items()
        for step, (timestamp, value) in enumerate(points, start=1)
    ]


def _trials(sm: Client, tuning_name: str) -> list[dict]:
    return [
        summary
        for page in sm.get_paginator("list_training_jobs_for_hyper_parameter_tuning_job").paginate(
            HyperParameterTuningJobName=tuning_name
        )
        for summary in page["TrainingJobSummaries"]
    ]


def _log_trials(
    ml: MlflowClient, experiment_id: str, parent_id: str, sm: Client, logs: Client, plan: Plan, tuning_job: dict
) -> tuple[str, str] | None:
    """Each trial of the tuning job as a child run (params: its hyperparameters; metrics: its series; tags:
    its status, why it ended, whether it is the best); returns the best's (job name, run id)."""
    from ml_pipeline.steps import user_hyperparameters  # noqa: PLC0415

    key = plan["key"]
    existing = {
        run.data.tags.get(TRIAL_TAG): run
        for run in ml.search_runs([experiment_id], filter_string=f"tags.`{TRIAL_OF_TAG}` = '{key}'", max_results=10_000)
    }
    best_name = (tuning_job.get("BestTrainingJob") or {}).get("TrainingJobName")
    best = None
    for trial in _trials(sm, tuning_job["HyperParameterTuningJobName"]):
        name = trial["TrainingJobName"]
        job = _training_job(sm, name)
        run = existing.get(name) or ml.create_run(
            experiment_id,
            run_name=name,
            start_time=_ms((job or trial).get("TrainingStartTime") or trial.get("CreationTime")),
            tags={"mlflow.parentRunId": parent_id, TRIAL_OF_TAG: key, TRIAL_TAG: name},
        )
        status = trial.get("TrainingJobStatus", "")
        tags = {
            "best": "true" if name == best_name else "false",
            "status": status,
            "sagemaker.training_job": name,
            "sagemaker.tuning_job": tuning_job["HyperParameterTuningJobName"],
        }
        if trial.get("FailureReason") or (job or {}).get("FailureReason"):
            tags["failure_reason"] = trial.get("FailureReason") or job["FailureReason"]  # type: ignore[index]
        if trial.get("ObjectiveStatus"):
            tags["objective_status"] = trial["ObjectiveStatus"]
        params = user_hyperparameters((job or {}).get("HyperParameters") or trial.get("TunedHyperParameters") or {})
        metrics = _series_metrics(job_series(logs, job)) if job else []
        objective = trial.get("FinalHyperParameterTuningJobObjectiveMetric")
        if not metrics and objective:
            from mlflow.entities import Metric  # noqa: PLC0415

            metrics = [Metric(_metric_key(objective["MetricName"]), float(objective["Value"]), _now_ms(), 1)]
        _log_batch(ml, run, params=params, tags=tags, metrics=metrics)
        if status in _TERMINAL:
            ml.set_terminated(run.info.run_id, _TERMINAL[status], end_time=_ms((job or trial).get("TrainingEndTime")))
        if name == best_name:
            best = (name, run.info.run_id)
    return best


def _now_ms() -> int:
    return int(time.time() * 1000)


# --- the registry and the artifacts -----------------------------------------------------------------


def _register(ml: MlflowClient, sm: Client, plan: Plan, summary: dict, run_id: str) -> dict | None:
    """The run's model as a version of the registered model named after its model package group, linked
    to the SageMaker model package version (tag ``sagemaker.model_package_arn`` and the description), its
    approval mirrored (tag; alias ``production`` once approved). None when the run registered nothing."""
    from mlflow.exceptions import MlflowException  # noqa: PLC0415

    arn = summary.get("model_package")
    if not arn:
        return None
    name = plan["params"]["model_package_group"]
    try:
        ml.get_registered_model(name)
    except MlflowException as error:
        if error.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        with contextlib.suppress(MlflowException):  # another run registered it meanwhile
            ml.create_registered_model(
                name,
                tags={"sagemaker.model_package_group": name},
                description=f"The SageMaker model package group {name} (experiment {plan['experiment']['name']})",
            )
    found = ml.search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
    if found:
        version = found[0]
    else:
        weights = (summary.get("best_weights") or {}).get("model_data_url")
        version = ml.create_model_version(
            name,
            source=weights or arn,
            run_id=run_id,
            tags={"sagemaker.model_package_arn": arn},
            description=f"SageMaker model package version {arn}",
        )
    try:
        status = sm.describe_model_package(ModelPackageName=arn)["ModelApprovalStatus"]
    except sm.exceptions.ClientError as error:
        if not is_missing(error):
            raise
        status = "gone"
    ml.set_model_version_tag(name, version.version, "sagemaker.approval_status", status)
    if status == "Approved":
        ml.set_registered_model_alias(name, PRODUCTION_ALIAS, version.version)
    return {"name": name, "version": str(version.version)}


def _metadata(s3: Client, summary: dict) -> dict | None:
    """The best weights' metadata.json (``steps.copy_best_weights``), None when the run wrote none."""
    url = (summary.get("best_weights") or {}).get("metadata_url")
    if not url or not url.startswith("s3://"):
        return None
    bucket, key = url[len("s3://") :].split("/", 1)
    try:
        return json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    except s3.exceptions.ClientError as error:
        if is_missing(error):
            return None
        raise
