"""Fixtures of the localaws tests: the example's preset and its data set in S3."""
from __future__ import annotations

import pytest

from tests.conftest import unique


@pytest.fixture(scope="module")
def preset():
    from ml_pipeline.config import load_preset

    return load_preset("quick")


@pytest.fixture
def data(localaws, bucket):
    from ml_pipeline.dataset import write_channels

    channels = write_channels(localaws.client("s3"), bucket, "datasets/digits", seed=7)
    return {"bucket": bucket, **channels}


@pytest.fixture
def process_data(localaws_process):
    """The data set in a fresh bucket of the process-runner localaws, for tests that run there only."""
    from ml_pipeline.dataset import write_channels

    bucket = unique("data")
    localaws_process.client("s3").create_bucket(Bucket=bucket)
    return {"bucket": bucket, **write_channels(localaws_process.client("s3"), bucket, "datasets/digits", seed=7)}
