"""SageMaker training jobs through localaws over HTTP with boto3. One job trains the real network under
both runners; the others run the digits trainer's stand-in (tests/localaws/images/quick-trainer), under
both runners where the runner is what they are about (signals, failure files, checkpoint folders), as
what they test is the job's lifecycle, not training (the real trainer's own failures, SIGTERM and
checkpoints: tests/workload)."""

from __future__ import annotations

import io
import json
import tarfile
import time

import pytest
from botocore.exceptions import ClientError

from tests.conftest import unique
from tests.fixtures import digits_example
from tests.support import training_request, unknown_members, wait_for_training, wait_until

pytestmark = pytest.mark.timeout(900)


def job_request(image, data, preset, name, epoch_seconds=None, **overrides):
    """A digits job's request; ``epoch_seconds``: how long each of the stand-in trainer's epochs takes."""
    from ml_pipeline.config import sagemaker_hyperparameters

    hyperparameters = {**sagemaker_hyperparameters(preset), **overrides.pop("hyperparameters", {})}
    if epoch_seconds is not None:
        overrides["Environment"] = {"EPOCH_SECONDS": str(epoch_seconds)}
    return training_request(
        name,
        image,
        {"train": data["train"], "validation": data["validation"]},
        f"s3://{data['bucket']}/jobs",
        hyperparameters,
        digits_example.experiment()["metric_definitions"],
        **overrides,
    )


def download_model(s3, uri: str, into):
    bucket, key = uri[len("s3://") :].split("/", 1)
    body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    with tarfile.open(fileobj=io.BytesIO(body), mode="r:gz") as tar:
        tar.extractall(into)
    return into


def log_lines(logs, name: str) -> list[str]:
    try:
        streams = logs.describe_log_streams(logGroupName="/aws/sagemaker/TrainingJobs", logStreamNamePrefix=name + "/")
    except logs.exceptions.ResourceNotFoundException:  # no job has logged yet
        return []
    lines = []
    for stream in streams["logStreams"]:
        events = logs.get_log_events(
            logGroupName="/aws/sagemaker/TrainingJobs", logStreamName=stream["logStreamName"], startFromHead=True
        )
        lines.extend(event["message"] for event in events["events"])
    return lines


@pytest.mark.e2e
@pytest.mark.runners
def test_training_job_trains_and_writes_a_model_that_loads(localaws, data, preset, tmp_path):
    sm, s3 = localaws.client("sagemaker"), localaws.client("s3")
    name = unique("train")
    arn = sm.create_training_job(**job_request(localaws.image_uri, data, preset, name))["TrainingJobArn"]
    assert arn.endswith(f":training-job/{name}")

    first = sm.describe_training_job(TrainingJobName=name)
    assert first["TrainingJobStatus"] == "InProgress"
    done = wait_for_training(sm, name)
    assert done["TrainingJobStatus"] == "Completed", done.get("FailureReason")
    assert done["SecondaryStatus"] == "Completed"
    assert unknown_members("sagemaker", "DescribeTrainingJob", done) == []

    statuses = [transition["Status"] for transition in done["SecondaryStatusTransitions"]]
    assert statuses == ["Starting", "Downloading", "Training", "Uploading", "Completed"]
    for transition in done["SecondaryStatusTransitions"]:
        assert transition["StartTime"] <= transition["EndTime"]
        assert transition["StatusMessage"]
    assert done["TrainingStartTime"] <= done["TrainingEndTime"]
    assert done["TrainingTimeInSeconds"] >= 1
    assert 1 <= done["BillableTimeInSeconds"] <= done["TrainingTimeInSeconds"]

    metrics = {metric["MetricName"]: metric["Value"] for metric in done["FinalMetricDataList"]}
    assert metrics["validation:accuracy"] >= 0.9
    assert set(metrics) == {definition["Name"] for definition in digits_example.experiment()["metric_definitions"]}

    artifact = done["ModelArtifacts"]["S3ModelArtifacts"]
    assert artifact == f"s3://{data['bucket']}/jobs/{name}/output/model.tar.gz"
    model_dir = download_model(s3, artifact, tmp_path / "model")
    from digits import model as digits_model

    features, labels = digits_example.held_out(seed=7)
    predictions = digits_model.predict(digits_model.load(model_dir), features)
    accuracy = sum(int(p == y) for p, y in zip(predictions, labels, strict=True)) / len(labels)
    assert accuracy >= 0.9
    s3.head_object(Bucket=data["bucket"], Key=f"jobs/{name}/output/output.tar.gz")

    lines = log_lines(localaws.client("logs"), name)
    assert any("validation_accuracy=" in line for line in lines)
    streams = localaws.client("logs").describe_log_streams(
        logGroupName="/aws/sagemaker/TrainingJobs", logStreamNamePrefix=name + "/"
    )["logStreams"]
    assert [s["logStreamName"].rsplit("-", 1)[0] for s in streams] == [f"{name}/algo-1"]

    series = localaws.client("cloudwatch").get_metric_statistics(
        Namespace="/aws/sagemaker/TrainingJobs",
        MetricName="validation:accuracy",
        Dimensions=[{"Name": "Host", "Value": f"{name}/algo-1"}],
        StartTime=done["CreationTime"],
        EndTime=time.time() + 60,
        Period=60,
        Statistics=["SampleCount", "Maximum"],
    )["Datapoints"]
    assert sum(point["SampleCount"] for point in series) >= 2  # one per epoch, not just the last


