"""The provider's hooks on the project's session factory: one botocore loader per process, nothing else changed."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def shared_factory(aws_default, monkeypatch):
    """The provider's hooks making their sessions with ml_pipeline.aws_sessions' factory (as
    ``AIRFLOW__AWS__SESSION_FACTORY`` makes them in every Airflow process of the project)."""
    from airflow.providers.amazon.aws.hooks import base_aws

    from ml_pipeline.aws_sessions import SharedLoaderSessionFactory

    monkeypatch.setattr(base_aws, "SessionFactory", SharedLoaderSessionFactory)


def test_the_configured_factory_is_the_one_the_provider_resolves(monkeypatch):
    from airflow.providers.amazon.aws.hooks.base_aws import resolve_session_factory

    from ml_pipeline.aws_sessions import SharedLoaderSessionFactory
    from scripts.run_pipeline import airflow_env

    setting = airflow_env("http://127.0.0.1:9", Path("/nonexistent"))["AIRFLOW__AWS__SESSION_FACTORY"]
    monkeypatch.setenv("AIRFLOW__AWS__SESSION_FACTORY", setting)
    assert resolve_session_factory() is SharedLoaderSessionFactory


def test_hooks_share_one_loader_and_still_reach_the_connections_endpoint_with_its_credentials(
    shared_factory, localaws_process
):
    from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook
    from airflow.providers.amazon.aws.hooks.sagemaker import SageMakerHook

    from ml_pipeline import aws_sessions

    hook = AwsBaseHook(aws_conn_id="aws_default", client_type="sts")
    first = hook.get_client_type()
    second = SageMakerHook(aws_conn_id="aws_default").conn
    loaders = {id(client._loader) for client in (first, second)}
    assert loaders == {id(aws_sessions._LOADER)}
    # Real requests, to the connection's endpoint (localaws), signed with its keys.
    assert first.meta.endpoint_url == localaws_process.endpoint_url
    assert first.get_caller_identity()["Account"] == "123456789012"
    assert "TrainingJobSummaries" in second.list_training_jobs(MaxResults=1)
    assert hook.get_session().get_credentials().access_key == "testing"  # the connection's login


def test_the_loaders_search_paths_do_not_grow_with_the_sessions(shared_factory):
    from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook

    from ml_pipeline import aws_sessions

    AwsBaseHook(aws_conn_id="aws_default", client_type="s3").get_client_type()
    before = list(aws_sessions._LOADER.search_paths)
    for _ in range(5):
        AwsBaseHook(aws_conn_id="aws_default", client_type="s3").get_client_type()
    assert aws_sessions._LOADER.search_paths == before
    assert len(before) == len(set(before))


def test_a_preloaded_model_is_parsed_once_for_every_later_session(shared_factory):
    from ml_pipeline import aws_sessions

    aws_sessions.preload(("ec2",))
    loads = []
    file_loader = aws_sessions._LOADER.file_loader
    original = file_loader.load_file

    def counted(path):
        loads.append(path)
        return original(path)

    file_loader.load_file = counted
    try:
        from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook

        AwsBaseHook(aws_conn_id="aws_default", client_type="ec2").get_client_type()
    finally:
        del file_loader.load_file
    assert not [path for path in loads if "/ec2/" in path or path.endswith("endpoints")], loads
