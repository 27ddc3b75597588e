"""SageMaker hosting's state: models, endpoint configs, endpoints, and their API.

What an endpoint *does* (instances starting, health checks, blue/green updates,
scaling, deletion) lives in ``lifecycle.py``; this module holds the resources,
validates requests as AWS does and answers Create/Describe/List/Update/Delete in
botocore's shapes. Tags live in the training backend's ``tags`` under its lock,
so AddTags/ListTags/DeleteTags work for every SageMaker ARN.
"""

from __future__ import annotations

import copy
import math
import threading
import time
from dataclasses import dataclass, field
from typing import Protocol

from localaws.sagemaker import listing
from localaws.sagemaker.errors import ResourceLimitExceeded, ValidationError
from localaws.state.pickling import runtime

STEADY = ("InService", "Failed")
IN_PROGRESS = ("Creating", "Updating", "SystemUpdating", "RollingBack", "Deleting")


class Autoscaling(Protocol):
    """What hosting asks of Application Auto Scaling (``applicationautoscaling.models.AutoScalingBackend``)."""

    def registered(self, endpoint: str, variant: str) -> bool:
        """Whether the variant is a scalable target."""

    def endpoint_deleted(self, endpoint: str) -> None:
        """The endpoint is gone: its variants' scalable targets go too."""


@dataclass
class Model:
    name: str
    arn: str
    request: dict
    created: float

    @property
    def containers(self) -> list[dict]:
        if self.request.get("PrimaryContainer"):
            return [self.request["PrimaryContainer"]]
        return list(self.request.get("Containers") or [])

    @property
    def execution_mode(self) -> str:
        return (self.request.get("InferenceExecutionConfig") or {}).get("Mode", "Serial")

    def describe(self) -> dict:
        r = self.request
        out = {
            "ModelName": self.name,
            "PrimaryContainer": r.get("PrimaryContainer"),
            "Containers": r.get("Containers"),
            "InferenceExecutionConfig": r.get("InferenceExecutionConfig"),
            "ExecutionRoleArn": r.get("ExecutionRoleArn"),
            "VpcConfig": r.get("VpcConfig"),
            "CreationTime": self.created,
            "ModelArn": self.arn,
            "EnableNetworkIsolation": r.get("EnableNetworkIsolation", False),
        }
        return {key: value for key, value in out.items() if value is not None}

    def summary(self) -> dict:
        return {"ModelName": self.name, "ModelArn": self.arn, "CreationTime": self.created}


@dataclass
class EndpointConfig:
    name: str
    arn: str
    request: dict
    created: float

    @property
    def variants(self) -> list[dict]:
        return self.request["ProductionVariants"]

    def describe(self) -> dict:
        r = self.request
        variants = []
        for variant in r["ProductionVariants"]:
            variant = dict(variant)
            variant.setdefault("InitialVariantWeight", 1.0)
            variants.append(variant)
        out = {
            "EndpointConfigName": self.name,
            "EndpointConfigArn": self.arn,
            "ProductionVariants": variants,
            "DataCaptureConfig": r.get("DataCaptureConfig"),
            "KmsKeyId": r.get("KmsKeyId"),
            "CreationTime": self.created,
            "ExecutionRoleArn": r.get("ExecutionRoleArn"),
            "VpcConfig": r.get("VpcConfig"),
            "EnableNetworkIsolation": r.get("EnableNetworkIsolation"),
        }
        return {key: value for key, value in out.items() if value is not None}

    def summary(self) -> dict:
        return {"EndpointConfigName": self.name, "EndpointConfigArn": self.arn, "CreationTime": self.created}


