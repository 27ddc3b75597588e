"""A serving container's output, shipped to CloudWatch Logs as SageMaker ships it:
group ``/aws/sagemaker/Endpoints/<endpoint>``, stream ``<variant>/<instance id>``."""

from __future__ import annotations

import logging
import threading
import time

from localaws.sagemaker.cloudwatch import ensure_log_group

log = logging.getLogger(__name__)

_MAX_EVENTS_PER_PUT = 10_000
_MAX_EVENT_BYTES = 256 * 1024 - 26


def log_group(endpoint_name: str) -> str:
    return f"/aws/sagemaker/Endpoints/{endpoint_name}"


class LogShipper:
    """Buffers lines and ships them every ``flush_seconds`` from a thread of its own."""

    def __init__(self, clients, group: str, stream: str, flush_seconds: float):
        self.clients = clients
        self.group = group
        self.stream = stream
        self.flush_seconds = flush_seconds
        self._events: list[dict] = []
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._created = False
        self._last_ms = 0
        self.tail: list[str] = []  # the last lines, for failure reasons
        self._thread = threading.Thread(target=self._run, name=f"log-{stream}", daemon=True)
        self._thread.start()

    def write(self, line: str) -> None:
        line = line.rstrip("\n")
        ms = max(int(time.time() * 1000), self._last_ms)
        self._last_ms = ms
        with self._lock:
            self._events.append({"timestamp": ms, "message": line[:_MAX_EVENT_BYTES] or " "})
            self.tail = (self.tail + [line])[-20:]

    def _run(self) -> None:
        while not self._stopped.wait(self.flush_seconds):
            self._flush_quietly()
        self._flush_quietly()

    def _flush_quietly(self) -> None:
        try:
            self.flush()
        except Exception:  # noqa: BLE001 - logs are best effort; serving goes on
            log.warning("could not ship the log lines of %s", self.stream, exc_info=True)

    def flush(self) -> None:
        with self._lock:
            events, self._events = self._events, []
        if not events:
            return
        logs = self.clients.logs
        if not self._created:
            ensure_log_group(logs, self.group)
            try:
                logs.create_log_stream(logGroupName=self.group, logStreamName=self.stream)
            except logs.exceptions.ResourceAlreadyExistsException:
                pass
            self._created = True
        for start in range(0, len(events), _MAX_EVENTS_PER_PUT):
            logs.put_log_events(
                logGroupName=self.group,
                logStreamName=self.stream,
                logEvents=events[start : start + _MAX_EVENTS_PER_PUT],
            )

    def close(self) -> None:
        self._stopped.set()
        self._thread.join(timeout=30)
