"""The tuning strategies in-process (localaws/sagemaker/tuning/strategies.py): where each next trial's
hyperparameters come from, given the results told so far. No server: the objective is a function of
the proposal. Tuning jobs through localaws over HTTP, with each strategy once, are in test_tuning.py."""

from __future__ import annotations

import itertools
import math

from localaws.sagemaker.tuning.strategies import SearchSpace, make_strategy

LEARNING_RATE = {
    "ContinuousParameterRanges": [
        {"Name": "learning_rate", "MinValue": "0.001", "MaxValue": "0.1", "ScalingType": "Logarithmic"}
    ]
}


def config(strategy: str, objective_type: str = "Minimize", ranges=LEARNING_RATE, **extra) -> dict:
    return {
        "Strategy": strategy,
        "RandomSeed": 11,
        "ParameterRanges": ranges,
        "HyperParameterTuningJobObjective": {"Type": objective_type, "MetricName": "validation:loss"},
        **extra,
    }


def loss(hyperparameters: dict[str, str]) -> float:
    """Lowest at learning_rate 0.01, as the stand-in trainer's (tests/localaws/images/quick-trainer)."""
    return 0.05 + 0.3 * math.log10(float(hyperparameters["learning_rate"]) / 0.01) ** 2


def proposals(strategy_name: str, objective_type: str, trials: int = 5) -> list[float]:
    """The learning rates a strategy proposes, one trial at a time, each told its loss before the next."""
    strategy = make_strategy(config(strategy_name, objective_type), {}, trials)
    tried = []
    for _ in range(trials):
        proposal = strategy.propose()
        strategy.tell(proposal, loss(proposal.hyperparameters))
        tried.append(float(proposal.hyperparameters["learning_rate"]))
    return tried


def test_bayesian_proposals_depend_on_earlier_results():
    """Same seed, opposite objective directions: the GP's random start-up proposals agree, the
    model-based ones that follow cannot."""
    minimize, maximize = proposals("Bayesian", "Minimize"), proposals("Bayesian", "Maximize")
    assert minimize[:2] == maximize[:2]
    assert minimize[2:] != maximize[2:]
    assert all(0.001 <= rate <= 0.1 for rate in minimize + maximize)


def test_random_proposals_ignore_the_results():
    """The control: random search with the same seed proposes the same whatever the goal."""
    assert proposals("Random", "Minimize") == proposals("Random", "Maximize")


def test_a_failed_trial_is_told_without_a_value():
    strategy = make_strategy(config("Bayesian"), {}, 4)
    for value in (None, math.nan, 0.5):
        proposal = strategy.propose()
        strategy.tell(proposal, value)
    assert [t.state.name for t in strategy.study.trials] == ["FAIL", "FAIL", "COMPLETE"]


def test_grid_proposes_each_combination_once_then_nothing():
    ranges = {
        "CategoricalParameterRanges": [
            {"Name": "optimizer", "Values": ["adam", "sgd"]},
            {"Name": "batch_size", "Values": ["16", "32", "64"]},
        ]
    }
    strategy = make_strategy(config("Grid", ranges=ranges), {}, 100)
    seen = []
    while (proposal := strategy.propose()) is not None:
        seen.append((proposal.hyperparameters["optimizer"], proposal.hyperparameters["batch_size"]))
    assert sorted(seen) == sorted(itertools.product(["adam", "sgd"], ["16", "32", "64"]))


def test_hyperband_stops_a_trial_at_max_resource_at_the_latest():
    strategy = make_strategy(
        config("Hyperband", StrategyConfig={"HyperbandStrategyConfig": {"MinResource": 1, "MaxResource": 9}}), {}, 6
    )
    proposal = strategy.propose()
    stops = [strategy.report(proposal, step, 1.0 / step) for step in range(1, 10)]
    assert stops[-1] is True
    assert strategy.report(proposal, 9, 0.1) is False  # a step heard twice is not judged again


def test_a_definitions_own_ranges_and_objective_win_over_the_configs():
    definition = {
        "HyperParameterRanges": {
            "IntegerParameterRanges": [
                {"Name": "hidden_units", "MinValue": "32", "MaxValue": "128", "ScalingType": "Linear"}
            ]
        },
        "TuningObjective": {"Type": "Maximize", "MetricName": "validation:accuracy"},
    }
    strategy = make_strategy(config("Random"), definition, 3)
    assert strategy.direction == "maximize"
    assert set(strategy.propose().hyperparameters) == {"hidden_units"}


def test_search_space_round_trips_sagemakers_strings():
    space = SearchSpace(
        {
            "IntegerParameterRanges": [{"Name": "units", "MinValue": "1", "MaxValue": "1000", "ScalingType": "Auto"}],
            "ContinuousParameterRanges": [
                {"Name": "momentum", "MinValue": "0.9", "MaxValue": "0.999", "ScalingType": "ReverseLogarithmic"}
            ],
            "CategoricalParameterRanges": [{"Name": "optimizer", "Values": ["adam", "sgd"]}],
        }
    )
    assert space.distributions["units"].log  # Auto over three orders of magnitude: a log scale
    tuned = space.to_hyperparameters({"units": 12, "momentum": 1 - 0.95, "optimizer": "sgd"})
    assert tuned == {"units": "12", "momentum": "0.95", "optimizer": "sgd"}
    assert space.from_hyperparameters(tuned) == {"units": 12, "momentum": 1 - 0.95, "optimizer": "sgd"}
    assert space.from_hyperparameters({**tuned, "units": "5000"}) is None  # outside: not a warm start
    assert space.from_hyperparameters({"units": "12"}) is None
