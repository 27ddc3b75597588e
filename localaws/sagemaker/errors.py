"""SageMaker's errors, with the codes and messages AWS answers."""
from __future__ import annotations

# What every JSON service of localaws answers alike: defined once, there.
from localaws.aws_errors import AwsError, RequestTooLarge, SerializationError, ValidationError

__all__ = ["SageMakerError", "ValidationError", "SerializationError", "RequestTooLarge", "ResourceNotFound",
           "ResourceInUse", "ResourceLimitExceeded", "UnknownOperation", "not_found", "constraint"]


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


def not_found() -> ValidationError:
    # AWS's DescribeTrainingJob / DescribeModel / ... answer for a name that does not exist.
    return ValidationError("Requested resource not found.")


def constraint(value: object, member: str, rule: str) -> ValidationError:
    """AWS's wording for a request member that breaks its model's constraint."""
    return ValidationError(
        f"1 validation error detected: Value '{value}' at '{member}' failed to satisfy constraint: {rule}"
    )
