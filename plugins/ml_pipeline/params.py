"""The pipeline's knobs, as Airflow Params with JSON Schema: the trigger form validates and explains them.

``pipeline_params(experiment)`` pre-fills them from the resolved experiment (``experiments.load``): its
presets, its resources, its deploy settings, the names derived from it. Defaults for what differs between
accounts (bucket, role, region) come from the environment, so the same DAG runs on localaws and on real
AWS unchanged.
"""

from __future__ import annotations

import os
from typing import Any

from airflow.sdk import Param

_NAME = "^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$"  # SageMaker's EntityName and EndpointName
_ML_INSTANCE = r"^ml\.[a-z0-9]+\.[a-z0-9]+$"
#: ECR's RepositoryName (botocore's ECR model; tests/dags/test_plan.py keeps the two the same), 2-256 characters.
ECR_REPOSITORY = r"^[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(\/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*$"
#: SageMaker's RoleArn (botocore's SageMaker model), 20-2048 characters.
ROLE_ARN = r"^arn:aws[a-z\-]*:iam::\d{12}:role/?[a-zA-Z_0-9+=,.@\-_/]+$"
#: The trigger form's sections, in the order they are shown.
RUN, TRAINING, TUNING, DEPLOY, HOST, VPC = "The run", "Training", "Tuning", "Deploy", "Host", "VPC"
SECTIONS = (RUN, TRAINING, TUNING, DEPLOY, HOST, VPC)
#: The Training fields that, left empty in the form, take the preset's value, else the experiment's.
FROM_PRESET = ("instance_type", "instance_count", "max_runtime_seconds")
#: JSON Schema has no "finite" keyword, and NaN passes every comparison (each one is false, so neither
#: ``minimum`` nor ``maximum`` fails): NaN is the only number valid under both of these. Infinity is
#: caught by each number Param's ``maximum`` and ``minimum``.
NAN = {"type": "number", "minimum": 0, "exclusiveMaximum": 0}


class _SharedSchema(dict):
    """A Param's JSON Schema, shared by every copy Airflow makes of the Param.

    Airflow deep-copies the DAG's Params for every operator, at each level of its class hierarchy:
    192 copies of 35 Params for the pipeline DAG, which was most of its parse time. Nothing changes a
    schema once the DAG is defined, so the copies need their own values only.
    """

    def __deepcopy__(self, memo: dict) -> _SharedSchema:
        return self


def form_param(default: Any, description: str | None = None, **schema: Any) -> Param:
    """``Param(default, description, **schema)`` whose schema its copies share (see _SharedSchema). A number
    Param refuses NaN (the REST API's JSON parser, like Python's, accepts it)."""
    types = schema.get("type")
    if "number" in (types if isinstance(types, list) else [types]):
        schema["not"] = NAN
    return Param(default, description, schema=_SharedSchema(schema))


def _presets_text(experiment: dict) -> str:
    lines = [
        f"{name}: {preset.get('description') or 'hyperparameters ' + str(preset['hyperparameters'])}"
        for name, preset in experiment["presets"].items()
    ]
    return " ".join(lines)


def _from_preset(experiment: dict, field: str) -> str:
    """What an empty Training field becomes, as the form says it: "<value> for <preset>", then the experiment's."""
    said = [f"{preset[field]} for {name}" for name, preset in experiment["presets"].items() if field in preset]
    return (
        "Empty: the preset's (in tune mode, the tuning's base preset's)"
        + (f": {', '.join(said)}" if said else "")
        + f"; else the experiment's, {experiment[field]}."
    )


