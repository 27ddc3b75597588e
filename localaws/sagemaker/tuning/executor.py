"""What a tuning job does while it runs: keep MaxParallelTrainingJobs trials going until
MaxNumberOfTrainingJobs have run (or the grid is covered), feed each result back to the
strategy, stop losing trials early, and end Completed, Failed or Stopped."""

from __future__ import annotations

import logging
import statistics
import threading
import time
import traceback
import uuid

from localaws.aws_errors import AwsError
from localaws.sagemaker.errors import ResourceLimitExceeded
from localaws.sagemaker.shapes import validate_request
from localaws.sagemaker.tuning.models import Trial, TuningJob, objective_of

log = logging.getLogger(__name__)

_POLL_SECONDS = 0.3
#: The median rule judges a trial only after this many objective values (epochs).
_MEDIAN_RULE_MIN_STEPS = 3


class TuningExecutor:
    def __init__(self, backend):
        """``backend`` is the TuningBackend whose jobs this runs (it builds its executor)."""
        self.backend = backend
        self._threads: list[threading.Thread] = []
        self._closing = threading.Event()

    def start(self, job: TuningJob) -> None:
        thread = threading.Thread(target=self._run, args=(job,), name=f"tuning-{job.name}", daemon=True)
        self._threads.append(thread)
        thread.start()

    def shutdown(self) -> None:
        self._closing.set()
        for thread in self._threads:
            thread.join(timeout=15)

    # --- one tuning job -------------------------------------------------------------------

    def _run(self, job: TuningJob) -> None:
        try:
            self._loop(job)
        except Exception as error:  # noqa: BLE001 - a bug here must still end the job
            log.error("tuning job %s crashed:\n%s", job.name, traceback.format_exc())
            self._end(job, "Failed", f"InternalServerError: {type(error).__name__}: {error}")

    def _end(self, job: TuningJob, status: str, reason: str | None = None) -> None:
        with self.backend.lock:
            if job.done:
                return
            job.status = status
            job.failure_reason = reason
            job.ended = job.last_modified = time.time()

    def _loop(self, job: TuningJob) -> None:
        backend = self.backend
        config = job.config
        limits = config.get("ResourceLimits") or {}
        max_jobs = limits.get("MaxNumberOfTrainingJobs") or 10_000
        parallel = limits.get("MaxParallelTrainingJobs", 1)
        target = (config.get("TuningJobCompletionCriteria") or {}).get("TargetObjectiveMetricValue")
        # optuna (and numpy under it) load with the first tuning job: 0.4 s of every localaws start otherwise.
        from localaws.sagemaker.tuning.strategies import make_strategy  # noqa: PLC0415

        strategies = [make_strategy(config, definition, max_jobs) for definition in job.definitions]
        self._warm_start(job, strategies)
        exhausted = [False] * len(strategies)
        pending: dict[int, object] = {}  # proposals the instance quota refused, to launch first next time
        turn = 0
        reached_target = False

        while True:
            stopping = job.stop_requested.is_set() or self._closing.is_set()
            with backend.lock:
                running = [t for t in job.trials if not backend.training.training_jobs[t.name].done]
            self._tell_finished(job, strategies)
            if stopping:
                for trial in running:
                    self._stop_trial(trial)
                if not running:
                    return self._end(job, "Stopped")
            else:
                self._early_stop(job, strategies, running)
                if target is not None and self._best_reaches(job, target):
                    reached_target = True
                while (
                    len(running) < parallel and len(job.trials) < max_jobs and not reached_target and not all(exhausted)
                ):
                    index = turn % len(strategies)
                    turn += 1
                    if exhausted[index]:
                        continue
                    trial = self._launch(job, index, strategies[index], pending)
                    if trial is None:
                        exhausted[index] = True
                        continue
                    if trial == "busy":  # the account's instance quota: try again shortly
                        break
                    running.append(trial)
                if not running and (len(job.trials) >= max_jobs or reached_target or all(exhausted)):
                    return self._finish(job)
            ended = backend.training.executor.job_ended
            if ended.wait(_POLL_SECONDS):
                ended.clear()

    def _finish(self, job: TuningJob) -> None:
        with self.backend.lock:
            counters = self.backend.status_counters(job)
        failed = counters["RetryableError"] + counters["NonRetryableError"]
        if job.trials and failed == len(job.trials):
            return self._end(job, "Failed", f"All training jobs failed. The last failure: {self._last_failure(job)}")
        self._end(job, "Completed")

    def _last_failure(self, job: TuningJob) -> str:
        with self.backend.lock:
            for trial in reversed(job.trials):
                reason = self.backend.training.training_jobs[trial.name].failure_reason
                if reason:
                    return reason
        return "unknown"

    def _child_request(self, job: TuningJob, definition: dict, number: int, tuned: dict, objective: dict) -> dict:
        name = f"{job.name}-{number:03d}-{uuid.uuid4().hex[:8]}"
        algorithm = definition["AlgorithmSpecification"]
        resource = definition.get("ResourceConfig") or {
            key: value
            for key, value in (definition.get("HyperParameterTuningResourceConfig") or {}).items()
            if key in ("InstanceType", "InstanceCount", "VolumeSizeInGB", "VolumeKmsKeyId")
        }
        hyperparameters = {
            **(definition.get("StaticHyperParameters") or {}),
            **tuned,
            "_tuning_objective_metric": objective["MetricName"],
        }
        request = {
            "TrainingJobName": name,
            "AlgorithmSpecification": {
                key: algorithm[key]
                for key in ("TrainingImage", "TrainingInputMode", "MetricDefinitions")
                if key in algorithm
            },
            "RoleArn": definition["RoleArn"],
            "OutputDataConfig": definition["OutputDataConfig"],
            "ResourceConfig": resource,
            "StoppingCondition": definition["StoppingCondition"],
            "HyperParameters": hyperparameters,
            "Tags": list(job.request.get("Tags", [])),
            "_TuningJobArn": job.arn,
        }
        for key in (
            "InputDataConfig",
            "VpcConfig",
            "EnableNetworkIsolation",
            "EnableInterContainerTrafficEncryption",
            "EnableManagedSpotTraining",
            "Environment",
            "RetryStrategy",
        ):
            if definition.get(key) is not None:
                request[key] = definition[key]
        if definition.get("CheckpointConfig"):  # each trial keeps its own checkpoints
            checkpoint = dict(definition["CheckpointConfig"])
            checkpoint["S3Uri"] = checkpoint["S3Uri"].rstrip("/") + f"/{name}"
            request["CheckpointConfig"] = checkpoint
        return request

    def _launch(self, job: TuningJob, index: int, strategy, pending: dict):
        proposal = pending.pop(index, None) or strategy.propose()
        if proposal is None:
            return None
        definition = job.definitions[index]
        objective = objective_of(job.config, definition)
        request = self._child_request(job, definition, len(job.trials) + 1, proposal.hyperparameters, objective)
        trial = Trial(request["TrainingJobName"], definition, proposal.hyperparameters, proposal, objective)
        try:  # a request of ours, made from the tuning job's: read and checked as a client's would be
            self.backend.training.create_training_job(validate_request("CreateTrainingJob", request))
        except ResourceLimitExceeded:
            pending[index] = proposal
            return "busy"
        with self.backend.lock:
            job.trials.append(trial)
            job.last_modified = time.time()
        return trial

    def _stop_trial(self, trial: Trial) -> None:
        try:
            self.backend.training.stop_training_job({"TrainingJobName": trial.name})
        except AwsError:  # finished meanwhile
            pass

    def _tell_finished(self, job: TuningJob, strategies) -> None:
        backend = self.backend
        for trial in job.trials:
            if trial.told:
                continue
            with backend.lock:
                child = backend.training.training_jobs[trial.name]
                if not child.done:
                    continue
                value = backend.objective_value(trial)
            strategies[job.definitions.index(trial.definition)].tell(trial.proposal, value)
            trial.told = True

    def _series(self, trial: Trial) -> list[float]:
        with self.backend.lock:
            child = self.backend.training.training_jobs[trial.name]
            return [value for _, value in child.metric_series.get(trial.objective["MetricName"], [])]

    def _early_stop(self, job: TuningJob, strategies, running: list[Trial]) -> None:
        """Hyperband's pruner, or with TrainingJobEarlyStoppingType Auto the median rule SageMaker applies:
        stop a trial whose best objective so far is worse than the median of the running averages of
        the completed trials' objectives up to the same epoch."""
        config = job.config
        if config["Strategy"] == "Hyperband":
            for trial in running:
                strategy = strategies[job.definitions.index(trial.definition)]
                for step, value in enumerate(self._series(trial), start=1):
                    if strategy.report(trial.proposal, step, value) and not trial.early_stopped:
                        trial.early_stopped = True
                        self._stop_trial(trial)
                        break
            return
        if config.get("TrainingJobEarlyStoppingType", "Off") != "Auto":
            return
        with self.backend.lock:
            completed = [
                t
                for t in job.trials
                if self.backend.training.training_jobs[t.name].status == "Completed" and not t.early_stopped
            ]
        histories = [self._series(t) for t in completed]
        for trial in running:
            if trial.early_stopped:
                continue
            series = self._series(trial)
            steps = len(series)
            if steps < _MEDIAN_RULE_MIN_STEPS:
                continue
            averages = [statistics.fmean(history[:steps]) for history in histories if len(history) >= steps]
            if len(averages) < 2:
                continue
            median = statistics.median(averages)
            minimize = trial.objective["Type"] == "Minimize"
            best = min(series) if minimize else max(series)
            if (best > median) if minimize else (best < median):
                log.info(
                    "tuning job %s: early stopping %s (best %.4f, median %.4f at epoch %d)",
                    job.name,
                    trial.name,
                    best,
                    median,
                    steps,
                )
                trial.early_stopped = True
                self._stop_trial(trial)

    def _best_reaches(self, job: TuningJob, target: float) -> bool:
        with self.backend.lock:
            best = self.backend.best(job)
        if not best:
            return False
        metric = best["FinalHyperParameterTuningJobObjectiveMetric"]
        return metric["Value"] <= target if metric["Type"] == "Minimize" else metric["Value"] >= target

    def _warm_start(self, job: TuningJob, strategies) -> None:
        warm = job.request.get("WarmStartConfig")
        if not warm:
            return
        backend = self.backend
        with backend.lock:
            for parent in warm["ParentHyperParameterTuningJobs"]:
                other = backend.jobs[parent["HyperParameterTuningJobName"]]
                for trial in other.trials:
                    value = backend.objective_value(trial)
                    if value is None:
                        continue
                    for strategy in strategies:
                        strategy.seed_with(trial.tuned, value)
