"""One transform instance's share of the job: its objects' records, its requests, its outputs.

MaxConcurrentTransforms threads share the instance's work with no hand-offs between them: each takes
the next request (its payload cut from the object being read, under one lock) and sends it, then
files the answer under another lock; whichever thread files the answer that is next in the records'
order writes it, and those after it that are already in, to their object's output. An object's end
comes in that order too: its output is then uploaded (outside the lock), unless one of its requests
failed. The threads block on nothing but the model's answers, as a client of /invocations would.
"""

from __future__ import annotations

import gzip
import logging
import threading
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING

from botocore.exceptions import BotoCoreError, ClientError

from localaws.sagemaker import s3io
from localaws.sagemaker.hosting.fleet import Container
from localaws.sagemaker.hosting.upstream import Timeout, UpstreamError
from localaws.sagemaker.transform import dataprocessing, records

if TYPE_CHECKING:
    from localaws.sagemaker.transform.executor import InputObject, JobRun, TransformInstance

log = logging.getLogger(__name__)


class InvokeFailed(Exception):
    """An object's failure: ``kind`` (ClientError, AlgorithmError), what the data log says (``detail``,
    then ``lines``)."""

    def __init__(self, kind: str, detail: str, lines: list[str] | None = None):
        super().__init__(detail)
        self.kind = kind
        self.detail = detail
        self.lines = lines or []


@dataclass
class _Request:
    """The next request of the instance (``body``), or an object's end (``body`` None)."""

    order: int
    obj: InputObject
    body: bytes | None = None
    batch: list[records.Record] = field(default_factory=list)


