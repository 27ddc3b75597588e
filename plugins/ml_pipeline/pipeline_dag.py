"""The pipeline DAG of one experiment: ``build_dag(experiment)``, one DAG per ``experiments/<name>/``.

Its dag_id is ``train_<name>``: the prefix says what the DAG does and keeps every experiment's DAG
together in the UI's list, apart from the project's other DAGs (``ml_pipeline_reaper``); the name alone
could be any word. The DAG's documentation is ``DOC`` with the experiment's description above it.

Building one DAG must stay cheap (the dag-processor builds every experiment's at each parse): the Params
are attached after the tasks, so that Airflow does not deep-copy them into each of them (see
``_attach_params``), and nothing here imports more than Airflow, the provider's operators and the
plugins' own light modules. Each task imports what it needs when it runs; each Python task is a
PythonOperator made by ``_task`` (see there why not ``@task``). No ``from __future__ import annotations``
here: a task's ``multiple_outputs`` comes from its function's return annotation (``dict``).
"""

import logging
from datetime import timedelta
from typing import TYPE_CHECKING, Any, cast

import pendulum
from airflow.providers.amazon.aws.sensors.ec2 import EC2InstanceStateSensor
from airflow.providers.amazon.aws.sensors.ssm import SsmRunCommandCompletedSensor
from airflow.providers.standard.operators.python import BranchPythonOperator, PythonOperator, ShortCircuitOperator
from airflow.sdk import DAG, TriggerRule, XComArg, get_current_context, task_group

