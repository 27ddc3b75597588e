"""Presets and tuning configurations of an experiment, validated (``experiments.py`` reads them).

    experiment_files(name)                 include/hyperparams/<name>/: {"presets": {preset: path}, "tuning": path}
    load_preset(path)                      one preset file, validated
    load_tuning(path)                      one tuning file, validated (the schema only: ranges need the experiment)
    check_preset(document, file, at)       a preset (inline or from a file), validated
    check_tuning(document, file, at, ...)  a tuning configuration against the experiment's hyperparameters and metrics
    check_metrics(document, file)          metric_definitions (one capture group each) and the objective among them
    tuning_parameter_ranges(tuning)        boto3's ParameterRanges (every value a string)
    tuning_job_config(tuning)              boto3's HyperParameterTuningJobConfig

A preset is hyperparameter overrides (scalars) over the experiment's own hyperparameters, and optionally
the resources its jobs take (instance type and count, volume, runtime). ``<dir>`` is
``$ML_PIPELINE_HYPERPARAMS_DIR`` when set, else ``include/hyperparams`` of the repository (two levels
above this file's folder); an experiment's files are in ``<dir>/<experiment>/``. The rules
(``preset.schema.json``, ``tuning.schema.json``, ``experiment.schema.json``) are always the
repository's: a data folder supplies presets, never the rules they are checked against.

Every problem raises ``ConfigError`` (a ValueError) naming the file and the field, e.g.
``include/hyperparams/digits/bad.json: hyperparameters.learning_rate: [1] is not of type 'string',
'number', 'boolean'``; NaN and Infinity (which Python's JSON parser accepts) are refused wherever a
number is read. No torch, no boto3: this runs in Airflow.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

import jsonschema

DIR_ENV = "ML_PIPELINE_HYPERPARAMS_DIR"
REPO_ROOT = Path(__file__).resolve().parents[2]
#: Where the schemas the code validates against live, whatever ML_PIPELINE_HYPERPARAMS_DIR says.
SCHEMA_DIR = REPO_ROOT / "include" / "hyperparams"
PRESET_SCHEMA = "preset.schema.json"
TUNING_SCHEMA = "tuning.schema.json"
EXPERIMENT_SCHEMA = REPO_ROOT / "include" / "experiment.schema.json"
TUNING_FILE = "tuning.json"
RANGE_KINDS = ("IntegerParameterRanges", "ContinuousParameterRanges", "CategoricalParameterRanges")


class ConfigError(ValueError):
    """A preset or tuning file is missing, not JSON, or invalid; the message names file and field."""


def hyperparams_dir() -> Path:
    override = os.environ.get(DIR_ENV)
    return Path(override) if override else REPO_ROOT / "include" / "hyperparams"


def experiment_files(name: str) -> dict:
    """The preset and tuning files of experiment ``name`` (``<dir>/<name>/``): {"presets": {preset: path},
    "tuning": path or None}. Symlinks are not followed out of the folder (the caller checks each path)."""
    folder = hyperparams_dir() / name
    if not folder.is_dir():
        return {"presets": {}, "tuning": None}
    presets = {
        path.stem: path
        for path in sorted(folder.glob("*.json"))
        if path.name != TUNING_FILE and not path.name.endswith(".schema.json")
    }
    tuning = folder / TUNING_FILE
    return {"presets": presets, "tuning": tuning if tuning.exists() else None}


def display(path: Path) -> str:
    """The path relative to the repository when it lies in it (include/hyperparams/x.json)."""
    try:
        return str(Path(path).resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def field_path(parts: Iterable) -> str:
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top level)"


def non_finite(value: Any, where: tuple = ()) -> Iterator[tuple[tuple, float]]:
    """(path, value) of every NaN or infinite number in a decoded JSON document."""
    if isinstance(value, float) and not math.isfinite(value):
        yield where, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from non_finite(item, (*where, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from non_finite(item, (*where, index))


def _read_json(path: Path) -> Any:
    try:
        text = path.read_text()
    except FileNotFoundError:
        available = sorted(p.stem for p in path.parent.glob("*.json") if not p.name.endswith(".schema.json"))
        hint = f" (available: {', '.join(available)})" if available else ""
        raise ConfigError(f"{display(path)}: no such file{hint}") from None
    except OSError as error:
        raise ConfigError(f"{display(path)}: cannot read: {error}") from None
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        raise ConfigError(
            f"{display(path)}: not valid JSON: {error.msg} (line {error.lineno}, column {error.colno})"
        ) from None
    # json.loads takes NaN, Infinity and -Infinity (and reads 1e999 as infinity); JSON has none of them.
    found = next(non_finite(document), None)
    if found:
        raise ConfigError(
            f"{display(path)}: {field_path(found[0])}: {found[1]} is not a finite number (JSON has no NaN or Infinity)"
        )
    return document


def load_schema(path: Path) -> dict:
    """A JSON Schema file, checked against its metaschema: a ConfigError names the file and the fault."""
    document = _read_json(path)
    try:
        jsonschema.Draft202012Validator.check_schema(document)
    except jsonschema.SchemaError as error:
        raise ConfigError(
            f"{display(path)}: not a valid JSON Schema: {field_path(error.absolute_path)}: {error.message}"
        ) from None
    return document


@lru_cache(maxsize=None)
def schema(name: str) -> dict:
    """One of the code's schemas (``SCHEMA_DIR``, the experiment's in include/), never one from the data
    folder; read and checked against its metaschema once per process (the check is most of a first parse)."""
    return load_schema(EXPERIMENT_SCHEMA if name == EXPERIMENT_SCHEMA.name else SCHEMA_DIR / name)


@lru_cache(maxsize=None)
def validator(name: str) -> jsonschema.Draft202012Validator:
    """A validator for one of the code's schemas, the experiment's included: it refers to the preset and
    tuning schemas by their ``$id``."""
    from referencing import Registry, Resource  # noqa: PLC0415 - jsonschema's own dependency

    documents = [schema(PRESET_SCHEMA), schema(TUNING_SCHEMA), schema(EXPERIMENT_SCHEMA.name)]
    registry = Registry().with_resources((doc["$id"], Resource.from_contents(doc)) for doc in documents)
    return jsonschema.Draft202012Validator(schema(name), registry=registry)


def _validate(document: Any, schema_name: str, file: str, at: tuple = ()) -> None:
    errors = sorted(
        validator(schema_name).iter_errors(document),
        key=lambda e: (len(e.absolute_path), [str(p) for p in e.absolute_path]),
    )
    if errors:
        problems = [f"{field_path((*at, *best.absolute_path))}: {best.message}" for best in map(_deepest, errors)]
        raise ConfigError(f"{file}: " + "; ".join(problems))


def _deepest(error):
    """A oneOf's error says only that no branch matched: the deepest error of its branches says where and why
    (a deploy mapping's bad smoke check, not "False was expected"); at the same depth, that of the branch of
    the value's own type (a prepare mapping's missing function, not "is not of type 'string'")."""
    while error.context:
        error = max(error.context, key=lambda e: (len(e.absolute_path), e.validator not in ("type", "const")))
    return error


def _fail(file: str, field: str, message: str) -> None:
    raise ConfigError(f"{file}: {field}: {message}")


def check_metrics(document: dict, file: str) -> None:
    """Each metric defined once with a regex of exactly one capture group; the objective among them."""
    names = set()
    for index, definition in enumerate(document["metric_definitions"]):
        where = f"metric_definitions[{index}]"
        if definition["Name"] in names:
            _fail(file, f"{where}.Name", f"{definition['Name']!r} is defined twice")
        names.add(definition["Name"])
        try:
            groups = re.compile(definition["Regex"]).groups
        except re.error as error:
            _fail(file, f"{where}.Regex", f"not a valid regular expression: {error}")
        if groups != 1:
            _fail(file, f"{where}.Regex", f"needs exactly one capture group, has {groups}")
    if document["objective"]["metric"] not in names:
        _fail(
            file,
            "objective.metric",
            f"{document['objective']['metric']!r} is not among the metric_definitions ({', '.join(sorted(names))})",
        )


def check_preset(document: Any, file: str, at: tuple = ()) -> dict:
    """A preset, inline (``at`` its place in the experiment file) or a file's: {"hyperparameters": {...}, ...}."""
    _refuse_non_finite(document, file, at)
    _validate(document, PRESET_SCHEMA, file, at)
    return {"hyperparameters": {}, **document}


