"""A run's plan: its validated settings and every name and request shape it will use.

``make_plan`` runs first in the DAG and refuses bad input before anything is created: JSON Schema already
checked each Param's type and range; here go the numbers (finite, wherever they came from), the names
as the AWS service each goes to checks them, the rules across fields, the experiment's presets and
tuning, and the instance types AWS knows. A Training field left empty takes the preset's value, else the
experiment's (``resolve_from_preset``). The plan carries the resolved experiment (``plan["experiment"]``)
and what it trained from (``plan["revision"]``). Its hyperparameters are typed (JSON values): the
request builders encode them as the job's code kind wants them. The rest of the chain reads the plan
from XCom (it holds no secret).

The plan is a ``Plan``, a TypedDict with typed parts (``RunParams``, ``Names``, ``Revision`` ...): what
travels through XCom is the plain JSON object it is, so a run planned before a change of these types reads
as it did, and a type checker sees every lookup. The resolved experiment stays the mapping its schema
describes (include/experiment.schema.json).
"""

import ipaddress
import re
from datetime import datetime
from functools import lru_cache
from typing import Any, Literal, NotRequired, TypedDict, cast

from ml_pipeline import config as hyperparams
from ml_pipeline.cost import budget_errors
from ml_pipeline.infra.params import validate_infra
from ml_pipeline.naming import endpoint_name, run_key, run_names
from ml_pipeline.params import FROM_PRESET

#: Each name Param and the botocore shape (service, shape) of the API it goes to: its length limits and
#: pattern are checked here as that service checks them (botocore's client does not).
NAME_SHAPES = {
    "ecr_repository": ("ecr", "RepositoryName"),
    "model_package_group": ("sagemaker", "EntityName"),
    "endpoint_name": ("sagemaker", "EndpointName"),
    "role_arn": ("sagemaker", "RoleArn"),
    "ami_ssm_parameter": ("ssm", "PSParameterName"),
}
#: S3's rules for general purpose bucket names (its model has no pattern): 3-63 characters, lowercase
#: letters, digits, dots and hyphens, a letter or digit at each end, no "..", no IP address, and none of
#: the reserved prefixes and suffixes.
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_BUCKET_PREFIXES = ("xn--", "sthree-", "amzn-s3-demo-")
_BUCKET_SUFFIXES = ("-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3")
#: Not a Param: the preset's ML storage volume, else SageMaker's common 30 GiB.
DEFAULT_VOLUME_GB = 30


class PlanError(ValueError):
    """Bad input: the run fails before creating anything."""


class RunParams(TypedDict):
    """The run's Params (``pipeline_params`` and ``infra_params``) as ``make_plan`` resolved them: the
    Training fields taken from the preset are set, and ``volume_size_gb``, not a Param, is the preset's."""

    mode: Literal["train", "tune"]
    preset: str | None
    bucket: str
    role_arn: str
    ecr_repository: str
    model_package_group: str
    instance_type: str
    instance_count: int
    use_spot: bool
    max_runtime_seconds: int
    max_wait_seconds: int
    max_cost_usd: float | None
    hyperparameters: dict[str, Any]
    max_jobs: int | None
    max_parallel_jobs: int | None
    endpoint_name: str
    endpoint_instance_type: str
    keep_endpoint: bool
    min_capacity: int
    max_capacity: int
    target_invocations_per_instance: int
    scale_out_cooldown: int
    scale_in_cooldown: int
    compute: Literal["sagemaker", "host"]
    host_instance_type: str
    allowed_cidrs: list[str]
    ssh_key_name: str | None
    ami_id: str | None
    ami_ssm_parameter: str | None
    data_volume_gb: int
    provision_vpc: bool
    vpc_cidr: str
    availability_zone: str | None
    stack_ttl_hours: float
    volume_size_gb: int


class Objective(TypedDict):
    metric: str
    type: Literal["Minimize", "Maximize"]


class MetricDefinition(TypedDict):
    Name: str
    Regex: str


class Tuning(TypedDict):
    """The experiment's tuning (include/hyperparams/tuning.schema.json), with the run's trial limits."""

    objective: Objective
    max_jobs: int
    max_parallel_jobs: int
    parameter_ranges: dict[str, list[dict[str, Any]]]
    strategy: NotRequired[str]
    early_stopping: NotRequired[str]
    base_preset: NotRequired[str]
    description: NotRequired[str]


class Names(TypedDict):
    """Every name the run uses (``naming.run_names``, and the endpoint's)."""

    training_job: str
    tuning_job: str
    processing_job: str
    transform_job: str
    model: str
    endpoint_config: str
    endpoint: str
    data_prefix: str
    model_prefix: str
    output_prefix: str
    checkpoint_prefix: str


class Revision(TypedDict):
    """What the run trains from: the experiment file's and its source's hashes, and (the DAG's plan task
    adds them) the commit and what started the run, with the started commit's file hash when it differs."""

    file_hash: str
    source_hash: str | None
    commit: str | None
    trigger: NotRequired[str]
    event_file_hash: NotRequired[str]