from ml_pipeline.aws import AWS_CONN_ID, client
from ml_pipeline.aws import hook as aws_hook
from ml_pipeline.gitops import describe, schedule_for
from ml_pipeline.infra.operators import RunHostTrainingOperator, SkipUnneededSteps
from ml_pipeline.infra.params import infra_params
from ml_pipeline.infra.provisioning import STEPS, merged
from ml_pipeline.infra.sensors import HostReadySensor, ResourceStateSensor
from ml_pipeline.operators.sagemaker import (
    DeployEndpointOperator,
    RunProcessingJobOperator,
    RunTrainingJobOperator,
    RunTransformJobOperator,
    RunTuningJobOperator,
)
from ml_pipeline.params import pipeline_params
from ml_pipeline.sensors.sagemaker import (
    BUDGET_STOP_KEY,
    DEFAULT_POLL_SECONDS,
    DeferrableEndpointSensor,
    DeferrableProcessingSensor,
    DeferrableTrainingSensor,
    DeferrableTransformSensor,
    DeferrableTuningSensor,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from airflow.sdk.definitions._internal.mixins import DependencyMixin
    from airflow.sdk.definitions.xcom_arg import PlainXComArg

    from ml_pipeline.plan import Plan, Revision

DOC = """
### Deep-learning training on AWS, end to end

plan → preflight (AMI, zone, the experiment's code) → open the run (bucket) → provision (VPC, subnets, routes, security
groups, instance profile, volume, host: only what the run's compute needs) → data channels (`prepare` in
the worker, or in a SageMaker **processing job** with `compute: processing`) →
the experiment's code (script mode's source and framework images, its image, or its Dockerfile built) →
**train** (one SageMaker training job), **tune** (a hyperparameter tuning job) or **host** (the image on the
run's GPU or DL1 host through SSM Run Command) → pick the best → copy its weights and register them →
quality gate → model, endpoint config, endpoint (created, or updated blue/green) → autoscaling →
smoke test → promote (with `deploy: false`: the gate, then promote, no endpoint) → with `batch_transform`, a
SageMaker **batch transform** scoring its input with the model the gate approved → **teardown**, which runs
whatever failed → **outcome**, the run's verdict in one line (a teardown too, so that a run marked failed
from the UI still ends failed).

Every job is waited for by a deferrable sensor. Names are derived from the run (see
`ml_pipeline.naming`), so retries re-attach to their own jobs and runs never collide. Params are
validated by their JSON Schema in the trigger form, and again with the experiment by `plan` before
anything is created.
"""

#: Each task's outcome in one plain line of its own log.
log = logging.getLogger("ml_pipeline.dag")
#: Every experiment's DAG is this prefix and the experiment's name.
DAG_ID_PREFIX = "train_"
START_DATE = pendulum.datetime(2026, 1, 5, tz="UTC")
#: The task group of the provisioning steps: each step's task is ``provision.<step>``.
PROVISION = "provision"
#: The task groups of ``prepare``'s processing job and of the batch transform.
PREPARE = "prepare"
TRANSFORM = "batch_transform"
#: The run's budget as the training and tuning sensors watch it (the plan's; "None" when it has none).
BUDGET = "{{ ti.xcom_pull(task_ids='plan')['params'].get('max_cost_usd') }}"


def dag_id(name: str) -> str:
    return f"{DAG_ID_PREFIX}{name}"


def xcom(task_id: str, key: str = "return_value") -> Any:
    return get_current_context()["ti"].xcom_pull(task_ids=task_id, key=key)


def run_failures() -> dict[str, str]:
    """Why the run did not succeed so far, ``{task_id: state}`` (see ``closing.failures``)."""
    from ml_pipeline.closing import failures

    ti = get_current_context()["ti"]
    states = ti.get_task_states(dag_id=ti.dag_id, run_ids=[ti.run_id]).get(ti.run_id, {})
    return failures(states, xcom("quality_gate", key="verdict"))


def _attach_params(dag: DAG, params: dict) -> None:
    """The DAG's Params, attached once its tasks exist, checked here against their schemas.

    Given to ``DAG(params=...)``, Airflow deep-copies them into every task at each level of its class
    hierarchy (about 200 copies of 30 Params per DAG) and validates each default with a fresh JSON Schema
    metaschema check: most of a DAG's parse time, times the number of experiments. At run time Airflow reads
    the DAG's Params (``process_params``: the DAG's, then the task's own, then the run's conf), the form and
    the API serve the DAG's, so tasks need no copies. Airflow's own converter sets the attribute this way."""
    from airflow.sdk.definitions.param import ParamsDict

    from ml_pipeline.params import check_defaults

    check_defaults(params)
    object.__setattr__(dag, "params", ParamsDict(params))


def build_dag(experiment: dict) -> DAG:
    """The pipeline DAG of the resolved ``experiment`` (``experiments.load``)."""
    deploys = bool(experiment["deploy"])
    with DAG(
        dag_id=dag_id(experiment["name"]),
        description=(experiment["description"] or f"Train experiment {experiment['name']}")[:200],
        doc_md=f"#### Experiment {experiment['name']}\n\n{experiment['description']}\n\n"
        f"`experiments/{experiment['name']}/experiment.yaml`, code: {experiment['code_kind']}"
        f"{'' if deploys else ', deploy: false'}"
        f"{', prepare: processing job' if experiment.get('prepare_job') else ''}"
        f"{', batch transform' if experiment.get('batch_transform') else ''}.\n\n{describe(experiment)}\n{DOC}",
        schedule=schedule_for(experiment),
        start_date=START_DATE,
        catchup=False,
        max_active_runs=2,
        default_args={"owner": "ml-platform", "retries": 2, "retry_delay": timedelta(seconds=20)},
        # The outcome task sends each run's message; this, that of a run that ended before any teardown ran.
        on_failure_callback=on_failure(experiment),
        tags=["ml", "sagemaker", "training", f"experiment:{experiment['name']}", f"code:{experiment['code_kind']}"],
    ) as dag:
        _chain(experiment, deploys)
    _attach_params(dag, {**pipeline_params(experiment), **infra_params()})
    return dag


# --- the tasks (each DAG makes one operator of each function with _task) --------------------------


def _task(
    function: "Callable[..., Any]",
    *args: Any,
    operator: type = PythonOperator,
    task_id: str | None = None,
    **kwargs: Any,
) -> "PlainXComArg":
    """A task calling ``function(*args)`` (XComArgs resolved, their tasks upstream; the context as keyword
    arguments where the function takes ``**context``), as ``@task`` makes it: the function's docstring is the
    task's documentation, and a ``dict`` return is pushed key by key too (``multiple_outputs``).

    A PythonOperator (or ``operator``, its branching and short-circuiting kinds) rather than ``@task``'s
    operator, which costs two and a half times as much to construct: Airflow runs its ``apply_defaults`` at each
    of the class's four ``__init__`` levels, inspecting the function's signature at each; the pipeline's 30
    Python tasks were a third of a DAG's parse. The UI names the task's kind PythonOperator, not @task."""
    # An operator's output is its PlainXComArg, typed by Airflow as the base XComArg.
    return cast(
        "PlainXComArg",
        operator(
            task_id=task_id or function.__name__,
            python_callable=function,
            op_args=list(args),
            doc_md=function.__doc__,
            multiple_outputs=function.__annotations__.get("return") is dict,
            **kwargs,
        ).output,
    )


def plan(folder: str, **context: Any) -> "Plan":
    """Refuse bad input before anything is created; fix every name the run will use. The experiment is read
    again here, from the folder this DAG was built from: the run plans with the file as it is now."""
    from ml_pipeline.experiments import load
    from ml_pipeline.plan import make_plan

    experiment = load(folder)
    notify_to = _notify_target(experiment)

    # The run's date: its logical date (for scheduled and backfilled runs, its data interval's start).
    when = context.get("logical_date") or context.get("data_interval_start") or context["dag_run"].run_after
    # The data interval prepare writes for: the run's (a trigger timetable's is the instant of its date).
    interval = (context.get("data_interval_start") or when, context.get("data_interval_end") or when)
    made = make_plan(context["params"], context["run_id"], when, experiment, interval)
    made["revision"] = _revision(made["revision"], experiment, context)
    p = made["params"]
    log.info(
        "plan: experiment %s (file %s, source %s), run %s, %s mode, preset %s, compute %s, bucket %s",
        experiment["name"],
        experiment["file_hash"],
        experiment["source_hash"],
        made["key"],
        p["mode"],
        p["preset"],
        p["compute"],
        p["bucket"],
    )
    get_current_context()["ti"].xcom_push(key="notify", value=notify_to)
    return made


def _notify_target(experiment: dict) -> dict | None:
    """Where the run's message goes (``notify.target``), checked before anything is created."""
    from ml_pipeline import notify

    target = notify.target(experiment, notify.deployment_setting())
    log.info("notifications: %s", notify.describe_target(target))
    return target


def _revision(planned: "Revision", experiment: dict, context: "Mapping[str, Any]") -> "Revision":
    """What the run trains from: the plan's file and source hashes (as they are now), and the commit: the one
    whose change started the run (the git watcher's or a webhook's asset event), else the working tree's HEAD."""
    from ml_pipeline.gitops import head_commit, revision

    event = revision(context)
    recorded: Revision = {
        **planned,
        "commit": (event or {}).get("commit") or head_commit(experiment["folder"]),
        "trigger": (event or {}).get("source") or str(context["dag_run"].run_type),
    }
    if event and event.get("file_hash") and event["file_hash"] != experiment["file_hash"]:
        # The deployed tree is not the commit that started the run (it lags or moved on): say both.
        recorded["event_file_hash"] = event["file_hash"]
        log.warning(
            "experiment file %s is not the one of commit %s (%s): training the file as deployed",
            experiment["file_hash"],
            event.get("commit"),
            event["file_hash"],
        )
    return recorded


def preflight(run_plan: "Plan") -> dict:
    """What only AWS or this machine can tell, still before anything is created: the experiment's code
    (a framework version with no image, a Dockerfile with no Docker engine to build it), an existing bucket
    that is unencrypted or public (refused, never changed), the host's AMI (a missing one is refused here)
    and an availability zone that offers its instance type."""
    from ml_pipeline import code
    from ml_pipeline.infra.params import preflight as check

    code.preflight(run_plan)
    return check(client, run_plan)


def open_run(run_plan: "Plan", pre: dict) -> dict:
    """The run's bucket, after the preflight (``pre``): created and configured when missing; any other one
    (the tag of the run that created it says whose it is) is used as it is."""
    from ml_pipeline.infra import stack

    opened = stack.ensure_bucket(client, run_plan)
    log.info(
        "run %s opened: bucket %s (%s)",
        run_plan["key"],
        opened["bucket"],
        "created" if opened["created"] else "existing, left as it is",
    )
    return {**opened, "key": run_plan["key"]}


def prepare_channels(run_plan: "Plan") -> dict:
    """The run's channels in S3 (``channels.prepare``): with ``prepare`` as a processing job, what the job
    wrote, read back, its partition's manifest written here."""
    from ml_pipeline import channels

    started = xcom(f"{PREPARE}.start_processing_job") if run_plan["experiment"].get("prepare_job") else None
    job = started["Processing"]["ProcessingJobName"] if started else None
    prepared = channels.prepare(client("s3"), run_plan, job)
    log.info("channels: %s", ", ".join(f"{name} {uri}" for name, uri in prepared.items()))
    return prepared


def processing_request(run_plan: "Plan", code: dict, provisioned: dict) -> dict:
    """``prepare``'s processing job (``prepare_job.request``), its code uploaded; skipped, and the job with it,
    when the data interval's partition is complete already (an earlier run wrote it)."""
    from airflow.sdk.exceptions import AirflowSkipException

    from ml_pipeline import channels, prepare_job

    s3 = client("s3")
    if channels.partition_complete(s3, run_plan):
        raise AirflowSkipException(
            f"data partition s3://{run_plan['params']['bucket']}/{run_plan['names']['data_prefix']}/ is complete: "
            "reused, no processing job"
        )
    request = prepare_job.request(run_plan, code, prepare_job.upload_code(s3, run_plan), in_vpc(run_plan, provisioned))
    cluster = request["ProcessingResources"]["ClusterConfig"]
    log.info(
        "processing job %s: %s on %s x %s in %s",
        request["ProcessingJobName"],
        run_plan["experiment"]["prepare"],
        cluster["InstanceCount"],
        cluster["InstanceType"],
        request["AppSpecification"]["ImageUri"],
    )
    return request


def resolve_code(run_plan: "Plan") -> dict:
    """What the run trains and serves (``code.resolve``): script mode's source in S3 and the framework's
    images, the experiment's image, or the image its Dockerfile builds."""
    from ml_pipeline import code

    resolved = code.resolve(client("ecr"), client("s3"), run_plan, aws_hook().conn_config.endpoint_url)
    log.info("code: %s", resolved["how"])
    return resolved


def choose_mode(run_plan: "Plan") -> str:
    if run_plan["params"]["compute"] == "host":
        return "host.command_request"
    return "train.training_request" if run_plan["params"]["mode"] == "train" else "tune.tuning_request"


def in_vpc(run_plan: "Plan", provisioned: dict) -> dict | None:
    """The VpcConfig of SageMaker jobs and models when the run provisioned its own VPC (``provisioned``: the
    ids its provisioning returned)."""
    from ml_pipeline.infra import stack

    return stack.vpc_config(provisioned) if run_plan["params"]["provision_vpc"] else None


def training_request(run_plan: "Plan", code: dict, channels: dict, provisioned: dict) -> dict:
    from ml_pipeline import sagemaker_requests as requests

    request = requests.training_job(run_plan, code, channels, in_vpc(run_plan, provisioned))
    log.info(
        "training job %s on %s x %s",
        request["TrainingJobName"],
        request["ResourceConfig"]["InstanceCount"],
        request["ResourceConfig"]["InstanceType"],
    )
    return request


def tuning_request(run_plan: "Plan", code: dict, channels: dict, provisioned: dict) -> dict:
    from ml_pipeline import sagemaker_requests as requests

    request = requests.tuning_job(run_plan, code, channels, in_vpc(run_plan, provisioned))
    limits = request["HyperParameterTuningJobConfig"]["ResourceLimits"]
    log.info(
        "tuning job %s: %s trials, %s at a time",
        request["HyperParameterTuningJobName"],
        limits.get("MaxNumberOfTrainingJobs"),
        limits["MaxParallelTrainingJobs"],
    )
    return request


def command_request(run_plan: "Plan", code: dict, channels: dict, provisioned: dict) -> dict:
    from ml_pipeline.infra import host_training

    return host_training.command_request(
        client, run_plan, code["training_image"], channels, provisioned["instance_id"], code
    )


def pick_best(run_plan: "Plan", code: dict, provisioned: dict) -> dict:
    from ml_pipeline import steps

    if run_plan["params"]["compute"] == "host":
        from ml_pipeline.infra import host_training

        return host_training.host_result(
            client, run_plan, xcom("host.start_host_training"), provisioned["instance_id"], code["training_image"], code
        )
    training = xcom("train.start_training_job")
    tuning = xcom("tune.start_tuning_job")
    best = steps.pick_best(
        client("sagemaker"),
        run_plan,
        training["Training"] if training and run_plan["params"]["mode"] == "train" else None,
        tuning["Tuning"] if tuning and run_plan["params"]["mode"] == "tune" else None,
    )
    log.info("best job %s: %s=%s", best["training_job"], best["objective"]["metric"], best["objective"]["value"])
    return best


def copy_best_weights(run_plan: "Plan", best: dict, channels: dict) -> dict:
    from ml_pipeline import steps

    weights = steps.copy_best_weights(client("s3"), run_plan, best, channels)
    log.info("best weights: %s (metadata %s)", weights["model_data_url"], weights["metadata_url"])
    return weights


def register_model(run_plan: "Plan", best: dict, weights: dict, code: dict) -> str:
    from airflow.providers.amazon.aws.hooks.sagemaker import SageMakerHook

    from ml_pipeline import steps

    arn = steps.register_model_version(SageMakerHook(aws_conn_id=AWS_CONN_ID), run_plan, best, weights, code)
    log.info("registered %s, pending approval", arn)
    return arn


def quality_gate(run_plan: "Plan", best: dict) -> bool:
    from ml_pipeline import steps

    verdict = steps.quality_gate(client("sagemaker"), run_plan, best)
    get_current_context()["ti"].xcom_push(key="verdict", value=verdict)
    log.info("quality gate: %s: %s", "deploy" if verdict["deploy"] else "keep production", verdict["reason"])
    return verdict["deploy"]


def create_model_and_config(run_plan: "Plan", weights: dict, code: dict, provisioned: dict) -> dict:
    from airflow.providers.amazon.aws.hooks.sagemaker import SageMakerHook

    from ml_pipeline import steps

    hook = SageMakerHook(aws_conn_id=AWS_CONN_ID)
    made = steps.create_model_and_config(hook, run_plan, code, weights["model_data_url"], in_vpc(run_plan, provisioned))
    log.info("model %s, endpoint config %s", made["model"], made["endpoint_config"])
    return made


def endpoint_request(run_plan: "Plan") -> dict:
    """The deploy's request; and, with keep_endpoint, what the stable endpoint serves before this run's
    deploy (key "serving_before"), so that close_run can undo the deploy of a run that fails. Recorded
    here, not by the deploy task, whose retry would find the endpoint on this run's config already."""
    from ml_pipeline import sagemaker_requests as requests

    request = requests.endpoint(run_plan)
    if run_plan["params"]["keep_endpoint"]:
        from ml_pipeline.closing import serving_before

        before = serving_before(client("sagemaker"), run_plan)
        get_current_context()["ti"].xcom_push(key="serving_before", value=before)
        log.info(
            "endpoint %s serves %s before this run's deploy",
            request["EndpointName"],
            "an unknown config (this run's already)"
            if before is None
            else before["endpoint_config"] or "nothing (the first deploy creates it)",
        )
    log.info("endpoint %s on %s", request["EndpointName"], request["EndpointConfigName"])
    return {"Endpoint": request}


def autoscale(run_plan: "Plan") -> dict:
    from ml_pipeline import steps

    scaling = steps.autoscale(client("application-autoscaling"), run_plan)
    log.info(
        "autoscaling %s: %s to %s instances, target %s invocations per instance",
        scaling["resource_id"],
        scaling["min"],
        scaling["max"],
        scaling["target"],
    )
    return scaling


def smoke_test(run_plan: "Plan") -> dict:
    """The experiment's samples through the endpoint, and its check (``smoke.run``). An endpoint that
    answered, but not as the experiment expects, fails the task at once: a retry would ask the same model
    the same question. What may pass on a retry (the endpoint unreachable, a ModelError) retries."""
    from airflow.sdk.exceptions import AirflowFailException

    from ml_pipeline import smoke

    try:
        result = smoke.run(client("sagemaker-runtime"), run_plan)
    except (smoke.SmokeTestFailed, ValueError) as error:
        raise AirflowFailException(str(error)) from error
    log.info(
        "smoke test passed: %s answered %s bytes (%s) in %.3f s; check: %s",
        result["samples"],
        result["response_bytes"],
        result["response_content_type"],
        result["latency_seconds"],
        result["check"],
    )
    return result


def promote(run_plan: "Plan", package_arn: str) -> dict:
    from ml_pipeline import steps

    promoted = steps.promote(client("sagemaker"), run_plan, package_arn)
    log.info("approved %s: production from now on", package_arn)
    return promoted


def transform_request(run_plan: "Plan", package_arn: str, provisioned: dict) -> dict:
    """The batch transform's model and job (``batch_transform``): the version the gate approved, the input
    checked; what the summary says of it is this task's XCom "scoring"."""
    from ml_pipeline import batch_transform

    batch_transform.check_input(client("s3"), run_plan)
    version = batch_transform.scoring_version(
        client("sagemaker"), run_plan, package_arn, xcom("quality_gate", key="verdict")
    )
    scoring = batch_transform.scoring(run_plan, version, package_arn)
    get_current_context()["ti"].xcom_push(key="scoring", value=scoring)
    log.info("transform job %s: %s with %s, %s", scoring["job"], scoring["input"], scoring["model"], scoring["output"])
    return {
        "Model": batch_transform.model_request(run_plan, version, in_vpc(run_plan, provisioned)),
        "Transform": batch_transform.transform_request(run_plan),
    }


def close_run(run_plan: "Plan", reported: dict[str, str]) -> dict:
    """Whatever happened before: stop this run's jobs, remove what must not outlive it (saying what
    was already gone), undo a failed run's deploy, reject its model version, tear down its stack, and
    write the run's summary beside its artifacts (and, whatever happens to the bucket, into this log and
    this task's XCom). Every part runs; one error at the end names the parts that failed. ``reported``: what
    the summary reports, by name: the id of the task whose result it is (the DAG's builder gives them)."""
    from ml_pipeline import closing
    from ml_pipeline.infra.provisioning import steps_for
    from ml_pipeline.infra.teardown import TeardownIncomplete

    created = xcom("deploy.create_model_and_config")
    training, tuning = xcom("train.start_training_job"), xcom("tune.start_tuning_job")
    experiment = run_plan["experiment"]
    processing = xcom(f"{PREPARE}.start_processing_job") if experiment.get("prepare_job") else None
    transform = xcom(f"{TRANSFORM}.start_transform_job") if experiment.get("batch_transform") else None
    made = {
        "hosting": {
            "endpoint": xcom("deploy.deploy_endpoint"),
            "autoscaling": xcom("autoscale"),
            "model": created,
            "endpoint_config": created,
            "serving_before": xcom("deploy.endpoint_request", key="serving_before"),
        },
        "model_package": xcom("register_model"),
        "jobs": {
            "training": [training["Training"]["TrainingJobName"]] if training else [],
            "tuning": [tuning["Tuning"]["HyperParameterTuningJobName"]] if tuning else [],
            "processing": [processing["Processing"]["ProcessingJobName"]] if processing else [],
            "transform": [transform["Transform"]["TransformJobName"]] if transform else [],
        },
        "provisioned": {step: xcom(f"{PROVISION}.{step}") for step in steps_for(run_plan["params"])},
        # Why max_cost_usd stopped a job, said by the sensor that stopped it.
        "budget_stops": [
            reason
            for reason in (
                xcom("train.wait_for_training_job", key=BUDGET_STOP_KEY),
                xcom("tune.wait_for_tuning_job", key=BUDGET_STOP_KEY),
            )
            if reason
        ],
        "outcome": {
            **{name: xcom(task_id) for name, task_id in reported.items()},
            "gate": xcom("quality_gate", key="verdict"),
            "batch_transform": xcom(f"{TRANSFORM}.transform_request", key="scoring")
            if experiment.get("batch_transform")
            else None,
        },
    }
    try:
        return closing.close_run(client, run_plan, made, run_failures())
    except TeardownIncomplete as error:
        if "summary" in error.report:  # the summary still reaches the outcome and the run's summary tab
            get_current_context()["ti"].xcom_push(key="return_value", value=error.report["summary"])
        raise


def outcome(**context: Any) -> None:
    """The run's verdict in one line, and its message (``notify``). It fails, and with it the run, when a
    task of the run failed or the run did not reach its end (``closing.failures``): Airflow judges a run
    by its leaves, and a run marked failed from the UI skips them, so without this the run turned green
    once its teardown succeeded. A teardown, so that marking the run failed does not skip it too."""
    from airflow.sdk.exceptions import AirflowFailException

    from ml_pipeline import closing

    summary = xcom("close_run")
    line = closing.outcome_line(summary) if summary else "the run's teardown wrote no summary"
    failed = run_failures()
    _notify(summary, failed, context)
    if failed:
        raise AirflowFailException(f"{closing.failure_sentence(failed)}: {line}")
    log.info("%s", line)


def _notify(summary: dict | None, failed: dict[str, str], context: "Mapping[str, Any]") -> None:
    """The run's message, to where its plan said (``notify.run_end``); what was sent where is this task's
    XCom "notified". A failure to send is logged and changes nothing of the run's outcome."""
    from ml_pipeline import notify

    run_plan = xcom("plan") or {}
    run = {
        "experiment": run_plan.get("experiment", {}).get("name") or context["dag"].dag_id[len(DAG_ID_PREFIX) :],
        "key": run_plan.get("key"),
        "mode": run_plan.get("params", {}).get("mode"),
        "dag_id": context["dag"].dag_id,
        "run_id": context["run_id"],
    }
    notified = notify.run_end(client, run, summary, failed, xcom("plan", key="notify"), context, AWS_CONN_ID)
    context["ti"].xcom_push(key="notified", value=notified)


def on_failure(experiment: dict) -> "Callable[[Mapping[str, Any]], None]":
    """The DAG's on_failure_callback (``notify.unreported_failure``): the message of a run that failed
    before any teardown ran. Never raises."""

    def unreported_failure(context: "Mapping[str, Any]") -> None:
        from ml_pipeline import notify

        try:
            notify.unreported_failure(experiment, context, client, AWS_CONN_ID)
        except Exception:  # noqa: BLE001 - a notification never changes the run's outcome
            log.exception("the notification of a run that ended before its teardown was not sent")

    return unreported_failure


def provision_step(run_plan: "Plan", pre: dict, step: str, needs: list[str]) -> dict:
    """One step of the run's stack (``stack.run_step``), given what the earlier steps it builds on (``needs``)
    returned. Their results are read from their XComs here rather than passed as XComArgs: each XComArg adds an
    edge to the DAG (a DAG hash or two at every parse), and these steps follow them already."""
    from ml_pipeline.infra import stack

    result = stack.run_step(client, run_plan, step, pre, {need: xcom(f"{PROVISION}.{need}") for need in needs})
    log.info("%s: %s", step, result)
    return result


def provisioned() -> dict:
    """The ids of everything the run provisioned, from each step's result (none: nothing was provisioned,
    with compute=sagemaker and no VPC of its own): what the tasks after the provision group use."""
    return merged(xcom(f"{PROVISION}.{step.name}") for step in STEPS)


def _pulled(step: str, key: str) -> str:
    """A template of one id a provisioning step returned, for a sensor that follows the step already."""
    return f"{{{{ ti.xcom_pull(task_ids='{PROVISION}.{step}')['{key}'] }}}}"


def _chain(experiment: dict, deploys: bool) -> None:
    the_plan = _task(plan, experiment["folder"], retries=0)
    checked = _task(preflight, the_plan, retries=0)
    opened = _task(open_run, the_plan, checked).as_setup()

    # task_group's stub leaves out the XComArg a group may return, which Airflow takes.
    @task_group(group_id=PROVISION)  # type: ignore[type-var]
    def provision() -> XComArg:
        """Each step creates one part of the run's stack (or finds it, on a retry), tagged with the run,
        given the ids the earlier steps it builds on returned; a sensor waits for the part's state. The steps
        the run's compute does not need are skipped together by the one decision in front of them. The
        group's result is every id provisioned (``provisioned``)."""
        step_tasks: dict[str, list[str]] = {}
        decide = SkipUnneededSteps(task_id="needed_steps", plan=the_plan, step_tasks=step_tasks)
        opened >> decide
        previous: DependencyMixin = decide  # what the next step follows: the last step or its sensor
        ends: list[DependencyMixin] = []  # each step's last task
        for step in STEPS:
            result = _task(provision_step, the_plan, checked, step.name, list(step.needs), task_id=step.name)
            previous >> result
            previous = result
            step_tasks[step.name] = [f"{PROVISION}.{step.name}"]
            if step.wait:
                waited = ResourceStateSensor(
                    task_id=f"{step.name}_{step.wait.state.replace('-', '_')}",
                    aws_conn_id=AWS_CONN_ID,
                    kind=step.wait.kind,
                    resource_id=_pulled(step.name, step.wait.id_key),
                    target_state=step.wait.state,
                    poke_interval=5,
                    timeout=1800,
                )
                result >> waited
                previous = waited
                step_tasks[step.name].append(waited.task_id)
            if step.name == "host":
                running = EC2InstanceStateSensor(
                    task_id="host_running",
                    aws_conn_id=AWS_CONN_ID,
                    target_state="running",
                    deferrable=True,
                    instance_id=_pulled("host", "instance_id"),
                    poke_interval=DEFAULT_POLL_SECONDS,
                )
                result >> running
                previous = running
                step_tasks[step.name].append(running.task_id)
            ends.append(previous)
        ready = HostReadySensor(
            task_id="host_ready",
            aws_conn_id=AWS_CONN_ID,
            plan=the_plan,
            poke_interval=10,
            timeout=3600,
            instance_id=_pulled("host", "instance_id"),
            volume_id=_pulled("volume", "volume_id"),
        )
        step_tasks[STEPS[-1].name].append(ready.task_id)
        done = _task(provisioned, trigger_rule=TriggerRule.NONE_FAILED)
        previous >> ready
        # The join waits for every step, not only the last: the host's steps are skipped at once when the
        # run needs only the network, and a join behind them alone would run before the network is there.
        [*ends, ready] >> done
        return done

    stack_ids = provision()
    image = _task(resolve_code, the_plan)
    stack_ids >> image
    if experiment.get("prepare_job"):  # prepare in a SageMaker processing job, in the experiment's image

        @task_group(group_id=PREPARE)
        def prepare():
            """``prepare`` as a SageMaker processing job: the request (skipped when the data interval's partition
            is complete), the job started (or re-attached to), then waited for."""
            started = RunProcessingJobOperator(
                task_id="start_processing_job",
                aws_conn_id=AWS_CONN_ID,
                config=_task(processing_request, the_plan, image, stack_ids),
            )
            started >> DeferrableProcessingSensor(
                task_id="wait_for_processing_job",
                aws_conn_id=AWS_CONN_ID,
                job_name=f"{{{{ ti.xcom_pull(task_ids='{PREPARE}.start_processing_job')"
                "['Processing']['ProcessingJobName'] }}",
            )

        # Reads what the job wrote, or the complete partition it was skipped for.
        channels = _task(prepare_channels, the_plan, trigger_rule=TriggerRule.NONE_FAILED)
        prepare() >> channels
    else:
        channels = _task(prepare_channels, the_plan)
        stack_ids >> channels
    mode = _task(choose_mode, the_plan, operator=BranchPythonOperator)
    [channels, image] >> mode

    @task_group(group_id="train")
    def train():
        started = RunTrainingJobOperator(
            task_id="start_training_job",
            aws_conn_id=AWS_CONN_ID,
            config=_task(training_request, the_plan, image, channels, stack_ids),
        )
        started >> DeferrableTrainingSensor(
            task_id="wait_for_training_job",
            aws_conn_id=AWS_CONN_ID,
            job_name="{{ ti.xcom_pull(task_ids='train.start_training_job')['Training']['TrainingJobName'] }}",
            max_cost_usd=BUDGET,
        )

    @task_group(group_id="tune")
    def tune():
        started = RunTuningJobOperator(
            task_id="start_tuning_job",
            aws_conn_id=AWS_CONN_ID,
            config=_task(tuning_request, the_plan, image, channels, stack_ids),
        )
        started >> DeferrableTuningSensor(
            task_id="wait_for_tuning_job",
            aws_conn_id=AWS_CONN_ID,
            job_name="{{ ti.xcom_pull(task_ids='tune.start_tuning_job')['Tuning']['HyperParameterTuningJobName'] }}",
            max_cost_usd=BUDGET,
        )

    @task_group(group_id="host")
    def host():
        started = RunHostTrainingOperator(
            task_id="start_host_training",
            aws_conn_id=AWS_CONN_ID,
            request=_task(command_request, the_plan, image, channels, stack_ids),
        )
        started >> SsmRunCommandCompletedSensor(
            task_id="wait_for_host_training",
            aws_conn_id=AWS_CONN_ID,
            deferrable=True,
            command_id="{{ ti.xcom_pull(task_ids='host.start_host_training') }}",
            poke_interval=DEFAULT_POLL_SECONDS,
        )

    trained, tuned, on_host = train(), tune(), host()
    mode >> [trained, tuned, on_host]
    best = _task(pick_best, the_plan, image, stack_ids, trigger_rule=TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS)
    [trained, tuned, on_host] >> best
    weights = _task(copy_best_weights, the_plan, best, channels)
    package = _task(register_model, the_plan, best, weights, image)
    gate = _task(quality_gate, the_plan, best, operator=ShortCircuitOperator, ignore_downstream_trigger_rules=False)
    package >> gate

    @task_group(group_id="deploy")
    def deploy():
        created = _task(create_model_and_config, the_plan, weights, image, stack_ids)
        deployed = DeployEndpointOperator(
            task_id="deploy_endpoint", aws_conn_id=AWS_CONN_ID, config=_task(endpoint_request, the_plan)
        )
        in_service = DeferrableEndpointSensor(
            task_id="wait_for_endpoint",
            aws_conn_id=AWS_CONN_ID,
            endpoint_name="{{ ti.xcom_pull(task_ids='plan')['names']['endpoint'] }}",
        )
        created >> deployed >> in_service

    promoted = _task(promote, the_plan, package)
    # What the run's summary reports, by the task that produces it (what a task that did not run gives: None).
    reported = {
        "data": channels,
        "code": image,
        "best": best,
        "weights": weights,
        "model_package": package,
        "promoted": promoted,
    }
    if deploys:
        deployed = deploy()
        gate >> deployed
        scaled, smoked = _task(autoscale, the_plan), _task(smoke_test, the_plan)
        deployed >> scaled >> smoked >> promoted
        reported |= {"autoscaling": scaled, "smoke_test": smoked}
    else:  # the gate decides the registry's production version; nothing is served
        gate >> promoted

    closed = _task(close_run, the_plan, {name: task.operator.task_id for name, task in reported.items()})
    opened >> closed
    promoted >> closed
    if experiment.get("batch_transform"):

        @task_group(group_id=TRANSFORM)
        def batch_transform():
            """Score the experiment's input with the model the gate approved (this run's version, else
            production's), once the run is promoted or production kept: the model and job started (or
            re-attached to), then waited for."""
            started = RunTransformJobOperator(
                task_id="start_transform_job",
                aws_conn_id=AWS_CONN_ID,
                config=_task(transform_request, the_plan, package, stack_ids, trigger_rule=TriggerRule.NONE_FAILED),
            )
            started >> DeferrableTransformSensor(
                task_id="wait_for_transform_job",
                aws_conn_id=AWS_CONN_ID,
                job_name=f"{{{{ ti.xcom_pull(task_ids='{TRANSFORM}.start_transform_job')"
                "['Transform']['TransformJobName'] }}",
            )

        scored = batch_transform()
        promoted >> scored >> closed
    # as_teardown takes any task or XComArg as setup (it checks DependencyMixin); its stub, operators only.
    closed.as_teardown(setups=opened)  # type: ignore[arg-type]
    verdict = _task(outcome, retries=0)
    closed >> verdict
    verdict.as_teardown(setups=opened, on_failure_fail_dagrun=True)  # type: ignore[arg-type]
