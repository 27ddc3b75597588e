"""What each step of the pipeline does, given AWS clients and the run's plan.

The DAG file wires these into tasks; here they are plain functions, each
idempotent for its run (re-running one finds what it made before and goes on),
so a retry or a cleared task never duplicates a job or overwrites another run's
artifacts.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING

from ml_pipeline import sagemaker_requests as requests

if TYPE_CHECKING:
    from airflow.providers.amazon.aws.hooks.sagemaker import SageMakerHook

    from ml_pipeline.aws import Client
    from ml_pipeline.plan import Plan

log = logging.getLogger(__name__)


# --- training ----------------------------------------------------------------------------------


def user_hyperparameters(sent: dict[str, str]) -> dict:
    """A job's own hyperparameters: without SageMaker's (``_tuning_objective_metric``) and script mode's
    (``sagemaker_*``), and in script mode decoded from the JSON they were sent as."""
    script = "sagemaker_program" in sent
    result = {}
    for name, value in sent.items():
        if name.startswith(("_", "sagemaker_")):
            continue
        if script:
            try:
                value = json.loads(value)
            except ValueError:
                pass
        result[name] = value
    return result


def pick_best(sm: Client, plan: Plan, training: dict | None, tuning: dict | None) -> dict:
    """The run's best training job: the tuning job's BestTrainingJob, or the training job itself."""
    objective = plan["objective"]
    if tuning:
        described = sm.describe_hyper_parameter_tuning_job(
            HyperParameterTuningJobName=tuning["HyperParameterTuningJobName"]
        )
        best = described.get("BestTrainingJob")
        if not best:
            raise RuntimeError(f"Tuning job {described['HyperParameterTuningJobName']} has no best training job")
        job_name, tuned = best["TrainingJobName"], best["TunedHyperParameters"]
        counters = described["TrainingJobStatusCounters"]
    elif training is not None:
        job_name, tuned, counters = training["TrainingJobName"], None, None
    else:
        raise ValueError("neither a training job nor a tuning job to pick the best of")
    job = sm.describe_training_job(TrainingJobName=job_name)
    metrics = {m["MetricName"]: m["Value"] for m in job.get("FinalMetricDataList", [])}
    if objective["metric"] not in metrics:
        raise RuntimeError(f"{job_name} reported no {objective['metric']}: nothing to compare or deploy")
    hyperparameters = user_hyperparameters(job["HyperParameters"])
    return {
        "training_job": job_name,
        "tuning_job": tuning["HyperParameterTuningJobName"] if tuning else None,
        "trial_counters": counters,
        "model_artifact": job["ModelArtifacts"]["S3ModelArtifacts"],
        "image": job["AlgorithmSpecification"]["TrainingImage"],
        "objective": {**objective, "value": metrics[objective["metric"]]},
        "metrics": metrics,
        "hyperparameters": hyperparameters,
        # The tuned ones as the job got them, decoded as its others are (script mode sends JSON).
        "tuned_hyperparameters": {name: hyperparameters.get(name, value) for name, value in tuned.items()}
        if tuned
        else tuned,
        "training_seconds": job.get("TrainingTimeInSeconds"),
        "billable_seconds": job.get("BillableTimeInSeconds"),
    }


def copy_best_weights(s3: Client, plan: Plan, best: dict, channels: dict) -> dict:
    """The best weights under the run's stable prefix, with a metadata file beside them."""
    bucket, prefix = plan["params"]["bucket"], plan["names"]["model_prefix"]
    source_bucket, source_key = best["model_artifact"][len("s3://") :].split("/", 1)
    s3.copy_object(Bucket=bucket, Key=f"{prefix}/model.tar.gz", CopySource={"Bucket": source_bucket, "Key": source_key})
    metadata = {
        "run": plan["key"],
        "training_job": best["training_job"],
        "tuning_job": best["tuning_job"],
        "objective": best["objective"],
        "metrics": best["metrics"],
        "hyperparameters": best["hyperparameters"],
        "image": best["image"],
        "data_partition": channels,
        "source_artifact": best["model_artifact"],
    }
    s3.put_object(
        Bucket=bucket,
        Key=f"{prefix}/metadata.json",
        Body=json.dumps(metadata, indent=2).encode(),
        ContentType="application/json",
    )
    return {
        "model_data_url": f"s3://{bucket}/{prefix}/model.tar.gz",
        "metadata_url": f"s3://{bucket}/{prefix}/metadata.json",
    }


def _package_container(plan: Plan, best: dict, weights: dict, code: dict | None) -> dict:
    """The version's inference container: the code's serving image and environment (script mode's
    framework image and SAGEMAKER_* settings), else the image the best job trained with."""
    container = {"Image": best["image"], "ModelDataUrl": weights["model_data_url"]}
    if code is not None:
        container.update(Image=code["serving_image"], Environment=dict(code["environment"]))
        experiment = plan["experiment"]
        if experiment.get("code_kind") == "script":
            from ml_pipeline.code import framework_version  # noqa: PLC0415

            container.update(
                Framework=experiment["framework"].upper(), FrameworkVersion=framework_version(experiment)[0]
            )
    return container


