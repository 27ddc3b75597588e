"""A run's estimated cost: what it ran, for how long, times the on-demand prices of a dated file.

    load_prices(path=None)      the prices file: ``$ML_PIPELINE_PRICES_FILE``, else the newest
                                include/prices/aws-on-demand-<date>.json (PricesError when unreadable)
    endpoint_usage(sm, plan)    what the run's endpoint runs and since when, read before teardown deletes it
    run_cost(...)               ``summary["cost"]``: the items, their total and spot savings (never raises)
    budget_errors(params)       why a run's ``max_cost_usd`` cannot be watched (make_plan refuses it)
    training_so_far / tuning_so_far   a running job's estimate, for the sensors and the trigger watching the budget

Each item is billable seconds x instance count x the type's hourly price / 3600:

- **a training job**, a tuning trial too: DescribeTrainingJob's ``BillableTimeInSeconds``. For managed spot
  training AWS counts in it the training time at the spot price (in on-demand seconds), so the spot savings
  are (``TrainingTimeInSeconds`` - ``BillableTimeInSeconds``) x count x price.
- **the run's endpoint**: from its creation (on a kept endpoint, from this run's deploy) to teardown's delete
  (a kept endpoint: to the run's end; it bills on after), times its variants' instances at the end.
- **the host** (compute: host): EC2 from launch to termination, at least 60 s (as EC2 bills Linux).
- **a processing job** (``prepare`` as one) and **a batch transform job**: from their start to their end
  (DescribeProcessingJob's and DescribeTransformJob's times) x their instances, at the file's training and
  hosting price of their type: an approximation, the file holds no Processing or Batch Transform group.

A type the file has no price for is named in its item and in ``left_out``, and counted in no total: the
estimate never turns an unknown into a zero. The estimate reaches no remote service beyond the reads above,
and a failure to make it is said in the summary, never a failed run.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ml_pipeline.config import REPO_ROOT

if TYPE_CHECKING:
    from ml_pipeline.aws import Client, Clients
    from ml_pipeline.plan import Plan

log = logging.getLogger(__name__)

PRICES_DIR = REPO_ROOT / "include" / "prices"
PRICES_ENV = "ML_PIPELINE_PRICES_FILE"
#: The prices files' names: the date says when the file was written (a newer one is used first).
PRICES_NAME = re.compile(r"^aws-on-demand-(\d{4}-\d{2}-\d{2})\.json$")
#: The file's groups, as a sentence names them.
GROUPS = {"training": "SageMaker training", "hosting": "SageMaker hosting", "ec2": "EC2"}
#: EC2 bills a Linux instance per second, with a minimum of a minute.
EC2_MINIMUM_SECONDS = 60
#: "User initiated (2026-12-02 10:00:00 GMT)": when EC2 says an instance was stopped or terminated.
_TRANSITION_TIME = re.compile(r"\((\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}) (?:GMT|UTC)\)")


class PricesError(ValueError):
    """The prices file is missing or malformed: the message names it and what is wrong."""


@dataclass(frozen=True)
class Prices:
    """A prices file, checked: ``groups`` {group: {instance type: USD per hour}}."""

    path: Path
    date: str
    region: str
    groups: Mapping[str, Mapping[str, float]]

    @property
    def label(self) -> str:
        """What the summary says it was priced with."""
        return f"{self.path.name} ({self.region}, on demand, dated {self.date})"

    def usd_per_hour(self, group: str, instance_type: str | None) -> float | None:
        return self.groups[group].get(instance_type) if instance_type else None


def prices_path() -> Path:
    override = os.environ.get(PRICES_ENV)
    if override:
        return Path(override)
    found = sorted(path for path in PRICES_DIR.glob("aws-on-demand-*.json") if PRICES_NAME.match(path.name))
    if not found:
        raise PricesError(f"no prices file in {PRICES_DIR} (aws-on-demand-<YYYY-MM-DD>.json; README, section Cost)")
    return found[-1]


def load_prices(path: str | os.PathLike | None = None) -> Prices:
    """The prices file at ``path`` (default ``prices_path()``), checked: each price a finite positive number.
    Read again only when it changed."""
    file = Path(path) if path is not None else prices_path()
    try:
        stat = file.stat()
    except OSError as error:
        raise PricesError(f"prices file {file}: cannot be read: {error.strerror or error}") from None
    return _load(str(file), stat.st_mtime_ns, stat.st_size)


@lru_cache(maxsize=8)
def _load(path: str, _mtime_ns: int, _size: int) -> Prices:
    name = Path(path).name
    try:
        document = json.loads(Path(path).read_text())
    except (OSError, ValueError) as error:
        raise PricesError(f"prices file {path}: cannot be read: {error}") from None
    if not isinstance(document, dict) or not isinstance(document.get("groups"), dict):
        raise PricesError(f"prices file {name}: no groups")
    groups: dict[str, dict[str, float]] = {}
    for group in GROUPS:
        prices = (document["groups"].get(group) or {}).get("prices")
        if not isinstance(prices, dict):
            raise PricesError(f"prices file {name}: groups.{group}.prices is missing")
        for instance_type, price in prices.items():
            if isinstance(price, bool) or not isinstance(price, (int, float)) or not math.isfinite(price) or price <= 0:
                raise PricesError(
                    f"prices file {name}: groups.{group}.prices.{instance_type}: {price!r} is not a price"
                )
        groups[group] = {instance_type: float(price) for instance_type, price in prices.items()}
    return Prices(Path(path), str(document.get("date", "undated")), str(document.get("region", "unknown")), groups)


def money(usd: float) -> str:
    """$0.0123 below a dollar, $12.35 above."""
    return f"${usd:,.2f}" if abs(usd) >= 1 else f"${usd:.4f}"


def _seconds(value: Any) -> float | None:
    """A timestamp as botocore gives it (datetime), or epoch seconds, as epoch seconds."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.timestamp()
    return float(value)


