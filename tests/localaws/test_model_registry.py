"""SageMaker's model registry through localaws over HTTP with boto3: groups, versions, approval.

Nothing here trains: a registered version points at a model.tar.gz put in S3 by the
test, with its evaluation metrics beside it, as the pipeline registers a trained model.
"""

from __future__ import annotations

import io
import json
import tarfile
import time
from datetime import datetime, timezone

import pytest
from botocore.exceptions import ClientError

from tests.conftest import REGION, unique
from tests.support import unknown_members

ACCOUNT = "123456789012"
IMAGE = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/digits-training:registry-test"


@pytest.fixture(scope="module")
def sm(localaws_process):
    return localaws_process.client("sagemaker")


@pytest.fixture(scope="module")
def artifacts(localaws_process):
    """A real model.tar.gz and its evaluation report in S3."""
    s3 = localaws_process.client("s3")
    bucket = unique("registry")
    s3.create_bucket(Bucket=bucket)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        payload = b'{"weights": [0.1, 0.2]}'
        info = tarfile.TarInfo("model.json")
        info.size = len(payload)
        archive.addfile(info, io.BytesIO(payload))
    s3.put_object(Bucket=bucket, Key="jobs/job-1/output/model.tar.gz", Body=buffer.getvalue())
    report = {"multiclass_classification_metrics": {"accuracy": {"value": 0.97, "standard_deviation": "NaN"}}}
    s3.put_object(
        Bucket=bucket,
        Key="jobs/job-1/evaluation.json",
        Body=json.dumps(report).encode(),
        ContentType="application/json",
    )
    return {
        "bucket": bucket,
        "model": f"s3://{bucket}/jobs/job-1/output/model.tar.gz",
        "metrics": f"s3://{bucket}/jobs/job-1/evaluation.json",
    }


def inference(artifacts, **extra) -> dict:
    return {
        "Containers": [{"Image": IMAGE, "ModelDataUrl": artifacts["model"], "Environment": {"LOG_LEVEL": "info"}}],
        "SupportedContentTypes": ["text/csv", "application/json"],
        "SupportedResponseMIMETypes": ["application/json"],
        "SupportedRealtimeInferenceInstanceTypes": ["ml.m5.large", "ml.g5.xlarge"],
        **extra,
    }


def register(sm, group, artifacts, **extra) -> str:
    return sm.create_model_package(ModelPackageGroupName=group, InferenceSpecification=inference(artifacts), **extra)[
        "ModelPackageArn"
    ]


def new_group(sm, prefix="group", **extra) -> str:
    name = unique(prefix)
    response = sm.create_model_package_group(ModelPackageGroupName=name, **extra)
    assert unknown_members("sagemaker", "CreateModelPackageGroup", response) == []
    return name


def error_of(call, **params) -> dict:
    with pytest.raises(ClientError) as error:
        call(**params)
    return error.value.response["Error"]


