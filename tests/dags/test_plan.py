"""``make_plan``: what it refuses before anything is created, and what it resolves (no AWS call)."""

from __future__ import annotations

import copy
import math

import pytest

from tests.dags.experiment_support import plain, write_experiment
from tests.infra.support import params, plan


def refused(**overrides) -> str:
    from ml_pipeline.plan import PlanError

    with pytest.raises(PlanError) as raised:
        plan(**overrides)
    return str(raised.value)


# --- names, checked as the AWS service they go to checks them ---------------------------------------


@pytest.mark.parametrize(
    "name", ["plain/../../x", "plain/./x", "-plain", "Plain", "plain//x", "d", "a" * 257, "plain/", "plain..x"]
)
def test_an_ecr_repository_ecr_would_refuse_is_refused_by_its_schema_and_by_plan(name):
    from airflow.sdk.definitions.param import ParamsDict

    from ml_pipeline.params import pipeline_params

    assert "ecr_repository" in refused(ecr_repository=name)
    form = ParamsDict(copy.deepcopy(pipeline_params(plain())))
    with pytest.raises(Exception, match="ecr_repository"):
        form["ecr_repository"] = name  # a ParamsDict validates on assignment
        form.validate()


@pytest.mark.parametrize("name", ["plain-training", "team/plain_training", "a.b", "ns/sub/repo-1", "a__b", "ab"])
def test_ecr_repository_names_ecr_takes_are_accepted(name):
    assert plan(ecr_repository=name)["params"]["ecr_repository"] == name


def test_each_name_params_schema_is_the_aws_models_pattern():
    """The trigger form and plan refuse the same names: the Param's pattern is botocore's, anchored."""
    import botocore.session

    from ml_pipeline.infra.params import infra_params
    from ml_pipeline.params import pipeline_params
    from ml_pipeline.plan import NAME_SHAPES

    session = botocore.session.get_session()
    form = {**pipeline_params(plain()), **infra_params()}
    compared = []
    for name, (service, shape) in NAME_SHAPES.items():
        model = session.get_service_model(service).shape_for(shape).metadata
        if "pattern" not in model:  # e.g. SSM's parameter names: plan checks the length, the Param a stricter pattern
            continue
        schema = form[name].schema
        assert schema["pattern"] == f"^{model['pattern']}$", name
        assert schema["maxLength"] == model["max"], name
        if model.get("min", 0) > 1:
            assert schema["minLength"] == model["min"], name
        compared.append(name)
    assert set(compared) == {"ecr_repository", "model_package_group", "endpoint_name", "role_arn"}


@pytest.mark.parametrize(
    "bucket, words",
    [
        ("my..bucket", "two adjacent dots"),
        ("192.168.10.20", "IP address"),
        ("xn--bucket", "reserved by S3"),
        ("data--ol-s3", "reserved by S3"),
        ("ab", "is not an S3 bucket name"),
    ],
)
def test_bucket_names_s3_would_refuse_are_refused(bucket, words):
    assert words in refused(bucket=bucket)


# --- numbers: finite, wherever they come from ---------------------------------------------------------


@pytest.mark.parametrize(
    "name, value",
    [
        ("stack_ttl_hours", math.nan),
        ("stack_ttl_hours", -math.inf),
        ("hyperparameters", {"max_depth": math.inf}),
    ],
)
def test_non_finite_numbers_are_refused_by_plan_naming_the_field(name, value):
    message = refused(**{name: value})
    assert message.count(f"\n- {name}") == 1 and "is not a finite number" in message, message


def test_every_number_param_refuses_nan_and_infinity_in_its_schema():
    """The trigger form and the REST API (whose JSON parser, like Python's, accepts NaN) validate against these."""
    from airflow.sdk.definitions.param import ParamsDict

    from ml_pipeline.infra.params import infra_params
    from ml_pipeline.params import pipeline_params

    numbers = {
        name
        for name, p in {**pipeline_params(plain()), **infra_params()}.items()
        if "number" in str(p.schema.get("type"))
    }
    assert numbers >= {"stack_ttl_hours"}
    for name in numbers:
        for value in (math.nan, math.inf, -math.inf):
            form = ParamsDict(copy.deepcopy({**pipeline_params(plain()), **infra_params()}))
            with pytest.raises(Exception, match=name):
                form[name] = value  # a ParamsDict validates on assignment
                form.validate()
        form = ParamsDict(copy.deepcopy({**pipeline_params(plain()), **infra_params()}))
        form.validate()  # the finite defaults pass


