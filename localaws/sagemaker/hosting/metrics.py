"""Endpoints' per-variant metrics in the ``AWS/SageMaker`` namespace, as SageMaker publishes them.

Every invocation is counted in its variant's ``VariantCounters`` (a lock and a few
additions: cheap on the request path). A thread ships what accumulated every
``LOCALAWS_HOSTING_METRICS_SECONDS`` to CloudWatch as statistic sets, dimensions
``EndpointName`` and ``VariantName``:

    Invocations, InvocationsPerInstance         Count (Sum)
    Invocation4XXErrors, Invocation5XXErrors    Count (the container answered 4xx / 5xx)
    ModelLatency, OverheadLatency               Microseconds

The running totals are what Application Auto Scaling measures (``applicationautoscaling/scaling.py``).
"""

from __future__ import annotations

import logging
import threading
import time

log = logging.getLogger(__name__)

NAMESPACE = "AWS/SageMaker"
METRIC_NAMES = (
    "Invocations",
    "InvocationsPerInstance",
    "Invocation4XXErrors",
    "Invocation5XXErrors",
    "ModelLatency",
    "OverheadLatency",
)


class _Stat:
    __slots__ = ("count", "total", "low", "high")

    def __init__(self):
        self.count, self.total, self.low, self.high = 0, 0.0, float("inf"), 0.0

    def add(self, value: float) -> None:
        self.count += 1
        self.total += value
        if value < self.low:
            self.low = value
        if value > self.high:
            self.high = value

    def statistic_values(self) -> dict:
        return {"SampleCount": float(self.count), "Sum": self.total, "Minimum": self.low, "Maximum": self.high}


class VariantCounters:
    """What one variant of one endpoint served."""

    def __init__(self, endpoint: str, variant: str):
        self.endpoint = endpoint
        self.variant = variant
        self.lock = threading.Lock()
        self._reset()
        # Running totals since the variant first served (never reset).
        self.total_invocations = 0
        self.total_4xx = 0
        self.total_5xx = 0
        self.total_model_us = 0.0
        self.total_overhead_us = 0.0

    def _reset(self) -> None:
        self.invocations = 0
        self.errors_4xx = 0
        self.errors_5xx = 0
        self.model = _Stat()
        self.overhead = _Stat()

    def record(self, status: int, model_us: float, overhead_us: float) -> None:
        with self.lock:
            self.invocations += 1
            self.total_invocations += 1
            if 400 <= status < 500:
                self.errors_4xx += 1
                self.total_4xx += 1
            elif status >= 500 or status == 0:
                self.errors_5xx += 1
                self.total_5xx += 1
            self.model.add(model_us)
            self.overhead.add(overhead_us)
            self.total_model_us += model_us
            self.total_overhead_us += overhead_us

    def totals(self) -> dict:
        with self.lock:
            return {
                "Invocations": self.total_invocations,
                "Invocation4XXErrors": self.total_4xx,
                "Invocation5XXErrors": self.total_5xx,
                "ModelLatency": self.total_model_us,
                "OverheadLatency": self.total_overhead_us,
            }

    def take(self, instances: int, timestamp: float) -> list[dict]:
        """The datapoints accumulated since the last call (empty when nothing was served)."""
        with self.lock:
            if not self.invocations:
                return []
            invocations, e4, e5 = self.invocations, self.errors_4xx, self.errors_5xx
            model, overhead = self.model, self.overhead
            self._reset()
        dimensions = [{"Name": "EndpointName", "Value": self.endpoint}, {"Name": "VariantName", "Value": self.variant}]

        def point(name, unit, value=None, stats=None):
            datum = {"MetricName": name, "Dimensions": dimensions, "Timestamp": timestamp, "Unit": unit}
            if stats is not None:
                datum["StatisticValues"] = stats
            else:
                datum["Value"] = float(value)
            return datum

        return [
            point("Invocations", "Count", invocations),
            point("InvocationsPerInstance", "Count", invocations / max(1, instances)),
            point("Invocation4XXErrors", "Count", e4),
            point("Invocation5XXErrors", "Count", e5),
            point("ModelLatency", "Microseconds", stats=model.statistic_values()),
            point("OverheadLatency", "Microseconds", stats=overhead.statistic_values()),
        ]


class HostingMetrics:
    def __init__(self, settings, clients, instance_count):
        """``instance_count(endpoint, variant)``: what InvocationsPerInstance divides by."""
        self.settings = settings
        self.clients = clients
        self.instance_count = instance_count
        self._counters: dict[tuple[str, str], VariantCounters] = {}
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="hosting-metrics", daemon=True)
        self._thread.start()

    def counters(self, endpoint: str, variant: str) -> VariantCounters:
        key = (endpoint, variant)
        counters = self._counters.get(key)
        if counters is None:
            with self._lock:
                counters = self._counters.setdefault(key, VariantCounters(endpoint, variant))
        return counters

    def find(self, endpoint: str, variant: str) -> VariantCounters | None:
        return self._counters.get((endpoint, variant))

    def forget(self, endpoint: str) -> None:
        """Ship what an endpoint's variants served, then drop their counters (DeleteEndpoint)."""
        with self._lock:
            gone = {key: value for key, value in self._counters.items() if key[0] == endpoint}
            for key in gone:
                del self._counters[key]
        self._ship(list(gone.values()))

    def _run(self) -> None:
        while not self._stopped.wait(self.settings.hosting_metrics_seconds):
            with self._lock:
                counters = list(self._counters.values())
            if not self._stopped.is_set():
                self._ship(counters)

    def _ship(self, counters: list[VariantCounters]) -> None:
        now = time.time()
        data = []
        for item in counters:
            data.extend(item.take(self.instance_count(item.endpoint, item.variant), now))
        if not data:
            return
        try:
            for start in range(0, len(data), 1000):
                self.clients.cloudwatch.put_metric_data(Namespace=NAMESPACE, MetricData=data[start : start + 1000])
        except Exception:  # noqa: BLE001 - metrics are best effort; serving goes on
            log.warning("could not ship endpoint metrics to CloudWatch", exc_info=True)

    def close(self) -> None:
        """Stop shipping (the gateway, which CloudWatch is reached through, is stopping)."""
        self._stopped.set()
        self._thread.join(timeout=10)
