"""Request checks botocore's client leaves to the server, from botocore's own model.

botocore validates required members, types and minimums before a request is
sent; AWS's server also checks patterns, enums, maximum lengths and values.
Doing it from the service model keeps localaws exactly as strict as AWS's
published contract (every current ml.* instance type included) and words the
errors as AWS does.
"""
from __future__ import annotations

import re
from functools import lru_cache

import botocore.session

from localaws.sagemaker.errors import ValidationError


@lru_cache(maxsize=None)
def service_model(name: str = "sagemaker"):
    return botocore.session.get_session().get_service_model(name)


@lru_cache(maxsize=None)
def _compiled(pattern: str) -> re.Pattern | None:
    try:
        return re.compile(pattern)
    except re.error:  # a Java-only construct: AWS checks it, we cannot
        return None


def enum_of(shape_name: str, service: str = "sagemaker") -> list[str]:
    return list(service_model(service).shape_for(shape_name).enum)


def _member_path(parent: str, name: str) -> str:
    # AWS names members in camelCase in these messages: resourceConfig.instanceType
    camel = name[:1].lower() + name[1:]
    return f"{parent}.{camel}" if parent else camel


def _check(shape, value, path: str, errors: list[str]) -> None:
    kind = shape.type_name
    meta = shape.metadata
    if kind == "structure" and isinstance(value, dict):
        for name, member in shape.members.items():
            if name in value and value[name] is not None:
                _check(member, value[name], _member_path(path, name), errors)
    elif kind == "list" and isinstance(value, list):
        if "max" in meta and len(value) > meta["max"]:
            errors.append(
                f"Value '{value}' at '{path}' failed to satisfy constraint: "
                f"Member must have length less than or equal to {meta['max']}"
            )
        for item in value:
            _check(shape.member, item, path, errors)
    elif kind == "map" and isinstance(value, dict):
        if "max" in meta and len(value) > meta["max"]:
            errors.append(
                f"Value '{value}' at '{path}' failed to satisfy constraint: "
                f"Member must have length less than or equal to {meta['max']}"
            )
        for key, item in value.items():
            _check(shape.key, key, path, errors)
            _check(shape.value, item, f"{path}.{key}", errors)
    elif kind == "string" and isinstance(value, str):
        if shape.enum and value not in shape.enum:
            errors.append(
                f"Value '{value}' at '{path}' failed to satisfy constraint: "
                f"Member must satisfy enum value set: [{', '.join(shape.enum)}]"
            )
        if "max" in meta and len(value) > meta["max"]:
            errors.append(
                f"Value '{value}' at '{path}' failed to satisfy constraint: "
                f"Member must have length less than or equal to {meta['max']}"
            )
        pattern = meta.get("pattern")
        compiled = _compiled(pattern) if pattern else None
        if compiled is not None and not compiled.fullmatch(value):
            errors.append(
                f"Value '{value}' at '{path}' failed to satisfy constraint: "
                f"Member must satisfy regular expression pattern: {pattern}"
            )
    elif kind in ("integer", "long", "float", "double") and isinstance(value, (int, float)):
        if "max" in meta and value > meta["max"]:
            errors.append(
                f"Value '{value}' at '{path}' failed to satisfy constraint: "
                f"Member must have value less than or equal to {meta['max']}"
            )
        if "min" in meta and value < meta["min"]:
            errors.append(
                f"Value '{value}' at '{path}' failed to satisfy constraint: "
                f"Member must have value greater than or equal to {meta['min']}"
            )


def validate_request(operation: str, params: dict, service: str = "sagemaker") -> None:
    """Raise AWS's ValidationException for what the model forbids and botocore let through."""
    shape = service_model(service).operation_model(operation).input_shape
    if shape is None:
        return
    missing = [name for name in shape.required_members if params.get(name) is None]
    errors = [
        f"Value null at '{_member_path('', name)}' failed to satisfy constraint: Member must not be null"
        for name in missing
    ]
    _check(shape, params, "", errors)
    if errors:
        count = len(errors)
        noun = "error" if count == 1 else "errors"
        raise ValidationError(f"{count} validation {noun} detected: " + "; ".join(errors))
