"""Experiments: ``experiments/<name>/experiment.yaml``, read, checked and resolved.

    root()             the experiments folder: $ML_PIPELINE_EXPERIMENTS_DIR, else the repository's experiments/
    load(folder)       the resolved experiment (a JSON-serialisable dict), or ExperimentError
    discover(root)     [(folder, experiment or ExperimentError)] for every folder holding an experiment.yaml

The resolved experiment is the file's keys with their defaults filled in, plus ``name`` (the folder's
name), ``folder`` and ``source_dir`` (absolute), ``code_kind`` ("script", "image" or "dockerfile"),
``prepare`` the ``module:function`` whichever form the file gives and ``prepare_job`` where it runs (None:
in the Airflow worker; a processing job's {instance_type, instance_count, volume_size_gb,
max_runtime_seconds, image}), ``batch_transform`` None or with its defaults filled in,
``file_hash`` (12 hex of sha256 over experiment.yaml's bytes) and ``source_hash`` (the content hash of
source_dir, ``images.context_hash``). Presets and tuning come inline or from
``include/hyperparams/<name>/`` (``config.experiment_files``); each preset is resolved to the
hyperparameters it trains with (the experiment's, with the preset's over them).

Every refusal is ``ExperimentError``: ``experiments/<name>/experiment.yaml: <field path>: <what is wrong>``.
Reading an experiment touches only its folder: no network, no heavy import (it runs at DAG parse time).
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Any

from ml_pipeline import config

ROOT_ENV = "ML_PIPELINE_EXPERIMENTS_DIR"
FILE = "experiment.yaml"
#: The experiment's name prefixes every name a run creates: short enough for AWS's limits (naming.py).
NAME = re.compile(r"^[a-z](?:[a-z0-9-]{0,18}[a-z0-9])?$")
CODE_KINDS = {"framework": "script", "image": "image", "dockerfile": "dockerfile"}
FRAMEWORK_VERSIONS = {"pytorch": "2.5", "sklearn": "1.2-1"}
#: Airflow's schedule presets (airflow.sdk.definitions.dag, timetables/_cron.py); anything else must be cron.
SCHEDULE_PRESETS = {
    "@once",
    "@continuous",
    "@hourly",
    "@daily",
    "@weekly",
    "@monthly",
    "@quarterly",
    "@yearly",
    "@annually",
    "@midnight",
}
DEFAULTS: dict[str, Any] = {
    "source_dir": ".",
    "channels": {},
    "prepare": None,
    "hyperparameters": {},
    "instance_type": "ml.m5.large",
    "instance_count": 1,
    "max_runtime_seconds": 3600,
    "use_spot": False,
    "max_cost_usd": None,
    "presets": {},
    "tuning": None,
    "deploy": False,
    "batch_transform": None,
    "schedule": None,
    "description": "",
}
#: A processing job's settings when ``prepare`` asks for one (``compute: processing``); image None: the
#: experiment's training image.
PREPARE_JOB_DEFAULTS = {
    "instance_type": "ml.m5.large",
    "instance_count": 1,
    "volume_size_gb": 30,
    "max_runtime_seconds": 3600,
    "image": None,
}
TRANSFORM_DEFAULTS = {
    "content_type": "text/csv",
    "accept": None,
    "split_type": "Line",
    "strategy": "MultiRecord",
    "max_payload_mb": 6,
    "max_concurrent_transforms": 1,
    "instance_type": "ml.m5.large",
    "instance_count": 1,
}
DEPLOY_DEFAULTS = {
    "instance_type": "ml.m5.large",
    "min_capacity": 1,
    "max_capacity": 2,
    "target_invocations_per_instance": 50,
}


class ExperimentError(ValueError):
    """An experiment file that cannot run; the message names the file, the field and what is wrong."""


def root() -> Path:
    override = os.environ.get(ROOT_ENV)
    return Path(override) if override else config.REPO_ROOT / "experiments"


def display(folder: Path) -> str:
    """``experiments/<name>/experiment.yaml``, whatever the root: the name users know the file by."""
    return f"experiments/{folder.name}/{FILE}"


def discover(folder: str | os.PathLike | None = None) -> list[tuple[Path, dict | ExperimentError]]:
    """Every experiment under ``folder`` (default ``root()``), by name: loaded, or the error that refused it."""
    base = Path(folder) if folder is not None else root()
    if not base.is_dir():
        return []
    found: list[tuple[Path, dict | ExperimentError]] = []
    for candidate in sorted(base.iterdir()):
        if (candidate / FILE).is_file() and not candidate.name.startswith("."):
            try:
                found.append((candidate, load(candidate)))
            except ExperimentError as error:
                found.append((candidate, error))
    return found


def _read(folder: Path) -> tuple[dict, bytes]:
    import yaml  # noqa: PLC0415 - PyYAML, read with its C loader where present

    file = display(folder)
    path = folder / FILE
    if path.is_symlink():
        raise ExperimentError(f"{file}: (top level): a symlink; the experiment file must be the folder's own")
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ExperimentError(f"{file}: (top level): cannot read: {error.strerror or error}") from None
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        document = yaml.load(data, Loader=loader)  # noqa: S506 - a safe loader
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise ExperimentError(
            f"{file}: (top level): not valid YAML: {getattr(error, 'problem', None) or error}{where}"
        ) from None
    if not isinstance(document, dict):
        raise ExperimentError(f"{file}: (top level): must be a mapping of keys, got {type(document).__name__}")
    return document, data


def _fail(folder: Path, field: str | tuple, message: str) -> None:
    where = config.field_path(field if isinstance(field, tuple) else (field,))
    raise ExperimentError(f"{display(folder)}: {where}: {message}")


def _inside(folder: Path, relative: str, field, *, kind: str | None = None) -> Path:
    """``relative`` resolved inside ``folder``: no absolute path, no "..", no symlink leading out; ``kind``
    "file" or "dir" says what must exist there."""
    if relative.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", relative) or "\\" in relative:
        _fail(folder, field, f"{relative!r} must be a path relative to the experiment folder")
    if ".." in Path(relative).parts:
        _fail(folder, field, f"{relative!r} leads out of the experiment folder ('..')")
    base = folder.resolve()
    resolved = (base / relative).resolve()
    if resolved != base and base not in resolved.parents:
        _fail(folder, field, f"{relative!r} leads out of the experiment folder (a symlink)")
    if kind == "file" and not resolved.is_file():
        _fail(folder, field, f"{relative!r}: no such file in the experiment folder")
    if kind == "dir" and not resolved.is_dir():
        _fail(folder, field, f"{relative!r}: no such folder in the experiment folder")
    return resolved


def _module_file(folder: Path, source_dir: Path, reference: str, field) -> None:
    """A ``module:function`` reference's module must be a file in source_dir (imported only at run time)."""
    module = reference.split(":", 1)[0].replace(".", "/")
    candidates = [f"{module}.py", f"{module}/__init__.py"]
    relative = os.path.relpath(source_dir, folder.resolve())
    for candidate in candidates:
        path = _inside(folder, os.path.normpath(os.path.join(relative, candidate)), field)
        if path.is_file():
            return
    _fail(folder, field, f"{reference!r}: no module {candidates[0]} in source_dir")


