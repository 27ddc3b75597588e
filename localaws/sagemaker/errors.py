"""SageMaker's errors, with the codes and messages AWS answers."""
from __future__ import annotations


class SageMakerError(Exception):
    code = "InternalFailure"
    status = 400

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class ValidationError(SageMakerError):
    code = "ValidationException"


class SerializationError(SageMakerError):
    """The body is not JSON, or a value's JSON type does not fit its member (AWS's JSON reader)."""

    code = "SerializationException"


class RequestTooLarge(SageMakerError):
    code = "RequestEntityTooLargeException"
    status = 413


class ResourceNotFound(SageMakerError):
    """What some newer APIs answer; Describe* of training jobs answers ValidationException."""

    code = "ResourceNotFound"


class ResourceInUse(SageMakerError):
    code = "ResourceInUse"


class ResourceLimitExceeded(SageMakerError):
    code = "ResourceLimitExceeded"


class UnknownOperation(SageMakerError):
    code = "UnknownOperationException"


def not_found() -> ValidationError:
    # AWS's DescribeTrainingJob / DescribeModel / ... answer for a name that does not exist.
    return ValidationError("Requested resource not found.")


def constraint(value: object, member: str, rule: str) -> ValidationError:
    """AWS's wording for a request member that breaks its model's constraint."""
    return ValidationError(
        f"1 validation error detected: Value '{value}' at '{member}' failed to satisfy constraint: {rule}"
    )
