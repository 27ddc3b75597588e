"""SageMaker Autopilot (AutoML) jobs, v1 (``CreateAutoMLJob``) and v2 (``CreateAutoMLJobV2``), kept in
moto's records (``moto_records``) with AWS's state machine around them.

localaws trains no AutoML candidates: a job is a record that goes as AWS's does, ``InProgress``
(``Starting``) until it is stopped (``StopAutoMLJob``: ``Stopped``) or reaches its
``MaxAutoMLJobRuntimeInSeconds`` (``Stopped``, ``MaxAutoMLJobRuntimeReached``, with its end at that
moment), with no ``BestCandidate``. moto's own AutoML calls answer a job ``InProgress`` for ever, with
a made-up best candidate and an end time at its creation, and have no v1 calls; hence these.

A v1 job is kept as the v2 job AWS makes of it (a tabular problem: its ``TargetAttributeName``,
``ProblemType`` and ``AutoMLJobConfig`` in ``TabularJobConfig``), so that either API describes it.
The time limit is applied whenever a job is read, from what is stored (its creation and limit): a
job comes back from a restart as it would have gone on.
"""

from __future__ import annotations

import copy
import time
from typing import Any

from localaws.sagemaker import listing, moto_records
from localaws.sagemaker.errors import ResourceInUse, ResourceNotFound, ValidationError
from localaws.settings import Settings

TERMINAL = ("Completed", "Failed", "Stopped")
#: v1's AutoMLJobConfig members that v2 keeps in TabularJobConfig; the others are the request's own.
_TABULAR_FROM_JOB_CONFIG = ("CompletionCriteria", "Mode")


