"""Application Auto Scaling's state for SageMaker variants: scalable targets, their policies and the
scaling activities, and the API over them (ServiceNamespace ``sagemaker``; every other namespace is
moto's, see ``responses.py``).

Scalable targets are variants (``ResourceId`` ``endpoint/<name>/variant/<variant>``, dimension
``sagemaker:variant:DesiredInstanceCount``). A target tracking policy gets the two CloudWatch alarms AWS
creates for it, and ``scaling.py`` carries it out every minute; step scaling policies are stored and
described, not executed.

SageMaker hosting is reached only through ``ScalableVariants``, given at construction; hosting tells
this service of a deleted endpoint (``endpoint_deleted``) and asks whether a variant is registered.
"""

from __future__ import annotations

import collections
import re
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from localaws.aws_errors import AwsError, ValidationError
from localaws.state.pickling import runtime

SERVICE = "application-autoscaling"
NAMESPACE_SAGEMAKER = "sagemaker"
DIMENSION = "sagemaker:variant:DesiredInstanceCount"
PREDEFINED = "SageMakerVariantInvocationsPerInstance"
RESOURCE = re.compile(r"^endpoint/([a-zA-Z0-9](?:-*[a-zA-Z0-9])*)/variant/([a-zA-Z0-9](?:-*[a-zA-Z0-9])*)$")
HIGH_PERIODS, LOW_PERIODS, LOW_FRACTION = 3, 15, 0.9
DEFAULT_COOLDOWN = 300


class ScalableVariants(Protocol):
    """What Application Auto Scaling needs of SageMaker hosting (the hosting engine provides it)."""

    def capacity(self, endpoint: str, variant: str) -> tuple[int, int] | None:
        """(current, desired) instance counts of a variant; None when it does not exist (or is being deleted)."""

    def set_desired_count(
        self, endpoint: str, variant: str, count: int, done: Callable[[bool, str | None], None]
    ) -> str | None:
        """Start changing a variant's instance count (``done(ok, message)`` when it ends); None when it
        started, else why it cannot be made now."""

    def invocation_totals(self, endpoint: str, variant: str) -> dict | None:
        """What a variant served since it first did (hosting's ``METRIC_NAMES``, running totals); None
        when it has served nothing."""


class TargetAlarms(Protocol):
    """A target tracking policy's CloudWatch alarms (``scaling.TargetTrackingAlarms``)."""

    def create(self, target: Target, policy: Policy) -> list[dict]: ...

    def delete(self, policy: Policy) -> None: ...


class AutoScalingError(AwsError):
    """An error only Application Auto Scaling answers (its ValidationException is every service's:
    ``aws_errors.ValidationError``, for its own checks and its model's)."""


class ObjectNotFoundException(AutoScalingError):
    code = "ObjectNotFoundException"


class InvalidNextTokenException(AutoScalingError):
    code = "InvalidNextTokenException"


class ResourceNotFoundException(AutoScalingError):
    code = "ResourceNotFoundException"


@dataclass
class Policy:
    name: str
    arn: str
    resource_id: str
    policy_type: str
    configuration: dict
    created: float
    alarms: list[dict] = field(default_factory=list)
    #: The metric's last minutes, as the alarms evaluate them (after a restart they start again).
    history: collections.deque = runtime(default_factory=lambda: collections.deque(maxlen=LOW_PERIODS))
    #: The states last sent to the alarms (the scaling loop's, outside the lock): sent again after a restart.
    alarm_states: dict[str, str] = runtime(default_factory=dict)

    @property
    def target_value(self) -> float:
        return float(self.configuration["TargetValue"])

    def cooldown(self, key: str) -> float:
        value = self.configuration.get(key)
        return float(DEFAULT_COOLDOWN if value is None else value)

    def describe(self) -> dict:
        out = {
            "PolicyARN": self.arn,
            "PolicyName": self.name,
            "ServiceNamespace": NAMESPACE_SAGEMAKER,
            "ResourceId": self.resource_id,
            "ScalableDimension": DIMENSION,
            "PolicyType": self.policy_type,
            "CreationTime": self.created,
            "Alarms": list(self.alarms),
        }
        key = (
            "TargetTrackingScalingPolicyConfiguration"
            if self.policy_type == "TargetTrackingScaling"
            else "StepScalingPolicyConfiguration"
        )
        out[key] = self.configuration
        return out


