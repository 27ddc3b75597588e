"""A run's cost (plugins/ml_pipeline/cost.py) from what localaws says its jobs did, priced with the file in
include/prices/; the budget (max_cost_usd) stopping running jobs through the sensors' and the trigger's own
code; the refusals. The jobs run the digits trainer's stand-in (tests/localaws/images/quick-trainer): what
they cost is the point, not what they learn."""

from __future__ import annotations

import asyncio
import json
import math
import re
import time

import pytest

from tests.conftest import REPO_ROOT, unique
from tests.fixtures import digits_example
from tests.fixtures.images import QUICK_TRAINER, image_for
from tests.localaws.test_training_jobs import job_request
from tests.localaws.test_tuning import RANGES, create, definition, tuning_config, wait_tuning
from tests.support import localaws_connection, wait_for_training, wait_until

pytestmark = pytest.mark.timeout(600)


def file_prices(summary_cost: dict, group: str) -> dict[str, float]:
    """The prices of the file the estimate names, read here on their own."""
    name = summary_cost["prices"].split()[0]
    return json.loads((REPO_ROOT / "include" / "prices" / name).read_text())["groups"][group]["prices"]


class TaskInstance:
    """What a sensor's context gives it of Airflow's task instance: the XComs it pushes, kept here."""

    def __init__(self):
        self.pushed: dict[str, object] = {}

    def xcom_push(self, key: str, value: object) -> None:
        self.pushed[key] = value


@pytest.fixture(scope="module")
def aws_connection(localaws_process):
    """Airflow's aws_default connection, pointing at localaws (for the sensors' and the trigger's hooks)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(
            "AIRFLOW_CONN_AWS_DEFAULT",
            localaws_connection(localaws_process.endpoint_url),
        )
        yield


@pytest.fixture(scope="module")
def world(request, localaws_process):
    """A bucket fit for runs, the digits data in it, the stand-in trainer's image."""
    from tests.dags.test_open_run import private_encrypted

    s3 = localaws_process.client("s3")
    bucket = unique("cost")
    private_encrypted(s3, bucket)
    return {
        "bucket": bucket,
        "data": {"bucket": bucket, **digits_example.write_channels(s3, bucket, "datasets/digits", seed=5)},
        "image": image_for(request, localaws_process, QUICK_TRAINER, "quick-trainer"),
        "preset": digits_example.preset("quick"),
    }


def made(training: list[str], tuning: list[str] | None = None, budget_stops: list[str] | None = None) -> dict:
    """What the run's tasks returned, as the DAG hands it to close_run: jobs, no deploy, no stack."""
    hosting = {"endpoint": None, "autoscaling": None, "model": None, "endpoint_config": None, "serving_before": None}
    return {
        "hosting": hosting,
        "model_package": None,
        "jobs": {"training": training, "tuning": tuning or []},
        "provisioned": {},
        "outcome": {"gate": None},
        "budget_stops": budget_stops or [],
    }


@pytest.fixture(scope="module")
def trained(localaws_process, world):
    """A run that trained two jobs at once: on demand on two ml.c5.xlarge, and managed spot on one
    ml.m5.large; closed by close_run. {"run", "summary", "described": {name: DescribeTrainingJob}}."""
    from ml_pipeline.closing import close_run
    from tests.infra.support import plan

    sm = localaws_process.client("sagemaker")
    run = plan(compute="sagemaker", bucket=world["bucket"])
    names = {"on_demand": f"cost-{run['key']}-od", "spot": f"cost-{run['key']}-spot"}
    long_enough = {"epochs": "12", "early_stopping_patience": "12"}  # about 3.6 s of training
    on_demand = job_request(
        world["image"], world["data"], world["preset"], names["on_demand"], 0.3, hyperparameters=long_enough
    )
    on_demand["ResourceConfig"].update(InstanceType="ml.c5.xlarge", InstanceCount=2)
    spot = job_request(
        world["image"],
        world["data"],
        world["preset"],
        names["spot"],
        0.3,
        hyperparameters=long_enough,
        EnableManagedSpotTraining=True,
    )
    spot["StoppingCondition"]["MaxWaitTimeInSeconds"] = 600
    for request in (on_demand, spot):
        sm.create_training_job(**request)
    described = {name: wait_for_training(sm, name, timeout=300) for name in names.values()}
    for description in described.values():
        assert description["TrainingJobStatus"] == "Completed", description.get("FailureReason")
    summary = close_run(localaws_process.client, run, made(list(names.values())), {})
    return {"run": run, "names": names, "summary": summary, "described": described}


