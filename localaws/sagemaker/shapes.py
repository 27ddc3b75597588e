"""Request checks, from botocore's own model, as AWS's server makes them.

botocore validates required members, types and minimums before a request is
sent, but any other client (or raw HTTP) may send anything: AWS's server reads
the JSON into the operation's shapes first (a value of the wrong JSON type is a
``SerializationException``), then checks required members, patterns, enums,
lengths and values (``ValidationException``). Doing it from the service model
keeps localaws exactly as strict as AWS's published contract (every current
ml.* instance type included) and words the errors as AWS does.
"""

from __future__ import annotations

import math
import re
from datetime import datetime, timezone
from functools import lru_cache

import botocore.session

from localaws.aws_errors import SerializationError, ValidationError


@lru_cache(maxsize=None)
def service_model(name: str = "sagemaker"):
    return botocore.session.get_session().get_service_model(name)


@lru_cache(maxsize=None)
def _compiled(pattern: str) -> re.Pattern | None:
    try:
        return re.compile(pattern)
    except re.error:  # a Java-only construct: AWS checks it, we cannot
        return None


@lru_cache(maxsize=4096)
def has_operation(service: str, operation: str) -> bool:
    """Whether botocore's model of ``service`` has ``operation`` (False for a service it does not know)."""
    try:
        return operation in service_model(service).operation_names
    except Exception:  # noqa: BLE001 - not a service botocore knows
        return False


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


# How AWS's JSON reader (Coral) names a JSON value that does not fit the member's shape.
_TARGETS = {
    "integer": "an Integer",
    "long": "a Long",
    "float": "a Float",
    "double": "a Double",
    "string": "a String",
    "boolean": "a Boolean",
    "blob": "a Blob",
    "timestamp": "a Date",
}


def _json_kind(value) -> str:
    if value is True:
        return "TRUE_VALUE"
    if value is False:
        return "FALSE_VALUE"
    if isinstance(value, (int, float)):
        return "NUMBER_VALUE"
    return "STRING_VALUE"


def _read_as(shape, value, path: str):
    """``value`` read into ``shape`` as AWS reads JSON (a number into an integer member is
    truncated, as AWS does); ``SerializationError`` where its JSON type does not fit. Nulls are
    absent members. Returns the value, converted where AWS converts."""
    kind = shape.type_name
    if getattr(shape, "is_document_type", False):  # any JSON at all
        return value
    if isinstance(value, list) and kind != "list":
        raise SerializationError("Start of list found where not expected")
    if isinstance(value, dict) and kind not in ("structure", "map"):
        raise SerializationError("Start of structure or map found where not expected.")
    if kind == "structure":
        if not isinstance(value, dict):
            raise SerializationError("Expected null")
        for name, member in shape.members.items():
            if value.get(name) is not None:
                value[name] = _read_as(member, value[name], _member_path(path, name))
        return value
    if kind == "list":
        if not isinstance(value, list):
            raise SerializationError("Expected list or null")
        return [_read_as(shape.member, item, path) for item in value if item is not None]
    if kind == "map":
        if not isinstance(value, dict):
            raise SerializationError("Expected map or null")
        return {key: _read_as(shape.value, item, f"{path}.{key}") for key, item in value.items() if item is not None}
    target = _TARGETS.get(kind, f"a {kind}")
    if kind in ("integer", "long"):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise SerializationError(f"{_json_kind(value)} can not be converted to {target}")
        return int(value)
    if kind in ("float", "double"):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise SerializationError(f"{_json_kind(value)} can not be converted to {target}")
        return value
    if kind == "boolean":
        if not isinstance(value, bool):
            raise SerializationError(f"{_json_kind(value)} can not be converted to {target}")
        return value
    if kind == "timestamp":  # epoch seconds, as botocore sends them, or an ISO 8601 string
        return _epoch_seconds(value, target)
    if not isinstance(value, str):  # string, blob (base64)
        raise SerializationError(f"{_json_kind(value)} can not be converted to {target}")
    return value


def _epoch_seconds(value, target: str) -> float:
    """A timestamp as AWS's JSON reader takes it: a number of epoch seconds, or an ISO 8601 date
    (no zone: UTC); anything else is a ``SerializationError``."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise SerializationError(f"{_json_kind(value)} can not be converted to {target}")
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            try:
                moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00").replace("z", "+00:00"))
            except ValueError:
                raise SerializationError(
                    f"STRING_VALUE can not be converted to {target}: '{value[:100]}' is "
                    "neither epoch seconds nor an ISO 8601 date"
                ) from None
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=timezone.utc)
            return moment.timestamp()
    if not math.isfinite(value):
        raise SerializationError(f"NUMBER_VALUE can not be converted to {target}")
    return float(value)


def read_request(operation: str, params, service: str = "sagemaker") -> dict:
    """The request body's JSON read into the operation's input shape (``SerializationError``
    where a value's JSON type does not fit); the members are then checked by ``validate_request``."""
    if isinstance(params, list):
        raise SerializationError("Start of list found where not expected")
    if not isinstance(params, dict):
        raise SerializationError("The request body is not a JSON object.")
    shape = service_model(service).operation_model(operation).input_shape
    return _read_as(shape, params, "") if shape is not None else params


def check_request(operation: str, params: dict, service: str = "sagemaker", constraints: bool = True) -> None:
    """AWS's ValidationException for a request read by ``read_request``: required members missing
    and, with ``constraints``, what else the model forbids and botocore let through (patterns,
    enums, lengths, ranges)."""
    shape = service_model(service).operation_model(operation).input_shape
    if shape is None:
        return
    missing = [
        name
        for name in shape.required_members
        if params.get(name) is None and "location" not in shape.members[name].serialization
    ]
    errors = [
        f"Value null at '{_member_path('', name)}' failed to satisfy constraint: Member must not be null"
        for name in missing
    ]
    if constraints:
        _check(shape, params, "", errors)
    if errors:
        count = len(errors)
        noun = "error" if count == 1 else "errors"
        raise ValidationError(f"{count} validation {noun} detected: " + "; ".join(errors))


def validate_request(operation: str, params, service: str = "sagemaker") -> dict:
    """The request read into the operation's shapes (``SerializationError`` for a value of the wrong
    JSON type) and checked against them (``ValidationError``): what the handlers get."""
    params = read_request(operation, params, service)
    check_request(operation, params, service)
    return params
