"""localaws's own admin calls, for tools and tests: nothing here is part of AWS's API.

Kept free of the engine's imports so an Airflow task or a script can use it cheaply.
"""
from __future__ import annotations

import json
from pathlib import Path


def _post(endpoint_url: str, path: str, body: dict | None = None, timeout: float = 120) -> dict:
    import urllib.error
    import urllib.request

    request = urllib.request.Request(
        endpoint_url.rstrip("/") + path,
        data=json.dumps(body or {}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
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
