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
_NAME = "^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$"
_ML_INSTANCE = r"^ml\.[a-z0-9]+\.[a-z0-9]+$"


class _SharedSchema(dict):
    """A Param's JSON Schema, shared by every copy Airflow makes of the Param.

    Airflow deep-copies the DAG's Params for every operator, at each level of its class hierarchy:
    192 copies of 35 Params for the pipeline DAG, which was most of its parse time. Nothing changes a
    schema once the DAG is defined, so the copies need their own values only.
    """

    def __deepcopy__(self, memo: dict) -> _SharedSchema:
        return self


def form_param(default: Any, description: str | None = None, **schema: Any) -> Param:
    """``Param(default, description, **schema)`` whose schema its copies share (see _SharedSchema)."""
    return Param(default, description, schema=_SharedSchema(schema))


def pipeline_params() -> dict[str, Param]:
    env = os.environ.get
    return {
        "mode": form_param("train", enum=["train", "tune"], title="Mode",
                           description="train: one SageMaker training job with the preset. tune: a hyperparameter "
                                       "tuning job over the tuning ranges, keeping the best trial."),
        "preset": form_param("default", enum=PRESETS, title="Hyperparameter preset",
                             description="A file in include/hyperparams/: hyperparameters, metric definitions, "
                                         "objective."),
        "tuning": form_param("tuning", enum=TUNING_FILES, title="Tuning ranges",
                             description="A file in include/hyperparams/ with the ranges, strategy and limits "
                                         "(tune mode)."),
        "max_jobs": form_param(None, type=["null", "integer"], minimum=1, maximum=100, title="Max tuning trials",
                               description="Overrides the tuning file's max_jobs (tune mode)."),
        "max_parallel_jobs": form_param(None, type=["null", "integer"], minimum=1, maximum=10,
                                        title="Trials in parallel", description="Overrides the tuning file's value."),
        "instance_type": form_param("ml.m5.xlarge", type="string", pattern=_ML_INSTANCE, title="Training instance type",
                                    description="A SageMaker training instance type, e.g. ml.m5.xlarge, ml.g5.xlarge "
                                                "(GPU), ml.p4d.24xlarge."),
        "instance_count": form_param(1, type="integer", minimum=1, maximum=8, title="Training instances",
                                     description="Above 1, training runs on hosts algo-1..N with torch.distributed."),
        "use_spot": form_param(False, type="boolean", title="Managed spot training",
                               description="Pay spot prices; SageMaker resumes from checkpoints after an "
                                           "interruption."),
        "max_runtime_seconds": form_param(3600, type="integer", minimum=60, maximum=432000, title="Max runtime (s)",
                                          description="Each training job is stopped after this much training time."),
        "max_wait_seconds": form_param(7200, type="integer", minimum=60, maximum=432000, title="Max wait (s), spot",
                                       description="Spot only: training plus waiting for capacity; >= max runtime."),
        "bucket": form_param(env("ML_PIPELINE_BUCKET", "ml-pipeline-artifacts"), type="string",
                             pattern="^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", title="S3 bucket",
                             description="Data, checkpoints, model artifacts and metadata go under run-keyed "
                                         "prefixes here."),
        "role_arn": form_param(env("ML_PIPELINE_SAGEMAKER_ROLE_ARN",
                                   "arn:aws:iam::123456789012:role/SageMakerExecution"),
                               type="string", pattern=r"^arn:aws[a-z\-]*:iam::\d{12}:role/?[a-zA-Z_0-9+=,.@\-_/]+$",
                               title="SageMaker execution role ARN",
                               description="The role SageMaker jobs and endpoints assume (see the README's IAM "
                                           "section)."),
        "ecr_repository": form_param("digits-training", type="string", pattern="^[a-z0-9][a-z0-9._/-]{1,255}$",
                                     title="ECR repository", description="Where the training image is pushed."),
        "model_package_group": form_param("digits-classifier", type="string", pattern=_NAME,
                                          title="Model package group",
                                          description="Each run's best model is registered as a version here."),
        "endpoint_name": form_param("digits-classifier", type="string", pattern=_NAME, title="Endpoint",
                                    description="With keep_endpoint, the stable endpoint: created on the first deploy, "
                                                "updated blue/green after. Without it, each run deploys its own "
                                                "<name>-<run> endpoint and deletes it at its end."),
        "endpoint_instance_type": form_param("ml.m5.large", type="string", pattern=_ML_INSTANCE,
                                             title="Endpoint instance type", description="Serving instance type."),
        "keep_endpoint": form_param(False, type="boolean", title="Keep the endpoint",
                                    description="Off (the default, as the original projects do): teardown deletes the "
                                                "endpoint after the smoke test, so nothing is left billing."),
        "min_capacity": form_param(1, type="integer", minimum=1, maximum=20, title="Autoscaling min instances"),
        "max_capacity": form_param(3, type="integer", minimum=1, maximum=20, title="Autoscaling max instances"),
        "target_invocations_per_instance": form_param(50, type="integer", minimum=1, maximum=100000,
                                                      title="Target invocations per instance per minute",
                                                      description="SageMakerVariantInvocationsPerInstance target."),
        "scale_out_cooldown": form_param(30, type="integer", minimum=0, maximum=3600, title="Scale-out cooldown (s)"),
        "scale_in_cooldown": form_param(30, type="integer", minimum=0, maximum=3600, title="Scale-in cooldown (s)"),
        "smoke_samples": form_param(100, type="integer", minimum=1, maximum=270, title="Smoke-test samples",
                                    description="Held-out digits sent to the endpoint after deploying."),
        "smoke_min_accuracy": form_param(0.9, type="number", minimum=0, maximum=1, title="Smoke-test minimum accuracy",
                                         description="The run fails if the endpoint's accuracy is below this."),
    }
