"""Hyperparameter tuning jobs: their state, counters and the calls that read or change them.

What a tuning job does while it runs (launch trials, early stopping, the
strategies) lives in ``executor.py`` and ``strategies.py``.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from localaws.sagemaker import listing
from localaws.sagemaker.persisted_jobs import PersistedJobs
from localaws.sagemaker.errors import ResourceInUse, ResourceNotFound, ValidationError
from localaws.state.pickling import RUNTIME, runtime

_MAX_TUNED_PARAMETERS = 30
STOPPED_WITH_LOCALAWS = "InternalServerError: localaws stopped while the tuning job was running."


def grid_size(ranges: dict) -> int:
    """How many combinations a Grid search has: the product of its categorical ranges' sizes."""
    size = 1
    for item in ranges.get("CategoricalParameterRanges", []):
        size *= len(item["Values"])
    return size


@dataclass
class Trial:
    """One child training job of a tuning job."""

    name: str
    definition: dict
    tuned: dict[str, str]
    proposal: object = field(metadata=RUNTIME)  # the strategy's handle: only the running tuning job needs it
    objective: dict  # {"Type", "MetricName"}
    early_stopped: bool = False
    told: bool = False


@dataclass
class TuningJob:
    name: str
    arn: str
    request: dict
    created: float
    status: str = "InProgress"
    trials: list[Trial] = field(default_factory=list)
    failure_reason: str | None = None
    ended: float | None = None
    last_modified: float = 0.0
    stop_requested: threading.Event = runtime(default_factory=threading.Event)

    @property
    def config(self) -> dict:
        return self.request["HyperParameterTuningJobConfig"]

    @property
    def definitions(self) -> list[dict]:
        if self.request.get("TrainingJobDefinitions"):
            return self.request["TrainingJobDefinitions"]
        return [self.request["TrainingJobDefinition"]]

    @property
    def done(self) -> bool:
        return self.status in ("Completed", "Failed", "Stopped")

    def end_interrupted(self, at: float) -> None:
        """localaws stopped at ``at`` while the tuning job ran (its trials end as training jobs do)."""
        if self.status == "Stopping":
            self.status = "Stopped"
        else:
            self.status = "Failed"
            self.failure_reason = STOPPED_WITH_LOCALAWS
        self.ended = self.last_modified = at


def objective_of(config: dict, definition: dict) -> dict:
    return definition.get("TuningObjective") or config["HyperParameterTuningJobObjective"]


def ranges_of(config: dict, definition: dict) -> dict:
    return definition.get("HyperParameterRanges") or config.get("ParameterRanges") or {}