def test_versions_increment_per_group_and_describe_as_aws(sm, artifacts):
    name = unique("Digits-Classifier")  # mixed case: ARNs are lowercased, names are not
    group_arn = sm.create_model_package_group(
        ModelPackageGroupName=name, ModelPackageGroupDescription="digits models", Tags=[{"Key": "team", "Value": "ml"}]
    )["ModelPackageGroupArn"]
    assert group_arn == f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:model-package-group/{name.lower()}"
    other = new_group(sm)

    metrics = {"ModelQuality": {"Statistics": {"ContentType": "application/json", "S3Uri": artifacts["metrics"]}}}
    first = register(
        sm,
        name,
        artifacts,
        ModelPackageDescription="epoch 12",
        ModelMetrics=metrics,
        CustomerMetadataProperties={"training_job": "job-1", "accuracy": "0.97"},
        MetadataProperties={"GeneratedBy": "arn:aws:sagemaker:us-east-1:123456789012:training-job/job-1"},
        Tags=[{"Key": "stage", "Value": "candidate"}],
    )
    second = register(sm, name, artifacts)
    in_other = register(sm, other, artifacts)
    third = register(sm, group_arn, artifacts)  # the group by ARN works too
    base = f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:model-package/"
    assert [first, second, third] == [f"{base}{name.lower()}/{n}" for n in (1, 2, 3)]
    assert in_other == f"{base}{other}/1"

    described = sm.describe_model_package(ModelPackageName=first)
    assert unknown_members("sagemaker", "DescribeModelPackage", described) == []
    assert described["ModelPackageName"] == name
    assert described["ModelPackageGroupName"] == name
    assert described["ModelPackageVersion"] == 1
    assert described["ModelPackageArn"] == first
    assert described["ModelPackageStatus"] == "Completed"
    assert described["ModelPackageStatusDetails"]["ValidationStatuses"] == []
    assert described["ModelApprovalStatus"] == "PendingManualApproval"
    assert described["ModelPackageDescription"] == "epoch 12"
    assert described["InferenceSpecification"] == inference(artifacts)
    assert described["ModelMetrics"] == metrics
    assert described["CustomerMetadataProperties"] == {"training_job": "job-1", "accuracy": "0.97"}
    assert described["MetadataProperties"]["GeneratedBy"].endswith("training-job/job-1")
    assert isinstance(described["CreationTime"], datetime)
    assert "LastModifiedTime" not in described and "ApprovalDescription" not in described
    # A version by "<group>/<version>" names the same package.
    assert sm.describe_model_package(ModelPackageName=f"{name}/3")["ModelPackageArn"] == third

    group = sm.describe_model_package_group(ModelPackageGroupName=name)
    assert unknown_members("sagemaker", "DescribeModelPackageGroup", group) == []
    assert group["ModelPackageGroupArn"] == group_arn
    assert group["ModelPackageGroupName"] == name
    assert group["ModelPackageGroupStatus"] == "Completed"
    assert group["ModelPackageGroupDescription"] == "digits models"
    assert sm.describe_model_package_group(ModelPackageGroupName=group_arn)["ModelPackageGroupName"] == name

    # Tags live with the other SageMaker resources' tags.
    assert sm.list_tags(ResourceArn=group_arn)["Tags"] == [{"Key": "team", "Value": "ml"}]
    assert sm.list_tags(ResourceArn=first)["Tags"] == [{"Key": "stage", "Value": "candidate"}]
    sm.add_tags(ResourceArn=second, Tags=[{"Key": "stage", "Value": "production"}])
    assert sm.list_tags(ResourceArn=second)["Tags"] == [{"Key": "stage", "Value": "production"}]


