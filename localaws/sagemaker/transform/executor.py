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

import gzip
import json
import logging
import os
import queue
import shutil
import threading
import time
import traceback
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any

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
from localaws.sagemaker.hosting.upstream import Timeout, UpstreamError
from localaws.sagemaker.transform import dataprocessing, records
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
_END = object()  # an object's last entry in an instance's queue


class JobFailed(Exception):
    """The job cannot go on: this is its FailureReason."""


class Stopped(Exception):
    """StopTransformJob, or localaws stopping, while the job launched."""


class InvokeFailed(Exception):
    """A request failed for good: ``kind`` (ClientError, AlgorithmError) and what the data log says."""

    def __init__(self, kind: str, detail: str, lines: list[str] | None = None):
        super().__init__(detail)
        self.kind = kind
        self.detail = detail
        self.lines = lines or []


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
            thread.join()

    def _fail(self, instance: TransformInstance, obj: InputObject, failure: InvokeFailed) -> None:
        if obj.failure is not None:
            return
        obj.failure = failure
        instance.note(f"{obj.name}: {failure.detail}")
        for line in failure.lines[:_MESSAGE_LINES]:
            instance.note(f"{obj.name}: {line}")
        with self._lock:  # the job's reason: the failure of the first object in the listing's order
            if self._first_failure is None or obj.index < self._first_failure[0]:
                self._first_failure = (obj.index, InvokeFailed(failure.kind, f"s3://{obj.name}: {failure.detail}"))

    def _serve(self, instance: TransformInstance) -> None:
        """One instance's objects: requests produced here, answered by a pool of MaxConcurrentTransforms
        threads, written in order by a writer of its own (which uploads each object once it is done)."""
        concurrency = int(self.params["MaxConcurrentTransforms"])
        pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix=f"invoke-{instance.id}")
        # The requests in flight or answered and not yet written: bounded, so that memory is.
        pending: queue.Queue = queue.Queue(maxsize=2 * concurrency)
        writer = threading.Thread(target=self._write, args=(instance, pending), name=f"write-{instance.id}")
        writer.start()
        try:
            for number, obj in enumerate(instance.objects):
                if self.stopping():
                    break
                self._produce(instance, obj, number, pool, pending)
        finally:
            pending.put(None)
            writer.join()
            pool.shutdown(wait=not self.stopping(), cancel_futures=True)

    def _produce(self, instance: TransformInstance, obj: InputObject, number: int, pool, pending) -> None:
        path = instance.folder / "input" / str(number)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            try:
                s3io.get_file(self.s3, obj.bucket, obj.key, path)
            except (ClientError, BotoCoreError) as error:
                raise InvokeFailed("ClientError", f"Could not download the object: {error}") from None
            strategy, limit = self.params["BatchStrategy"], int(self.params["MaxPayloadInMB"])
            with gzip.open(path, "rb") if self.gzip else open(path, "rb") as stream:
                found = records.split(stream, self.split_type)
                if self.processing.input_filter:
                    found = (
                        records.Record(filtered, filtered, record.data)
                        for record in found
                        for filtered in (self.processing.model_input(record.data),)
                    )
                for body, batch in records.payloads(found, strategy, limit):
                    if obj.failure is not None or self.stopping():
                        break
                    pending.put((obj, pool.submit(self._invoke, instance, obj, body), batch))
        except InvokeFailed as failure:
            self._fail(instance, obj, failure)
        except records.PayloadTooLarge as error:
            self._fail(instance, obj, InvokeFailed("ClientError", f"Too much data for max payload size ({error})"))
        except (records.MalformedInput, dataprocessing.RecordError, UnicodeDecodeError) as error:
            self._fail(instance, obj, InvokeFailed("ClientError", f"Unable to read the records: {error}"))
        except (OSError, EOFError) as error:  # not gzip, or a truncated gzip stream
            self._fail(instance, obj, InvokeFailed("ClientError", f"Unable to decompress the object: {error}"))
        finally:
            path.unlink(missing_ok=True)
            pending.put((obj, _END, None))

    def _invoke(self, instance: TransformInstance, obj: InputObject, body: bytes) -> bytes | None:
        """The model's answer to one request (a Serial pipeline's last container's), or None when its
        object failed meanwhile; ``InvokeFailed`` once retries are spent."""
        failure: InvokeFailed | None = None
        for _attempt in range(1 + self.retries):
            if obj.failure is not None or self.stopping():
                return None
            try:
                status, data = self._chain(instance.containers, body)
            except Timeout:
                failure = InvokeFailed(
                    "AlgorithmError",
                    f"Model server did not respond to /invocations request within {self.timeout:g} seconds",
                )
                continue
            except (UpstreamError, OSError):
                failure = InvokeFailed("AlgorithmError", "Unable to get response from algorithm")
                continue
            if status < 400:
                return data
            lines = data.decode("utf-8", "replace").splitlines()
            if status < 500:  # the request's fault: the same request fails the same way again
                raise InvokeFailed("ClientError", f"ClientError: {status}", ["Message:", *lines])
            failure = InvokeFailed(
                "AlgorithmError", f"Bad HTTP status received from algorithm: {status}", ["Message:", *lines]
            )
        assert failure is not None
        raise failure

    def _chain(self, containers: list[Container], body: bytes) -> tuple[int, bytes]:
        headers = {}
        if self.content_type:
            headers["Content-Type"] = self.content_type
        last = len(containers) - 1
        status, data = 200, body
        for index, container in enumerate(containers):
            step = dict(headers)
            if index == last and self.accept:
                step["Accept"] = self.accept
            answer = container.pool.request("POST", "/invocations", step, data)
            status, data = answer.status, answer.data
            if status >= 400:
                break
            media = answer.headers.get("content-type")
            if media:  # the next container of the pipeline reads what this one wrote
                headers["Content-Type"] = media
        return status, data

    # --- outputs ------------------------------------------------------------------------------

    def _write(self, instance: TransformInstance, pending: queue.Queue) -> None:
        """The answers of one instance's requests, in order, into each object's output; uploaded at its end."""
        outputs: dict[int, IO[bytes]] = {}
        folder = instance.folder / "output"
        folder.mkdir(parents=True, exist_ok=True)
        while True:
            item = pending.get()
            if item is None:
                break
            obj, future, batch = item
            handle = outputs.get(id(obj))
            if handle is None:
                handle = outputs[id(obj)] = open(folder / str(len(outputs)), "w+b")
            if future is _END:
                outputs.pop(id(obj))
                self._finish(instance, obj, handle)
                continue
            data = self._answer(future)
            if data is _STOPPED:
                continue
            if isinstance(data, InvokeFailed):
                self._fail(instance, obj, data)
            if obj.failure is not None or data is None:
                continue
            try:
                handle.write(self._assembled(data, batch))
            except (dataprocessing.RecordError, UnicodeDecodeError) as error:
                self._fail(instance, obj, InvokeFailed("ClientError", f"Unable to join or filter the output: {error}"))
        for handle in outputs.values():
            handle.close()

    def _answer(self, future: Future):
        """A request's answer (bytes, None, or its InvokeFailed); ``_STOPPED`` when the job stops first."""
        while not future.done():
            if self.stopping():
                return _STOPPED
            wait_futures([future], timeout=0.2)
        try:
            return future.result()
        except InvokeFailed as failure:
            return failure
        except Exception as error:  # noqa: BLE001 - a request's own bug fails its object, not the job
            log.exception("transform job %s: a request failed", self.job.name)
            return InvokeFailed("AlgorithmError", f"InternalServerError: {type(error).__name__}: {error}")

    def _assembled(self, data: bytes, batch: list[records.Record]) -> bytes:
        processing = self.processing
        if processing.join or processing.output_filter:
            outputs = dataprocessing.split_output(data, len(batch))
            pieces = [processing.result(record.original, out) for record, out in zip(batch, outputs, strict=True)]
            separator = b"\n" if self.assemble_lines else b""
            return b"".join(piece + separator for piece in pieces)
        if self.assemble_lines and not data.endswith(b"\n"):
            return data + b"\n"
        return data

    def _finish(self, instance: TransformInstance, obj: InputObject, handle) -> None:
        try:
            if obj.failure is not None or self.stopping():
                return
            size = handle.tell()
            handle.seek(0)
            try:
                s3io.put_file(self.s3, handle, self.output_bucket, obj.output_key, size)
            except (ClientError, BotoCoreError) as error:
                self._fail(instance, obj, InvokeFailed("ClientError", f"Could not upload the output: {error}"))
        finally:
            handle.close()


_STOPPED = object()
