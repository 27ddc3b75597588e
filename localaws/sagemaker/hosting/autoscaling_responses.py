"""Application Auto Scaling's wire protocol (JSON 1.1, ``X-Amz-Target: AnyScaleFrontendService.<Op>``)
for ServiceNamespace ``sagemaker``; every other namespace stays with moto (see the gateway)."""
from __future__ import annotations

import json
import logging

from localaws import bodies
from localaws.sagemaker.hosting.autoscaler import (
    AutoScaler,
    AutoScalingError,
    RequestTooLarge,
    SerializationException,
)
from localaws.sagemaker.responses import _json_default, _snake

log = logging.getLogger(__name__)

TARGET_PREFIX = "AnyScaleFrontendService."
JSON_CONTENT_TYPE = "application/x-amz-json-1.1"
_BY_ARN = ("TagResource", "UntagResource", "ListTagsForResource")


class AutoScalingResponses:
    def __init__(self, autoscaler: AutoScaler):
        self.autoscaler = autoscaler

    def claims(self, target: str, params: dict) -> bool:
        """Whether a request is ours (a sagemaker scalable target) rather than moto's."""
        operation = target[len(TARGET_PREFIX):]
        if operation not in self.autoscaler.operations:
            return False
        if operation in _BY_ARN:
            return self.autoscaler.owns_arn(str(params.get("ResourceARN", "")))
        return params.get("ServiceNamespace") == "sagemaker"

    def handle(self, target: str, params: dict) -> tuple[int, dict, bytes]:
        operation = target[len(TARGET_PREFIX):]
        try:
            result = getattr(self.autoscaler, _snake(operation))(params)
            return 200, {"Content-Type": JSON_CONTENT_TYPE}, json.dumps(result, default=_json_default).encode()
        except AutoScalingError as error:
            return self.error(error)
        except Exception as error:  # noqa: BLE001 - answer as AWS does, never drop the connection
            log.exception("Application Auto Scaling %s failed", operation)
            headers = {"Content-Type": JSON_CONTENT_TYPE, "x-amzn-ErrorType": "InternalServiceException"}
            body = {"__type": "InternalServiceException", "Message": f"{type(error).__name__}: {error}"}
            return 500, headers, json.dumps(body).encode()

    @staticmethod
    def error(error: AutoScalingError) -> tuple[int, dict, bytes]:
        headers = {"Content-Type": JSON_CONTENT_TYPE, "x-amzn-ErrorType": error.code}
        return error.status, headers, json.dumps({"__type": error.code, "Message": error.message}).encode()

    @classmethod
    def unreadable(cls, error: Exception) -> tuple[int, dict, bytes]:
        """The answer to a body that cannot be read as JSON (``bodies``' errors), whoever's it was."""
        if isinstance(error, bodies.BodyTooLarge):
            return cls.error(RequestTooLarge(str(error)))
        return cls.error(SerializationException(f"The request body is not valid JSON: {error}"))

