"""
### Deep-learning training on AWS, end to end

plan → preflight (AMI, zone) → open the run (bucket) → provision (VPC, subnets, routes, security
groups, instance profile, volume, host: only what the run's compute needs) → data partition →
training image → **train** (one SageMaker training job), **tune** (a hyperparameter tuning job) or
**host** (the image on the run's GPU or DL1 host through SSM Run Command) → pick the best → copy its weights and register them →
quality gate → model, endpoint config, endpoint (created, or updated blue/green) → autoscaling →
smoke test → promote → **teardown**, which runs whatever failed.

Every job is waited for by a deferrable sensor. Names are derived from the run (see
`ml_pipeline.naming`), so retries re-attach to their own jobs and runs never collide. Params are
validated by their JSON Schema in the trigger form, and again with the hyperparameter files by
`plan` before anything is created.
"""
from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook
from airflow.providers.amazon.aws.hooks.sagemaker import SageMakerHook
from airflow.providers.amazon.aws.sensors.ec2 import EC2InstanceStateSensor
from airflow.providers.amazon.aws.sensors.ssm import SsmRunCommandCompletedSensor
from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.sdk import DAG, TriggerRule, get_current_context, setup, task, task_group, teardown

from ml_pipeline import sagemaker_requests as requests
from ml_pipeline import steps
from ml_pipeline.infra import stack
from ml_pipeline.infra.operators import RunHostTrainingOperator
from ml_pipeline.infra.params import infra_params
from ml_pipeline.infra.sensors import HostReadySensor, ResourceStateSensor
from ml_pipeline.operators.sagemaker import DeployEndpointOperator, RunTrainingJobOperator, RunTuningJobOperator
from ml_pipeline.params import pipeline_params
from ml_pipeline.sensors.sagemaker import (
    DEFAULT_POLL_SECONDS,
    DeferrableEndpointSensor,
    DeferrableTrainingSensor,
    DeferrableTuningSensor,
)

AWS_CONN_ID = "aws_default"
#: The provisioning steps in order, and the state each one's resource must reach before the next:
#: (step, resource kind to watch or None, the id's key in the step's result, target state).
PROVISIONING = (
    ("vpc", "vpc", "vpc_id", "available"),
    ("internet_gateway", "internet_gateway", "internet_gateway_id", "attached"),
    ("subnets", "subnet", "private_subnet_id", "available"),
    ("route_tables", None, None, None),
    ("security_groups", None, None, None),
    ("instance_profile", "instance_profile", "instance_profile_name", "ready"),
    ("volume", "volume", "volume_id", "available"),
    ("documents", None, None, None),
    ("host", None, None, None),
    ("attach_volume", "volume", "volume_id", "in-use"),
)


def client(service: str):
    return AwsBaseHook(aws_conn_id=AWS_CONN_ID, client_type=service).get_conn()


def xcom(task_id: str, key: str = "return_value"):
    return get_current_context()["ti"].xcom_pull(task_ids=task_id, key=key)


