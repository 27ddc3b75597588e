"""What an endpoint does, one operation at a time, as SageMaker does it.

Each endpoint has a worker thread taking its operations in order:

create    Creating: every variant's instances start (in parallel) and pass their health
          checks -> InService; one that does not -> Failed with its FailureReason, and
          nothing is left running.
update    Updating (blue/green): the new fleet starts and passes its health checks
          beside the old one, which serves meanwhile; traffic moves to it all at once,
          as a canary then the rest, or in linear steps, each step baking for
          WaitIntervalInSeconds while AutoRollbackConfiguration's alarms are watched;
          after TerminationWaitInSeconds the old fleet stops taking requests, drains
          those in flight and stops. A new fleet that fails its health checks, an alarm
          or MaximumExecutionTimeoutInSeconds rolls back (RollingBack): traffic returns
          to the old fleet, the new one stops, and the endpoint is InService again
          with the FailureReason.
capacity  Updating: weights apply at once; instances are added (healthy first) or
          drained and stopped (UpdateEndpointWeightsAndCapacities, autoscaling).
delete    Deleting: traffic stops, every instance stops, the endpoint is gone.

Between operations an InService endpoint is watched: an instance whose container
exits or fails three health checks in a row is replaced (SystemUpdating).
"""

from __future__ import annotations

import logging
import queue
import shutil
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any
from concurrent.futures import ThreadPoolExecutor

from localaws.sagemaker.hosting.fleet import Fleet, Instance, LaunchFailed
from localaws.sagemaker.hosting.metrics import HostingMetrics
from localaws.sagemaker.hosting.models import Endpoint, VariantState
from localaws.sagemaker.hosting.router import Route

log = logging.getLogger(__name__)

_MONITOR_SECONDS = 1.0
_PING_EVERY_SECONDS = 5.0
_PING_STRIKES = 3
_ALARM_POLL_SECONDS = 1.0
_MAX_PARALLEL_LAUNCHES = 8


class Cancelled(Exception):
    """The endpoint is being deleted (or localaws is stopping): drop what is under way."""