def _refuse_non_finite(document: Any, file: str, at: tuple = ()) -> None:
    found = next(non_finite(document), None)
    if found:
        _fail(file, field_path((*at, *found[0])), f"{found[1]} is not a finite number")


def load_preset(path: str | os.PathLike) -> dict:
    """A validated preset file."""
    path = Path(path)
    return {**check_preset(_read_json(path), display(path)), "_path": str(path)}


def load_tuning(path: str | os.PathLike) -> dict:
    """A tuning file, validated against its schema (``check_tuning`` judges its ranges)."""
    path = Path(path)
    document = _read_json(path)
    _validate(document, TUNING_SCHEMA, display(path))
    return {**document, "_path": str(path)}


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    return "integer" if isinstance(value, int) else "number" if isinstance(value, float) else "string"


def check_tuning(
    document: Any, file: str, at: tuple, hyperparameters: dict, presets: dict, metric_names: set, objective: dict
) -> dict:
    """A tuning configuration of the experiment, resolved: the objective defaults to the experiment's,
    ``base_preset`` must be one of ``presets``, and each range names a hyperparameter of the experiment (or
    of the base preset) whose value's type suits the range (Integer: an integer; Continuous: a number)."""
    _refuse_non_finite(document, file, at)
    _validate(document, TUNING_SCHEMA, file, at)

    def fail(field: tuple | str, message: str) -> None:
        _fail(file, field_path((*at, *((field,) if isinstance(field, str) else field))), message)

    tuning = {"strategy": "Bayesian", "early_stopping": "Off", "objective": objective, **document}
    base = tuning.get("base_preset")
    if base is not None and base not in presets:
        fail("base_preset", f"{base!r} is not a preset of the experiment ({', '.join(sorted(presets)) or 'none'})")
    known = {**hyperparameters, **(presets[base]["hyperparameters"] if base else {})}
    if tuning["objective"]["metric"] not in metric_names:
        fail(
            ("objective", "metric"),
            f"{tuning['objective']['metric']!r} is not among the experiment's "
            f"metric_definitions ({', '.join(sorted(metric_names))})",
        )
    ranges = tuning["parameter_ranges"]
    seen: dict = {}
    for kind in RANGE_KINDS:
        for index, entry in enumerate(ranges.get(kind, [])):
            where = ("parameter_ranges", kind, index)
            name = entry["Name"]
            if name not in known:
                fail(
                    (*where, "Name"),
                    f"{name!r} is not a hyperparameter of the experiment (known: {', '.join(known) or 'none'})",
                )
            if name in seen:
                fail((*where, "Name"), f"{name!r} is also tuned at {seen[name]}")
            seen[name] = field_path((*at, *where))
            if kind == "CategoricalParameterRanges":
                continue
            value_kind = _kind(known[name])
            suits = value_kind == "integer" if kind == "IntegerParameterRanges" else value_kind in ("integer", "number")
            if not suits:
                fail(
                    (*where, "Name"),
                    f"{name} is {value_kind} in the experiment ({known[name]!r}): it cannot have "
                    f"a{'n' if kind[0] == 'I' else ''} {kind[: -len('ParameterRanges')]} range",
                )
            low, high = entry["MinValue"], entry["MaxValue"]
            if not low < high:
                fail((*where, "MaxValue"), f"MinValue ({low}) must be less than MaxValue ({high})")
            scaling = entry.get("ScalingType", "Auto")
            if scaling == "Logarithmic" and low <= 0:
                fail((*where, "MinValue"), f"Logarithmic scaling needs MinValue > 0, got {low}")
            if scaling == "ReverseLogarithmic" and not (0 <= low and high < 1):
                fail(
                    (*where, "ScalingType"),
                    f"ReverseLogarithmic scaling needs 0 <= MinValue and MaxValue < 1, got [{low}, {high}]",
                )
    if not seen:
        fail("parameter_ranges", "no hyperparameter is tuned")
    if tuning["strategy"] == "Grid" and any(ranges.get(kind) for kind in RANGE_KINDS[:2]):
        fail("strategy", "Grid search takes CategoricalParameterRanges only")
    if tuning["max_parallel_jobs"] > tuning["max_jobs"]:
        fail("max_parallel_jobs", f"{tuning['max_parallel_jobs']} is more than max_jobs ({tuning['max_jobs']})")
    return tuning