@pytest.mark.slow
def test_the_summary_cost_is_billable_seconds_times_count_times_the_files_price(trained):
    from ml_pipeline.closing import outcome_line
    from ml_pipeline.cost import money

    summary, described = trained["summary"], trained["described"]
    cost = summary["cost"]
    prices = file_prices(cost, "training")
    assert cost["prices"].startswith("aws-on-demand-") and "us-east-1" in cost["prices"]
    by_what = {entry["what"]: entry for entry in cost["items"]}
    assert set(by_what) == {f"training job {name}" for name in described}
    for name, description in described.items():
        entry = by_what[f"training job {name}"]
        instance_type = description["ResourceConfig"]["InstanceType"]
        count = description["ResourceConfig"]["InstanceCount"]
        billable = description["BillableTimeInSeconds"]
        assert (entry["instance_type"], entry["instance_count"], entry["billable_seconds"]) == (
            instance_type,
            count,
            billable,
        )
        assert entry["usd_per_hour"] == prices[instance_type]
        assert entry["usd"] == pytest.approx(billable * count * prices[instance_type] / 3600, abs=1e-6)
    on_demand = by_what[f"training job {trained['names']['on_demand']}"]
    assert on_demand["instance_count"] == 2 and on_demand["billable_seconds"] >= 3
    assert cost["total_usd"] == pytest.approx(sum(entry["usd"] for entry in cost["items"]), abs=1e-6)
    assert cost["total_usd"] > 0 and cost["budget_usd"] is None and "left_out" not in cost
    assert f"cost ~{money(cost['total_usd'])}" in outcome_line(summary)
    assert summary["state"] == "success"


@pytest.mark.slow
def test_a_spot_job_bills_its_training_at_the_spot_price_and_the_summary_shows_the_savings(trained):
    from ml_pipeline.closing import outcome_line

    cost, spot = trained["summary"]["cost"], trained["described"][trained["names"]["spot"]]
    price = file_prices(cost, "training")["ml.m5.large"]
    # AWS's BillableTimeInSeconds of a spot job: its training time at the spot price (localaws: 0.3 of it).
    trained_seconds, billable = spot["TrainingTimeInSeconds"], spot["BillableTimeInSeconds"]
    assert billable < trained_seconds and abs(billable - 0.3 * trained_seconds) <= 1
    [entry] = [e for e in cost["items"] if e.get("spot")]
    assert entry["training_seconds"] == trained_seconds
    saved = (trained_seconds - billable) * 1 * price / 3600
    assert entry["spot_savings_usd"] == pytest.approx(saved, abs=1e-6)
    assert cost["spot_savings_usd"] == pytest.approx(saved, abs=1e-6) and saved > 0
    assert "spot saved ~$" in outcome_line(trained["summary"])
    on_demand = trained["described"][trained["names"]["on_demand"]]
    assert on_demand["BillableTimeInSeconds"] == on_demand["TrainingTimeInSeconds"]  # on demand: all of it


