"""SageMaker hosting through localaws over HTTP with boto3: endpoints that really serve a trained model,
blue/green updates under load, rollbacks, traffic split by weight, autoscaling, and nothing left running
afterwards. Serving a training job's weights, deleting an endpoint and stopping localaws run under both
runners (containers are the runner's); updates, weights and autoscaling are the router's and the
autoscaler's, the same under either, and run under the process runner."""

from __future__ import annotations

import json
import time
import uuid

import pytest
from botocore.exceptions import ClientError

from tests.conftest import TRAINING_CONTEXT, LocalAWSProcess, unique
from tests.fixtures import digits_example
from tests.localaws.hosting_support import (
    Load,
    alive,
    constant_model,
    create_model,
    delete_quietly,
    deploy,
    instances,
    labelled_containers,
    model_tarball,
    predict,
    variant,
    wait_endpoint,
    wait_gone,
)
from tests.support import training_request, unknown_members, wait_for_training, wait_until

pytestmark = [pytest.mark.timeout(1200), pytest.mark.e2e]  # endpoints serving a real training job's weights

SEED = 7
CONSTANT_CLASS = 3


# --- fixtures ------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def trained_model(localaws):
    """A real training job's model.tar.gz (the quick preset), in this server's S3."""
    from ml_pipeline.config import sagemaker_hyperparameters

    s3, sm = localaws.client("s3"), localaws.client("sagemaker")
    bucket = f"hosting-{uuid.uuid4().hex[:10]}"
    s3.create_bucket(Bucket=bucket)
    channels = digits_example.write_channels(s3, bucket, "digits", seed=SEED)
    name = unique("serve-train")
    sm.create_training_job(
        **training_request(
            name,
            localaws.image_uri,
            {"train": channels["train"], "validation": channels["validation"]},
            f"s3://{bucket}/jobs",
            sagemaker_hyperparameters(digits_example.preset("quick")),
            digits_example.experiment()["metric_definitions"],
        )
    )
    done = wait_for_training(sm, name)
    assert done["TrainingJobStatus"] == "Completed", done.get("FailureReason")
    return {"bucket": bucket, "model_data": done["ModelArtifacts"]["S3ModelArtifacts"], "job": name}


@pytest.fixture(scope="session")
def constant_model_data(localaws, trained_model, tmp_path_factory):
    """A second, recognisable model: it answers class 3 whatever it is shown."""
    directory = constant_model(tmp_path_factory.mktemp("constant-model"), CONSTANT_CLASS)
    key = "models/constant/model.tar.gz"
    localaws.client("s3").put_object(Bucket=trained_model["bucket"], Key=key, Body=model_tarball(directory))
    return f"s3://{trained_model['bucket']}/{key}"


@pytest.fixture(scope="session")
def held_out():
    features, labels = digits_example.held_out(seed=SEED)
    return features.tolist(), labels.tolist()


@pytest.fixture
def engine(localaws, request):
    """The Docker engine's client under the docker runner (to look for leftovers), else None."""
    if localaws.runner != "docker":
        return None
    return request.getfixturevalue("docker_client")


def accuracy(rt, name: str, features, labels, batch: int = 60) -> float:
    right = 0
    for start in range(0, len(features), batch):
        predictions, _ = predict(rt, name, features[start : start + batch])
        right += sum(int(p["class"] == y) for p, y in zip(predictions, labels[start : start + batch], strict=True))
    return right / len(labels)


# --- serving a trained model ----------------------------------------------------------------------


