"""localaws's own admin calls, for tools and tests: nothing here is part of AWS's API.

Kept free of the engine's imports so an Airflow task or a script can use it cheaply.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from pathlib import Path


def _signed(url: str, data: bytes, headers: dict) -> dict:
    """``headers`` with a SigV4 signature by the environment's AWS credentials, when it has some: a
    localaws bound beyond loopback refuses requests with none (see localaws/unsigned.py)."""
    try:  # botocore is optional here: without it, requests go unsigned
        from botocore.auth import SigV4Auth  # noqa: PLC0415
        from botocore.awsrequest import AWSRequest  # noqa: PLC0415
        from botocore.credentials import EnvProvider  # noqa: PLC0415
    except ImportError:
        return headers
    credentials = EnvProvider().load()  # the environment only: no slow look-up of instance metadata
    if credentials is None:
        return headers
    request = AWSRequest(method="POST", url=url, data=data, headers=headers)
    region = os.environ.get("AWS_DEFAULT_REGION") or os.environ.get("AWS_REGION") or "us-east-1"
    SigV4Auth(credentials, "localaws", region).add_auth(request)
    return dict(request.headers.items())


def _post(endpoint_url: str, path: str, body: dict | None = None, timeout: float = 120) -> dict:
    url = endpoint_url.rstrip("/") + path
    data = json.dumps(body or {}).encode()
    request = urllib.request.Request(
        url, data=data, headers=_signed(url, data, {"Content-Type": "application/json"}), method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as error:
        raise RuntimeError(f"localaws refused {path}: {error.read().decode(errors='replace')}") from None


def interrupt_spot_training(endpoint_url: str, job_name: str) -> dict:
    """Reclaim a managed spot training job's instances, as AWS may at any time (tests and demos)."""
    return _post(endpoint_url, f"/_localaws/training-jobs/{job_name}/spot-interruption")


def register_image(endpoint_url: str, image_uri: str, context: str | Path) -> dict:
    """Register a build context under an image URI, for the process runner (no Docker engine)."""
    return _post(endpoint_url, "/_localaws/images", {"ImageUri": image_uri, "Context": str(Path(context).resolve())})
