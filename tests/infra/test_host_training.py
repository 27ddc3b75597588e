"""Training on the run's host through SSM Run Command, for real, on localaws: a GPU type and dl1.24xlarge.

The chain as the DAG runs it: the stack provisioned, the provider's EC2 state sensor and our resource and
readiness sensors, ``RunHostTrainingOperator`` (the provider's SSM operator, made safe to retry), the
provider's ``SsmRunCommandCompletedSensor`` and its waiter, ``host_result`` in pick_best's shape, the best
weights copied, deployed and smoke-tested like a SageMaker job's, and teardown to zero.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
import time

import pytest

from ml_pipeline.config import to_hyperparameter_string
from tests.conftest import REPO_ROOT, unique
from tests.fixtures import digits_example
from tests.infra.support import ZERO, plan
from tests.support import localaws_connection

pytestmark = pytest.mark.timeout(900)

# The DAG's host chain with the provider's operators and sensors, in a fresh interpreter as a worker runs it.
CHAIN = r"""
import json, sys, time
from airflow.providers.amazon.aws.hooks.ssm import SsmHook
from airflow.providers.amazon.aws.sensors.ec2 import EC2InstanceStateSensor
from airflow.providers.amazon.aws.sensors.ssm import SsmRunCommandCompletedSensor
from ml_pipeline.infra.operators import RunHostTrainingOperator
from ml_pipeline.infra.sensors import HostReadySensor, ResourceStateSensor

plan, ids, request = (json.loads(a) for a in sys.argv[1:4])
def until(sensor, timeout=300):
    deadline = time.monotonic() + timeout
    while not sensor.poke({}):
        assert time.monotonic() < deadline, f"{sensor.task_id} timed out"
        time.sleep(0.5)
until(EC2InstanceStateSensor(task_id="host_running", instance_id=ids["instance_id"], target_state="running"))
until(ResourceStateSensor(task_id="volume_attached", kind="volume", resource_id=ids["volume_id"],
                          target_state="in-use"))
until(ResourceStateSensor(task_id="vpc_available", kind="vpc", resource_id=ids["vpc_id"], target_state="available"))
until(HostReadySensor(task_id="host_ready", plan=plan, instance_id=ids["instance_id"], volume_id=ids["volume_id"]))
operator = RunHostTrainingOperator(task_id="start_host_training", request=request)
command_id = operator.execute({})
again = RunHostTrainingOperator(task_id="start_host_training", request=request).execute({})
assert again == command_id, (again, command_id)  # a retry re-attaches to the run's command
until(SsmRunCommandCompletedSensor(task_id="wait_for_host_training", command_id=command_id), timeout=600)
SsmHook().get_waiter("command_executed").wait(CommandId=command_id, InstanceId=ids["instance_id"],
                                              WaiterConfig={"Delay": 1, "MaxAttempts": 30})
print("RESULT " + json.dumps({"command_id": command_id}), flush=True)
"""


def airflow_env(localaws, tmp_path) -> dict:
    return {
        **os.environ,
        "AIRFLOW_HOME": str(tmp_path / "airflow"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW_CONN_AWS_DEFAULT": localaws_connection(localaws.endpoint_url),
        "PYTHONPATH": os.pathsep.join([str(REPO_ROOT / "plugins"), str(REPO_ROOT)]),
    }


def prepared(localaws, instance_type: str, **overrides) -> tuple[dict, dict, dict]:
    """A host run's plan (the digits example, as the container localaws registered from its folder), its data
    partition and its provisioned stack."""
    from ml_pipeline import channels as data
    from ml_pipeline.infra.params import preflight, validate_infra
    from ml_pipeline.infra.stack import ensure_bucket, provision

    experiment = {**digits_example.experiment(), "code_kind": "image", "image": localaws.image_uri}
    run = plan(
        experiment,
        compute="host",
        host_instance_type=instance_type,
        bucket=unique("host"),
        endpoint_name=unique("host-ep"),
        **overrides,
    )
    assert validate_infra(run["params"]) == []
    client = localaws.client
    pre = preflight(client, run)
    ensure_bucket(client, run)  # open_run
    channels = data.prepare(client("s3"), run)
    ids = provision(client, run, pre)
    return run, channels, ids


def model_from(s3, uri: str, into):
    from digits import model as digits_model

    bucket, key = uri[len("s3://") :].split("/", 1)
    with tarfile.open(fileobj=io.BytesIO(s3.get_object(Bucket=bucket, Key=key)["Body"].read())) as tar:
        tar.extractall(into, filter="data")
    return digits_model.load(into)


def deploy_and_smoke_test(localaws, run: dict, best: dict, channels: dict) -> dict:
    """What the rest of the chain does with a job's best weights: copy, model, config, endpoint, smoke test."""
    from ml_pipeline import code, smoke, steps
    from ml_pipeline import sagemaker_requests as requests
    from tests.localaws.hosting_support import wait_endpoint, wait_gone

    s3, sm = localaws.client("s3"), localaws.client("sagemaker")
    weights = steps.copy_best_weights(s3, run, best, channels)
    serving = {"serving_image": best["image"], "environment": dict(code.SERVING_ENVIRONMENT)}
    sm.create_model(**requests.model(run, serving, weights["model_data_url"]))
    sm.create_endpoint_config(**requests.endpoint_config(run))
    sm.create_endpoint(**requests.endpoint(run))
    try:
        assert wait_endpoint(sm, run["names"]["endpoint"])["EndpointStatus"] == "InService"
        return smoke.run(localaws.client("sagemaker-runtime"), run)
    finally:
        sm.delete_endpoint(EndpointName=run["names"]["endpoint"])
        wait_gone(sm, run["names"]["endpoint"])
        sm.delete_endpoint_config(EndpointConfigName=run["names"]["endpoint_config"])
        sm.delete_model(ModelName=run["names"]["model"])


