"""One DAG per experiment: loaded through Airflow's DagBag from the experiment files, each invalid one an import
error of its own; the DAG's shape per code kind and with deploy: false; Params pre-filled; names within AWS's
limits."""

from __future__ import annotations

import pytest

from tests.dags.experiment_support import PLAIN, plain, write_experiment

IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/mine:1.0"


@pytest.fixture(autouse=True)
def importer():
    from ml_pipeline.experiment_importer import register

    register()  # as plugins/airflow_local_settings.py does in every Airflow process


def bag(path):
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(path), bundle_path=path if path.is_dir() else None)


@pytest.mark.slow
def test_two_experiments_load_while_a_broken_third_is_an_import_error_naming_its_field(tmp_path, monkeypatch):
    from ml_pipeline import experiments

    monkeypatch.setenv(experiments.ROOT_ENV, str(tmp_path))
    write_experiment(tmp_path, "alpha")
    write_experiment(tmp_path, "beta", deploy=False, schedule=None)
    write_experiment(tmp_path, "gamma", metric_definitions=[{"Name": "validation:rmse", "Regex": "rmse=[0-9.]+"}])
    loaded = bag(tmp_path)
    assert set(loaded.dags) == {"train_alpha", "train_beta"}
    assert set(loaded.import_errors) == {"gamma/experiment.yaml"}
    assert loaded.import_errors["gamma/experiment.yaml"] == (
        "experiments/gamma/experiment.yaml: metric_definitions[0].Regex: needs exactly one capture group, has 0"
    )
    # Each DAG's file is its experiment file: a worker re-parses that one file to run a task.
    assert loaded.dags["train_alpha"].relative_fileloc == "alpha/experiment.yaml"
    again = bag(tmp_path / "alpha" / "experiment.yaml")
    assert list(again.dags) == ["train_alpha"] and not again.import_errors


def test_the_dag_comes_from_the_experiment():
    from ml_pipeline.pipeline_dag import build_dag

    experiment = plain()
    dag = build_dag(experiment)
    assert dag.dag_id == "train_plain"
    assert dag.description == experiment["description"]
    assert experiment["description"] in dag.doc_md and "experiments/plain/experiment.yaml" in dag.doc_md
    assert dag.timetable.timetable.expression == "0 0 * * 0"  # @weekly, or a change to the experiment (gitops)
    assert {"experiment:plain", "code:script"} <= set(dag.tags)
    none = build_dag({**experiment, "schedule": None})
    # schedule: null: no time schedule, only a change to the experiment (its asset) starts a run.
    assert type(none.timetable).__name__ == "AssetTriggeredTimetable"
    assert none.timetable.asset_condition.name == "experiments/plain"


def test_params_are_pre_filled_from_the_experiment_and_each_knob_still_overridable():
    from ml_pipeline.params import SECTIONS
    from ml_pipeline.pipeline_dag import build_dag

    dag = build_dag(plain())
    params = dag.params
    assert params["endpoint_name"] == params["ecr_repository"] == params["model_package_group"] == "plain"
    assert (params["min_capacity"], params["max_capacity"], params["target_invocations_per_instance"]) == (1, 2, 40)
    assert params["preset"] is None and params["hyperparameters"] == {}
    schemas = {name: dag.params.get_param(name).schema for name in params}
    assert schemas["preset"]["enum"] == [None, "quick", "big"]
    assert schemas["mode"]["enum"] == ["train", "tune"]
    # The form says what an empty Training field becomes: the preset's value, else the experiment's.
    description = dag.params.get_param("max_runtime_seconds").description
    assert "600 for quick" in description and "the experiment's, 900" in description
    assert [s for s in dict.fromkeys(schema["section"] for schema in schemas.values())] == list(SECTIONS)
    from airflow.serialization.serialized_objects import DagSerialization

    served = DagSerialization.from_dict(DagSerialization.to_dict(dag)).params  # what the API validates with
    served.deep_merge({"preset": "big", "min_capacity": 2, "hyperparameters": {"max_depth": 4}}).validate()
    with pytest.raises(Exception, match="preset"):
        served.deep_merge({"preset": "gpu"}).validate()  # not one of this experiment's presets

    no_tuning = build_dag({**plain(), "tuning": None})
    assert no_tuning.params.get_param("mode").schema["enum"] == ["train"]


