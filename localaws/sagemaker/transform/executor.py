"""What a transform job does, as SageMaker's batch transform does it.

1. The objects under ``TransformInput``'s S3 URI (``S3Prefix``, or those a ``ManifestFile`` lists)
   are listed; none is ``ClientError: No S3 objects found ...``, before anything starts.
2. ``TransformResources.InstanceCount`` instances start (``hosting/fleet.py`` starts their containers
   as it starts an endpoint's): each of the model's containers runs ``serve`` with the model data in
   /opt/ml/model, the model's ``Environment`` with the job's over it, ``SAGEMAKER_BATCH=true`` and,
   when the request sets them, ``SAGEMAKER_MAX_CONCURRENT_TRANSFORMS``, ``SAGEMAKER_BATCH_STRATEGY``
   and ``SAGEMAKER_MAX_PAYLOAD_IN_MB``; an instance is ready once every container answers /ping
   (``LOCALAWS_HEALTH_CHECK_TIMEOUT_SECONDS``, else the job fails).
3. ``GET /execution-parameters`` is asked of the first container: what it answers sets
   MaxConcurrentTransforms, BatchStrategy and MaxPayloadInMB where the request did not; SageMaker's
   defaults (1, MultiRecord, 6) fill the rest.
4. The objects are shared among the instances (every n-th); each instance reads its objects in turn,
   splits them into records (``records.py``), filters them (``dataprocessing.py``), batches them and
   keeps up to MaxConcurrentTransforms ``POST /invocations`` in flight (``ContentType``, ``Accept``; a
   Serial pipeline's containers one after the other), retrying a 5xx, a broken connection or a
   timeout (``ModelClientConfig``: InvocationsTimeoutInSeconds 600, InvocationsMaxRetries 3).
5. The answers are written in the records' order (``AssembleWith Line``: each ends with a newline;
   JoinSource and OutputFilter applied) and uploaded as ``<S3OutputPath>/<key relative to the
   prefix>.out`` once the whole object is done. An object that fails (the container's 4xx or 5xx,
   a record over MaxPayloadInMB, a record a filter cannot read) leaves no output; the others go on,
   and the job ends Failed with the first failure's reason. The containers are stopped at the end.

Logs go to ``/aws/sagemaker/TransformJobs``: each instance's containers to ``<job>/<instance>-<epoch>``,
what the job itself reports (its parameters, each object's failure) to ``<job>/<instance>-<epoch>/data-log``.
Each instance's CPU, memory and disk are published as ``/aws/sagemaker/TransformJobs``, ``Host=<job>/<instance>``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
import time
import traceback
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from localaws.sagemaker import devices, s3io, usage
from localaws.sagemaker.hosting.fleet import (
    Container,
    Launch,
    LaunchFailed,
    exit_detail,
    instance_id,
    stop_containers,
    wait_for_ping,
)
from localaws.sagemaker.hosting.logs import LogShipper
from localaws.sagemaker.hosting.upstream import UpstreamError
from localaws.sagemaker.transform import dataprocessing, work
from localaws.sagemaker.transform.work import InvokeFailed
from localaws.sagemaker.transform.models import STOPPED_WITH_LOCALAWS, TransformJob

log = logging.getLogger(__name__)

LOG_GROUP = "/aws/sagemaker/TransformJobs"
METRIC_NAMESPACE = "/aws/sagemaker/TransformJobs"
#: SageMaker's values where neither the request nor /execution-parameters says.
DEFAULTS: dict[str, Any] = {"MaxConcurrentTransforms": 1, "MaxPayloadInMB": 6, "BatchStrategy": "MultiRecord"}
_STRATEGY_NAMES = {"MULTI_RECORD": "MultiRecord", "SINGLE_RECORD": "SingleRecord"}
_ENV_STRATEGY = {"MultiRecord": "MULTI_RECORD", "SingleRecord": "SINGLE_RECORD"}
_INVOCATIONS_TIMEOUT_SECONDS = 600
_INVOCATIONS_MAX_RETRIES = 3
_NAME_PREFIX = "localaws-tj"
_MESSAGE_LINES = 20


class JobFailed(Exception):
    """The job cannot go on: this is its FailureReason."""


class Stopped(Exception):
    """StopTransformJob, or localaws stopping, while the job launched."""


@dataclass
class InputObject:
    bucket: str
    key: str
    relative: str
    output_key: str
    index: int  # in the listing's order
    failure: InvokeFailed | None = None

    @property
    def name(self) -> str:  # as SageMaker's data log names it
        return f"{self.bucket}/{self.key}"


@dataclass
class TransformInstance:
    id: str
    containers: list[Container]
    data_log: LogShipper
    folder: Path
    sampler: usage.UsageSampler | None = None
    objects: list[InputObject] = field(default_factory=list)

    def note(self, message: str) -> None:
        """A line of the data log, stamped as SageMaker stamps them."""
        stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3]
        self.data_log.write(f"{stamp}:[sagemaker logs]: {message}")


class TransformExecutor:
    def __init__(self, settings, clients, fleet, lock: threading.RLock):
        """``fleet`` starts model containers (hosting's, whose model data cache it shares); ``lock`` is
        the SageMaker backends' (the job's state is changed under it)."""
        self.settings = settings
        self.clients = clients
        self.fleet = fleet
        self.lock = lock
        self.root = settings.work_dir / "transform-jobs"
        self._threads: dict[str, threading.Thread] = {}
        self._closing = threading.Event()

    def start(self, job: TransformJob) -> None:
        thread = threading.Thread(target=self._run, args=(job,), name=f"transform-{job.name}", daemon=True)
        self._threads[job.name] = thread
        thread.start()

    def shutdown(self) -> None:
        self._closing.set()
        for thread in list(self._threads.values()):
            thread.join(timeout=30)

    def _run(self, job: TransformJob) -> None:
        try:
            JobRun(self, job).run()
        except Exception as error:  # noqa: BLE001 - a bug here must still end the job
            log.error("transform job %s crashed:\n%s", job.name, traceback.format_exc())
            with self.lock:
                job.set_status("Failed", f"InternalServerError: {type(error).__name__}: {error}")
        finally:
            self._threads.pop(job.name, None)


class JobRun:
    """One transform job, from its objects to its outputs."""

    def __init__(self, executor: TransformExecutor, job: TransformJob):
        self.executor = executor
        self.settings = executor.settings
        self.s3 = executor.clients.s3
        self.job = job
        self.request = job.request
        transform_input = self.request["TransformInput"]
        self.split_type = transform_input.get("SplitType") or "None"
        self.gzip = transform_input.get("CompressionType") == "Gzip"
        self.content_type = transform_input.get("ContentType")
        self.accept = self.request["TransformOutput"].get("Accept")
        self.assemble_lines = self.request["TransformOutput"].get("AssembleWith") == "Line"
        self.processing = dataprocessing.DataProcessing(
            self.request.get("DataProcessing"), self.content_type, self.accept
        )
        client = self.request.get("ModelClientConfig") or {}
        self.timeout = float(client.get("InvocationsTimeoutInSeconds") or _INVOCATIONS_TIMEOUT_SECONDS)
        retries = client.get("InvocationsMaxRetries")
        self.retries = _INVOCATIONS_MAX_RETRIES if retries is None else int(retries)
        self.folder = executor.root / job.name
        self.instances: list[TransformInstance] = []
        self.params: dict[str, Any] = dict(DEFAULTS)
        self._lock = threading.Lock()
        self._first_failure: tuple[int, InvokeFailed] | None = None
        self.output_bucket = ""
        self._instances_stopped = False

    def stopping(self) -> bool:
        return self.job.stop_requested.is_set() or self.executor._closing.is_set()

    # --- the job ------------------------------------------------------------------------------

    def run(self) -> None:
        job = self.job
        status, reason = "Completed", None
        try:
            objects = self._objects()
            with self.executor.lock:
                job.started = time.time()
            self._launch()
            self._resolve_parameters()
            self._transform(objects)
            if self._first_failure is not None:
                failure = self._first_failure[1]
                status = "Failed"
                reason = f"{failure.kind}: See job logs for more information ({failure.detail})"
        except JobFailed as error:
            status, reason = "Failed", str(error)
        except Stopped:
            pass
        finally:
            self._stop_instances()
            if not os.environ.get("LOCALAWS_KEEP_JOB_DIRS"):
                shutil.rmtree(self.folder, ignore_errors=True)
        with self.executor.lock:
            if job.stop_requested.is_set():
                job.set_status("Stopped")
            elif self.executor._closing.is_set():
                job.set_status("Failed", STOPPED_WITH_LOCALAWS)
            else:
                job.set_status(status, reason)

    def _objects(self) -> list[InputObject]:
        source = self.request["TransformInput"]["DataSource"]["S3DataSource"]
        role = self.job.model.request.get("ExecutionRoleArn", "")
        try:
            found = s3io.channel_objects(self.s3, source, role, self.settings.region)
        except s3io.DataDownloadError as error:
            raise JobFailed(f"ClientError: {error}") from None
        except (ClientError, BotoCoreError, ValueError, KeyError, IndexError, TypeError) as error:
            raise JobFailed(f"ClientError: Could not read the input {source['S3Uri']}: {error}") from None
        self.output_bucket, prefix = s3io.split_uri(self.request["TransformOutput"]["S3OutputPath"])
        prefix = prefix.rstrip("/")
        return [
            InputObject(bucket, key, relative, f"{prefix}/{relative}.out" if prefix else f"{relative}.out", index)
            for index, (bucket, key, relative) in enumerate(found)
        ]

    # --- instances ----------------------------------------------------------------------------

    def _environment(self) -> dict[str, str]:
        env = {str(key): str(value) for key, value in (self.request.get("Environment") or {}).items()}
        env["SAGEMAKER_BATCH"] = "true"
        # Only what the request sets: the container's /execution-parameters may choose the rest.
        if self.request.get("MaxConcurrentTransforms"):
            env["SAGEMAKER_MAX_CONCURRENT_TRANSFORMS"] = str(self.request["MaxConcurrentTransforms"])
        if self.request.get("BatchStrategy"):
            env["SAGEMAKER_BATCH_STRATEGY"] = _ENV_STRATEGY[self.request["BatchStrategy"]]
        if self.request.get("MaxPayloadInMB") is not None:
            env["SAGEMAKER_MAX_PAYLOAD_IN_MB"] = str(self.request["MaxPayloadInMB"])
        return env

    def _launch(self) -> None:
        """Every instance started and healthy (in parallel); the first failure fails the job."""
        count = int(self.request["TransformResources"]["InstanceCount"])
        failures: list[BaseException] = []
        guard = threading.Lock()

        def one() -> None:
            try:
                instance = self._launch_one()
            except BaseException as error:  # noqa: BLE001 - collected below
                with guard:
                    failures.append(error)
                return
            with guard:
                self.instances.append(instance)

        threads = [threading.Thread(target=one, name=f"transform-launch-{self.job.name}") for _ in range(count)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if self.stopping():
            raise Stopped()
        for error in failures:
            if isinstance(error, (JobFailed, Stopped)):
                raise error
        if failures:
            raise failures[0]

    def _launch_one(self) -> TransformInstance:
        job, model = self.job, self.job.model
        instance = instance_id()
        stream = f"{job.name}/{instance}-{int(time.time())}"
        instance_type = self.request["TransformResources"]["InstanceType"]
        folder = self.folder / instance
        definitions = model.containers
        several = len(definitions) > 1
        env = self._environment()
        containers: list[Container] = []
        data_log = LogShipper(self.executor.clients, LOG_GROUP, f"{stream}/data-log", self.settings.log_flush_seconds)
        try:
            for index, definition in enumerate(definitions):
                if self.stopping():
                    raise Stopped()
                hostname = definition.get("ContainerHostname") or (f"container-{index + 1}" if several else "primary")
                launch = Launch(
                    purpose=f"transform job {job.name}",
                    name=f"{_NAME_PREFIX}-{job.name}-{instance}-{index + 1}",
                    host_dir=folder / f"container-{index + 1}",
                    hostname=hostname,
                    instance_type=instance_type,
                    log_group=LOG_GROUP,
                    log_stream=stream + (f"/{hostname}" if several else ""),
                    env=env,
                    read_timeout=self.timeout,
                )
                try:
                    containers.append(self.executor.fleet.start_model_container(definition, index, launch, several))
                except LaunchFailed as error:
                    raise JobFailed(f"ClientError: {error}") from None
            timeout = self.settings.health_check_timeout_seconds
            try:
                failed = wait_for_ping(containers, timeout, job.stop_requested, "stopped")
            except LaunchFailed:
                raise Stopped() from None
            if self.stopping():
                raise Stopped()
            if failed is not None:
                container, code = failed
                which = "primary container" if container.hostname == "primary" else f"container {container.hostname}"
                raise JobFailed(
                    f"ClientError: The {which} of model {model.name} did not pass the ping health check"
                    + (f" within {timeout:g} seconds" if code is None else "")
                    + ". Please check CloudWatch logs for this transform job."
                    + exit_detail(container, code)
                )
            for container in containers:
                container.route_directly()
        except BaseException:
            stop_containers(containers, 0)
            data_log.close()
            raise
        sampler = usage.UsageSampler(
            self.executor.clients.cloudwatch,
            METRIC_NAMESPACE,
            [{"Name": "Host", "Value": f"{job.name}/{instance}"}],
            [container.running for container in containers],
            self.settings.usage_metrics_seconds,
            folder,
            devices.grant(instance_type),
            name=f"{job.name}-{instance}",
        )
        return TransformInstance(instance, containers, data_log, folder, sampler)

    def _stop_instances(self) -> None:
        """Stop every instance's containers (once: a stop does it as soon as it comes, the end again)."""
        with self._lock:
            if self._instances_stopped:
                return
            self._instances_stopped = True
        grace = self.settings.serving_stop_grace_seconds
        threads = []
        for instance in self.instances:
            if instance.sampler is not None:
                instance.sampler.close()  # its last sample, while its containers can still be read
            threads.append(threading.Thread(target=stop_containers, args=(instance.containers, grace)))
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for instance in self.instances:
            instance.data_log.close()

    # --- parameters ----------------------------------------------------------------------------

    def _resolve_parameters(self) -> None:
        """The request's values, else the container's /execution-parameters, else SageMaker's defaults."""
        asked = self._execution_parameters(self.instances[0].containers[0])
        request = self.request
        params: dict[str, Any] = dict(DEFAULTS)
        for key in DEFAULTS:
            if key in asked:
                params[key] = asked[key]
        if request.get("MaxConcurrentTransforms"):  # 0: unset
            params["MaxConcurrentTransforms"] = request["MaxConcurrentTransforms"]
        if request.get("BatchStrategy"):
            params["BatchStrategy"] = request["BatchStrategy"]
        if request.get("MaxPayloadInMB") is not None:  # 0: no limit (the whole object, or record, at once)
            params["MaxPayloadInMB"] = request["MaxPayloadInMB"]
        self.params = params
        with self.executor.lock:
            self.job.resolved = dict(params)
        line = (
            f"MaxConcurrentTransforms={params['MaxConcurrentTransforms']}, MaxPayloadInMB={params['MaxPayloadInMB']}, "
            f"BatchStrategy={_ENV_STRATEGY[params['BatchStrategy']]}"
        )
        for instance in self.instances:
            instance.note(line)

    @staticmethod
    def _execution_parameters(container: Container) -> dict:
        """What a container's GET /execution-parameters asks for, as far as it is sane; {} without one."""
        try:
            answer = container.ping_pool.request("GET", "/execution-parameters")
            found = json.loads(answer.data) if answer.status == 200 else {}
        except (UpstreamError, OSError, ValueError):
            return {}
        if not isinstance(found, dict):
            return {}
        asked: dict = {}
        concurrency = found.get("MaxConcurrentTransforms")
        if isinstance(concurrency, int) and not isinstance(concurrency, bool) and 0 < concurrency <= 1000:
            asked["MaxConcurrentTransforms"] = concurrency
        payload = found.get("MaxPayloadInMB")
        if isinstance(payload, int) and not isinstance(payload, bool) and 0 <= payload <= 100:
            asked["MaxPayloadInMB"] = payload
        strategy = _STRATEGY_NAMES.get(str(found.get("BatchStrategy", "")).upper())
        if strategy:
            asked["BatchStrategy"] = strategy
        return asked

    # --- records ------------------------------------------------------------------------------

    def _transform(self, objects: list[InputObject]) -> None:
        count = len(self.instances)
        threads = []
        for index, instance in enumerate(self.instances):
            instance.objects = s3io.shard(objects, index, count, "ShardedByS3Key")
            threads.append(
                threading.Thread(target=self._serve, args=(instance,), name=f"transform-{self.job.name}-{index}")
            )
        for thread in threads:
            thread.start()
        for thread in threads:
            # A request may be in flight for minutes (InvocationsTimeoutInSeconds): on a stop the
            # containers go at once, which ends it, rather than after it.
            while thread.is_alive():
                thread.join(0.2)
                if self.stopping():
                    self._stop_instances()
            thread.join()

    def _serve(self, instance: TransformInstance) -> None:
        work.InstanceWork(self, instance).run()

    def fail(self, instance: TransformInstance, obj: InputObject, failure: InvokeFailed) -> None:
        """An object failed: its lines in the data log; the job's reason if it is the first object to."""
        if obj.failure is not None:
            return
        obj.failure = failure
        instance.note(f"{obj.name}: {failure.detail}")
        for line in failure.lines[:_MESSAGE_LINES]:
            instance.note(f"{obj.name}: {line}")
        with self._lock:  # the job's reason: the failure of the first object in the listing's order
            if self._first_failure is None or obj.index < self._first_failure[0]:
                self._first_failure = (obj.index, InvokeFailed(failure.kind, f"s3://{obj.name}: {failure.detail}"))
