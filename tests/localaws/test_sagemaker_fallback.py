"""Every SageMaker operation answered: our engine's, then moto's (experiments, trials, pipelines, notebook
instances, clusters, ...), AutoML jobs v1 and v2 (ours, in moto's records), and AWS's
``UnknownOperationException`` for what neither implements. Answers are checked as they come over the wire
against botocore's output shapes (no member the shape lacks, every required one there, each of its type),
and the records persist across a restart as the rest of moto's state does."""

from __future__ import annotations

import json
import time

import pytest
import requests
from botocore.exceptions import ClientError

from tests.conftest import unique
from tests.support import ROLE_ARN, training_request, wait_until

pytestmark = pytest.mark.timeout(300)


# --- what came over the wire, against botocore's model -------------------------------------------


def shape_problems(shape, value, path: str = "") -> list[str]:
    """How a raw JSON answer differs from botocore's shape: unknown or missing members, wrong types."""
    kind = shape.type_name
    if kind == "structure":
        if not isinstance(value, dict):
            return [f"{path or 'answer'}: {type(value).__name__} where a structure is"]
        found = [f"{path}{key}: not in {shape.name}" for key in value if key not in shape.members]
        found += [f"{path}{key}: required, missing" for key in shape.required_members if key not in value]
        for key, item in value.items():
            if key in shape.members:
                found += shape_problems(shape.members[key], item, f"{path}{key}.")
        return found
    if kind == "list":
        if not isinstance(value, list):
            return [f"{path}: not a list"]
        return [problem for item in value for problem in shape_problems(shape.member, item, path)]
    if kind == "map":
        if not isinstance(value, dict):
            return [f"{path}: not a map"]
        return [problem for item in value.values() for problem in shape_problems(shape.value, item, path)]
    expected = {
        "string": str,
        "boolean": bool,
        "integer": int,
        "long": int,
        "float": (int, float),
        "double": (int, float),
        "timestamp": (int, float),
    }.get(kind)
    if expected and (not isinstance(value, expected) or (kind != "boolean" and isinstance(value, bool))):
        return [f"{path}: {value!r} is not a {kind}"]
    if kind == "string" and shape.enum and value not in shape.enum:
        return [f"{path}: {value!r} not in {shape.name}'s enum"]
    return []


@pytest.fixture
def sm(localaws_process):
    """A SageMaker client whose every answer is checked, raw, against its operation's output shape."""
    client = localaws_process.client("sagemaker")
    problems: list[str] = []

    def check(http_response, model, **_):
        if http_response.status_code == 200 and model.output_shape is not None:
            raw = json.loads(http_response.content or b"{}")
            problems.extend(f"{model.name}: {p}" for p in shape_problems(model.output_shape, raw))

    client.meta.events.register("after-call.sagemaker", check)
    yield client
    assert problems == []


def error_of(call, **params) -> tuple[str, str, int]:
    with pytest.raises(ClientError) as raised:
        call(**params)
    error = raised.value.response
    return error["Error"]["Code"], error["Error"]["Message"], error["ResponseMetadata"]["HTTPStatusCode"]


AUTOML_INPUT = [
    {
        "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": "s3://automl-data/input.csv"}},
        "TargetAttributeName": "class",
    }
]


# --- moto's experiments, with AWS's errors -------------------------------------------------------


