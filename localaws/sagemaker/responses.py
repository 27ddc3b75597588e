"""SageMaker's wire protocol: JSON 1.1 requests named by ``X-Amz-Target`` <-> the backend.

Only this module knows about HTTP; ``models.py`` knows only dicts shaped like
botocore's service model.
"""
from __future__ import annotations

import json
import logging
import math

from localaws import bodies
from localaws.sagemaker.errors import RequestTooLarge, SageMakerError, SerializationError, UnknownOperation
from localaws.sagemaker.shapes import validate_request

log = logging.getLogger(__name__)

JSON_CONTENT_TYPE = "application/x-amz-json-1.1"
TARGET_PREFIX = "SageMaker."


def _snake(operation: str) -> str:
    out = []
    for index, char in enumerate(operation):
        if char.isupper() and index:
            out.append("_")
        out.append(char.lower())
    return "".join(out)


class SageMakerResponses:
    """Dispatches each operation to the backend that declares it in its ``operations``."""

    def __init__(self, *backends):
        self.handlers = {operation: backend for backend in backends for operation in backend.operations}

    def handle(self, target: str, environ: dict) -> tuple[int, dict, bytes]:
        """(status, headers, body) of one request; its body is read here (see ``bodies``)."""
        operation = target[len(TARGET_PREFIX) :] if target.startswith(TARGET_PREFIX) else target
        try:
            backend = self.handlers.get(operation)
            if backend is None:
                raise UnknownOperation(f"localaws does not implement SageMaker {operation}.")
            params = read_params(environ)
            # Every request is read into its operation's shapes and checked before any handler sees
            # it: a value of the wrong JSON type is the client's error (400), never a crash of ours.
            validate_request(operation, params)
            result = getattr(backend, _snake(operation))(params)
            return 200, {"Content-Type": JSON_CONTENT_TYPE}, json.dumps(result, default=_json_default).encode()
        except SageMakerError as error:
            return error_response(error)
        except Exception as error:  # noqa: BLE001 - answer as AWS does, never drop the connection
            log.exception("SageMaker %s failed", operation)
            return 500, {"Content-Type": JSON_CONTENT_TYPE, "x-amzn-ErrorType": "InternalFailure"}, json.dumps(
                {"__type": "InternalFailure", "message": f"{type(error).__name__}: {error}"}
            ).encode()


def read_params(environ: dict):
    """The request's JSON (size-limited, chunked or not, no NaN or Infinity), as AWS reads it."""
    try:
        body = bodies.read(environ, bodies.MAX_JSON_BODY)
    except bodies.BodyTooLarge as error:
        raise RequestTooLarge(str(error)) from None
    except bodies.MalformedBody as error:
        raise SerializationError(str(error)) from None
    try:
        return bodies.loads(body or b"{}")
    except bodies.NotJSON as error:
        raise SerializationError(f"The request body is not valid JSON: {error}") from None


def error_response(error: SageMakerError) -> tuple[int, dict, bytes]:
    headers = {"Content-Type": JSON_CONTENT_TYPE, "x-amzn-ErrorType": error.code}
    return error.status, headers, json.dumps({"__type": error.code, "message": error.message}).encode()


def _json_default(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    raise TypeError(f"cannot serialise {type(value).__name__}")