def to_hyperparameter_string(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)  # shortest exact form: 0.001, 1e-05, 0.5
    return str(value)


def sagemaker_hyperparameters(preset: dict) -> dict:
    """A container's hyperparameters as SageMaker stores them for a plain image: {name: str}."""
    return {
        name: to_hyperparameter_string(value) for name, value in preset["hyperparameters"].items() if value is not None
    }


def tuning_parameter_ranges(tuning: Mapping[str, Any]) -> dict:
    """boto3's ``ParameterRanges``: all three lists, every value a string."""
    ranges = tuning["parameter_ranges"]
    result: dict = {kind: [] for kind in RANGE_KINDS}
    for kind in RANGE_KINDS[:2]:
        for entry in ranges.get(kind, []):
            result[kind].append(
                {
                    "Name": entry["Name"],
                    "MinValue": to_hyperparameter_string(entry["MinValue"]),
                    "MaxValue": to_hyperparameter_string(entry["MaxValue"]),
                    "ScalingType": entry.get("ScalingType", "Auto"),
                }
            )
    for entry in ranges.get("CategoricalParameterRanges", []):
        result["CategoricalParameterRanges"].append(
            {
                "Name": entry["Name"],
                "Values": [to_hyperparameter_string(value) for value in entry["Values"]],
            }
        )
    return result


def tuned_names(tuning: Mapping[str, Any]) -> set:
    return {entry["Name"] for kind in RANGE_KINDS for entry in tuning["parameter_ranges"].get(kind, [])}


def tuning_job_config(tuning: Mapping[str, Any]) -> dict:
    """boto3's ``HyperParameterTuningJobConfig`` for create_hyper_parameter_tuning_job."""
    return {
        "Strategy": tuning.get("strategy", "Bayesian"),
        "HyperParameterTuningJobObjective": {
            "Type": tuning["objective"]["type"],
            "MetricName": tuning["objective"]["metric"],
        },
        "ResourceLimits": {
            "MaxNumberOfTrainingJobs": int(tuning["max_jobs"]),
            "MaxParallelTrainingJobs": int(tuning["max_parallel_jobs"]),
        },
        "ParameterRanges": tuning_parameter_ranges(tuning),
        "TrainingJobEarlyStoppingType": tuning.get("early_stopping", "Off"),
    }