def item(
    what: str, group: str, instance_type: str | None, count: int, seconds: float, prices: Prices
) -> dict[str, Any]:
    """One line of the estimate; ``usd`` None (and ``unpriced`` saying why) for a type the file has no price for."""
    price = prices.usd_per_hour(group, instance_type)
    entry: dict[str, Any] = {
        "what": what,
        "instance_type": instance_type,
        "instance_count": count,
        "billable_seconds": round(seconds, 3),
        "usd_per_hour": price,
        "usd": None if price is None else round(seconds * count * price / 3600, 6),
    }
    if price is None:
        entry["unpriced"] = (
            f"{prices.path.name} has no {GROUPS[group]} price for {instance_type or 'this variant (no instance type)'}"
        )
    return entry


# --- a running job's estimate, for the budget ------------------------------------------------------------


def billable_so_far(description: Mapping[str, Any], now: float | None = None) -> float:
    """A training job's (or trial summary's) billable seconds: AWS's figure once it has one, else the time since
    training started (a spot job's too: its spot price is not known before it ends, so the estimate is the
    on-demand one, an upper bound). No training yet: 0."""
    if description.get("BillableTimeInSeconds") is not None:
        return float(description["BillableTimeInSeconds"])
    start = _seconds(description.get("TrainingStartTime"))
    if start is None:
        return 0.0
    end = _seconds(description.get("TrainingEndTime")) or (now if now is not None else time.time())
    return max(0.0, end - start)


def resources(definition: Mapping[str, Any]) -> tuple[str | None, int]:
    """(instance type, count) of a training job's or a tuning definition's resources."""
    config = definition.get("ResourceConfig") or definition.get("HyperParameterTuningResourceConfig") or {}
    return config.get("InstanceType"), int(config.get("InstanceCount") or 1)


def training_so_far(
    description: Mapping[str, Any], usd_per_hour: Mapping[str, float], now: float | None = None
) -> float:
    """A training job's estimated cost so far, at ``usd_per_hour`` {instance type: price}."""
    instance_type, count = resources(description)
    return billable_so_far(description, now) * count * _price(usd_per_hour, instance_type) / 3600