@pytest.mark.runners
def test_failing_script_gives_failed_and_its_reason(localaws, data, preset, quick_trainer):
    sm = localaws.client("sagemaker")
    name = unique("fail")
    sm.create_training_job(**job_request(quick_trainer, data, preset, name, hyperparameters={"learning_rate": "-1"}))
    done = wait_for_training(sm, name)
    assert done["TrainingJobStatus"] == "Failed"
    assert done["SecondaryStatus"] == "Failed"
    assert done["FailureReason"].startswith("AlgorithmError: ")
    assert "learning_rate" in done["FailureReason"]
    assert "exit code: 1" in done["FailureReason"]


def test_missing_channel_data_fails_with_a_client_error(localaws, data, preset, quick_trainer):
    sm = localaws.client("sagemaker")
    name = unique("nodata")
    request = job_request(quick_trainer, data, preset, name)
    request["InputDataConfig"][0]["DataSource"]["S3DataSource"]["S3Uri"] = f"s3://{data['bucket']}/nothing-here/"
    sm.create_training_job(**request)
    done = wait_for_training(sm, name)
    assert done["TrainingJobStatus"] == "Failed"
    assert done["FailureReason"].startswith("ClientError: Data download failed:No S3 objects found")


@pytest.mark.slow
@pytest.mark.runners
def test_stop_training_job_sends_sigterm_and_keeps_the_model(localaws, data, preset, quick_trainer):
    sm, s3 = localaws.client("sagemaker"), localaws.client("s3")
    name = unique("stop")
    sm.create_training_job(
        **job_request(
            quick_trainer,
            data,
            preset,
            name,
            epoch_seconds=0.1,
            hyperparameters={"epochs": "5000", "early_stopping_patience": "5000"},
        )
    )
    wait_until(
        lambda: any("epoch=3 " in line for line in log_lines(localaws.client("logs"), name)),
        timeout=120,
        waiting_for="a few epochs in",
    )
    sm.stop_training_job(TrainingJobName=name)
    assert sm.describe_training_job(TrainingJobName=name)["TrainingJobStatus"] in ("Stopping", "Stopped")
    done = wait_for_training(sm, name, timeout=120)
    assert done["TrainingJobStatus"] == "Stopped"
    assert done["SecondaryStatus"] == "Stopped"
    assert "Stopping" in [t["Status"] for t in done["SecondaryStatusTransitions"]]
    assert "ModelArtifacts" in done  # what the algorithm saved on SIGTERM is uploaded
    bucket, key = done["ModelArtifacts"]["S3ModelArtifacts"][len("s3://") :].split("/", 1)
    with tarfile.open(fileobj=io.BytesIO(s3.get_object(Bucket=bucket, Key=key)["Body"].read())) as tar:
        assert json.load(tar.extractfile("model.json"))["epoch"] >= 3
    with pytest.raises(ClientError) as error:
        sm.stop_training_job(TrainingJobName=name)
    assert error.value.response["Error"]["Code"] == "ValidationException"


