"""The pipeline's knobs, as Airflow Params with JSON Schema: the trigger form validates and explains them.

Defaults for what differs between accounts (bucket, role, region) come from the
environment, so the same DAG runs on localaws and on real AWS unchanged.
"""
from __future__ import annotations

import os
from typing import Any

from airflow.sdk import Param

PRESETS = ["default", "quick", "gpu"]
TUNING_FILES = ["tuning"]
_NAME = "^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$"  # SageMaker's EntityName and EndpointName
_ML_INSTANCE = r"^ml\.[a-z0-9]+\.[a-z0-9]+$"
#: ECR's RepositoryName (botocore's ECR model; tests/dags/test_plan.py keeps the two the same), 2-256 characters.
ECR_REPOSITORY = r"^[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(\/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*$"
#: SageMaker's RoleArn (botocore's SageMaker model), 20-2048 characters.
ROLE_ARN = r"^arn:aws[a-z\-]*:iam::\d{12}:role/?[a-zA-Z_0-9+=,.@\-_/]+$"
#: The trigger form's sections, in the order they are shown.
RUN, TRAINING, TUNING, DEPLOY, HOST, VPC = "The run", "Training", "Tuning", "Deploy", "Host", "VPC"
SECTIONS = (RUN, TRAINING, TUNING, DEPLOY, HOST, VPC)
#: What plan uses when the form leaves a field empty and the preset names no value either.
FALLBACKS = {"instance_type": "ml.m5.xlarge", "instance_count": 1, "max_runtime_seconds": 3600}
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


