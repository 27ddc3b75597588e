import uuid

import pytest

from tests.support import localaws_connection


@pytest.fixture
def s3_bucket(localaws_process):
    """(s3 client, a bucket of this test's own) on the session's localaws."""
    s3 = localaws_process.client("s3")
    name = f"steps-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    return s3, name


@pytest.fixture
def aws_default(localaws_process, monkeypatch):
    """Airflow's aws_default connection, pointed at the session's localaws."""
    monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", localaws_connection(localaws_process.endpoint_url))


@pytest.fixture
def hook(aws_default):
    """The provider's SageMakerHook on aws_default."""
    from airflow.providers.amazon.aws.hooks.sagemaker import SageMakerHook

    return SageMakerHook(aws_conn_id="aws_default")