@pytest.mark.runners
def test_an_endpoint_serves_the_weights_of_a_training_job(localaws, trained_model, held_out, engine):
    sm, rt = localaws.client("sagemaker"), localaws.client("sagemaker-runtime")
    name = unique("serve")
    seen: list[str] = []
    started = time.monotonic()
    create_model(sm, f"{name}-m", localaws.image_uri, trained_model["model_data"])
    sm.create_endpoint_config(
        EndpointConfigName=f"{name}-c", ProductionVariants=[variant("AllTraffic", f"{name}-m", count=1)]
    )
    arn = sm.create_endpoint(EndpointName=name, EndpointConfigName=f"{name}-c")["EndpointArn"]
    assert arn == f"arn:aws:sagemaker:us-east-1:123456789012:endpoint/{name}"
    try:
        first = sm.describe_endpoint(EndpointName=name)
        assert first["EndpointStatus"] == "Creating"
        assert first["ProductionVariants"][0]["VariantStatus"][0]["Status"] == "Creating"
        described = wait_endpoint(sm, name, seen=seen)
        assert described["EndpointStatus"] == "InService", described.get("FailureReason")
        print(f"CreateEndpoint -> InService in {time.monotonic() - started:.1f}s ({localaws.runner})")
        assert unknown_members("sagemaker", "DescribeEndpoint", described) == []
        (summary,) = described["ProductionVariants"]
        assert summary["CurrentInstanceCount"] == summary["DesiredInstanceCount"] == 1
        assert summary["CurrentWeight"] == summary["DesiredWeight"] == 1.0
        assert summary["DeployedImages"][0]["SpecifiedImage"] == localaws.image_uri
        assert "VariantStatus" not in summary
        for operation, call in (
            ("DescribeModel", lambda: sm.describe_model(ModelName=f"{name}-m")),
            ("DescribeEndpointConfig", lambda: sm.describe_endpoint_config(EndpointConfigName=f"{name}-c")),
        ):
            assert unknown_members("sagemaker", operation, call()) == []

        features, labels = held_out
        assert accuracy(rt, name, features, labels) >= 0.9

        predictions, response = predict(rt, name, features[:4], CustomAttributes="trace=abc")
        assert response["InvokedProductionVariant"] == "AllTraffic"
        assert response["ContentType"] == "application/json"
        assert response["CustomAttributes"] == "trace=abc"
        for prediction in predictions:
            assert len(prediction["probabilities"]) == 10
            assert abs(sum(prediction["probabilities"]) - 1) < 1e-3
        csv = "\n".join(",".join(str(int(v)) for v in row) for row in features[:3])
        answer = rt.invoke_endpoint(EndpointName=name, Body=csv, ContentType="text/csv", Accept="text/csv")
        assert answer["ContentType"] == "text/csv"
        lines = answer["Body"].read().decode().strip().splitlines()
        assert [int(line.split(",")[0]) for line in lines] == [p["class"] for p in predictions[:3]]

        with pytest.raises(ClientError) as error:
            rt.invoke_endpoint(
                EndpointName=name, Body=json.dumps({"instances": [[1, 2, 3]]}), ContentType="application/json"
            )
        response = error.value.response
        assert response["Error"]["Code"] == "ModelError"
        assert response["ResponseMetadata"]["HTTPStatusCode"] == 424
        assert response["OriginalStatusCode"] == 400
        assert "the model takes 64" in response["OriginalMessage"]
        assert response["Error"]["Message"].startswith("Received client error (400) from primary with message")
        assert response["LogStreamArn"].endswith(f":log-group:/aws/sagemaker/Endpoints/{name}")

        with pytest.raises(ClientError) as error:
            rt.invoke_endpoint(EndpointName="no-such-endpoint", Body=b"1", ContentType="text/csv")
        assert error.value.response["Error"]["Code"] == "ValidationError"
        assert (
            error.value.response["Error"]["Message"] == "Endpoint no-such-endpoint of account 123456789012 not found."
        )

        # Per-variant metrics in AWS/SageMaker and the container's log in CloudWatch Logs.
        cloudwatch, logs = localaws.client("cloudwatch"), localaws.client("logs")
        dimensions = [{"Name": "EndpointName", "Value": name}, {"Name": "VariantName", "Value": "AllTraffic"}]
        deadline = time.monotonic() + 30
        while True:
            points = cloudwatch.get_metric_statistics(
                Namespace="AWS/SageMaker",
                MetricName="Invocations",
                Dimensions=dimensions,
                StartTime=time.time() - 600,
                EndTime=time.time() + 60,
                Period=60,
                Statistics=["Sum"],
            )["Datapoints"]
            if sum(p["Sum"] for p in points) >= len(features) // 60 + 3 or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        assert sum(p["Sum"] for p in points) >= len(features) // 60 + 3
        names = {
            m["MetricName"]
            for m in cloudwatch.list_metrics(Namespace="AWS/SageMaker", Dimensions=dimensions[:1])["Metrics"]
        }
        assert {
            "Invocations",
            "InvocationsPerInstance",
            "ModelLatency",
            "OverheadLatency",
            "Invocation4XXErrors",
            "Invocation5XXErrors",
        } <= names
        errors = cloudwatch.get_metric_statistics(
            Namespace="AWS/SageMaker",
            MetricName="Invocation4XXErrors",
            Dimensions=dimensions,
            StartTime=time.time() - 600,
            EndTime=time.time() + 60,
            Period=60,
            Statistics=["Sum"],
        )["Datapoints"]
        assert sum(p["Sum"] for p in errors) >= 1
        streams = logs.describe_log_streams(logGroupName=f"/aws/sagemaker/Endpoints/{name}")["logStreams"]
        assert [s["logStreamName"].split("/")[0] for s in streams] == ["AllTraffic"]
        assert streams[0]["logStreamName"].split("/")[1].startswith("i-")

        found = instances(localaws, name)["Instances"]
        assert len(found) == 1
    finally:
        sm.delete_endpoint(EndpointName=name)
    assert sm.describe_endpoint(EndpointName=name)["EndpointStatus"] == "Deleting"
    wait_gone(sm, name)
    assert alive(found, engine) == []
    assert seen[0] == "Creating" and seen[-1] == "InService"


