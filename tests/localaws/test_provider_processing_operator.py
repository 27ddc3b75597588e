"""The Amazon provider's own SageMakerProcessingOperator (waiting, and deferrable with its trigger run to
its event as the triggerer runs it) and SageMakerProcessingSensor against localaws, unchanged. The job
runs the processing stand-in (tests/localaws/images/processor); its outputs are read back from S3."""

from __future__ import annotations

import asyncio
import json

import pytest

from tests.conftest import unique
from tests.fixtures.images import IMAGES, image_for
from tests.localaws.test_processing_jobs import processing_request, put_numbers, s3_input, s3_output
from tests.support import localaws_connection, wait_until

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def world(request, localaws_process):
    """Airflow's aws_default connection to localaws, a bucket with the inputs, the processor's image."""
    s3 = localaws_process.client("s3")
    bucket = unique("provider")
    s3.create_bucket(Bucket=bucket)
    put_numbers(s3, bucket, {"in/a.csv": [1, 2], "in/b.csv": [40]})
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AIRFLOW_CONN_AWS_DEFAULT", localaws_connection(localaws_process.endpoint_url))
        yield {
            "bucket": bucket,
            "image": image_for(request, localaws_process, IMAGES / "processor", "processor"),
            "s3": s3,
            "sm": localaws_process.client("sagemaker"),
        }


def config(world, name: str, *arguments: str) -> dict:
    bucket = world["bucket"]
    return processing_request(
        name,
        world["image"],
        [s3_input("in", f"s3://{bucket}/in", "/opt/ml/processing/in")],
        [s3_output("out", f"s3://{bucket}/out/{name}", "/opt/ml/processing/out")],
        ["--input", "/opt/ml/processing/in", "--output", "/opt/ml/processing/out", *arguments],
        Environment={"SCALE": "2"},
    )


def assert_outputs(world, name: str) -> None:
    s3, bucket = world["s3"], world["bucket"]
    summary = json.loads(s3.get_object(Bucket=bucket, Key=f"out/{name}/algo-1.json")["Body"].read())
    assert summary["sums"] == {"a.csv": 3, "b.csv": 40} and summary["job"] == name
    assert s3.get_object(Bucket=bucket, Key=f"out/{name}/scaled/b.csv")["Body"].read() == b"80\n"


def operator(world, name: str, *arguments: str, **options):
    from airflow.providers.amazon.aws.operators.sagemaker import SageMakerProcessingOperator

    return SageMakerProcessingOperator(
        task_id=f"process-{name}",
        config=config(world, name, *arguments),
        aws_conn_id="aws_default",
        wait_for_completion=True,
        check_interval=1,
        action_if_job_exists="fail",
        **options,
    )


def test_the_stock_operator_waits_for_the_job_and_fails_with_its_reason(world):
    from airflow.providers.common.compat.sdk import AirflowException

    name = unique("operator")
    result = operator(world, name, deferrable=False).execute({})
    assert result["Processing"]["ProcessingJobStatus"] == "Completed"
    assert result["Processing"]["ExitMessage"] == "processed 2 files on algo-1"
    assert_outputs(world, name)

    failing = unique("operator")
    with pytest.raises(AirflowException, match="AlgorithmError: See job logs for more information"):
        operator(world, failing, "--fail", "bad input", deferrable=False).execute({})
    # A second job of the same name, with action_if_job_exists="fail": refused before it is created.
    with pytest.raises(AirflowException, match="already exists"):
        operator(world, name, deferrable=False).execute({})


def test_the_deferrable_operator_defers_and_its_trigger_fires_when_the_job_completes(world):
    from airflow.providers.amazon.aws.triggers.sagemaker import SageMakerTrigger
    from airflow.sdk.exceptions import TaskDeferred
    from airflow.sdk.module_loading import import_string

    name = unique("deferred")
    task = operator(world, name, "--sleep", "1", deferrable=True)
    with pytest.raises(TaskDeferred) as deferred:
        task.execute({})
    assert isinstance(deferred.value.trigger, SageMakerTrigger)
    path, kwargs = deferred.value.trigger.serialize()
    trigger = import_string(path)(**kwargs)  # as the triggerer rebuilds it

    async def first_event():
        async for event in trigger.run():
            return event.payload
        return None

    event = asyncio.run(asyncio.wait_for(first_event(), timeout=120))
    assert event == {"status": "success", "job_name": name}
    result = getattr(task, deferred.value.method_name)({}, event)
    assert result["Processing"]["ProcessingJobStatus"] == "Completed"
    assert_outputs(world, name)


def test_the_stock_sensor_pokes_until_the_job_ends(world):
    from airflow.providers.amazon.aws.sensors.sagemaker import SageMakerProcessingSensor
    from airflow.providers.common.compat.sdk import AirflowException

    sm = world["sm"]
    name, failing = unique("sensed"), unique("sensed")
    sensor = SageMakerProcessingSensor(task_id="sense", job_name=name, aws_conn_id="aws_default")
    assert sensor.hook.conn  # its connection and client made before the job starts: the first poke sees it running
    sm.create_processing_job(**config(world, name, "--sleep", "3"))
    sm.create_processing_job(**config(world, failing, "--fail", "row 2"))
    assert sensor.poke({}) is False  # still InProgress
    wait_until(lambda: sensor.poke({}), timeout=60, poll=0.5, waiting_for=f"{name} to complete")
    assert_outputs(world, name)

    sensor = SageMakerProcessingSensor(task_id="sense-failing", job_name=failing, aws_conn_id="aws_default")
    # The provider's processing sensor reads no FailureReason (it says "Unknown"): only that it failed.
    with pytest.raises(AirflowException, match="Sagemaker job failed"):
        wait_until(lambda: sensor.poke({}), timeout=60, poll=0.5, waiting_for=f"{failing} to fail")
