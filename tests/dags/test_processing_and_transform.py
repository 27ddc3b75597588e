"""``prepare`` as a SageMaker processing job and ``batch_transform`` after the gate, without AWS: what the
experiment file may say (and what is refused, naming the field, before anything is created), the DAG's shape
with each, and the requests they send, checked against botocore's model of the API."""

from __future__ import annotations

import pytest

from tests.dags.experiment_support import plain, write_experiment

PROCESSING = {"function": "prepare:write_channels", "compute": "processing"}
SCORING = {"input": "s3://scores-in/weekly/", "output": "s3://scores-out/weekly"}


def load(tmp_path, **changes) -> dict:
    from ml_pipeline import experiments

    return experiments.load(write_experiment(tmp_path, "plain", **changes))


def valid(operation: str, request: dict) -> None:
    """``request`` as botocore's SageMaker model takes it for ``operation`` (ParamValidationError otherwise)."""
    import botocore.session
    from botocore.validate import validate_parameters

    model = botocore.session.get_session().get_service_model("sagemaker")
    validate_parameters(request, model.operation_model(operation).input_shape)


def test_the_string_form_and_compute_worker_prepare_in_the_worker_as_before(tmp_path):
    from ml_pipeline.pipeline_dag import build_dag

    before = plain()
    assert before["prepare"] == "prepare:write_channels"
    assert before["prepare_job"] is None and before["batch_transform"] is None
    worker = load(tmp_path, prepare={"function": "prepare:write_channels", "compute": "worker"})
    assert (worker["prepare"], worker["prepare_job"]) == ("prepare:write_channels", None)
    assert {t.task_id for t in build_dag(worker).tasks} == {t.task_id for t in build_dag(before).tasks}


def test_compute_processing_fills_the_jobs_defaults(tmp_path):
    experiment = load(tmp_path, prepare={**PROCESSING, "instance_count": 2, "image": "1.dkr.ecr.x/prep:1"})
    assert experiment["prepare"] == "prepare:write_channels"
    assert experiment["prepare_job"] == {
        "instance_type": "ml.m5.large",
        "instance_count": 2,
        "volume_size_gb": 30,
        "max_runtime_seconds": 3600,
        "image": "1.dkr.ecr.x/prep:1",
    }
    scored = load(tmp_path / "b", batch_transform=SCORING)["batch_transform"]
    assert scored == {
        **SCORING,
        "content_type": "text/csv",
        "accept": None,
        "split_type": "Line",
        "strategy": "MultiRecord",
        "max_payload_mb": 6,
        "max_concurrent_transforms": 1,
        "instance_type": "ml.m5.large",
        "instance_count": 1,
    }


@pytest.mark.parametrize(
    "changes, field, says",
    [
        ({"prepare": {"compute": "processing"}}, "prepare", "'function' is a required property"),
        ({"prepare": {**PROCESSING, "compute": "gpu"}}, "prepare.compute", "'gpu' is not one of"),
        ({"prepare": {**PROCESSING, "function": "no-module"}}, "prepare.function", "does not match"),
        ({"prepare": {**PROCESSING, "function": "missing:write"}}, "prepare.function", "no module missing.py"),
        ({"prepare": {**PROCESSING, "instance_count": 0}}, "prepare.instance_count", "less than the minimum"),
        ({"prepare": {**PROCESSING, "image": "not an image"}}, "prepare.image", "does not match"),
        ({"prepare": {**PROCESSING, "gpus": 1}}, "prepare", "'gpus' was unexpected"),
        (
            {"prepare": {"function": "prepare:write_channels", "instance_type": "ml.m5.large"}},
            "prepare.instance_type",
            "only with compute: processing",
        ),
        ({"batch_transform": {"input": "s3://scores-in/x"}}, "batch_transform", "'output' is a required property"),
        ({"batch_transform": {**SCORING, "input": "/data/x.csv"}}, "batch_transform.input", "does not match"),
        ({"batch_transform": {**SCORING, "split_type": "Lines"}}, "batch_transform.split_type", "is not one of"),
        (
            {"batch_transform": {"input": "s3://scores/in", "output": "s3://scores/in/scored"}},
            "batch_transform.output",
            "lies under input",
        ),
        (
            {"batch_transform": {"input": "s3://scores/week", "output": "s3://scores/weekly-scores"}},
            "batch_transform.output",
            "lies under input",  # an S3 prefix takes every key that starts with it
        ),
    ],
)
def test_each_refusal_names_the_field(tmp_path, changes, field, says):
    from ml_pipeline.experiments import ExperimentError

    with pytest.raises(ExperimentError) as refused:
        load(tmp_path, **changes)
    assert f"experiments/plain/experiment.yaml: {field}: " in str(refused.value), str(refused.value)
    assert says in str(refused.value)