def test_experiments_trials_and_components_are_moto_records_torn_down_as_the_provider_does(sm):
    experiment, trial, component = unique("exp"), unique("trial"), unique("comp")
    arn = sm.create_experiment(ExperimentName=experiment, Description="one run")["ExperimentArn"]
    assert arn.endswith(f":experiment/{experiment}")
    assert sm.describe_experiment(ExperimentName=experiment)["ExperimentArn"] == arn
    sm.create_trial(TrialName=trial, ExperimentName=experiment)
    sm.create_trial_component(TrialComponentName=component, Parameters={"k": {"NumberValue": 3}})
    sm.associate_trial_component(TrialComponentName=component, TrialName=trial)
    assert [t["TrialName"] for t in sm.list_trials(ExperimentName=experiment)["TrialSummaries"]] == [trial]
    summaries = sm.list_trial_components(TrialName=trial)["TrialComponentSummaries"]
    assert [c["TrialComponentName"] for c in summaries] == [component]
    assert sm.describe_trial_component(TrialComponentName=component)["Parameters"] == {"k": {"NumberValue": 3.0}}
    assert experiment in [e["ExperimentName"] for e in sm.list_experiments(MaxResults=100)["ExperimentSummaries"]]

    # The provider's system test's teardown (delete_experiments), call for call.
    sm.disassociate_trial_component(TrialComponentName=component, TrialName=trial)
    sm.delete_trial_component(TrialComponentName=component)
    sm.delete_trial(TrialName=trial)
    sm.delete_experiment(ExperimentName=experiment)

    # What no longer exists is AWS's ResourceNotFound (botocore's model lists it), before moto is asked.
    code, message, status = error_of(sm.describe_experiment, ExperimentName=experiment)
    assert (code, status) == ("ResourceNotFound", 400) and f"experiment/{experiment}" in message
    assert error_of(sm.list_trials, ExperimentName=experiment)[0] == "ResourceNotFound"
    assert error_of(sm.delete_trial, TrialName=trial)[0] == "ResourceNotFound"
    assert error_of(sm.delete_trial_component, TrialComponentName=component)[0] == "ResourceNotFound"
    assert error_of(sm.create_trial, TrialName=unique("orphan"), ExperimentName=experiment)[0] == "ResourceNotFound"
    # A name outside the model's pattern: ValidationException, and nothing is created.
    code, message, _ = error_of(sm.create_experiment, ExperimentName="not a name!")
    assert code == "ValidationException" and "experimentName" in message
    names = [e["ExperimentName"] for e in sm.list_experiments(MaxResults=100)["ExperimentSummaries"]]
    assert "not a name!" not in names


def test_pipelines_notebook_instances_and_clusters_are_answered_by_moto(sm):
    pipeline = unique("pipe")
    definition = json.dumps({"Version": "2020-12-01", "Parameters": [], "Steps": []})
    sm.create_pipeline(PipelineName=pipeline, PipelineDefinition=definition, RoleArn=ROLE_ARN)
    execution = sm.start_pipeline_execution(PipelineName=pipeline)["PipelineExecutionArn"]
    executions = sm.list_pipeline_executions(PipelineName=pipeline)["PipelineExecutionSummaries"]
    assert execution in [e["PipelineExecutionArn"] for e in executions]
    assert pipeline in [p["PipelineName"] for p in sm.list_pipelines(MaxResults=100)["PipelineSummaries"]]

    notebook = unique("nb")
    sm.create_notebook_instance(NotebookInstanceName=notebook, InstanceType="ml.t3.medium", RoleArn=ROLE_ARN)
    assert sm.describe_notebook_instance(NotebookInstanceName=notebook)["NotebookInstanceName"] == notebook
    sm.stop_notebook_instance(NotebookInstanceName=notebook)
    assert "ClusterSummaries" in sm.list_clusters()


# --- AutoML -----------------------------------------------------------------------------------------


def test_an_automl_job_v1_runs_to_its_time_limit_and_is_described_by_both_apis(sm):
    name = unique("aml")[:32]
    started = time.time()
    arn = sm.create_auto_ml_job(
        AutoMLJobName=name,
        InputDataConfig=AUTOML_INPUT,
        OutputDataConfig={"S3OutputPath": "s3://automl-data/out"},
        RoleArn=ROLE_ARN,
        AutoMLJobConfig={"CompletionCriteria": {"MaxAutoMLJobRuntimeInSeconds": 2}},
    )["AutoMLJobArn"]
    assert arn.endswith(f":automl-job/{name}")
    v1 = sm.describe_auto_ml_job(AutoMLJobName=name)
    assert (v1["AutoMLJobStatus"], v1["AutoMLJobSecondaryStatus"]) == ("InProgress", "Starting")
    assert "EndTime" not in v1 and "BestCandidate" not in v1  # nothing has run, nothing is made up
    assert v1["InputDataConfig"][0]["TargetAttributeName"] == "class"
    assert v1["AutoMLJobConfig"]["CompletionCriteria"] == {"MaxAutoMLJobRuntimeInSeconds": 2}
    v2 = sm.describe_auto_ml_job_v2(AutoMLJobName=name)
    assert v2["AutoMLProblemTypeConfigName"] == "Tabular"
    assert v2["AutoMLProblemTypeConfig"]["TabularJobConfig"]["TargetAttributeName"] == "class"
    # AWS makes an experiment for each AutoML job (the provider's teardown deletes it).
    assert sm.describe_experiment(ExperimentName=f"{name}-aws-auto-ml-job")["ExperimentName"]

    done = wait_until(
        lambda: (d := sm.describe_auto_ml_job(AutoMLJobName=name))["AutoMLJobStatus"] != "InProgress" and d,
        timeout=30,
    )
    assert (done["AutoMLJobStatus"], done["AutoMLJobSecondaryStatus"]) == ("Stopped", "MaxAutoMLJobRuntimeReached")
    assert done["EndTime"].timestamp() == pytest.approx(done["CreationTime"].timestamp() + 2, abs=0.01)
    assert done["EndTime"].timestamp() >= started
    code, message, _ = error_of(sm.stop_auto_ml_job, AutoMLJobName=name)
    assert code == "ValidationException" and "already reached a terminal state" in message
    listed = sm.list_auto_ml_jobs(NameContains=name, StatusEquals="Stopped")["AutoMLJobSummaries"]
    assert [(j["AutoMLJobName"], j["AutoMLJobSecondaryStatus"]) for j in listed] == [
        (name, "MaxAutoMLJobRuntimeReached")
    ]
    assert sm.list_auto_ml_jobs(NameContains=name, StatusEquals="InProgress")["AutoMLJobSummaries"] == []


