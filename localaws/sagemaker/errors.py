"""SageMaker's errors, with the codes and messages AWS answers."""

from __future__ import annotations

# What every JSON service of localaws answers alike: defined once, there.
from localaws.aws_errors import AwsError, RequestTooLarge, SerializationError, ValidationError

__all__ = [
    "SageMakerError",
    "ValidationError",
    "SerializationError",
    "RequestTooLarge",
    "ResourceNotFound",
    "ResourceInUse",
    "ResourceLimitExceeded",
    "UnknownOperation",
    "not_found",
    "constraint",
    "InvokeError",
    "InvokeValidationError",
    "ModelError",
    "ServiceUnavailable",
]


class SageMakerError(AwsError):
    """An error only SageMaker answers."""


class ResourceNotFound(SageMakerError):
    """What some newer APIs answer; Describe* of training jobs answers ValidationException."""

    code = "ResourceNotFound"


class ResourceInUse(SageMakerError):
    code = "ResourceInUse"


class ResourceLimitExceeded(SageMakerError):
    code = "ResourceLimitExceeded"


class UnknownOperation(SageMakerError):
    code = "UnknownOperationException"


# --- sagemaker-runtime (InvokeEndpoint, rest-json): its own codes and statuses -----------------------


class InvokeError(SageMakerError):
    """What InvokeEndpoint answers; ``members`` are the error's members beside its message."""

    code = "InternalFailure"
    status = 500

    def __init__(self, message: str, **members):
        super().__init__(message)
        self.members = members


class InvokeValidationError(InvokeError):
    """sagemaker-runtime's ValidationError (not the control plane's ValidationException)."""

    code = "ValidationError"
    status = 400


class ModelError(InvokeError):
    code = "ModelError"
    status = 424


class ServiceUnavailable(InvokeError):
    code = "ServiceUnavailable"
    status = 503


def not_found() -> ValidationError:
    # AWS's DescribeTrainingJob / DescribeModel / ... answer for a name that does not exist.
    return ValidationError("Requested resource not found.")


def constraint(value: object, member: str, rule: str) -> ValidationError:
    """AWS's wording for a request member that breaks its model's constraint."""
    return ValidationError(
        f"1 validation error detected: Value '{value}' at '{member}' failed to satisfy constraint: {rule}"
    )
