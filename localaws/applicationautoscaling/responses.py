"""Application Auto Scaling's wire protocol (JSON 1.1, ``X-Amz-Target: AnyScaleFrontendService.<Op>``)
for ServiceNamespace ``sagemaker``; every other namespace stays with moto (see the gateway)."""
from __future__ import annotations

import json
import logging

from localaws import aws_errors
from localaws.aws_errors import AwsError
from localaws.sagemaker.hosting.autoscaler import SERVICE, AutoScaler
from localaws.sagemaker.responses import JSON_CONTENT_TYPE, _json_default, _snake
from localaws.sagemaker.shapes import validate_request

log = logging.getLogger(__name__)

TARGET_PREFIX = "AnyScaleFrontendService."
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

    def handle(self, environ: dict, target: str, params: dict) -> tuple[int, list, bytes]:
        operation = target[len(TARGET_PREFIX):]
        try:
            params = validate_request(operation, params, service=SERVICE)
            result = getattr(self.autoscaler, _snake(operation))(params)
            return 200, [("Content-Type", JSON_CONTENT_TYPE)], json.dumps(result, default=_json_default).encode()
        except AwsError as error:
            return aws_errors.answer(environ, "json", error)
        except Exception as error:  # noqa: BLE001 - answer as AWS does, never drop the connection
            log.exception("Application Auto Scaling %s failed", operation)
            return aws_errors.error(environ, "json", "InternalServiceException", f"{type(error).__name__}: {error}", 500)
