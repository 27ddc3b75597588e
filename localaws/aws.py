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
        # One client per service for every thread: boto3 clients are thread-safe, and making one
        # costs 0.1-0.6 s of CPU (its service model loaded), which a job's or an endpoint's
        # thread of its own would pay again at each start. Sessions are not thread-safe: one,
        # used under the lock.
        self._session = boto3.session.Session()
        self._clients: dict[str, object] = {}
        self._lock = threading.Lock()

    def client(self, service: str):
        found = self._clients.get(service)
        if found is not None:
            return found
        with self._lock:
            if service not in self._clients:
                self._clients[service] = self._session.client(
                    service,
                    endpoint_url=self.settings.endpoint_url,
                    region_name=self.settings.region,
                    config=Config(retries={"max_attempts": 5, "mode": "standard"}, max_pool_connections=32),
                    **LOCAL_CREDENTIALS,
                )
            return self._clients[service]

    @property
    def s3(self):
        return self.client("s3")

    @property
    def logs(self):
        return self.client("logs")

    @property
    def cloudwatch(self):
        return self.client("cloudwatch")
