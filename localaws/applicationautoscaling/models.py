"""Application Auto Scaling for SageMaker variants, and the scaling itself.

Scalable targets are variants (``ResourceId`` ``endpoint/<name>/variant/<variant>``,
dimension ``sagemaker:variant:DesiredInstanceCount``). A target tracking policy
works as AWS's does: every minute the engine measures the policy's metric
(``SageMakerVariantInvocationsPerInstance``: the invocations of that minute divided by
the variant's instances; or a customized metric), keeps the two alarms AWS creates
(``TargetTracking-<resource>-AlarmHigh-<uuid>``: above the target for 3 minutes;
``...-AlarmLow-<uuid>``: under 90 % of it for 15 minutes) in CloudWatch, and when one
fires sets the variant's desired instance count to ``ceil(current * metric / target)``
within MinCapacity and MaxCapacity, honouring ScaleOutCooldown and ScaleInCooldown
(and DisableScaleIn). Every change is a scaling activity, and the endpoint goes
Updating while instances start or drain and stop.

``LOCALAWS_AUTOSCALING_TIME_SCALE`` compresses this clock: at 60 a minute of metrics,
an alarm's evaluation period and a cooldown's minute each last one second.

Step scaling policies are stored and described, not executed.
"""
from __future__ import annotations

import collections
import logging
import math
import re
import threading
import time
import uuid
from dataclasses import dataclass, field

from localaws.aws_errors import AwsError, ValidationError
from localaws.sagemaker.hosting.metrics import METRIC_NAMES, NAMESPACE
from localaws.sagemaker.hosting.models import AUTOSCALING_DIMENSION
from localaws.state.pickling import runtime

log = logging.getLogger(__name__)

SERVICE = "application-autoscaling"
NAMESPACE_SAGEMAKER = "sagemaker"
PREDEFINED = "SageMakerVariantInvocationsPerInstance"
RESOURCE = re.compile(r"^endpoint/([a-zA-Z0-9](?:-*[a-zA-Z0-9])*)/variant/([a-zA-Z0-9](?:-*[a-zA-Z0-9])*)$")
HIGH_PERIODS, LOW_PERIODS, LOW_FRACTION = 3, 15, 0.9
DEFAULT_COOLDOWN = 300


class AutoScalingError(AwsError):
    code = "ValidationException"


#: One ValidationException for this service's own checks and its model's (``shapes``).
ValidationException = ValidationError


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
            "ScalableDimension": AUTOSCALING_DIMENSION,
            "PolicyType": self.policy_type,
            "CreationTime": self.created,
            "Alarms": list(self.alarms),
        }
        key = ("TargetTrackingScalingPolicyConfiguration" if self.policy_type == "TargetTrackingScaling"
               else "StepScalingPolicyConfiguration")
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
            "ScalableDimension": AUTOSCALING_DIMENSION,
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


