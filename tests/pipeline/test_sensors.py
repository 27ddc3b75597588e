"""The DAG's SageMaker sensors against localaws: what no longer exists fails the task at once, finally."""

from __future__ import annotations

import pytest

from tests.conftest import unique


@pytest.mark.parametrize(
    ("sensor", "field", "kind"),
    [
        ("DeferrableTrainingSensor", "job_name", "training job"),
        ("DeferrableTuningSensor", "job_name", "tuning job"),
        ("DeferrableProcessingSensor", "job_name", "processing job"),
        ("DeferrableTransformSensor", "job_name", "transform job"),
        ("DeferrableEndpointSensor", "endpoint_name", "endpoint"),
    ],
)
def test_a_job_that_does_not_exist_fails_the_sensor_finally_naming_it(aws_default, sensor, field, kind):
    """A deleted job, or one a restarted localaws forgot: retrying the describe cannot bring it back."""
    from airflow.sdk.exceptions import AirflowFailException

    from ml_pipeline.sensors import sagemaker

    name = unique("gone")
    waiting = getattr(sagemaker, sensor)(task_id="wait", aws_conn_id="aws_default", **{field: name})
    with pytest.raises(AirflowFailException) as failed:
        waiting.execute({})
    assert str(failed.value).startswith(f"{kind} {name} does not exist ("), str(failed.value)
