"""Application Auto Scaling's scaling loop for SageMaker variants, with its CloudWatch alarms.

A target tracking policy works as AWS's does: every minute the loop measures the policy's metric
(``SageMakerVariantInvocationsPerInstance``: the invocations of that minute divided by the variant's
instances; or a customized metric), keeps the two alarms AWS creates
(``TargetTracking-<resource>-AlarmHigh-<uuid>``: above the target for 3 minutes;
``...-AlarmLow-<uuid>``: under 90 % of it for 15 minutes) in CloudWatch, and when one fires sets the
variant's desired instance count to ``ceil(current * metric / target)`` within MinCapacity and
MaxCapacity, honouring ScaleOutCooldown and ScaleInCooldown (and DisableScaleIn). Every change is a
scaling activity, and the endpoint goes Updating while instances start or drain and stop.

``LOCALAWS_AUTOSCALING_TIME_SCALE`` compresses this clock: at 60 a minute of metrics, an alarm's
evaluation period and a cooldown's minute each last one second.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import uuid

from localaws.applicationautoscaling.models import (
    DEFAULT_COOLDOWN,
    DIMENSION,
    HIGH_PERIODS,
    LOW_FRACTION,
    LOW_PERIODS,
    NAMESPACE_SAGEMAKER,
    AutoScalingBackend,
    Policy,
    ScalableVariants,
    Target,
)
from localaws.sagemaker.hosting.metrics import METRIC_NAMES, NAMESPACE

log = logging.getLogger(__name__)


class TargetTrackingAlarms:
    """The CloudWatch alarms of target tracking policies: created, deleted, their state kept."""

    def __init__(self, settings, clients):
        self.settings = settings
        self.clients = clients

    def create(self, target: Target, policy: Policy) -> list[dict]:
        """The policy's AlarmHigh (and, unless DisableScaleIn, AlarmLow), put in CloudWatch."""
        value = policy.target_value
        spec = policy.configuration.get("CustomizedMetricSpecification") or {
            "MetricName": "InvocationsPerInstance",
            "Namespace": NAMESPACE,
            "Dimensions": [
                {"Name": "EndpointName", "Value": target.endpoint},
                {"Name": "VariantName", "Value": target.variant},
            ],
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
            alarms.append(
                {
                    "AlarmName": name,
                    "AlarmARN": f"arn:aws:cloudwatch:{self.settings.region}:{self.settings.account_id}:alarm:{name}",
                }
            )
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
        return alarms

    def delete(self, policy: Policy) -> None:
        if not policy.alarms:
            return
        try:
            self.clients.cloudwatch.delete_alarms(AlarmNames=[alarm["AlarmName"] for alarm in policy.alarms])
        except Exception:  # noqa: BLE001
            log.warning("could not delete the alarms of %s", policy.name, exc_info=True)

    def set_state(self, policy: Policy, kind: str, state: str, reason: str) -> str | None:
        """Mirror the loop's evaluation in the ``kind`` alarm's state (sent only when it changes); its name."""
        alarm = next((a["AlarmName"] for a in policy.alarms if f"-{kind}-" in a["AlarmName"]), None)
        if alarm is None or policy.alarm_states.get(alarm) == state:
            return alarm
        policy.alarm_states[alarm] = state
        try:
            self.clients.cloudwatch.set_alarm_state(AlarmName=alarm, StateValue=state, StateReason=reason)
        except Exception:  # noqa: BLE001
            log.debug("could not set the state of %s", alarm, exc_info=True)
        return alarm


class ScalingLoop:
    """Every minute of Application Auto Scaling's clock: measure each target's policies, keep their
    alarms, scale (``variants.set_desired_count``)."""

    def __init__(
        self, settings, backend: AutoScalingBackend, variants: ScalableVariants, alarms: TargetTrackingAlarms, clients
    ):
        """``clients`` read a customized metric that is not hosting's own from CloudWatch."""
        self.settings = settings
        self.backend = backend
        self.variants = variants
        self.alarms = alarms
        self.clients = clients
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="autoscaling", daemon=True)
        self._thread.start()

    @property
    def scale(self) -> float:
        return max(1e-6, float(self.settings.autoscaling_time_scale))

    @property
    def period(self) -> float:
        """One minute of Application Auto Scaling's clock, in seconds."""
        return 60.0 / self.scale

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
        with self.backend.lock:
            targets = list(self.backend.targets.values())
        for target in targets:
            self._evaluate(target)

    def _evaluate(self, target: Target) -> None:
        capacity = self.variants.capacity(target.endpoint, target.variant)
        if capacity is None:
            return
        current, desired = capacity
        totals = self.variants.invocation_totals(target.endpoint, target.variant) or dict.fromkeys(METRIC_NAMES, 0)
        previous, target.last_totals = target.last_totals, totals
        if previous is None:
            return  # the first sample only sets the baseline
        delta = {key: totals[key] - previous.get(key, 0) for key in totals}
        instances = max(1, current)
        wants: list[tuple[str, int, str | None]] = []  # (out | in | hold, instance count, cause)
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
            high_alarm = self.alarms.set_state(policy, "AlarmHigh", "ALARM" if high else "OK", reason)
            low_alarm = self.alarms.set_state(policy, "AlarmLow", "ALARM" if low else "OK", reason)
            want = math.ceil(current * value / goal - 1e-9) if current else 1
            if high:
                wants.append(
                    (
                        "out",
                        max(want, current + 1),
                        f"monitor alarm {high_alarm} in state ALARM triggered policy {policy.name}",
                    )
                )
            elif low and not policy.configuration.get("DisableScaleIn"):
                wants.append(("in", want, f"monitor alarm {low_alarm} in state ALARM triggered policy {policy.name}"))
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
        ours = (
            spec["Namespace"] == NAMESPACE
            and spec["MetricName"] in METRIC_NAMES
            and dimensions.get("EndpointName") == target.endpoint
            and dimensions.get("VariantName", target.variant) == target.variant
        )
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
                Namespace=spec["Namespace"],
                MetricName=spec["MetricName"],
                Dimensions=spec.get("Dimensions") or [],
                StartTime=time.time() - period,
                EndTime=time.time(),
                Period=period,
                Statistics=[spec["Statistic"]],
            )["Datapoints"]
        except Exception:  # noqa: BLE001 - no data this minute
            log.debug("could not read %s", spec, exc_info=True)
            return None
        if not points:
            return None
        latest = max(points, key=lambda point: point["Timestamp"])
        return float(latest[spec["Statistic"]])

    def _scale(self, target: Target, current: int, new: int, cause: str | None, policies: list[Policy]) -> None:
        activity = {
            "ActivityId": str(uuid.uuid4()),
            "ServiceNamespace": NAMESPACE_SAGEMAKER,
            "ResourceId": target.resource_id,
            "ScalableDimension": DIMENSION,
            "Description": f"Setting desired instance count to {new}.",
            "Cause": cause,
            "StartTime": time.time(),
            "EndTime": None,
            "StatusCode": "InProgress",
            "StatusMessage": None,
        }
        scale_out = new > current

        def done(ok: bool, message: str | None) -> None:
            with self.backend.lock:
                activity["EndTime"] = time.time()
                if ok:
                    activity["StatusCode"] = "Successful"
                    activity["StatusMessage"] = (
                        f"Successfully set desired instance count to {new}. Change successfully fulfilled by sagemaker."
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

        with self.backend.lock:
            target.scaling = True
            self.backend.activities.append(activity)
        problem = self.variants.set_desired_count(target.endpoint, target.variant, new, done)
        if problem is not None:
            with self.backend.lock:
                target.scaling = False
                self.backend.activities.remove(activity)  # not started: nothing happened (the next minute retries)

    def close(self) -> None:
        self._stopped.set()
        self._thread.join(timeout=10)