# --- blue/green updates ---------------------------------------------------------------------------


def test_update_under_load_drops_nothing_and_ends_on_the_new_model(
    localaws, trained_model, constant_model_data, held_out, engine
):
    sm = localaws.client("sagemaker")
    name = unique("bluegreen")
    features, _ = held_out
    try:
        assert deploy(sm, name, localaws.image_uri, trained_model["model_data"])["EndpointStatus"] == "InService"
        old = instances(localaws, name)["Instances"]
        create_model(sm, f"{name}-m2", localaws.image_uri, constant_model_data)
        sm.create_endpoint_config(
            EndpointConfigName=f"{name}-c2", ProductionVariants=[variant("AllTraffic", f"{name}-m2")]
        )
        seen: list[str] = []
        with Load(localaws, name, features[:5], threads=3) as load:
            wait_until(lambda: len(load.results) >= 10, timeout=60, waiting_for="the old model answering")
            sm.update_endpoint(
                EndpointName=name,
                EndpointConfigName=f"{name}-c2",
                DeploymentConfig={
                    "BlueGreenUpdatePolicy": {
                        "TrafficRoutingConfiguration": {"Type": "ALL_AT_ONCE", "WaitIntervalInSeconds": 1},
                        "TerminationWaitInSeconds": 1,
                    }
                },
            )
            during = sm.describe_endpoint(EndpointName=name)
            assert during["EndpointStatus"] == "Updating"
            assert during["PendingDeploymentSummary"]["EndpointConfigName"] == f"{name}-c2"
            assert unknown_members("sagemaker", "DescribeEndpoint", during) == []
            with pytest.raises(ClientError) as error:
                sm.update_endpoint(EndpointName=name, EndpointConfigName=f"{name}-c2")
            assert (
                error.value.response["Error"]["Message"]
                == f'Cannot update in-progress endpoint "arn:aws:sagemaker:us-east-1:123456789012:endpoint/{name}".'
            )
            done = wait_endpoint(sm, name, seen=seen, timeout=300)
            answered = len(load.results)
            wait_until(lambda: len(load.results) >= answered + 20, timeout=60, waiting_for="the new model answering")
        assert done["EndpointStatus"] == "InService", done.get("FailureReason")
        assert "FailureReason" not in done and "PendingDeploymentSummary" not in done
        assert done["EndpointConfigName"] == f"{name}-c2"
        assert done["LastDeploymentConfig"]["BlueGreenUpdatePolicy"]["TerminationWaitInSeconds"] == 1
        assert load.errors == []
        assert len(load.results) >= 30
        first_classes = load.results[0][2]
        assert first_classes != [CONSTANT_CLASS] * 5  # the trained model answered first...
        tail = [classes for _, _, classes in load.results[-10:]]
        assert tail == [[CONSTANT_CLASS] * 5] * 10  # ...and the new one at the end
        new = instances(localaws, name)["Instances"]
        assert {i["InstanceId"] for i in new}.isdisjoint({i["InstanceId"] for i in old})
        assert alive(old, engine) == []
    finally:
        delete_quietly(sm, name)


