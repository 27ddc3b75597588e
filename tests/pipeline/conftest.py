import uuid

import pytest


@pytest.fixture
def s3_bucket(localaws_process):
    """(s3 client, a bucket of this test's own) on the session's localaws."""
    s3 = localaws_process.client("s3")
    name = f"steps-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    return s3, name
