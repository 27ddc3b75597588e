"""The SSM command documents localaws carries out itself, and checking a SendCommand against a document.

The names are those ``plugins/ml_pipeline/infra/host_training.py`` creates (``<prefix>-<run>``):
localaws acts as the SSM agent of a host for them, and leaves every other document to moto.
"""

from __future__ import annotations

import json
import re

from localaws.aws_errors import AwsError

TRAINING_PREFIX = "MLPipeline-TrainContainer"
CHECK_PREFIX = "MLPipeline-HostCheck"
_PARAMETER = re.compile(r"\{\{\s*(\w+)\s*\}\}")


class SsmError(AwsError):
    """SSM's error ``code`` (SSM names each error where it raises it)."""

    def __init__(self, code: str, message: str, status: int = 400):
        super().__init__(message, code, status)


def kind_of(document_name: str | None) -> str | None:
    """ "training", "check", or None (not ours)."""
    name = str(document_name or "")
    if name == TRAINING_PREFIX or name.startswith(TRAINING_PREFIX + "-"):
        return "training"
    if name == CHECK_PREFIX or name.startswith(CHECK_PREFIX + "-"):
        return "check"
    return None


def resolve_parameters(document: dict, given: dict) -> dict[str, str]:
    """Each parameter's value as the agent substitutes it, checked as SSM checks it (InvalidParameters)."""
    declared = document.get("parameters", {})
    unknown = sorted(set(given) - set(declared))
    if unknown:
        raise SsmError("InvalidParameters", f"Parameters {unknown} are not defined in the document.")
    values = {}
    for name, spec in declared.items():
        if name in given:
            value = given[name]
            if not isinstance(value, list) or len(value) != 1:
                raise SsmError("InvalidParameters", f'Parameter "{name}" takes one value.')
            value = str(value[0])
        elif "default" in spec:
            value = str(spec["default"])
        else:
            raise SsmError("InvalidParameters", f'Parameter "{name}" is required but was not provided.')
        if spec.get("allowedValues") and value not in spec["allowedValues"]:
            raise SsmError(
                "InvalidParameters",
                f'Parameter "{name}" "{value}" is not one of the allowed values {spec["allowedValues"]}.',
            )
        if spec.get("allowedPattern") and not re.search(spec["allowedPattern"], value):
            raise SsmError(
                "InvalidParameters",
                f'Parameter "{name}" "{value[:200]}" fails to match the allowed pattern "{spec["allowedPattern"]}".',
            )
        values[name] = value
    return values


def step_name(document: dict) -> str:
    steps = document.get("mainSteps") or [{}]
    return steps[0].get("name", "aws:runShellScript")


def substitute(text: str, values: dict[str, str]) -> str:
    """``{{ Name }}`` replaced by the parameter's value, as the agent does before it runs a step."""
    return _PARAMETER.sub(lambda m: values[m.group(1)] if m.group(1) in values else m.group(0), text)


def step_script(document: dict, values: dict[str, str]) -> str:
    """The first step's ``aws:runShellScript`` lines, one script, its parameters substituted."""
    inputs = (document.get("mainSteps") or [{}])[0].get("inputs", {})
    lines = inputs.get("runCommand") or []
    return substitute("\n".join(lines) if isinstance(lines, list) else str(lines), values) + "\n"


def step_timeout(document: dict, values: dict[str, str], default: int = 3600) -> int:
    raw = substitute(
        str((document.get("mainSteps") or [{}])[0].get("inputs", {}).get("timeoutSeconds", default)), values
    )
    try:
        return int(raw)
    except ValueError:
        return default


def parse(content: str) -> dict:
    return json.loads(content)
