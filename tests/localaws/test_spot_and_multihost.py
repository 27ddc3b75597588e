"""Managed spot training with an injected interruption (the digits trainer's stand-in,
tests/localaws/images/quick-trainer, under both runners: the restart is the runner's), a spot job out of
time, and multi-host training of the real network under both runners."""

from __future__ import annotations

import time

import pytest

from localaws.client import interrupt_spot_training
from tests.conftest import unique
from tests.localaws.test_training_jobs import job_request, log_lines
from tests.support import wait_for_training

pytestmark = pytest.mark.timeout(900)


@pytest.mark.slow
@pytest.mark.runners
def test_spot_interruption_resumes_from_the_checkpoint(localaws, data, preset, quick_trainer):
    sm = localaws.client("sagemaker")
    name = unique("spot")
    request = job_request(
        quick_trainer,
        data,
        preset,
        name,
        epoch_seconds=0.1,
        hyperparameters={"epochs": "60", "early_stopping_patience": "60"},
        EnableManagedSpotTraining=True,
        CheckpointConfig={"S3Uri": f"s3://{data['bucket']}/checkpoints/{name}"},
    )
    request["StoppingCondition"]["MaxWaitTimeInSeconds"] = 900
    sm.create_training_job(**request)
    wait_for_training(sm, name, until=("Training",))
    deadline = time.monotonic() + 120
    while not any(line.startswith("epoch=3 ") for line in log_lines(localaws.client("logs"), name)):
        assert time.monotonic() < deadline
        time.sleep(0.3)
    interrupt_spot_training(localaws.endpoint_url, name)
    done = wait_for_training(sm, name)

    assert done["TrainingJobStatus"] == "Completed", done.get("FailureReason")
    statuses = [t["Status"] for t in done["SecondaryStatusTransitions"]]
    assert statuses == [
        "Starting",
        "Downloading",
        "Training",
        "Interrupted",
        "Starting",
        "Downloading",
        "Training",
        "Uploading",
        "Completed",
    ]
    lines = log_lines(localaws.client("logs"), name)
    assert any("resumed from checkpoint" in line for line in lines)
    metrics = {m["MetricName"]: m["Value"] for m in done["FinalMetricDataList"]}
    assert metrics["validation:accuracy"] >= 0.9
    wall = (done["TrainingEndTime"] - done["CreationTime"]).total_seconds()
    assert done["BillableTimeInSeconds"] < wall
    assert done["BillableTimeInSeconds"] <= done["TrainingTimeInSeconds"]


@pytest.mark.slow
def test_spot_job_that_cannot_finish_in_time_ends_max_wait_time_exceeded(localaws, data, preset, quick_trainer):
    sm = localaws.client("sagemaker")
    name = unique("spotwait")
    request = job_request(
        quick_trainer,
        data,
        preset,
        name,
        max_runtime=8,
        epoch_seconds=0.1,
        hyperparameters={"epochs": "5000", "early_stopping_patience": "5000"},
        EnableManagedSpotTraining=True,
    )
    # As long as the runtime (AWS allows equal): the spot capacity wait after the interruption (1 s in the
    # tests) makes the wall clock reach it about a second before the job has trained 8 s.
    request["StoppingCondition"]["MaxWaitTimeInSeconds"] = 8
    sm.create_training_job(**request)
    wait_for_training(sm, name, until=("Training",))
    interrupt_spot_training(localaws.endpoint_url, name)
    done = wait_for_training(sm, name, timeout=120)
    assert done["TrainingJobStatus"] == "Stopped"
    assert done["SecondaryStatus"] == "MaxWaitTimeExceeded"


def test_interrupting_an_on_demand_job_is_refused(localaws_process):
    with pytest.raises(RuntimeError, match="not found|does not use managed spot"):
        interrupt_spot_training(localaws_process.endpoint_url, "no-such-job")


@pytest.mark.e2e
@pytest.mark.runners
def test_two_hosts_train_with_torch_distributed_on_sharded_data(localaws, data, preset, tmp_path):
    sm = localaws.client("sagemaker")
    name = unique("multi")
    request = job_request(localaws.image_uri, data, preset, name, hyperparameters={"epochs": "8"})
    request["ResourceConfig"]["InstanceCount"] = 2
    request["InputDataConfig"][0]["DataSource"]["S3DataSource"]["S3DataDistributionType"] = "ShardedByS3Key"
    sm.create_training_job(**request)
    done = wait_for_training(sm, name)
    assert done["TrainingJobStatus"] == "Completed", done.get("FailureReason")

    logs = localaws.client("logs")
    streams = logs.describe_log_streams(logGroupName="/aws/sagemaker/TrainingJobs", logStreamNamePrefix=name + "/")[
        "logStreams"
    ]
    hosts = sorted(s["logStreamName"].split("/")[1].rsplit("-", 1)[0] for s in streams)
    assert hosts == ["algo-1", "algo-2"]
    lines = log_lines(logs, name)
    assert any("rank 0 of 2" in line for line in lines)
    assert any("rank 1 of 2" in line for line in lines)
    # 4 training shards: ShardedByS3Key gives each host 2 of them; validation is replicated.
    assert sum("train" in line and "from 2 file(s)" in line for line in lines) == 2
    metrics = {m["MetricName"]: m["Value"] for m in done["FinalMetricDataList"]}
    assert metrics["validation:accuracy"] >= 0.9