class HostingEngine:
    def __init__(self, settings, clients, runners, router, lock: threading.RLock):
        """``lock`` is the SageMaker backends' (hosting's resources are read and changed under it)."""
        self.settings = settings
        self.clients = clients
        self.router = router
        self.lock = lock
        self.fleet = Fleet(settings, clients, runners)
        self.metrics = HostingMetrics(settings, clients, self.instance_count)
        self.workers: dict[str, EndpointWorker] = {}
        self._closing = threading.Event()

    # --- called by the backend, under its lock ---------------------------------------------

    def create(self, endpoint: Endpoint) -> None:
        worker = EndpointWorker(self, endpoint)
        old = self.workers.get(endpoint.name)
        self.workers[endpoint.name] = worker
        worker.start(after=old)
        worker.submit(("create",))

    def update(self, endpoint: Endpoint, deployment: dict | None) -> None:
        self.workers[endpoint.name].submit(("update", deployment))

    def change_capacity(self, endpoint: Endpoint, weights: dict, counts: dict, done=None) -> None:
        self.workers[endpoint.name].submit(("capacity", weights, counts, done))

    def delete(self, endpoint: Endpoint, deleted: Callable[[Endpoint], None]) -> None:
        """Stop the endpoint; ``deleted(endpoint)`` once every instance of it is gone."""
        self.workers[endpoint.name].submit(("delete", deleted))

    def restart(self, endpoint: Endpoint, deleted: Callable[[Endpoint], None]) -> None:
        """localaws restarted and ``endpoint`` comes back from its state: it carries on as the cloud's
        would. Its instances are gone with the old process: an endpoint that served (InService, or in
        an update, a change of capacity, a replacement) starts its fleet again from the model data in
        S3 and serves (SystemUpdating meanwhile); an update in flight is rolled back; one being created
        is created; one being deleted is deleted (``deleted`` as for ``delete``); a Failed one stays Failed."""
        worker = EndpointWorker(self, endpoint)
        self.workers[endpoint.name] = worker
        worker.start()
        if endpoint.status == "Failed":
            return
        if endpoint.status == "Deleting":
            endpoint.cancelled.set()
            worker.submit(("delete", deleted))
            return
        if endpoint.status == "Creating":
            worker.submit(("create",))
            return
        if endpoint.pending is not None:
            endpoint.pending = None
            endpoint.failure_reason = "Rolled back the deployment: localaws stopped while it was in progress."
        endpoint.set_status("SystemUpdating", keep_reason=True)
        for variant in endpoint.variants.values():
            variant.set_status("Updating", "Starting the variant's instances again: localaws restarted")
        worker.submit(("restart",))

    # --- localaws's own views ---------------------------------------------------------------

    def describe_instances(self, name: str) -> dict | None:
        with self.lock:
            worker = self.workers.get(name)
            if worker is None:
                return None
            endpoint = worker.endpoint
            out: dict[str, Any] = {"EndpointName": name, "EndpointStatus": endpoint.status, "Instances": []}
            for fleet, variants in (
                ("current", endpoint.variants),
                ("pending", endpoint.pending.variants if endpoint.pending else {}),
            ):
                for variant in variants.values():
                    for instance in variant.instances:
                        out["Instances"].append({**instance.describe(), "Fleet": fleet})
            out["Retiring"] = [instance.describe() for instance in worker.retiring]
            return out

    def instance_count(self, endpoint: str, variant: str) -> int:
        with self.lock:
            worker = self.workers.get(endpoint)
            if worker is None or variant not in worker.endpoint.variants:
                return 1
            return max(1, worker.endpoint.variants[variant].current_count)

    # --- what Application Auto Scaling asks (applicationautoscaling.models.ScalableVariants) -----------

    def capacity(self, endpoint: str, variant: str) -> tuple[int, int] | None:
        """(current, desired) instance counts of a variant, None when it does not exist."""
        with self.lock:
            worker = self.workers.get(endpoint)
            if worker is None or variant not in worker.endpoint.variants or worker.endpoint.status == "Deleting":
                return None
            state = worker.endpoint.variants[variant]
            return state.current_count, state.desired_count

    def set_desired_count(self, endpoint: str, variant: str, count: int, done) -> str | None:
        """Set a variant's desired instance count. Returns None when the change was started
        (``done(ok, message)`` is called when it ends), else why it cannot be made now."""
        with self.lock:
            worker = self.workers.get(endpoint)
            if worker is None or variant not in worker.endpoint.variants:
                return f"endpoint/{endpoint}/variant/{variant} does not exist"
            if worker.endpoint.status != "InService":
                return f"the endpoint is {worker.endpoint.status}"
            state = worker.endpoint.variants[variant]
            state.desired_count = count
            state.set_status("Updating", "Scaling the variant (Application Auto Scaling)")
            worker.endpoint.set_status("Updating", keep_reason=True)
            self.change_capacity(worker.endpoint, {}, {variant: count}, done=done)
        return None

    def invocation_totals(self, endpoint: str, variant: str) -> dict | None:
        counters = self.metrics.find(endpoint, variant)
        return counters.totals() if counters else None

    def shutdown(self) -> None:
        """Stop every endpoint's instances: nothing is left running when localaws stops."""
        self._closing.set()
        with self.lock:
            workers = list(self.workers.values())
        for worker in workers:
            worker.endpoint.cancelled.set()
            worker.queue.put(None)
        for worker in workers:
            worker.join(timeout=30)
        instances = []
        with self.lock:
            for worker in workers:
                instances.extend(worker.take_all_instances())
        grace = min(self.settings.serving_stop_grace_seconds, 10.0)
        _parallel([lambda instance=instance: instance.stop(grace) for instance in instances])
        self.fleet.close()
        self.metrics.close()