def test_the_plan_refuses_instance_types_those_apis_do_not_have(tmp_path):
    from ml_pipeline.plan import PlanError
    from tests.infra.support import plan

    experiment = load(
        tmp_path,
        prepare={**PROCESSING, "instance_type": "ml.m5.huge"},
        batch_transform={**SCORING, "instance_type": "ml.g4dn.nano"},
    )
    with pytest.raises(PlanError) as refused:
        plan(experiment)
    assert "prepare.instance_type: ml.m5.huge is not a SageMaker processing instance type" in str(refused.value)
    assert "batch_transform.instance_type: ml.g4dn.nano is not a SageMaker transform instance type" in str(
        refused.value
    )


def test_processing_prepare_is_a_group_of_the_providers_operator_and_a_deferring_sensor(tmp_path):
    from airflow.providers.amazon.aws.operators.sagemaker import SageMakerProcessingOperator
    from airflow.providers.amazon.aws.sensors.sagemaker import SageMakerProcessingSensor

    from ml_pipeline.pipeline_dag import build_dag

    dag = build_dag(load(tmp_path, prepare=PROCESSING))
    added = {t.task_id for t in dag.tasks} - {t.task_id for t in build_dag(plain()).tasks}
    assert added == {"prepare.processing_request", "prepare.start_processing_job", "prepare.wait_for_processing_job"}
    request = dag.get_task("prepare.processing_request")
    # in the experiment's image (resolve_code's), inside the run's stack
    assert {"plan", "resolve_code", "provision.provisioned"} <= request.upstream_task_ids
    started, waited = dag.get_task("prepare.start_processing_job"), dag.get_task("prepare.wait_for_processing_job")
    assert isinstance(started, SageMakerProcessingOperator) and not started.wait_for_completion
    assert isinstance(waited, SageMakerProcessingSensor) and waited.deferrable
    assert waited.upstream_task_ids == {"prepare.start_processing_job"}
    channels = dag.get_task("prepare_channels")
    # it reads what the job wrote, or the complete partition the job was skipped for
    assert channels.upstream_task_ids == {"plan", "prepare.wait_for_processing_job"}
    assert channels.trigger_rule == "none_failed"
    assert "choose_mode" in channels.downstream_task_ids


@pytest.mark.parametrize("deploy", [True, False])
def test_batch_transform_follows_promote_with_or_without_deploy_and_teardown_waits_for_it(tmp_path, deploy):
    from airflow.providers.amazon.aws.operators.sagemaker import SageMakerTransformOperator
    from airflow.providers.amazon.aws.sensors.sagemaker import SageMakerTransformSensor

    from ml_pipeline.pipeline_dag import build_dag

    experiment = load(tmp_path, batch_transform=SCORING, **({} if deploy else {"deploy": False}))
    dag = build_dag(experiment)
    baseline = build_dag({**plain(), "deploy": plain()["deploy"] if deploy else False})
    added = {t.task_id for t in dag.tasks} - {t.task_id for t in baseline.tasks}
    assert added == {
        "batch_transform.transform_request",
        "batch_transform.start_transform_job",
        "batch_transform.wait_for_transform_job",
    }
    request = dag.get_task("batch_transform.transform_request")
    # after the gate's outcome (promoted, or skipped when production is kept), never on a failure
    assert {"promote", "register_model"} <= request.upstream_task_ids and request.trigger_rule == "none_failed"
    assert "quality_gate" not in request.upstream_task_ids  # the gate's skip would reach it
    started = dag.get_task("batch_transform.start_transform_job")
    waited = dag.get_task("batch_transform.wait_for_transform_job")
    assert isinstance(started, SageMakerTransformOperator) and not started.wait_for_completion
    assert isinstance(waited, SageMakerTransformSensor) and waited.deferrable
    assert "batch_transform.wait_for_transform_job" in dag.get_task("close_run").upstream_task_ids