def tuning_so_far(
    description: Mapping[str, Any],
    trials: Iterable[Mapping[str, Any]],
    usd_per_hour: Mapping[str, float],
    now: float | None = None,
) -> float:
    """A tuning job's estimated cost so far: each trial's (ListTrainingJobsForHyperParameterTuningJob's
    summaries) on its definition's resources."""
    definitions = definition_resources(description)
    total = 0.0
    for trial in trials:
        instance_type, count = definitions.get(trial.get("TrainingJobDefinitionName"), definitions[None])
        total += billable_so_far(trial, now) * count * _price(usd_per_hour, instance_type) / 3600
    return total


def definition_resources(description: Mapping[str, Any]) -> dict[str | None, tuple[str | None, int]]:
    """{definition name: (instance type, count)} of a tuning job; key None: the one a trial naming none runs."""
    definitions = list(description.get("TrainingJobDefinitions") or [])
    if description.get("TrainingJobDefinition"):
        definitions.insert(0, description["TrainingJobDefinition"])
    found: dict[str | None, tuple[str | None, int]] = {d.get("DefinitionName"): resources(d) for d in definitions}
    found[None] = resources(definitions[0]) if definitions else (None, 1)
    return found


def _price(usd_per_hour: Mapping[str, float], instance_type: str | None) -> float:
    if instance_type is None or instance_type not in usd_per_hour:
        raise KeyError(f"no training price for {instance_type}: the budget cannot be watched")
    return usd_per_hour[instance_type]


def budget_sentence(kind: str, name: str, estimate: float, budget: float) -> str:
    """Why a job was stopped, as the run's failure and its summary say it."""
    return f"{kind} {name} stopped: its estimated cost {money(estimate)} passed max_cost_usd {money(budget)}"


def budget_errors(params: Mapping[str, Any]) -> list[str]:
    """Why the run's ``max_cost_usd`` cannot be watched: it must be a positive number, the run must train on
    SageMaker (the sensors of its training and tuning jobs watch it), and the prices file must price its
    training type. Empty when there is no budget."""
    budget = params.get("max_cost_usd")
    if budget is None:
        return []
    if isinstance(budget, bool) or not isinstance(budget, (int, float)) or not math.isfinite(budget) or budget <= 0:
        return [f"max_cost_usd: {budget!r} is not a positive number of US dollars"]
    if params.get("compute") == "host":
        return [
            "max_cost_usd: the budget is watched on SageMaker training and tuning jobs; compute=host runs none "
            "(leave it empty)"
        ]
    try:
        prices = load_prices()
    except PricesError as error:
        return [f"max_cost_usd: {error}"]
    if prices.usd_per_hour("training", params.get("instance_type")) is None:
        return [
            f"max_cost_usd: {prices.path.name} has no SageMaker training price for {params.get('instance_type')}, "
            "so the budget could not be watched (add its price: README, section Cost)"
        ]
    return []


# --- the run's estimate, for its summary ----------------------------------------------------------------


def endpoint_usage(sm: Client, plan: Plan) -> dict[str, Any] | None:
    """What the run's deploy runs, read before teardown deletes it: {"endpoint", "kept", "start" (epoch s),
    "variants": [{"variant", "instance_type", "count"}]}; None when the endpoint does not serve this run's
    endpoint config (no deploy, or a kept endpoint serving another run's)."""
    names, keep = plan["names"], plan["params"]["keep_endpoint"]
    try:
        endpoint = sm.describe_endpoint(EndpointName=names["endpoint"])
    except sm.exceptions.ClientError as error:
        if error.response.get("Error", {}).get("Code") == "ValidationException":  # no such endpoint
            return None
        raise
    if endpoint.get("EndpointConfigName") != names["endpoint_config"]:
        return None
    config = sm.describe_endpoint_config(EndpointConfigName=names["endpoint_config"])
    specs = {variant["VariantName"]: variant for variant in config["ProductionVariants"]}
    start = _seconds(endpoint["CreationTime"])
    if keep:  # the endpoint is older than the run: this run's fleet came with its deploy
        resolved = [
            _seconds(image.get("ResolutionTime"))
            for variant in endpoint.get("ProductionVariants") or []
            for image in variant.get("DeployedImages") or []
        ]
        start = min((t for t in resolved if t), default=_seconds(endpoint.get("LastModifiedTime")) or start)
    variants = [
        {
            "variant": variant["VariantName"],
            "instance_type": specs.get(variant["VariantName"], {}).get("InstanceType"),
            "count": int(
                variant.get("CurrentInstanceCount")
                or specs.get(variant["VariantName"], {}).get("InitialInstanceCount")
                or 0
            ),
        }
        for variant in endpoint.get("ProductionVariants") or []
    ]
    return {"endpoint": names["endpoint"], "kept": keep, "start": start, "variants": variants}