class EndpointWorker:
    def __init__(self, engine: HostingEngine, endpoint: Endpoint):
        self.engine = engine
        self.endpoint = endpoint
        self.fleet: Fleet = engine.fleet
        self.lock = engine.lock
        self.queue: queue.Queue = queue.Queue()
        #: Share of the traffic the new fleet takes during a blue/green update.
        self.green_share = 0.0
        #: Instances taken out of service and on their way out (drain, stop).
        self.retiring: list[Instance] = []
        self._thread: threading.Thread | None = None
        self._last_ping = time.monotonic()
        #: After a failed replacement, when to try again.
        self._retry_at = 0.0

    def start(self, after: "EndpointWorker | None" = None) -> None:
        self._thread = threading.Thread(
            target=self._run, args=(after,), name=f"endpoint-{self.endpoint.name}", daemon=True
        )
        self._thread.start()

    def join(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def submit(self, operation: tuple) -> None:
        self.queue.put(operation)

    # --- the loop ---------------------------------------------------------------------------

    def _run(self, after: "EndpointWorker | None") -> None:
        if after is not None:
            after.join()  # a deleted endpoint of the same name finishes stopping first
        while True:
            try:
                operation = self.queue.get(timeout=_MONITOR_SECONDS)
            except queue.Empty:
                operation = ()
            if operation is None or self.engine._closing.is_set():
                return
            if not operation:
                self._watch()
                continue
            kind, args = operation[0], operation[1:]
            try:
                getattr(self, f"_{kind}")(*args)
            except Cancelled:
                log.info("endpoint %s: %s cancelled", self.endpoint.name, kind)
            except Exception as error:  # noqa: BLE001 - a bug must not leave the endpoint in progress
                log.error("endpoint %s: %s crashed:\n%s", self.endpoint.name, kind, traceback.format_exc())
                with self.lock:
                    if self.endpoint.status not in ("Deleting",):
                        reason = f"InternalServerError: {type(error).__name__}: {error}"
                        status = "Failed" if kind == "create" else "InService"
                        self.endpoint.set_status(status, reason[:1024])
            if kind == "delete":
                return

    # --- routing ----------------------------------------------------------------------------

    def _publish(self) -> None:
        """Replace the endpoint's routing table from its fleets, weights and the green share."""
        endpoint = self.endpoint
        metrics = self.engine.metrics
        with self.lock:
            if self._deleting:
                return
            routes: list[Route] = []
            fleets = [(1.0 - self.green_share, endpoint.variants)]
            if endpoint.pending and self.green_share > 0:
                fleets.append((self.green_share, endpoint.pending.variants))
            for fraction, variants in fleets:
                if fraction <= 0:
                    continue
                weights = sum(v.current_weight for v in variants.values() if v.instances)
                for variant in variants.values():
                    share = fraction * (variant.current_weight / weights) if weights > 0 else 0.0
                    routes.append(
                        Route(
                            variant=variant.name,
                            share=share,
                            instances=[i for i in variant.instances if i.accepting],
                            counters=metrics.counters(endpoint.name, variant.name),
                            least_outstanding=(variant.spec.get("RoutingConfig") or {}).get("RoutingStrategy")
                            == "LEAST_OUTSTANDING_REQUESTS",
                        )
                    )
            if not any(route.instances for route in routes) and endpoint.status in ("Creating", "Failed"):
                self.engine.router.withdraw(endpoint.name)
                return
            self.engine.router.publish(endpoint.name, routes)

    _deleting = False

    # --- launching and retiring ---------------------------------------------------------------

    def _check_cancelled(self) -> None:
        if self.endpoint.cancelled.is_set() or self.engine._closing.is_set():
            raise Cancelled()

    def _launch(self, plan: list[tuple[VariantState, int]], on_ready=None) -> list[Instance]:
        """Start ``count`` healthy instances of each variant in parallel.

        ``on_ready(variant, instance)`` is called as each one passes its health checks.
        If any fails, the others are stopped too and the first ``LaunchFailed`` is raised."""
        jobs = [variant for variant, count in plan for _ in range(max(0, count))]
        if not jobs:
            return []
        started: list[tuple[VariantState, Instance]] = []
        failures: list[BaseException] = []
        guard = threading.Lock()

        def one(variant: VariantState) -> None:
            if failures:
                return
            try:
                instance = self.fleet.start_healthy(self.endpoint.name, variant, self.endpoint.cancelled)
            except BaseException as error:  # noqa: BLE001 - collected and re-raised below
                with guard:
                    failures.append(error)
                return
            with guard:
                started.append((variant, instance))
            if on_ready is not None and not failures:
                on_ready(variant, instance)

        _parallel([lambda variant=variant: one(variant) for variant in jobs], workers=_MAX_PARALLEL_LAUNCHES)
        if failures or self.endpoint.cancelled.is_set():
            with self.lock:
                for variant, instance in started:
                    if instance in variant.instances:
                        variant.instances.remove(instance)
            self._publish()
            _parallel([lambda instance=instance: instance.stop(0) for _, instance in started])
            self._check_cancelled()
            error = next((f for f in failures if isinstance(f, LaunchFailed)), failures[0])
            if isinstance(error, LaunchFailed):
                raise error
            raise LaunchFailed(f"InternalServerError: {type(error).__name__}: {error}") from error
        return [instance for _, instance in started]

    def _retire(self, instances: list[Instance], drain: bool = True) -> None:
        """Drain (unless told not to) and stop instances already out of the routing table."""
        if not instances:
            return
        with self.lock:
            self.retiring.extend(instances)
        try:
            _parallel(
                [
                    (lambda instance=instance: self.fleet.retire(instance))
                    if drain
                    else (lambda instance=instance: instance.stop(self.engine.settings.serving_stop_grace_seconds))
                    for instance in instances
                ]
            )
        finally:
            with self.lock:
                self.retiring = [i for i in self.retiring if i not in instances]

    # --- operations ---------------------------------------------------------------------------

    def _create(self) -> None:
        endpoint = self.endpoint

        def ready(variant: VariantState, instance: Instance) -> None:
            with self.lock:
                variant.instances.append(instance)

        try:
            self._launch([(variant, variant.desired_count) for variant in endpoint.variants.values()], ready)
        except LaunchFailed as error:
            with self.lock:
                for variant in endpoint.variants.values():
                    variant.instances = []
                    variant.set_status(None)
                endpoint.set_status("Failed", str(error)[:1024])
            return
        with self.lock:
            self._check_cancelled()
            for variant in endpoint.variants.values():
                variant.current_weight = variant.desired_weight
                variant.set_status(None)
            endpoint.set_status("InService")
        self._publish()

    def _restart(self) -> None:
        """The fleet of an endpoint that served before localaws restarted (see ``HostingEngine.restart``)."""
        endpoint = self.endpoint
        self._publish()  # known, with no instance yet: requests get ServiceUnavailable, which clients retry

        def ready(variant: VariantState, instance: Instance) -> None:
            with self.lock:
                variant.instances.append(instance)
            self._publish()

        problems = []
        for variant in list(endpoint.variants.values()):
            try:
                self._launch([(variant, variant.desired_count)], ready)
            except LaunchFailed as error:
                problems.append(str(error))
        with self.lock:
            for variant in endpoint.variants.values():
                variant.set_status(None)
            if endpoint.status == "SystemUpdating":
                if problems:
                    endpoint.set_status(
                        "InService",
                        (f"Failed to start the endpoint's instances again after localaws restarted: {problems[0]}")[
                            :1024
                        ],
                    )
                else:
                    endpoint.set_status("InService", keep_reason=True)
        if problems:  # the watch starts what is missing, as for an instance that died
            self._retry_at = time.monotonic() + 30.0
            log.warning("endpoint %s: restart incomplete (next check retries): %s", endpoint.name, problems[0])

    def _capacity(self, weights: dict, counts: dict, done=None) -> None:
        endpoint = self.endpoint
        problems = []
        with self.lock:
            for name, weight in weights.items():
                endpoint.variants[name].current_weight = weight
        self._publish()
        shrink: list[Instance] = []
        grow: list[tuple[VariantState, int]] = []
        with self.lock:
            for name, count in counts.items():
                variant = endpoint.variants[name]
                if count < variant.current_count:
                    # The newest go first, as SageMaker terminates instances on scale-in.
                    leaving = variant.instances[count:]
                    variant.instances = variant.instances[:count]
                    shrink.extend(leaving)
                elif count > variant.current_count:
                    grow.append((variant, count - variant.current_count))
        if shrink:
            for instance in shrink:
                with instance.lock:
                    instance.accepting = False
            self._publish()

        def ready(variant: VariantState, instance: Instance) -> None:
            with self.lock:
                variant.instances.append(instance)
            self._publish()

        threads = []
        if shrink:
            retire = threading.Thread(target=self._retire, args=(shrink,), daemon=True)
            retire.start()
            threads.append(retire)
        try:
            for variant, missing in grow:
                try:
                    self._launch([(variant, missing)], ready)
                except LaunchFailed as error:
                    problems.append(str(error))
        finally:
            for thread in threads:
                thread.join()
        with self.lock:
            for name in set(weights) | set(counts):
                variant = endpoint.variants[name]
                variant.set_status(None)
                if problems and name in counts:
                    variant.desired_count = variant.current_count
            if endpoint.status != "Deleting":
                if problems:
                    endpoint.set_status(
                        "InService", ("Failed to update the endpoint's capacity: " + problems[0])[:1024]
                    )
                else:
                    endpoint.set_status("InService", keep_reason=True)
        if done is not None:
            done(not problems, problems[0] if problems else None)

    def _update(self, deployment: dict | None) -> None:
        endpoint = self.endpoint
        pending = endpoint.pending
        assert pending is not None, "an update runs with its deployment pending"
        green = pending.variants
        deployment = deployment or {}
        blue_green = deployment.get("BlueGreenUpdatePolicy")
        rolling = deployment.get("RollingUpdatePolicy")
        policy = blue_green or rolling or {}
        alarms = [
            a["AlarmName"]
            for a in (deployment.get("AutoRollbackConfiguration") or {}).get("Alarms", [])
            if a.get("AlarmName")
        ]
        deadline = time.monotonic() + float(policy.get("MaximumExecutionTimeoutInSeconds") or 28800)

        def ready(variant: VariantState, instance: Instance) -> None:
            with self.lock:
                variant.instances.append(instance)
                variant.set_status(
                    "Creating",
                    f"{variant.current_count} of {variant.desired_count} instances of the new fleet in service",
                )

        try:
            self._launch([(variant, variant.desired_count) for variant in green.values()], ready)
        except LaunchFailed as error:
            with self.lock:
                for variant in green.values():
                    variant.instances = []
                endpoint.pending = None
                if endpoint.status != "Deleting":
                    endpoint.set_status("InService", f"Failed to update the endpoint: {error}"[:1024])
            return
        with self.lock:
            for variant in green.values():
                variant.current_weight = variant.desired_weight

        try:
            for fraction, wait, label in self._traffic_steps(blue_green, rolling, green):
                with self.lock:
                    self._check_cancelled()
                    self.green_share = fraction
                    for variant in green.values():
                        variant.set_status("ActivatingTraffic", f"{round(fraction * 100)}% of the traffic ({label})")
                self._publish()
                with self.lock:
                    for variant in green.values():
                        variant.set_status("Baking", f"{round(fraction * 100)}% of the traffic; baking for {wait} s")
                trouble = self._bake(wait, alarms, deadline)
                if trouble:
                    return self._roll_back(trouble)
            termination_wait = float((blue_green or {}).get("TerminationWaitInSeconds") or 0)
            trouble = self._bake(termination_wait, alarms, deadline) if termination_wait else None
            if trouble:
                return self._roll_back(trouble)
        except Cancelled:
            raise

        # The new fleet is the endpoint now; the old one drains and stops.
        with self.lock:
            self._check_cancelled()
            old = [instance for variant in endpoint.variants.values() for instance in variant.instances]
            for instance in old:
                with instance.lock:
                    instance.accepting = False
            endpoint.variants = green
            endpoint.config_name = pending.config_name
            endpoint.pending = None
            self.green_share = 0.0
            for variant in green.values():
                variant.set_status(None)
        self._publish()
        self._retire(old)
        with self.lock:
            if endpoint.status != "Deleting":
                endpoint.set_status("InService")

    def _traffic_steps(self, blue_green: dict | None, rolling: dict | None, green: dict) -> list:
        """[(share of traffic on the new fleet, seconds to bake, label)] of a deployment."""
        total = sum(variant.desired_count for variant in green.values()) or 1

        def fraction(size: dict) -> float:
            if size["Type"] == "INSTANCE_COUNT":
                return min(1.0, size["Value"] / total)
            return min(1.0, size["Value"] / 100.0)

        if rolling:
            step = fraction(rolling["MaximumBatchSize"])
            wait = rolling.get("WaitIntervalInSeconds", 0)
            steps, share = [], 0.0
            while share < 1.0 - 1e-9:
                share = min(1.0, share + step)
                steps.append((share, wait, "rolling batch"))
            return steps
        if not blue_green:
            return [(1.0, 0, "all at once")]
        routing = blue_green["TrafficRoutingConfiguration"]
        wait = routing.get("WaitIntervalInSeconds", 0)
        kind = routing["Type"]
        if kind == "CANARY":
            return [(fraction(routing["CanarySize"]), wait, "canary"), (1.0, 0, "all at once after the canary")]
        if kind == "LINEAR":
            step = fraction(routing["LinearStepSize"])
            steps, share = [], 0.0
            while share < 1.0 - 1e-9:
                share = min(1.0, share + step)
                steps.append((share, wait, "linear step"))
            return steps
        return [(1.0, wait, "all at once")]

    def _bake(self, seconds: float, alarms: list[str], deadline: float) -> str | None:
        """Wait ``seconds`` watching the rollback alarms; what went wrong, or None."""
        end = time.monotonic() + float(seconds)
        while True:
            self._check_cancelled()
            if alarms:
                firing = self._alarms_in_alarm(alarms)
                if firing:
                    return (
                        f"Rolled back the deployment: the alarm(s) [{', '.join(firing)}] of "
                        "AutoRollbackConfiguration went into ALARM state while the new fleet was serving."
                    )
            if time.monotonic() >= deadline:
                return "Rolled back the deployment: it did not complete within MaximumExecutionTimeoutInSeconds."
            left = end - time.monotonic()
            if left <= 0:
                return None
            self.endpoint.cancelled.wait(min(left, _ALARM_POLL_SECONDS))

    def _alarms_in_alarm(self, names: list[str]) -> list[str]:
        try:
            found = self.engine.clients.cloudwatch.describe_alarms(AlarmNames=names)["MetricAlarms"]
        except Exception:  # noqa: BLE001 - CloudWatch unreachable: no evidence of trouble
            log.warning("could not read the rollback alarms %s", names, exc_info=True)
            return []
        return [alarm["AlarmName"] for alarm in found if alarm.get("StateValue") == "ALARM"]

    def _roll_back(self, reason: str) -> None:
        endpoint = self.endpoint
        with self.lock:
            endpoint.set_status("RollingBack", keep_reason=True)
            self.green_share = 0.0
            assert endpoint.pending is not None, "a rollback undoes a pending deployment"
            green = [instance for variant in endpoint.pending.variants.values() for instance in variant.instances]
            for instance in green:
                with instance.lock:
                    instance.accepting = False
        self._publish()
        self._retire(green)
        with self.lock:
            endpoint.pending = None
            if endpoint.status != "Deleting":
                endpoint.set_status("InService", reason[:1024])

    def _delete(self, deleted: Callable[[Endpoint], None]) -> None:
        endpoint = self.endpoint
        self.engine.router.withdraw(endpoint.name)
        with self.lock:
            self._deleting = True
            instances = self.take_all_instances()
        _parallel(
            [
                lambda instance=instance: (
                    instance.drain(5.0),
                    instance.stop(self.engine.settings.serving_stop_grace_seconds),
                )
                for instance in instances
            ]
        )
        self.engine.metrics.forget(endpoint.name)
        shutil.rmtree(self.fleet.root / endpoint.name, ignore_errors=True)
        with self.lock:
            if self.engine.workers.get(endpoint.name) is self:
                del self.engine.workers[endpoint.name]
        deleted(endpoint)

    def take_all_instances(self) -> list[Instance]:
        """Every instance of the endpoint (current, new and retiring fleets), now out of its hands."""
        endpoint = self.endpoint
        instances = list(self.retiring)
        fleets = [endpoint.variants] + ([endpoint.pending.variants] if endpoint.pending else [])
        for variants in fleets:
            for variant in variants.values():
                instances.extend(variant.instances)
                variant.instances = []
        seen, unique = set(), []
        for instance in instances:
            if id(instance) not in seen:
                seen.add(id(instance))
                unique.append(instance)
        return unique

    # --- watching an endpoint in service ---------------------------------------------------

    def _watch(self) -> None:
        endpoint = self.endpoint
        with self.lock:
            if endpoint.status != "InService":
                return
            instances = [
                (variant, instance) for variant in endpoint.variants.values() for instance in variant.instances
            ]
        ping = time.monotonic() - self._last_ping >= _PING_EVERY_SECONDS
        if ping:
            self._last_ping = time.monotonic()
        dead = []
        for variant, instance in instances:
            code = instance.exit_code()
            if code is not None:
                dead.append((variant, instance, f"its container exited with code {code}"))
            elif ping:
                if instance.ping():
                    instance.ping_failures = 0
                else:
                    instance.ping_failures += 1
                    if instance.ping_failures >= _PING_STRIKES:
                        dead.append((variant, instance, f"it failed {_PING_STRIKES} health checks in a row"))
        short = []
        if time.monotonic() >= self._retry_at:
            with self.lock:
                dead_ids = {id(instance) for _, instance, _ in dead}
                for variant in endpoint.variants.values():
                    alive = sum(1 for instance in variant.instances if id(instance) not in dead_ids)
                    if alive + sum(1 for v, _, _ in dead if v is variant) < variant.desired_count:
                        short.append((variant, variant.desired_count - variant.current_count))
        if dead or short:
            self._replace(dead, short)

    def _replace(self, dead: list, short: Sequence[tuple[VariantState, int]] = ()) -> None:
        endpoint = self.endpoint
        with self.lock:
            if endpoint.status != "InService":
                return
            endpoint.set_status("SystemUpdating", keep_reason=True)
            for variant, instance, why in dead:
                log.warning(
                    "endpoint %s: replacing instance %s of %s: %s", endpoint.name, instance.id, variant.name, why
                )
                if instance in variant.instances:
                    variant.instances.remove(instance)
                with instance.lock:
                    instance.accepting = False
                variant.set_status("Updating", f"Replacing an unhealthy instance ({why})")
        self._publish()
        _parallel([lambda instance=instance: instance.stop(0) for _, instance, _ in dead])

        def ready(variant: VariantState, instance: Instance) -> None:
            with self.lock:
                variant.instances.append(instance)
            self._publish()

        plan: dict[str, list] = {}
        for variant, _, _ in dead:
            plan.setdefault(variant.name, [variant, 0])[1] += 1
        for variant, missing in short:
            plan.setdefault(variant.name, [variant, 0])[1] += missing
        problems = []
        for variant, count in plan.values():
            try:
                self._launch([(variant, count)], ready)
            except LaunchFailed as error:
                problems.append(str(error))
        with self.lock:
            for variant, _ in plan.values():
                variant.set_status(None)
            if endpoint.status == "SystemUpdating":
                endpoint.set_status("InService", keep_reason=True)
        if problems:
            self._retry_at = time.monotonic() + 30.0
            log.warning("endpoint %s: replacement failed (next check retries): %s", endpoint.name, problems[0])


def _parallel(tasks: list, workers: int = 16) -> None:
    """Run callables at once and wait for all of them; each one's errors are its own."""
    if not tasks:
        return
    if len(tasks) == 1:
        try:
            tasks[0]()
        except Exception:  # noqa: BLE001
            log.warning("background task failed", exc_info=True)
        return
    with ThreadPoolExecutor(max_workers=min(workers, len(tasks))) as pool:
        for future in [pool.submit(task) for task in tasks]:
            try:
                future.result()
            except Exception:  # noqa: BLE001
                log.warning("background task failed", exc_info=True)