@pytest.mark.slow
def test_a_type_without_a_price_is_named_and_left_out_of_the_total_never_counted_as_zero(
    localaws_process, trained, tmp_path, monkeypatch
):
    from ml_pipeline.cost import PRICES_ENV, cost_line, prices_path, run_cost

    document = json.loads(prices_path().read_text())
    del document["groups"]["training"]["prices"]["ml.c5.xlarge"]
    partial = tmp_path / "aws-on-demand-2026-12-03.json"
    partial.write_text(json.dumps(document))
    monkeypatch.setenv(PRICES_ENV, str(partial))
    cost = run_cost(localaws_process.client, trained["run"], trained["summary"]["jobs"])

    [unpriced] = [entry for entry in cost["items"] if entry["instance_type"] == "ml.c5.xlarge"]
    assert unpriced["usd"] is None and unpriced["usd_per_hour"] is None
    assert unpriced["unpriced"] == f"{partial.name} has no SageMaker training price for ml.c5.xlarge"
    assert cost["left_out"] == [f"{unpriced['what']}: {unpriced['unpriced']}, so it is not counted"]
    [spot] = [entry for entry in cost["items"] if entry["instance_type"] == "ml.m5.large"]
    assert cost["total_usd"] == spot["usd"]
    assert cost_line(cost).endswith("not counting ml.c5.xlarge (no price)")

    document["groups"]["training"]["prices"]["ml.m5.large"] = math.nan
    partial.write_text(json.dumps(document))  # NaN: Python's JSON reads it
    broken = run_cost(localaws_process.client, trained["run"], trained["summary"]["jobs"])
    assert "total_usd" not in broken
    assert broken["error"].endswith(f"{partial.name}: groups.training.prices.ml.m5.large: nan is not a price")
    assert cost_line(broken).startswith("cost unknown (the cost could not be estimated: PricesError")


def test_the_host_costs_its_ec2_time_from_launch_to_termination(localaws_process, world):
    from ml_pipeline.cost import EC2_MINIMUM_SECONDS, run_cost
    from ml_pipeline.infra import tags
    from tests.infra.support import plan

    run = plan(compute="host", bucket=world["bucket"], host_instance_type="g5.xlarge")
    ec2 = localaws_process.client("ec2")
    image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    [instance] = ec2.run_instances(
        ImageId=image,
        InstanceType="g5.xlarge",
        MinCount=1,
        MaxCount=1,
        TagSpecifications=tags.tag_spec("instance", tags.plan_tags(run, "host")),
    )["Instances"]
    ec2.terminate_instances(InstanceIds=[instance["InstanceId"]])
    cost = run_cost(localaws_process.client, run, {})
    price = file_prices(cost, "ec2")["g5.xlarge"]
    [entry] = cost["items"]
    assert entry["what"] == f"host {instance['InstanceId']}, launch to termination"
    # Terminated at once: EC2's minimum of a minute is billed.
    assert (entry["instance_type"], entry["billable_seconds"]) == ("g5.xlarge", EC2_MINIMUM_SECONDS)
    assert cost["total_usd"] == pytest.approx(EC2_MINIMUM_SECONDS * price / 3600, abs=1e-6)