def test_approval_updates_filters_and_the_approved_version_with_its_metrics(sm, localaws_process, artifacts):
    group = new_group(sm, "approve")
    metrics = {"ModelQuality": {"Statistics": {"ContentType": "application/json", "S3Uri": artifacts["metrics"]}}}
    arns = [register(sm, group, artifacts, ModelMetrics=metrics) for _ in range(3)]
    assert register(sm, group, artifacts, ModelApprovalStatus="Rejected").endswith("/4")

    before = sm.describe_model_package(ModelPackageName=arns[1])["CreationTime"]
    updated = sm.update_model_package(
        ModelPackageArn=arns[1], ModelApprovalStatus="Approved", ApprovalDescription="accuracy 0.97 >= 0.95"
    )
    assert updated == {"ModelPackageArn": arns[1], "ResponseMetadata": updated["ResponseMetadata"]}
    assert unknown_members("sagemaker", "UpdateModelPackage", updated) == []
    sm.update_model_package(ModelPackageArn=arns[0], ModelApprovalStatus="Rejected")
    described = sm.describe_model_package(ModelPackageName=arns[1])
    assert described["ModelApprovalStatus"] == "Approved"
    assert described["ApprovalDescription"] == "accuracy 0.97 >= 0.95"
    assert described["LastModifiedTime"] >= before

    def approved_newest_first():
        return sm.list_model_packages(
            ModelPackageGroupName=group, ModelApprovalStatus="Approved", SortBy="CreationTime", SortOrder="Descending"
        )

    listed = approved_newest_first()
    assert unknown_members("sagemaker", "ListModelPackages", listed) == []
    assert [s["ModelPackageArn"] for s in listed["ModelPackageSummaryList"]] == [arns[1]]
    summary = listed["ModelPackageSummaryList"][0]
    assert summary["ModelPackageGroupName"] == group
    assert summary["ModelPackageVersion"] == 2
    assert summary["ModelApprovalStatus"] == "Approved"
    assert summary["ModelPackageStatus"] == "Completed"
    rejected = sm.list_model_packages(ModelPackageGroupName=group, ModelApprovalStatus="Rejected")
    assert [s["ModelPackageVersion"] for s in rejected["ModelPackageSummaryList"]] == [1, 4]
    pending = sm.list_model_packages(ModelPackageGroupName=group, ModelApprovalStatus="PendingManualApproval")
    assert [s["ModelPackageVersion"] for s in pending["ModelPackageSummaryList"]] == [3]

    # A newer approval becomes the production version; its metrics are where ModelMetrics says.
    sm.update_model_package(ModelPackageArn=arns[2], ModelApprovalStatus="Approved")
    production = approved_newest_first()["ModelPackageSummaryList"][0]["ModelPackageArn"]
    assert production == arns[2]
    uri = sm.describe_model_package(ModelPackageName=production)["ModelMetrics"]["ModelQuality"]["Statistics"]["S3Uri"]
    bucket, key = uri[len("s3://") :].split("/", 1)
    report = json.loads(localaws_process.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read())
    assert report["multiclass_classification_metrics"]["accuracy"]["value"] == 0.97

    # Approval can be withdrawn.
    sm.update_model_package(ModelPackageArn=arns[2], ModelApprovalStatus="PendingManualApproval")
    assert approved_newest_first()["ModelPackageSummaryList"][0]["ModelPackageArn"] == arns[1]


def test_customer_metadata_is_merged_and_removed(sm, artifacts):
    group = new_group(sm, "meta")
    arn = register(sm, group, artifacts, CustomerMetadataProperties={"a": "1", "b": "2"})
    sm.update_model_package(
        ModelPackageArn=arn, CustomerMetadataProperties={"b": "20", "c": "3"}, CustomerMetadataPropertiesToRemove=["a"]
    )
    assert sm.describe_model_package(ModelPackageName=arn)["CustomerMetadataProperties"] == {"b": "20", "c": "3"}
    sm.update_model_package(ModelPackageArn=arn, CustomerMetadataPropertiesToRemove=["b", "c"])
    assert "CustomerMetadataProperties" not in sm.describe_model_package(ModelPackageName=arn)
    error = error_of(
        sm.update_model_package,
        ModelPackageArn=arn,
        CustomerMetadataProperties={"x": "1"},
        CustomerMetadataPropertiesToRemove=["x"],
    )
    assert error["Code"] == "ValidationException"


def test_client_token_makes_registration_idempotent(sm, artifacts):
    group = new_group(sm, "token")
    token = unique("run")
    first = register(sm, group, artifacts, ClientToken=token)
    again = register(sm, group, artifacts, ClientToken=token)  # a retried task
    assert again == first
    assert register(sm, group, artifacts, ClientToken=unique("run")).endswith("/2")
    listed = sm.list_model_packages(ModelPackageGroupName=group)["ModelPackageSummaryList"]
    assert [s["ModelPackageVersion"] for s in listed] == [1, 2]

    error = error_of(
        sm.create_model_package,
        ModelPackageGroupName=group,
        ClientToken=token,
        InferenceSpecification=inference(artifacts),
        ModelPackageDescription="something else",
    )
    assert error["Code"] == "ConflictException"