def test_the_processing_request_writes_where_the_workers_prepare_writes(tmp_path):
    from ml_pipeline import prepare_job
    from tests.infra.support import plan

    run = plan(load(tmp_path, prepare={**PROCESSING, "instance_count": 2}))
    code = {"training_image": "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-scikit-learn:1.2-1-cpu-py3"}
    uploaded = {"code": "s3://infra-tests/plain/prepare-code/abc/code/", "entry": "s3://infra-tests/x/entry/"}
    request = prepare_job.request(run, code, uploaded)
    valid("CreateProcessingJob", request)
    assert request["ProcessingJobName"] == run["names"]["processing_job"] == f"plain-prepare-{run['key']}"
    [output] = request["ProcessingOutputConfig"]["Outputs"]
    assert output["S3Output"]["S3Uri"] == f"s3://infra-tests/{run['names']['data_prefix']}/"
    assert output["S3Output"]["LocalPath"] == prepare_job.OUTPUT_PATH
    assert request["AppSpecification"]["ImageUri"] == code["training_image"]  # no image: the training image's
    arguments = request["AppSpecification"]["ContainerArguments"]
    given = dict(zip(arguments[::2], arguments[1::2], strict=True))
    assert given["--function"] == "prepare:write_channels" and given["--seed"] == str(run["data_seed"])
    assert (given["--start"], given["--end"]) == (run["data_interval"]["start"], run["data_interval"]["end"])
    assert request["ProcessingResources"]["ClusterConfig"]["InstanceCount"] == 2
    assert {"Key": "run", "Value": run["key"]} in request["Tags"]


def test_the_transform_request_scores_into_a_prefix_of_the_runs_own(tmp_path):
    from ml_pipeline import batch_transform
    from tests.infra.support import plan

    experiment = load(tmp_path, batch_transform=SCORING, deploy=False)
    first, second = plan(experiment), plan(experiment)
    requests = [batch_transform.transform_request(run) for run in (first, second)]
    for run, request in zip((first, second), requests, strict=True):
        valid("CreateTransformJob", request)
        assert request["TransformJobName"] == f"plain-score-{run['key']}"
        assert request["TransformOutput"] == {
            "S3OutputPath": f"s3://scores-out/weekly/{run['key']}/",
            "AssembleWith": "Line",
        }
        assert request["TransformInput"]["SplitType"] == "Line"
        assert request["ModelName"] == run["names"]["model"]
    assert requests[0]["TransformOutput"]["S3OutputPath"] != requests[1]["TransformOutput"]["S3OutputPath"]
    package = {
        "ModelPackageArn": "arn:aws:sagemaker:us-east-1:123456789012:model-package/plain/3",
        "InferenceSpecification": {
            "Containers": [{"Image": "img:1", "ModelDataUrl": "s3://b/models/m.tar.gz", "Environment": {"A": "1"}}]
        },
    }
    model = batch_transform.model_request(first, package)
    valid("CreateModel", model)
    assert model["PrimaryContainer"] == package["InferenceSpecification"]["Containers"][0]
    assert batch_transform.scoring(first, package, package["ModelPackageArn"])["model"].startswith("this run's")
    assert batch_transform.scoring(first, package, "another")["model"].startswith("production's")