def pipeline_params(experiment: dict) -> dict[str, Param]:
    from ml_pipeline.naming import defaults  # noqa: PLC0415

    env = os.environ.get
    names = defaults(experiment["name"])
    tuning = experiment["tuning"]
    deploy = experiment["deploy"] or {
        "instance_type": "ml.m5.large",
        "min_capacity": 1,
        "max_capacity": 2,
        "target_invocations_per_instance": 50,
    }
    no_deploy = "" if experiment["deploy"] else " (This experiment does not deploy: deploy: false.)"
    return {
        "mode": form_param(
            "train",
            enum=["train", "tune"] if tuning else ["train"],
            title="Mode",
            section=RUN,
            description="train: one SageMaker training job with the experiment's hyperparameters "
            "and the Hyperparameter preset over them. tune: a hyperparameter tuning job "
            "over the experiment's tuning ranges, keeping the best trial"
            + ("." if tuning else " (this experiment has no tuning)."),
        ),
        "preset": form_param(
            None,
            type=["null", "string"],
            enum=[None, *experiment["presets"]],
            title="Hyperparameter preset",
            section=RUN,
            description="Empty: the experiment's hyperparameters as they are. A preset's values "
            "replace the experiment's. " + _presets_text(experiment),
        ),
        "bucket": form_param(
            env("ML_PIPELINE_BUCKET", "ml-pipeline-artifacts"),
            type="string",
            pattern="^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$",
            title="S3 bucket",
            section=RUN,
            description="Data, checkpoints, model artifacts and metadata go under run-keyed "
            "prefixes here. A missing bucket is created encrypted, versioned, private "
            "and (over HTTPS, as on AWS) TLS-only; an existing one is used as it is, "
            "never reconfigured, and refused when it is unencrypted or public.",
        ),
        "role_arn": form_param(
            env("ML_PIPELINE_SAGEMAKER_ROLE_ARN", "arn:aws:iam::123456789012:role/SageMakerExecution"),
            type="string",
            pattern=ROLE_ARN,
            minLength=20,
            maxLength=2048,
            title="SageMaker execution role ARN",
            section=RUN,
            description="The role SageMaker jobs and endpoints assume (see the README's IAM section).",
        ),
        "ecr_repository": form_param(
            names["ecr_repository"],
            type="string",
            pattern=ECR_REPOSITORY,
            minLength=2,
            maxLength=256,
            title="ECR repository",
            section=RUN,
            description="Where the experiment's own image is pushed (dockerfile): "
            "lowercase letters and digits, with . _ or - between them and / "
            "between path parts, as ECR names repositories.",
        ),
        "model_package_group": form_param(
            names["model_package_group"],
            type="string",
            pattern=_NAME,
            maxLength=63,
            title="Model package group",
            section=RUN,
            description="Each run's best model is registered as a version here.",
        ),
        "instance_type": form_param(
            None,
            type=["null", "string"],
            pattern=_ML_INSTANCE,
            title="Training instance type",
            section=TRAINING,
            description=_from_preset(experiment, "instance_type") + " Or a SageMaker "
            "training type, e.g. ml.m5.xlarge, ml.g5.xlarge (GPU), "
            "ml.p4d.24xlarge.",
        ),
        "instance_count": form_param(
            None,
            type=["null", "integer"],
            minimum=1,
            maximum=8,
            title="Training instances",
            section=TRAINING,
            description=_from_preset(experiment, "instance_count") + " Above 1, training runs on hosts algo-1..N.",
        ),
        "use_spot": form_param(
            experiment["use_spot"],
            type="boolean",
            title="Managed spot training",
            section=TRAINING,
            description="Pay spot prices; SageMaker resumes from checkpoints after an interruption.",
        ),
        "max_runtime_seconds": form_param(
            None,
            type=["null", "integer"],
            minimum=60,
            maximum=432000,
            title="Max runtime (s)",
            section=TRAINING,
            description="Each training job is stopped after this much training time. "
            + _from_preset(experiment, "max_runtime_seconds"),
        ),
        "max_wait_seconds": form_param(
            7200,
            type="integer",
            minimum=60,
            maximum=432000,
            title="Max wait (s), spot",
            section=TRAINING,
            description="Managed spot training only: training plus waiting for capacity; at least Max runtime (s).",
        ),
        "max_cost_usd": form_param(
            experiment.get("max_cost_usd"),
            type=["null", "number"],
            exclusiveMinimum=0,
            maximum=1_000_000,
            title="Budget (USD)",
            section=TRAINING,
            description="Empty: no budget. Set: a training or tuning job whose estimated cost so far (its "
            "billable seconds x instances x the on-demand price in include/prices/, README Cost) passes it is "
            "stopped, and the run fails saying so. The training type must have a price there. Not with "
            "Where training runs: host.",
        ),
        "hyperparameters": form_param(
            {},
            type="object",
            additionalProperties={"type": ["string", "number", "boolean"], "not": NAN},
            title="Hyperparameter overrides",
            section=TRAINING,
            description="Over the preset's and the experiment's, e.g. {\"epochs\": 3}. "
            "The experiment's: " + str(experiment["hyperparameters"]) + ".",
        ),
        "max_jobs": form_param(
            None,
            type=["null", "integer"],
            minimum=1,
            maximum=100,
            title="Max tuning trials",
            section=TUNING,
            description="Tune mode. Empty: the experiment's tuning limit"
            + (f" ({tuning['max_jobs']})." if tuning else "."),
        ),
        "max_parallel_jobs": form_param(
            None,
            type=["null", "integer"],
            minimum=1,
            maximum=10,
            title="Trials in parallel",
            section=TUNING,
            description="Tune mode. Empty: the experiment's tuning's"
            + (f" ({tuning['max_parallel_jobs']})" if tuning else "")
            + ". At most Max tuning trials.",
        ),
        "endpoint_name": form_param(
            names["endpoint_name"],
            type="string",
            pattern=_NAME,
            maxLength=63,
            title="Endpoint",
            section=DEPLOY,
            description="With Keep the endpoint on, the stable endpoint: created on the first "
            "deploy, updated blue/green after. Off, each run deploys its own "
            "<name>-<run> endpoint and deletes it at its end." + no_deploy,
        ),
        "endpoint_instance_type": form_param(
            deploy["instance_type"],
            type="string",
            pattern=_ML_INSTANCE,
            title="Endpoint instance type",
            section=DEPLOY,
            description="A SageMaker hosting instance type, e.g. ml.m5.large.",
        ),
        "keep_endpoint": form_param(
            False,
            type="boolean",
            title="Keep the endpoint",
            section=DEPLOY,
            description="Off (the default, as the original projects do): teardown deletes the "
            "endpoint after the smoke test, so nothing is left billing. Not with "
            "SageMaker inside the run's VPC, which teardown removes.",
        ),
        "min_capacity": form_param(
            deploy["min_capacity"],
            type="integer",
            minimum=1,
            maximum=20,
            title="Autoscaling min instances",
            section=DEPLOY,
            description="Also the endpoint's initial instance count; at most Autoscaling max instances.",
        ),
        "max_capacity": form_param(
            deploy["max_capacity"],
            type="integer",
            minimum=1,
            maximum=20,
            title="Autoscaling max instances",
            section=DEPLOY,
        ),
        "target_invocations_per_instance": form_param(
            deploy["target_invocations_per_instance"],
            type="integer",
            minimum=1,
            maximum=100000,
            title="Target invocations per instance per minute",
            section=DEPLOY,
            description="The target-tracking policy's target (SageMakerVariantInvocationsPerInstance).",
        ),
        "scale_out_cooldown": form_param(
            30, type="integer", minimum=0, maximum=3600, title="Scale-out cooldown (s)", section=DEPLOY
        ),
        "scale_in_cooldown": form_param(
            30, type="integer", minimum=0, maximum=3600, title="Scale-in cooldown (s)", section=DEPLOY
        ),
    }


def check_defaults(params: dict[str, Param]) -> None:
    """Each Param's default valid under its schema, or ValueError naming it (the DAG is then an import error).
    As Airflow's own check of a scheduled DAG's defaults (``Param.resolve``), less its metaschema check of
    every schema at every parse: these schemas are the code's, checked by the tests."""
    import jsonschema  # noqa: PLC0415 - loaded by Airflow's Params already

    checker = jsonschema.FormatChecker()
    for name, param in params.items():
        validator = jsonschema.Draft202012Validator(param.schema, format_checker=checker)
        error = jsonschema.exceptions.best_match(validator.iter_errors(param.value))
        if error is not None:
            raise ValueError(
                f"Param {name} ({param.schema.get('title', name)}): its default {param.value!r} is "
                f"invalid: {error.message}"
            )
