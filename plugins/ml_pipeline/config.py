"""Training presets and tuning configurations from ``include/hyperparams/``.

    load_preset("quick")                  include/hyperparams/quick.json, validated
    load_tuning("tuning")                 include/hyperparams/tuning.json, validated
    sagemaker_hyperparameters(preset)     {"epochs": "5", ...}: SageMaker's HyperParameters
    tuning_parameter_ranges(tuning)       boto3's ParameterRanges (every value a string)
    tuning_job_config(tuning)             boto3's HyperParameterTuningJobConfig
    tuning_static_hyperparameters(tuning) the base preset's hyperparameters that are not tuned

A name is looked up as ``<dir>/<name>.json``; anything with a slash or ending in
``.json`` is a path. ``<dir>`` is ``$ML_PIPELINE_HYPERPARAMS_DIR`` when set, else
``include/hyperparams`` of the repository (two levels above this file's folder).
The rules (``preset.schema.json``, ``tuning.schema.json``) are always the
repository's (``SCHEMA_DIR``): a data folder supplies presets, never the rules
they are checked against.

Every problem raises ``ConfigError`` (a ValueError) naming the file and the field,
e.g. ``include/hyperparams/bad.json: hyperparameters.learning_rate: -1 is less
than or equal to the minimum of 0``; NaN and Infinity (which Python's JSON parser
accepts) are refused wherever a number is read. No torch, no boto3: this runs in Airflow.
"""
from __future__ import annotations

import json
import math
import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable

import jsonschema

DIR_ENV = "ML_PIPELINE_HYPERPARAMS_DIR"
REPO_ROOT = Path(__file__).resolve().parents[2]
#: Where the schemas the code validates against live, whatever ML_PIPELINE_HYPERPARAMS_DIR says.
SCHEMA_DIR = REPO_ROOT / "include" / "hyperparams"
PRESET_SCHEMA = "preset.schema.json"
TUNING_SCHEMA = "tuning.schema.json"
RANGE_KINDS = ("IntegerParameterRanges", "ContinuousParameterRanges", "CategoricalParameterRanges")


class ConfigError(ValueError):
    """A preset or tuning file is missing, not JSON, or invalid; the message names file and field."""


def hyperparams_dir() -> Path:
    override = os.environ.get(DIR_ENV)
    return Path(override) if override else REPO_ROOT / "include" / "hyperparams" / "digits"


def resolve(name_or_path: str | os.PathLike) -> Path:
    text = os.fspath(name_or_path)
    if os.sep in text or "/" in text or text.endswith(".json"):
        return Path(text)
    return hyperparams_dir() / f"{text}.json"


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


def non_finite(value: Any, where: tuple = ()) -> Iterable[tuple[tuple, float]]:
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
        raise ConfigError(f"{display(path)}: not valid JSON: {error.msg} "
                          f"(line {error.lineno}, column {error.colno})") from None
    # json.loads takes NaN, Infinity and -Infinity (and reads 1e999 as infinity); JSON has none of them.
    found = next(non_finite(document), None)
    if found:
        raise ConfigError(f"{display(path)}: {field_path(found[0])}: {found[1]} is not a finite number "
                          "(JSON has no NaN or Infinity)")
    return document


def load_schema(path: Path) -> dict:
    """A JSON Schema file, checked against its metaschema: a ConfigError names the file and the fault."""
    document = _read_json(path)
    try:
        jsonschema.Draft202012Validator.check_schema(document)
    except jsonschema.SchemaError as error:
        raise ConfigError(f"{display(path)}: not a valid JSON Schema: {field_path(error.absolute_path)}: "
                          f"{error.message}") from None
    return document


@lru_cache(maxsize=None)
def schema(name: str) -> dict:
    """One of the code's schemas (``SCHEMA_DIR``), never one from the data folder."""
    return load_schema(SCHEMA_DIR / name)


