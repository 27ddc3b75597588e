"""Search strategies of a tuning job: where the next trial's hyperparameters come from.

Random, Bayesian and Hyperband ask an optuna study (Bayesian is optuna's
Gaussian-process sampler, a real model-based optimiser, as SageMaker's is;
Hyperband is random sampling with optuna's Hyperband pruner stopping trials on
their intermediate objective values); Grid walks the product of categorical
values. Every strategy hears each finished trial's objective (``tell``).
"""

from __future__ import annotations

import itertools
import math
import threading

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

optuna.logging.set_verbosity(optuna.logging.WARNING)

# ReverseLogarithmic searches x in [min, max) < 1 on a log scale of 1 - x: the internal parameter is 1 - x.
_REVERSE = "__reverse_log__"


def _float_scale(scaling: str, low: float, high: float) -> str:
    if scaling == "Auto":  # SageMaker picks; a range spanning orders of magnitude is searched on a log scale
        return "Logarithmic" if low > 0 and high / low >= 100 else "Linear"
    return scaling


class SearchSpace:
    """A definition's ParameterRanges as optuna distributions, and back to SageMaker's strings."""

    def __init__(self, ranges: dict):
        self.distributions: dict[str, BaseDistribution] = {}
        self.reverse: set[str] = set()
        self.integers: set[str] = set()
        for item in ranges.get("IntegerParameterRanges", []):
            low, high = int(item["MinValue"]), int(item["MaxValue"])
            log = _float_scale(item.get("ScalingType", "Auto"), low, high) == "Logarithmic"
            self.distributions[item["Name"]] = IntDistribution(low, high, log=log)
            self.integers.add(item["Name"])
        for item in ranges.get("ContinuousParameterRanges", []):
            minimum, maximum = float(item["MinValue"]), float(item["MaxValue"])
            scaling = _float_scale(item.get("ScalingType", "Auto"), minimum, maximum)
            if scaling == "ReverseLogarithmic":
                self.reverse.add(item["Name"])
                self.distributions[item["Name"]] = FloatDistribution(1 - maximum, 1 - minimum, log=True)
            else:
                self.distributions[item["Name"]] = FloatDistribution(minimum, maximum, log=scaling == "Logarithmic")
        for item in ranges.get("CategoricalParameterRanges", []):
            self.distributions[item["Name"]] = CategoricalDistribution(list(item["Values"]))

    def to_hyperparameters(self, params: dict) -> dict[str, str]:
        out = {}
        for name, value in params.items():
            if name in self.reverse:
                value = 1 - value
            out[name] = str(int(value)) if name in self.integers else str(value)
        return out

    def from_hyperparameters(self, tuned: dict[str, str]) -> dict | None:
        """Internal params for a parent job's values, or None if they fall outside this space."""
        params: dict[str, str | int | float] = {}
        for name, distribution in self.distributions.items():
            if name not in tuned:
                return None
            raw = tuned[name]
            value: str | int | float
            try:
                if isinstance(distribution, CategoricalDistribution):
                    value = raw
                elif name in self.integers:
                    value = int(float(raw))
                else:
                    value = float(raw)
                    value = 1 - value if name in self.reverse else value
            except ValueError:
                return None
            if not distribution._contains(distribution.to_internal_repr(value)):
                return None
            params[name] = value
        return params


class Proposal:
    """One trial's hyperparameters and the handle the strategy needs to hear back about it."""

    def __init__(self, hyperparameters: dict[str, str], handle=None):
        self.hyperparameters = hyperparameters
        self.handle = handle
        self.reported_steps: set[int] = set()


class Strategy:
    """``propose()`` the next trial (None when the strategy has nothing left); ``tell()`` its result;
    ``report()`` an intermediate objective value and learn whether to stop the trial early."""

    def __init__(self, space: SearchSpace, objective_type: str, seed: int | None, max_jobs: int):
        self.space = space
        self.direction = "minimize" if objective_type == "Minimize" else "maximize"
        self.seed = seed
        self.max_jobs = max_jobs
        self.lock = threading.Lock()

    def propose(self) -> Proposal | None:
        raise NotImplementedError

    def tell(self, proposal: Proposal, value: float | None) -> None:
        pass

    def report(self, proposal: Proposal, step: int, value: float) -> bool:
        """Whether the trial should stop now (Hyperband only)."""
        return False

    def seed_with(self, tuned: dict[str, str], value: float) -> None:
        """A warm start's parent result."""