def training_items(sm: Client, jobs: Mapping[str, Any], prices: Prices, now: float) -> tuple[list[dict], list[str]]:
    """An item per training job of the run (``jobs``: closing.jobs_of_run's), tuning trials included."""
    tunings = [job["name"] for job in jobs.get("tuning", [])]
    items, left_out = [], []
    for job in jobs.get("training", []):
        name = job["name"]
        kind = "tuning trial" if any(name.startswith(tuning + "-") for tuning in tunings) else "training job"
        if job.get("status") == "gone":
            left_out.append(f"{kind} {name}: AWS no longer knows it, so its cost is not counted")
            continue
        description = sm.describe_training_job(TrainingJobName=name)
        instance_type, count = resources(description)
        billable = billable_so_far(description, now)
        entry = item(f"{kind} {name}", "training", instance_type, count, billable, prices)
        if description.get("EnableManagedSpotTraining"):
            trained = float(description.get("TrainingTimeInSeconds") or billable)
            entry["spot"] = True
            entry["training_seconds"] = trained
            if entry["usd_per_hour"] is not None:
                saved = max(0.0, trained - billable) * count * entry["usd_per_hour"] / 3600
                entry["spot_savings_usd"] = round(saved, 6)
        items.append(entry)
    return items, left_out


#: Each job kind that is not training: its describe call, name member, times, resources and price group.
_OTHER_JOBS = {
    "processing": (
        "describe_processing_job",
        "ProcessingJobName",
        ("ProcessingStartTime", "ProcessingEndTime"),
        ("ProcessingResources", "ClusterConfig"),
        "training",
    ),
    "transform": (
        "describe_transform_job",
        "TransformJobName",
        ("TransformStartTime", "TransformEndTime"),
        ("TransformResources",),
        "hosting",
    ),
}


def other_job_items(sm: Client, jobs: Mapping[str, Any], prices: Prices, now: float) -> tuple[list[dict], list[str]]:
    """An item per processing and transform job of the run: start to end (now, while it runs), x instances."""
    items, left_out = [], []
    for kind, (describe, member, (began, ended), path, group) in _OTHER_JOBS.items():
        for job in jobs.get(kind, []):
            if job.get("status") == "gone":
                left_out.append(f"{kind} job {job['name']}: AWS no longer knows it, so its cost is not counted")
                continue
            description = getattr(sm, describe)(**{member: job["name"]})
            start = _seconds(description.get(began))
            seconds = 0.0 if start is None else max(0.0, (_seconds(description.get(ended)) or now) - start)
            config: Mapping[str, Any] = description
            for part in path:
                config = config.get(part) or {}
            count = int(config.get("InstanceCount") or 1)
            items.append(item(f"{kind} job {job['name']}", group, config.get("InstanceType"), count, seconds, prices))
    return items, left_out


def endpoint_items(serving: Mapping[str, Any] | None, end: float, prices: Prices) -> tuple[list[dict], list[str]]:
    if not serving:
        return [], []
    if serving.get("error"):
        return [], [
            f"endpoint {serving['endpoint']}: its usage could not be read ({serving['error']}), so it is not counted"
        ]
    seconds = max(0.0, end - serving["start"])
    until = "to the run's end (it stays, billing on)" if serving["kept"] else "to its deletion"
    items = [
        item(
            f"endpoint {serving['endpoint']} variant {variant['variant']}, {until}",
            "hosting",
            variant["instance_type"],
            variant["count"],
            seconds,
            prices,
        )
        for variant in serving["variants"]
    ]
    return items, []