def _schedule(folder: Path, schedule) -> None:
    if schedule is None or schedule in SCHEDULE_PRESETS:
        return
    from croniter import croniter  # noqa: PLC0415 - Airflow's own cron parser

    if schedule.startswith("@") or not croniter.is_valid(schedule):
        _fail(
            folder,
            "schedule",
            f"{schedule!r} is neither a cron expression nor one of {', '.join(sorted(SCHEDULE_PRESETS))}",
        )


def _presets(folder: Path, document: dict) -> dict:
    """Inline and file presets (a name in both is refused), each checked, with its merged hyperparameters."""
    name, file = folder.name, display(folder)
    presets = {}
    for preset, value in document.get("presets", {}).items():
        try:
            presets[preset] = config.check_preset(value, file, ("presets", preset))
        except config.ConfigError as error:
            raise ExperimentError(str(error)) from None
    for preset, path in config.experiment_files(name)["presets"].items():
        if preset in presets:
            _fail(folder, ("presets", preset), f"defined inline and in {config.display(path)}: keep one")
        if config.hyperparams_dir().resolve() not in path.resolve().parents:
            _fail(folder, ("presets", preset), f"{config.display(path)} leads out of the hyperparams folder")
        try:
            presets[preset] = {k: v for k, v in config.load_preset(path).items() if k != "_path"}
        except config.ConfigError as error:
            raise ExperimentError(f"{file}: presets.{preset}: {error}") from None
        presets[preset]["file"] = config.display(path)
    return presets


