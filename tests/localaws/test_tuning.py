"""Hyperparameter tuning jobs through localaws over HTTP with boto3. Their trials run the digits
trainer's stand-in (tests/localaws/images/quick-trainer), which prints the metrics its hyperparameters
imply in a fraction of a second: the executor's counters, parallelism, stopping and strategies are what
these tests are about, not training (the real network is tuned end to end in tests/pipeline). The
strategies' proposals are tested in-process in test_tuning_strategies.py."""

from __future__ import annotations

import itertools
import time

import pytest
from botocore.exceptions import ClientError

from tests.conftest import unique
from tests.fixtures import digits_example
from tests.support import ROLE_ARN, unknown_members

pytestmark = [pytest.mark.timeout(900), pytest.mark.slow]  # tuning jobs of several trials each
TERMINAL = ("Completed", "Failed", "Stopped")


def definition(image, data, preset, static=None, epoch_seconds=None, **extra):
    """A trial's definition; ``epoch_seconds``: how long each of the stand-in's epochs takes."""
    from ml_pipeline.config import sagemaker_hyperparameters

    if epoch_seconds is not None:
        extra["Environment"] = {"EPOCH_SECONDS": str(epoch_seconds)}
    return {
        "StaticHyperParameters": {**sagemaker_hyperparameters(preset), **(static or {})},
        "AlgorithmSpecification": {
            "TrainingImage": image,
            "TrainingInputMode": "File",
            "MetricDefinitions": digits_example.experiment()["metric_definitions"],
        },
        "RoleArn": ROLE_ARN,
        "InputDataConfig": [
            {
                "ChannelName": name,
                "DataSource": {
                    "S3DataSource": {
                        "S3DataType": "S3Prefix",
                        "S3Uri": data[name],
                        "S3DataDistributionType": "FullyReplicated",
                    }
                },
            }
            for name in ("train", "validation")
        ],
        "OutputDataConfig": {"S3OutputPath": f"s3://{data['bucket']}/tuning"},
        "ResourceConfig": {"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 10},
        "StoppingCondition": {"MaxRuntimeInSeconds": 600},
        **extra,
    }


def tuning_config(strategy, ranges, max_jobs=None, parallel=2, objective_type="Minimize", **extra):
    config = {
        "Strategy": strategy,
        "HyperParameterTuningJobObjective": {"Type": objective_type, "MetricName": "validation:loss"},
        "ResourceLimits": {"MaxParallelTrainingJobs": parallel},
        "ParameterRanges": ranges,
        **extra,
    }
    if max_jobs is not None:
        config["ResourceLimits"]["MaxNumberOfTrainingJobs"] = max_jobs
    return config


def strip_static(ranges: dict, static: dict) -> dict:
    names = {item["Name"] for kind in ranges.values() for item in kind}
    return {key: value for key, value in static.items() if key not in names}


def create(sm, name, config, job_definition, **extra):
    job_definition["StaticHyperParameters"] = strip_static(
        config["ParameterRanges"], job_definition["StaticHyperParameters"]
    )
    return sm.create_hyper_parameter_tuning_job(
        HyperParameterTuningJobName=name,
        HyperParameterTuningJobConfig=config,
        TrainingJobDefinition=job_definition,
        **extra,
    )


def children(sm, name) -> list[dict]:
    return [
        s
        for page in sm.get_paginator("list_training_jobs_for_hyper_parameter_tuning_job").paginate(
            HyperParameterTuningJobName=name
        )
        for s in page["TrainingJobSummaries"]
    ]


def wait_tuning(sm, name, timeout=600, check=None) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        description = sm.describe_hyper_parameter_tuning_job(HyperParameterTuningJobName=name)
        if check:
            check(description)
        if description["HyperParameterTuningJobStatus"] in TERMINAL:
            return description
        assert time.monotonic() < deadline, f"{name} still {description['HyperParameterTuningJobStatus']}"
        time.sleep(0.5)


RANGES = {
    "ContinuousParameterRanges": [
        {"Name": "learning_rate", "MinValue": "0.002", "MaxValue": "0.05", "ScalingType": "Logarithmic"},
        {"Name": "dropout", "MinValue": "0.0", "MaxValue": "0.4", "ScalingType": "Linear"},
    ],
    "IntegerParameterRanges": [{"Name": "hidden_units", "MinValue": "32", "MaxValue": "128", "ScalingType": "Auto"}],
}


@pytest.mark.runners
def test_six_trials_two_at_a_time_and_the_best_is_the_best(localaws, data, preset, quick_trainer):
    sm = localaws.client("sagemaker")
    name = unique("tune")[:32]
    seen_in_progress = []

    def check(description):
        counters = description["TrainingJobStatusCounters"]
        listed = children(sm, name)
        assert counters["InProgress"] <= 2
        assert sum(counters.values()) <= 6
        assert sum(description["ObjectiveStatusCounters"].values()) <= 6
        seen_in_progress.append(counters["InProgress"])
        if description["HyperParameterTuningJobStatus"] in TERMINAL:
            assert sum(counters.values()) == len(listed)

    create(
        sm,
        name,
        tuning_config("Random", RANGES, 6, 2, RandomSeed=3),
        definition(quick_trainer, data, preset, epoch_seconds=0.1),
    )
    done = wait_tuning(sm, name, check=check)
    assert done["HyperParameterTuningJobStatus"] == "Completed", done.get("FailureReason")
    assert unknown_members("sagemaker", "DescribeHyperParameterTuningJob", done) == []
    assert done["TrainingJobStatusCounters"]["Completed"] == 6
    assert done["ObjectiveStatusCounters"] == {"Succeeded": 6, "Pending": 0, "Failed": 0}
    assert max(seen_in_progress) == 2

    listed = children(sm, name)
    assert len(listed) == 6
    for summary in listed:
        assert summary["TrainingJobName"].startswith(name + "-")
        assert set(summary["TunedHyperParameters"]) == {"learning_rate", "dropout", "hidden_units"}
        child = sm.describe_training_job(TrainingJobName=summary["TrainingJobName"])
        assert child["TuningJobArn"] == done["HyperParameterTuningJobArn"]
        assert child["HyperParameters"]["_tuning_objective_metric"] == "validation:loss"
        assert child["HyperParameters"]["learning_rate"] == summary["TunedHyperParameters"]["learning_rate"]
    values = {s["TrainingJobName"]: s["FinalHyperParameterTuningJobObjectiveMetric"]["Value"] for s in listed}
    assert done["BestTrainingJob"]["TrainingJobName"] == min(values, key=values.get)
    best_first = sm.list_training_jobs_for_hyper_parameter_tuning_job(
        HyperParameterTuningJobName=name, SortBy="FinalObjectiveMetricValue", SortOrder="Ascending"
    )
    assert best_first["TrainingJobSummaries"][0]["TrainingJobName"] == done["BestTrainingJob"]["TrainingJobName"]

    # Truly in parallel: at least two trials overlapped in time.
    spans = sorted((c["TrainingStartTime"], c["TrainingEndTime"]) for c in listed)
    assert any(later[0] < earlier[1] for earlier, later in zip(spans, spans[1:], strict=False))


def test_grid_covers_its_grid_exactly(localaws, data, preset, quick_trainer):
    sm = localaws.client("sagemaker")
    name = unique("grid")[:32]
    ranges = {
        "CategoricalParameterRanges": [
            {"Name": "optimizer", "Values": ["adam", "sgd"]},
            {"Name": "batch_size", "Values": ["16", "32", "64"]},
        ]
    }
    create(sm, name, tuning_config("Grid", ranges, parallel=2), definition(quick_trainer, data, preset))
    done = wait_tuning(sm, name)
    assert done["HyperParameterTuningJobStatus"] == "Completed", done.get("FailureReason")
    tried = sorted(
        (s["TunedHyperParameters"]["optimizer"], s["TunedHyperParameters"]["batch_size"]) for s in children(sm, name)
    )
    assert tried == sorted(itertools.product(["adam", "sgd"], ["16", "32", "64"]))


def test_a_failing_child_is_counted_and_the_rest_go_on(localaws, data, preset, quick_trainer):
    sm = localaws.client("sagemaker")
    name = unique("fails")[:32]
    ranges = {
        "CategoricalParameterRanges": [
            {"Name": "optimizer", "Values": ["adam", "no-such-optimizer"]},
            {"Name": "batch_size", "Values": ["16", "32"]},
        ]
    }
    create(sm, name, tuning_config("Grid", ranges, parallel=2), definition(quick_trainer, data, preset))
    done = wait_tuning(sm, name)
    assert done["HyperParameterTuningJobStatus"] == "Completed"
    assert done["TrainingJobStatusCounters"]["Completed"] == 2
    assert done["TrainingJobStatusCounters"]["NonRetryableError"] == 2
    assert done["ObjectiveStatusCounters"] == {"Succeeded": 2, "Pending": 0, "Failed": 2}
    assert done["BestTrainingJob"]["TunedHyperParameters"]["optimizer"] == "adam"
    failed = [s for s in children(sm, name) if s["TrainingJobStatus"] == "Failed"]
    assert all("optimizer" in s["FailureReason"] for s in failed)


def test_tuning_fails_only_when_every_child_fails(localaws, data, preset, quick_trainer):
    sm = localaws.client("sagemaker")
    name = unique("allfail")[:32]
    ranges = {"CategoricalParameterRanges": [{"Name": "optimizer", "Values": ["bogus-a", "bogus-b"]}]}
    create(sm, name, tuning_config("Grid", ranges), definition(quick_trainer, data, preset))
    done = wait_tuning(sm, name)
    assert done["HyperParameterTuningJobStatus"] == "Failed"
    assert "All training jobs failed" in done["FailureReason"]
    assert "BestTrainingJob" not in done


def test_bayesian_proposals_depend_on_earlier_results(localaws, data, preset, quick_trainer):
    """Same seed, same ranges, opposite objective directions: the GP's random start-up proposals
    agree, the model-based one that follows cannot: the executor tells the strategy each trial's
    objective. (Random search, the control, agrees throughout: test_tuning_strategies.py.)"""
    sm = localaws.client("sagemaker")
    ranges = {
        "ContinuousParameterRanges": [
            {"Name": "learning_rate", "MinValue": "0.001", "MaxValue": "0.1", "ScalingType": "Logarithmic"}
        ]
    }

    def proposals(strategy, objective_type):
        name = unique(f"{strategy[:3].lower()}{objective_type[:3].lower()}")[:32]
        create(
            sm,
            name,
            tuning_config(strategy, ranges, 3, 1, objective_type, RandomSeed=11),
            definition(quick_trainer, data, preset),
        )
        assert wait_tuning(sm, name)["HyperParameterTuningJobStatus"] == "Completed"
        listed = sorted(children(sm, name), key=lambda s: s["CreationTime"])
        return [float(s["TunedHyperParameters"]["learning_rate"]) for s in listed]

    minimize, maximize = proposals("Bayesian", "Minimize"), proposals("Bayesian", "Maximize")
    assert minimize[:2] == maximize[:2]  # random start-up, same seed
    assert minimize[2:] != maximize[2:]  # fitted to the results, opposite goals


def test_stopping_the_tuning_job_stops_its_children(localaws, data, preset, quick_trainer):
    sm = localaws.client("sagemaker")
    name = unique("stop")[:32]
    create(
        sm,
        name,
        tuning_config("Random", RANGES, 6, 2),
        definition(quick_trainer, data, preset, {"epochs": "5000", "early_stopping_patience": "5000"}),
    )
    deadline = time.monotonic() + 300
    while (
        sm.describe_hyper_parameter_tuning_job(HyperParameterTuningJobName=name)["TrainingJobStatusCounters"][
            "InProgress"
        ]
        < 2
    ):
        assert time.monotonic() < deadline
        time.sleep(0.5)
    sm.stop_hyper_parameter_tuning_job(HyperParameterTuningJobName=name)
    assert sm.describe_hyper_parameter_tuning_job(HyperParameterTuningJobName=name)[
        "HyperParameterTuningJobStatus"
    ] in ("Stopping", "Stopped")
    done = wait_tuning(sm, name, timeout=180)
    assert done["HyperParameterTuningJobStatus"] == "Stopped"
    listed = children(sm, name)
    assert len(listed) == 2
    assert {s["TrainingJobStatus"] for s in listed} == {"Stopped"}


def test_auto_early_stopping_stops_a_clearly_losing_trial(localaws, data, preset, quick_trainer):
    sm = localaws.client("sagemaker")
    name = unique("early")[:32]
    ranges = {"CategoricalParameterRanges": [{"Name": "learning_rate", "Values": ["0.01", "0.02", "0.0000001"]}]}
    config = tuning_config("Grid", ranges, parallel=1, TrainingJobEarlyStoppingType="Auto")
    create(
        sm,
        name,
        config,
        definition(quick_trainer, data, preset, {"epochs": "30", "early_stopping_patience": "30"}, epoch_seconds=0.1),
    )
    done = wait_tuning(sm, name)
    assert done["HyperParameterTuningJobStatus"] == "Completed"
    by_rate = {s["TunedHyperParameters"]["learning_rate"]: s for s in children(sm, name)}
    assert by_rate["0.0000001"]["TrainingJobStatus"] == "Stopped"
    assert by_rate["0.01"]["TrainingJobStatus"] == "Completed"
    assert done["BestTrainingJob"]["TunedHyperParameters"]["learning_rate"] in ("0.01", "0.02")


def test_warm_start_and_several_definitions(localaws, data, preset, quick_trainer):
    sm = localaws.client("sagemaker")
    parent = unique("parent")[:32]
    create(sm, parent, tuning_config("Random", RANGES, 2, 2, RandomSeed=1), definition(quick_trainer, data, preset))
    parent_done = wait_tuning(sm, parent)

    child = unique("warm")[:32]
    defs = []
    for optimizer in ("adam", "sgd"):
        job_definition = definition(quick_trainer, data, preset, {"optimizer": optimizer})
        job_definition["StaticHyperParameters"] = strip_static(RANGES, job_definition["StaticHyperParameters"])
        job_definition["DefinitionName"] = optimizer
        job_definition["HyperParameterRanges"] = RANGES
        job_definition["TuningObjective"] = {"Type": "Minimize", "MetricName": "validation:loss"}
        defs.append(job_definition)
    config = tuning_config("Bayesian", RANGES, 4, 2)
    del config["ParameterRanges"], config["HyperParameterTuningJobObjective"]
    sm.create_hyper_parameter_tuning_job(
        HyperParameterTuningJobName=child,
        HyperParameterTuningJobConfig=config,
        TrainingJobDefinitions=defs,
        WarmStartConfig={
            "ParentHyperParameterTuningJobs": [{"HyperParameterTuningJobName": parent}],
            "WarmStartType": "TransferLearning",
        },
    )
    done = wait_tuning(sm, child)
    assert done["HyperParameterTuningJobStatus"] == "Completed", done.get("FailureReason")
    assert unknown_members("sagemaker", "DescribeHyperParameterTuningJob", done) == []
    names = {s["TrainingJobDefinitionName"] for s in children(sm, child)}
    assert names == {"adam", "sgd"}
    everything = [parent_done["BestTrainingJob"], done["BestTrainingJob"]]
    best = min(everything, key=lambda s: s["FinalHyperParameterTuningJobObjectiveMetric"]["Value"])
    assert done["OverallBestTrainingJob"]["TrainingJobName"] == best["TrainingJobName"]


def test_hyperband_stops_trials_by_max_resource_and_pruning(localaws, data, preset, quick_trainer):
    sm = localaws.client("sagemaker")
    name = unique("hyper")[:32]
    config = tuning_config(
        "Hyperband", RANGES, 6, 2, StrategyConfig={"HyperbandStrategyConfig": {"MinResource": 1, "MaxResource": 9}}
    )
    create(
        sm,
        name,
        config,
        definition(quick_trainer, data, preset, {"epochs": "40", "early_stopping_patience": "40"}, epoch_seconds=0.2),
    )
    done = wait_tuning(sm, name)
    assert done["HyperParameterTuningJobStatus"] == "Completed", done.get("FailureReason")
    listed = children(sm, name)
    assert len(listed) == 6
    # No trial trains past MaxResource epochs: Hyperband stops it there, or earlier when it lags.
    assert {s["TrainingJobStatus"] for s in listed} == {"Stopped"}
    assert "BestTrainingJob" in done


def test_tuning_errors_are_aws_errors(localaws, data, preset, quick_trainer):
    sm = localaws.client("sagemaker")
    with pytest.raises(ClientError) as error:
        sm.describe_hyper_parameter_tuning_job(HyperParameterTuningJobName="no-such-tuning")
    assert error.value.response["Error"]["Code"] == "ResourceNotFound"

    bad_metric = tuning_config("Random", RANGES, 2, 1)
    bad_metric["HyperParameterTuningJobObjective"]["MetricName"] = "test:nonexistent"
    with pytest.raises(ClientError) as error:
        create(sm, unique("bad")[:32], bad_metric, definition(quick_trainer, data, preset))
    assert error.value.response["Error"]["Code"] == "ValidationException"
    assert "MetricDefinitions" in error.value.response["Error"]["Message"]

    grid_with_continuous = tuning_config("Grid", RANGES)
    with pytest.raises(ClientError) as error:
        create(sm, unique("bad")[:32], grid_with_continuous, definition(quick_trainer, data, preset))
    assert "categorical" in error.value.response["Error"]["Message"]

    too_parallel = tuning_config("Random", RANGES, 2, 3)
    with pytest.raises(ClientError) as error:
        create(sm, unique("bad")[:32], too_parallel, definition(quick_trainer, data, preset))
    assert error.value.response["Error"]["Code"] == "ValidationException"

    name = unique("dup")[:32]
    create(sm, name, tuning_config("Random", RANGES, 1, 1), definition(quick_trainer, data, preset))
    with pytest.raises(ClientError) as error:
        create(sm, name, tuning_config("Random", RANGES, 1, 1), definition(quick_trainer, data, preset))
    assert error.value.response["Error"]["Code"] == "ResourceInUse"
    wait_tuning(sm, name)
    listed = sm.list_hyper_parameter_tuning_jobs(NameContains=name)["HyperParameterTuningJobSummaries"]
    assert [s["HyperParameterTuningJobName"] for s in listed] == [name]
