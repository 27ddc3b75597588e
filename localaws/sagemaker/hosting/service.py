"""Hosting's parts put together, for the gateway: the SageMaker hosting API, the runtime
(InvokeEndpoint), Application Auto Scaling for variants, and localaws's own views."""
from __future__ import annotations

from localaws import aws_errors, bodies
from localaws.aws_errors import AwsError
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
            params = aws_errors.json_request(environ, bodies.MAX_JSON_BODY)
        except AwsError as error:
            return aws_errors.answer(environ, "json", error)
        if isinstance(params, dict) and self.autoscaling_api.claims(target, params):
            return self.autoscaling_api.handle(environ, target, params)
        return None

    def describe_instances(self, name: str) -> dict | None:
        return self.engine.describe_instances(name)

    def shutdown(self) -> None:
        self.autoscaler.close()
        self.engine.shutdown()
        self.metrics.close()
