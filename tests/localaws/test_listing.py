"""The List* calls' filters, sorting and pagination in-process (localaws/sagemaker/listing.py). The List*
calls through localaws over HTTP: test_training_jobs.py, test_tuning.py, test_model_registry.py."""

from __future__ import annotations

import pytest

from localaws.sagemaker.errors import ValidationError
from localaws.sagemaker.listing import page

ITEMS = [
    {
        "Name": f"job-{n}",
        "Status": "Completed" if n % 2 else "Failed",
        "CreationTime": 100.0 + n,
        "LastModifiedTime": 200.0 - n,
    }
    for n in range(7)
]
SORT_KEYS = {"Name": "Name", "CreationTime": "CreationTime", "Status": "Status"}


def listed(**params) -> tuple[list[str], str | None]:
    chunk, token = page(ITEMS, params, name_key="Name", status_key="Status", sort_keys=SORT_KEYS)
    return [item["Name"] for item in chunk], token


def test_filters_by_name_status_and_times():
    assert listed(NameContains="JOB-3")[0] == ["job-3"]  # case-insensitive, as SageMaker's
    assert listed(StatusEquals="Failed")[0] == ["job-0", "job-2", "job-4", "job-6"]
    assert listed(CreationTimeAfter=102.0, CreationTimeBefore=105.0)[0] == ["job-3", "job-4"]  # both exclusive
    assert listed(LastModifiedTimeBefore=196.0)[0] == ["job-5", "job-6"]
    assert listed(CreationTimeAfter="1970-01-01T00:01:45Z")[0] == ["job-6"]  # ISO 8601 as well as epochs


def test_sorts_by_the_named_key_then_name():
    assert listed()[0] == [f"job-{n}" for n in range(7)]  # CreationTime, Ascending by default
    assert listed(SortBy="Name", SortOrder="Descending")[0] == [f"job-{n}" for n in reversed(range(7))]
    assert listed(SortBy="Status")[0] == ["job-1", "job-3", "job-5", "job-0", "job-2", "job-4", "job-6"]
    assert listed(SortBy="NoSuchKey")[0] == listed()[0]


def test_pages_follow_their_token_and_end_without_one():
    seen, token = listed(MaxResults=3)
    pages = 1
    while token:
        more, token = listed(MaxResults=3, NextToken=token)
        seen += more
        pages += 1
    assert (seen, pages) == ([f"job-{n}" for n in range(7)], 3)
    assert listed(MaxResults=7) == ([f"job-{n}" for n in range(7)], None)
    assert (
        len(listed()[0]) == 7
        and len(page(ITEMS * 2, {}, name_key="Name", status_key=None, sort_keys=SORT_KEYS)[0]) == 10
    )  # 10 by default


def test_a_token_of_other_filters_or_garbage_is_a_validation_error():
    _, token = listed(MaxResults=2, StatusEquals="Failed")
    with pytest.raises(ValidationError, match="does not match"):
        listed(MaxResults=2, StatusEquals="Completed", NextToken=token)
    with pytest.raises(ValidationError, match="Invalid pagination token"):
        listed(NextToken="not-a-token")
    assert listed(MaxResults=5, StatusEquals="Failed", NextToken=token)[0] == ["job-4", "job-6"]
