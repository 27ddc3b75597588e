"""Run-keyed names: valid for SageMaker, stable for one run, distinct across runs."""

from __future__ import annotations

from datetime import datetime, timezone

from tests.infra.support import plan


def test_an_endpoint_the_run_deletes_is_its_own_and_a_kept_one_is_the_stable_one():
    first, second = plan(), plan()
    assert first["names"]["endpoint"] == f"plain-{first['key']}"  # the experiment's name by default
    assert first["names"]["endpoint"] != second["names"]["endpoint"]  # concurrent runs never share one
    assert plan(keep_endpoint=True)["names"]["endpoint"] == "plain"


def test_a_long_endpoint_name_is_shortened_to_sagemakers_limit():
    from ml_pipeline.naming import MAX_NAME, endpoint_name, run_key

    key = run_key("scheduled__2026-02-08", datetime(2026, 2, 8, tzinfo=timezone.utc), "plain")
    name = endpoint_name("a" * 62 + "-b", key, keep=False)
    assert len(name) == MAX_NAME and name.endswith(f"-{key}") and "--" not in name