class AutoScaler:
    """Application Auto Scaling's API for ServiceNamespace ``sagemaker``, and its scaling loop."""

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

    def __init__(self, settings, hosting, metrics, clients):
        self.settings = settings
        self.hosting = hosting
        self.metrics = metrics
        self.clients = clients
        self.lock = threading.RLock()
        self.targets: dict[str, Target] = {}
        self.activities: list[dict] = []
        hosting.autoscaled = lambda endpoint, variant: f"endpoint/{endpoint}/variant/{variant}" in self.targets
        hosting.deletion_listeners.append(self.endpoint_deleted)
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="autoscaler", daemon=True)
        self._thread.start()

    @property
    def scale(self) -> float:
        return max(1e-6, float(self.settings.autoscaling_time_scale))

    @property
    def period(self) -> float:
        """One minute of Application Auto Scaling's clock, in seconds."""
        return 60.0 / self.scale

    def owns_arn(self, arn: str) -> bool:
        with self.lock:
            return any(target.arn == arn for target in self.targets.values())

    # --- the API -------------------------------------------------------------------------

    def _resource(self, params: dict) -> tuple[str, str, str]:
        resource_id, dimension = params["ResourceId"], params["ScalableDimension"]
        match = RESOURCE.match(resource_id)
        if dimension != AUTOSCALING_DIMENSION or not match:
            raise ValidationException("Unsupported service namespace, resource type or scalable dimension")
        return resource_id, match.group(1), match.group(2)

    def _target(self, params: dict) -> Target:
        resource_id, _, _ = self._resource(params)
        target = self.targets.get(resource_id)
        if target is None:
            raise ObjectNotFoundException(
                f"No scalable target registered for service namespace: {NAMESPACE_SAGEMAKER}, resource ID: "
                f"{resource_id}, scalable dimension: {AUTOSCALING_DIMENSION}"
            )
        return target

    def register_scalable_target(self, params: dict) -> dict:
        resource_id, endpoint, variant = self._resource(params)
        if self.hosting.variant_capacity(endpoint, variant) is None:
            raise ValidationException(f"SageMaker variant doesn't exist: {resource_id}")
        low, high = params.get("MinCapacity"), params.get("MaxCapacity")
        with self.lock:
            target = self.targets.get(resource_id)
            if target is None and (low is None or high is None):
                raise ValidationException(
                    "MinCapacity and MaxCapacity are required when registering a new scalable target"
                )
            low = target.min_capacity if low is None else low
            high = target.max_capacity if high is None else high
            if low < 1:
                raise ValidationException(
                    f"MinCapacity {low} is invalid: a SageMaker variant needs at least 1 instance"
                )
            if low > high:
                raise ValidationException(f"Minimum capacity {low} cannot be greater than maximum capacity {high}")
            if target is None:
                if params.get("Tags") is not None and resource_id in self.targets:
                    raise ValidationException(
                        "The scalable target that you tried to tag already exists. To update tags on an existing "
                        "scalable target, use the TagResource API."
                    )
                target = Target(
                    resource_id=resource_id, endpoint=endpoint, variant=variant,
                    min_capacity=low, max_capacity=high,
                    role_arn=params.get("RoleARN") or (
                        f"arn:aws:iam::{self.settings.account_id}:role/aws-service-role/sagemaker.application-"
                        "autoscaling.amazonaws.com/AWSServiceRoleForApplicationAutoScaling_SageMakerEndpoint"
                    ),
                    arn=(f"arn:aws:application-autoscaling:{self.settings.region}:{self.settings.account_id}:"
                         f"scalable-target/{uuid.uuid4().hex}{uuid.uuid4().hex[:4]}"),
                    created=time.time(),
                    suspended=dict(params.get("SuspendedState") or {}),
                    tags=dict(params.get("Tags") or {}),
                )
                self.targets[resource_id] = target
            else:
                if params.get("Tags") is not None:
                    raise ValidationException(
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
                target.describe() for target in self.targets.values()
                if (not params.get("ResourceIds") or target.resource_id in params["ResourceIds"])
                and params.get("ScalableDimension") in (None, AUTOSCALING_DIMENSION)
            ]
        page, token = _page(items, params)
        return {"ScalableTargets": page, **({"NextToken": token} if token else {})}

    def deregister_scalable_target(self, params: dict) -> dict:
        resource_id, _, _ = self._resource(params)
        with self.lock:
            target = self.targets.pop(resource_id, None)
            if target is None:
                raise ObjectNotFoundException(
                    f"No scalable target found for service namespace: {NAMESPACE_SAGEMAKER}, resource ID: "
                    f"{resource_id}, scalable dimension: {AUTOSCALING_DIMENSION}"
                )
            policies = list(target.policies.values())
        for policy in policies:
            self._delete_alarms(policy)
        return {}

    def put_scaling_policy(self, params: dict) -> dict:
        policy_type = params.get("PolicyType") or "StepScaling"
        with self.lock:
            target = self._target(params)
            existing = target.policies.get(params["PolicyName"])
        if policy_type == "PredictiveScaling":
            raise ValidationException(
                "Predictive scaling is not supported for scalable dimension sagemaker:variant:DesiredInstanceCount"
            )
        if policy_type == "TargetTrackingScaling":
            configuration = params.get("TargetTrackingScalingPolicyConfiguration")
            if not configuration:
                raise ValidationException(
                    "TargetTrackingScalingPolicyConfiguration is required for a TargetTrackingScaling policy"
                )
            self._check_target_tracking(configuration)
        else:
            configuration = params.get("StepScalingPolicyConfiguration")
            if not configuration:
                raise ValidationException("StepScalingPolicyConfiguration is required for a StepScaling policy")
        policy = Policy(
            name=params["PolicyName"],
            arn=existing.arn if existing else (
                f"arn:aws:autoscaling:{self.settings.region}:{self.settings.account_id}:scalingPolicy:"
                f"{uuid.uuid4()}:resource/{NAMESPACE_SAGEMAKER}/{target.resource_id}:policyName/{params['PolicyName']}"
            ),
            resource_id=target.resource_id,
            policy_type=policy_type,
            configuration=configuration,
            created=existing.created if existing else time.time(),
        )
        if existing:
            self._delete_alarms(existing)
        if policy_type == "TargetTrackingScaling":
            self._create_alarms(target, policy)
        with self.lock:
            target.policies[policy.name] = policy
        out = {"PolicyARN": policy.arn}
        if policy.alarms:
            out["Alarms"] = list(policy.alarms)
        return out

    def _check_target_tracking(self, configuration: dict) -> None:
        predefined = configuration.get("PredefinedMetricSpecification")
        customized = configuration.get("CustomizedMetricSpecification")
        if bool(predefined) == bool(customized):
            raise ValidationException(
                "Exactly one of PredefinedMetricSpecification and CustomizedMetricSpecification must be specified"
            )
        if predefined and predefined["PredefinedMetricType"] != PREDEFINED:
            raise ValidationException(
                f"Scalable dimension {AUTOSCALING_DIMENSION} only supports the following predefined metric "
                f"types: {PREDEFINED}"
            )
        if customized:
            if customized.get("Metrics"):
                raise ValidationException(
                    "localaws supports customized metrics given by MetricName, Namespace, Dimensions and "
                    "Statistic; metric math (Metrics) is not supported"
                )
            for key in ("MetricName", "Namespace", "Statistic"):
                if not customized.get(key):
                    raise ValidationException(f"CustomizedMetricSpecification.{key} is required")
        if configuration["TargetValue"] <= 0:
            raise ValidationException("TargetValue must be greater than 0")

    def describe_scaling_policies(self, params: dict) -> dict:
        with self.lock:
            items = [
                policy.describe()
                for target in self.targets.values()
                for policy in target.policies.values()
                if (not params.get("ResourceId") or target.resource_id == params["ResourceId"])
                and (not params.get("PolicyNames") or policy.name in params["PolicyNames"])
                and params.get("ScalableDimension") in (None, AUTOSCALING_DIMENSION)
            ]
        page, token = _page(items, params)
        return {"ScalingPolicies": page, **({"NextToken": token} if token else {})}

    def delete_scaling_policy(self, params: dict) -> dict:
        resource_id, _, _ = self._resource(params)
        with self.lock:
            target = self.targets.get(resource_id)
            policy = target.policies.pop(params["PolicyName"], None) if target else None
        if policy is None:
            raise ObjectNotFoundException(
                f"No scaling policy found for service namespace: {NAMESPACE_SAGEMAKER}, resource ID: {resource_id}, "
                f"scalable dimension: {AUTOSCALING_DIMENSION}, policy name: {params['PolicyName']}"
            )
        self._delete_alarms(policy)
        return {}

    def describe_scaling_activities(self, params: dict) -> dict:
        with self.lock:
            items = [
                {key: value for key, value in activity.items() if value is not None}
                for activity in reversed(self.activities)
                if (not params.get("ResourceId") or activity["ResourceId"] == params["ResourceId"])
                and params.get("ScalableDimension") in (None, AUTOSCALING_DIMENSION)
            ]
        page, token = _page(items, params)
        return {"ScalingActivities": page, **({"NextToken": token} if token else {})}

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
                self._delete_alarms(policy)

    # --- CloudWatch alarms --------------------------------------------------------------

    def _create_alarms(self, target: Target, policy: Policy) -> None:
        value = policy.target_value
        spec = policy.configuration.get("CustomizedMetricSpecification") or {
            "MetricName": "InvocationsPerInstance",
            "Namespace": NAMESPACE,
            "Dimensions": [{"Name": "EndpointName", "Value": target.endpoint},
                           {"Name": "VariantName", "Value": target.variant}],
            "Statistic": "Sum",
        }
        action = f"{policy.arn}:createdBy/{uuid.uuid4()}"
        alarms = []
        for kind, periods, threshold, operator in (
            ("AlarmHigh", HIGH_PERIODS, value, "GreaterThanThreshold"),
            ("AlarmLow", LOW_PERIODS, value * LOW_FRACTION, "LessThanThreshold"),
        ):
            if kind == "AlarmLow" and policy.configuration.get("DisableScaleIn"):
                continue
            name = f"TargetTracking-{target.resource_id}-{kind}-{uuid.uuid4()}"
            alarms.append({
                "AlarmName": name,
                "AlarmARN": f"arn:aws:cloudwatch:{self.settings.region}:{self.settings.account_id}:alarm:{name}",
            })
            try:
                self.clients.cloudwatch.put_metric_alarm(
                    AlarmName=name,
                    AlarmDescription=f"DO NOT EDIT OR DELETE. For TargetTrackingScaling policy {action}.",
                    ActionsEnabled=True,
                    AlarmActions=[action],
                    MetricName=spec["MetricName"],
                    Namespace=spec["Namespace"],
                    Statistic=spec["Statistic"],
                    Dimensions=spec.get("Dimensions") or [],
                    Period=60,
                    EvaluationPeriods=periods,
                    Threshold=threshold,
                    ComparisonOperator=operator,
                )
            except Exception:  # noqa: BLE001 - the policy works without its mirror in CloudWatch
                log.warning("could not create the alarm %s", name, exc_info=True)
        policy.alarms = alarms

    def _delete_alarms(self, policy: Policy) -> None:
        if not policy.alarms:
            return
        try:
            self.clients.cloudwatch.delete_alarms(AlarmNames=[alarm["AlarmName"] for alarm in policy.alarms])
        except Exception:  # noqa: BLE001
            log.warning("could not delete the alarms of %s", policy.name, exc_info=True)

    def _set_alarm(self, policy: Policy, kind: str, state: str, reason: str) -> str | None:
        alarm = next((a["AlarmName"] for a in policy.alarms if f"-{kind}-" in a["AlarmName"]), None)
        if alarm is None or policy.alarm_states.get(alarm) == state:
            return alarm
        policy.alarm_states[alarm] = state
        try:
            self.clients.cloudwatch.set_alarm_state(AlarmName=alarm, StateValue=state, StateReason=reason)
        except Exception:  # noqa: BLE001
            log.debug("could not set the state of %s", alarm, exc_info=True)
        return alarm

    # --- the scaling loop ---------------------------------------------------------------------

    def _run(self) -> None:
        next_tick = time.monotonic() + self.period
        while not self._stopped.wait(max(0.0, next_tick - time.monotonic())):
            next_tick += self.period
            if next_tick < time.monotonic():  # fell behind (a slow CloudWatch call): skip, don't burst
                next_tick = time.monotonic() + self.period
            try:
                self.evaluate()
            except Exception:  # noqa: BLE001 - the loop must survive a bad tick
                log.exception("autoscaling evaluation failed")

    def evaluate(self) -> None:
        """One minute of Application Auto Scaling: measure, update alarms, scale."""
        with self.lock:
            targets = list(self.targets.values())
        for target in targets:
            self._evaluate(target)

    def _evaluate(self, target: Target) -> None:
        capacity = self.hosting.variant_capacity(target.endpoint, target.variant)
        if capacity is None:
            return
        current, desired = capacity
        counters = self.metrics.find(target.endpoint, target.variant)
        totals = counters.totals() if counters else {name: 0 for name in METRIC_NAMES}
        previous, target.last_totals = target.last_totals, totals
        if previous is None:
            return  # the first sample only sets the baseline
        delta = {key: totals[key] - previous.get(key, 0) for key in totals}
        instances = max(1, current)
        wants = []  # (out | in | hold, instance count, cause)
        policies = [p for p in list(target.policies.values()) if p.policy_type == "TargetTrackingScaling"]
        for policy in policies:
            value = self._measure(target, policy, delta, instances)
            if value is None:
                continue
            policy.history.append(value)
            history = list(policy.history)
            goal = policy.target_value
            high = len(history) >= HIGH_PERIODS and all(v > goal for v in history[-HIGH_PERIODS:])
            low = len(history) >= LOW_PERIODS and all(v < goal * LOW_FRACTION for v in history[-LOW_PERIODS:])
            reason = f"Threshold Crossed: the last datapoint was {value:g} (target {goal:g})."
            high_alarm = self._set_alarm(policy, "AlarmHigh", "ALARM" if high else "OK", reason)
            low_alarm = self._set_alarm(policy, "AlarmLow", "ALARM" if low else "OK", reason)
            want = math.ceil(current * value / goal - 1e-9) if current else 1
            if high:
                wants.append(("out", max(want, current + 1),
                              f"monitor alarm {high_alarm} in state ALARM triggered policy {policy.name}"))
            elif low and not policy.configuration.get("DisableScaleIn"):
                wants.append(("in", want,
                              f"monitor alarm {low_alarm} in state ALARM triggered policy {policy.name}"))
            else:
                wants.append(("hold", current, None))
        if target.scaling or desired != current:
            return  # an activity (or another change of the endpoint) is under way
        now = time.monotonic()
        suspended_out = target.suspended.get("DynamicScalingOutSuspended")
        suspended_in = target.suspended.get("DynamicScalingInSuspended")
        new, cause = None, None
        if desired < target.min_capacity:
            new, cause = target.min_capacity, f"minimum capacity was set to {target.min_capacity}"
        elif desired > target.max_capacity:
            new, cause = target.max_capacity, f"maximum capacity was set to {target.max_capacity}"
        elif any(kind == "out" for kind, _, _ in wants):
            if not suspended_out and now >= target.out_until:
                out = max((w for w in wants if w[0] == "out"), key=lambda w: w[1])
                candidate = min(target.max_capacity, out[1])
                if candidate > desired:
                    new, cause = candidate, out[2]
        elif wants and all(kind == "in" for kind, _, _ in wants):
            # Scale in only when every policy agrees, to the largest of their wishes.
            if not suspended_in and now >= target.in_until and now >= target.out_until:
                candidate = max(target.min_capacity, max(want for _, want, _ in wants))
                if candidate < desired:
                    new, cause = candidate, wants[0][2]
        if new is None:
            return
        self._scale(target, current, new, cause, policies)

    def _measure(self, target: Target, policy: Policy, delta: dict, instances: int) -> float | None:
        spec = policy.configuration.get("CustomizedMetricSpecification")
        if not spec:
            return delta["Invocations"] / instances
        dimensions = {d["Name"]: d["Value"] for d in spec.get("Dimensions") or []}
        ours = (spec["Namespace"] == NAMESPACE and spec["MetricName"] in METRIC_NAMES
                and dimensions.get("EndpointName") == target.endpoint
                and dimensions.get("VariantName", target.variant) == target.variant)
        if ours:
            name = spec["MetricName"]
            if name == "InvocationsPerInstance":
                return delta["Invocations"] / instances
            if name in ("ModelLatency", "OverheadLatency"):
                return delta[name] / delta["Invocations"] if delta["Invocations"] else None
            return float(delta[name])
        period = max(1, int(round(self.period)))
        try:
            points = self.clients.cloudwatch.get_metric_statistics(
                Namespace=spec["Namespace"], MetricName=spec["MetricName"],
                Dimensions=spec.get("Dimensions") or [], StartTime=time.time() - period,
                EndTime=time.time(), Period=period, Statistics=[spec["Statistic"]],
            )["Datapoints"]
        except Exception:  # noqa: BLE001 - no data this minute
            log.debug("could not read %s", spec, exc_info=True)
            return None
        if not points:
            return None
        latest = max(points, key=lambda point: point["Timestamp"])
        return float(latest[spec["Statistic"]])

    def _scale(self, target: Target, current: int, new: int, cause: str, policies: list[Policy]) -> None:
        activity = {
            "ActivityId": str(uuid.uuid4()),
            "ServiceNamespace": NAMESPACE_SAGEMAKER,
            "ResourceId": target.resource_id,
            "ScalableDimension": AUTOSCALING_DIMENSION,
            "Description": f"Setting desired instance count to {new}.",
            "Cause": cause,
            "StartTime": time.time(),
            "EndTime": None,
            "StatusCode": "InProgress",
            "StatusMessage": None,
        }
        scale_out = new > current

        def done(ok: bool, message: str | None) -> None:
            with self.lock:
                activity["EndTime"] = time.time()
                if ok:
                    activity["StatusCode"] = "Successful"
                    activity["StatusMessage"] = (
                        f"Successfully set desired instance count to {new}. Change successfully fulfilled by "
                        "sagemaker."
                    )
                else:
                    activity["StatusCode"] = "Failed"
                    activity["StatusMessage"] = f"Failed to set desired instance count to {new}. Reason: {message}"
                target.scaling = False
                # Cooldowns run from the end of the activity; new evidence is needed after a change.
                key = "ScaleOutCooldown" if scale_out else "ScaleInCooldown"
                cooldown = max((p.cooldown(key) for p in policies), default=DEFAULT_COOLDOWN) / self.scale
                if scale_out:
                    target.out_until = time.monotonic() + cooldown
                else:
                    target.in_until = time.monotonic() + cooldown
                for policy in policies:
                    policy.history.clear()

        with self.lock:
            target.scaling = True
            self.activities.append(activity)
        problem = self.hosting.request_capacity(target.endpoint, target.variant, new, done=done)
        if problem is not None:
            with self.lock:
                target.scaling = False
                self.activities.remove(activity)  # not started: nothing happened (the next minute retries)

    def close(self) -> None:
        self._stopped.set()
        self._thread.join(timeout=10)

    # --- across restarts (localaws/state) ------------------------------------------------------

    def state(self) -> dict:
        return {"targets": self.targets, "activities": self.activities}

    def restore(self, state: dict, stopped_at: float) -> int:
        """Put a snapshot back (after hosting's): targets of endpoints that still exist, with their
        policies (which scale again from the next minute on), and the activities; one that was under
        way when localaws stopped ends Failed. How many targets came back."""
        with self.lock:
            for resource_id, target in state.get("targets", {}).items():
                if self.hosting.variant_capacity(target.endpoint, target.variant) is not None:
                    self.targets[resource_id] = target
            for activity in state.get("activities", []):
                if activity.get("StatusCode") == "InProgress":
                    activity["StatusCode"] = "Failed"
                    activity["EndTime"] = stopped_at
                    activity["StatusMessage"] = ("Failed to set the desired instance count: localaws stopped "
                                                 "while the activity was in progress.")
                self.activities.append(activity)
            return len(self.targets)


def _page(items: list, params: dict) -> tuple[list, str | None]:
    size = params.get("MaxResults") or 50
    start = 0
    if params.get("NextToken"):
        try:
            start = int(params["NextToken"])
        except ValueError:
            raise InvalidNextTokenException("Invalid NextToken") from None
    chunk = items[start : start + size]
    token = str(start + size) if start + size < len(items) else None
    return chunk, token