@dataclass
class VariantState:
    """One production variant of an endpoint (or of an update's new fleet)."""

    name: str
    spec: dict  # the ProductionVariant of the endpoint config
    model: Model  # as it was when deployed: deleting the model later changes nothing
    desired_weight: float
    desired_count: int
    current_weight: float = 0.0
    #: fleet.Instance objects in service (healthy, routed); lifecycle.py owns the list.
    instances: list = runtime(default_factory=list)
    statuses: list[dict] = field(default_factory=list)
    resolved_images: dict[int, str] = field(default_factory=dict)
    deployed_at: float = field(default_factory=time.time)

    @property
    def instance_type(self) -> str:
        return self.spec["InstanceType"]

    @property
    def current_count(self) -> int:
        return len(self.instances)

    def set_status(self, status: str | None, message: str | None = None) -> None:
        """The variant's in-progress status (VariantStatus); None once it is steady again."""
        if status is None:
            self.statuses = []
        elif not self.statuses or self.statuses[-1]["Status"] != status:
            entry = {"Status": status, "StartTime": time.time()}
            if message:
                entry["StatusMessage"] = message
            self.statuses = [entry]

    def deployed_images(self) -> list[dict]:
        return [
            {
                "SpecifiedImage": container["Image"],
                "ResolvedImage": self.resolved_images.get(index, container["Image"]),
                "ResolutionTime": self.deployed_at,
            }
            for index, container in enumerate(self.model.containers)
        ]

    def summary(self, pending: bool = False) -> dict:
        out = {
            "VariantName": self.name,
            "DeployedImages": self.deployed_images(),
            "CurrentWeight": float(self.current_weight),
            "DesiredWeight": float(self.desired_weight),
            "CurrentInstanceCount": self.current_count,
            "DesiredInstanceCount": self.desired_count,
        }
        if pending:
            out["InstanceType"] = self.instance_type
        if self.statuses:
            out["VariantStatus"] = copy.deepcopy(self.statuses)
        if self.spec.get("RoutingConfig"):
            out["RoutingConfig"] = self.spec["RoutingConfig"]
        return out


@dataclass
class Deployment:
    """An UpdateEndpoint in progress: the new (green) fleet and where it stands."""

    config_name: str
    variants: dict[str, VariantState]
    started: float = field(default_factory=time.time)

    def summary(self) -> dict:
        return {
            "EndpointConfigName": self.config_name,
            "ProductionVariants": [variant.summary(pending=True) for variant in self.variants.values()],
            "StartTime": self.started,
        }


@dataclass
class Endpoint:
    name: str
    arn: str
    config_name: str
    created: float
    status: str = "Creating"
    last_modified: float = 0.0
    failure_reason: str | None = None
    variants: dict[str, VariantState] = field(default_factory=dict)
    pending: Deployment | None = None
    #: CreateEndpoint's DeploymentConfig, or the last update's (RetainDeploymentConfig).
    deployment_config: dict | None = None
    last_deployment_config: dict | None = None
    data_capture: dict | None = None
    #: Set by DeleteEndpoint: whatever the endpoint is doing stops.
    cancelled: threading.Event = runtime(default_factory=threading.Event)

    def set_status(self, status: str, failure_reason: str | None = None, keep_reason: bool = False) -> None:
        self.status = status
        if failure_reason is not None or not keep_reason:
            self.failure_reason = failure_reason
        self.last_modified = time.time()

    def describe(self) -> dict:
        out = {
            "EndpointName": self.name,
            "EndpointArn": self.arn,
            "EndpointConfigName": self.config_name,
            "ProductionVariants": [variant.summary() for variant in self.variants.values()] or None,
            "EndpointStatus": self.status,
            "FailureReason": self.failure_reason,
            "CreationTime": self.created,
            "LastModifiedTime": self.last_modified or self.created,
            "LastDeploymentConfig": self.last_deployment_config,
            "PendingDeploymentSummary": self.pending.summary() if self.pending else None,
        }
        if self.data_capture:
            out["DataCaptureConfig"] = {
                "EnableCapture": bool(self.data_capture.get("EnableCapture", True)),
                "CaptureStatus": "Started" if self.data_capture.get("EnableCapture", True) else "Stopped",
                "CurrentSamplingPercentage": self.data_capture["InitialSamplingPercentage"],
                "DestinationS3Uri": self.data_capture["DestinationS3Uri"],
                "KmsKeyId": self.data_capture.get("KmsKeyId", ""),
            }
        return {key: value for key, value in out.items() if value is not None}

    def summary(self) -> dict:
        return {
            "EndpointName": self.name,
            "EndpointArn": self.arn,
            "CreationTime": self.created,
            "LastModifiedTime": self.last_modified or self.created,
            "EndpointStatus": self.status,
        }