def test_the_api_servers_copy_of_the_params_refuses_nan():
    """What the API server validates a triggered run's conf with: the serialized DAG's params."""
    from airflow.serialization.serialized_objects import DagSerialization

    from ml_pipeline.pipeline_dag import build_dag

    served = DagSerialization.from_dict(DagSerialization.to_dict(build_dag(plain())))
    with pytest.raises(Exception, match="stack_ttl_hours"):
        served.params.deep_merge({"stack_ttl_hours": math.nan}).validate()
    with pytest.raises(Exception, match="hyperparameters"):
        served.params.deep_merge({"hyperparameters": {"max_depth": math.nan}}).validate()
    served.params.deep_merge({"stack_ttl_hours": 0.5}).validate()


# --- empty in the form means the preset's, else the experiment's -------------------------------------


def test_empty_training_fields_take_the_presets_values_else_the_experiments():
    quick = plan(preset="quick")
    assert (quick["params"]["instance_type"], quick["params"]["max_runtime_seconds"]) == ("ml.m5.large", 600)
    assert quick["params"]["instance_count"] == 1
    big = plan(preset="big")
    assert (big["params"]["instance_type"], big["params"]["instance_count"]) == ("ml.m5.2xlarge", 2)
    assert big["params"]["max_runtime_seconds"] == 900  # big names none: the experiment's


def test_a_value_given_in_the_form_wins_over_the_presets():
    chosen = plan(preset="quick", instance_type="ml.c5.xlarge", max_runtime_seconds=900, instance_count=2)
    assert (
        chosen["params"]["instance_type"],
        chosen["params"]["max_runtime_seconds"],
        chosen["params"]["instance_count"],
    ) == ("ml.c5.xlarge", 900, 2)


def test_tune_mode_takes_the_tunings_base_preset():
    # The tuning tunes over the quick preset: its jobs are quick's, whatever Hyperparameter preset says.
    tuned = plan(mode="tune", preset="big")
    assert (tuned["params"]["instance_type"], tuned["params"]["max_runtime_seconds"]) == ("ml.m5.large", 600)


def test_the_presets_storage_volume_reaches_the_job(tmp_path):
    from ml_pipeline import experiments
    from ml_pipeline.plan import DEFAULT_VOLUME_GB

    experiment = experiments.load(
        write_experiment(
            tmp_path, "roomy", presets={"quick": {"hyperparameters": {"n_estimators": 20}, "volume_size_gb": 50}}
        )
    )
    assert plan(experiment)["params"]["volume_size_gb"] == 50 != DEFAULT_VOLUME_GB
    assert plan(experiment, preset=None)["params"]["volume_size_gb"] == DEFAULT_VOLUME_GB


def test_the_spot_rule_is_judged_on_the_resolved_runtime():
    # quick's 600 s fits in a 700 s spot wait; the experiment's 900 s does not.
    assert plan(preset="quick", use_spot=True, max_wait_seconds=700)["params"]["max_runtime_seconds"] == 600
    assert "max_wait_seconds" in refused(preset=None, use_spot=True, max_wait_seconds=700)


def test_the_params_defaults_are_a_valid_run():
    assert params()["instance_type"] is None  # empty in the form
    assert plan()["params"]["instance_type"] == "ml.m5.large"


# --- the plan's type --------------------------------------------------------------------------------


def test_the_plans_type_names_every_param_and_every_part_make_plan_fills():
    """``Plan`` and its parts say what ``make_plan`` returns: every Param of the form (and the preset's
    volume), every name, and no key that is not there; and it is plain JSON, as XCom carries it."""
    import json

    from ml_pipeline.infra.params import infra_params
    from ml_pipeline.params import pipeline_params
    from ml_pipeline.plan import Names, Plan, RunParams

    for mode in ("train", "tune"):
        made = plan(mode=mode)
        assert json.loads(json.dumps(made)) == made
        assert set(made) - Plan.__optional_keys__ == Plan.__required_keys__
        assert set(made) <= Plan.__required_keys__ | Plan.__optional_keys__
        assert ({"tuning", "tuning_config", "static_hyperparameters"} <= set(made)) == (mode == "tune")
        assert set(made["params"]) == RunParams.__required_keys__
        assert set(made["names"]) == Names.__required_keys__
    assert RunParams.__required_keys__ == {*pipeline_params(plain()), *infra_params(), "volume_size_gb"}