def host_items(ec2: Client, plan: Plan, prices: Prices, now: float) -> list[dict]:
    """The run's EC2 hosts (found by its tags, in any state), launch to termination."""
    from ml_pipeline.infra import tags  # noqa: PLC0415

    reservations = ec2.describe_instances(Filters=tags.run_filter(plan["key"]))["Reservations"]
    items = []
    for instance in (i for r in reservations for i in r["Instances"] if tags.is_run(i.get("Tags"), plan["key"])):
        launched = _seconds(instance["LaunchTime"]) or now
        state = instance.get("State", {}).get("Name")
        ended = _transition_time(instance.get("StateTransitionReason")) if state in ("terminated", "stopped") else None
        seconds = max(EC2_MINIMUM_SECONDS, (ended or now) - launched)
        running = "" if ended else f" ({state} at the run's end)"
        items.append(
            item(
                f"host {instance['InstanceId']}, launch to termination{running}",
                "ec2",
                instance["InstanceType"],
                1,
                seconds,
                prices,
            )
        )
    return items


def _transition_time(reason: str | None) -> float | None:
    match = _TRANSITION_TIME.search(reason or "")
    if not match:
        return None
    return datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S").replace(tzinfo=timezone.utc).timestamp()


def run_cost(
    client: Clients,
    plan: Plan,
    jobs: Mapping[str, Any],
    serving: Mapping[str, Any] | None = None,
    serving_end: float | None = None,
    budget_stops: Iterable[str] = (),
) -> dict[str, Any]:
    """``summary["cost"]``: {"total_usd", "spot_savings_usd", "items", "prices", "budget_usd"}, with "left_out"
    (what the total does not count, and why) and "budget_stopped" (the jobs max_cost_usd stopped) when any.
    ``serving``: ``endpoint_usage``'s, read before teardown, which ended it at ``serving_end``. Never raises:
    an estimate that cannot be made is {"error": why, ...}."""
    budget = plan["params"].get("max_cost_usd")
    stopped = [reason for reason in budget_stops if reason]
    try:
        prices = load_prices()
        now = time.time()
        items, left_out = training_items(client("sagemaker"), jobs, prices, now)
        others, gone = other_job_items(client("sagemaker"), jobs, prices, now)
        items += others
        left_out += gone
        hosted, not_read = endpoint_items(serving, serving_end or now, prices)
        items += hosted
        left_out += not_read
        if plan["params"].get("compute") == "host":
            items += host_items(client("ec2"), plan, prices, now)
    except Exception as error:  # noqa: BLE001 - the estimate never fails the run
        log.warning("the run's cost could not be estimated", exc_info=True)
        return {
            "error": f"the cost could not be estimated: {type(error).__name__}: {error}",
            "budget_usd": budget,
            **({"budget_stopped": stopped} if stopped else {}),
        }
    left_out += [
        f"{entry['what']}: {entry['unpriced']}, so it is not counted" for entry in items if "unpriced" in entry
    ]
    estimate: dict[str, Any] = {
        "total_usd": round(sum(entry["usd"] for entry in items if entry["usd"] is not None), 6),
        "spot_savings_usd": round(sum(entry.get("spot_savings_usd", 0.0) for entry in items), 6),
        "items": items,
        "prices": prices.label,
        "budget_usd": budget,
    }
    if left_out:
        estimate["left_out"] = left_out
    if stopped:
        estimate["budget_stopped"] = stopped
    return estimate


def cost_line(estimate: Mapping[str, Any] | None) -> str | None:
    """The estimate in the run's one-line outcome: "cost ~$0.0123" (and what it leaves out), or None."""
    if not estimate:
        return None
    if estimate.get("error"):
        return "cost unknown (" + estimate["error"] + ")"
    line = f"cost ~{money(estimate['total_usd'])}"
    if estimate.get("spot_savings_usd"):
        line += f" (spot saved ~{money(estimate['spot_savings_usd'])})"
    unpriced = sorted({entry["instance_type"] or "?" for entry in estimate.get("items", []) if entry["usd"] is None})
    if unpriced:
        line += f", not counting {', '.join(unpriced)} (no price)"
    return line
