"""SageMaker's wire protocol: JSON 1.1 requests named by ``X-Amz-Target: SageMaker.<Op>``, answered by
the backends (``localaws.protocol``).

Only the protocol knows about HTTP; the backends' ``models.py`` know only dicts shaped like botocore's
service model.
"""

from __future__ import annotations

from localaws.protocol import JsonProtocol, protocol_of
from localaws.sagemaker.errors import UnknownOperation

TARGET_PREFIX = "SageMaker."


def sagemaker_protocol(*backends) -> JsonProtocol:
    """SageMaker's operations, each answered by the backend that lists it in its ``operations``."""

    def unknown(operation: str) -> UnknownOperation:
        return UnknownOperation(f"localaws does not implement SageMaker {operation}.")

    return protocol_of("sagemaker", TARGET_PREFIX, backends, unknown=unknown)