def register_model_version(hook: SageMakerHook, plan: Plan, best: dict, weights: dict, code: dict | None = None) -> str:
    """A version in the model package group, pending approval; the same run gets the same version.
    The content types it answers are the experiment's smoke test's (``deploy.smoke``)."""
    sm = hook.conn
    experiment = plan["experiment"]
    group = plan["params"]["model_package_group"]
    description = experiment.get("description") or f"The {experiment['name']} experiment"
    hook.create_model_package_group(group, f"{description} (experiment {experiment['name']}, ml-pipeline)"[:1024])
    smoke = (experiment.get("deploy") or {}).get("smoke") or {}
    inference = {"Containers": [_package_container(plan, best, weights, code)]}
    if smoke.get("content_type"):
        inference["SupportedContentTypes"] = [smoke["content_type"]]
    if smoke.get("accept"):
        inference["SupportedResponseMIMETypes"] = [smoke["accept"]]
    properties = {
        "run": plan["key"],
        "experiment": experiment["name"],
        "training_job": best["training_job"],
        "objective_metric": best["objective"]["metric"],
        "objective_type": best["objective"]["type"],
        "objective_value": repr(best["objective"]["value"]),
        "metadata": weights["metadata_url"],
    }
    for name in ("file_hash", "source_hash", "commit"):
        if (plan.get("revision") or {}).get(name):
            properties[name] = str(plan["revision"][name])
    response = sm.create_model_package(
        ModelPackageGroupName=group,
        ModelPackageDescription=f"{experiment['name']} run {plan['key']}: {best['training_job']}",
        InferenceSpecification=inference,
        ModelApprovalStatus="PendingManualApproval",
        CustomerMetadataProperties=properties,
        ClientToken=f"{plan['key']}-{best['training_job']}"[:36],
    )
    return response["ModelPackageArn"]


def production_version(sm: Client, group: str) -> dict | None:
    """The newest approved version of the group: the model in production."""
    try:
        listed = sm.list_model_packages(
            ModelPackageGroupName=group,
            ModelApprovalStatus="Approved",
            SortBy="CreationTime",
            SortOrder="Descending",
            MaxResults=1,
        )
    except sm.exceptions.ClientError:
        return None
    if not listed["ModelPackageSummaryList"]:
        return None
    return sm.describe_model_package(ModelPackageName=listed["ModelPackageSummaryList"][0]["ModelPackageArn"])


def quality_gate(sm: Client, plan: Plan, best: dict) -> dict:
    """Deploy only when the new objective beats production's (the first run deploys)."""
    production = production_version(sm, plan["params"]["model_package_group"])
    new = best["objective"]
    if production is None:
        return {"deploy": True, "reason": "no model in production yet", "production": None}
    props = production.get("CustomerMetadataProperties", {})
    if props.get("objective_metric") != new["metric"]:
        return {"deploy": True, "reason": "production was judged on another metric", "production": props}
    old = float(props["objective_value"])
    better = new["value"] < old if new["type"] == "Minimize" else new["value"] > old
    verdict = "beats" if better else "does not beat"
    reason = f"{new['metric']} {new['value']:.6f} {verdict} production's {old:.6f} ({props.get('run')})"
    return {"deploy": better, "reason": reason, "production": props}


# --- hosting -----------------------------------------------------------------------------------


def create_model_and_config(
    hook: SageMakerHook, plan: Plan, code: dict, model_data_url: str, vpc_config: dict | None = None
) -> dict:
    """The run's SageMaker model (``code``: ``code.resolve``'s serving image and environment) and endpoint
    config, created once."""
    sm = hook.conn
    names = plan["names"]
    try:
        sm.describe_model(ModelName=names["model"])
    except sm.exceptions.ClientError:
        sm.create_model(**requests.model(plan, code, model_data_url, vpc_config))
    try:
        sm.describe_endpoint_config(EndpointConfigName=names["endpoint_config"])
    except sm.exceptions.ClientError:
        sm.create_endpoint_config(**requests.endpoint_config(plan))
    return {"model": names["model"], "endpoint_config": names["endpoint_config"]}


def autoscale(aas: Client, plan: Plan) -> dict:
    """Target tracking on invocations per instance for the endpoint's variant (idempotent upserts)."""
    p = plan["params"]
    resource_id = requests.scalable_target_id(plan)
    aas.register_scalable_target(
        ServiceNamespace="sagemaker",
        ResourceId=resource_id,
        ScalableDimension="sagemaker:variant:DesiredInstanceCount",
        MinCapacity=p["min_capacity"],
        MaxCapacity=p["max_capacity"],
    )
    policy = aas.put_scaling_policy(
        PolicyName=f"{plan['names']['endpoint']}-invocations",
        ServiceNamespace="sagemaker",
        ResourceId=resource_id,
        ScalableDimension="sagemaker:variant:DesiredInstanceCount",
        PolicyType="TargetTrackingScaling",
        TargetTrackingScalingPolicyConfiguration={
            "TargetValue": float(p["target_invocations_per_instance"]),
            "PredefinedMetricSpecification": {"PredefinedMetricType": "SageMakerVariantInvocationsPerInstance"},
            "ScaleOutCooldown": p["scale_out_cooldown"],
            "ScaleInCooldown": p["scale_in_cooldown"],
        },
    )
    return {
        "resource_id": resource_id,
        "policy_arn": policy["PolicyARN"],
        "min": p["min_capacity"],
        "max": p["max_capacity"],
        "target": p["target_invocations_per_instance"],
    }


def promote(sm: Client, plan: Plan, package_arn: str) -> dict:
    """The smoke-tested version becomes production: approved in the registry."""
    sm.update_model_package(
        ModelPackageArn=package_arn,
        ModelApprovalStatus="Approved",
        ApprovalDescription=f"Deployed and smoke-tested by run {plan['key']}",
    )
    return {"approved": package_arn}
