"""The provider's session factory (``[aws] session_factory``), its sessions sharing one botocore loader.

Every hook makes its own boto3 session, and each session parses botocore's JSON (the endpoints file, then
each service's model: EC2's and SageMaker's take a few hundred milliseconds of CPU each) before its first
client, so a task that makes four clients parsed them four times. Sessions made here share one loader, the
parsed files with it, as the provider already does for its deferrable (aiobotocore) sessions; a process
that loaded a model before it forks (a warmed worker) hands it to its children.

Configured by ``AIRFLOW__AWS__SESSION_FACTORY=ml_pipeline.aws_sessions.SharedLoaderSessionFactory``
(``scripts/run_pipeline.airflow_env``, ``docker-compose.yaml``, ``deploy/helm/values.yaml``). Credentials
and everything else are the base factory's: only the loader differs. Sessions that assume a role are
the base factory's as they are.
"""

from __future__ import annotations

import threading
from typing import Any

import boto3
import botocore.loaders
import botocore.session

_LOADER = botocore.loaders.Loader()
_LOCK = threading.Lock()


def shared_session(**session_kwargs: Any) -> boto3.session.Session:
    """A boto3 session on the process's one loader."""
    core = botocore.session.get_session()
    core.register_component("data_loader", _LOADER)
    with _LOCK:
        session = boto3.session.Session(botocore_session=core, **session_kwargs)
        # boto3 adds its resource models' folder to its session's loader: once is enough for them all.
        paths = _LOADER.search_paths
        paths[:] = list(dict.fromkeys(paths))
    return session


def __getattr__(name: str) -> Any:
    """``SharedLoaderSessionFactory``, the class, made on first use: the provider's base_aws imports this
    module half-way through its own import (to resolve ``[aws] session_factory``), so a class statement
    here importing base_aws would fail whenever this module was imported first."""
    if name != "SharedLoaderSessionFactory":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from airflow.providers.amazon.aws.hooks.base_aws import BaseSessionFactory  # noqa: PLC0415

    class SharedLoaderSessionFactory(BaseSessionFactory):
        def _create_basic_session(self, session_kwargs: dict[str, Any]) -> boto3.session.Session:
            return shared_session(**session_kwargs)

    SharedLoaderSessionFactory.__module__ = __name__
    globals()[name] = SharedLoaderSessionFactory
    return SharedLoaderSessionFactory


#: The services the DAGs' tasks call.
SERVICES = (
    "sagemaker",
    "sagemaker-runtime",
    "s3",
    "ec2",
    "iam",
    "ssm",
    "sts",
    "application-autoscaling",
    "cloudwatch",
    "logs",
    "ecr",
    "sns",
)


def preload(services: tuple[str, ...] = SERVICES) -> None:
    """Parse these services' models into the shared loader now, in a process about to fork its tasks (no
    request is sent: a client needs no credentials until it signs one)."""
    session = shared_session(region_name="us-east-1")
    for service in services:
        session.client(service, endpoint_url="http://127.0.0.1:9")