def _validate(document: Any, schema_name: str, path: Path) -> None:
    validator = jsonschema.Draft202012Validator(schema(schema_name))
    errors = sorted(validator.iter_errors(document),
                    key=lambda e: (len(e.absolute_path), [str(p) for p in e.absolute_path]))
    if errors:
        problems = [f"{field_path(error.absolute_path)}: {error.message}" for error in errors]
        raise ConfigError(f"{display(path)}: " + "; ".join(problems))


def _fail(path: Path, field: str, message: str) -> None:
    raise ConfigError(f"{display(path)}: {field}: {message}")


def _check_metrics(document: dict, path: Path) -> None:
    names = set()
    for index, definition in enumerate(document["metric_definitions"]):
        where = f"metric_definitions[{index}]"
        if definition["Name"] in names:
            _fail(path, f"{where}.Name", f"{definition['Name']!r} is defined twice")
        names.add(definition["Name"])
        try:
            groups = re.compile(definition["Regex"]).groups
        except re.error as error:
            _fail(path, f"{where}.Regex", f"not a valid regular expression: {error}")
        if groups != 1:
            _fail(path, f"{where}.Regex", f"needs exactly one capture group, has {groups}")
    if document["objective"]["metric"] not in names:
        _fail(path, "objective.metric",
              f"{document['objective']['metric']!r} is not among the metric_definitions ({', '.join(sorted(names))})")


def load_preset(name_or_path: str | os.PathLike) -> dict:
    """A validated preset: {"hyperparameters": {...}, "metric_definitions": [...], "objective": {...}, ...}."""
    path = resolve(name_or_path)
    document = _read_json(path)
    _validate(document, PRESET_SCHEMA, path)
    _check_metrics(document, path)
    document["_path"] = str(path)
    return document


def _hyperparameter_schemas() -> dict:
    return schema(PRESET_SCHEMA)["properties"]["hyperparameters"]["properties"]


def _check_value(path: Path, where: str, name: str, value: Any, property_schema: dict) -> None:
    errors = list(jsonschema.Draft202012Validator(property_schema).iter_errors(value))
    if errors:
        _fail(path, where, f"{errors[0].message} (for hyperparameter {name})")


def _check_ranges(document: dict, path: Path) -> None:
    known = _hyperparameter_schemas()
    ranges = document["parameter_ranges"]
    seen: dict = {}
    for kind in RANGE_KINDS:
        for index, entry in enumerate(ranges.get(kind, [])):
            where = f"parameter_ranges.{kind}[{index}]"
            name = entry["Name"]
            if name not in known:
                _fail(path, f"{where}.Name", f"{name!r} is not a hyperparameter of the train script "
                                              f"(known: {', '.join(known)})")
            if name in seen:
                _fail(path, f"{where}.Name", f"{name!r} is also tuned at {seen[name]}")
            seen[name] = where
            prop = known[name]
            if kind == "CategoricalParameterRanges":
                for position, value in enumerate(entry["Values"]):
                    _check_value(path, f"{where}.Values[{position}]", name, value, prop)
                continue
            wanted = "integer" if kind == "IntegerParameterRanges" else "number"
            if prop.get("type") not in ("integer", "number") or (wanted == "number" and prop["type"] == "integer"):
                _fail(path, f"{where}.Name", f"{name} is a{'n' if prop.get('type') == 'integer' else ''} "
                                              f"{prop.get('type')} hyperparameter: "
                                              f"it cannot have a {kind[:-len('ParameterRanges')]} range")
            low, high = entry["MinValue"], entry["MaxValue"]
            for key in ("MinValue", "MaxValue"):
                _check_value(path, f"{where}.{key}", name, entry[key], prop)
            if not low < high:
                _fail(path, f"{where}.MaxValue", f"MinValue ({low}) must be less than MaxValue ({high})")
            scaling = entry.get("ScalingType", "Auto")
            if scaling == "Logarithmic" and low <= 0:
                _fail(path, f"{where}.MinValue", f"Logarithmic scaling needs MinValue > 0, got {low}")
            if scaling == "ReverseLogarithmic" and not (0 <= low and high < 1):
                _fail(path, f"{where}.ScalingType",
                      f"ReverseLogarithmic scaling needs 0 <= MinValue and MaxValue < 1, got [{low}, {high}]")
    if not seen:
        _fail(path, "parameter_ranges", "no hyperparameter is tuned")
    strategy = document.get("strategy", "Bayesian")
    if strategy == "Grid" and any(ranges.get(kind) for kind in RANGE_KINDS[:2]):
        _fail(path, "strategy", "Grid search takes CategoricalParameterRanges only")
    if document["max_parallel_jobs"] > document["max_jobs"]:
        _fail(path, "max_parallel_jobs",
              f"{document['max_parallel_jobs']} is more than max_jobs ({document['max_jobs']})")