class DataInterval(TypedDict):
    start: str | None
    end: str | None


class Plan(TypedDict):
    """A run's plan (``make_plan``): JSON through XCom as it is."""

    params: RunParams
    experiment: dict[str, Any]
    revision: Revision
    hyperparameters: dict[str, Any]
    metric_definitions: list[MetricDefinition]
    objective: Objective
    tuning: NotRequired[Tuning]
    tuning_config: NotRequired[dict[str, Any]]
    static_hyperparameters: NotRequired[dict[str, Any]]
    key: str
    names: Names
    data_seed: int
    data_interval: DataInterval


@lru_cache(maxsize=None)
def _model(service: str):
    import botocore.session  # noqa: PLC0415 - the models are read only when a run starts

    return botocore.session.get_session().get_service_model(service)


def _instance_types(shape: str) -> set[str]:
    return set(_model("sagemaker").shape_for(shape).enum)


def _form(experiment: dict) -> dict:
    from ml_pipeline.infra.params import infra_params  # noqa: PLC0415
    from ml_pipeline.params import pipeline_params  # noqa: PLC0415

    return {**pipeline_params(experiment), **infra_params()}


def non_finite_errors(params: dict, experiment: dict) -> list[str]:
    """NaN and Infinity anywhere in the run's values (the REST API's JSON parser accepts them)."""
    titles = {name: param.schema.get("title", name) for name, param in _form(experiment).items()}
    return [
        f"{hyperparams.field_path((name, *rest))} ({titles.get(name, name)}): {value} is not a finite number"
        for (name, *rest), value in hyperparams.non_finite(params)
    ]


def name_errors(params: dict) -> list[str]:
    """The names each AWS service would refuse, checked as it checks them, before anything is created."""
    errors = []
    for name, (service, shape_name) in NAME_SHAPES.items():
        value = params.get(name)
        if value is None:
            continue
        rules = _model(service).shape_for(shape_name).metadata
        low, high = rules.get("min", 0), rules.get("max")
        if not isinstance(value, str) or len(value) < low or (high is not None and len(value) > high):
            errors.append(f"{name}: {value!r} must be {low} to {high} characters ({service} {shape_name})")
        elif "pattern" in rules and not re.fullmatch(rules["pattern"], value):
            errors.append(f"{name}: {value!r} is not a valid {service} {shape_name} (it must match {rules['pattern']})")
    errors.extend(bucket_name_errors(params.get("bucket")))
    return errors


def bucket_name_errors(bucket: object) -> list[str]:
    if not isinstance(bucket, str) or not _BUCKET.match(bucket):
        return [
            f"bucket: {bucket!r} is not an S3 bucket name (3-63 lowercase letters, digits, dots and hyphens, "
            "a letter or digit at each end)"
        ]
    try:
        ipaddress.IPv4Address(bucket)
        return [f"bucket: {bucket} is formatted as an IP address, which S3 refuses"]
    except ValueError:
        pass
    if ".." in bucket:
        return [f"bucket: {bucket} has two adjacent dots, which S3 refuses"]
    reserved = [part for part in _BUCKET_PREFIXES if bucket.startswith(part)]
    reserved += [part for part in _BUCKET_SUFFIXES if bucket.endswith(part)]
    return [f"bucket: {bucket} uses {reserved[0]!r}, reserved by S3"] if reserved else []


def job_type_errors(experiment: dict) -> list[str]:
    """The instance types of ``prepare``'s processing job and of the batch transform, as those APIs know them."""
    errors = []
    checks = (
        ("prepare", experiment.get("prepare_job"), "ProcessingInstanceType", "processing"),
        ("batch_transform", experiment.get("batch_transform"), "TransformInstanceType", "transform"),
    )
    for field, settings, shape, kind in checks:
        if settings and settings["instance_type"] not in _instance_types(shape):
            errors.append(
                f"{field}.instance_type: {settings['instance_type']} is not a SageMaker {kind} instance type "
                f"(experiments/{experiment['name']}/experiment.yaml)"
            )
    return errors


def resolve_from_preset(p: dict, preset: dict, experiment: dict) -> list[str]:
    """A Training field the form left empty takes the preset's value, else the experiment's (in place). A
    value given in the form always wins; the ML storage volume, not a Param, is always the preset's.
    Returns what is wrong with the values taken from the preset: each must pass its Param's own schema, as
    a value typed into the form does."""
    import jsonschema  # noqa: PLC0415

    errors = []
    form = _form(experiment)
    for name in FROM_PRESET:
        if p.get(name) is None:
            p[name] = preset.get(name, experiment[name])
            schema = form[name].schema
            for error in jsonschema.Draft202012Validator(schema).iter_errors(p[name]):
                errors.append(
                    f"{name} ({schema.get('title', name)}): the preset's {p[name]!r} is beyond what the "
                    f"form allows: {error.message}"
                )
    p["volume_size_gb"] = preset.get("volume_size_gb", DEFAULT_VOLUME_GB)
    return errors