@pytest.mark.e2e
@pytest.mark.parametrize(
    "instance_type, accelerator, flag",
    [
        ("g5.xlarge", "nvidia", "--gpus all"),
        ("dl1.24xlarge", "habana", "--runtime=habana -e HABANA_VISIBLE_DEVICES=all"),
    ],
)
def test_host_trains_for_real_and_its_weights_deploy(localaws_process, tmp_path, instance_type, accelerator, flag):
    from ml_pipeline.infra import host_training
    from ml_pipeline.infra.teardown import remaining, teardown_stack

    localaws = localaws_process
    run, channels, ids = prepared(localaws, instance_type)
    request = host_training.command_request(localaws.client, run, localaws.image_uri, channels, ids["instance_id"])
    assert request["Parameters"]["Accelerator"] == [accelerator]
    started = time.monotonic()
    chain = subprocess.run(
        [sys.executable, "-c", CHAIN, json.dumps(run), json.dumps(ids), json.dumps(request)],
        env=airflow_env(localaws, tmp_path),
        capture_output=True,
        text=True,
        timeout=600,
    )
    lines = [line for line in chain.stdout.splitlines() if line.startswith("RESULT ")]
    assert chain.returncode == 0 and lines, chain.stdout[-3000:] + chain.stderr[-5000:]
    command_id = json.loads(lines[-1][len("RESULT ") :])["command_id"]
    print(f"{instance_type}: host chain in {time.monotonic() - started:.1f}s")

    ssm = localaws.client("ssm")
    invocation = ssm.get_command_invocation(CommandId=command_id, InstanceId=ids["instance_id"])
    assert invocation["Status"] == "Success" and invocation["ResponseCode"] == 0
    assert f"docker run {flag}" in invocation["StandardOutputContent"]  # what a real host would run
    # This machine has no accelerator: the container is given none and the command's log says so.
    output = invocation["StandardOutputContent"] + invocation["StandardErrorContent"]
    assert f"this machine has no {accelerator} device: it runs on the CPU" in output
    assert invocation["CloudWatchOutputConfig"]["CloudWatchLogGroupName"] == "/ml-pipeline/host-training"
    stream = f"{command_id}/{ids['instance_id']}/RunTrainingContainer/stdout"
    events = localaws.client("logs").get_log_events(logGroupName="/ml-pipeline/host-training", logStreamName=stream)[
        "events"
    ]
    assert any("validation_accuracy=" in e["message"] for e in events)

    best = host_training.host_result(localaws.client, run, command_id, ids["instance_id"], localaws.image_uri)
    assert best["training_job"] == host_training.job_name(run) and best["tuning_job"] is None
    assert best["objective"]["metric"] == "validation:loss" and best["objective"]["value"] > 0
    assert best["metrics"]["validation:accuracy"] >= 0.9
    # As SageMaker records an own container's: strings (the plan's are the experiment file's JSON values).
    assert best["hyperparameters"] == {
        name: to_hyperparameter_string(value) for name, value in run["hyperparameters"].items()
    }
    assert best["model_artifact"] == (
        f"s3://{run['params']['bucket']}/{run['names']['output_prefix']}/{best['training_job']}/output/model.tar.gz"
    )
    net = model_from(localaws.client("s3"), best["model_artifact"], tmp_path / "model")
    from digits import model as digits_model

    features, labels = digits_example.held_out(run["data_seed"])
    predicted = digits_model.predict(net, features[:50])
    assert sum(int(a == b) for a, b in zip(predicted, labels[:50], strict=True)) >= 45

    smoke = deploy_and_smoke_test(localaws, run, best, channels)
    assert smoke["check"]["accuracy"] >= 0.9

    report = teardown_stack(localaws.client, run["key"], poll=0.2)
    assert report["errors"] == []
    assert remaining(localaws.client, run["key"]) == ZERO