@pytest.mark.slow
@pytest.mark.runners
def test_max_runtime_stops_the_job(localaws, data, preset, quick_trainer):
    sm = localaws.client("sagemaker")
    name = unique("maxrt")
    request = job_request(
        quick_trainer,
        data,
        preset,
        name,
        max_runtime=2,
        epoch_seconds=0.1,
        hyperparameters={"epochs": "5000", "early_stopping_patience": "5000"},
    )
    sm.create_training_job(**request)
    done = wait_for_training(sm, name, timeout=600)
    assert done["TrainingJobStatus"] == "Stopped"
    assert done["SecondaryStatus"] == "MaxRuntimeExceeded"


@pytest.mark.slow
@pytest.mark.runners
def test_a_new_job_restores_the_checkpoints_of_an_earlier_one(localaws, data, preset, quick_trainer):
    sm, s3 = localaws.client("sagemaker"), localaws.client("s3")
    checkpoints = f"s3://{data['bucket']}/checkpoints/{unique('run')}"
    long_run = {"epochs": "5000", "early_stopping_patience": "5000"}
    first = unique("ckpt-a")
    sm.create_training_job(
        **job_request(
            quick_trainer,
            data,
            preset,
            first,
            hyperparameters=long_run,
            epoch_seconds=0.1,
            CheckpointConfig={"S3Uri": checkpoints},
        )
    )
    wait_for_training(sm, first, until=("Training",))
    deadline = time.monotonic() + 120
    while not s3.list_objects_v2(Bucket=data["bucket"], Prefix=checkpoints.split("/", 3)[3]).get("Contents"):
        assert time.monotonic() < deadline, "no checkpoint reached S3 while the job ran"
        time.sleep(0.5)
    sm.stop_training_job(TrainingJobName=first)
    wait_for_training(sm, first, timeout=120)

    second = unique("ckpt-b")
    sm.create_training_job(**job_request(quick_trainer, data, preset, second, CheckpointConfig={"S3Uri": checkpoints}))
    done = wait_for_training(sm, second)
    assert done["TrainingJobStatus"] == "Completed", done.get("FailureReason")
    assert any("resumed from checkpoint" in line for line in log_lines(localaws.client("logs"), second))


def test_duplicate_and_unknown_names_give_aws_errors(localaws, data, preset, quick_trainer):
    sm = localaws.client("sagemaker")
    name = unique("dup")
    sm.create_training_job(**job_request(quick_trainer, data, preset, name))
    with pytest.raises(ClientError) as error:
        sm.create_training_job(**job_request(quick_trainer, data, preset, name))
    assert error.value.response["Error"]["Code"] == "ResourceInUse"
    assert error.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400

    for call in (
        lambda: sm.describe_training_job(TrainingJobName="no-such-job"),
        lambda: sm.stop_training_job(TrainingJobName="no-such-job"),
    ):
        with pytest.raises(ClientError) as error:
            call()
        assert error.value.response["Error"]["Code"] == "ValidationException"
        assert error.value.response["Error"]["Message"] == "Requested resource not found."
    wait_for_training(sm, name)


@pytest.mark.parametrize(
    "change, member",
    [
        ({"TrainingJobName": "under_score"}, "trainingJobName"),
        (
            {"ResourceConfig": {"InstanceType": "ml.nope.xlarge", "InstanceCount": 1, "VolumeSizeInGB": 5}},
            "resourceConfig.instanceType",
        ),
        ({"RoleArn": "arn:aws:iam::12345:user/not-a-role"}, "roleArn"),
    ],
)
def test_bad_requests_are_refused_before_anything_runs(localaws_process, change, member):
    sm = localaws_process.client("sagemaker")
    request = training_request("valid-name", localaws_process.image_uri, {}, "s3://b/o", {})
    request.update(change)
    with pytest.raises(ClientError) as error:
        sm.create_training_job(**request)
    assert error.value.response["Error"]["Code"] == "ValidationException"
    assert f"at '{member}' failed to satisfy constraint" in error.value.response["Error"]["Message"]
    names = [job["TrainingJobName"] for job in sm.list_training_jobs(MaxResults=100)["TrainingJobSummaries"]]
    assert request["TrainingJobName"] not in names