@dataclass
class Target:
    resource_id: str
    endpoint: str
    variant: str
    min_capacity: int
    max_capacity: int
    role_arn: str
    arn: str
    created: float
    suspended: dict = field(default_factory=dict)
    tags: dict = field(default_factory=dict)
    policies: dict[str, Policy] = field(default_factory=dict)
    # What the scaling loop of this process keeps: none of it means anything in the next one.
    last_totals: dict | None = runtime(default=None)
    scaling: bool = runtime(default=False)  # an activity is in progress
    out_until: float = runtime(default=0.0)  # cooldowns, on the monotonic clock
    in_until: float = runtime(default=0.0)

    def describe(self) -> dict:
        return {
            "ServiceNamespace": NAMESPACE_SAGEMAKER,
            "ResourceId": self.resource_id,
            "ScalableDimension": DIMENSION,
            "MinCapacity": self.min_capacity,
            "MaxCapacity": self.max_capacity,
            "RoleARN": self.role_arn,
            "CreationTime": self.created,
            "SuspendedState": {
                "DynamicScalingInSuspended": bool(self.suspended.get("DynamicScalingInSuspended")),
                "DynamicScalingOutSuspended": bool(self.suspended.get("DynamicScalingOutSuspended")),
                "ScheduledScalingSuspended": bool(self.suspended.get("ScheduledScalingSuspended")),
            },
            "ScalableTargetARN": self.arn,
        }


