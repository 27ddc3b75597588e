"""InvokeEndpoint's path: a variant by weight, one of its instances, the container's answer.

Each endpoint has a routing table, replaced whole (never edited) whenever its
fleets or weights change, so a request reads it without a lock. A table holds one
route per (fleet, variant): during a blue/green update the old and the new fleet
each carry their share of the traffic. Within a route, requests are spread over
the variant's instances at random (RoutingStrategy RANDOM, AWS's default) or to the
one with the fewest requests in flight (LEAST_OUTSTANDING_REQUESTS).

Connections to containers are kept alive in a pool per container.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field

from localaws.sagemaker.errors import InvokeValidationError as ValidationError
from localaws.sagemaker.errors import ModelError, ServiceUnavailable
from localaws.sagemaker.hosting.upstream import Timeout, Unreachable, UpstreamError

_MESSAGE_LIMIT = 2048


@dataclass
class Route:
    """The share of an endpoint's traffic one variant of one fleet takes."""

    variant: str
    share: float
    instances: list
    counters: object  # metrics.VariantCounters
    least_outstanding: bool = False

    def choose(self):
        instances = self.instances
        if not instances:
            return None
        if self.least_outstanding:
            return min(instances, key=lambda instance: instance.inflight)
        return instances[random.randrange(len(instances))] if len(instances) > 1 else instances[0]


@dataclass
class RouteTable:
    endpoint: str
    routes: list[Route]
    variants: frozenset = field(init=False)
    total: float = field(init=False)

    def __post_init__(self):
        self.variants = frozenset(route.variant for route in self.routes)
        self.total = sum(route.share for route in self.routes if route.instances)

    def pick(self, target_variant: str | None) -> Route | None:
        routes = self.routes
        if target_variant:
            routes = [route for route in routes if route.variant == target_variant]
            total = sum(route.share for route in routes if route.instances)
            if total <= 0:  # a variant of weight 0 is still reachable by name
                serving = [route for route in routes if route.instances]
                return serving[0] if serving else (routes[0] if routes else None)
        else:
            total = self.total
        if total <= 0:
            return None
        point = random.random() * total
        for route in routes:
            if not route.instances:
                continue
            point -= route.share
            if point < 0:
                return route
        return next((route for route in reversed(routes) if route.instances), None)


@dataclass
class Answer:
    status: int
    body: bytes
    content_type: str | None
    custom_attributes: str | None
    variant: str


