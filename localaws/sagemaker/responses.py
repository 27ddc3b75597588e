"""SageMaker's wire protocol: JSON 1.1 requests named by ``X-Amz-Target`` <-> the backend.

Only this module knows about HTTP; ``models.py`` knows only dicts shaped like
botocore's service model.
"""
from __future__ import annotations

import json
import logging
import math

from localaws import aws_errors, bodies
from localaws.aws_errors import AwsError
from localaws.sagemaker.errors import UnknownOperation
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

    def handle(self, target: str, environ: dict) -> tuple[int, list, bytes]:
        """(status, headers, body) of one request; its body is read here (see ``bodies``)."""
        operation = target[len(TARGET_PREFIX) :] if target.startswith(TARGET_PREFIX) else target
        try:
            backend = self.handlers.get(operation)
            if backend is None:
                raise UnknownOperation(f"localaws does not implement SageMaker {operation}.")
            # Every request is read into its operation's shapes and checked, once, before any handler
            # sees it: a value of the wrong JSON type is the client's error (400), never a crash of ours.
            params = validate_request(operation, aws_errors.json_request(environ, bodies.MAX_JSON_BODY))
            result = getattr(backend, _snake(operation))(params)
            return 200, [("Content-Type", JSON_CONTENT_TYPE)], json.dumps(result, default=_json_default).encode()
        except AwsError as error:
            return aws_errors.answer(environ, "json", error)
        except Exception as error:  # noqa: BLE001 - answer as AWS does, never drop the connection
            log.exception("SageMaker %s failed", operation)
            return aws_errors.error(environ, "json", "InternalFailure", f"{type(error).__name__}: {error}", 500)


def _json_default(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    raise TypeError(f"cannot serialise {type(value).__name__}")
