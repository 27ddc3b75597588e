"""Fixtures of the localaws tests: the digits example's quick preset and its data set in S3."""

from __future__ import annotations

import pytest

from tests.conftest import unique
from tests.fixtures import digits_example
from tests.fixtures.images import QUICK_TRAINER, image_for


@pytest.fixture(scope="module")
def preset():
    return digits_example.preset("quick")


@pytest.fixture
def data(localaws, bucket):
    channels = digits_example.write_channels(localaws.client("s3"), bucket, "datasets/digits", seed=7)
    return {"bucket": bucket, **channels}


@pytest.fixture
def process_data(localaws_process):
    """The data set in a fresh bucket of the process-runner localaws, for tests that run there only."""
    bucket = unique("data")
    localaws_process.client("s3").create_bucket(Bucket=bucket)
    return {
        "bucket": bucket,
        **digits_example.write_channels(localaws_process.client("s3"), bucket, "datasets/digits", seed=7),
    }


@pytest.fixture
def quick_trainer(request, localaws):
    """The digits trainer's stand-in (tests/localaws/images/quick-trainer) as an image of ``localaws``:
    the digits metrics its hyperparameters imply, in a fraction of a second."""
    return image_for(request, localaws, QUICK_TRAINER, "quick-trainer")
