"""Hosting's parts put together, for the gateway: the SageMaker hosting API, the runtime
(InvokeEndpoint), Application Auto Scaling for variants, and localaws's own views."""
from __future__ import annotations

import io

from localaws import bodies
from localaws.sagemaker.hosting.autoscaler import AutoScaler
from localaws.sagemaker.hosting.autoscaling_responses import TARGET_PREFIX as AUTOSCALING_TARGET_PREFIX
from localaws.sagemaker.hosting.autoscaling_responses import AutoScalingResponses
from localaws.sagemaker.hosting.lifecycle import HostingEngine
from localaws.sagemaker.hosting.metrics import HostingMetrics
from localaws.sagemaker.hosting.models import HostingBackend
from localaws.sagemaker.hosting.router import Router
from localaws.sagemaker.hosting.runtime import RuntimeResponses, is_invocation

__all__ = ["Hosting", "AUTOSCALING_TARGET_PREFIX", "is_invocation"]


class Hosting:
    def __init__(self, settings, clients, runners, sagemaker):
        """``sagemaker`` is the training backend, whose tags and lock hosting shares."""
        self.router = Router(settings)
        self.metrics = HostingMetrics(settings, clients)
        self.engine = HostingEngine(settings, clients, runners, self.router, self.metrics)
        self.metrics.instance_count = self.engine.instance_count
        self.backend = HostingBackend(settings, sagemaker, self.engine)
        self.autoscaler = AutoScaler(settings, self.backend, self.metrics, clients)
        self.runtime = RuntimeResponses(self.router)
        self.autoscaling_api = AutoScalingResponses(self.autoscaler)

    @staticmethod
    def is_invocation(environ: dict) -> bool:
        return is_invocation(environ)

    def autoscaling(self, environ: dict, target: str):
        """(status, headers, body) for an Application Auto Scaling request about a SageMaker
        variant; None for any other (its body put back for whoever reads it next)."""
        try:  # moto would take NaN, a chunked body or any size: the service's errors, whoever's it is
            body = bodies.read(environ, bodies.MAX_JSON_BODY)
            params = bodies.loads(body or b"{}")
        except (bodies.BodyTooLarge, bodies.MalformedBody, bodies.NotJSON) as error:
            return self.autoscaling_api.unreadable(error)
        if isinstance(params, dict) and self.autoscaling_api.claims(target, params):
            return self.autoscaling_api.handle(target, params)
        environ["wsgi.input"] = io.BytesIO(body)
        environ["CONTENT_LENGTH"] = str(len(body))
        environ["wsgi.input_terminated"] = True
        return None

    def describe_instances(self, name: str) -> dict | None:
        return self.engine.describe_instances(name)

    def shutdown(self) -> None:
        self.autoscaler.close()
        self.engine.shutdown()
        self.metrics.close()