def test_tasks_carry_no_copy_of_the_params_and_the_served_dag_keeps_them():
    """The Params are the DAG's alone (pipeline_dag._attach_params): Airflow reads the DAG's at run time,
    and the serialized DAG, which the form and the API validate a run's conf with, has every one."""
    from airflow.serialization.serialized_objects import DagSerialization

    from ml_pipeline.pipeline_dag import build_dag

    dag = build_dag(plain())
    assert all(len(task.params) == 0 for task in dag.tasks)
    served = DagSerialization.from_dict(DagSerialization.to_dict(dag))
    for name in dag.params:
        assert served.params.get_param(name).schema == dag.params.get_param(name).schema, name
        assert served.params[name] == dag.params[name], name
    with pytest.raises(Exception, match="min_capacity"):
        served.params.deep_merge({"min_capacity": 0}).validate()


def test_a_default_outside_its_params_schema_is_an_import_error(tmp_path, monkeypatch):
    from ml_pipeline import experiments

    monkeypatch.setenv(experiments.ROOT_ENV, str(tmp_path))
    write_experiment(tmp_path, "spendy", use_spot=True)  # fine
    loaded = bag(tmp_path)
    assert "train_spendy" in loaded.dags

    from ml_pipeline.params import check_defaults, form_param

    with pytest.raises(ValueError, match=r"Param size \(Size\): its default 9 is invalid"):
        check_defaults({"size": form_param(9, type="integer", maximum=8, title="Size")})


def _shape(dag) -> set[str]:
    return {task.task_id for task in dag.tasks}


@pytest.mark.parametrize(
    "kind, changes",
    [
        ("image", {"framework": None, "entry_point": None, "image": IMAGE}),
        ("dockerfile", {"framework": None, "entry_point": None, "dockerfile": "container"}),
    ],
)
def test_every_code_kind_runs_the_same_chain_through_resolve_code(tmp_path, kind, changes):
    from ml_pipeline import experiments
    from ml_pipeline.pipeline_dag import build_dag

    folder = write_experiment(tmp_path, kind, **changes)
    (folder / "container").mkdir()
    (folder / "container" / "Dockerfile").write_text("FROM scratch\n")
    experiment = experiments.load(folder)
    assert experiment["code_kind"] == kind
    dag = build_dag(experiment)
    assert _shape(dag) == _shape(build_dag(plain()))
    assert f"code:{kind}" in dag.tags and f"code: {kind}" in dag.doc_md
    code = dag.get_task("resolve_code")
    assert "provision.provisioned" in code.upstream_task_ids and "choose_mode" in code.downstream_task_ids
    for request in (
        "train.training_request",
        "tune.tuning_request",
        "host.command_request",
        "register_model",
        "deploy.create_model_and_config",
    ):
        assert "resolve_code" in dag.get_task(request).upstream_task_ids, request


def test_deploy_false_ends_the_chain_at_the_gate_and_promote():
    from ml_pipeline.pipeline_dag import build_dag

    served = build_dag(plain())
    dag = build_dag({**plain(), "deploy": False})
    gone = _shape(served) - _shape(dag)
    assert gone == {
        "deploy.create_model_and_config",
        "deploy.endpoint_request",
        "deploy.deploy_endpoint",
        "deploy.wait_for_endpoint",
        "autoscale",
        "smoke_test",
    }
    assert dag.get_task("promote").upstream_task_ids == {"plan", "quality_gate", "register_model"}
    assert dag.get_task("close_run").is_teardown and "promote" in dag.get_task("close_run").upstream_task_ids
    assert not {"autoscaling", "smoke_test"} & set(dag.get_task("close_run").op_args[1])  # no such task to report
    assert "deploy: false" in dag.doc_md


