"""Endpoints whose containers misbehave, under both runners: never healthy, a bad image, a
container that exits, a model that errs or times out, an instance that dies in service.

These run against a localaws of their own with short limits (a 12 s health-check timeout, a
3 s model timeout) and a small stand-in image (tests/localaws/images/misbehaving)."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from tests.conftest import LocalAWSProcess, unique
from tests.fixtures.docker_engine import ecr_uri
from tests.localaws.hosting_support import alive, deploy, instances, wait_endpoint, wait_gone

pytestmark = pytest.mark.timeout(1200)

MISBEHAVING = Path(__file__).parent / "images" / "misbehaving"


@pytest.fixture(scope="session", params=["process", pytest.param("docker", marks=pytest.mark.docker)])
def strict(request, tmp_path_factory):
    """localaws with short health-check and model timeouts, the misbehaving image available."""
    from localaws.client import register_image
    from ml_pipeline.images import context_hash

    env = {"LOCALAWS_HEALTH_CHECK_TIMEOUT_SECONDS": "12", "LOCALAWS_INVOCATION_TIMEOUT_SECONDS": "3"}
    if request.param == "docker":
        from tests.fixtures.docker_engine import build_and_push

        engine = request.getfixturevalue("docker_engine")
        client = request.getfixturevalue("docker_client")
        image = build_and_push(client, MISBEHAVING, "misbehaving", engine["registry"], base_image=engine["base_image"])
        env["LOCALAWS_REGISTRY"] = engine["registry"]
    else:
        image = ecr_uri("misbehaving", context_hash(MISBEHAVING))
    server = LocalAWSProcess(tmp_path_factory.mktemp(f"strict-{request.param}"), request.param, **env).start()
    if request.param == "process":
        register_image(server.endpoint_url, image, MISBEHAVING)
    server.image_uri = image
    server.docker_client = request.getfixturevalue("docker_client") if request.param == "docker" else None
    yield server
    server.stop()


@pytest.mark.slow
def test_a_ping_that_never_passes_fails_the_endpoint(strict):
    sm = strict.client("sagemaker")
    name = unique("noping")
    started = time.monotonic()
    described = deploy(sm, name, strict.image_uri, None, env={"PING_STATUS": "500"})
    took = time.monotonic() - started
    assert described["EndpointStatus"] == "Failed"
    assert described["FailureReason"] == (
        "The primary container for production variant AllTraffic did not pass the ping health check. "
        "Please check CloudWatch logs for this endpoint."
    )
    assert 12 <= took < 60
    assert instances(strict, name)["Instances"] == []
    if strict.docker_client is not None:
        from tests.localaws.hosting_support import labelled_containers

        assert labelled_containers(strict.docker_client, f"localaws-ep-{name}-") == []
    with pytest.raises(ClientError) as error:
        strict.client("sagemaker-runtime").invoke_endpoint(EndpointName=name, Body=b"{}")
    assert error.value.response["Error"]["Code"] == "ValidationError"
    with pytest.raises(ClientError) as error:
        sm.update_endpoint(EndpointName=name, EndpointConfigName=f"{name}-c")
    assert error.value.response["Error"]["Code"] == "ValidationException"
    sm.delete_endpoint(EndpointName=name)
    wait_gone(sm, name)


def test_a_bad_image_fails_the_endpoint(strict):
    sm = strict.client("sagemaker")
    name = unique("badimage")
    image = ecr_uri("no-such-image", "0.0.0")
    described = deploy(sm, name, image, None)
    assert described["EndpointStatus"] == "Failed"
    assert described["FailureReason"].startswith(f"Failed to pull the image {image} for production variant AllTraffic")
    sm.delete_endpoint(EndpointName=name)


def test_a_container_that_exits_fails_the_endpoint_with_its_last_words(strict):
    sm = strict.client("sagemaker")
    name = unique("exits")
    described = deploy(sm, name, strict.image_uri, None, env={"PING_STATUS": "500", "EXIT_AFTER": "1"})
    assert described["EndpointStatus"] == "Failed"
    assert "did not pass the ping health check" in described["FailureReason"]
    assert "exited with code 3" in described["FailureReason"]
    assert "misbehaving server on" in described["FailureReason"]
    sm.delete_endpoint(EndpointName=name)


def test_model_errors_and_the_model_timeout(strict):
    sm, rt = strict.client("sagemaker"), strict.client("sagemaker-runtime")
    name, slow = unique("err5xx"), unique("slow")
    try:
        assert deploy(sm, name, strict.image_uri, None, env={"INVOKE_STATUS": "503"})["EndpointStatus"] == "InService"
        with pytest.raises(ClientError) as error:
            rt.invoke_endpoint(EndpointName=name, Body=b"{}", ContentType="application/json")
        response = error.value.response
        assert response["Error"]["Code"] == "ModelError"
        assert response["OriginalStatusCode"] == 503
        assert response["OriginalMessage"] == "the container was told to fail"
        assert response["Error"]["Message"].startswith(
            'Received server error (503) from primary with message "the container was told to fail".'
        )

        assert deploy(sm, slow, strict.image_uri, None, env={"INVOKE_SLEEP": "10"})["EndpointStatus"] == "InService"
        started = time.monotonic()
        with pytest.raises(ClientError) as error:
            rt.invoke_endpoint(EndpointName=slow, Body=b"{}", ContentType="application/json")
        assert 2.5 <= time.monotonic() - started < 9
        assert error.value.response["Error"]["Code"] == "ModelError"
        assert (
            "Your invocation timed out while waiting for a response from container primary"
            in error.value.response["Error"]["Message"]
        )

        cloudwatch = strict.client("cloudwatch")
        deadline = time.monotonic() + 30
        while True:
            points = cloudwatch.get_metric_statistics(
                Namespace="AWS/SageMaker",
                MetricName="Invocation5XXErrors",
                Dimensions=[{"Name": "EndpointName", "Value": name}, {"Name": "VariantName", "Value": "AllTraffic"}],
                StartTime=time.time() - 600,
                EndTime=time.time() + 60,
                Period=60,
                Statistics=["Sum"],
            )["Datapoints"]
            if sum(p["Sum"] for p in points) >= 1 or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        assert sum(p["Sum"] for p in points) >= 1
    finally:
        for endpoint in (name, slow):
            try:
                sm.delete_endpoint(EndpointName=endpoint)
            except ClientError:
                pass


def test_an_instance_that_dies_in_service_is_replaced(strict):
    sm, rt = strict.client("sagemaker"), strict.client("sagemaker-runtime")
    name = unique("replace")
    try:
        # Slow to start, so the replacement stays SystemUpdating longer than a poll, however loaded the machine.
        assert deploy(sm, name, strict.image_uri, None, env={"START_DELAY": "2"})["EndpointStatus"] == "InService"
        (before,) = instances(strict, name)["Instances"]
        container = before["Containers"][0]
        if "Pid" in container:
            assert container["InvokedAt"] == f"127.0.0.1:{container['Port']}"
            os.killpg(container["Pid"], signal.SIGKILL)
        else:
            # Invoked at its own address on the bridge (past the engine's proxy), where this machine has one.
            address = strict.docker_client.containers.get(container["ContainerId"]).attrs["NetworkSettings"][
                "IPAddress"
            ]
            assert container["InvokedAt"] == (f"{address}:8080" if address else f"127.0.0.1:{container['Port']}")
            strict.docker_client.containers.get(container["ContainerId"]).kill()
        seen: list[str] = []
        deadline = time.monotonic() + 120
        while True:
            status = sm.describe_endpoint(EndpointName=name)["EndpointStatus"]
            if not seen or seen[-1] != status:
                seen.append(status)
            found = instances(strict, name)["Instances"]
            if status == "InService" and found and found[0]["InstanceId"] != before["InstanceId"]:
                break
            assert time.monotonic() < deadline, seen
            time.sleep(0.2)
        assert "SystemUpdating" in seen
        answer = json.loads(rt.invoke_endpoint(EndpointName=name, Body=b"{}")["Body"].read())
        assert answer["served_by"] == "misbehaving"
        assert alive([before], strict.docker_client) == []
    finally:
        sm.delete_endpoint(EndpointName=name)
        wait_gone(sm, name)


@pytest.mark.slow
def test_an_update_whose_new_fleet_never_gets_healthy_leaves_the_old_one_serving(strict):
    sm, rt = strict.client("sagemaker"), strict.client("sagemaker-runtime")
    name = unique("badupdate")
    try:
        assert deploy(sm, name, strict.image_uri, None)["EndpointStatus"] == "InService"
        sm.create_model(
            ModelName=f"{name}-sick",
            PrimaryContainer={"Image": strict.image_uri, "Environment": {"PING_STATUS": "503"}},
        )
        sm.create_endpoint_config(
            EndpointConfigName=f"{name}-sick-c",
            ProductionVariants=[
                {
                    "VariantName": "AllTraffic",
                    "ModelName": f"{name}-sick",
                    "InstanceType": "ml.g5.xlarge",
                    "InitialInstanceCount": 1,
                }
            ],
        )
        sm.update_endpoint(EndpointName=name, EndpointConfigName=f"{name}-sick-c")
        assert sm.describe_endpoint(EndpointName=name)["EndpointStatus"] == "Updating"
        rt.invoke_endpoint(EndpointName=name, Body=b"{}")  # the old fleet serves meanwhile
        done = wait_endpoint(sm, name, until=("InService",), timeout=120)
        assert "did not pass the ping health check" in done["FailureReason"]
        assert done["EndpointConfigName"] == f"{name}-c"
        rt.invoke_endpoint(EndpointName=name, Body=b"{}")
    finally:
        sm.delete_endpoint(EndpointName=name)
        wait_gone(sm, name)


def test_scaling_policies_are_checked_and_go_with_the_endpoint(strict):
    sm, aas, cloudwatch = (strict.client(s) for s in ("sagemaker", "application-autoscaling", "cloudwatch"))
    name = unique("policies")
    resource = f"endpoint/{name}/variant/AllTraffic"
    dimension = "sagemaker:variant:DesiredInstanceCount"
    assert deploy(sm, name, strict.image_uri, None)["EndpointStatus"] == "InService"
    try:
        with pytest.raises(ClientError) as error:
            aas.put_scaling_policy(
                PolicyName="p",
                ServiceNamespace="sagemaker",
                ResourceId=resource,
                ScalableDimension=dimension,
                PolicyType="TargetTrackingScaling",
                TargetTrackingScalingPolicyConfiguration={
                    "TargetValue": 5.0,
                    "PredefinedMetricSpecification": {"PredefinedMetricType": "SageMakerVariantInvocationsPerInstance"},
                },
            )
        assert error.value.response["Error"]["Code"] == "ObjectNotFoundException"
        aas.register_scalable_target(
            ServiceNamespace="sagemaker", ResourceId=resource, ScalableDimension=dimension, MinCapacity=1, MaxCapacity=2
        )
        with pytest.raises(ClientError) as error:
            aas.put_scaling_policy(
                PolicyName="p",
                ServiceNamespace="sagemaker",
                ResourceId=resource,
                ScalableDimension=dimension,
                PolicyType="TargetTrackingScaling",
                TargetTrackingScalingPolicyConfiguration={
                    "TargetValue": 5.0,
                    "PredefinedMetricSpecification": {"PredefinedMetricType": "ECSServiceAverageCPUUtilization"},
                },
            )
        assert error.value.response["Error"]["Message"] == (
            "Scalable dimension sagemaker:variant:DesiredInstanceCount only supports the following predefined "
            "metric types: SageMakerVariantInvocationsPerInstance"
        )
        custom = {
            "MetricName": "Invocations",
            "Namespace": "AWS/SageMaker",
            "Statistic": "Sum",
            "Dimensions": [{"Name": "EndpointName", "Value": name}, {"Name": "VariantName", "Value": "AllTraffic"}],
        }
        created = aas.put_scaling_policy(
            PolicyName="custom",
            ServiceNamespace="sagemaker",
            ResourceId=resource,
            ScalableDimension=dimension,
            PolicyType="TargetTrackingScaling",
            TargetTrackingScalingPolicyConfiguration={
                "TargetValue": 100.0,
                "CustomizedMetricSpecification": custom,
                "DisableScaleIn": True,
            },
        )
        assert len(created["Alarms"]) == 1  # no AlarmLow when scale-in is disabled
        (alarm,) = cloudwatch.describe_alarms(AlarmNames=[created["Alarms"][0]["AlarmName"]])["MetricAlarms"]
        assert (alarm["MetricName"], alarm["Namespace"], alarm["Threshold"]) == ("Invocations", "AWS/SageMaker", 100.0)
        aas.put_scaling_policy(
            PolicyName="steps",
            ServiceNamespace="sagemaker",
            ResourceId=resource,
            ScalableDimension=dimension,
            PolicyType="StepScaling",
            StepScalingPolicyConfiguration={
                "AdjustmentType": "ChangeInCapacity",
                "StepAdjustments": [{"MetricIntervalLowerBound": 0.0, "ScalingAdjustment": 1}],
            },
        )
        policies = aas.describe_scaling_policies(ServiceNamespace="sagemaker", ResourceId=resource)["ScalingPolicies"]
        assert sorted(p["PolicyName"] for p in policies) == ["custom", "steps"]
    finally:
        sm.delete_endpoint(EndpointName=name)
        wait_gone(sm, name)
    # Deleting the endpoint deregisters its variants, policies and alarms included.
    assert aas.describe_scalable_targets(ServiceNamespace="sagemaker", ResourceIds=[resource])["ScalableTargets"] == []
    assert cloudwatch.describe_alarms(AlarmNames=[created["Alarms"][0]["AlarmName"]])["MetricAlarms"] == []
