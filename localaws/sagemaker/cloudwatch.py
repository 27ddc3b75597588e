"""A training or processing host's log stream (and a training host's metrics), shipped to CloudWatch
while the job runs."""

from __future__ import annotations

import re
import threading
import time

TRAINING_LOG_GROUP = "/aws/sagemaker/TrainingJobs"
PROCESSING_LOG_GROUP = "/aws/sagemaker/ProcessingJobs"
TRAINING_METRIC_NAMESPACE = "/aws/sagemaker/TrainingJobs"
_MAX_EVENTS_PER_PUT = 10_000
_MAX_EVENT_BYTES = 256 * 1024 - 26


def put_metrics(cloudwatch, namespace: str, datapoints: list[dict]) -> None:
    """PutMetricData of ``datapoints``, in puts of at most 1000 (CloudWatch's limit)."""
    for start in range(0, len(datapoints), 1000):
        cloudwatch.put_metric_data(Namespace=namespace, MetricData=datapoints[start : start + 1000])


def ensure_log_group(logs, group: str) -> None:
    try:
        logs.create_log_group(logGroupName=group)
    except logs.exceptions.ResourceAlreadyExistsException:
        pass


class MetricParser:
    """Applies a job's MetricDefinitions to its log lines, as SageMaker does."""

    def __init__(self, definitions: list[dict], series: dict[str, list] | None = None):
        """``series`` (metric name -> [(timestamp, value)]) is filled as lines come, for readers
        such as a tuning job's early stopping."""
        self.series = series if series is not None else {}
        self.definitions = []
        for definition in definitions or []:
            try:
                self.definitions.append((definition["Name"], re.compile(definition["Regex"])))
            except re.error:
                continue  # CreateTrainingJob rejected bad regexes already; be safe in the thread
        self.last: dict[str, dict] = {}

    def parse(self, line: str, timestamp: float) -> list[tuple[str, float]]:
        found = []
        for name, regex in self.definitions:
            match = regex.search(line)
            if not match:
                continue
            try:
                value = float(match.group(1) if regex.groups else match.group(0))
            except (ValueError, IndexError):
                continue
            if value != value or value in (float("inf"), float("-inf")):  # AWS drops NaN and infinities
                continue
            self.last[name] = {"MetricName": name, "Value": value, "Timestamp": timestamp}
            self.series.setdefault(name, []).append((timestamp, value))
            found.append((name, value))
        return found


class HostLog:
    """One host's log stream ``<job>/algo-<n>-<epoch>`` in ``group`` plus its metric series.

    Lines are buffered and shipped every ``flush_seconds`` by a background thread,
    so a reader polling GetLogEvents sees them while the job is still running.
    """

    def __init__(
        self,
        clients,
        job_name: str,
        host: str,
        flush_seconds: float,
        metrics: MetricParser | None,
        group: str = TRAINING_LOG_GROUP,
    ):
        self.clients = clients
        self.group = group
        self.stream = f"{job_name}/{host}-{int(time.time())}"
        self.dimension = f"{job_name}/{host}"
        self.flush_seconds = flush_seconds
        self.metrics = metrics
        self._events: list[dict] = []
        self._datapoints: list[dict] = []
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._created = False
        self._last_ms = 0
        self._thread = threading.Thread(target=self._run, name=f"log-{self.stream}", daemon=True)
        self._thread.start()

    def write(self, line: str) -> None:
        now = time.time()
        line = line.rstrip("\n")
        # CloudWatch needs non-decreasing timestamps within one put; keep the order lines came in.
        ms = max(int(now * 1000), self._last_ms)
        self._last_ms = ms
        with self._lock:
            self._events.append({"timestamp": ms, "message": line[:_MAX_EVENT_BYTES] or " "})
            if self.metrics is not None:
                for name, value in self.metrics.parse(line, now):
                    self._datapoints.append(
                        {
                            "MetricName": name,
                            "Dimensions": [{"Name": "Host", "Value": self.dimension}],
                            "Timestamp": now,
                            "Value": value,
                        }
                    )

    def _run(self) -> None:
        while not self._stopped.wait(self.flush_seconds):
            self.flush()
        self.flush()

    def flush(self) -> None:
        with self._lock:
            events, self._events = self._events, []
            datapoints, self._datapoints = self._datapoints, []
        logs = self.clients.logs
        if events:
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
        put_metrics(self.clients.cloudwatch, TRAINING_METRIC_NAMESPACE, datapoints)

    def close(self) -> None:
        self._stopped.set()
        self._thread.join(timeout=30)