def load_tuning(name_or_path: str | os.PathLike) -> dict:
    """A validated tuning configuration; with ``base_preset`` the preset is loaded and
    checked too and kept under ``"_preset"``."""
    path = resolve(name_or_path)
    document = _read_json(path)
    _validate(document, TUNING_SCHEMA, path)
    _check_ranges(document, path)
    base = document.get("base_preset")
    if base:
        if "/" in base or os.sep in base or base.endswith(".json"):
            base_path = Path(base) if Path(base).is_absolute() else path.parent / base
        else:  # a name: beside the tuning file, else in the hyperparams dir
            base_path = path.parent / f"{base}.json"
            if not base_path.exists():
                base_path = resolve(base)
        try:
            preset = load_preset(base_path)
        except ConfigError as error:
            _fail(path, "base_preset", str(error))
        names = {definition["Name"] for definition in preset["metric_definitions"]}
        if document["objective"]["metric"] not in names:
            _fail(path, "objective.metric", f"{document['objective']['metric']!r} is not a metric of "
                                            f"the base preset ({', '.join(sorted(names))})")
        document["_preset"] = preset
    document["_path"] = str(path)
    return document


def to_hyperparameter_string(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)  # shortest exact form: 0.001, 1e-05, 0.5
    return str(value)


def sagemaker_hyperparameters(preset: dict) -> dict:
    """The preset's hyperparameters as SageMaker wants them: {name: str}."""
    return {name: to_hyperparameter_string(value)
            for name, value in preset["hyperparameters"].items() if value is not None}


def tuning_parameter_ranges(tuning: dict) -> dict:
    """boto3's ``ParameterRanges``: all three lists, every value a string."""
    ranges = tuning["parameter_ranges"]
    result: dict = {kind: [] for kind in RANGE_KINDS}
    for kind in RANGE_KINDS[:2]:
        for entry in ranges.get(kind, []):
            result[kind].append({
                "Name": entry["Name"],
                "MinValue": to_hyperparameter_string(entry["MinValue"]),
                "MaxValue": to_hyperparameter_string(entry["MaxValue"]),
                "ScalingType": entry.get("ScalingType", "Auto"),
            })
    for entry in ranges.get("CategoricalParameterRanges", []):
        result["CategoricalParameterRanges"].append({
            "Name": entry["Name"],
            "Values": [to_hyperparameter_string(value) for value in entry["Values"]],
        })
    return result


def tuned_names(tuning: dict) -> set:
    return {entry["Name"] for kind in RANGE_KINDS for entry in tuning["parameter_ranges"].get(kind, [])}


def tuning_static_hyperparameters(tuning: dict) -> dict:
    """The base preset's hyperparameters, less the tuned ones, as strings ({} without a base)."""
    preset = tuning.get("_preset")
    if preset is None:
        return {}
    tuned = tuned_names(tuning)
    return {name: value for name, value in sagemaker_hyperparameters(preset).items() if name not in tuned}


def tuning_job_config(tuning: dict) -> dict:
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