class AutoScalingBackend:
    """Application Auto Scaling's API for ServiceNamespace ``sagemaker``."""

    operations = (
        "RegisterScalableTarget",
        "DescribeScalableTargets",
        "DeregisterScalableTarget",
        "PutScalingPolicy",
        "DescribeScalingPolicies",
        "DeleteScalingPolicy",
        "DescribeScalingActivities",
        "TagResource",
        "UntagResource",
        "ListTagsForResource",
    )

    def __init__(self, settings, variants: ScalableVariants, alarms: TargetAlarms):
        self.settings = settings
        self.variants = variants
        self.alarms = alarms
        self.lock = threading.RLock()
        self.targets: dict[str, Target] = {}
        self.activities: list[dict] = []

    def registered(self, endpoint: str, variant: str) -> bool:
        """Whether a variant is a scalable target (SageMaker refuses to change its instance type)."""
        return f"endpoint/{endpoint}/variant/{variant}" in self.targets

    def owns_arn(self, arn: str) -> bool:
        with self.lock:
            return any(target.arn == arn for target in self.targets.values())

    # --- the API -------------------------------------------------------------------------

    def _resource(self, params: dict) -> tuple[str, str, str]:
        resource_id, dimension = params["ResourceId"], params["ScalableDimension"]
        match = RESOURCE.match(resource_id)
        if dimension != DIMENSION or not match:
            raise ValidationError("Unsupported service namespace, resource type or scalable dimension")
        return resource_id, match.group(1), match.group(2)

    def _target(self, params: dict) -> Target:
        resource_id, _, _ = self._resource(params)
        target = self.targets.get(resource_id)
        if target is None:
            raise ObjectNotFoundException(
                f"No scalable target registered for service namespace: {NAMESPACE_SAGEMAKER}, resource ID: "
                f"{resource_id}, scalable dimension: {DIMENSION}"
            )
        return target

    def register_scalable_target(self, params: dict) -> dict:
        resource_id, endpoint, variant = self._resource(params)
        if self.variants.capacity(endpoint, variant) is None:
            raise ValidationError(f"SageMaker variant doesn't exist: {resource_id}")
        low, high = params.get("MinCapacity"), params.get("MaxCapacity")
        with self.lock:
            target = self.targets.get(resource_id)
            if target is not None:
                low = target.min_capacity if low is None else low
                high = target.max_capacity if high is None else high
            if low is None or high is None:  # a new target names both
                raise ValidationError("MinCapacity and MaxCapacity are required when registering a new scalable target")
            if low < 1:
                raise ValidationError(f"MinCapacity {low} is invalid: a SageMaker variant needs at least 1 instance")
            if low > high:
                raise ValidationError(f"Minimum capacity {low} cannot be greater than maximum capacity {high}")
            if target is None:
                if params.get("Tags") is not None and resource_id in self.targets:
                    raise ValidationError(
                        "The scalable target that you tried to tag already exists. To update tags on an existing "
                        "scalable target, use the TagResource API."
                    )
                target = Target(
                    resource_id=resource_id,
                    endpoint=endpoint,
                    variant=variant,
                    min_capacity=low,
                    max_capacity=high,
                    role_arn=params.get("RoleARN")
                    or (
                        f"arn:aws:iam::{self.settings.account_id}:role/aws-service-role/sagemaker.application-"
                        "autoscaling.amazonaws.com/AWSServiceRoleForApplicationAutoScaling_SageMakerEndpoint"
                    ),
                    arn=(
                        f"arn:aws:application-autoscaling:{self.settings.region}:{self.settings.account_id}:"
                        f"scalable-target/{uuid.uuid4().hex}{uuid.uuid4().hex[:4]}"
                    ),
                    created=time.time(),
                    suspended=dict(params.get("SuspendedState") or {}),
                    tags=dict(params.get("Tags") or {}),
                )
                self.targets[resource_id] = target
            else:
                if params.get("Tags") is not None:
                    raise ValidationError(
                        "The scalable target that you tried to tag already exists. To update tags on an existing "
                        "scalable target, use the TagResource API."
                    )
                target.min_capacity, target.max_capacity = low, high
                if params.get("SuspendedState") is not None:
                    target.suspended.update(params["SuspendedState"])
        return {"ScalableTargetARN": target.arn}

    def describe_scalable_targets(self, params: dict) -> dict:
        with self.lock:
            items = [
                target.describe()
                for target in self.targets.values()
                if (not params.get("ResourceIds") or target.resource_id in params["ResourceIds"])
                and params.get("ScalableDimension") in (None, DIMENSION)
            ]
        return _page("ScalableTargets", items, params)

    def deregister_scalable_target(self, params: dict) -> dict:
        resource_id, _, _ = self._resource(params)
        with self.lock:
            target = self.targets.pop(resource_id, None)
            if target is None:
                raise ObjectNotFoundException(
                    f"No scalable target found for service namespace: {NAMESPACE_SAGEMAKER}, resource ID: "
                    f"{resource_id}, scalable dimension: {DIMENSION}"
                )
            policies = list(target.policies.values())
        for policy in policies:
            self.alarms.delete(policy)
        return {}

    def put_scaling_policy(self, params: dict) -> dict:
        policy_type = params.get("PolicyType") or "StepScaling"
        with self.lock:
            target = self._target(params)
            existing = target.policies.get(params["PolicyName"])
        if policy_type == "PredictiveScaling":
            raise ValidationError(
                "Predictive scaling is not supported for scalable dimension sagemaker:variant:DesiredInstanceCount"
            )
        if policy_type == "TargetTrackingScaling":
            configuration = params.get("TargetTrackingScalingPolicyConfiguration")
            if not configuration:
                raise ValidationError(
                    "TargetTrackingScalingPolicyConfiguration is required for a TargetTrackingScaling policy"
                )
            self._check_target_tracking(configuration)
        else:
            configuration = params.get("StepScalingPolicyConfiguration")
            if not configuration:
                raise ValidationError("StepScalingPolicyConfiguration is required for a StepScaling policy")
        policy = Policy(
            name=params["PolicyName"],
            arn=existing.arn
            if existing
            else (
                f"arn:aws:autoscaling:{self.settings.region}:{self.settings.account_id}:scalingPolicy:"
                f"{uuid.uuid4()}:resource/{NAMESPACE_SAGEMAKER}/{target.resource_id}:policyName/{params['PolicyName']}"
            ),
            resource_id=target.resource_id,
            policy_type=policy_type,
            configuration=configuration,
            created=existing.created if existing else time.time(),
        )
        if existing:
            self.alarms.delete(existing)
        if policy_type == "TargetTrackingScaling":
            policy.alarms = self.alarms.create(target, policy)
        with self.lock:
            target.policies[policy.name] = policy
        out: dict[str, object] = {"PolicyARN": policy.arn}
        if policy.alarms:
            out["Alarms"] = list(policy.alarms)
        return out

    def _check_target_tracking(self, configuration: dict) -> None:
        predefined = configuration.get("PredefinedMetricSpecification")
        customized = configuration.get("CustomizedMetricSpecification")
        if bool(predefined) == bool(customized):
            raise ValidationError(
                "Exactly one of PredefinedMetricSpecification and CustomizedMetricSpecification must be specified"
            )
        if predefined and predefined["PredefinedMetricType"] != PREDEFINED:
            raise ValidationError(
                f"Scalable dimension {DIMENSION} only supports the following predefined metric types: {PREDEFINED}"
            )
        if customized:
            if customized.get("Metrics"):
                raise ValidationError(
                    "localaws supports customized metrics given by MetricName, Namespace, Dimensions and "
                    "Statistic; metric math (Metrics) is not supported"
                )
            for key in ("MetricName", "Namespace", "Statistic"):
                if not customized.get(key):
                    raise ValidationError(f"CustomizedMetricSpecification.{key} is required")
        if configuration["TargetValue"] <= 0:
            raise ValidationError("TargetValue must be greater than 0")

    def describe_scaling_policies(self, params: dict) -> dict:
        with self.lock:
            items = [
                policy.describe()
                for target in self.targets.values()
                for policy in target.policies.values()
                if (not params.get("ResourceId") or target.resource_id == params["ResourceId"])
                and (not params.get("PolicyNames") or policy.name in params["PolicyNames"])
                and params.get("ScalableDimension") in (None, DIMENSION)
            ]
        return _page("ScalingPolicies", items, params)

    def delete_scaling_policy(self, params: dict) -> dict:
        resource_id, _, _ = self._resource(params)
        with self.lock:
            target = self.targets.get(resource_id)
            policy = target.policies.pop(params["PolicyName"], None) if target else None
        if policy is None:
            raise ObjectNotFoundException(
                f"No scaling policy found for service namespace: {NAMESPACE_SAGEMAKER}, resource ID: {resource_id}, "
                f"scalable dimension: {DIMENSION}, policy name: {params['PolicyName']}"
            )
        self.alarms.delete(policy)
        return {}

    def describe_scaling_activities(self, params: dict) -> dict:
        with self.lock:
            items = [
                {key: value for key, value in activity.items() if value is not None}
                for activity in reversed(self.activities)
                if (not params.get("ResourceId") or activity["ResourceId"] == params["ResourceId"])
                and params.get("ScalableDimension") in (None, DIMENSION)
            ]
        return _page("ScalingActivities", items, params)

    def _by_arn(self, arn: str) -> Target:
        for target in self.targets.values():
            if target.arn == arn:
                return target
        raise ResourceNotFoundException(f"Resource {arn} not found.")

    def tag_resource(self, params: dict) -> dict:
        with self.lock:
            self._by_arn(params["ResourceARN"]).tags.update(params["Tags"])
        return {}

    def untag_resource(self, params: dict) -> dict:
        with self.lock:
            target = self._by_arn(params["ResourceARN"])
            for key in params["TagKeys"]:
                target.tags.pop(key, None)
        return {}

    def list_tags_for_resource(self, params: dict) -> dict:
        with self.lock:
            return {"Tags": dict(self._by_arn(params["ResourceARN"]).tags)}

    def endpoint_deleted(self, endpoint: str) -> None:
        """DeleteEndpoint deregisters the endpoint's variants, as Application Auto Scaling does."""
        with self.lock:
            gone = [t for t in self.targets.values() if t.endpoint == endpoint]
            for target in gone:
                del self.targets[target.resource_id]
        for target in gone:
            for policy in target.policies.values():
                self.alarms.delete(policy)

    # --- across restarts (localaws/state) ------------------------------------------------------

    def state(self) -> dict:
        return {"targets": self.targets, "activities": self.activities}

    def restore(self, state: dict, stopped_at: float) -> int:
        """Put a snapshot back (after hosting's): targets of endpoints that still exist, with their
        policies (which scale again from the next minute on), and the activities; one that was under
        way when localaws stopped ends Failed. How many targets came back."""
        with self.lock:
            for resource_id, target in state.get("targets", {}).items():
                if self.variants.capacity(target.endpoint, target.variant) is not None:
                    self.targets[resource_id] = target
            for activity in state.get("activities", []):
                if activity.get("StatusCode") == "InProgress":
                    activity["StatusCode"] = "Failed"
                    activity["EndTime"] = stopped_at
                    activity["StatusMessage"] = (
                        "Failed to set the desired instance count: localaws stopped while the activity was in progress."
                    )
                self.activities.append(activity)
            return len(self.targets)


def _page(member: str, items: list, params: dict) -> dict:
    """A Describe* answer: ``member`` holds a page of ``items`` (MaxResults, NextToken)."""
    size = params.get("MaxResults") or 50
    start = 0
    if params.get("NextToken"):
        try:
            start = int(params["NextToken"])
        except ValueError:
            raise InvalidNextTokenException("Invalid NextToken") from None
    out: dict[str, object] = {member: items[start : start + size]}
    if start + size < len(items):
        out["NextToken"] = str(start + size)
    return out