def test_a_failing_update_rolls_back_and_keeps_serving(localaws, trained_model, constant_model_data, held_out):
    sm, rt, cloudwatch = (localaws.client(s) for s in ("sagemaker", "sagemaker-runtime", "cloudwatch"))
    name = unique("rollback")
    features, labels = held_out
    try:
        deploy(sm, name, localaws.image_uri, trained_model["model_data"])
        before = instances(localaws, name)["Instances"]

        # 1. The new fleet never becomes healthy: its model data does not exist.
        missing = f"s3://{trained_model['bucket']}/no/such/model.tar.gz"
        create_model(sm, f"{name}-broken", localaws.image_uri, missing)
        sm.create_endpoint_config(
            EndpointConfigName=f"{name}-broken-c", ProductionVariants=[variant("AllTraffic", f"{name}-broken")]
        )
        with Load(localaws, name, features[:3], threads=1, pause=0.05) as load:
            sm.update_endpoint(EndpointName=name, EndpointConfigName=f"{name}-broken-c")
            done = wait_endpoint(sm, name, until=("InService",), timeout=300)
            if done.get("PendingDeploymentSummary"):
                done = wait_endpoint(sm, name, until=("InService",))
        assert load.errors == []
        assert done["EndpointConfigName"] == f"{name}-c"
        assert done["FailureReason"].startswith("Failed to update the endpoint: Failed to download model data")
        assert missing in done["FailureReason"]
        assert [i["InstanceId"] for i in instances(localaws, name)["Instances"]] == [i["InstanceId"] for i in before]
        assert accuracy(rt, name, features[:120], labels[:120]) >= 0.9

        # 2. AutoRollbackConfiguration: an alarm fires while the canary bakes.
        alarm = f"{name}-errors"
        cloudwatch.put_metric_alarm(
            AlarmName=alarm,
            MetricName="Invocation5XXErrors",
            Namespace="AWS/SageMaker",
            Statistic="Sum",
            Dimensions=[{"Name": "EndpointName", "Value": name}],
            Period=60,
            EvaluationPeriods=1,
            Threshold=1,
            ComparisonOperator="GreaterThanOrEqualToThreshold",
        )
        create_model(sm, f"{name}-m2", localaws.image_uri, constant_model_data)
        sm.create_endpoint_config(
            EndpointConfigName=f"{name}-c2", ProductionVariants=[variant("AllTraffic", f"{name}-m2")]
        )
        sm.update_endpoint(
            EndpointName=name,
            EndpointConfigName=f"{name}-c2",
            DeploymentConfig={
                "BlueGreenUpdatePolicy": {
                    "TrafficRoutingConfiguration": {
                        "Type": "CANARY",
                        "WaitIntervalInSeconds": 120,
                        "CanarySize": {"Type": "CAPACITY_PERCENT", "Value": 50},
                    },
                    "TerminationWaitInSeconds": 0,
                },
                "AutoRollbackConfiguration": {"Alarms": [{"AlarmName": alarm}]},
            },
        )
        deadline = time.monotonic() + 300
        while True:
            pending = sm.describe_endpoint(EndpointName=name).get("PendingDeploymentSummary")
            statuses = [
                s["Status"] for v in (pending or {}).get("ProductionVariants", []) for s in v.get("VariantStatus", [])
            ]
            if "Baking" in statuses:
                break
            assert time.monotonic() < deadline, "the canary never started baking"
            time.sleep(0.3)
        row = next(i for i, label in enumerate(labels) if label != CONSTANT_CLASS)
        answers = [predict(rt, name, [features[row]])[0][0]["class"] for _ in range(40)]
        assert CONSTANT_CLASS in answers and set(answers) != {CONSTANT_CLASS}  # the canary takes half
        seen: list[str] = []
        cloudwatch.set_alarm_state(AlarmName=alarm, StateValue="ALARM", StateReason="test")
        done = wait_endpoint(sm, name, until=("InService",), seen=seen, timeout=120)
        assert "RollingBack" in seen or seen == ["InService"]
        assert done["EndpointConfigName"] == f"{name}-c"
        assert alarm in done["FailureReason"]
        assert "PendingDeploymentSummary" not in done
        assert accuracy(rt, name, features[:120], labels[:120]) >= 0.9
    finally:
        delete_quietly(sm, name)