with DAG(
    dag_id="ml_training_pipeline",
    description="Train or tune on SageMaker, register the best model, deploy it autoscaled, tear down.",
    doc_md=__doc__,
    schedule="@weekly",
    start_date=pendulum.datetime(2026, 1, 5, tz="UTC"),
    catchup=False,
    max_active_runs=2,
    params={**pipeline_params(), **infra_params()},
    default_args={"owner": "ml-platform", "retries": 2, "retry_delay": timedelta(seconds=20)},
    tags=["ml", "sagemaker", "training"],
) as dag:

    @task(retries=0)
    def plan(**context) -> dict:
        """Refuse bad input before anything is created; fix every name the run will use."""
        from ml_pipeline.plan import make_plan

        # The run's date: its logical date (for scheduled and backfilled runs, its data interval's start).
        when = context.get("logical_date") or context.get("data_interval_start") or context["dag_run"].run_after
        return make_plan(context["params"], context["run_id"], when)

    @task(retries=0)
    def preflight(run_plan: dict) -> dict:
        """What only AWS can tell, still before anything is created: an existing bucket that is unencrypted
        or public (refused, never changed), the host's AMI (a missing one is refused here) and an
        availability zone that offers its instance type."""
        from ml_pipeline.infra.params import preflight as check

        return check(client, run_plan)

    @setup
    def open_run(run_plan: dict, pre: dict) -> dict:
        """The run's bucket: created and configured when the preflight found none; an existing one is used
        as it is."""
        return {**stack.ensure_bucket(client, run_plan, pre["bucket"]), "key": run_plan["key"]}

    @task
    def prepare_dataset(run_plan: dict) -> dict:
        return steps.prepare_dataset(client("s3"), run_plan)

    @task
    def build_image(run_plan: dict) -> dict:
        from ml_pipeline.images import build_and_push

        endpoint = AwsBaseHook(aws_conn_id=AWS_CONN_ID).conn_config.endpoint_url
        return build_and_push(client("ecr"), run_plan["params"]["ecr_repository"], endpoint)

    @task.branch
    def choose_mode(run_plan: dict) -> str:
        if run_plan["params"]["compute"] == "host":
            return "host.command_request"
        return "train.training_request" if run_plan["params"]["mode"] == "train" else "tune.tuning_request"

    def in_vpc(run_plan: dict) -> dict | None:
        """The VpcConfig of SageMaker jobs and models when the run provisioned its own VPC."""
        return stack.vpc_config(client, run_plan) if run_plan["params"]["provision_vpc"] else None

    @task
    def training_request(run_plan: dict, image: dict, channels: dict) -> dict:
        return requests.training_job(run_plan, image["image"], channels, in_vpc(run_plan))

    @task
    def tuning_request(run_plan: dict, image: dict, channels: dict) -> dict:
        return requests.tuning_job(run_plan, image["image"], channels, in_vpc(run_plan))

    @task
    def command_request(run_plan: dict, image: dict, channels: dict) -> dict:
        from ml_pipeline.infra import host_training

        host = xcom("provision.host")
        return host_training.command_request(client, run_plan, image["image"], channels, host["instance_id"])

    @task(trigger_rule=TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS)
    def pick_best(run_plan: dict) -> dict:
        if run_plan["params"]["compute"] == "host":
            from ml_pipeline.infra import host_training

            return host_training.host_result(client, run_plan, xcom("host.start_host_training"),
                                             xcom("provision.host")["instance_id"], xcom("build_image")["image"])
        training = xcom("train.start_training_job")
        tuning = xcom("tune.start_tuning_job")
        return steps.pick_best(
            client("sagemaker"), run_plan,
            training["Training"] if training and run_plan["params"]["mode"] == "train" else None,
            tuning["Tuning"] if tuning and run_plan["params"]["mode"] == "tune" else None,
        )

    @task
    def copy_best_weights(run_plan: dict, best: dict, channels: dict) -> dict:
        return steps.copy_best_weights(client("s3"), run_plan, best, channels)

    @task
    def register_model(run_plan: dict, best: dict, weights: dict) -> str:
        return steps.register_model_version(SageMakerHook(aws_conn_id=AWS_CONN_ID), run_plan, best, weights)

    @task.short_circuit(ignore_downstream_trigger_rules=False)
    def quality_gate(run_plan: dict, best: dict) -> bool:
        verdict = steps.quality_gate(client("sagemaker"), run_plan, best)
        get_current_context()["ti"].xcom_push(key="verdict", value=verdict)
        print(f"quality gate: {'deploy' if verdict['deploy'] else 'keep production'}: {verdict['reason']}")
        return verdict["deploy"]

    @task
    def create_model_and_config(run_plan: dict, best: dict, weights: dict) -> dict:
        hook = SageMakerHook(aws_conn_id=AWS_CONN_ID)
        return steps.create_model_and_config(hook, run_plan, best["image"], weights["model_data_url"],
                                             in_vpc(run_plan))

    @task
    def endpoint_request(run_plan: dict) -> dict:
        return {"Endpoint": requests.endpoint(run_plan)}

    @task
    def autoscale(run_plan: dict) -> dict:
        return steps.autoscale(client("application-autoscaling"), run_plan)

    @task
    def smoke_test(run_plan: dict, channels: dict) -> dict:
        return steps.smoke_test(client("sagemaker-runtime"), client("s3"), run_plan, channels)

    @task
    def promote(run_plan: dict, package_arn: str) -> dict:
        return steps.promote(client("sagemaker"), run_plan, package_arn)

    @teardown
    def close_run(run_plan: dict) -> dict:
        """Whatever happened before: stop this run's jobs, remove what must not outlive it, and
        write the run's summary beside its artifacts."""
        removed = steps.teardown(client("sagemaker"), client("application-autoscaling"), run_plan)
        # Then the run's own network and host, found by their tags (nothing, if it provisioned none).
        from ml_pipeline.infra.teardown import TeardownIncomplete, teardown_stack

        try:
            removed["stack"] = teardown_stack(client, run_plan["key"])
        except TeardownIncomplete as error:
            removed["stack"] = error.report
            steps.write_summary(client("s3"), run_plan, {}, removed)
            raise
        outcome = {name: xcom(task_id) for name, task_id in steps.SUMMARY_SOURCES.items()}
        outcome["gate"] = xcom("quality_gate", key="verdict")
        return steps.write_summary(client("s3"), run_plan, outcome, removed)

    @task(trigger_rule=TriggerRule.NONE_FAILED)
    def provision_step(run_plan: dict, pre: dict, step: str) -> dict:
        from airflow.exceptions import AirflowSkipException

        if step not in stack.steps_for(run_plan):
            raise AirflowSkipException(f"compute={run_plan['params']['compute']} needs no {step}")
        return stack.run_step(client, run_plan, step, pre)

    the_plan = plan()
    checked = preflight(the_plan)
    opened = open_run(the_plan, checked)

    @task_group(group_id="provision")
    def provision():
        """Each step creates one part of the run's stack (or finds it, on a retry), tagged with the run;
        a sensor waits for the part's state. Steps the run's compute does not need are skipped."""
        previous = opened
        for step, kind, id_key, state in PROVISIONING:
            # Airflow wants the setup's direct followers on ALL_SUCCESS; later steps run past skipped ones.
            rule = TriggerRule.ALL_SUCCESS if previous is opened else TriggerRule.NONE_FAILED
            made = provision_step.override(task_id=step, trigger_rule=rule)(the_plan, checked, step)
            previous >> made
            previous = made
            if kind:
                waited = ResourceStateSensor(
                    task_id=f"{step}_{state.replace('-', '_')}", aws_conn_id=AWS_CONN_ID, kind=kind,
                    resource_id=f"{{{{ ti.xcom_pull(task_ids='provision.{step}')['{id_key}'] }}}}",
                    target_state=state, poke_interval=5, timeout=1800,
                )
                made >> waited
                previous = waited
            if step == "host":
                running = EC2InstanceStateSensor(
                    task_id="host_running", aws_conn_id=AWS_CONN_ID, target_state="running", deferrable=True,
                    instance_id="{{ ti.xcom_pull(task_ids='provision.host')['instance_id'] }}",
                    poke_interval=DEFAULT_POLL_SECONDS,
                )
                made >> running
                previous = running
        ready = HostReadySensor(
            task_id="host_ready", aws_conn_id=AWS_CONN_ID, plan=the_plan, poke_interval=10,
            timeout=3600, instance_id="{{ ti.xcom_pull(task_ids='provision.host')['instance_id'] }}",
            volume_id="{{ ti.xcom_pull(task_ids='provision.volume')['volume_id'] }}",
        )
        done = EmptyOperator(task_id="provisioned", trigger_rule=TriggerRule.NONE_FAILED)
        previous >> ready >> done

    provisioned = provision()
    channels = prepare_dataset(the_plan)
    image = build_image(the_plan)
    provisioned >> [channels, image]
    mode = choose_mode(the_plan)
    [channels, image] >> mode

    @task_group(group_id="train")
    def train():
        started = RunTrainingJobOperator(
            task_id="start_training_job", aws_conn_id=AWS_CONN_ID,
            config=training_request(the_plan, image, channels),
        )
        started >> DeferrableTrainingSensor(
            task_id="wait_for_training_job", aws_conn_id=AWS_CONN_ID,
            job_name="{{ ti.xcom_pull(task_ids='train.start_training_job')['Training']['TrainingJobName'] }}",
        )

    @task_group(group_id="tune")
    def tune():
        started = RunTuningJobOperator(
            task_id="start_tuning_job", aws_conn_id=AWS_CONN_ID,
            config=tuning_request(the_plan, image, channels),
        )
        started >> DeferrableTuningSensor(
            task_id="wait_for_tuning_job", aws_conn_id=AWS_CONN_ID,
            job_name="{{ ti.xcom_pull(task_ids='tune.start_tuning_job')['Tuning']['HyperParameterTuningJobName'] }}",
        )

    @task_group(group_id="host")
    def host():
        started = RunHostTrainingOperator(task_id="start_host_training", aws_conn_id=AWS_CONN_ID,
                                          request=command_request(the_plan, image, channels))
        started >> SsmRunCommandCompletedSensor(
            task_id="wait_for_host_training", aws_conn_id=AWS_CONN_ID, deferrable=True,
            command_id="{{ ti.xcom_pull(task_ids='host.start_host_training') }}",
            poke_interval=DEFAULT_POLL_SECONDS,
        )

    trained, tuned, on_host = train(), tune(), host()
    mode >> [trained, tuned, on_host]
    best = pick_best(the_plan)
    [trained, tuned, on_host] >> best
    weights = copy_best_weights(the_plan, best, channels)
    package = register_model(the_plan, best, weights)
    gate = quality_gate(the_plan, best)
    package >> gate

    @task_group(group_id="deploy")
    def deploy():
        created = create_model_and_config(the_plan, best, weights)
        deployed = DeployEndpointOperator(task_id="deploy_endpoint", aws_conn_id=AWS_CONN_ID,
                                          config=endpoint_request(the_plan))
        in_service = DeferrableEndpointSensor(
            task_id="wait_for_endpoint", aws_conn_id=AWS_CONN_ID,
            endpoint_name="{{ ti.xcom_pull(task_ids='plan')['names']['endpoint'] }}",
        )
        created >> deployed >> in_service

    deployed = deploy()
    gate >> deployed
    scaled = autoscale(the_plan)
    tested = smoke_test(the_plan, channels)
    promoted = promote(the_plan, package)
    deployed >> scaled >> tested >> promoted

    closed = close_run(the_plan)
    opened >> closed
    promoted >> closed
    closed.as_teardown(setups=opened)