class HostingBackend:
    """The account's models, endpoint configs and endpoints in one region."""

    operations = (
        "CreateModel",
        "DescribeModel",
        "DeleteModel",
        "ListModels",
        "CreateEndpointConfig",
        "DescribeEndpointConfig",
        "DeleteEndpointConfig",
        "ListEndpointConfigs",
        "CreateEndpoint",
        "DescribeEndpoint",
        "UpdateEndpoint",
        "UpdateEndpointWeightsAndCapacities",
        "DeleteEndpoint",
        "ListEndpoints",
    )

    def __init__(self, settings, sagemaker, engine, autoscaling: Autoscaling):
        """``sagemaker`` is the training backend (ARNs, tags and the lock are shared with it);
        ``engine`` runs endpoints (``lifecycle.HostingEngine``, under the same lock); ``autoscaling``
        is told of deleted endpoints."""
        self.settings = settings
        self.sagemaker = sagemaker
        self.lock: threading.RLock = sagemaker.lock
        self.tags: dict[str, list[dict]] = sagemaker.tags
        self.engine = engine
        self.models: dict[str, Model] = {}
        self.endpoint_configs: dict[str, EndpointConfig] = {}
        self.endpoints: dict[str, Endpoint] = {}
        self.autoscaling = autoscaling

    def arn(self, kind: str, name: str) -> str:
        return self.sagemaker.arn(kind, name)

    # --- models --------------------------------------------------------------------------

    def create_model(self, params: dict) -> dict:
        _check_model_request(params)
        name = params["ModelName"]
        arn = self.arn("model", name)
        with self.lock:
            if name in self.models:
                raise ValidationError(f'Cannot create already existing model "{arn}".')
            self.models[name] = Model(name, arn, params, time.time())
            self.tags[arn] = list(params.get("Tags", []))
        return {"ModelArn": arn}

    def _model(self, name: str) -> Model:
        model = self.models.get(name)
        if model is None:
            raise ValidationError(f'Could not find model "{self.arn("model", name)}".')
        return model

    def describe_model(self, params: dict) -> dict:
        with self.lock:
            return self._model(params["ModelName"]).describe()

    def delete_model(self, params: dict) -> dict:
        with self.lock:
            model = self._model(params["ModelName"])
            del self.models[model.name]
            self.tags.pop(model.arn, None)
        return {}

    def list_models(self, params: dict) -> dict:
        with self.lock:
            items = [model.summary() for model in self.models.values()]
        page, token = listing.page(
            items,
            params,
            name_key="ModelName",
            status_key=None,
            sort_keys={"Name": "ModelName", "CreationTime": "CreationTime"},
            default_order="Descending",
        )
        return {"Models": page, **({"NextToken": token} if token else {})}

    # --- endpoint configs ----------------------------------------------------------------

    def create_endpoint_config(self, params: dict) -> dict:
        name = params["EndpointConfigName"]
        arn = self.arn("endpoint-config", name)
        with self.lock:
            if name in self.endpoint_configs:
                raise ValidationError(f'Cannot create already existing endpoint configuration "{arn}".')
            _check_endpoint_config_request(params, self._model)
            self.endpoint_configs[name] = EndpointConfig(name, arn, params, time.time())
            self.tags[arn] = list(params.get("Tags", []))
        return {"EndpointConfigArn": arn}

    def _endpoint_config(self, name: str) -> EndpointConfig:
        config = self.endpoint_configs.get(name)
        if config is None:
            raise ValidationError(f'Could not find endpoint configuration "{self.arn("endpoint-config", name)}".')
        return config

    def describe_endpoint_config(self, params: dict) -> dict:
        with self.lock:
            return self._endpoint_config(params["EndpointConfigName"]).describe()

    def delete_endpoint_config(self, params: dict) -> dict:
        with self.lock:
            config = self._endpoint_config(params["EndpointConfigName"])
            del self.endpoint_configs[config.name]
            self.tags.pop(config.arn, None)
        return {}

    def list_endpoint_configs(self, params: dict) -> dict:
        with self.lock:
            items = [config.summary() for config in self.endpoint_configs.values()]
        page, token = listing.page(
            items,
            params,
            name_key="EndpointConfigName",
            status_key=None,
            sort_keys={"Name": "EndpointConfigName", "CreationTime": "CreationTime"},
            default_order="Descending",
        )
        return {"EndpointConfigs": page, **({"NextToken": token} if token else {})}

    # --- endpoints -----------------------------------------------------------------------

    def _endpoint(self, name: str) -> Endpoint:
        endpoint = self.endpoints.get(name)
        if endpoint is None:
            raise ValidationError(f'Could not find endpoint "{self.arn("endpoint", name)}".')
        return endpoint

    def get_endpoint(self, name: str) -> Endpoint | None:
        with self.lock:
            return self.endpoints.get(name)

    def _variant_states(self, config: EndpointConfig) -> dict[str, VariantState]:
        """Fresh variant states for a config, each with a snapshot of its model."""
        states = {}
        for spec in config.variants:
            model = self._model(spec["ModelName"])
            states[spec["VariantName"]] = VariantState(
                name=spec["VariantName"],
                spec=copy.deepcopy(spec),
                model=copy.deepcopy(model),
                desired_weight=float(spec.get("InitialVariantWeight", 1.0)),
                desired_count=int(spec["InitialInstanceCount"]),
            )
        return states

    def _check_endpoint_quota(self, wanted: dict[str, int]) -> None:
        """ResourceLimitExceeded when the account's endpoint instances of a type would exceed the quota.

        A blue/green update needs the new fleet beside the old one: both count."""
        quota = self.settings.endpoint_instance_quota
        in_use: dict[str, int] = {}
        for endpoint in self.endpoints.values():
            fleets = list(endpoint.variants.values())
            if endpoint.pending:
                fleets += list(endpoint.pending.variants.values())
            for variant in fleets:
                count = max(variant.desired_count, variant.current_count)
                in_use[variant.instance_type] = in_use.get(variant.instance_type, 0) + count
        for instance_type, count in wanted.items():
            used = in_use.get(instance_type, 0)
            if count > 0 and used + count > quota:
                raise ResourceLimitExceeded(
                    f"The account-level service limit '{instance_type} for endpoint usage' is {quota} Instances, "
                    f"with current utilization of {used} Instances and a request delta of {count} Instances. "
                    "Please use AWS Service Quotas to request an increase for this quota. If AWS Service Quotas "
                    "is not available, contact AWS support to request an increase for this quota."
                )

    def create_endpoint(self, params: dict) -> dict:
        name = params["EndpointName"]
        arn = self.arn("endpoint", name)
        with self.lock:
            if name in self.endpoints:
                raise ValidationError(f'Cannot create already existing endpoint "{arn}".')
            config = self._endpoint_config(params["EndpointConfigName"])
            if params.get("DeploymentConfig"):
                _check_deployment_config(params["DeploymentConfig"])
            variants = self._variant_states(config)
            self._check_endpoint_quota(_instances_by_type(variants))
            now = time.time()
            endpoint = Endpoint(
                name=name,
                arn=arn,
                config_name=config.name,
                created=now,
                last_modified=now,
                variants=variants,
                deployment_config=params.get("DeploymentConfig"),
                data_capture=config.request.get("DataCaptureConfig"),
            )
            for variant in variants.values():
                variant.set_status("Creating", "Launching instances and starting the model containers")
            self.endpoints[name] = endpoint
            self.tags[arn] = list(params.get("Tags", []))
            self.engine.create(endpoint)
        return {"EndpointArn": arn}

    def describe_endpoint(self, params: dict) -> dict:
        with self.lock:
            return self._endpoint(params["EndpointName"]).describe()

    def list_endpoints(self, params: dict) -> dict:
        with self.lock:
            items = [endpoint.summary() for endpoint in self.endpoints.values()]
        page, token = listing.page(
            items,
            params,
            name_key="EndpointName",
            status_key="EndpointStatus",
            sort_keys={"Name": "EndpointName", "CreationTime": "CreationTime", "Status": "EndpointStatus"},
            default_order="Descending",
        )
        return {"Endpoints": page, **({"NextToken": token} if token else {})}

    def _check_updatable(self, endpoint: Endpoint) -> None:
        if endpoint.status == "Failed":
            raise ValidationError(f'Cannot update failed endpoint "{endpoint.arn}".')
        if endpoint.status != "InService":
            raise ValidationError(f'Cannot update in-progress endpoint "{endpoint.arn}".')

    def update_endpoint(self, params: dict) -> dict:
        with self.lock:
            endpoint = self._endpoint(params["EndpointName"])
            self._check_updatable(endpoint)
            config = self._endpoint_config(params["EndpointConfigName"])
            deployment = params.get("DeploymentConfig")
            if deployment:
                _check_deployment_config(deployment)
            elif params.get("RetainDeploymentConfig"):
                deployment = endpoint.deployment_config
            green = self._variant_states(config)
            if params.get("RetainAllVariantProperties"):
                excluded = {item["VariantPropertyType"] for item in params.get("ExcludeRetainedVariantProperties", [])}
                for name, variant in green.items():
                    old = endpoint.variants.get(name)
                    if old is None:
                        continue
                    if "DesiredInstanceCount" not in excluded:
                        variant.desired_count = old.desired_count
                    if "DesiredWeight" not in excluded:
                        variant.desired_weight = old.desired_weight
            for name, variant in green.items():
                old = endpoint.variants.get(name)
                changes_type = old is not None and old.instance_type != variant.instance_type
                if changes_type and self.autoscaling.registered(endpoint.name, name):
                    raise ValidationError(
                        f'The variant {name} of endpoint "{endpoint.arn}" is registered with Application Auto '
                        "Scaling and the update changes its instance type: deregister the scalable target "
                        "(DeregisterScalableTarget) first, then update the endpoint and register it again."
                    )
            self._check_endpoint_quota(_instances_by_type(green))
            endpoint.pending = Deployment(config.name, green)
            for variant in green.values():
                variant.set_status("Creating", "Launching the new fleet")
            endpoint.set_status("Updating", keep_reason=False)
            endpoint.last_deployment_config = deployment
            if deployment is not None and (params.get("DeploymentConfig") or params.get("RetainDeploymentConfig")):
                endpoint.deployment_config = deployment
            if config.request.get("DataCaptureConfig") is not None:
                endpoint.data_capture = config.request.get("DataCaptureConfig")
            self.engine.update(endpoint, deployment)
        return {"EndpointArn": endpoint.arn}

    def update_endpoint_weights_and_capacities(self, params: dict) -> dict:
        with self.lock:
            endpoint = self._endpoint(params["EndpointName"])
            self._check_updatable(endpoint)
            desired = params["DesiredWeightsAndCapacities"]
            names = [entry["VariantName"] for entry in desired]
            missing = [name for name in names if name not in endpoint.variants]
            if missing:
                raise ValidationError(
                    f'The variant(s) "[{", ".join(missing)}]" is/are not present in the endpoint "{endpoint.arn}".'
                )
            if len(set(names)) != len(names):
                raise ValidationError("Each variant may appear only once in DesiredWeightsAndCapacities.")
            for entry in desired:
                if entry.get("DesiredWeight") is None and entry.get("DesiredInstanceCount") is None:
                    raise ValidationError(
                        f"Either DesiredWeight or DesiredInstanceCount must be specified for variant "
                        f"{entry['VariantName']}."
                    )
            grow: dict[str, int] = {}
            for entry in desired:
                variant = endpoint.variants[entry["VariantName"]]
                if entry.get("DesiredInstanceCount") is not None:
                    delta = entry["DesiredInstanceCount"] - max(variant.current_count, variant.desired_count)
                    if delta > 0:
                        grow[variant.instance_type] = grow.get(variant.instance_type, 0) + delta
            self._check_endpoint_quota(grow)
            weights, counts = {}, {}
            for entry in desired:
                variant = endpoint.variants[entry["VariantName"]]
                if entry.get("DesiredWeight") is not None:
                    variant.desired_weight = float(entry["DesiredWeight"])
                    weights[variant.name] = variant.desired_weight
                if entry.get("DesiredInstanceCount") is not None:
                    variant.desired_count = int(entry["DesiredInstanceCount"])
                    counts[variant.name] = variant.desired_count
                variant.set_status("Updating", "Updating the variant's weight and capacity")
            endpoint.set_status("Updating")
            self.engine.change_capacity(endpoint, weights, counts)
        return {"EndpointArn": endpoint.arn}

    def delete_endpoint(self, params: dict) -> dict:
        with self.lock:
            endpoint = self._endpoint(params["EndpointName"])
            if endpoint.status != "Deleting":
                endpoint.set_status("Deleting", keep_reason=True)
                endpoint.cancelled.set()
                self.engine.delete(endpoint, self.endpoint_deleted)
        return {}

    def endpoint_deleted(self, endpoint: Endpoint) -> None:
        """Called by the engine once every instance of a deleted endpoint is gone."""
        self.autoscaling.endpoint_deleted(endpoint.name)  # first: the endpoint is gone once all of it is
        with self.lock:
            if self.endpoints.get(endpoint.name) is endpoint:
                del self.endpoints[endpoint.name]
                self.tags.pop(endpoint.arn, None)

    def shutdown(self) -> None:
        self.engine.shutdown()

    # --- across restarts (localaws/state) ------------------------------------------------------

    def state(self) -> dict:
        return {"models": self.models, "endpoint_configs": self.endpoint_configs, "endpoints": self.endpoints}

    def restore(self, state: dict) -> dict[str, str]:
        """Put a snapshot back and have the engine carry each endpoint on (``HostingEngine.restart``);
        each endpoint's status as it was."""
        with self.lock:
            self.models.update(state.get("models", {}))
            self.endpoint_configs.update(state.get("endpoint_configs", {}))
            endpoints = state.get("endpoints", {})
            self.endpoints.update(endpoints)
            was = {name: endpoint.status for name, endpoint in endpoints.items()}
            for endpoint in endpoints.values():
                self.engine.restart(endpoint, self.endpoint_deleted)
        return was