# --- traffic split, weights and capacities ------------------------------------------------------


def test_weights_split_traffic_between_variants(localaws, trained_model, constant_model_data, held_out):
    sm, rt = localaws.client("sagemaker"), localaws.client("sagemaker-runtime")
    name = unique("split")
    features, _ = held_out
    try:
        create_model(sm, f"{name}-a", localaws.image_uri, trained_model["model_data"])
        create_model(sm, f"{name}-b", localaws.image_uri, constant_model_data)
        sm.create_endpoint_config(
            EndpointConfigName=f"{name}-c",
            ProductionVariants=[
                variant("VariantA", f"{name}-a", weight=3.0),
                variant("VariantB", f"{name}-b", weight=1.0),
            ],
        )
        sm.create_endpoint(EndpointName=name, EndpointConfigName=f"{name}-c")
        described = wait_endpoint(sm, name)
        assert described["EndpointStatus"] == "InService", described.get("FailureReason")
        assert [v["VariantName"] for v in described["ProductionVariants"]] == ["VariantA", "VariantB"]

        counts = {"VariantA": 0, "VariantB": 0}
        for _ in range(400):
            _, response = predict(rt, name, features[:1])
            counts[response["InvokedProductionVariant"]] += 1
        share = counts["VariantA"] / 400
        assert 0.67 <= share <= 0.83, counts  # 0.75 expected: 4+ standard deviations either side

        for _ in range(5):
            predictions, response = predict(rt, name, features[:2], TargetVariant="VariantB")
            assert response["InvokedProductionVariant"] == "VariantB"
            assert [p["class"] for p in predictions] == [CONSTANT_CLASS] * 2
        with pytest.raises(ClientError) as error:
            predict(rt, name, features[:1], TargetVariant="NoSuchVariant")
        assert error.value.response["Error"]["Code"] == "ValidationError"

        sm.update_endpoint_weights_and_capacities(
            EndpointName=name,
            DesiredWeightsAndCapacities=[
                {"VariantName": "VariantA", "DesiredWeight": 0.0},
                {"VariantName": "VariantB", "DesiredWeight": 1.0, "DesiredInstanceCount": 2},
            ],
        )
        updating = sm.describe_endpoint(EndpointName=name)
        assert updating["EndpointStatus"] == "Updating"
        assert {v["VariantName"]: v["DesiredInstanceCount"] for v in updating["ProductionVariants"]} == {
            "VariantA": 1,
            "VariantB": 2,
        }
        done = wait_endpoint(sm, name)
        assert done["EndpointStatus"] == "InService" and "FailureReason" not in done
        by_name = {v["VariantName"]: v for v in done["ProductionVariants"]}
        assert by_name["VariantA"]["CurrentWeight"] == 0.0
        assert by_name["VariantB"]["CurrentInstanceCount"] == 2
        for _ in range(60):
            _, response = predict(rt, name, features[:1])
            assert response["InvokedProductionVariant"] == "VariantB"
        served = [i["Served"] for i in instances(localaws, name)["Instances"] if i["VariantName"] == "VariantB"]
        assert len(served) == 2 and min(served) > 0  # spread over the variant's instances
        # A variant of weight 0 still answers when asked by name.
        assert predict(rt, name, features[:1], TargetVariant="VariantA")[1]["InvokedProductionVariant"] == "VariantA"

        with pytest.raises(ClientError) as error:
            sm.update_endpoint_weights_and_capacities(
                EndpointName=name, DesiredWeightsAndCapacities=[{"VariantName": "Nope", "DesiredWeight": 1.0}]
            )
        assert error.value.response["Error"]["Code"] == "ValidationException"
    finally:
        delete_quietly(sm, name)


# --- autoscaling ------------------------------------------------------------------------------------