def test_a_group_with_versions_cannot_be_deleted(sm, artifacts):
    group = new_group(sm, "delete")
    first, second = register(sm, group, artifacts), register(sm, group, artifacts)
    error = error_of(sm.delete_model_package_group, ModelPackageGroupName=group)
    assert error["Code"] == "ConflictException"
    assert group in error["Message"]
    sm.describe_model_package_group(ModelPackageGroupName=group)  # still there

    sm.delete_model_package(ModelPackageName=second)
    assert register(sm, group, artifacts).endswith("/3")  # version numbers are never reused
    for summary in sm.list_model_packages(ModelPackageGroupName=group)["ModelPackageSummaryList"]:
        sm.delete_model_package(ModelPackageName=summary["ModelPackageArn"])
    error = error_of(sm.describe_model_package, ModelPackageName=first)
    assert error == {"Code": "ValidationException", "Message": f"ModelPackage {first} does not exist."}
    with pytest.raises(ClientError):
        sm.list_tags(ResourceArn=first)

    sm.delete_model_package_group(ModelPackageGroupName=group)
    error = error_of(sm.describe_model_package_group, ModelPackageGroupName=group)
    assert error["Code"] == "ValidationException"
    assert "does not exist" in error["Message"]
    assert sm.list_model_packages(ModelPackageGroupName=group)["ModelPackageSummaryList"] == []


def test_listing_sorts_filters_and_pages(sm, artifacts):
    prefix = unique("lst")
    names = [f"{prefix}-{letter}" for letter in ("c", "a", "d", "b", "e")]
    boundary = None
    for index, name in enumerate(names):
        if index == 2:  # boto3 sends time filters in whole seconds: leave more than one between
            time.sleep(1.1)
            boundary = datetime.now(timezone.utc)
        sm.create_model_package_group(ModelPackageGroupName=name)
        time.sleep(0.01)

    def all_groups(**params):
        found, token = [], None
        while True:
            page = sm.list_model_package_groups(
                NameContains=prefix, MaxResults=2, **params, **({"NextToken": token} if token else {})
            )
            assert unknown_members("sagemaker", "ListModelPackageGroups", page) == []
            assert len(page["ModelPackageGroupSummaryList"]) <= 2
            found += [s["ModelPackageGroupName"] for s in page["ModelPackageGroupSummaryList"]]
            token = page.get("NextToken")
            if not token:
                return found

    assert all_groups() == names  # CreationTime, Ascending by default
    assert all_groups(SortBy="Name") == sorted(names)
    assert all_groups(SortBy="Name", SortOrder="Descending") == sorted(names, reverse=True)
    assert all_groups(SortBy="CreationTime", SortOrder="Descending") == names[::-1]
    assert all_groups(CreationTimeAfter=boundary) == names[2:]
    assert all_groups(CreationTimeBefore=boundary) == names[:2]
    paginated = [
        s["ModelPackageGroupName"]
        for page in sm.get_paginator("list_model_package_groups").paginate(
            NameContains=prefix, PaginationConfig={"PageSize": 2}
        )
        for s in page["ModelPackageGroupSummaryList"]
    ]
    assert paginated == names
    error = error_of(sm.list_model_package_groups, NameContains=prefix, NextToken="garbage")
    assert error["Code"] == "ValidationException"

    group = names[0]
    for _ in range(5):
        register(sm, group, artifacts)
    versions = [
        s["ModelPackageVersion"]
        for page in sm.get_paginator("list_model_packages").paginate(
            ModelPackageGroupName=group, SortBy="Name", SortOrder="Descending", PaginationConfig={"PageSize": 2}
        )
        for s in page["ModelPackageSummaryList"]
    ]
    assert versions == [5, 4, 3, 2, 1]
    first_page = sm.list_model_packages(ModelPackageGroupName=group, MaxResults=2)
    assert [s["ModelPackageVersion"] for s in first_page["ModelPackageSummaryList"]] == [1, 2]
    assert first_page["NextToken"]
    assert (
        sm.list_model_packages(ModelPackageGroupName=group, NameContains="no-such-name")["ModelPackageSummaryList"]
        == []
    )