class _OptunaStrategy(Strategy):
    def __init__(self, space, objective_type, seed, max_jobs, sampler, pruner=None):
        super().__init__(space, objective_type, seed, max_jobs)
        self.study = optuna.create_study(direction=self.direction, sampler=sampler, pruner=pruner)

    def propose(self) -> Proposal:
        with self.lock:
            trial = self.study.ask(self.space.distributions)
        return Proposal(self.space.to_hyperparameters(trial.params), trial)

    def tell(self, proposal: Proposal, value: float | None) -> None:
        with self.lock:
            if value is None or not math.isfinite(value):
                self.study.tell(proposal.handle, state=TrialState.FAIL)
            else:
                self.study.tell(proposal.handle, value)

    def seed_with(self, tuned: dict[str, str], value: float) -> None:
        params = self.space.from_hyperparameters(tuned)
        if params is None or value is None:
            return
        internal = {name: (1 - v if name in self.space.reverse else v) for name, v in params.items()}
        with self.lock:
            self.study.add_trial(
                optuna.trial.create_trial(params=internal, distributions=self.space.distributions, value=value)
            )


class RandomStrategy(_OptunaStrategy):
    def __init__(self, space, objective_type, seed, max_jobs):
        super().__init__(space, objective_type, seed, max_jobs, optuna.samplers.RandomSampler(seed=seed))


class BayesianStrategy(_OptunaStrategy):
    """Gaussian-process Bayesian optimisation: after a few random trials, each proposal maximises the
    expected improvement of a GP fitted to every result so far."""

    def __init__(self, space, objective_type, seed, max_jobs, startup_trials: int = 2):
        sampler = optuna.samplers.GPSampler(
            seed=seed,
            n_startup_trials=startup_trials,
            independent_sampler=optuna.samplers.RandomSampler(seed=seed),
            warn_independent_sampling=False,
        )
        super().__init__(space, objective_type, seed, max_jobs, sampler)


class HyperbandStrategy(_OptunaStrategy):
    """Random proposals; optuna's Hyperband pruner stops trials whose intermediate objective (one value
    per epoch, read from the log) falls behind in their bracket, between MinResource and MaxResource."""

    def __init__(self, space, objective_type, seed, max_jobs, min_resource: int, max_resource: int):
        pruner = optuna.pruners.HyperbandPruner(min_resource=min_resource, max_resource=max_resource)
        super().__init__(space, objective_type, seed, max_jobs, optuna.samplers.RandomSampler(seed=seed), pruner)
        self.max_resource = max_resource

    def report(self, proposal: Proposal, step: int, value: float) -> bool:
        with self.lock:
            if step in proposal.reported_steps:
                return False
            proposal.reported_steps.add(step)
            proposal.handle.report(value, step)
            return step >= self.max_resource or proposal.handle.should_prune()


class GridStrategy(Strategy):
    """Every combination of the categorical values, each exactly once, in a fixed order."""

    def __init__(self, space, objective_type, seed, max_jobs):
        super().__init__(space, objective_type, seed, max_jobs)
        names = sorted(space.distributions)
        choices = [space.distributions[name].choices for name in names]
        self.grid = [dict(zip(names, combination, strict=True)) for combination in itertools.product(*choices)]
        self._next = 0

    def propose(self) -> Proposal | None:
        with self.lock:
            if self._next >= len(self.grid):
                return None
            params = self.grid[self._next]
            self._next += 1
        return Proposal(self.space.to_hyperparameters(params))


def make_strategy(config: dict, definition: dict, max_jobs: int) -> Strategy:
    name = config["Strategy"]
    objective = definition.get("TuningObjective") or config["HyperParameterTuningJobObjective"]
    ranges = definition.get("HyperParameterRanges") or config.get("ParameterRanges") or {}
    space = SearchSpace(ranges)
    seed = config.get("RandomSeed")
    if name == "Grid":
        return GridStrategy(space, objective["Type"], seed, max_jobs)
    if name == "Random":
        return RandomStrategy(space, objective["Type"], seed, max_jobs)
    if name == "Hyperband":
        hyperband = (config.get("StrategyConfig") or {}).get("HyperbandStrategyConfig") or {}
        return HyperbandStrategy(
            space,
            objective["Type"],
            seed,
            max_jobs,
            int(hyperband.get("MinResource", 1)),
            int(hyperband.get("MaxResource", 27)),
        )
    return BayesianStrategy(space, objective["Type"], seed, max_jobs)