def test_autoscaling_scales_out_to_max_under_load_and_back_in(localaws, trained_model, held_out):
    sm, aas = localaws.client("sagemaker"), localaws.client("application-autoscaling")
    cloudwatch = localaws.client("cloudwatch")
    name = unique("scale")
    features, _ = held_out
    resource = f"endpoint/{name}/variant/AllTraffic"
    dimension = "sagemaker:variant:DesiredInstanceCount"
    try:
        deploy(sm, name, localaws.image_uri, trained_model["model_data"])
        with pytest.raises(ClientError) as error:
            aas.register_scalable_target(
                ServiceNamespace="sagemaker",
                ResourceId=f"endpoint/{name}/variant/Nope",
                ScalableDimension=dimension,
                MinCapacity=1,
                MaxCapacity=3,
            )
        assert error.value.response["Error"]["Code"] == "ValidationException"
        arn = aas.register_scalable_target(
            ServiceNamespace="sagemaker", ResourceId=resource, ScalableDimension=dimension, MinCapacity=1, MaxCapacity=3
        )
        assert arn["ScalableTargetARN"].startswith("arn:aws:application-autoscaling:us-east-1:123456789012:")
        targets = aas.describe_scalable_targets(ServiceNamespace="sagemaker", ResourceIds=[resource])
        assert unknown_members("application-autoscaling", "DescribeScalableTargets", targets) == []
        assert [(t["MinCapacity"], t["MaxCapacity"]) for t in targets["ScalableTargets"]] == [(1, 3)]
        policy = aas.put_scaling_policy(
            PolicyName="invocations",
            ServiceNamespace="sagemaker",
            ResourceId=resource,
            ScalableDimension=dimension,
            PolicyType="TargetTrackingScaling",
            TargetTrackingScalingPolicyConfiguration={
                "TargetValue": 20.0,
                "PredefinedMetricSpecification": {"PredefinedMetricType": "SageMakerVariantInvocationsPerInstance"},
                "ScaleOutCooldown": 60,
                "ScaleInCooldown": 60,
            },
        )
        assert len(policy["Alarms"]) == 2
        assert any("-AlarmHigh-" in a["AlarmName"] for a in policy["Alarms"])
        alarms = cloudwatch.describe_alarms(AlarmNames=[a["AlarmName"] for a in policy["Alarms"]])["MetricAlarms"]
        assert len(alarms) == 2
        described = aas.describe_scaling_policies(ServiceNamespace="sagemaker", ResourceId=resource)
        assert unknown_members("application-autoscaling", "DescribeScalingPolicies", described) == []
        assert described["ScalingPolicies"][0]["PolicyARN"] == policy["PolicyARN"]

        # Far above 20 invocations per instance per (compressed) minute: out to MaxCapacity.
        seen: list[str] = []
        with Load(localaws, name, features[:1], threads=3) as load:
            deadline = time.monotonic() + 120
            while True:
                current = sm.describe_endpoint(EndpointName=name)
                if not seen or seen[-1] != current["EndpointStatus"]:
                    seen.append(current["EndpointStatus"])
                count = current["ProductionVariants"][0]["CurrentInstanceCount"]
                if count == 3 and current["EndpointStatus"] == "InService":
                    break
                assert time.monotonic() < deadline, f"did not scale out: {current}"
                time.sleep(0.5)
        assert load.errors == []
        assert "Updating" in seen
        activities = aas.describe_scaling_activities(ServiceNamespace="sagemaker", ResourceId=resource)
        assert unknown_members("application-autoscaling", "DescribeScalingActivities", activities) == []
        outs = activities["ScalingActivities"]
        assert outs and outs[0]["Description"] == "Setting desired instance count to 3."
        assert outs[0]["StatusCode"] == "Successful"
        assert "AlarmHigh" in outs[0]["Cause"] and "triggered policy invocations" in outs[0]["Cause"]

        # No load: under 90 % of the target for 15 minutes (15 s here), back in to MinCapacity.
        deadline = time.monotonic() + 120
        while True:
            current = sm.describe_endpoint(EndpointName=name)
            if (
                current["ProductionVariants"][0]["CurrentInstanceCount"] == 1
                and current["EndpointStatus"] == "InService"
            ):
                break
            assert time.monotonic() < deadline, f"did not scale in: {current}"
            time.sleep(0.5)
        latest = aas.describe_scaling_activities(ServiceNamespace="sagemaker", ResourceId=resource)
        ins = latest["ScalingActivities"][0]
        assert ins["Description"] == "Setting desired instance count to 1."
        assert "AlarmLow" in ins["Cause"]
        assert len(instances(localaws, name)["Instances"]) == 1

        aas.delete_scaling_policy(
            PolicyName="invocations", ServiceNamespace="sagemaker", ResourceId=resource, ScalableDimension=dimension
        )
        assert cloudwatch.describe_alarms(AlarmNames=[a["AlarmName"] for a in policy["Alarms"]])["MetricAlarms"] == []
        aas.deregister_scalable_target(ServiceNamespace="sagemaker", ResourceId=resource, ScalableDimension=dimension)
        with pytest.raises(ClientError) as error:
            aas.deregister_scalable_target(
                ServiceNamespace="sagemaker", ResourceId=resource, ScalableDimension=dimension
            )
        assert error.value.response["Error"]["Code"] == "ObjectNotFoundException"

        # Other namespaces are still moto's.
        aas.register_scalable_target(
            ServiceNamespace="dynamodb",
            ResourceId=f"table/{name}",
            ScalableDimension="dynamodb:table:ReadCapacityUnits",
            MinCapacity=1,
            MaxCapacity=5,
        )
        tables = aas.describe_scalable_targets(ServiceNamespace="dynamodb")["ScalableTargets"]
        assert f"table/{name}" in [t["ResourceId"] for t in tables]
        assert (
            aas.describe_scalable_targets(ServiceNamespace="sagemaker", ResourceIds=[f"table/{name}"])[
                "ScalableTargets"
            ]
            == []
        )
    finally:
        delete_quietly(sm, name)


