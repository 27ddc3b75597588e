"""What a training job does while it runs, phase by phase, as SageMaker runs it.

Starting (instances, image) -> Downloading (checkpoints, channels) -> Training
(the image's ``train`` on every host, logs and metrics shipped live, stop and
max-runtime enforced with SIGTERM, a grace period, then SIGKILL) -> Uploading
(model.tar.gz, output.tar.gz, checkpoints) -> Completed, Failed or Stopped.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
import traceback
from pathlib import Path

from botocore.exceptions import ClientError

from localaws.sagemaker import confined, devices, job_hosts, s3io, usage
from localaws.sagemaker.cloudwatch import TRAINING_LOG_GROUP, MetricParser
from localaws.sagemaker.contract import CHECKPOINT_LOCAL_PATH, HostConfig, Layout
from localaws.sagemaker.frameworks import source
from localaws.sagemaker.models import TrainingJob
from localaws.sagemaker.runners.base import ContainerSpec, ImageNotFound, Runner
from localaws.sagemaker.runners.hosts import free_port
from localaws.sagemaker.runners.process import EnvironmentBuildError

log = logging.getLogger(__name__)

_FAILURE_REASON_MAX = 1024
_POLL_SECONDS = 0.2


class JobFailed(Exception):
    """Ends the job Failed with this FailureReason."""


class StoppedBeforeTraining(Exception):
    """The job was stopped while its hosts started: the algorithm never ran, nothing is uploaded."""


class TrainingExecutor:
    """Runs each training job's lifecycle in a thread of its own."""

    def __init__(self, settings, clients, runners, lock: threading.RLock | None = None):
        """``runners(image) -> Runner`` picks the runner for an image (see ``runners/__init__.py``)."""
        self.settings = settings
        self.clients = clients
        self.runners = runners
        self.lock = lock or threading.RLock()
        self._threads: dict[str, threading.Thread] = {}
        self._closing = threading.Event()
        #: Set whenever a job ends, so a tuning job launches the next trial at once.
        self.job_ended = threading.Event()

    def start(self, job: TrainingJob) -> None:
        thread = threading.Thread(target=self._run, args=(job,), name=f"training-{job.name}", daemon=True)
        self._threads[job.name] = thread
        thread.start()

    def begin_shutdown(self) -> None:
        """From now on a job that ends uploads nothing: the gateway it would upload through is stopping."""
        self._closing.set()

    def shutdown(self) -> None:
        self.begin_shutdown()
        for thread in list(self._threads.values()):
            thread.join(timeout=15)

    # --- one job ------------------------------------------------------------------------

    def _update(self, job: TrainingJob, secondary: str, message: str) -> None:
        with self.lock:
            if job.stop_reason and secondary not in ("Stopping", "Uploading"):
                job.transition(job.secondary_status, message)
            else:
                job.transition(secondary, message)

    def _run(self, job: TrainingJob) -> None:
        job_dir = self.settings.work_dir / "training-jobs" / job.name
        try:
            self._lifecycle(job, job_dir)
        except JobFailed as error:
            self._finish(job, "Failed", "Failed", str(error))
        except ClientError as error:  # S3 refused a download or an upload: the user's buckets or keys
            self._finish(job, "Failed", "Failed", f"ClientError: {error}")
        except Exception as error:  # noqa: BLE001 - a bug here must still end the job
            log.error("training job %s crashed:\n%s", job.name, traceback.format_exc())
            self._finish(job, "Failed", "Failed", f"InternalServerError: {type(error).__name__}: {error}")
        finally:
            if not os.environ.get("LOCALAWS_KEEP_JOB_DIRS"):
                shutil.rmtree(job_dir, ignore_errors=True)

    def _finish(self, job: TrainingJob, status: str, secondary: str, reason: str | None = None) -> None:
        with self.lock:
            if job.done:
                return
            if reason:
                job.failure_reason = reason[:_FAILURE_REASON_MAX]
            messages = {
                "Completed": "Training job completed",
                "Failed": f"Training job failed. Reason: {reason}",
                "Stopped": "Training job stopped",
                "MaxRuntimeExceeded": "Training job stopped: MaxRuntimeInSeconds exceeded",
                "MaxWaitTimeExceeded": "Training job stopped: MaxWaitTimeInSeconds exceeded",
            }
            job.finish(status, secondary, messages.get(secondary, secondary))
            # On demand: every second from start is billed (finish set the end wherever there is a start).
            if job.training_start and job.training_end is not None and not job.spot:
                job.billable_seconds = job.training_end - job.training_start
        self.job_ended.set()

    def _stopping(self, job: TrainingJob) -> bool:
        return job.stop_requested.is_set() or self._closing.is_set()

    def _lifecycle(self, job: TrainingJob, job_dir: Path) -> None:
        request = job.request
        hosts = [f"algo-{index + 1}" for index in range(request["ResourceConfig"]["InstanceCount"])]
        channels = {channel["ChannelName"]: channel for channel in request.get("InputDataConfig", [])}

        # Starting: instances and the image.
        note = devices.grant(request["ResourceConfig"]["InstanceType"]).note  # a GPU type on a machine without
        self._update(job, "Starting", "Preparing the instances for training" + (f" ({note})" if note else ""))
        if note:
            log.info("training job %s: %s", job.name, note)
        image = request["AlgorithmSpecification"]["TrainingImage"]
        try:
            runner = self.runners(image)
        except (ImageNotFound, EnvironmentBuildError) as error:
            raise JobFailed(f"ClientError: {error}") from None

        # A managed spot job may be interrupted and start again on new instances, from its checkpoints.
        while True:
            if self._stopping(job):
                return self._end_stopped(job)
            shutil.rmtree(job_dir, ignore_errors=True)
            layouts = {host: Layout(job_dir / host) for host in hosts}

            # Downloading: checkpoints, then the channels (sharded by host where asked).
            self._update(job, "Downloading", "Downloading input data")
            for layout in layouts.values():
                layout.create(list(channels))
            checkpoint_syncs = self._restore_checkpoints(job, layouts)
            self._download_channels(job, channels, hosts, layouts)
            self._place_source(job, image, layouts, job_dir)
            if self._stopping(job):
                return self._end_stopped(job)

            try:
                exit_codes, interrupted = self._train(job, runner, image, hosts, layouts, channels, checkpoint_syncs)
            except StoppedBeforeTraining:
                return self._end_stopped(job)
            if self._closing.is_set():
                # localaws is stopping: its gateway, which S3 is reached through, no longer answers, and the
                # last snapshot holds the job as running, which a restart ends (state.end_interrupted).
                return self._end_stopped(job)
            for sync in checkpoint_syncs:
                sync.sync()
            # An interruption accepted while the hosts were finishing reclaims them all the same.
            interrupted = interrupted or (job.interruption_requested.is_set() and not self._stopping(job))
            if not interrupted:
                break
            if not self._resume_after_interruption(job):
                return self._end_stopped(job)

        failed = [(host, code) for host, code in exit_codes.items() if code != 0]
        if failed and not job.stop_reason:
            host, code = failed[0]
            raise JobFailed(self._failure_reason(layouts[host], code))
        # Uploading: what /opt/ml/model holds is uploaded whether the job completed or was stopped.
        self._update(job, "Uploading", "Uploading generated training model")
        self._upload_outputs(job, layouts[hosts[0]])
        if job.stop_reason:
            return self._end_stopped(job)
        self._finish(job, "Completed", "Completed")

    def _resume_after_interruption(self, job: TrainingJob) -> bool:
        """Wait for spot capacity again, within MaxWaitTimeInSeconds; False when the wait ran out."""
        with self.lock:
            job.interruption_requested.clear()
            job.transition("Interrupted", "Training job interrupted: the spot instance was reclaimed")
        max_wait = job.request["StoppingCondition"]["MaxWaitTimeInSeconds"]
        resume_at = time.time() + self.settings.spot_capacity_wait_seconds
        while time.time() < resume_at:
            if self._stopping(job):
                return False
            time.sleep(_POLL_SECONDS)
        if time.time() - job.created >= max_wait:
            with self.lock:
                job.stop_reason = "MaxWaitTimeExceeded"
            return False
        self._update(job, "Starting", "Launching requested ML instances: spot capacity is available again")
        return True

    def _end_stopped(self, job: TrainingJob) -> None:
        reason = job.stop_reason or "Stopped"
        self._finish(job, "Stopped", reason)

    def _restore_checkpoints(self, job: TrainingJob, layouts: dict[str, Layout]) -> list[s3io.CheckpointSync]:
        config = job.request.get("CheckpointConfig")
        if not config:
            return []
        local = config.get("LocalPath") or CHECKPOINT_LOCAL_PATH
        syncs = []
        for layout in layouts.values():
            sync = s3io.CheckpointSync(self.clients.s3, config["S3Uri"], layout.local_path(local), layout.root)
            sync.local.mkdir(parents=True, exist_ok=True)
            try:
                sync.restore()
            except s3io.DataDownloadError as error:
                raise JobFailed(f"ClientError: {error}") from None
            syncs.append(sync)
        return syncs

    def _download_channels(self, job, channels: dict, hosts: list[str], layouts: dict[str, Layout]) -> None:
        s3 = self.clients.s3
        for name, channel in channels.items():
            source = channel["DataSource"]["S3DataSource"]
            try:
                objects = s3io.channel_objects(s3, source, job.request["RoleArn"], self.settings.region)
            except s3io.DataDownloadError as error:
                raise JobFailed(f"ClientError: {error}") from None
            distribution = source.get("S3DataDistributionType", "FullyReplicated")
            for index, host in enumerate(hosts):
                mine = s3io.shard(objects, index, len(hosts), distribution)
                try:
                    s3io.download(s3, mine, layouts[host].channel(name))
                except s3io.DataDownloadError as error:
                    raise JobFailed(f"ClientError: {error}") from None

    def _place_source(self, job: TrainingJob, image: str, layouts: dict[str, Layout], job_dir: Path) -> None:
        """Script mode on a framework image: its sourcedir.tar.gz unpacked into every host's /opt/ml/code,
        where the framework container's toolkit would have downloaded it."""
        uri = source.submit_directory(image, job.request.get("HyperParameters", {}))
        if uri is None:
            return
        try:
            source.fetch(
                self.clients.s3, uri, job_dir / "sourcedir.tar.gz", [layout.code for layout in layouts.values()]
            )
        except source.SourceUnavailable as error:
            raise JobFailed(f"AlgorithmError: {error}") from None

    def _host_config(self, job: TrainingJob, host: str, hosts: list[str], channels: dict, master: dict) -> HostConfig:
        request = job.request
        return HostConfig(
            job_name=job.name,
            job_arn=job.arn,
            current_host=host,
            hosts=hosts,
            hyperparameters=dict(request.get("HyperParameters", {})),
            channels={
                name: {
                    "TrainingInputMode": channel.get("InputMode")
                    or request["AlgorithmSpecification"].get("TrainingInputMode", "File"),
                    "S3DistributionType": channel["DataSource"]["S3DataSource"].get(
                        "S3DataDistributionType", "FullyReplicated"
                    ),
                    "RecordWrapperType": channel.get("RecordWrapperType", "None"),
                    **({"ContentType": channel["ContentType"]} if channel.get("ContentType") else {}),
                }
                for name, channel in channels.items()
            },
            instance_type=request["ResourceConfig"]["InstanceType"],
            num_cpus=os.cpu_count() or 1,
            num_gpus=devices.grant(request["ResourceConfig"]["InstanceType"]).count,
            extra_env={**(request.get("Environment") or {}), **master},
        )

    def _train(
        self, job, runner: Runner, image, hosts, layouts, channels, checkpoint_syncs
    ) -> tuple[dict[str, int], bool]:
        network = f"localaws-{job.name}" if len(hosts) > 1 else None
        master = {}
        if len(hosts) > 1:  # where torch.distributed and friends rendezvous
            master = {
                "SM_MASTER_ADDR": hosts[0] if runner.isolated_hosts else "127.0.0.1",
                "SM_MASTER_PORT": "7777" if runner.isolated_hosts else str(free_port()),
            }
        runs: list[job_hosts.HostRun] = []
        try:
            for host in hosts:
                if self._stopping(job):
                    raise StoppedBeforeTraining
                layout = layouts[host]
                config = self._host_config(job, host, hosts, channels, master)
                config.write_config_files(layout)
                seen = runner.opt_ml_for(layout.root)
                spec = ContainerSpec(
                    image=image,
                    command="train",
                    host_dir=layout.root,
                    host_name=host,
                    env=config.environment(Layout(seen)),
                    name=f"{job.name}-{host}",
                    network=network,
                    entrypoint=job.request["AlgorithmSpecification"].get("ContainerEntrypoint"),
                    arguments=job.request["AlgorithmSpecification"].get("ContainerArguments"),
                    devices=devices.grant(config.instance_type),
                )
                try:
                    run = job_hosts.start_host(
                        runner,
                        spec,
                        layout,
                        clients=self.clients,
                        settings=self.settings,
                        job_name=job.name,
                        log_group=TRAINING_LOG_GROUP,
                        namespace=usage.TRAINING_NAMESPACE,
                        metrics=MetricParser(
                            job.request["AlgorithmSpecification"].get("MetricDefinitions", []), job.metric_series
                        )
                        if host == hosts[0]
                        else None,
                    )
                except (ImageNotFound, EnvironmentBuildError) as error:
                    raise JobFailed(f"ClientError: {error}") from None
                runs.append(run)
            # Training begins once every host's container runs, as SageMaker reports it, and a stop
            # before that ends the job without a SIGTERM to an algorithm only just started: run as
            # PID 1, it drops a SIGTERM that comes before its handler is in place and trains on until
            # SIGKILL (a container can take a while to start: 30 s with vfs's copy of the image).
            if self._stopping(job):
                raise StoppedBeforeTraining
            with self.lock:
                job.training_start = job.training_start or time.time()
            self._update(job, "Training", "Training image download completed. Training in progress.")
            return self._supervise(job, runs, checkpoint_syncs)
        finally:
            job_hosts.release(runs)
            with self.lock:
                if runs and runs[0].log.metrics is not None:
                    job.final_metrics = dict(runs[0].log.metrics.last)

    def _supervise(
        self, job: TrainingJob, runs: list[job_hosts.HostRun], checkpoint_syncs
    ) -> tuple[dict[str, int], bool]:
        """Wait for every host; enforce stops, MaxRuntimeInSeconds, MaxWaitTimeInSeconds and spot
        interruptions (``job_hosts.supervise``); sync checkpoints meanwhile. Returns the hosts' exit
        codes and whether the attempt ended by a spot interruption."""
        stopping = job.request["StoppingCondition"]
        attempt_start = time.time()
        # Runtime counts training only: a spot job's earlier attempts are spent already.
        deadline = attempt_start + stopping.get("MaxRuntimeInSeconds", 86400) - job.billable_seconds
        wait_deadline = job.created + stopping["MaxWaitTimeInSeconds"] if job.spot else None
        interrupted = False
        next_sync = time.monotonic() + self.settings.checkpoint_sync_seconds

        def should_stop() -> bool:
            nonlocal interrupted
            now = time.time()
            if not job.stop_reason and (now >= deadline or (wait_deadline and now >= wait_deadline)):
                reason = "MaxRuntimeExceeded" if now >= deadline else "MaxWaitTimeExceeded"
                with self.lock:
                    job.stop_reason = reason
                    job.status = "Stopping"
                    job.transition("Stopping", f"Stopping the training job: {reason}")
                job.stop_requested.set()
            if job.interruption_requested.is_set() and not self._stopping(job):
                interrupted = True
            return self._stopping(job) or interrupted

        def sync_checkpoints() -> None:
            nonlocal next_sync
            if checkpoint_syncs and time.monotonic() >= next_sync:
                for sync in checkpoint_syncs:
                    sync.sync()
                next_sync = time.monotonic() + self.settings.checkpoint_sync_seconds

        try:
            codes = job_hosts.supervise(runs, self.settings.stop_grace_seconds, should_stop, sync_checkpoints)
        finally:
            with self.lock:
                job.billable_seconds += time.time() - attempt_start
        return codes, interrupted

    def _upload_outputs(self, job: TrainingJob, layout: Layout) -> None:
        """Only the first host's model is uploaded, as SageMaker's framework containers do."""
        s3 = self.clients.s3
        output = job.request["OutputDataConfig"]
        base = output["S3OutputPath"].rstrip("/") + f"/{job.name}/output"
        if output.get("CompressionType") == "NONE":
            s3io.upload_tree(s3, layout.model, f"{base}/model/", within=layout.root)
            artifact = f"{base}/model/"
        else:
            s3io.upload_tar(s3, layout.model, f"{base}/model.tar.gz", within=layout.root)
            artifact = f"{base}/model.tar.gz"
        if confined.tree(layout.root, layout.output_data):
            s3io.upload_tar(s3, layout.output_data, f"{base}/output.tar.gz", within=layout.root)
        with self.lock:
            job.model_artifacts = artifact

    @staticmethod
    def _failure_reason(layout: Layout, code: int) -> str:
        message = confined.read_text(layout.root, layout.failure, _FAILURE_REASON_MAX).strip()
        if not message:
            message = "See job logs for more information"
        return f"AlgorithmError: {message}, exit code: {code}"