class AutoMLBackend:
    operations = (
        "CreateAutoMLJob",
        "CreateAutoMLJobV2",
        "DescribeAutoMLJob",
        "DescribeAutoMLJobV2",
        "ListAutoMLJobs",
        "StopAutoMLJob",
    )

    def __init__(self, settings: Settings):
        self.settings = settings

    def _jobs(self) -> dict[str, Any]:
        return moto_records.backend(self.settings).auto_ml_jobs

    # --- create --------------------------------------------------------------------------------

    def create_auto_ml_job(self, params: dict) -> dict:
        """v1: a tabular job, kept as its v2 form."""
        channels = params["InputDataConfig"]
        targets = {channel["TargetAttributeName"] for channel in channels}
        if len(targets) != 1:
            raise ValidationError("All channels of InputDataConfig must name the same TargetAttributeName.")
        weights = {channel.get("SampleWeightAttributeName") for channel in channels}
        if len(weights) != 1:
            raise ValidationError("All channels of InputDataConfig must name the same SampleWeightAttributeName.")
        job_config = params.get("AutoMLJobConfig") or {}
        tabular: dict[str, Any] = {"TargetAttributeName": targets.pop()}
        if weights and (weight := weights.pop()):
            tabular["SampleWeightAttributeName"] = weight
        for key in ("ProblemType", "GenerateCandidateDefinitionsOnly"):
            if params.get(key) is not None:
                tabular[key] = params[key]
        for key in _TABULAR_FROM_JOB_CONFIG:
            if job_config.get(key) is not None:
                tabular[key] = job_config[key]
        generation = dict(job_config.get("CandidateGenerationConfig") or {})
        if generation.get("FeatureSpecificationS3Uri"):
            tabular["FeatureSpecificationS3Uri"] = generation.pop("FeatureSpecificationS3Uri")
        if generation:
            tabular["CandidateGenerationConfig"] = generation
        v2 = {
            "AutoMLJobName": params["AutoMLJobName"],
            "AutoMLJobInputDataConfig": [
                {key: value for key, value in channel.items() if key in _V2_CHANNEL} for channel in channels
            ],
            "OutputDataConfig": params["OutputDataConfig"],
            "AutoMLProblemTypeConfig": {"TabularJobConfig": tabular},
            "RoleArn": params["RoleArn"],
        }
        for key in ("Tags", "AutoMLJobObjective", "ModelDeployConfig"):
            if params.get(key) is not None:
                v2[key] = params[key]
        for key in ("SecurityConfig", "DataSplitConfig"):
            if job_config.get(key) is not None:
                v2[key] = job_config[key]
        return self.create_auto_ml_job_v2(v2)

    def create_auto_ml_job_v2(self, params: dict) -> dict:
        name = params["AutoMLJobName"]
        problem = copy.deepcopy(params["AutoMLProblemTypeConfig"])
        if len(problem) != 1:
            raise ValidationError("AutoMLProblemTypeConfig must set exactly one problem type's configuration.")
        tabular = problem.get("TabularJobConfig")
        if tabular is not None and (tabular.get("ProblemType") is None) != (params.get("AutoMLJobObjective") is None):
            raise ValidationError(
                "Either specify both ProblemType and AutoMLJobObjective, or neither of them: Autopilot then "
                "infers the problem type and its objective from the data."
            )
        backend = moto_records.backend(self.settings)
        if name in backend.auto_ml_jobs:
            raise ResourceInUse(f"Auto ML Job with name {name} already exists. Choose a different name.")
        # moto's record reads these unconditionally: given for it, kept out of the job's own configuration.
        for_moto = copy.deepcopy(problem)
        (moto_config,) = for_moto.values()
        moto_config.setdefault("CompletionCriteria", {})
        if tabular is not None:
            moto_config.setdefault("ProblemType", None)
        arn = backend.create_auto_ml_job_v2(
            auto_ml_job_name=name,
            auto_ml_job_input_data_config=params["AutoMLJobInputDataConfig"],
            output_data_config=params["OutputDataConfig"],
            auto_ml_problem_type_config=for_moto,
            role_arn=params["RoleArn"],
            tags=params.get("Tags"),
            security_config=params.get("SecurityConfig"),
            auto_ml_job_objective=params.get("AutoMLJobObjective"),
            model_deploy_config=params.get("ModelDeployConfig"),
            data_split_config=params.get("DataSplitConfig"),
        )
        job = backend.auto_ml_jobs[name]
        job.auto_ml_problem_type_config = problem
        # What moto makes up for a job that has not run: taken out, the job set going as AWS's starts.
        job.auto_ml_job_status, job.auto_ml_job_secondary_status = "InProgress", "Starting"
        job.end_time = None
        job.best_candidate = None
        job.partial_failure_reasons = []
        job.auto_ml_job_artifacts = None
        job.model_deploy_result = None
        job.model_deploy_config = params.get("ModelDeployConfig")
        job.compute_config = params.get("AutoMLComputeConfig")
        job.last_modified_time = job.creation_time
        return {"AutoMLJobArn": arn}

    # --- read ----------------------------------------------------------------------------------

    def _job(self, name: str) -> Any:
        job = self._jobs().get(name)
        if job is None:
            raise ResourceNotFound(f"Could not find AutoML job with name {name}.")
        _advance(job)
        return job

    def describe_auto_ml_job_v2(self, params: dict) -> dict:
        job = self._job(params["AutoMLJobName"])
        out = {
            **_common(job),
            "AutoMLJobInputDataConfig": job.auto_ml_job_input_data_config,
            "AutoMLProblemTypeConfig": job.auto_ml_problem_type_config,
            "AutoMLProblemTypeConfigName": job.auto_ml_problem_type_config_name,
            "DataSplitConfig": job.data_split_config,
            "SecurityConfig": job.security_config,
            "AutoMLComputeConfig": getattr(job, "compute_config", None),
            "ResolvedAttributes": _resolved_v2(job),
        }
        return _present(out)

    def describe_auto_ml_job(self, params: dict) -> dict:
        job = self._job(params["AutoMLJobName"])
        tabular = job.auto_ml_problem_type_config.get("TabularJobConfig")
        if tabular is None:
            raise ValidationError(
                f"The AutoML job {job.auto_ml_job_name} is a {job.auto_ml_problem_type_config_name} job: "
                "describe it with DescribeAutoMLJobV2."
            )
        channel_extra = {"TargetAttributeName": tabular["TargetAttributeName"]}
        if tabular.get("SampleWeightAttributeName"):
            channel_extra["SampleWeightAttributeName"] = tabular["SampleWeightAttributeName"]
        job_config = {key: tabular[key] for key in _TABULAR_FROM_JOB_CONFIG if tabular.get(key) is not None}
        generation = dict(tabular.get("CandidateGenerationConfig") or {})
        if tabular.get("FeatureSpecificationS3Uri"):
            generation["FeatureSpecificationS3Uri"] = tabular["FeatureSpecificationS3Uri"]
        if generation:
            job_config["CandidateGenerationConfig"] = generation
        for key, value in (("SecurityConfig", job.security_config), ("DataSplitConfig", job.data_split_config)):
            if value:
                job_config[key] = value
        resolved = None
        if tabular.get("ProblemType"):  # what AWS resolves from the data otherwise, which nothing analyses here
            resolved = _present(
                {
                    "AutoMLJobObjective": job.auto_ml_job_objective,
                    "ProblemType": tabular["ProblemType"],
                    "CompletionCriteria": tabular.get("CompletionCriteria"),
                }
            )
        out = {
            **_common(job),
            "InputDataConfig": [{**channel, **channel_extra} for channel in job.auto_ml_job_input_data_config],
            "ProblemType": tabular.get("ProblemType"),
            "AutoMLJobConfig": job_config,
            "GenerateCandidateDefinitionsOnly": tabular.get("GenerateCandidateDefinitionsOnly"),
            "ResolvedAttributes": resolved,
        }
        return _present(out)

    def list_auto_ml_jobs(self, params: dict) -> dict:
        jobs = list(self._jobs().values())
        summaries = []
        for job in jobs:
            _advance(job)
            summaries.append(
                _present(
                    {
                        "AutoMLJobName": job.auto_ml_job_name,
                        "AutoMLJobArn": job.arn,
                        "AutoMLJobStatus": job.auto_ml_job_status,
                        "AutoMLJobSecondaryStatus": job.auto_ml_job_secondary_status,
                        "CreationTime": moto_records.epoch(job.creation_time),
                        "EndTime": moto_records.epoch(job.end_time),
                        "LastModifiedTime": moto_records.epoch(job.last_modified_time),
                        "FailureReason": job.failure_reason,
                        "PartialFailureReasons": job.partial_failure_reasons,
                    }
                )
            )
        page, token = listing.page(
            summaries,
            params,
            name_key="AutoMLJobName",
            status_key="AutoMLJobStatus",
            sort_keys={"Name": "AutoMLJobName", "CreationTime": "CreationTime", "Status": "AutoMLJobStatus"},
            default_sort="Name",
            default_order="Descending",
        )
        return {"AutoMLJobSummaries": page, **({"NextToken": token} if token else {})}

    # --- stop ----------------------------------------------------------------------------------

    def stop_auto_ml_job(self, params: dict) -> dict:
        job = self._job(params["AutoMLJobName"])
        if job.auto_ml_job_status != "InProgress":
            raise ValidationError(
                f"The AutoML job {job.auto_ml_job_name} has already reached a terminal state "
                f"({job.auto_ml_job_status}) and cannot be stopped."
            )
        # Nothing runs to be stopped gracefully: Stopping is over at once.
        _end(job, "Stopped", "Stopped", time.time())
        return {}