def test_the_host_gets_the_same_config_files_as_a_sagemaker_job():
    """The spec the host writes under /opt/ml/input/config is what localaws's SageMaker engine writes."""
    from localaws.sagemaker.contract import HostConfig
    from ml_pipeline.infra.host_training import job_spec

    run = plan(compute="host", host_instance_type="p4d.24xlarge")
    channels = {"train": "s3://b/d/train/", "validation": "s3://b/d/validation/", "test": "s3://b/d/test/"}
    spec = job_spec(run, channels)
    config = HostConfig(
        job_name=spec["job_name"],
        job_arn="arn",
        current_host="algo-1",
        hosts=["algo-1"],
        hyperparameters=spec["hyperparameters"],
        channels=spec["inputdataconfig"],
        instance_type="p4d.24xlarge",
        num_cpus=1,
    )
    assert spec["resourceconfig"] == config.resource_config()
    assert spec["hyperparameters"] == {
        name: to_hyperparameter_string(value) for name, value in run["hyperparameters"].items()
    }
    # every channel of the run, as a SageMaker job gets them (sagemaker_requests): no channel names of our own
    assert set(spec["channels"]) == set(spec["inputdataconfig"]) == set(channels)


@pytest.mark.slow
def test_teardown_stops_a_training_in_progress(localaws_process):
    from ml_pipeline.infra import host_training
    from ml_pipeline.infra.teardown import remaining, teardown_stack

    localaws = localaws_process
    run, channels, ids = prepared(localaws, "g4dn.xlarge")
    run["hyperparameters"] = {**run["hyperparameters"], "epochs": "100000", "early_stopping_patience": "100000"}
    request = host_training.command_request(localaws.client, run, localaws.image_uri, channels, ids["instance_id"])
    ssm = localaws.client("ssm")
    command_id = ssm.send_command(DocumentName=request.pop("DocumentName"), **request)["Command"]["CommandId"]
    deadline = time.monotonic() + 300
    while ssm.list_command_invocations(CommandId=command_id)["CommandInvocations"][0]["Status"] != "InProgress":
        assert time.monotonic() < deadline
        time.sleep(0.3)
    time.sleep(3)
    report = teardown_stack(localaws.client, run["key"], poll=0.2)
    assert report["removed"]["command"] == [command_id]
    deadline = time.monotonic() + 60
    while (found := ssm.get_command_invocation(CommandId=command_id, InstanceId=ids["instance_id"]))["Status"] in (
        "InProgress",
        "Cancelling",
    ):
        assert time.monotonic() < deadline, found
        time.sleep(0.3)
    assert found["Status"] == "Cancelled"
    assert remaining(localaws.client, run["key"]) == ZERO


@pytest.mark.slow
def test_the_host_runs_the_document_as_stored_and_times_it_out(localaws_process):
    """What runs is the document SSM stores (a new version's script, its parameters substituted), and its
    step's timeoutSeconds ends it TimedOut: the script and its container stopped, nothing uploaded."""
    from ml_pipeline.infra import host_training
    from ml_pipeline.infra.teardown import teardown_stack

    localaws = localaws_process
    run, channels, ids = prepared(localaws, "g5.xlarge")
    run["hyperparameters"] = {**run["hyperparameters"], "epochs": "100000", "early_stopping_patience": "100000"}
    request = host_training.command_request(localaws.client, run, localaws.image_uri, channels, ids["instance_id"])
    request["Parameters"]["ExecutionTimeout"] = ["8"]
    ssm, s3 = localaws.client("ssm"), localaws.client("s3")
    document = request.pop("DocumentName")
    content = json.loads(ssm.get_document(Name=document, DocumentFormat="JSON")["Content"])
    content["mainSteps"][0]["inputs"]["runCommand"].insert(
        2, 'echo "version two trains {{ JobName }} on $BASH_VERSION"'
    )
    version = ssm.update_document(
        Name=document, Content=json.dumps(content), DocumentVersion="$LATEST", DocumentFormat="JSON"
    )["DocumentDescription"]["DocumentVersion"]
    ssm.update_document_default_version(Name=document, DocumentVersion=version)
    started = time.monotonic()
    command_id = ssm.send_command(DocumentName=document, **request)["Command"]["CommandId"]
    deadline = time.monotonic() + 120
    while (found := ssm.get_command_invocation(CommandId=command_id, InstanceId=ids["instance_id"]))["Status"] in (
        "Pending",
        "InProgress",
    ):
        assert time.monotonic() < deadline, found
        time.sleep(0.3)
    assert (found["Status"], found["StatusDetails"]) == ("TimedOut", "Execution Timed Out"), found
    assert 8 <= time.monotonic() - started < 60
    assert found["StandardOutputContent"].startswith(f"version two trains {host_training.job_name(run)} on 5.")
    assert found["DocumentVersion"] == version
    model = f"{run['names']['output_prefix']}/{host_training.job_name(run)}/output/model.tar.gz"
    assert "Contents" not in s3.list_objects_v2(Bucket=run["params"]["bucket"], Prefix=model)
    teardown_stack(localaws.client, run["key"], poll=0.2)