class TuningBackend(PersistedJobs):
    operations = (
        "CreateHyperParameterTuningJob",
        "DescribeHyperParameterTuningJob",
        "ListHyperParameterTuningJobs",
        "ListTrainingJobsForHyperParameterTuningJob",
        "StopHyperParameterTuningJob",
    )

    def __init__(self, training, executor):
        """``training`` is the SageMakerBackend whose training jobs are the trials; it also holds
        the tags and the lock; ``executor(backend)`` makes what runs its tuning jobs (``executor.py``:
        ``start(job)``, ``shutdown()``)."""
        self.training = training
        self.executor = executor(self)
        self.lock = training.lock
        self.jobs: dict[str, TuningJob] = {}

    def get(self, name: str) -> TuningJob:
        with self.lock:
            job = self.jobs.get(name)
        if job is None:
            raise ResourceNotFound(f"Amazon SageMaker can't find a tuning job with name {name}")
        return job

    # --- calls ---------------------------------------------------------------------------

    def create_hyper_parameter_tuning_job(self, params: dict) -> dict:
        self._check(params)
        name = params["HyperParameterTuningJobName"]
        with self.lock:
            if name in self.jobs:
                raise ResourceInUse(f"Tuning job with name {name} already exists.")
            job = TuningJob(
                name=name,
                arn=self.training.arn("hyper-parameter-tuning-job", name),
                request=params,
                created=time.time(),
            )
            job.last_modified = job.created
            self.jobs[name] = job
            self.training.tags[job.arn] = list(params.get("Tags", []))
        self.executor.start(job)
        return {"HyperParameterTuningJobArn": job.arn}

    def describe_hyper_parameter_tuning_job(self, params: dict) -> dict:
        job = self.get(params["HyperParameterTuningJobName"])
        with self.lock:
            out = {
                "HyperParameterTuningJobName": job.name,
                "HyperParameterTuningJobArn": job.arn,
                "HyperParameterTuningJobConfig": job.config,
                "HyperParameterTuningJobStatus": job.status,
                "CreationTime": job.created,
                "HyperParameterTuningEndTime": job.ended,
                "LastModifiedTime": job.last_modified,
                "TrainingJobStatusCounters": self.status_counters(job),
                "ObjectiveStatusCounters": self.objective_counters(job),
                "FailureReason": job.failure_reason,
                "WarmStartConfig": job.request.get("WarmStartConfig"),
                "ConsumedResources": {"RuntimeInSeconds": int((job.ended or time.time()) - job.created)},
            }
            if job.request.get("TrainingJobDefinitions"):
                out["TrainingJobDefinitions"] = job.request["TrainingJobDefinitions"]
            else:
                out["TrainingJobDefinition"] = job.request["TrainingJobDefinition"]
            best = self.best(job)
            if best:
                out["BestTrainingJob"] = best
            if job.request.get("WarmStartConfig"):
                overall = self.overall_best(job)
                if overall:
                    out["OverallBestTrainingJob"] = overall
        return {key: value for key, value in out.items() if value is not None}

    def list_hyper_parameter_tuning_jobs(self, params: dict) -> dict:
        with self.lock:
            summaries = [
                {
                    "HyperParameterTuningJobName": job.name,
                    "HyperParameterTuningJobArn": job.arn,
                    "HyperParameterTuningJobStatus": job.status,
                    "Strategy": job.config["Strategy"],
                    "CreationTime": job.created,
                    "HyperParameterTuningEndTime": job.ended,
                    "LastModifiedTime": job.last_modified,
                    "TrainingJobStatusCounters": self.status_counters(job),
                    "ObjectiveStatusCounters": self.objective_counters(job),
                    "ResourceLimits": job.config.get("ResourceLimits"),
                }
                for job in self.jobs.values()
            ]
        summaries = [{k: v for k, v in s.items() if v is not None} for s in summaries]
        page, token = listing.page(
            summaries,
            params,
            name_key="HyperParameterTuningJobName",
            status_key="HyperParameterTuningJobStatus",
            sort_keys={
                "Name": "HyperParameterTuningJobName",
                "Status": "HyperParameterTuningJobStatus",
                "CreationTime": "CreationTime",
            },
            default_sort="Name",
        )
        return {"HyperParameterTuningJobSummaries": page, **({"NextToken": token} if token else {})}

    def list_training_jobs_for_hyper_parameter_tuning_job(self, params: dict) -> dict:
        job = self.get(params["HyperParameterTuningJobName"])
        with self.lock:
            found = [self.trial_summary(job, trial) for trial in job.trials]
        summaries = [s for s in found if s is not None]
        sort_by = params.get("SortBy") or "Name"
        if sort_by == "FinalObjectiveMetricValue":
            # AWS lists only the trials that reported the objective, best first by default.
            summaries = [s for s in summaries if "FinalHyperParameterTuningJobObjectiveMetric" in s]
            for summary in summaries:
                summary["_objective"] = summary["FinalHyperParameterTuningJobObjectiveMetric"]["Value"]
        page, token = listing.page(
            summaries,
            {**params, "SortBy": sort_by},
            name_key="TrainingJobName",
            status_key="TrainingJobStatus",
            sort_keys={
                "Name": "TrainingJobName",
                "CreationTime": "CreationTime",
                "Status": "TrainingJobStatus",
                "FinalObjectiveMetricValue": "_objective",
            },
            default_sort="Name",
        )
        for summary in page:
            summary.pop("_objective", None)
        return {"TrainingJobSummaries": page, **({"NextToken": token} if token else {})}

    def stop_hyper_parameter_tuning_job(self, params: dict) -> dict:
        job = self.get(params["HyperParameterTuningJobName"])
        with self.lock:
            if job.status != "InProgress":
                raise ValidationError(f"The request was rejected because the tuning job is in status {job.status}.")
            job.status = "Stopping"
            job.last_modified = time.time()
        job.stop_requested.set()
        return {}

    # state() and restore() across restarts: PersistedJobs (tuning's are restored after the training jobs).

    # --- derived state (call with the lock held) ----------------------------------------------

    def _training(self, trial: Trial):
        return self.training.training_jobs.get(trial.name)

    def objective_value(self, trial: Trial) -> float | None:
        child = self._training(trial)
        if child is None or child.status != "Completed" and not trial.early_stopped:
            return None
        metric = child.final_metrics.get(trial.objective["MetricName"])
        return metric["Value"] if metric else None

    def trial_summary(self, job: TuningJob, trial: Trial) -> dict | None:
        child = self._training(trial)
        if child is None:
            return None
        summary = {
            "TrainingJobName": child.name,
            "TrainingJobArn": child.arn,
            "TuningJobName": job.name,
            "CreationTime": child.created,
            "TrainingStartTime": child.training_start,
            "TrainingEndTime": child.training_end,
            "TrainingJobStatus": child.status if child.status != "Stopping" else "InProgress",
            "TunedHyperParameters": trial.tuned,
            "FailureReason": child.failure_reason,
            "ObjectiveStatus": self._objective_status(trial),
        }
        if len(job.definitions) > 1:
            summary["TrainingJobDefinitionName"] = trial.definition.get("DefinitionName")
        value = self.objective_value(trial)
        if value is not None:
            summary["FinalHyperParameterTuningJobObjectiveMetric"] = {
                "Type": trial.objective["Type"],
                "MetricName": trial.objective["MetricName"],
                "Value": value,
            }
        return {key: v for key, v in summary.items() if v is not None}

    def _objective_status(self, trial: Trial) -> str:
        child = self._training(trial)
        if child is None or not child.done:
            return "Pending"
        return "Succeeded" if self.objective_value(trial) is not None else "Failed"

    def status_counters(self, job: TuningJob) -> dict:
        counters = {"Completed": 0, "InProgress": 0, "RetryableError": 0, "NonRetryableError": 0, "Stopped": 0}
        for trial in job.trials:
            child = self._training(trial)
            if child is None:
                continue
            if child.status == "Completed":
                counters["Completed"] += 1
            elif child.status == "Stopped":
                counters["Stopped"] += 1
            elif child.status == "Failed":
                internal = (child.failure_reason or "").startswith("InternalServerError")
                counters["RetryableError" if internal else "NonRetryableError"] += 1
            else:
                counters["InProgress"] += 1
        return counters

    def objective_counters(self, job: TuningJob) -> dict:
        counters = {"Succeeded": 0, "Pending": 0, "Failed": 0}
        for trial in job.trials:
            counters[self._objective_status(trial)] += 1
        return counters

    def _ranked(self, job: TuningJob) -> list[tuple[float, Trial]]:
        scored = []
        for trial in job.trials:
            value = self.objective_value(trial)
            if value is not None:
                sign = 1 if trial.objective["Type"] == "Minimize" else -1
                scored.append((sign * value, trial))
        return sorted(scored, key=lambda pair: pair[0])

    def best(self, job: TuningJob) -> dict | None:
        ranked = self._ranked(job)
        return self.trial_summary(job, ranked[0][1]) if ranked else None

    def overall_best(self, job: TuningJob) -> dict | None:
        candidates = [(job, self._ranked(job))]
        for parent in (job.request.get("WarmStartConfig") or {}).get("ParentHyperParameterTuningJobs", []):
            other = self.jobs.get(parent["HyperParameterTuningJobName"])
            if other is not None:
                candidates.append((other, self._ranked(other)))
        best = min(
            ((ranked[0][0], owner, ranked[0][1]) for owner, ranked in candidates if ranked),
            key=lambda item: item[0],
            default=None,
        )
        return self.trial_summary(best[1], best[2]) if best else None

    # --- validation ----------------------------------------------------------------------

    def _check(self, params: dict) -> None:
        config = params["HyperParameterTuningJobConfig"]
        definitions = params.get("TrainingJobDefinitions") or (
            [params["TrainingJobDefinition"]] if params.get("TrainingJobDefinition") else []
        )
        if not definitions:
            raise ValidationError("Either TrainingJobDefinition or TrainingJobDefinitions must be specified.")
        if params.get("TrainingJobDefinition") and params.get("TrainingJobDefinitions"):
            raise ValidationError("Specify either TrainingJobDefinition or TrainingJobDefinitions, not both.")
        if len(definitions) > 1 and any(not d.get("DefinitionName") for d in definitions):
            raise ValidationError("Each of several TrainingJobDefinitions needs a DefinitionName.")
        strategy = config["Strategy"]
        limits = config.get("ResourceLimits") or {}
        max_jobs = limits.get("MaxNumberOfTrainingJobs")
        parallel = limits.get("MaxParallelTrainingJobs", 1)
        if strategy != "Grid" and max_jobs is None:
            raise ValidationError(f"MaxNumberOfTrainingJobs is required for the {strategy} strategy.")
        if max_jobs is not None and parallel > max_jobs:
            raise ValidationError(
                f"MaxParallelTrainingJobs cannot be greater than MaxNumberOfTrainingJobs ({parallel} > {max_jobs})."
            )
        early = config.get("TrainingJobEarlyStoppingType", "Off")
        if strategy == "Hyperband" and early != "Off":
            raise ValidationError("TrainingJobEarlyStoppingType must be Off with the Hyperband strategy.")
        if strategy != "Hyperband" and (config.get("StrategyConfig") or {}).get("HyperbandStrategyConfig"):
            raise ValidationError("HyperbandStrategyConfig can be specified only with the Hyperband strategy.")
        for definition in definitions:
            objective = definition.get("TuningObjective") or config.get("HyperParameterTuningJobObjective")
            if not objective:
                raise ValidationError("The tuning objective (HyperParameterTuningJobObjective) is required.")
            metrics = [m["Name"] for m in definition["AlgorithmSpecification"].get("MetricDefinitions", [])]
            if objective["MetricName"] not in metrics:
                raise ValidationError(
                    f"The objective metric for the hyperparameter tuning job, [{objective['MetricName']}], isn't "
                    f"valid for the [{definition['AlgorithmSpecification'].get('TrainingImage')}] algorithm. "
                    "Choose a metric from MetricDefinitions."
                )
            if not definition["AlgorithmSpecification"].get("TrainingImage"):
                raise ValidationError("localaws tunes your own training images: pass TrainingImage.")
            ranges = ranges_of(config, definition)
            self._check_ranges(strategy, ranges, definition.get("StaticHyperParameters") or {})
            if strategy == "Grid" and max_jobs is not None and max_jobs > grid_size(ranges):
                raise ValidationError(
                    f"MaxNumberOfTrainingJobs ({max_jobs}) is greater than the number of grid combinations "
                    f"({grid_size(ranges)})."
                )
        warm = params.get("WarmStartConfig")
        if warm:
            for parent in warm["ParentHyperParameterTuningJobs"]:
                other = self.jobs.get(parent["HyperParameterTuningJobName"])
                if other is None:
                    raise ValidationError(f"Parent tuning job {parent['HyperParameterTuningJobName']} does not exist.")
                if not other.done:
                    raise ValidationError(
                        f"Parent tuning job {other.name} is {other.status}: a warm start needs finished parents."
                    )
                if warm["WarmStartType"] == "IdenticalDataAndAlgorithm":
                    mine, theirs = definitions[0], other.definitions[0]
                    image = mine["AlgorithmSpecification"]["TrainingImage"]
                    if image != theirs["AlgorithmSpecification"]["TrainingImage"] or mine.get(
                        "InputDataConfig"
                    ) != theirs.get("InputDataConfig"):
                        raise ValidationError(
                            "IdenticalDataAndAlgorithm needs the same training image and input data as "
                            f"parent tuning job {other.name}."
                        )

    @staticmethod
    def _check_ranges(strategy: str, ranges: dict, static: dict) -> None:
        names = [item["Name"] for kind in ranges.values() if isinstance(kind, list) for item in kind]
        if len(names) > _MAX_TUNED_PARAMETERS:
            raise ValidationError(f"At most {_MAX_TUNED_PARAMETERS} hyperparameters can be tuned ({len(names)}).")
        if len(names) != len(set(names)):
            raise ValidationError("Each hyperparameter may appear in one range only.")
        for name in names:
            if name in static:
                raise ValidationError(f"Hyperparameter {name} is both tuned and static.")
        if strategy == "Grid" and (ranges.get("IntegerParameterRanges") or ranges.get("ContinuousParameterRanges")):
            raise ValidationError("The Grid strategy supports categorical parameter ranges only.")
        if not names:
            raise ValidationError("At least one hyperparameter range is required.")
        for kind in ("IntegerParameterRanges", "ContinuousParameterRanges"):
            for item in ranges.get(kind, []):
                try:
                    low, high = float(item["MinValue"]), float(item["MaxValue"])
                except ValueError:
                    raise ValidationError(f"The range of {item['Name']} must have numeric bounds.") from None
                if kind == "IntegerParameterRanges" and (low != int(low) or high != int(high)):
                    raise ValidationError(f"The range of integer hyperparameter {item['Name']} must be integers.")
                if low > high:
                    raise ValidationError(f"MinValue must be less than or equal to MaxValue for {item['Name']}.")
                scaling = item.get("ScalingType", "Auto")
                if scaling == "Logarithmic" and low <= 0:
                    raise ValidationError(f"Logarithmic scaling of {item['Name']} needs a MinValue greater than 0.")
                if scaling == "ReverseLogarithmic" and (kind != "ContinuousParameterRanges" or low < 0 or high >= 1):
                    raise ValidationError(
                        f"ReverseLogarithmic scaling of {item['Name']} needs a continuous range within [0, 1)."
                    )
        for item in ranges.get("CategoricalParameterRanges", []):
            if len(set(item["Values"])) != len(item["Values"]):
                raise ValidationError(f"The values of categorical hyperparameter {item['Name']} must be unique.")
