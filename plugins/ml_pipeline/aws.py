"""The AWS clients of one task, all from its one Airflow connection.

    client("s3")   a boto3 client, made by the provider's own ``AwsBaseHook.get_client_type`` (the
                   connection's endpoint for that service, its botocore config, the provider's user agent)
    hook()         the task's hook (its ``conn_config`` says where the connection points)
    object_exists(s3, bucket, key)   whether an S3 object is there (any other error raised)
    is_missing(error)                whether an AWS error says the resource does not exist

The connection is read once per task process, so the provider logs where its credentials came from once,
not once per client; each client is made once. The DAGs pass ``client`` to the plugin's functions, which
take ``client(service)`` wherever they need more than one service.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable
from typing import Any

from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook

AWS_CONN_ID = "aws_default"
#: A boto3 client. botocore makes its methods from the service's model when the client is created, so to a
#: type checker they are Any.
Client = Any
#: ``client(service) -> Client``: the DAG's ``client`` below, ``LocalAWSProcess.client`` in tests.
Clients = Callable[[str], Client]


@functools.cache
def hook(aws_conn_id: str = AWS_CONN_ID) -> AwsBaseHook:
    return AwsBaseHook(aws_conn_id=aws_conn_id)


@functools.cache
def client(service: str, aws_conn_id: str = AWS_CONN_ID) -> Client:
    base = hook(aws_conn_id)
    base.conn_config  # noqa: B018 - read the connection once: the copies below share it
    # A hook is made for one client type: a copy of the task's hook, for this service, shares its connection.
    service_hook = copy.copy(base)
    service_hook.client_type = service
    return service_hook.get_client_type(region_name=base.region_name)


#: Error codes meaning "no such resource", by service: SageMaker says ValidationException ("Could not
#: find ...", "Requested resource not found"), the others have their own.
_MISSING = (
    "ValidationException",
    "ResourceNotFound",
    "ObjectNotFoundException",
    "NoSuchBucket",
    "NoSuchKey",
    "404",
    "NotFound",
)


def is_missing(error: BaseException) -> bool:
    """Whether ``error`` (a botocore ClientError, or anything else: False) says the resource does not exist."""
    response = getattr(error, "response", None) or {}
    code = response.get("Error", {}).get("Code", "")
    message = response.get("Error", {}).get("Message", "")
    return code in _MISSING and (
        code != "ValidationException"
        or "not found" in message.lower()
        or "could not find" in message.lower()
        or "does not exist" in message.lower()
    )


def object_exists(s3: Client, bucket: str, key: str) -> bool:
    try:
        s3.head_object(Bucket=bucket, Key=key)
        return True
    except s3.exceptions.ClientError as error:
        if error.response["Error"]["Code"] in ("404", "NoSuchKey", "NotFound"):
            return False
        raise