class Router:
    def __init__(self, settings):
        self.settings = settings
        self.tables: dict[str, RouteTable] = {}

    def publish(self, endpoint: str, routes: list[Route]) -> None:
        self.tables[endpoint] = RouteTable(endpoint, routes)

    def withdraw(self, endpoint: str) -> None:
        self.tables.pop(endpoint, None)

    def _not_found(self, endpoint: str) -> ValidationError:
        return ValidationError(f"Endpoint {endpoint} of account {self.settings.account_id} not found.")

    def _acquire(self, endpoint: str, target_variant: str | None, avoid=None):
        """A route and an instance of it, counted in; retried while fleets change under us."""
        for attempt in range(200):
            table = self.tables.get(endpoint)
            if table is None:
                raise self._not_found(endpoint)
            if target_variant and target_variant not in table.variants:
                raise ValidationError(
                    f"Variant {target_variant} not found for Request {endpoint} of account {self.settings.account_id}."
                )
            route = table.pick(target_variant)
            if route is None:
                raise ServiceUnavailable(
                    f"Endpoint {endpoint} has no instance to serve the request: every variant "
                    "has a weight of 0 or no instance in service."
                )
            instance = route.choose()
            if instance is not None and instance is not avoid and instance.acquire():
                return route, instance
            if instance is avoid and len(route.instances) == 1 and attempt > 2:
                avoid = None  # the only instance there is
            time.sleep(0.001 if attempt < 50 else 0.01)  # a fleet is being swapped: the next table is coming
        raise ServiceUnavailable(f"Endpoint {endpoint} has no instance available to serve the request.")

    def invoke(
        self,
        endpoint: str,
        body: bytes,
        *,
        content_type=None,
        accept=None,
        custom_attributes=None,
        target_variant=None,
        target_container=None,
        inference_id=None,
        started=None,
    ) -> Answer:
        started = started or time.perf_counter()
        headers = {}
        if content_type:
            headers["Content-Type"] = content_type
        if accept:
            headers["Accept"] = accept
        if custom_attributes:
            headers["X-Amzn-SageMaker-Custom-Attributes"] = custom_attributes
        if inference_id:
            headers["X-Amzn-SageMaker-Inference-Id"] = inference_id
        avoid = None
        for attempt in range(2):
            route, instance = self._acquire(endpoint, target_variant, avoid)
            try:
                model_started = time.perf_counter()
                status, data, media, attributes = self._call(endpoint, instance, body, headers, target_container)
                model_seconds = time.perf_counter() - model_started
                break
            except _Unreachable:
                avoid = instance  # a dying instance: the monitor replaces it; try another
                if attempt == 1:
                    route.counters.record(500, 0.0, (time.perf_counter() - started) * 1e6)
                    raise ServiceUnavailable(
                        f"Endpoint {endpoint} could not reach an instance of variant {route.variant}."
                    ) from None
            except ModelError:
                elapsed = time.perf_counter() - started
                route.counters.record(0, elapsed * 1e6, 0.0)
                raise
            finally:
                instance.release()
        overhead = (time.perf_counter() - started) - model_seconds
        route.counters.record(status, model_seconds * 1e6, max(0.0, overhead) * 1e6)
        if status >= 400:
            raise self._model_error(endpoint, route.variant, status, data, instance, target_container)
        return Answer(status, data, media, attributes, route.variant)

    def _call(self, endpoint, instance, body, headers, target_container):
        containers = instance.containers
        if len(containers) == 1:
            return self._post(containers[0], body, headers)
        if instance.mode == "Direct":
            if not target_container:
                raise ValidationError(
                    "TargetContainerHostname must be specified to invoke an endpoint whose model runs its "
                    "containers in Direct mode."
                )
            chosen = [c for c in containers if c.hostname == target_container]
            if not chosen:
                raise ValidationError(f"Container {target_container} not found for endpoint {endpoint}.")
            return self._post(chosen[0], body, headers)
        # Serial: an inference pipeline, each container's answer the next one's request.
        data, media, attributes = body, headers.get("Content-Type"), None
        for index, container in enumerate(containers):
            step = dict(headers)
            if media:
                step["Content-Type"] = media
            if index < len(containers) - 1:
                step.pop("Accept", None)
            status, data, media, attributes = self._post(container, data, step)
            if status >= 400:
                return status, data, media, attributes
        return status, data, media, attributes

    def _post(self, container, body: bytes, headers: dict):
        try:
            response = container.pool.request("POST", "/invocations", headers, body)
        except Timeout:
            raise ModelError(
                f'Received server error (0) from {container.hostname} with message "Your invocation timed '
                f"out while waiting for a response from container {container.hostname}. Review the latency "
                'metrics for each container in Amazon CloudWatch, resolve the issue, and try again.".',
            ) from None
        except (Unreachable, OSError):
            raise _Unreachable() from None  # nothing was sent: another instance may take it
        except UpstreamError as error:
            raise ModelError(f'Received server error (0) from {container.hostname} with message "{error}".') from None
        return (
            response.status,
            response.data,
            response.headers.get("content-type"),
            response.headers.get("x-amzn-sagemaker-custom-attributes"),
        )

    def _model_error(self, endpoint, variant, status, data, instance, target_container) -> ModelError:
        text = data.decode("utf-8", "replace")[:_MESSAGE_LIMIT]
        kind = "client" if status < 500 else "server"
        region, account = self.settings.region, self.settings.account_id
        hostname = target_container or instance.containers[0].hostname
        group = f"/aws/sagemaker/Endpoints/{endpoint}"
        return ModelError(
            f'Received {kind} error ({status}) from {hostname} with message "{text}". See '
            f"https://{region}.console.aws.amazon.com/cloudwatch/home?region={region}#logEventViewer:group="
            f"{group} in account {account} for more information.",
            OriginalStatusCode=status,
            OriginalMessage=text,
            LogStreamArn=f"arn:aws:logs:{region}:{account}:log-group:{group}",
        )


class _Unreachable(Exception):
    """The container refused or dropped the connection before answering."""
