"""sagemaker-runtime's wire protocol (rest-json): ``POST /endpoints/<name>/invocations``.

A plain WSGI application on the request path of every invocation, so it reads the
environ directly rather than building request objects. Request members travel in
headers (``Content-Type``, ``Accept``, ``X-Amzn-SageMaker-Custom-Attributes``,
``X-Amzn-SageMaker-Target-Variant``, ...) and the body; the answer is the
container's body with ``Content-Type``, ``x-Amzn-Invoked-Production-Variant`` and
the container's custom attributes. Errors are AWS's: ``ValidationError`` (400),
``ModelError`` (424, with ``OriginalStatusCode``, ``OriginalMessage`` and
``LogStreamArn``), ``ServiceUnavailable`` (503), ``InternalFailure`` (500).
"""

from __future__ import annotations

import json
import logging
import random
import re
import time
import uuid
from urllib.parse import unquote

from localaws import bodies
from localaws.sagemaker.errors import InvokeError
from localaws.sagemaker.errors import InvokeValidationError as ValidationError
from localaws.sagemaker.hosting.router import Router

log = logging.getLogger(__name__)

PATH = re.compile(r"^/endpoints/([^/]+)/invocations/?$")
MAX_BODY = 6 * 1024 * 1024  # 6 MB, InvokeEndpoint's limit
_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9])*$")
_STATUS_TEXT = {
    200: "200 OK",
    400: "400 Bad Request",
    424: "424 Failed Dependency",
    429: "429 Too Many Requests",
    500: "500 Internal Server Error",
    503: "503 Service Unavailable",
}


def _request_id() -> str:
    """A version-4 UUID, without a getrandom syscall per request."""
    return str(uuid.UUID(int=random.getrandbits(128), version=4))


def is_invocation(environ: dict) -> bool:
    path = environ.get("PATH_INFO", "")
    return path.startswith("/endpoints/") and environ.get("REQUEST_METHOD") == "POST" and bool(PATH.match(path))


class RuntimeResponses:
    def __init__(self, router: Router):
        self.router = router

    def __call__(self, environ, start_response):
        started = time.perf_counter()
        request_id = _request_id()
        try:
            match = PATH.match(environ.get("PATH_INFO", ""))
            name = unquote(match.group(1))
            if len(name) > 63 or not _NAME.match(name):
                raise ValidationError(
                    f"1 validation error detected: Value '{name}' at 'endpointName' failed to satisfy "
                    "constraint: Member must satisfy regular expression pattern: ^[a-zA-Z0-9](-*[a-zA-Z0-9])*"
                )
            try:  # Content-Length or chunked, within InvokeEndpoint's limit either way
                body = bodies.read(environ, MAX_BODY)
            except bodies.BodyTooLarge:
                raise ValidationError(
                    f"1 validation error detected: Value at 'body' failed to satisfy constraint: Member must "
                    f"have length less than or equal to {MAX_BODY}"
                ) from None
            except bodies.MalformedBody as error:
                raise ValidationError(str(error)) from None
            answer = self.router.invoke(
                name,
                body,
                content_type=environ.get("CONTENT_TYPE"),
                accept=environ.get("HTTP_ACCEPT"),
                custom_attributes=environ.get("HTTP_X_AMZN_SAGEMAKER_CUSTOM_ATTRIBUTES"),
                target_variant=environ.get("HTTP_X_AMZN_SAGEMAKER_TARGET_VARIANT"),
                target_container=environ.get("HTTP_X_AMZN_SAGEMAKER_TARGET_CONTAINER_HOSTNAME"),
                inference_id=environ.get("HTTP_X_AMZN_SAGEMAKER_INFERENCE_ID"),
                started=started,
            )
        except InvokeError as error:
            return self._error(start_response, error, request_id)
        except Exception as error:  # noqa: BLE001 - answer as AWS does, never drop the connection
            log.exception("InvokeEndpoint failed")
            return self._error(start_response, InvokeError(f"{type(error).__name__}: {error}"), request_id)
        headers = [
            ("Content-Type", answer.content_type or "application/octet-stream"),
            ("Content-Length", str(len(answer.body))),
            ("x-Amzn-Invoked-Production-Variant", answer.variant),
            ("x-amzn-RequestId", request_id),
        ]
        if answer.custom_attributes:
            headers.append(("X-Amzn-SageMaker-Custom-Attributes", answer.custom_attributes))
        start_response("200 OK", headers)
        return [answer.body]

    @staticmethod
    def _error(start_response, error: InvokeError, request_id: str):
        payload = json.dumps({"message": error.message, **error.members}).encode()
        start_response(
            _STATUS_TEXT.get(error.status, f"{error.status} Error"),
            [
                ("Content-Type", "application/json"),
                ("Content-Length", str(len(payload))),
                ("x-amzn-ErrorType", error.code),
                ("x-amzn-RequestId", request_id),
            ],
        )
        return [payload]