def pipeline_params() -> dict[str, Param]:
    env = os.environ.get
    return {
        "mode": form_param("train", enum=["train", "tune"], title="Mode", section=RUN,
                           description="train: one SageMaker training job with the Hyperparameter preset. tune: a "
                                       "hyperparameter tuning job over the Tuning ranges, keeping the best trial."),
        "preset": form_param("default", enum=PRESETS, title="Hyperparameter preset", section=RUN,
                             values_display={"default": "default: the original settings (CPU)",
                                             "quick": "quick: CI and smoke tests (seconds)",
                                             "gpu": "gpu: a larger net on a GPU instance"},
                             description="default: the original project's settings, 6 epochs, about 0.95 validation "
                                         "accuracy in seconds on a CPU (ml.m5.large). quick: CI and smoke tests, up to "
                                         "10 short epochs on one CPU thread (ml.m5.large, 600 s at most). gpu: a wider "
                                         "net, larger batches and 30 epochs on a GPU (ml.g5.xlarge), about 0.97-0.98. "
                                         "Each is a file in include/hyperparams/ with the hyperparameters, metrics and "
                                         "objective, and the training instance type and runtime the Training fields "
                                         "take when left empty."),
        "bucket": form_param(env("ML_PIPELINE_BUCKET", "ml-pipeline-artifacts"), type="string",
                             pattern="^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", title="S3 bucket", section=RUN,
                             description="Data, checkpoints, model artifacts and metadata go under run-keyed "
                                         "prefixes here. A missing bucket is created encrypted, versioned, private "
                                         "and (over HTTPS, as on AWS) TLS-only; an existing one is used as it is, "
                                         "never reconfigured, and refused when it is unencrypted or public."),
        "role_arn": form_param(env("ML_PIPELINE_SAGEMAKER_ROLE_ARN",
                                   "arn:aws:iam::123456789012:role/SageMakerExecution"),
                               type="string", pattern=ROLE_ARN, minLength=20, maxLength=2048,
                               title="SageMaker execution role ARN", section=RUN,
                               description="The role SageMaker jobs and endpoints assume (see the README's IAM "
                                           "section)."),
        "ecr_repository": form_param("digits-training", type="string", pattern=ECR_REPOSITORY, minLength=2,
                                     maxLength=256, title="ECR repository", section=RUN,
                                     description="Where the training image is pushed: lowercase letters and digits, "
                                                 "with . _ or - between them and / between path parts, as ECR "
                                                 "names repositories."),
        "model_package_group": form_param("digits-classifier", type="string", pattern=_NAME, maxLength=63,
                                          title="Model package group", section=RUN,
                                          description="Each run's best model is registered as a version here."),
        "instance_type": form_param(None, type=["null", "string"], pattern=_ML_INSTANCE, title="Training instance type",
                                    section=TRAINING,
                                    description="Empty: the preset's (in tune mode, the tuning file's base preset's): "
                                                "ml.m5.large for default and quick, ml.g5.xlarge for gpu, ml.m5.xlarge "
                                                "for a preset naming none. Or a SageMaker training type, e.g. "
                                                "ml.m5.xlarge, ml.g5.xlarge (GPU), ml.p4d.24xlarge."),
        "instance_count": form_param(None, type=["null", "integer"], minimum=1, maximum=8, title="Training instances",
                                     section=TRAINING,
                                     description="Empty: the preset's, as for Training instance type (1 for every "
                                                 "shipped preset). Above 1, training runs on hosts algo-1..N with "
                                                 "torch.distributed."),
        "use_spot": form_param(False, type="boolean", title="Managed spot training", section=TRAINING,
                               description="Pay spot prices; SageMaker resumes from checkpoints after an "
                                           "interruption."),
        "max_runtime_seconds": form_param(None, type=["null", "integer"], minimum=60, maximum=432000,
                                          title="Max runtime (s)", section=TRAINING,
                                          description="Each training job is stopped after this much training time. "
                                                      "Empty: the preset's, as for Training instance type (600 for "
                                                      "quick, 3600 for default and gpu, 3600 for a preset naming "
                                                      "none)."),
        "max_wait_seconds": form_param(7200, type="integer", minimum=60, maximum=432000, title="Max wait (s), spot",
                                       section=TRAINING,
                                       description="Managed spot training only: training plus waiting for capacity; "
                                                   "at least Max runtime (s)."),
        "tuning": form_param("tuning", enum=TUNING_FILES, title="Tuning ranges", section=TUNING,
                             description="Tune mode: a file in include/hyperparams/ with the ranges, strategy, limits "
                                         "and base preset. tuning: learning rate, width, dropout and optimizer over "
                                         "the quick preset, 6 trials, 2 at a time."),
        "max_jobs": form_param(None, type=["null", "integer"], minimum=1, maximum=100, title="Max tuning trials",
                               section=TUNING, description="Tune mode. Empty: the tuning file's limit."),
        "max_parallel_jobs": form_param(None, type=["null", "integer"], minimum=1, maximum=10,
                                        title="Trials in parallel", section=TUNING,
                                        description="Tune mode. Empty: the tuning file's. At most Max tuning trials."),
        "endpoint_name": form_param("digits-classifier", type="string", pattern=_NAME, maxLength=63, title="Endpoint",
                                    section=DEPLOY,
                                    description="With Keep the endpoint on, the stable endpoint: created on the first "
                                                "deploy, updated blue/green after. Off, each run deploys its own "
                                                "<name>-<run> endpoint and deletes it at its end."),
        "endpoint_instance_type": form_param("ml.m5.large", type="string", pattern=_ML_INSTANCE,
                                             title="Endpoint instance type", section=DEPLOY,
                                             description="A SageMaker hosting instance type, e.g. ml.m5.large."),
        "keep_endpoint": form_param(False, type="boolean", title="Keep the endpoint", section=DEPLOY,
                                    description="Off (the default, as the original projects do): teardown deletes the "
                                                "endpoint after the smoke test, so nothing is left billing. Not with "
                                                "SageMaker inside the run's VPC, which teardown removes."),
        "min_capacity": form_param(1, type="integer", minimum=1, maximum=20, title="Autoscaling min instances",
                                   section=DEPLOY, description="Also the endpoint's initial instance count; at most "
                                                               "Autoscaling max instances."),
        "max_capacity": form_param(3, type="integer", minimum=1, maximum=20, title="Autoscaling max instances",
                                   section=DEPLOY),
        "target_invocations_per_instance": form_param(50, type="integer", minimum=1, maximum=100000,
                                                      title="Target invocations per instance per minute",
                                                      section=DEPLOY,
                                                      description="The target-tracking policy's target "
                                                                  "(SageMakerVariantInvocationsPerInstance)."),
        "scale_out_cooldown": form_param(30, type="integer", minimum=0, maximum=3600, title="Scale-out cooldown (s)",
                                         section=DEPLOY),
        "scale_in_cooldown": form_param(30, type="integer", minimum=0, maximum=3600, title="Scale-in cooldown (s)",
                                        section=DEPLOY),
        "smoke_samples": form_param(100, type="integer", minimum=1, maximum=270, title="Smoke-test samples",
                                    section=DEPLOY, description="Held-out digits sent to the endpoint after deploying."),
        "smoke_min_accuracy": form_param(0.9, type="number", minimum=0, maximum=1, title="Smoke-test minimum accuracy",
                                         section=DEPLOY,
                                         description="The run fails if the endpoint's accuracy is below this."),
    }