# --- nothing left behind --------------------------------------------------------------------------


@pytest.mark.runners
def test_delete_endpoint_stops_every_instance(localaws, constant_model_data, engine):
    sm = localaws.client("sagemaker")
    name = unique("delete")
    deploy(sm, name, localaws.image_uri, constant_model_data, count=2)
    found = instances(localaws, name)["Instances"]
    assert len(found) == 2
    assert alive(found, engine) != []
    sm.delete_endpoint(EndpointName=name)
    wait_gone(sm, name)
    assert alive(found, engine) == []
    if engine is not None:
        assert labelled_containers(engine, f"localaws-ep-{name}-") == []
    with pytest.raises(ClientError) as error:
        sm.delete_endpoint(EndpointName=name)
    assert (
        error.value.response["Error"]["Message"]
        == f'Could not find endpoint "arn:aws:sagemaker:us-east-1:123456789012:endpoint/{name}".'
    )


@pytest.mark.runners
def test_nothing_is_left_running_after_localaws_stops(localaws, constant_model_data, tmp_path, engine):
    from localaws.client import register_image

    env = {"LOCALAWS_REGISTRY": localaws.env["LOCALAWS_REGISTRY"]} if "LOCALAWS_REGISTRY" in localaws.env else {}
    server = LocalAWSProcess(tmp_path, localaws.runner, **env).start()
    try:
        if localaws.runner == "process":
            register_image(server.endpoint_url, localaws.image_uri, TRAINING_CONTEXT)
        body = (
            localaws.client("s3")
            .get_object(Bucket=constant_model_data.split("/")[2], Key=constant_model_data.split("/", 3)[3])["Body"]
            .read()
        )
        server.client("s3").create_bucket(Bucket="leftovers")
        server.client("s3").put_object(Bucket="leftovers", Key="model.tar.gz", Body=body)
        sm = server.client("sagemaker")
        described = deploy(sm, "leftovers", localaws.image_uri, "s3://leftovers/model.tar.gz", count=2)
        assert described["EndpointStatus"] == "InService", described.get("FailureReason")
        found = instances(server, "leftovers")["Instances"]
        assert alive(found, engine) != []
    finally:
        server.stop()
    assert alive(found, engine) == []
    if engine is not None:
        assert labelled_containers(engine, "localaws-ep-leftovers-") == []