def test_unversioned_packages_and_package_types(sm, artifacts):
    name = unique("standalone")
    spec = inference(artifacts)
    del spec["Containers"][0]["Environment"]
    arn = sm.create_model_package(ModelPackageName=name, InferenceSpecification=spec)["ModelPackageArn"]
    assert arn == f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:model-package/{name}"
    described = sm.describe_model_package(ModelPackageName=name)
    assert unknown_members("sagemaker", "DescribeModelPackage", described) == []
    assert described["ModelPackageArn"] == arn
    assert "ModelPackageVersion" not in described and "ModelApprovalStatus" not in described

    group = new_group(sm, "types")
    register(sm, group, artifacts)
    unversioned = [s["ModelPackageArn"] for s in sm.list_model_packages(NameContains=name)["ModelPackageSummaryList"]]
    assert unversioned == [arn]  # Unversioned is the default type
    assert sm.list_model_packages(NameContains=group)["ModelPackageSummaryList"] == []
    versioned = sm.list_model_packages(NameContains=group, ModelPackageType="Versioned")["ModelPackageSummaryList"]
    assert [s["ModelPackageGroupName"] for s in versioned] == [group]
    both = {
        s["ModelPackageArn"]
        for page in sm.get_paginator("list_model_packages").paginate(
            ModelPackageType="Both", CreationTimeAfter=datetime(2000, 1, 1, tzinfo=timezone.utc)
        )
        for s in page["ModelPackageSummaryList"]
    }
    assert {arn, versioned[0]["ModelPackageArn"]} <= both

    error = error_of(
        sm.create_model_package, ModelPackageName=unique("env"), InferenceSpecification=inference(artifacts)
    )
    assert error["Code"] == "ValidationException"
    assert "Environment variable map cannot be specified" in error["Message"]
    sm.delete_model_package(ModelPackageName=name)
    assert error_of(sm.describe_model_package, ModelPackageName=arn)["Message"] == f"ModelPackage {arn} does not exist."


def test_registry_errors_are_aws_errors(sm, artifacts):
    group = new_group(sm, "errors")
    missing = unique("missing")

    error = error_of(
        sm.create_model_package, ModelPackageGroupName=missing, InferenceSpecification=inference(artifacts)
    )
    assert error == {"Code": "ValidationException", "Message": "Model Package Group does not exist."}

    unknown = f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:model-package/{group}/7"
    assert error_of(sm.describe_model_package, ModelPackageName=unknown) == {
        "Code": "ValidationException",
        "Message": f"ModelPackage {unknown} does not exist.",
    }
    for call, params in [
        (sm.update_model_package, {"ModelPackageArn": unknown, "ModelApprovalStatus": "Approved"}),
        (sm.delete_model_package, {"ModelPackageName": unknown}),
    ]:
        assert error_of(call, **params)["Message"] == f"ModelPackage {unknown} does not exist."

    group_arn = f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:model-package-group/{missing}"
    for call in (sm.describe_model_package_group, sm.delete_model_package_group):
        assert error_of(call, ModelPackageGroupName=missing) == {
            "Code": "ValidationException",
            "Message": f"ModelPackageGroup {group_arn} does not exist.",
        }

    error = error_of(sm.create_model_package_group, ModelPackageGroupName=group)
    assert error["Code"] == "ValidationException"
    assert "Model Package Group already exists" in error["Message"]

    error = error_of(
        sm.create_model_package,
        ModelPackageGroupName=group,
        ModelPackageName="both",
        InferenceSpecification=inference(artifacts),
    )
    assert "Both ModelPackageName and ModelPackageGroupName" in error["Message"]

    # What botocore's model forbids and only the server checks: enums and patterns.
    error = error_of(
        sm.create_model_package,
        ModelPackageGroupName=group,
        ModelApprovalStatus="Approvd",
        InferenceSpecification=inference(artifacts),
    )
    assert error["Code"] == "ValidationException"
    assert "modelApprovalStatus" in error["Message"] and "enum" in error["Message"]
    error = error_of(sm.create_model_package_group, ModelPackageGroupName="not_valid")
    assert "regular expression pattern" in error["Message"]
    arn = register(sm, group, artifacts)
    error = error_of(sm.update_model_package, ModelPackageArn=arn, ModelApprovalStatus="Approve")
    assert "enum" in error["Message"]
    assert (
        sm.list_model_packages(ModelPackageGroupName=group)["ModelPackageSummaryList"][0]["ModelApprovalStatus"]
        == "PendingManualApproval"
    )
