"""The smoke test of a deployed endpoint: the experiment's own samples, through InvokeEndpoint.

``deploy.smoke`` of the experiment: ``samples`` (a file of the experiment, sent as one body),
``content_type`` and ``accept``, and optionally ``check`` (``module:function`` in source_dir), called as
``check(samples: bytes, response: bytes, accept: str) -> dict | None``: it raises to fail the test, and
the dict it returns (figures such as accuracy) goes into the result, and so into the run's summary.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING

from ml_pipeline import code

if TYPE_CHECKING:
    from ml_pipeline.aws import Client
    from ml_pipeline.plan import Plan

#: How much of the endpoint's answer the result keeps, for the summary.
PREVIEW_BYTES = 200


class SmokeTestFailed(RuntimeError):
    """The endpoint answered, but not as the experiment expects."""


def run(runtime: Client, plan: Plan) -> dict:
    experiment = plan["experiment"]
    where = f"experiments/{experiment['name']}/experiment.yaml"
    smoke = (experiment.get("deploy") or {}).get("smoke")
    if not smoke or not smoke.get("samples"):
        raise ValueError(f"{where}: deploy.smoke.samples: no samples to send to the endpoint")
    path = code.inside(experiment["folder"], smoke["samples"], f"{where}: deploy.smoke.samples")
    if not path.is_file():
        raise ValueError(f"{where}: deploy.smoke.samples: {smoke['samples']} is not a file of the experiment")
    samples = path.read_bytes()
    if not samples:
        raise ValueError(f"{where}: deploy.smoke.samples: {smoke['samples']} is empty")
    request = {"EndpointName": plan["names"]["endpoint"], "Body": samples}
    if smoke.get("content_type"):
        request["ContentType"] = smoke["content_type"]
    if smoke.get("accept"):
        request["Accept"] = smoke["accept"]
    started = time.monotonic()
    response = runtime.invoke_endpoint(**request)  # a non-2xx answer raises (ModelError, ...)
    body = response["Body"].read()
    latency = time.monotonic() - started
    status = response["ResponseMetadata"]["HTTPStatusCode"]
    result = {
        "samples": smoke["samples"],
        "samples_bytes": len(samples),
        "content_type": smoke.get("content_type"),
        "accept": smoke.get("accept"),
        "response_content_type": response.get("ContentType"),
        "response_bytes": len(body),
        "response_preview": body[:PREVIEW_BYTES].decode("utf-8", errors="replace"),
        "latency_seconds": round(latency, 3),
        "variant": response.get("InvokedProductionVariant"),
        "check": None,
    }
    if status != 200:
        raise SmokeTestFailed(f"Smoke test failed: the endpoint answered {status} ({result})")
    if not body:
        raise SmokeTestFailed(f"Smoke test failed: the endpoint answered an empty body ({result})")
    if smoke.get("check"):
        try:
            figures = code.call(experiment, smoke["check"], samples, body, smoke.get("accept"))
        except Exception as error:  # noqa: BLE001 - whatever the check raises fails the test, with its message
            raise SmokeTestFailed(
                f"Smoke test failed: {smoke['check']} refused the answer: {type(error).__name__}: {error}"
            ) from error
        if figures is not None and not isinstance(figures, dict):
            raise SmokeTestFailed(
                f"Smoke test failed: {smoke['check']} returned {type(figures).__name__}, not a dict or None"
            )
        try:  # it travels in XCom and the summary
            json.dumps(figures, allow_nan=False)
        except (TypeError, ValueError) as error:
            raise SmokeTestFailed(
                f"Smoke test failed: {smoke['check']} returned what JSON cannot carry: {error}"
            ) from None
        result["check"] = figures
    return result
