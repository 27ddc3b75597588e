"""Application Auto Scaling's wire protocol (JSON 1.1, ``X-Amz-Target: AnyScaleFrontendService.<Op>``)
for ServiceNamespace ``sagemaker``; every other namespace stays with moto (see the gateway)."""

from __future__ import annotations

from localaws.applicationautoscaling.models import NAMESPACE_SAGEMAKER, SERVICE, AutoScalingBackend
from localaws.protocol import Answer, protocol_of

TARGET_PREFIX = "AnyScaleFrontendService."
_BY_ARN = ("TagResource", "UntagResource", "ListTagsForResource")


class AutoScalingResponses:
    def __init__(self, backend: AutoScalingBackend):
        self.backend = backend
        # AWS answers this service's own failures InternalServiceException.
        self.protocol = protocol_of(SERVICE, TARGET_PREFIX, [backend], crash_code="InternalServiceException")

    def claims(self, operation: str, params: dict) -> bool:
        """Whether a request is ours (a sagemaker scalable target) rather than moto's."""
        if not self.protocol.takes(operation):
            return False
        if operation in _BY_ARN:
            return self.backend.owns_arn(str(params.get("ResourceARN", "")))
        return params.get("ServiceNamespace") == NAMESPACE_SAGEMAKER

    def handle(self, environ: dict, target: str) -> Answer | None:
        """(status, headers, body) for a request about a SageMaker variant; None for any other."""
        return self.protocol.handle_claimed(environ, target, self.claims)
