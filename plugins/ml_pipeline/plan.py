"""A run's plan: its validated settings and every name and request shape it will use.

``make_plan`` runs first in the DAG and refuses bad input before anything is
created: JSON Schema already checked each Param's type and range; here go the
rules across fields, the hyperparameter files, and the instance types AWS knows.
The rest of the chain reads the plan from XCom (it holds no secret).
"""
from __future__ import annotations

from ml_pipeline import config as hyperparams
from ml_pipeline.infra.params import validate_infra
from ml_pipeline.naming import endpoint_name, run_key, run_names


class PlanError(ValueError):
    """Bad input: the run fails before creating anything."""


def _instance_types(shape: str) -> set[str]:
    import botocore.session  # noqa: PLC0415 - the model is read only when a run starts

    return set(botocore.session.get_session().get_service_model("sagemaker").shape_for(shape).enum)


def make_plan(params: dict, run_id: str, logical_date) -> dict:
    p = dict(params)
    errors = []
    if p["instance_type"] not in _instance_types("TrainingInstanceType"):
        errors.append(f"instance_type: {p['instance_type']} is not a SageMaker training instance type")
    if p["endpoint_instance_type"] not in _instance_types("ProductionVariantInstanceType"):
        errors.append(f"endpoint_instance_type: {p['endpoint_instance_type']} is not a SageMaker hosting type")
    if p["min_capacity"] > p["max_capacity"]:
        errors.append(f"min_capacity ({p['min_capacity']}) is above max_capacity ({p['max_capacity']})")
    errors.extend(validate_infra(p))
    if p["use_spot"] and p["max_wait_seconds"] < p["max_runtime_seconds"]:
        errors.append("max_wait_seconds must be at least max_runtime_seconds with managed spot training")

    plan = {"params": p}
    try:
        preset = hyperparams.load_preset(p["preset"])
        plan["hyperparameters"] = hyperparams.sagemaker_hyperparameters(preset)
        plan["metric_definitions"] = preset["metric_definitions"]
        plan["objective"] = preset["objective"]
        if p["mode"] == "tune":
            tuning = hyperparams.load_tuning(p["tuning"])
            if p.get("max_jobs"):
                tuning["max_jobs"] = p["max_jobs"]
            if p.get("max_parallel_jobs"):
                tuning["max_parallel_jobs"] = p["max_parallel_jobs"]
            if tuning["max_parallel_jobs"] > tuning["max_jobs"]:
                errors.append("max_parallel_jobs is above max_jobs")
            plan["tuning_config"] = hyperparams.tuning_job_config(tuning)
            plan["objective"] = tuning["objective"]
            static = hyperparams.tuning_static_hyperparameters(tuning) or {
                name: value for name, value in plan["hyperparameters"].items()
                if name not in hyperparams.tuned_names(tuning)
            }
            plan["static_hyperparameters"] = static
            if tuning.get("_preset"):
                plan["metric_definitions"] = tuning["_preset"]["metric_definitions"]
    except hyperparams.ConfigError as error:
        errors.append(str(error))
    if errors:
        raise PlanError("Refused before anything was created:\n- " + "\n- ".join(errors))

    key = run_key(run_id, logical_date)
    plan["key"] = key
    plan["names"] = run_names(key)
    plan["names"]["endpoint"] = endpoint_name(p["endpoint_name"], key, p["keep_endpoint"])
    plan["data_seed"] = int(key.split("-")[0]) if key[0].isdigit() else 0
    return plan