@pytest.mark.slow
def test_a_failing_training_fails_its_command_with_the_algorithm_error(localaws_process):
    from ml_pipeline.infra import host_training
    from ml_pipeline.infra.teardown import teardown_stack

    localaws = localaws_process
    run, channels, ids = prepared(localaws, "g5.2xlarge")
    run["hyperparameters"] = {**run["hyperparameters"], "optimizer": "no-such-optimizer"}
    request = host_training.command_request(localaws.client, run, localaws.image_uri, channels, ids["instance_id"])
    ssm = localaws.client("ssm")
    command_id = ssm.send_command(DocumentName=request.pop("DocumentName"), **request)["Command"]["CommandId"]
    deadline = time.monotonic() + 300
    while (found := ssm.get_command_invocation(CommandId=command_id, InstanceId=ids["instance_id"]))["Status"] in (
        "Pending",
        "InProgress",
    ):
        assert time.monotonic() < deadline
        time.sleep(0.5)
    assert found["Status"] == "Failed" and found["ResponseCode"] not in (0, -1)
    assert "AlgorithmError" in found["StandardErrorContent"]
    with pytest.raises(RuntimeError, match="is Failed"):
        host_training.host_result(localaws.client, run, command_id, ids["instance_id"], localaws.image_uri)
    teardown_stack(localaws.client, run["key"], poll=0.2)


@pytest.mark.slow
def test_send_command_is_checked_as_ssm_checks_it(localaws_process):
    from botocore.exceptions import ClientError

    from ml_pipeline.infra import host_training
    from ml_pipeline.infra.teardown import teardown_stack

    localaws = localaws_process
    run, channels, ids = prepared(localaws, "g5.xlarge")
    ssm, ec2 = localaws.client("ssm"), localaws.client("ec2")
    request = host_training.command_request(localaws.client, run, localaws.image_uri, channels, ids["instance_id"])
    document = request.pop("DocumentName")
    for bad, code in (
        ({"Accelerator": ["tpu"]}, "InvalidParameters"),
        ({"Image": ["nginx; rm -rf /"]}, "InvalidParameters"),
        ({"Surprise": ["x"]}, "InvalidParameters"),
    ):
        with pytest.raises(ClientError) as raised:
            ssm.send_command(DocumentName=document, **{**request, "Parameters": {**request["Parameters"], **bad}})
        assert raised.value.response["Error"]["Code"] == code
    # The host's agent is Online; an instance with no instance profile never registers.
    info = ssm.describe_instance_information(Filters=[{"Key": "InstanceIds", "Values": [ids["instance_id"]]}])
    assert [i["PingStatus"] for i in info["InstanceInformationList"]] == ["Online"]
    teardown_stack(localaws.client, run["key"], poll=0.2)
    with pytest.raises(ClientError) as raised:  # a terminated host takes no command
        ssm.send_command(DocumentName=f"{host_training.CHECK_DOCUMENT}-x", InstanceIds=[ids["instance_id"]])
    assert raised.value.response["Error"]["Code"] in ("InvalidDocument", "InvalidInstanceId")
    image = ec2.describe_images(Owners=["amazon"], MaxResults=5)["Images"][0]["ImageId"]
    bare = ec2.run_instances(ImageId=image, InstanceType="t3.micro", MinCount=1, MaxCount=1)["Instances"][0]
    info = ssm.describe_instance_information(Filters=[{"Key": "InstanceIds", "Values": [bare["InstanceId"]]}])
    assert info["InstanceInformationList"] == []
    ec2.terminate_instances(InstanceIds=[bare["InstanceId"]])