def _tuning(folder: Path, document: dict, presets: dict) -> dict | None:
    file = display(folder)
    tuning_file = config.experiment_files(folder.name)["tuning"]
    inline = document.get("tuning")
    if inline is not None and tuning_file is not None:
        _fail(folder, "tuning", f"defined inline and in {config.display(tuning_file)}: keep one")
    if inline is None and tuning_file is None:
        return None
    metric_names = {definition["Name"] for definition in document["metric_definitions"]}
    try:
        if inline is not None:
            return config.check_tuning(
                inline,
                file,
                ("tuning",),
                document.get("hyperparameters", {}),
                presets,
                metric_names,
                document["objective"],
            )
        loaded = {k: v for k, v in config.load_tuning(tuning_file).items() if k != "_path"}
        return {
            **config.check_tuning(
                loaded,
                config.display(tuning_file),
                (),
                document.get("hyperparameters", {}),
                presets,
                metric_names,
                document["objective"],
            ),
            "file": config.display(tuning_file),
        }
    except config.ConfigError as error:
        message = str(error)
        raise ExperimentError(message if inline is not None else f"{file}: tuning: {message}") from None


def _check_channels(folder: Path, channels: dict) -> None:
    """Each channel's source: an s3://<bucket>/<prefix> URI, or a folder inside the experiment."""
    for name, value in channels.items():
        source = value if isinstance(value, str) else value["source"]
        if source.startswith("s3://"):
            if not re.match(r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?$", source):
                _fail(folder, ("channels", name), f"{source!r} is not an s3://<bucket>/<prefix> URI")
        elif "://" in source:
            _fail(folder, ("channels", name), f"{source!r}: a channel is an s3:// prefix or a folder of the experiment")
        else:
            _inside(folder, source, ("channels", name), kind="dir")


def _prepare(folder: Path, value: str | dict | None) -> tuple[str | None, dict | None]:
    """(the ``module:function``, the processing job's settings or None): the plain string and ``compute:
    worker`` call it in the Airflow worker; ``compute: processing`` in a SageMaker processing job."""
    if not isinstance(value, dict):
        return value, None
    settings = {key: item for key, item in value.items() if key not in ("function", "compute")}
    if value.get("compute", "worker") == "worker":
        if settings:
            _fail(folder, ("prepare", sorted(settings)[0]), "only with compute: processing (a processing job's)")
        return value["function"], None
    return value["function"], {**PREPARE_JOB_DEFAULTS, **settings}


def _batch_transform(folder: Path, value: dict) -> dict:
    """The batch transform's settings, its defaults filled in; its output never under its input, an S3
    prefix that takes every key starting with it (the next run would score the scores)."""
    resolved = {**TRANSFORM_DEFAULTS, **value}
    if (resolved["output"].rstrip("/") + "/").startswith(resolved["input"]):
        _fail(
            folder,
            ("batch_transform", "output"),
            f"{resolved['output']!r} lies under input {resolved['input']!r}: the next run would score these "
            "scores too; give the output a prefix of its own",
        )
    return resolved


def load(folder: str | os.PathLike) -> dict:
    """The resolved experiment of ``folder`` (its ``experiment.yaml``), or ExperimentError."""
    folder = Path(folder).absolute()
    document, data = _read(folder)
    file = display(folder)
    if not NAME.match(folder.name):
        _fail(
            folder,
            "(folder name)",
            f"{folder.name!r} is not an experiment name: 1-20 lowercase letters, digits "
            "and hyphens, starting with a letter, not ending with a hyphen",
        )
    found = next(config.non_finite(document), None)
    if found:
        _fail(folder, found[0], f"{found[1]} is not a finite number")
    try:
        config._validate(document, config.EXPERIMENT_SCHEMA.name, file)
    except config.ConfigError as error:
        raise ExperimentError(str(error)) from None

    kinds = [key for key in CODE_KINDS if key in document]
    if len(kinds) != 1:
        _fail(
            folder,
            "(top level)",
            "needs exactly one of framework (script mode, with entry_point), image or "
            f"dockerfile; found {', '.join(kinds) or 'none'}",
        )
    kind = CODE_KINDS[kinds[0]]
    script_keys = [key for key in ("entry_point", "framework_version") if key in document]
    if kind == "script" and "entry_point" not in document:
        _fail(folder, "entry_point", "script mode (framework) needs the training script's file name")
    if kind != "script" and script_keys:
        _fail(folder, script_keys[0], f"only for script mode (framework), not with {kinds[0]}")

    experiment = {**DEFAULTS, **document}
    source_dir = _inside(folder, experiment["source_dir"], "source_dir", kind="dir")
    if kind == "script":
        experiment.setdefault("framework_version", FRAMEWORK_VERSIONS[experiment["framework"]])
        entry = os.path.normpath(os.path.join(os.path.relpath(source_dir, folder.resolve()), experiment["entry_point"]))
        _inside(folder, entry, "entry_point", kind="file")
    if kind == "dockerfile":
        context = _inside(folder, experiment["dockerfile"], "dockerfile", kind="dir")
        if not (context / "Dockerfile").is_file():
            _fail(folder, "dockerfile", f"{experiment['dockerfile']!r} has no Dockerfile")
    experiment["prepare"], experiment["prepare_job"] = _prepare(folder, experiment["prepare"])
    if experiment["prepare"]:
        field = "prepare" if isinstance(document["prepare"], str) else ("prepare", "function")
        _module_file(folder, source_dir, experiment["prepare"], field)
    if not experiment["channels"] and not experiment["prepare"]:
        _fail(folder, "channels", "no data: give channels, or prepare (a module:function writing them)")
    _check_channels(folder, experiment["channels"])

    try:
        config.check_metrics(experiment, file)
    except config.ConfigError as error:
        raise ExperimentError(str(error)) from None
    metric_names = {definition["Name"] for definition in experiment["metric_definitions"]}
    gate = {
        "metric": experiment["objective"]["metric"],
        "direction": experiment["objective"]["type"],
        "min_improvement": 0.0,
        **(document.get("gate") or {}),
    }
    if gate["metric"] not in metric_names:
        _fail(
            folder,
            ("gate", "metric"),
            f"{gate['metric']!r} is not among the metric_definitions ({', '.join(sorted(metric_names))})",
        )
    experiment["gate"] = gate

    if experiment["deploy"] is not False:
        deploy = {**DEPLOY_DEFAULTS, **experiment["deploy"]}
        if deploy["min_capacity"] > deploy["max_capacity"]:
            _fail(
                folder,
                ("deploy", "min_capacity"),
                f"{deploy['min_capacity']} is above max_capacity ({deploy['max_capacity']})",
            )
        smoke = dict(deploy["smoke"])
        _inside(folder, smoke["samples"], ("deploy", "smoke", "samples"), kind="file")
        if smoke.get("check"):
            _module_file(folder, source_dir, smoke["check"], ("deploy", "smoke", "check"))
        deploy["smoke"] = {"check": None, **smoke}
        experiment["deploy"] = deploy
    if experiment["batch_transform"] is not None:
        experiment["batch_transform"] = _batch_transform(folder, experiment["batch_transform"])
    _schedule(folder, experiment["schedule"])

    presets = _presets(folder, document)
    base = experiment["hyperparameters"]
    for preset in presets.values():
        preset["hyperparameters"] = {**base, **preset["hyperparameters"]}
    experiment["presets"] = presets
    experiment["tuning"] = _tuning(folder, document, presets)

    from ml_pipeline.images import context_hash  # noqa: PLC0415 - hashlib and os only

    experiment.update(
        {
            "name": folder.name,
            "folder": str(folder.resolve()),
            "source_dir": str(source_dir),
            "code_kind": kind,
            "file_hash": hashlib.sha256(data).hexdigest()[:12],
            "source_hash": context_hash(source_dir),
        }
    )
    return experiment