def _preset(p: dict, experiment: dict, errors: list) -> dict:
    name = p.get("preset")
    if name is None:
        return {"hyperparameters": dict(experiment["hyperparameters"])}
    if name not in experiment["presets"]:
        errors.append(
            f"preset: {name!r} is not a preset of experiment {experiment['name']} "
            f"({', '.join(experiment['presets']) or 'it has none'})"
        )
        return {"hyperparameters": dict(experiment["hyperparameters"])}
    return experiment["presets"][name]


def make_plan(
    params: dict[str, Any],
    run_id: str,
    logical_date: datetime,
    experiment: dict[str, Any],
    data_interval: tuple[datetime | None, datetime | None] | None = None,
) -> Plan:
    """The run's plan for ``experiment`` (the resolved one, ``experiments.load``). ``data_interval``: the run's
    (start, end), which the experiment's ``prepare`` writes the data for; default: the logical date's instant."""
    p: Any = dict(params)  # RunParams once resolve_from_preset has filled it and every check below passed
    errors = non_finite_errors(p, experiment)
    if errors:  # nothing else can be judged on such numbers
        raise PlanError("Refused before anything was created:\n- " + "\n- ".join(errors))
    errors.extend(name_errors(p))

    overrides = dict(p.get("hyperparameters") or {})
    preset = _preset(p, experiment, errors)
    tuning = None
    if p["mode"] == "tune":
        tuning = experiment["tuning"]
        if tuning is None:
            errors.append(
                f"mode: experiment {experiment['name']} has no tuning (add tuning: to its experiment.yaml "
                f"or include/hyperparams/{experiment['name']}/tuning.json)"
            )
    base = experiment["presets"].get(tuning["base_preset"]) if tuning and tuning.get("base_preset") else None
    # The resources come from the preset the jobs train with: in tune mode the tuning's base preset.
    errors.extend(resolve_from_preset(p, (base or {}) if tuning else preset, experiment))

    if p["instance_type"] not in _instance_types("TrainingInstanceType"):
        errors.append(f"instance_type: {p['instance_type']} is not a SageMaker training instance type")
    if experiment["deploy"] and p["endpoint_instance_type"] not in _instance_types("ProductionVariantInstanceType"):
        errors.append(f"endpoint_instance_type: {p['endpoint_instance_type']} is not a SageMaker hosting type")
    errors.extend(job_type_errors(experiment))
    if experiment["deploy"] and p["min_capacity"] > p["max_capacity"]:
        errors.append(f"min_capacity ({p['min_capacity']}) is above max_capacity ({p['max_capacity']})")
    errors.extend(validate_infra(p))
    errors.extend(budget_errors(p))
    if p["use_spot"] and p["max_wait_seconds"] < p["max_runtime_seconds"]:
        errors.append("max_wait_seconds must be at least max_runtime_seconds with managed spot training")

    static: dict[str, Any] = {}
    if tuning is not None:
        tuning = cast(Tuning, dict(tuning))  # the experiment's, with the run's limits
        if p.get("max_jobs"):
            tuning["max_jobs"] = p["max_jobs"]
        if p.get("max_parallel_jobs"):
            tuning["max_parallel_jobs"] = p["max_parallel_jobs"]
        if tuning["max_parallel_jobs"] > tuning["max_jobs"]:
            errors.append("max_parallel_jobs is above max_jobs")
        tuned = hyperparams.tuned_names(tuning)
        static = {**experiment["hyperparameters"], **(base or {}).get("hyperparameters", {}), **overrides}
        static = {name: value for name, value in static.items() if name not in tuned}
    if errors:
        raise PlanError("Refused before anything was created:\n- " + "\n- ".join(errors))

    key = run_key(run_id, logical_date, experiment["name"])
    names: Any = run_names(experiment["name"], key)
    names["endpoint"] = endpoint_name(p["endpoint_name"], key, p["keep_endpoint"])
    start, end = data_interval or (logical_date, logical_date)
    plan = Plan(
        params=p,
        experiment=experiment,
        revision=Revision(file_hash=experiment["file_hash"], source_hash=experiment["source_hash"], commit=None),
        hyperparameters={**experiment["hyperparameters"], **preset["hyperparameters"], **overrides},
        metric_definitions=experiment["metric_definitions"],
        objective=tuning["objective"] if tuning is not None else experiment["objective"],
        key=key,
        names=names,
        data_seed=int(key.split("-")[0]) if key[0].isdigit() else 0,
        data_interval=DataInterval(start=start.isoformat() if start else None, end=end.isoformat() if end else None),
    )
    if tuning is not None:
        plan["tuning"] = tuning
        plan["tuning_config"] = hyperparams.tuning_job_config(tuning)
        plan["static_hyperparameters"] = static
    return plan