def test_every_current_instance_family_is_accepted(localaws_process):
    from localaws.sagemaker.shapes import enum_of, validate_request

    types = enum_of("TrainingInstanceType")
    assert {"ml.g5.xlarge", "ml.p4d.24xlarge", "ml.trn1.32xlarge"} <= set(types)
    for instance_type in types:
        request = training_request("n", localaws_process.image_uri, {}, "s3://b/o", {})
        request["ResourceConfig"]["InstanceType"] = instance_type
        validate_request("CreateTrainingJob", request)


def test_quota_gives_resource_limit_exceeded(localaws_process):
    sm = localaws_process.client("sagemaker")
    request = training_request(unique("quota"), localaws_process.image_uri, {}, "s3://b/o", {})
    request["ResourceConfig"]["InstanceCount"] = 100
    with pytest.raises(ClientError) as error:
        sm.create_training_job(**request)
    assert error.value.response["Error"]["Code"] == "ResourceLimitExceeded"


def test_list_filters_sorts_and_paginates(localaws_process):
    sm = localaws_process.client("sagemaker")
    prefix = unique("lst")
    names = []
    for index in range(5):
        name = f"{prefix}-{index}"
        # No data: each fails fast at Downloading, which is all this test needs.
        sm.create_training_job(
            **training_request(
                name,
                localaws_process.image_uri,
                {"train": "s3://missing-bucket-x/train"},
                "s3://b/o",
                {},
                Tags=[{"Key": "suite", "Value": prefix}],
            )
        )
        names.append(name)
        time.sleep(0.02)
    for name in names:
        wait_for_training(sm, name, timeout=60)

    page = sm.list_training_jobs(NameContains=prefix, MaxResults=2, SortBy="Name", SortOrder="Descending")
    assert [job["TrainingJobName"] for job in page["TrainingJobSummaries"]] == names[::-1][:2]
    assert unknown_members("sagemaker", "ListTrainingJobs", page) == []
    seen = [job["TrainingJobName"] for job in page["TrainingJobSummaries"]]
    while "NextToken" in page:
        page = sm.list_training_jobs(
            NameContains=prefix, MaxResults=2, SortBy="Name", SortOrder="Descending", NextToken=page["NextToken"]
        )
        seen += [job["TrainingJobName"] for job in page["TrainingJobSummaries"]]
    assert seen == names[::-1]

    by_time = sm.list_training_jobs(NameContains=prefix, SortBy="CreationTime", SortOrder="Ascending")
    assert [job["TrainingJobName"] for job in by_time["TrainingJobSummaries"]] == names
    assert sm.list_training_jobs(NameContains=prefix, StatusEquals="Completed")["TrainingJobSummaries"] == []
    failed = sm.list_training_jobs(NameContains=prefix, StatusEquals="Failed")["TrainingJobSummaries"]
    assert len(failed) == 5
    paginator = sm.get_paginator("list_training_jobs")
    assert (
        sum(
            len(p["TrainingJobSummaries"])
            for p in paginator.paginate(NameContains=prefix, PaginationConfig={"PageSize": 2})
        )
        == 5
    )

    arn = sm.describe_training_job(TrainingJobName=names[0])["TrainingJobArn"]
    assert sm.list_tags(ResourceArn=arn)["Tags"] == [{"Key": "suite", "Value": prefix}]
    sm.add_tags(ResourceArn=arn, Tags=[{"Key": "owner", "Value": "tests"}])
    sm.delete_tags(ResourceArn=arn, TagKeys=["suite"])
    assert sm.list_tags(ResourceArn=arn)["Tags"] == [{"Key": "owner", "Value": "tests"}]