def _instances_by_type(variants: dict[str, VariantState]) -> dict[str, int]:
    out: dict[str, int] = {}
    for variant in variants.values():
        out[variant.instance_type] = out.get(variant.instance_type, 0) + variant.desired_count
    return out


def _check_model_request(params: dict) -> None:
    """Rules across members that botocore's model cannot express."""
    primary, containers = params.get("PrimaryContainer"), params.get("Containers")
    if primary and containers:
        raise ValidationError("Only one of PrimaryContainer and Containers may be specified.")
    if not primary and not containers:
        raise ValidationError("Either PrimaryContainer or Containers must be specified.")
    containers = [primary] if primary else containers or []
    mode = (params.get("InferenceExecutionConfig") or {}).get("Mode")
    if mode and len(containers) < 2:
        raise ValidationError("InferenceExecutionConfig is only supported for models with multiple containers.")
    hostnames = [c.get("ContainerHostname") for c in containers if c.get("ContainerHostname")]
    if len(hostnames) != len(set(hostnames)):
        raise ValidationError("ContainerHostname must be unique within a model.")
    if mode == "Direct" and len(hostnames) != len(containers):
        raise ValidationError("ContainerHostname must be specified for every container in Direct invocation mode.")
    for container in containers:
        if not container.get("Image"):
            raise ValidationError(
                "localaws serves your own images only: every container needs an Image "
                "(ModelPackageName is not supported)."
            )
        if container.get("Mode") == "MultiModel":
            raise ValidationError("localaws does not support multi-model endpoints (Mode MultiModel).")
        url = container.get("ModelDataUrl")
        source = (container.get("ModelDataSource") or {}).get("S3DataSource")
        if url and source:
            raise ValidationError("Only one of ModelDataUrl and ModelDataSource may be specified.")
        if url and not url.startswith("s3://"):
            raise ValidationError(f"ModelDataUrl {url} must be an S3 URI (s3://bucket/key.tar.gz).")
        if source and not source["S3Uri"].startswith("s3://"):
            raise ValidationError(f"S3Uri {source['S3Uri']} must be an S3 URI.")
        for key in container.get("Environment") or {}:
            if not key or not (key[0].isalpha() or key[0] == "_") or not all(c.isalnum() or c == "_" for c in key):
                raise ValidationError(
                    f"1 validation error detected: Value '{key}' at 'environment' failed to satisfy constraint: "
                    "Map keys must satisfy constraint: [Member must satisfy regular expression pattern: "
                    "[a-zA-Z_][a-zA-Z0-9_]*]"
                )