def test_names_stay_within_aws_limits_for_a_20_character_experiment(tmp_path):
    from ml_pipeline import experiments
    from ml_pipeline.naming import MAX_NAME, MAX_TUNING_NAME, attempt_name
    from tests.infra.support import plan

    name = "a-twenty-char-model1"
    assert len(name) == 20
    experiment = experiments.load(write_experiment(tmp_path, name))
    made = plan(experiment, mode="tune")
    names = made["names"]
    for kind in ("training_job", "model", "endpoint_config", "endpoint"):
        assert names[kind].startswith(f"{name}-") and len(attempt_name(names[kind], 20)) <= MAX_NAME, kind
    assert names["tuning_job"].startswith(f"{name}-") and len(names["tuning_job"]) == MAX_TUNING_NAME - 4
    assert len(attempt_name(names["tuning_job"], 20, MAX_TUNING_NAME)) <= MAX_TUNING_NAME  # up to 20 attempts
    trial = f"{attempt_name(names['tuning_job'], 20)}-020-0123abcd"  # as SageMaker names a tuning job's trials
    assert len(trial) <= MAX_NAME
    assert names["data_prefix"].startswith(f"datasets/{name}/") and names["model_prefix"].startswith(f"models/{name}/")
    defaults = plan(experiment)["params"]
    assert defaults["endpoint_name"] == defaults["ecr_repository"] == defaults["model_package_group"] == name


def test_two_experiments_runs_of_one_date_never_share_a_run_key():
    """Scheduled runs of one logical date have the same run id in every DAG: the key (which tags the run's stack,
    so teardown and the reaper find it) hashes the experiment too."""
    from datetime import datetime, timezone

    from ml_pipeline.naming import run_key

    when = datetime(2026, 2, 8, tzinfo=timezone.utc)
    run_id = "scheduled__2026-02-08T00:00:00+00:00"
    assert run_key(run_id, when, "digits") != run_key(run_id, when, "diabetes")
    assert run_key(run_id, when, "digits") == run_key(run_id, when, "digits")


def test_the_plan_carries_the_experiment_its_revision_and_typed_hyperparameters():
    from tests.infra.support import plan

    made = plan(preset="quick", hyperparameters={"max_depth": 5})
    assert made["experiment"]["name"] == "plain"
    assert made["revision"] == {
        "file_hash": made["experiment"]["file_hash"],
        "source_hash": made["experiment"]["source_hash"],
        "commit": None,
    }
    # The experiment's, the preset's over them, the form's over both: JSON values, not strings.
    assert made["hyperparameters"] == {
        "n_estimators": 20,
        "learning_rate": 0.05,
        "max_depth": 5,
        "loss": "squared_error",
    }
    assert (made["params"]["instance_type"], made["params"]["max_runtime_seconds"]) == ("ml.m5.large", 600)
    big = plan(preset="big")
    assert (big["params"]["instance_type"], big["params"]["instance_count"]) == ("ml.m5.2xlarge", 2)
    plainest = plan(preset=None)
    assert plainest["hyperparameters"] == plain()["hyperparameters"]
    assert plainest["params"]["max_runtime_seconds"] == 900  # the experiment's

    tuned = plan(mode="tune", preset="big")  # tune mode trains on the tuning's base preset (quick)
    assert tuned["static_hyperparameters"] == {"n_estimators": 20}
    assert tuned["params"]["max_runtime_seconds"] == 600 and tuned["tuning_config"]["Strategy"] == "Random"
    assert tuned["objective"] == {"metric": "validation:rmse", "type": "Minimize"}


def test_the_plan_refuses_what_the_experiment_does_not_offer():
    from ml_pipeline.plan import PlanError
    from tests.infra.support import plan

    with pytest.raises(PlanError, match="preset: 'gpu' is not a preset of experiment plain"):
        plan(preset="gpu")
    with pytest.raises(PlanError, match="mode: experiment plain has no tuning"):
        plan({**plain(), "tuning": None}, mode="tune")
    with pytest.raises(PlanError, match=r"hyperparameters.max_depth \(Hyperparameter overrides\): nan"):
        plan(hyperparameters={"max_depth": float("nan")})


def test_the_committed_test_experiment_is_valid():
    assert (PLAIN / "experiment.yaml").is_file() and plain()["deploy"]["smoke"]["check"] == "checks:check"