@pytest.mark.slow
def test_the_budget_trigger_stops_a_training_job_past_max_cost_usd_and_the_run_fails_saying_so(
    localaws_process, world, aws_connection
):
    from airflow.sdk.exceptions import AirflowFailException, TaskDeferred
    from airflow.sdk.module_loading import import_string

    from ml_pipeline.closing import close_run, outcome_line
    from ml_pipeline.sensors.sagemaker import BUDGET_STOP_KEY, DeferrableTrainingSensor
    from ml_pipeline.triggers.sagemaker import SageMakerBudgetTrigger
    from tests.infra.support import plan

    sm = localaws_process.client("sagemaker")
    run = plan(compute="sagemaker", bucket=world["bucket"], max_cost_usd=0.1)
    name = f"budget-{run['key']}"
    request = job_request(
        world["image"],
        world["data"],
        world["preset"],
        name,
        0.1,
        hyperparameters={"epochs": "3000", "early_stopping_patience": "3000"},  # 5 minutes unless stopped
    )
    request["ResourceConfig"]["InstanceType"] = "ml.p4d.24xlarge"  # about a cent every second: 0.1 USD in 10 s
    sm.create_training_job(**request)
    wait_for_training(sm, name, until=("Training",), timeout=120)

    # The sensor as the DAG makes it: its budget the rendered template of the plan's.
    sensor = DeferrableTrainingSensor(
        task_id="wait_for_training_job", job_name=name, max_cost_usd="0.1", waiter_delay=1, aws_conn_id="aws_default"
    )
    ti = TaskInstance()
    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute({"ti": ti})
    trigger = deferred.value.trigger
    assert isinstance(trigger, SageMakerBudgetTrigger)
    path, kwargs = trigger.serialize()
    assert kwargs["usd_per_hour"] == {"ml.p4d.24xlarge": 37.688} and kwargs["budget_usd"] == 0.1
    rebuilt = import_string(path)(**kwargs)  # as the triggerer rebuilds it

    async def first_event():
        async for event in rebuilt.run():
            return event.payload
        return None

    event = asyncio.run(asyncio.wait_for(first_event(), timeout=180))
    assert event["status"] == "over_budget" and 0.1 < event["estimate_usd"] < 0.3
    pattern = rf"training job {name} stopped: its estimated cost \$0\.\d{{4}} passed max_cost_usd \$0\.1000"
    assert re.fullmatch(pattern, event["message"]), event["message"]
    done = wait_for_training(sm, name, timeout=120)
    assert done["TrainingJobStatus"] == "Stopped"
    # Stopped a few seconds of training past the budget, not minutes: 0.1 USD is about 10 s of it.
    assert done["BillableTimeInSeconds"] < 60

    with pytest.raises(AirflowFailException, match=re.escape(event["message"])):
        sensor.execute_complete({"ti": ti}, event)
    assert ti.pushed == {BUDGET_STOP_KEY: event["message"]}

    failed = {"train.wait_for_training_job": "failed"}
    summary = close_run(localaws_process.client, run, made([name], budget_stops=[event["message"]]), failed)
    assert summary["state"] == "failed"
    assert summary["cost"]["budget_stopped"] == [event["message"]] and summary["cost"]["budget_usd"] == 0.1
    [entry] = summary["cost"]["items"]
    assert entry["usd"] == pytest.approx(done["BillableTimeInSeconds"] * 37.688 / 3600, abs=1e-6)
    assert event["message"] in outcome_line(summary)


@pytest.mark.slow
def test_the_tuning_sensor_stops_a_tuning_job_whose_trials_pass_the_budget(localaws_process, world, aws_connection):
    from airflow.sdk.exceptions import AirflowFailException

    from ml_pipeline.sensors.sagemaker import BUDGET_STOP_KEY, DeferrableTuningSensor
    from tests.infra.support import plan

    sm = localaws_process.client("sagemaker")
    run = plan(compute="sagemaker", bucket=world["bucket"], mode="tune", max_cost_usd=0.01)
    name = run["names"]["tuning_job"]
    job_definition = definition(
        world["image"], world["data"], world["preset"], {"epochs": "3000", "early_stopping_patience": "3000"}, 0.1
    )
    job_definition["ResourceConfig"]["InstanceType"] = "ml.p4d.24xlarge"
    create(sm, name, tuning_config("Random", RANGES, 4, 2), job_definition)
    sensor = DeferrableTuningSensor(
        task_id="wait_for_tuning_job", job_name=name, max_cost_usd=0.01, deferrable=False, aws_conn_id="aws_default"
    )
    ti = TaskInstance()

    def poked() -> str | None:
        try:
            assert sensor.poke({"ti": ti}) is False
        except AirflowFailException as error:
            return str(error)
        return None

    message = wait_until(poked, timeout=240, poll=1, waiting_for="the tuning sensor to stop its job")
    assert re.fullmatch(
        rf"tuning job {name} stopped: its estimated cost \$0\.\d{{4}} passed max_cost_usd \$0\.0100", message
    )
    assert ti.pushed == {BUDGET_STOP_KEY: message}
    done = wait_tuning(sm, name, timeout=180)
    assert done["HyperParameterTuningJobStatus"] == "Stopped"