def test_an_automl_job_v2_is_stopped_and_bad_requests_are_refused(sm):
    name = unique("aml2")[:32]
    request = {
        "AutoMLJobName": name,
        "AutoMLJobInputDataConfig": [
            {"DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": "s3://automl-data/input.csv"}}}
        ],
        "OutputDataConfig": {"S3OutputPath": "s3://automl-data/out"},
        "AutoMLProblemTypeConfig": {
            "TabularJobConfig": {"TargetAttributeName": "class", "ProblemType": "MulticlassClassification"}
        },
        "AutoMLJobObjective": {"MetricName": "Accuracy"},
        "RoleArn": ROLE_ARN,
    }
    sm.create_auto_ml_job_v2(**request)
    code, _, _ = error_of(sm.create_auto_ml_job_v2, **request)
    assert code == "ResourceInUse"
    sm.stop_auto_ml_job(AutoMLJobName=name)
    stopped = sm.describe_auto_ml_job_v2(AutoMLJobName=name)
    assert (stopped["AutoMLJobStatus"], stopped["AutoMLJobSecondaryStatus"]) == ("Stopped", "Stopped")
    resolved = stopped["ResolvedAttributes"]["AutoMLProblemTypeResolvedAttributes"]["TabularResolvedAttributes"]
    assert resolved == {"ProblemType": "MulticlassClassification"}
    assert sm.describe_auto_ml_job(AutoMLJobName=name)["ProblemType"] == "MulticlassClassification"

    no_objective = {**request, "AutoMLJobName": unique("aml3")[:32]}
    del no_objective["AutoMLJobObjective"]
    assert error_of(sm.create_auto_ml_job_v2, **no_objective)[0] == "ValidationException"
    assert error_of(sm.describe_auto_ml_job, AutoMLJobName=no_objective["AutoMLJobName"])[0] == "ResourceNotFound"


# --- experiment records of new jobs ---------------------------------------------------------------


def test_a_training_job_with_an_experiment_config_is_a_trial_component_of_it(
    sm, localaws_process, process_data, quick_trainer
):
    experiment, job = unique("exp"), unique("tracked")
    channels = {"train": process_data["train"], "validation": process_data["validation"]}
    request = training_request(job, quick_trainer, channels, f"s3://{process_data['bucket']}/jobs", {"epochs": "1"})
    # The experiment must exist: AWS's ValidationException, and no job.
    code, message, _ = error_of(sm.create_training_job, **request, ExperimentConfig={"ExperimentName": experiment})
    assert code == "ValidationException" and experiment in message
    assert error_of(sm.describe_training_job, TrainingJobName=job)[0] == "ValidationException"

    sm.create_experiment(ExperimentName=experiment)
    job_arn = sm.create_training_job(**request, ExperimentConfig={"ExperimentName": experiment})["TrainingJobArn"]
    trials = sm.list_trials(ExperimentName=experiment)["TrialSummaries"]
    assert [t["TrialName"] for t in trials] == [f"{job}-aws-trial"]
    components = sm.list_trial_components(TrialName=f"{job}-aws-trial")["TrialComponentSummaries"]
    assert [c["TrialComponentName"] for c in components] == [f"{job}-aws-training-job"]
    component = sm.describe_trial_component(TrialComponentName=f"{job}-aws-training-job")
    assert component["Source"] == {"SourceArn": job_arn, "SourceType": "SageMakerTrainingJob"}
    assert component["Parameters"]["epochs"] == {"StringValue": "1"}
    assert component["InputArtifacts"]["train"] == {"Value": process_data["train"]}