def _check_endpoint_config_request(params: dict, find_model) -> None:
    variants = params["ProductionVariants"]
    names = [variant["VariantName"] for variant in variants]
    if len(names) != len(set(names)):
        raise ValidationError("Variant names must be unique within an endpoint configuration.")
    if params.get("ShadowProductionVariants"):
        raise ValidationError("localaws does not support shadow variants (ShadowProductionVariants).")
    if params.get("AsyncInferenceConfig"):
        raise ValidationError("localaws serves real-time endpoints only: AsyncInferenceConfig is not supported.")
    for variant in variants:
        if variant.get("ServerlessConfig"):
            raise ValidationError("localaws serves instance-based variants only: ServerlessConfig is not supported.")
        if not variant.get("ModelName"):
            raise ValidationError(f"ModelName must be specified for variant {variant['VariantName']}.")
        find_model(variant["ModelName"])
        if not variant.get("InstanceType"):
            raise ValidationError(f"InstanceType must be specified for variant {variant['VariantName']}.")
        if variant.get("InitialInstanceCount") is None:
            raise ValidationError(f"InitialInstanceCount must be specified for variant {variant['VariantName']}.")
        weight = variant.get("InitialVariantWeight", 1.0)
        if not math.isfinite(weight):
            raise ValidationError(f"InitialVariantWeight of variant {variant['VariantName']} must be a number.")
    if sum(variant.get("InitialVariantWeight", 1.0) for variant in variants) <= 0:
        raise ValidationError("The sum of the variants' InitialVariantWeight must be greater than 0.")


def _check_deployment_config(config: dict) -> None:
    blue_green = config.get("BlueGreenUpdatePolicy")
    rolling = config.get("RollingUpdatePolicy")
    if blue_green and rolling:
        raise ValidationError("Only one of BlueGreenUpdatePolicy and RollingUpdatePolicy may be specified.")
    if blue_green:
        routing = blue_green["TrafficRoutingConfiguration"]
        kind = routing["Type"]
        if kind == "CANARY" and not routing.get("CanarySize"):
            raise ValidationError("CanarySize must be specified for CANARY traffic routing.")
        if kind == "LINEAR" and not routing.get("LinearStepSize"):
            raise ValidationError("LinearStepSize must be specified for LINEAR traffic routing.")
        for key in ("CanarySize", "LinearStepSize"):
            size = routing.get(key)
            if size and size["Type"] == "CAPACITY_PERCENT" and not 0 < size["Value"] <= 100:
                raise ValidationError(f"{key} of type CAPACITY_PERCENT must be between 1 and 100.")
    alarms = (config.get("AutoRollbackConfiguration") or {}).get("Alarms") or []
    for alarm in alarms:
        if not alarm.get("AlarmName"):
            raise ValidationError("Every alarm of AutoRollbackConfiguration needs an AlarmName.")