@pytest.mark.parametrize(
    ("value", "said"),
    [
        ("-1", "max_cost_usd: -1 is less than or equal to the minimum of 0"),
        ("0", "max_cost_usd: 0 is less than or equal to the minimum of 0"),
        ("ten", "max_cost_usd: 'ten' is not of type 'number', 'null'"),
        (".inf", "max_cost_usd: inf is not a finite number"),
        (".nan", "max_cost_usd: nan is not a finite number"),
    ],
)
def test_experiment_files_refuse_a_budget_that_is_not_a_positive_finite_number(tmp_path, value, said):
    from ml_pipeline import experiments
    from tests.dags.experiment_support import write_experiment

    folder = write_experiment(tmp_path, "spendy")
    text = (folder / "experiment.yaml").read_text()
    (folder / "experiment.yaml").write_text(text + f"max_cost_usd: {value}\n")
    with pytest.raises(experiments.ExperimentError) as refused:
        experiments.load(folder)
    assert str(refused.value) == f"experiments/spendy/experiment.yaml: {said}"


def test_the_budget_is_the_experiments_a_form_param_and_the_plans(tmp_path):
    import jsonschema

    from ml_pipeline import experiments
    from ml_pipeline.params import TRAINING, pipeline_params
    from ml_pipeline.plan import PlanError
    from tests.dags.experiment_support import plain, write_experiment
    from tests.infra.support import plan

    assert plain()["max_cost_usd"] is None
    experiment = experiments.load(write_experiment(tmp_path, "spendy", max_cost_usd=2.5))
    assert experiment["max_cost_usd"] == 2.5
    param = pipeline_params(experiment)["max_cost_usd"]
    assert param.value == 2.5 and param.schema["section"] == TRAINING
    validator = jsonschema.Draft202012Validator(param.schema)
    assert [validator.is_valid(v) for v in (None, 0.5, 1_000_000)] == [True, True, True]
    assert [validator.is_valid(v) for v in (0, -1, math.nan, math.inf, 1e7, "1")] == [False] * 6

    assert plan(experiment, bucket="cost-plans", max_cost_usd=1.5)["params"]["max_cost_usd"] == 1.5
    refusals = {
        "nan": ({"max_cost_usd": math.nan}, "max_cost_usd (Budget (USD)): nan is not a finite number"),
        "host": ({"max_cost_usd": 1.0, "compute": "host"}, "compute=host runs none (leave it empty)"),
        "unpriced": (
            {"max_cost_usd": 1.0, "instance_type": "ml.m8i.large"},
            "has no SageMaker training price for ml.m8i.large, so the budget could not be watched",
        ),
    }
    for overrides, said in refusals.values():
        with pytest.raises(PlanError, match=re.escape(said)):
            plan(experiment, bucket="cost-plans", **overrides)


def test_the_budget_watch_is_exact_at_the_boundary_and_counts_each_trial_on_its_definition():
    from ml_pipeline.cost import training_so_far, tuning_so_far

    started = time.time() - 100
    running = {"ResourceConfig": {"InstanceType": "ml.g5.xlarge", "InstanceCount": 2}, "TrainingStartTime": started}
    assert training_so_far(running, {"ml.g5.xlarge": 3.6}, now=started + 100) == pytest.approx(0.2)
    assert training_so_far({**running, "BillableTimeInSeconds": 50}, {"ml.g5.xlarge": 3.6}) == pytest.approx(0.1)
    assert training_so_far({**running, "TrainingStartTime": None}, {"ml.g5.xlarge": 3.6}) == 0
    with pytest.raises(KeyError, match="no training price for ml.g5.xlarge"):
        training_so_far(running, {})
    tuning = {
        "TrainingJobDefinitions": [
            {"DefinitionName": "small", "ResourceConfig": {"InstanceType": "ml.m5.large", "InstanceCount": 1}},
            {"DefinitionName": "big", "ResourceConfig": {"InstanceType": "ml.g5.xlarge", "InstanceCount": 4}},
        ]
    }
    trials = [
        {"TrainingJobDefinitionName": "small", "TrainingStartTime": started, "TrainingEndTime": started + 36},
        {"TrainingJobDefinitionName": "big", "TrainingStartTime": started + 50},
    ]
    prices = {"ml.m5.large": 1.0, "ml.g5.xlarge": 3.6}
    assert tuning_so_far(tuning, trials, prices, now=started + 100) == pytest.approx(0.01 + 50 * 4 * 0.001)
