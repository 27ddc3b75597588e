"""The run's teardown (``closing.close_run``, what the DAG's close_run runs) against localaws: every part runs
whatever another did, what it reports "already gone" is what it looked for and did not find, the summary
survives a bucket that refuses it, and it names the attempt the run ended with."""

from __future__ import annotations

import json
import logging

import pytest

from tests.conftest import LocalAWSProcess, unique
from tests.infra.support import ZERO, FailingClients, plan

pytestmark = pytest.mark.timeout(300)


def provisioned(client, run: dict) -> dict:
    """The run's stack, one step at a time as the DAG's provisioning tasks make it (each given the earlier
    steps' results): {step: its XCom}."""
    from ml_pipeline.infra import stack
    from ml_pipeline.infra.params import preflight
    from ml_pipeline.infra.provisioning import steps_for

    pre = preflight(client, run)
    steps: dict = {}
    for step in steps_for(run["params"]):
        steps[step] = stack.run_step(client, run, step, pre, steps)
    return steps


def made(steps: dict, training: list[str] | None = None) -> dict:
    """What the run's tasks returned, as the DAG hands it to close_run: here, a run that failed before it
    trained (nothing deployed, no model registered)."""
    return {
        "hosting": {
            "endpoint": None,
            "autoscaling": None,
            "model": None,
            "endpoint_config": None,
            "serving_before": None,
        },
        "model_package": None,
        "jobs": {"training": training or [], "tuning": []},
        "provisioned": steps,
        "outcome": {"gate": None},
    }


def written(s3, run: dict) -> dict:
    from ml_pipeline.closing import summary_key

    return json.loads(s3.get_object(Bucket=run["params"]["bucket"], Key=summary_key(run))["Body"].read())


@pytest.fixture
def run_bucket(localaws_process):
    """A bucket fit for runs (the preflight refuses an unencrypted one)."""
    from tests.dags.test_open_run import private_encrypted

    bucket = unique("closing")
    private_encrypted(localaws_process.client("s3"), bucket)
    return bucket


@pytest.mark.slow
def test_an_error_early_in_close_run_still_tears_down_the_stack_and_fails_it_once_at_the_end(
    localaws_process, run_bucket
):
    from ml_pipeline.closing import close_run
    from ml_pipeline.infra.teardown import TeardownIncomplete, remaining

    client = localaws_process.client
    run = plan(compute="sagemaker", provision_vpc=True, bucket=run_bucket)
    steps = provisioned(client, run)
    # SageMaker refuses every listing: stopping the run's jobs and naming them fail, the rest goes on.
    failing = FailingClients(client, "list_hyper_parameter_tuning_jobs", after=False)
    with pytest.raises(TeardownIncomplete) as raised:
        close_run(failing, run, made(steps), {"train.wait_for_training_job": "failed"})
    report = raised.value.report
    assert [error.split(":")[0] for error in report["errors"]] == ["stop_jobs", "jobs_of_run"]
    assert remaining(client, run["key"]) == ZERO  # the VPC and all in it: torn down all the same
    summary = report["summary"]
    assert summary["teardown"]["stack"]["removed"]["vpc"] == [steps["vpc"]["vpc_id"]]
    # The summary says how the run ends: failed, this task among the reasons; written and returned.
    assert summary["state"] == "failed"
    assert summary["failed_tasks"] == {"train.wait_for_training_job": "failed", "close_run": "failed"}
    assert set(summary["teardown"]["errors"]) == {"stop_jobs", "jobs_of_run"}
    assert summary["summary"] == f"s3://{run_bucket}/runs/{run['key']}/summary.json"
    stored = written(client("s3"), run)
    assert (stored["state"], stored["failed_tasks"]) == ("failed", summary["failed_tasks"])