_V2_CHANNEL = ("ChannelType", "ContentType", "CompressionType", "DataSource")


def _advance(job: Any) -> None:
    """The job's MaxAutoMLJobRuntimeInSeconds reached while it was InProgress: stopped at that moment."""
    if job.auto_ml_job_status != "InProgress":
        return
    (config,) = job.auto_ml_problem_type_config.values()
    limit = (config.get("CompletionCriteria") or {}).get("MaxAutoMLJobRuntimeInSeconds")
    created = moto_records.epoch(job.creation_time) or time.time()
    if limit and time.time() >= created + limit:
        _end(job, "Stopped", "MaxAutoMLJobRuntimeReached", created + limit)


def _end(job: Any, status: str, secondary: str, at: float) -> None:
    job.auto_ml_job_status, job.auto_ml_job_secondary_status = status, secondary
    job.end_time = job.last_modified_time = moto_records.moment(at)


def _common(job: Any) -> dict:
    return {
        "AutoMLJobName": job.auto_ml_job_name,
        "AutoMLJobArn": job.arn,
        "OutputDataConfig": job.output_data_config,
        "RoleArn": job.role_arn,
        "AutoMLJobObjective": job.auto_ml_job_objective,
        "CreationTime": moto_records.epoch(job.creation_time),
        "EndTime": moto_records.epoch(job.end_time),
        "LastModifiedTime": moto_records.epoch(job.last_modified_time),
        "FailureReason": job.failure_reason,
        "PartialFailureReasons": job.partial_failure_reasons,
        "BestCandidate": job.best_candidate,
        "AutoMLJobStatus": job.auto_ml_job_status,
        "AutoMLJobSecondaryStatus": job.auto_ml_job_secondary_status,
        "AutoMLJobArtifacts": job.auto_ml_job_artifacts,
        "ModelDeployConfig": job.model_deploy_config,
        "ModelDeployResult": job.model_deploy_result,
    }


def _resolved_v2(job: Any) -> dict | None:
    """What AWS resolves before it trains: the objective and completion criteria the job was given (the
    problem type only where the request named it; AWS infers it from the data, which nothing reads here)."""
    (config,) = job.auto_ml_problem_type_config.values()
    resolved: dict[str, Any] = {"CompletionCriteria": config.get("CompletionCriteria")}
    if job.auto_ml_job_objective:
        resolved["AutoMLJobObjective"] = job.auto_ml_job_objective
    problem_type = config.get("ProblemType")
    if problem_type:
        resolved["AutoMLProblemTypeResolvedAttributes"] = {"TabularResolvedAttributes": {"ProblemType": problem_type}}
    return _present(resolved) or None


def _present(out: dict) -> dict:
    """The answer without its empty members (AWS leaves out what a job does not have)."""
    return {key: value for key, value in out.items() if value not in (None, "", [], {})}
