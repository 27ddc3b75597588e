"""boto3 clients of localaws's own services, as a SageMaker instance's role would use them.

The engine reaches S3, CloudWatch Logs and CloudWatch through the gateway over
HTTP, exactly as a container on AWS reaches them: no back door into moto.
"""
from __future__ import annotations

import threading

import boto3
from botocore.config import Config

from localaws.settings import Settings

# Dummy credentials: the embedded moto accepts any, and real ones must never reach it.
LOCAL_CREDENTIALS = {"aws_access_key_id": "localaws", "aws_secret_access_key": "localaws"}


class Clients:
    def __init__(self, settings: Settings):
        self.settings = settings
        self._local = threading.local()  # boto3 clients are thread-safe, sessions are not: one each

    def client(self, service: str):
        cache = self._local.__dict__.setdefault("clients", {})
        if service not in cache:
            cache[service] = boto3.session.Session().client(
                service,
                endpoint_url=self.settings.endpoint_url,
                region_name=self.settings.region,
                config=Config(retries={"max_attempts": 5, "mode": "standard"}, max_pool_connections=32),
                **LOCAL_CREDENTIALS,
            )
        return cache[service]

    @property
    def s3(self):
        return self.client("s3")

    @property
    def logs(self):
        return self.client("logs")

    @property
    def cloudwatch(self):
        return self.client("cloudwatch")