@pytest.mark.slow
def test_already_gone_is_only_what_teardown_looked_for_and_did_not_find_on_any_try(localaws_process, run_bucket):
    """Someone deleted the run's private route table; an instance the run did not launch keeps its subnet and
    VPC (teardown fails, naming them); the host's AMI is no resource of the run. Only the route table is
    gone, on the first try and on the retry that finishes the job after the stranger is gone."""
    from ml_pipeline.closing import close_run
    from ml_pipeline.infra.teardown import TeardownIncomplete, remaining

    client = localaws_process.client
    ec2 = client("ec2")
    run = plan(compute="host", host_instance_type="g5.xlarge", bucket=run_bucket)
    steps = provisioned(client, run)
    table = steps["route_tables"]["private_route_table_id"]
    for association in ec2.describe_route_tables(RouteTableIds=[table])["RouteTables"][0]["Associations"]:
        ec2.disassociate_route_table(AssociationId=association["RouteTableAssociationId"])
    ec2.delete_vpc_endpoints(VpcEndpointIds=[steps["route_tables"]["s3_endpoint_id"]])
    ec2.delete_route_table(RouteTableId=table)
    stranger = ec2.run_instances(
        ImageId=steps["host"]["ami_id"],
        InstanceType="t3.micro",
        MinCount=1,
        MaxCount=1,
        SubnetId=steps["subnets"]["private_subnet_id"],
    )["Instances"][0]["InstanceId"]
    gone = sorted([table, steps["route_tables"]["s3_endpoint_id"]])

    with pytest.raises(TeardownIncomplete) as raised:
        close_run(client, run, made(steps), {"host.wait_for_host_training": "failed"})
    first = raised.value.report["summary"]["teardown"]["stack"]
    assert first["already_gone"] == gone, first
    assert steps["subnets"]["private_subnet_id"] not in first["already_gone"]  # left, named in its errors
    assert steps["host"]["ami_id"] not in first["already_gone"]

    ec2.terminate_instances(InstanceIds=[stranger])
    retried = close_run(client, run, made(steps), {"host.wait_for_host_training": "failed"})["teardown"]["stack"]
    assert retried["already_gone"] == gone, retried  # not what the first try removed
    assert steps["host"]["instance_id"] in retried["removed"]["instance"]  # removed by the first try
    assert steps["vpc"]["vpc_id"] in retried["removed"]["vpc"]  # removed by this one
    assert remaining(client, run["key"]) == ZERO


@pytest.mark.slow
def test_the_summary_survives_a_bucket_that_refuses_it(tmp_path, caplog):
    """The run's bucket is another account's that this role may not write (S3 answers AccessDenied, as for a
    bucket policy or a KMS key the role may not use): the summary is logged first, and returned saying why
    it is not in S3; nothing raises."""
    import boto3

    from ml_pipeline.closing import close_run

    server = LocalAWSProcess(tmp_path, "process", MOTO_S3_ALLOW_CROSSACCOUNT_ACCESS="false").start()
    try:
        other = server.client("sts").assume_role(
            RoleArn="arn:aws:iam::111111111111:role/data-team", RoleSessionName="owner"
        )["Credentials"]
        boto3.client(
            "s3",
            endpoint_url=server.endpoint_url,
            region_name="us-east-1",
            aws_access_key_id=other["AccessKeyId"],
            aws_secret_access_key=other["SecretAccessKey"],
            aws_session_token=other["SessionToken"],
        ).create_bucket(Bucket="someone-elses")
        run = plan(bucket="someone-elses")
        # caplog's handler on the logger itself: Airflow's logging, set up by a test before this one in the
        # same process, stops records from propagating to the root logger caplog listens on.
        logger = logging.getLogger("ml_pipeline.closing")
        logger.addHandler(caplog.handler)
        try:
            with caplog.at_level("INFO", logger="ml_pipeline.closing"):
                summary = close_run(server.client, run, made({}), {"plan": "failed"})
        finally:
            logger.removeHandler(caplog.handler)
    finally:
        server.stop()
    said = [record.getMessage() for record in caplog.records if record.name == "ml_pipeline.closing"]
    logged = next(i for i, line in enumerate(said) if line.startswith("the run's summary:"))
    assert f'"run": "{run["key"]}"' in said[logged]
    assert logged < next(i for i, line in enumerate(said) if line.startswith("summary not written"))
    assert summary["summary"].startswith(
        f"not written to S3: s3://someone-elses/runs/{run['key']}/summary.json: AccessDenied"
    ), summary["summary"]
    assert summary["state"] == "failed" and summary["run"] == run["key"]


def test_the_summary_names_the_attempt_the_run_ended_with(localaws_process):
    """A training job that failed and its retry (-r2, started by the retried task): the summary's job, before
    any best job was picked, is the retry, not the first attempt."""
    from ml_pipeline.closing import Report, jobs_of_run, summarize
    from tests.support import training_request, wait_for_training

    sm = localaws_process.client("sagemaker")
    key = unique("attempts")
    first, retry = f"plain-train-{key}", f"plain-train-{key}-r2"
    for name in (first, retry):  # an image localaws does not know: each fails at once
        sm.create_training_job(
            **training_request(name, "123456789012.dkr.ecr.us-east-1.amazonaws.com/none:x", {}, "s3://nowhere/out", {})
        )
        wait_for_training(sm, name, timeout=60)
    run = {
        "key": key,
        "params": {"mode": "train", "preset": "quick"},
        "names": {"endpoint": "e", "tuning_job": f"plain-{key}"},
        "experiment": {"name": "plain", "deploy": False},
    }
    jobs = jobs_of_run(sm, run, {"training": [retry], "tuning": []}, Report(), wait_seconds=0)
    assert [job["name"] for job in jobs["training"]] == [first, retry]  # oldest first
    assert summarize(run, {}, jobs, {"train.wait_for_training_job": "failed"}, {})["training_job"] == retry