class InstanceWork:
    def __init__(self, run: JobRun, instance: TransformInstance):
        self.run_ = run
        self.instance = instance
        self.processing = run.processing
        self._source = self._requests()
        self._source_lock = threading.Lock()
        self._order_lock = threading.Lock()
        self._answers: dict[int, tuple[_Request, bytes | InvokeFailed | None]] = {}
        self._next = 0  # the order of the next answer to write
        self._outputs: dict[int, IO[bytes]] = {}  # an object's index -> its output, being written
        self._folder = instance.folder / "work"

    def run(self) -> None:
        self._folder.mkdir(parents=True, exist_ok=True)
        concurrency = int(self.run_.params["MaxConcurrentTransforms"])
        threads = [
            threading.Thread(target=self._work, name=f"invoke-{self.instance.id}-{n}", daemon=True)
            for n in range(concurrency)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        self._source.close()  # a stop leaves it part-read: its input file goes now
        for handle in self._outputs.values():
            handle.close()

    # --- requests, in the records' order -------------------------------------------------------

    def _requests(self) -> Generator[_Request, None, None]:
        order = 0
        for number, obj in enumerate(self.instance.objects):
            for body, batch in self._payloads(obj, number):
                yield _Request(order, obj, body, batch)
                order += 1
            yield _Request(order, obj)
            order += 1

    def _payloads(self, obj: InputObject, number: int) -> Iterator[tuple[bytes, list[records.Record]]]:
        """An object's request bodies; a failure to read it is its object's (and ends it)."""
        run = self.run_
        path = self._folder / f"input-{number}"
        try:
            try:
                s3io.get_file(run.s3, obj.bucket, obj.key, path)
            except (ClientError, BotoCoreError) as error:
                raise InvokeFailed("ClientError", f"Could not download the object: {error}") from None
            strategy, limit = run.params["BatchStrategy"], int(run.params["MaxPayloadInMB"])
            with gzip.open(path, "rb") if run.gzip else open(path, "rb") as stream:
                found: Iterator[records.Record] = records.split(stream, run.split_type)
                if self.processing.input_filter:
                    found = (
                        records.Record(filtered, filtered, record.data)
                        for record in found
                        for filtered in (self.processing.model_input(record.data),)
                    )
                for body, batch in records.payloads(found, strategy, limit):
                    if obj.failure is not None or run.stopping():
                        return
                    yield body, batch
        except InvokeFailed as failure:
            run.fail(self.instance, obj, failure)
        except records.PayloadTooLarge as error:
            run.fail(self.instance, obj, InvokeFailed("ClientError", f"Too much data for max payload size ({error})"))
        except (records.MalformedInput, dataprocessing.RecordError, UnicodeDecodeError) as error:
            run.fail(self.instance, obj, InvokeFailed("ClientError", f"Unable to read the records: {error}"))
        except (OSError, EOFError) as error:  # not gzip, or a truncated gzip stream
            run.fail(self.instance, obj, InvokeFailed("ClientError", f"Unable to decompress the object: {error}"))
        finally:
            path.unlink(missing_ok=True)

    def _work(self) -> None:
        run = self.run_
        while not run.stopping():
            with self._source_lock:
                request = next(self._source, None)
            if request is None:
                return
            answer: bytes | InvokeFailed | None = None
            if request.body is not None and request.obj.failure is None:
                try:
                    answer = self._invoke(request.obj, request.body)
                except InvokeFailed as failure:
                    answer = failure
                except Exception as error:  # noqa: BLE001 - a bug of ours fails the object, not the job's thread
                    log.exception("transform job %s: a request failed", run.job.name)
                    answer = InvokeFailed("AlgorithmError", f"InternalServerError: {type(error).__name__}: {error}")
            self._file(request, answer)

    # --- the model ------------------------------------------------------------------------------

    def _invoke(self, obj: InputObject, body: bytes) -> bytes | None:
        """The model's answer to one request (a Serial pipeline's last container's), or None when its
        object failed meanwhile; ``InvokeFailed`` once ModelClientConfig's retries are spent."""
        run = self.run_
        failure: InvokeFailed | None = None
        for _attempt in range(1 + run.retries):
            if obj.failure is not None or run.stopping():
                return None
            try:
                status, data = self._chain(self.instance.containers, body)
            except Timeout:
                failure = InvokeFailed(
                    "AlgorithmError",
                    f"Model server did not respond to /invocations request within {run.timeout:g} seconds",
                )
                continue
            except (UpstreamError, OSError):
                failure = InvokeFailed("AlgorithmError", "Unable to get response from algorithm")
                continue
            if status < 400:
                return data
            lines = ["Message:", *data.decode("utf-8", "replace").splitlines()]
            if status < 500:  # the request's fault: the same request fails the same way again
                raise InvokeFailed("ClientError", f"ClientError: {status}", lines)
            failure = InvokeFailed("AlgorithmError", f"Bad HTTP status received from algorithm: {status}", lines)
        assert failure is not None
        raise failure

    def _chain(self, containers: list[Container], body: bytes) -> tuple[int, bytes]:
        run = self.run_
        headers = {"Content-Type": run.content_type} if run.content_type else {}
        last = len(containers) - 1
        status, data = 200, body
        for index, container in enumerate(containers):
            step = dict(headers)
            if index == last and run.accept:
                step["Accept"] = run.accept
            answer = container.pool.request("POST", "/invocations", step, data)
            status, data = answer.status, answer.data
            if status >= 400:
                break
            media = answer.headers.get("content-type")
            if media:  # the next container of the pipeline reads what this one wrote
                headers["Content-Type"] = media
        return status, data

    # --- outputs ----------------------------------------------------------------------------------

    def _file(self, request: _Request, answer: bytes | InvokeFailed | None) -> None:
        """File an answer; write every answer now next in order; upload the objects they end."""
        done: list[tuple[InputObject, IO[bytes]]] = []
        with self._order_lock:
            self._answers[request.order] = (request, answer)
            while self._next in self._answers:
                ready, result = self._answers.pop(self._next)
                self._next += 1
                obj = ready.obj
                handle = self._outputs.get(obj.index)
                if handle is None:
                    handle = self._outputs[obj.index] = open(self._folder / f"output-{obj.index}", "w+b")  # noqa: SIM115
                if ready.body is None:  # the object's end
                    done.append((obj, self._outputs.pop(obj.index)))
                    continue
                if isinstance(result, InvokeFailed):
                    self.run_.fail(self.instance, obj, result)
                if obj.failure is not None or not isinstance(result, bytes):
                    continue
                try:
                    handle.write(self._assembled(result, ready.batch))
                except (dataprocessing.RecordError, UnicodeDecodeError) as error:
                    failure = InvokeFailed("ClientError", f"Unable to join or filter the output: {error}")
                    self.run_.fail(self.instance, obj, failure)
        for obj, handle in done:
            self._upload(obj, handle)

    def _assembled(self, data: bytes, batch: list[records.Record]) -> bytes:
        processing = self.processing
        if processing.join or processing.output_filter:
            outputs = dataprocessing.split_output(data, len(batch))
            pieces = [processing.result(record.original, out) for record, out in zip(batch, outputs, strict=True)]
            separator = b"\n" if self.run_.assemble_lines else b""
            return b"".join(piece + separator for piece in pieces)
        if self.run_.assemble_lines and not data.endswith(b"\n"):
            return data + b"\n"
        return data

    def _upload(self, obj: InputObject, handle: IO[bytes]) -> None:
        run = self.run_
        try:
            if obj.failure is not None or run.stopping():
                return
            size = handle.tell()
            handle.seek(0)
            try:
                s3io.put_file(run.s3, handle, run.output_bucket, obj.output_key, size)
            except (ClientError, BotoCoreError) as error:
                run.fail(self.instance, obj, InvokeFailed("ClientError", f"Could not upload the output: {error}"))
        finally:
            handle.close()
            (self._folder / f"output-{obj.index}").unlink(missing_ok=True)
