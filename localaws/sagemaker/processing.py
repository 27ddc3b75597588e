"""What a processing job does while it runs, as SageMaker Processing runs it.

Its image ready, every host (``algo-1`` ...) gets /opt/ml/config's processingjobconfig.json and
resourceconfig.json and its inputs downloaded into their ``LocalPath`` (sharded by S3 key across the
hosts where asked); then the image's own command (AppSpecification's ContainerEntrypoint and
ContainerArguments, else its ENTRYPOINT and CMD) runs on every host with the job's Environment, its
lines in CloudWatch (/aws/sagemaker/ProcessingJobs, ``<job>/algo-<n>-<epoch>``), ``Continuous``
outputs uploaded as they are written; a stop or MaxRuntimeInSeconds sends SIGTERM, then SIGKILL after
the grace period. At the end the ``EndOfJob`` outputs of a job that completed are uploaded from every
host, and what the containers wrote in /opt/ml/output/message is the job's ExitMessage.
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
from localaws.sagemaker.cloudwatch import PROCESSING_LOG_GROUP
from localaws.sagemaker.contract import Layout, resource_config
from localaws.sagemaker.processing_models import ALGORITHM_ERROR, ProcessingJob
from localaws.sagemaker.runners.base import ContainerSpec, ImageNotFound, Runner
from localaws.sagemaker.runners.process import EnvironmentBuildError

log = logging.getLogger(__name__)

_EXIT_MESSAGE_MAX = 1024


class JobFailed(Exception):
    """Ends the job Failed with this FailureReason."""


class StoppedBeforeStart(Exception):
    """Stopped while its hosts started: what started is stopped, nothing is uploaded."""


class ProcessingExecutor:
    """Runs each processing job's lifecycle in a thread of its own."""

    def __init__(self, settings, clients, runners, lock: threading.RLock):
        """``runners(image) -> Runner`` picks the runner for an image (see ``runners/__init__.py``)."""
        self.settings = settings
        self.clients = clients
        self.runners = runners
        self.lock = lock
        self._threads: dict[str, threading.Thread] = {}
        self._closing = threading.Event()

    def start(self, job: ProcessingJob) -> None:
        thread = threading.Thread(target=self._run, args=(job,), name=f"processing-{job.name}", daemon=True)
        self._threads[job.name] = thread
        thread.start()

    def shutdown(self) -> None:
        self._closing.set()
        for thread in list(self._threads.values()):
            thread.join(timeout=15)

    # --- one job ------------------------------------------------------------------------

    def _run(self, job: ProcessingJob) -> None:
        job_dir = self.settings.work_dir / "processing-jobs" / job.name
        try:
            self._lifecycle(job, job_dir)
        except JobFailed as error:
            self._finish(job, "Failed", str(error))
        except ClientError as error:  # S3 refused a download or an upload: the user's buckets or keys
            self._finish(job, "Failed", f"ClientError: {error}")
        except Exception as error:  # noqa: BLE001 - a bug here must still end the job
            log.error("processing job %s crashed:\n%s", job.name, traceback.format_exc())
            self._finish(job, "Failed", f"InternalServerError: {type(error).__name__}: {error}")
        finally:
            if not os.environ.get("LOCALAWS_KEEP_JOB_DIRS"):
                shutil.rmtree(job_dir, ignore_errors=True)

    def _finish(self, job: ProcessingJob, status: str, reason: str | None = None) -> None:
        with self.lock:
            if not job.done:
                job.finish(status, reason)

    def _stopping(self, job: ProcessingJob) -> bool:
        return job.stop_requested.is_set() or self._closing.is_set()

    def _lifecycle(self, job: ProcessingJob, job_dir: Path) -> None:
        hosts = [f"algo-{index + 1}" for index in range(job.host_count)]
        note = devices.grant(job.instance_type).note  # a GPU type on a machine without
        if note:
            log.info("processing job %s: %s", job.name, note)
        image = job.request["AppSpecification"]["ImageUri"]
        try:
            runner = self.runners(image)
        except (ImageNotFound, EnvironmentBuildError) as error:
            raise JobFailed(f"ClientError: {error}") from None
        if self._stopping(job):
            return self._finish(job, "Stopped")

        layouts = {host: Layout(job_dir / host) for host in hosts}
        with self.lock:
            job_config = job.job_config()
        for host, layout in layouts.items():
            for path in self._local_paths(job, layout):
                path.mkdir(parents=True, exist_ok=True)
            layout.output.mkdir(parents=True, exist_ok=True)
            layout.write_processing_config(job_config, resource_config(host, hosts, job.instance_type))
        self._download_inputs(job, hosts, layouts)
        if self._stopping(job):
            return self._finish(job, "Stopped")

        continuous = self._continuous_syncs(job, layouts)
        try:
            codes = self._process(job, runner, image, hosts, layouts, continuous)
        except StoppedBeforeStart:
            return self._finish(job, "Stopped")
        finally:
            for sync in continuous:
                sync.sync()
        message = self._exit_message(layouts)
        with self.lock:
            job.exit_message = message or None
        if job.stop_reason == "MaxRuntimeExceeded":
            raise JobFailed(
                f"MaxRuntimeExceeded: the processing job ran longer than its MaxRuntimeInSeconds "
                f"({job.max_runtime} s) and was stopped."
            )
        if job.stop_reason or self._closing.is_set():
            return self._finish(job, "Stopped")
        if any(code != 0 for code in codes.values()):
            raise JobFailed(ALGORITHM_ERROR)
        self._upload_outputs(job, layouts)
        self._finish(job, "Completed")

    @staticmethod
    def _local_paths(job: ProcessingJob, layout: Layout) -> list[Path]:
        paths = [item["S3Input"].get("LocalPath") for item in job.request.get("ProcessingInputs") or []]
        outputs = (job.request.get("ProcessingOutputConfig") or {}).get("Outputs") or []
        paths += [item["S3Output"].get("LocalPath") for item in outputs]
        return [layout.processing_path(path) for path in paths if path]

    @staticmethod
    def _outputs(job: ProcessingJob, mode: str) -> list[dict]:
        outputs = (job.request.get("ProcessingOutputConfig") or {}).get("Outputs") or []
        return [
            item["S3Output"]
            for item in outputs
            if not item["AppManaged"] and item["S3Output"]["S3UploadMode"] == mode and item["S3Output"].get("LocalPath")
        ]

    def _download_inputs(self, job: ProcessingJob, hosts: list[str], layouts: dict[str, Layout]) -> None:
        s3 = self.clients.s3
        for item in job.request.get("ProcessingInputs") or []:
            source = item["S3Input"]
            if item["AppManaged"]:  # the application downloads it itself
                continue
            try:
                objects = s3io.channel_objects(s3, source, job.request["RoleArn"], self.settings.region)
                for index, host in enumerate(hosts):
                    mine = s3io.shard(objects, index, len(hosts), source["S3DataDistributionType"])
                    s3io.download(s3, mine, layouts[host].processing_path(source["LocalPath"]))
            except s3io.DataDownloadError as error:
                raise JobFailed(f"ClientError: {error}") from None

    def _continuous_syncs(self, job: ProcessingJob, layouts: dict[str, Layout]) -> list[s3io.CheckpointSync]:
        """Every host's ``Continuous`` outputs, uploaded while the job runs (what is deleted stays in S3)."""
        return [
            s3io.CheckpointSync(
                self.clients.s3,
                output["S3Uri"],
                layout.processing_path(output["LocalPath"]),
                layout.root,
                deletes=False,
            )
            for layout in layouts.values()
            for output in self._outputs(job, "Continuous")
        ]

    def _process(
        self,
        job: ProcessingJob,
        runner: Runner,
        image: str,
        hosts: list[str],
        layouts: dict[str, Layout],
        continuous: list[s3io.CheckpointSync],
    ) -> dict[str, int]:
        app = job.request["AppSpecification"]
        # Container names and networks of their own: a training job may have the same name.
        network = f"localaws-processing-{job.name}" if len(hosts) > 1 else None
        runs: list[job_hosts.HostRun] = []
        try:
            for host in hosts:
                if self._stopping(job):
                    raise StoppedBeforeStart
                layout = layouts[host]
                spec = ContainerSpec(
                    image=image,
                    command=None,
                    host_dir=layout.root,
                    host_name=host,
                    env=dict(job.request.get("Environment") or {}),
                    name=f"processing-{job.name}-{host}",
                    network=network,
                    entrypoint=app.get("ContainerEntrypoint"),
                    arguments=app.get("ContainerArguments"),
                    devices=devices.grant(job.instance_type),
                )
                try:
                    run = job_hosts.start_host(
                        runner,
                        spec,
                        layout,
                        clients=self.clients,
                        settings=self.settings,
                        job_name=job.name,
                        log_group=PROCESSING_LOG_GROUP,
                        namespace=usage.PROCESSING_NAMESPACE,
                    )
                except (ImageNotFound, EnvironmentBuildError) as error:
                    raise JobFailed(f"ClientError: {error}") from None
                runs.append(run)
            # As training: a stop before every container runs ends the job without a SIGTERM that a
            # program only just started would not yet handle.
            if self._stopping(job):
                raise StoppedBeforeStart
            with self.lock:
                job.started = job.last_modified = time.time()
            return job_hosts.supervise(
                runs, self.settings.stop_grace_seconds, self._stop_check(job), self._uploader(continuous)
            )
        finally:
            job_hosts.release(runs)

    def _stop_check(self, job: ProcessingJob):
        deadline = time.time() + job.max_runtime

        def should_stop() -> bool:
            if not job.stop_reason and time.time() >= deadline:
                with self.lock:
                    job.stop_reason = "MaxRuntimeExceeded"
                    job.last_modified = time.time()
                job.stop_requested.set()
            return self._stopping(job)

        return should_stop

    def _uploader(self, continuous: list[s3io.CheckpointSync]):
        next_sync = time.monotonic() + self.settings.checkpoint_sync_seconds

        def upload() -> None:
            nonlocal next_sync
            if continuous and time.monotonic() >= next_sync:
                for sync in continuous:
                    sync.sync()
                next_sync = time.monotonic() + self.settings.checkpoint_sync_seconds

        return upload

    @staticmethod
    def _exit_message(layouts: dict[str, Layout]) -> str:
        """Every host's /opt/ml/output/message, concatenated and cut to 1 KB, as AWS does; one that is not
        UTF-8 fails the job with a ClientError."""
        parts = []
        for host, layout in layouts.items():
            # A little more than 1 KB: the cut is made on characters, not on bytes.
            raw = confined.read_bytes(layout.root, layout.message, 4 * _EXIT_MESSAGE_MAX)
            try:
                parts.append(raw.decode("utf-8"))
            except UnicodeDecodeError:
                raise JobFailed(f"ClientError: /opt/ml/output/message of {host} is not UTF-8 text.") from None
        return "".join(parts)[:_EXIT_MESSAGE_MAX]

    def _upload_outputs(self, job: ProcessingJob, layouts: dict[str, Layout]) -> None:
        """The EndOfJob outputs, from every host to the same S3 prefix (as on AWS, the same file name on
        two hosts is one object: the last upload's)."""
        for layout in layouts.values():
            for output in self._outputs(job, "EndOfJob"):
                s3io.upload_tree(
                    self.clients.s3, layout.processing_path(output["LocalPath"]), output["S3Uri"], within=layout.root
                )
