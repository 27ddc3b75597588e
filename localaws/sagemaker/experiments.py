"""SageMaker Experiments: moto's records and calls (``CreateExperiment``, ``ListTrials``,
``DeleteTrialComponent``, ...), with what AWS does beside them.

**Missing records.** An experiment call that names an experiment, trial or trial component that does
not exist is AWS's ``ResourceNotFound`` (botocore's model lists it for each), checked before moto is
asked: moto crashes on some (``DescribeExperiment``), answers others ``ValidationException`` naming
the wrong kind, and makes a trial in an experiment that does not exist.

**Jobs' records** (``moto_records``), as AWS makes them:
As AWS does: a training, processing or transform job is a trial component named
``<job>-aws-training-job`` (``-aws-processing-job``, ``-aws-transform-job``) whose source is the job;
with an ``ExperimentConfig`` it is associated with the trial named there (which must exist) or with a
new trial ``<job>-aws-trial`` of the experiment named there (which must exist). A tuning job gets the
experiment ``<job>-aws-tuning-job``, an AutoML job ``<job>-aws-auto-ml-job``. A missing experiment or
trial is AWS's ValidationException, before the job is created.

The records say what the job was asked (its hyperparameters, inputs, instance type and image); they are
written when the job is created and not followed afterwards: a component has no ``Status`` or metrics.
Trials of a tuning job's own training jobs are not made (those are created inside the engine).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from localaws.sagemaker import moto_records
from localaws.sagemaker.errors import ResourceNotFound, ValidationError
from localaws.settings import Settings

#: Job creation -> (the request's name member, the component's suffix, its SourceType).
_COMPONENT_JOBS = {
    "CreateTrainingJob": ("TrainingJobName", "aws-training-job", "SageMakerTrainingJob"),
    "CreateProcessingJob": ("ProcessingJobName", "aws-processing-job", "SageMakerProcessingJob"),
    "CreateTransformJob": ("TransformJobName", "aws-transform-job", "SageMakerTransformJob"),
}
#: Job creation -> (the request's name member, the suffix of the experiment made for it).
_EXPERIMENT_JOBS = {
    "CreateHyperParameterTuningJob": ("HyperParameterTuningJobName", "aws-tuning-job"),
    "CreateAutoMLJob": ("AutoMLJobName", "aws-auto-ml-job"),
    "CreateAutoMLJobV2": ("AutoMLJobName", "aws-auto-ml-job"),
}
#: Experiment calls (moto's) -> the members naming what must exist, and its kind.
_MUST_EXIST = {
    "DescribeExperiment": ("ExperimentName",),
    "DeleteExperiment": ("ExperimentName",),
    "CreateTrial": ("ExperimentName",),
    "DescribeTrial": ("TrialName",),
    "DeleteTrial": ("TrialName",),
    "DescribeTrialComponent": ("TrialComponentName",),
    "DeleteTrialComponent": ("TrialComponentName",),
    "UpdateTrialComponent": ("TrialComponentName",),
    "AssociateTrialComponent": ("TrialName", "TrialComponentName"),
    "DisassociateTrialComponent": ("TrialName", "TrialComponentName"),
    "ListTrials": ("ExperimentName", "TrialComponentName"),
    "ListTrialComponents": ("ExperimentName", "TrialName"),
}
#: A member -> (moto's collection of that record, the record's kind in its ARN, its name in AWS's message).
_RECORDS = {
    "ExperimentName": ("experiments", "experiment", "Experiment"),
    "TrialName": ("trials", "experiment-trial", "Trial"),
    "TrialComponentName": ("trial_components", "experiment-trial-component", "Trial component"),
}
#: The answer member that names the created job's ARN.
_ARN_MEMBERS = ("TrainingJobArn", "ProcessingJobArn", "TransformJobArn")

Handler = Callable[[dict], Any]


class ExperimentRecords:
    """AWS's checks of moto's experiment calls (``check``), and the records made for new jobs (``wrap``)."""

    #: Job creations given the records AWS makes for them.
    operations = frozenset(_COMPONENT_JOBS) | frozenset(_EXPERIMENT_JOBS)

    def __init__(self, settings: Settings):
        self.settings = settings

    def check(self, operation: str, params: dict) -> None:
        """``ResourceNotFound`` where an experiment call to moto names a record that does not exist."""
        members = _MUST_EXIST.get(operation)
        if not members:
            return
        backend = moto_records.backend(self.settings)
        for member in members:
            name = params.get(member)
            collection, kind, title = _RECORDS[member]
            if name and name not in getattr(backend, collection):
                raise ResourceNotFound(f"{title} '{_arn(backend, kind, name)}' does not exist.")

    def wrap(self, operation: str, handler: Handler) -> Handler:
        if operation in _COMPONENT_JOBS:
            name_member, suffix, source_type = _COMPONENT_JOBS[operation]

            def create_job(params: dict) -> Any:
                self._check_experiment_config(params.get("ExperimentConfig"))
                answer = handler(params)
                self._record_component(params, answer, name_member, suffix, source_type)
                return answer

            return create_job
        if operation in _EXPERIMENT_JOBS:
            name_member, suffix = _EXPERIMENT_JOBS[operation]

            def create_with_experiment(params: dict) -> Any:
                answer = handler(params)
                backend = moto_records.backend(self.settings)
                experiment = f"{params[name_member]}-{suffix}"
                if experiment not in backend.experiments:
                    backend.create_experiment(experiment)
                return answer

            return create_with_experiment
        return handler

    def _check_experiment_config(self, config: dict | None) -> None:
        if not config:
            return
        backend = moto_records.backend(self.settings)
        experiment, trial = config.get("ExperimentName"), config.get("TrialName")
        if experiment and experiment not in backend.experiments:
            raise ValidationError(f"Experiment '{_arn(backend, 'experiment', experiment)}' does not exist.")
        if trial:
            found = backend.trials.get(trial)
            if found is None:
                raise ValidationError(f"Trial '{_arn(backend, 'experiment-trial', trial)}' does not exist.")
            if experiment and found.experiment_name != experiment:
                raise ValidationError(f"Trial '{trial}' does not belong to experiment '{experiment}'.")

    def _record_component(self, params: dict, answer: Any, name_member: str, suffix: str, source_type: str) -> None:
        backend = moto_records.backend(self.settings)
        job = params[name_member]
        name = f"{job}-{suffix}"
        config = params.get("ExperimentConfig") or {}
        trial = config.get("TrialName")
        if not trial and config.get("ExperimentName"):
            trial = f"{job}-aws-trial"
            if trial not in backend.trials:
                backend.create_trial(trial_name=trial, experiment_name=config["ExperimentName"])
        backend.create_trial_component(
            trial_component_name=name,
            trial_name=None,
            status=None,
            start_time=None,
            end_time=None,
            display_name=config.get("TrialComponentDisplayName"),
            parameters=_parameters(params),
            input_artifacts=_inputs(params),
            output_artifacts=None,
            metadata_properties=None,
        )
        component = backend.trial_components[name]
        source_arn = next((answer[key] for key in _ARN_MEMBERS if isinstance(answer, dict) and key in answer), None)
        if source_arn:
            component.source = {"SourceArn": source_arn, "SourceType": source_type}
            component.sources = [component.source]
        if trial:
            backend.associate_trial_component(trial, name)


def _arn(backend: Any, kind: str, name: str) -> str:
    from moto.sagemaker.utils import arn_formatter  # noqa: PLC0415 - moto's, as its own records are named

    return arn_formatter(kind, name, backend.account_id, backend.region_name)


def _parameters(params: dict) -> dict:
    """The job's hyperparameters and resources, as AWS lists them on its component."""
    out: dict[str, dict] = {
        key: {"StringValue": str(value)} for key, value in (params.get("HyperParameters") or {}).items()
    }
    resources = params.get("ResourceConfig") or params.get("TransformResources") or {}
    if not resources and params.get("ProcessingResources"):
        resources = params["ProcessingResources"].get("ClusterConfig") or {}
    if resources.get("InstanceType"):
        out["SageMaker.InstanceType"] = {"StringValue": resources["InstanceType"]}
    if resources.get("InstanceCount") is not None:
        out["SageMaker.InstanceCount"] = {"NumberValue": resources["InstanceCount"]}
    image = (params.get("AlgorithmSpecification") or params.get("AppSpecification") or {}).get("TrainingImage") or (
        params.get("AppSpecification") or {}
    ).get("ImageUri")
    if image:
        out["SageMaker.ImageUri"] = {"StringValue": image}
    return out


def _inputs(params: dict) -> dict:
    """The job's S3 inputs by channel (or processing input) name."""
    out: dict[str, dict] = {}
    for channel in params.get("InputDataConfig") or []:
        uri = ((channel.get("DataSource") or {}).get("S3DataSource") or {}).get("S3Uri")
        if uri:
            out[channel["ChannelName"]] = {"Value": uri}
    for processing_input in params.get("ProcessingInputs") or []:
        uri = (processing_input.get("S3Input") or {}).get("S3Uri")
        if uri:
            out[processing_input["InputName"]] = {"Value": uri}
    transform = ((params.get("TransformInput") or {}).get("DataSource") or {}).get("S3DataSource") or {}
    if transform.get("S3Uri"):
        out["SageMaker.TransformInput"] = {"Value": transform["S3Uri"]}
    return out
