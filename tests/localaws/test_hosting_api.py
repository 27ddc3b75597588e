"""The hosting API's validation, errors, listing and tags, as AWS answers them (no instance needs
to start for most of these: they run against the process runner's localaws only)."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError

from tests.conftest import unique
from tests.localaws.hosting_support import wait_endpoint, wait_gone
from tests.support import ROLE_ARN, unknown_members

ACCOUNT = "123456789012"


def arn(kind: str, name: str) -> str:
    return f"arn:aws:sagemaker:us-east-1:{ACCOUNT}:{kind}/{name}"


def error_of(call) -> dict:
    with pytest.raises(ClientError) as error:
        call()
    return error.value.response["Error"]


@pytest.fixture
def sm(localaws_process):
    return localaws_process.client("sagemaker")


@pytest.fixture
def model(sm, localaws_process):
    name = unique("api-model")
    sm.create_model(
        ModelName=name,
        ExecutionRoleArn=ROLE_ARN,
        PrimaryContainer={
            "Image": localaws_process.image_uri,
            "ModelDataUrl": "s3://some-bucket/model.tar.gz",
            "Environment": {"SAGEMAKER_MODEL_SERVER_WORKERS": "1"},
        },
        Tags=[{"Key": "team", "Value": "ml"}],
    )
    return name


def test_models_create_describe_list_delete(sm, model):
    described = sm.describe_model(ModelName=model)
    assert unknown_members("sagemaker", "DescribeModel", described) == []
    assert described["ModelArn"] == arn("model", model)
    assert described["PrimaryContainer"]["Environment"] == {"SAGEMAKER_MODEL_SERVER_WORKERS": "1"}
    assert sm.list_tags(ResourceArn=arn("model", model))["Tags"] == [{"Key": "team", "Value": "ml"}]

    assert (
        error_of(lambda: sm.create_model(ModelName=model, PrimaryContainer={"Image": "x"}))["Message"]
        == f'Cannot create already existing model "{arn("model", model)}".'
    )
    listed = sm.list_models(NameContains=model)
    assert unknown_members("sagemaker", "ListModels", listed) == []
    assert [m["ModelName"] for m in listed["Models"]] == [model]

    sm.delete_model(ModelName=model)
    for call in (lambda: sm.describe_model(ModelName=model), lambda: sm.delete_model(ModelName=model)):
        error = error_of(call)
        assert error["Code"] == "ValidationException"
        assert error["Message"] == f'Could not find model "{arn("model", model)}".'


def test_model_requests_are_checked(sm, localaws_process):
    image = localaws_process.image_uri
    assert "Either PrimaryContainer or Containers" in error_of(lambda: sm.create_model(ModelName="nothing"))["Message"]
    error = error_of(lambda: sm.create_model(ModelName="bad_name", PrimaryContainer={"Image": image}))
    assert "at 'modelName' failed to satisfy constraint" in error["Message"]
    error = error_of(
        lambda: sm.create_model(
            ModelName=unique("m"), PrimaryContainer={"Image": image, "ModelDataUrl": "ftp://somewhere/model.tar.gz"}
        )
    )
    assert error["Code"] == "ValidationException"
    # Containers with one container is a model as good as PrimaryContainer.
    name = unique("containers")
    sm.create_model(ModelName=name, Containers=[{"Image": image}])
    assert sm.describe_model(ModelName=name)["Containers"] == [{"Image": image}]


def test_endpoint_configs_and_every_current_instance_family(sm, model):
    from localaws.sagemaker.shapes import enum_of, validate_request

    types = enum_of("ProductionVariantInstanceType")
    assert {"ml.g5.xlarge", "ml.g6.xlarge", "ml.inf2.xlarge", "ml.p4d.24xlarge", "ml.m5.large"} <= set(types)
    for instance_type in types:
        validate_request(
            "CreateEndpointConfig",
            {
                "EndpointConfigName": "c",
                "ProductionVariants": [
                    {"VariantName": "v", "ModelName": model, "InstanceType": instance_type, "InitialInstanceCount": 1}
                ],
            },
        )

    name = unique("api-config")
    created = sm.create_endpoint_config(
        EndpointConfigName=name,
        ProductionVariants=[
            {"VariantName": "AllTraffic", "ModelName": model, "InstanceType": "ml.g5.xlarge", "InitialInstanceCount": 2}
        ],
    )
    assert created["EndpointConfigArn"] == arn("endpoint-config", name)
    described = sm.describe_endpoint_config(EndpointConfigName=name)
    assert unknown_members("sagemaker", "DescribeEndpointConfig", described) == []
    assert described["ProductionVariants"][0]["InitialVariantWeight"] == 1.0
    listed = sm.list_endpoint_configs(NameContains=name)
    assert unknown_members("sagemaker", "ListEndpointConfigs", listed) == []
    assert [c["EndpointConfigName"] for c in listed["EndpointConfigs"]] == [name]

    error = error_of(
        lambda: sm.create_endpoint_config(
            EndpointConfigName=unique("c"),
            ProductionVariants=[
                {"VariantName": "v", "ModelName": model, "InstanceType": "ml.nope.large", "InitialInstanceCount": 1}
            ],
        )
    )
    assert error["Code"] == "ValidationException"
    assert "at 'productionVariants.instanceType' failed to satisfy constraint" in error["Message"]
    error = error_of(
        lambda: sm.create_endpoint_config(
            EndpointConfigName=unique("c"),
            ProductionVariants=[
                {
                    "VariantName": "v",
                    "ModelName": "no-such-model",
                    "InstanceType": "ml.m5.large",
                    "InitialInstanceCount": 1,
                }
            ],
        )
    )
    assert error["Message"] == f'Could not find model "{arn("model", "no-such-model")}".'
    error = error_of(
        lambda: sm.create_endpoint_config(
            EndpointConfigName=name,
            ProductionVariants=[
                {"VariantName": "v", "ModelName": model, "InstanceType": "ml.m5.large", "InitialInstanceCount": 1}
            ],
        )
    )
    assert (
        error["Message"] == f'Cannot create already existing endpoint configuration "{arn("endpoint-config", name)}".'
    )
    error = error_of(
        lambda: sm.create_endpoint_config(
            EndpointConfigName=unique("c"),
            ProductionVariants=[
                {"VariantName": "v", "ModelName": model, "InstanceType": "ml.m5.large", "InitialInstanceCount": 1},
                {"VariantName": "v", "ModelName": model, "InstanceType": "ml.m5.large", "InitialInstanceCount": 1},
            ],
        )
    )
    assert error["Code"] == "ValidationException"

    sm.delete_endpoint_config(EndpointConfigName=name)
    assert (
        error_of(lambda: sm.describe_endpoint_config(EndpointConfigName=name))["Message"]
        == f'Could not find endpoint configuration "{arn("endpoint-config", name)}".'
    )


def test_endpoint_errors_listing_and_tags(sm, localaws_process):
    missing = "no-such-endpoint"
    for call in (
        lambda: sm.describe_endpoint(EndpointName=missing),
        lambda: sm.delete_endpoint(EndpointName=missing),
        lambda: sm.update_endpoint(EndpointName=missing, EndpointConfigName="c"),
    ):
        error = error_of(call)
        assert error["Code"] == "ValidationException"
        assert error["Message"] == f'Could not find endpoint "{arn("endpoint", missing)}".'
    error = error_of(lambda: sm.create_endpoint(EndpointName=unique("e"), EndpointConfigName="no-such-config"))
    assert error["Message"] == f'Could not find endpoint configuration "{arn("endpoint-config", "no-such-config")}".'

    # An endpoint whose model data is missing: it is Creating, then Failed; nothing serves meanwhile.
    model = unique("api-e-model")
    sm.create_model(
        ModelName=model,
        PrimaryContainer={"Image": localaws_process.image_uri, "ModelDataUrl": "s3://no-such-bucket/model.tar.gz"},
    )
    config = unique("api-e-config")
    sm.create_endpoint_config(
        EndpointConfigName=config,
        ProductionVariants=[
            {
                "VariantName": "AllTraffic",
                "ModelName": model,
                "InstanceType": "ml.g5.2xlarge",
                "InitialInstanceCount": 1,
            }
        ],
    )
    name = unique("api-e")
    sm.create_endpoint(EndpointName=name, EndpointConfigName=config, Tags=[{"Key": "stage", "Value": "test"}])
    error = error_of(lambda: sm.create_endpoint(EndpointName=name, EndpointConfigName=config))
    assert error["Message"] == f'Cannot create already existing endpoint "{arn("endpoint", name)}".'
    listed = sm.list_endpoints(NameContains=name)
    assert unknown_members("sagemaker", "ListEndpoints", listed) == []
    assert [e["EndpointName"] for e in listed["Endpoints"]] == [name]
    failed = wait_endpoint(sm, name)
    assert failed["EndpointStatus"] == "Failed"
    assert failed["FailureReason"].startswith(
        'Failed to download model data for container "container_1" from URL: "s3://no-such-bucket/model.tar.gz".'
    )
    assert [
        e["EndpointName"]
        for e in sm.list_endpoints(StatusEquals="Failed", MaxResults=100)["Endpoints"]
        if e["EndpointName"] == name
    ] == [name]
    assert (
        error_of(lambda: sm.update_endpoint(EndpointName=name, EndpointConfigName=config))["Message"]
        == f'Cannot update failed endpoint "{arn("endpoint", name)}".'
    )

    endpoint_arn = arn("endpoint", name)
    sm.add_tags(ResourceArn=endpoint_arn, Tags=[{"Key": "owner", "Value": "me"}])
    assert sorted(t["Key"] for t in sm.list_tags(ResourceArn=endpoint_arn)["Tags"]) == ["owner", "stage"]
    sm.delete_tags(ResourceArn=endpoint_arn, TagKeys=["owner"])
    assert sm.list_tags(ResourceArn=endpoint_arn)["Tags"] == [{"Key": "stage", "Value": "test"}]

    sm.delete_endpoint(EndpointName=name)
    wait_gone(sm, name)
    assert error_of(lambda: sm.list_tags(ResourceArn=endpoint_arn))["Code"] == "ValidationException"


def test_deployment_configs_are_checked(sm, model):
    config = unique("api-dc")
    sm.create_endpoint_config(
        EndpointConfigName=config,
        ProductionVariants=[
            {"VariantName": "AllTraffic", "ModelName": model, "InstanceType": "ml.m5.large", "InitialInstanceCount": 1}
        ],
    )
    error = error_of(
        lambda: sm.create_endpoint(
            EndpointName=unique("e"),
            EndpointConfigName=config,
            DeploymentConfig={
                "BlueGreenUpdatePolicy": {"TrafficRoutingConfiguration": {"Type": "CANARY", "WaitIntervalInSeconds": 5}}
            },
        )
    )
    assert error["Message"] == "CanarySize must be specified for CANARY traffic routing."
    error = error_of(
        lambda: sm.create_endpoint(
            EndpointName=unique("e"),
            EndpointConfigName=config,
            DeploymentConfig={
                "BlueGreenUpdatePolicy": {
                    "TrafficRoutingConfiguration": {"Type": "SIDEWAYS", "WaitIntervalInSeconds": 5}
                }
            },
        )
    )
    assert "failed to satisfy constraint: Member must satisfy enum value set" in error["Message"]