# --- what neither implements ---------------------------------------------------------------------


def test_an_operation_neither_implements_is_aws_unknown_operation_naming_it(sm, localaws_process):
    code, message, status = error_of(sm.list_candidates_for_auto_ml_job, AutoMLJobName="any")
    assert (code, status) == ("UnknownOperationException", 400)
    assert "ListCandidatesForAutoMLJob" in message
    # moto has these, but what they act on is our engine's: never moto's empty records.
    assert error_of(sm.delete_hyper_parameter_tuning_job, HyperParameterTuningJobName="any")[0] == (
        "UnknownOperationException"
    )
    code, message, _ = error_of(sm.search, Resource="TrainingJob")
    assert code == "UnknownOperationException" and "TrainingJob" in message
    assert "Results" in sm.search(Resource="Experiment")
    # An operation SageMaker does not have at all, over raw HTTP.
    answer = requests.post(
        localaws_process.endpoint_url + "/",
        data="{}",
        timeout=30,
        headers={
            "X-Amz-Target": "SageMaker.NoSuchOperation",
            "Content-Type": "application/x-amz-json-1.1",
            "Authorization": "AWS4-HMAC-SHA256 Credential=testing/20240101/us-east-1/sagemaker/aws4_request, "
            "SignedHeaders=host, Signature=0",
        },
    )
    assert answer.status_code == 400
    assert answer.json()["__type"] == "UnknownOperationException"
    assert "NoSuchOperation" in answer.json()["message"]


# --- across a restart -------------------------------------------------------------------------------


@pytest.mark.slow
def test_experiments_automl_jobs_and_ecr_images_persist_across_a_restart(tmp_path):
    from localaws.client import register_image

    from tests.fixtures.docker_engine import ecr_uri
    from tests.fixtures.images import QUICK_TRAINER
    from tests.localaws.test_state import Restartable

    server = Restartable(tmp_path).start()
    try:
        sm = server.client("sagemaker")
        experiment, trial, name = unique("exp"), unique("trial"), unique("aml")[:32]
        sm.create_experiment(ExperimentName=experiment)
        sm.create_trial(TrialName=trial, ExperimentName=experiment)
        sm.create_auto_ml_job(
            AutoMLJobName=name,
            InputDataConfig=AUTOML_INPUT,
            OutputDataConfig={"S3OutputPath": "s3://automl-data/out"},
            RoleArn=ROLE_ARN,
            AutoMLJobConfig={"CompletionCriteria": {"MaxAutoMLJobRuntimeInSeconds": 3}},
        )
        created = sm.describe_auto_ml_job(AutoMLJobName=name)["CreationTime"]
        repository = unique("kept")
        register_image(server.endpoint_url, ecr_uri(repository, "v1"), QUICK_TRAINER)
        image = server.client("ecr").describe_images(repositoryName=repository)["imageDetails"]
        server.end("SIGTERM")
        assert "cannot be persisted" not in server.log()
        server.start()
        sm = server.client("sagemaker")
        assert [t["TrialName"] for t in sm.list_trials(ExperimentName=experiment)["TrialSummaries"]] == [trial]
        assert sm.describe_experiment(ExperimentName=f"{name}-aws-auto-ml-job")
        job = wait_until(
            lambda: (d := sm.describe_auto_ml_job(AutoMLJobName=name))["AutoMLJobStatus"] != "InProgress" and d,
            timeout=30,
        )
        assert job["CreationTime"] == created
        assert job["AutoMLJobSecondaryStatus"] == "MaxAutoMLJobRuntimeReached"
        again = server.client("ecr").describe_images(repositoryName=repository)["imageDetails"]
        assert again == image  # digest, tags, size, push time
    finally:
        server.stop()
