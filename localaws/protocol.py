"""AWS's JSON 1.1 protocol, once for every engine of localaws (SageMaker, Application Auto Scaling, SSM).

A request names its operation in ``X-Amz-Target: <prefix><Operation>``; its body is read once, size-limited
(``bodies``), read into the operation's input shape and checked against it (botocore's service model, see
``sagemaker/shapes.py``), and handed to the handler of that operation. The answer is the handler's dict as
JSON; an ``AwsError`` is answered in the protocol's error shape; anything else is the service's 500, never a
dropped connection or werkzeug's HTML page.

Handlers are the methods, in snake case, of the backends that list the operation in their ``operations``.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from localaws import aws_errors, bodies
from localaws.aws_errors import AwsError

log = logging.getLogger(__name__)

JSON_CONTENT_TYPE = "application/x-amz-json-1.1"

Answer = tuple[int, list, bytes]


def snake(operation: str) -> str:
    """``CreateTrainingJob`` -> ``create_training_job``, ``CreateAutoMLJobV2`` -> ``create_auto_ml_job_v2``:
    the handler's name, as boto3 names the client's method (botocore's ``xform_name``)."""
    from botocore import xform_name  # noqa: PLC0415 - botocore's models load with the first request

    return xform_name(operation)


def json_default(value: Any) -> Any:
    """What ``json.dumps`` cannot write itself: a non-finite float is written as null (AWS never answers NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    raise TypeError(f"cannot serialise {type(value).__name__}")


def handlers_of(*backends: Any) -> dict[str, Callable[[dict], Any]]:
    """Each operation a backend declares in ``operations`` -> its bound snake-case method."""
    return {operation: getattr(backend, snake(operation)) for backend in backends for operation in backend.operations}


class JsonProtocol:
    """One JSON 1.1 service: its botocore name, target prefix, handlers and the code AWS gives its 500s.

    ``unknown(operation)`` builds the error for an operation no handler takes (each service words its own).
    """

    def __init__(
        self,
        service: str,
        target_prefix: str,
        handlers: Mapping[str, Callable[[dict], Any]],
        *,
        crash_code: str = "InternalFailure",
        unknown: Callable[[str], AwsError] | None = None,
    ):
        self.service = service
        self.target_prefix = target_prefix
        self.handlers = dict(handlers)
        self.crash_code = crash_code
        self.unknown = unknown

    def operation(self, target: str) -> str:
        return target[len(self.target_prefix) :] if target.startswith(self.target_prefix) else target

    def takes(self, operation: str) -> bool:
        return operation in self.handlers

    def read(self, environ: dict, operation: str) -> Any:
        """The request's JSON body, read once as HTTP allows and size-limited (errors in this protocol)."""
        return aws_errors.json_request(environ, bodies.MAX_JSON_BODY, self.service, operation)

    def handle(self, environ: dict, target: str, params: Any = None, *, read: bool = True) -> Answer:
        """(status, headers, body) of one request; ``params`` when the caller read the body already."""
        from localaws.sagemaker.shapes import validate_request  # noqa: PLC0415 - botocore's models, loaded on first use

        operation = self.operation(target)
        try:
            handler = self.handlers.get(operation)
            if handler is None:
                if self.unknown is None:
                    raise AwsError(
                        f"localaws does not implement {self.service} {operation}.", "UnknownOperationException"
                    )
                raise self.unknown(operation)
            if read:
                params = self.read(environ, operation)
            result = handler(validate_request(operation, params, service=self.service))
            return 200, [("Content-Type", JSON_CONTENT_TYPE)], json.dumps(result, default=json_default).encode()
        except AwsError as error:
            return aws_errors.answer(environ, "json", error)
        except Exception as error:  # noqa: BLE001 - answer as AWS does, never drop the connection
            log.exception("%s %s failed", self.service, operation)
            return aws_errors.error(environ, "json", self.crash_code, f"{type(error).__name__}: {error}", 500)

    def handle_claimed(self, environ: dict, target: str, claims: Callable[[str, dict], bool]) -> Answer | None:
        """For a service whose requests are shared with moto: the body read (in this protocol's errors,
        whoever's the request is: moto would take NaN, a chunked body or any size) and answered when
        ``claims(operation, params)``; None leaves it to moto, the body kept for it."""
        operation = self.operation(target)
        try:
            params = self.read(environ, operation)
        except AwsError as error:
            return aws_errors.answer(environ, "json", error)
        if not isinstance(params, dict) or not claims(operation, params):
            return None
        return self.handle(environ, target, params, read=False)


def protocol_of(service: str, target_prefix: str, backends: Iterable[Any], **options: Any) -> JsonProtocol:
    """The protocol of ``service`` answered by ``backends`` (see ``handlers_of``)."""
    return JsonProtocol(service, target_prefix, handlers_of(*backends), **options)
