"""The Amazon provider's own SageMakerTransformOperator and SageMakerTransformSensor against localaws:
the operator creating the model too (``config["Model"]``) and waiting, deferrable with its trigger run
to its event as the triggerer runs it, and the sensor on a completed and on a failed job. The model is
tests/localaws/images/line-scorer; the outputs are read back from S3 and checked line by line."""

from __future__ import annotations

import asyncio

import pytest

from tests.conftest import unique
from tests.fixtures.images import LINE_SCORER, image_for
from tests.localaws.test_transform_jobs import model_archive, read_lines, score, transform_request
from tests.support import ROLE_ARN, localaws_connection

pytestmark = pytest.mark.timeout(300)

ROWS = [(1, 2, 3), (0, 0, 1), (4, 1, 0), (2, 2, 2)]


class TaskInstance:
    """What an operator's context gives it of Airflow's task instance: the XComs it pushes, kept here."""

    def __init__(self):
        self.pushed: dict[str, object] = {}

    def xcom_push(self, key: str, value: object) -> None:
        self.pushed[key] = value


@pytest.fixture(scope="module")
def world(request, localaws_process):
    """aws_default pointing at localaws, a bucket with the model data and input, the scorer's image."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AIRFLOW_CONN_AWS_DEFAULT", localaws_connection(localaws_process.endpoint_url))
        s3 = localaws_process.client("s3")
        bucket = unique("operator")
        s3.create_bucket(Bucket=bucket)
        s3.put_object(Bucket=bucket, Key="model/model.tar.gz", Body=model_archive())
        s3.put_object(Bucket=bucket, Key="in/rows.csv", Body="".join(",".join(map(str, r)) + "\n" for r in ROWS))
        s3.put_object(Bucket=bucket, Key="bad/rows.csv", Body="1,2,3\nbad,0,0\n")
        image = image_for(request, localaws_process, LINE_SCORER, "line-scorer")
        yield {"bucket": bucket, "image": image, "s3": s3, "sm": localaws_process.client("sagemaker")}


def model_config(world, name: str, env: dict | None = None) -> dict:
    return {
        "ModelName": name,
        "ExecutionRoleArn": ROLE_ARN,
        "PrimaryContainer": {
            "Image": world["image"],
            "ModelDataUrl": f"s3://{world['bucket']}/model/model.tar.gz",
            "Environment": env or {},
        },
    }


def expected() -> list[str]:
    return [f"{score(row):.6g}" for row in ROWS]


def test_the_transform_operator_creates_the_model_and_waits_for_the_job(world):
    from airflow.providers.amazon.aws.operators.sagemaker import SageMakerTransformOperator

    bucket, model, name = world["bucket"], unique("op-model"), unique("op-job")
    transform = transform_request(name, model, f"s3://{bucket}/in/", f"s3://{bucket}/waited/")
    operator = SageMakerTransformOperator(
        task_id="transform",
        config={"Model": model_config(world, model), "Transform": transform},
        aws_conn_id="aws_default",
        wait_for_completion=True,
        check_interval=1,
        action_if_job_exists="fail",
        deferrable=False,
    )
    ti = TaskInstance()
    result = operator.execute({"ti": ti})
    assert result["Transform"]["TransformJobStatus"] == "Completed"
    assert result["Transform"]["TransformJobName"] == name
    assert result["Model"]["ModelName"] == model
    assert result["Model"]["PrimaryContainer"]["Image"] == world["image"]
    assert ti.pushed["sagemaker_transform_job_details"]["job_name"] == name  # the console link the operator keeps
    assert read_lines(world["s3"], bucket, "waited/rows.csv.out") == expected()


def test_the_deferrable_operator_and_the_sensor_on_a_completed_and_a_failed_job(world):
    from airflow.exceptions import AirflowException
    from airflow.providers.amazon.aws.operators.sagemaker import SageMakerTransformOperator
    from airflow.providers.amazon.aws.sensors.sagemaker import SageMakerTransformSensor
    from airflow.sdk.exceptions import TaskDeferred
    from airflow.sdk.module_loading import import_string

    sm, bucket = world["sm"], world["bucket"]
    good, failing = unique("def-model"), unique("def-failing")
    sm.create_model(**model_config(world, good))
    sm.create_model(**model_config(world, failing, {"FAIL_ON": "bad"}))
    jobs = {
        "good": transform_request(unique("deferred"), good, f"s3://{bucket}/in/", f"s3://{bucket}/deferred/"),
        "failing": transform_request(
            unique("deferred-fails"),
            failing,
            f"s3://{bucket}/bad/",
            f"s3://{bucket}/failed/",
            ModelClientConfig={"InvocationsMaxRetries": 0},
        ),
    }
    events, contexts, operators = {}, {}, {}
    triggers = {}
    for label, config in jobs.items():
        operator = SageMakerTransformOperator(
            task_id=f"transform_{label}",
            config=config,
            aws_conn_id="aws_default",
            check_interval=1,
            deferrable=True,
        )
        contexts[label] = {"ti": TaskInstance()}
        with pytest.raises(TaskDeferred) as deferred:
            operator.execute(contexts[label])
        operators[label] = operator
        path, kwargs = deferred.value.trigger.serialize()
        triggers[label] = import_string(path)(**kwargs)  # as the triggerer rebuilds it

    async def first_events():
        async def first(trigger):
            async for event in trigger.run():
                return event.payload
            return None

        return await asyncio.gather(*(first(trigger) for trigger in triggers.values()))

    events = dict(zip(triggers, asyncio.run(asyncio.wait_for(first_events(), timeout=180)), strict=True))
    assert events["good"] == {"status": "success", "job_name": jobs["good"]["TransformJobName"]}
    result = operators["good"].execute_complete(contexts["good"], events["good"])
    assert result["Transform"]["TransformJobStatus"] == "Completed"
    assert read_lines(world["s3"], bucket, "deferred/rows.csv.out") == expected()

    reason = sm.describe_transform_job(TransformJobName=jobs["failing"]["TransformJobName"])["FailureReason"]
    assert reason.startswith("AlgorithmError: See job logs for more information")
    assert events["failing"]["status"] == "failed" and events["failing"]["message"] == reason
    with pytest.raises(RuntimeError, match="Error while running transform job"):
        operators["failing"].execute_complete(contexts["failing"], events["failing"])

    # The sensor, on both: done for the completed one, the job's reason for the failed one.
    sensor = SageMakerTransformSensor(
        task_id="sense", job_name=jobs["good"]["TransformJobName"], aws_conn_id="aws_default"
    )
    assert sensor.poke({}) is True
    failed = SageMakerTransformSensor(
        task_id="sense_failed", job_name=jobs["failing"]["TransformJobName"], aws_conn_id="aws_default"
    )
    with pytest.raises(AirflowException, match="AlgorithmError: See job logs"):
        failed.poke({})
