"""Every DAG file imports cleanly, cheaply and offline, an experiment's file too; the pipeline is wired as the
chain says."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT
from tests.dags.experiment_support import PLAIN

DAG_FILES = sorted((REPO_ROOT / "dags").glob("*.py")) + [PLAIN / "experiment.yaml"]
HEAVY = ("torch", "sklearn", "pandas", "numpy", "sagemaker", "docker", "mlflow", "moto", "optuna", "scipy")

# Imports one DAG file in a fresh interpreter with the network and the metadata DB made unusable,
# and reports what it defined and which heavy modules it pulled in.
PROBE = r"""
import json, socket, sys, importlib.util
def refuse(*args, **kwargs):
    raise RuntimeError("network access at DAG parse time")
socket.socket.connect = refuse
socket.create_connection = refuse
import airflow.sdk  # what every DAG needs; not counted against the file
from pathlib import Path
before = set(sys.modules)
if sys.argv[1].endswith(".py"):
    spec = importlib.util.spec_from_file_location("dag_under_test", sys.argv[1])
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    from airflow.sdk import DAG
    dags = [v for v in vars(module).values() if isinstance(v, DAG)]
else:  # an experiment file, as the dag-processor reads it
    from ml_pipeline.experiment_importer import ExperimentDagImporter
    result = ExperimentDagImporter().import_file(sys.argv[1], bundle_path=Path(sys.argv[1]).parents[1])
    assert not result.errors, result.errors
    dags = result.dags
print("PROBE " + json.dumps({
    "new_modules": sorted(set(sys.modules) - before),
    "dags": [{"dag_id": d.dag_id, "tags": sorted(d.tags), "owners": sorted({t.owner for t in d.tasks}),
              "retries": sorted({t.retries for t in d.tasks}),
              "schedule": str(getattr(d.timetable, "expression", ""))} for d in dags],
}))
"""


def probe(path: Path) -> dict:
    env = {
        **os.environ,
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": "sqlite:////nonexistent/dir/airflow.db",
        "PYTHONPATH": os.pathsep.join([str(REPO_ROOT / "plugins"), str(REPO_ROOT)]),
    }
    result = subprocess.run(
        [sys.executable, "-c", PROBE, str(path)], env=env, capture_output=True, text=True, timeout=120
    )
    lines = [line for line in result.stdout.splitlines() if line.startswith("PROBE ")]
    assert result.returncode == 0 and lines, result.stdout + result.stderr
    return json.loads(lines[-1][len("PROBE ") :])


@pytest.mark.parametrize("path", DAG_FILES, ids=[p.name for p in DAG_FILES])
def test_dag_file_imports_offline_without_heavy_modules(path):
    found = probe(path)
    assert found["dags"], f"{path.name} defines no DAG"
    heavy = [m for m in found["new_modules"] if m.split(".")[0] in HEAVY]
    assert heavy == [], f"{path.name} imports heavy modules at parse time: {heavy[:10]}"
    for dag in found["dags"]:
        assert dag["tags"], f"{dag['dag_id']} has no tags"
        assert "airflow" not in dag["owners"], f"{dag['dag_id']} has a task without an owner"
        assert min(dag["retries"]) >= 0 and max(dag["retries"]) >= 1, f"{dag['dag_id']} never retries"


@pytest.fixture(scope="module")
def pipeline():
    from airflow.dag_processing.dagbag import DagBag

    from ml_pipeline.experiment_importer import register

    register()
    bag = DagBag(dag_folder=str(PLAIN / "experiment.yaml"))
    assert bag.import_errors == {}
    return bag.dags["train_plain"]


def upstream(dag, task_id: str) -> set[str]:
    return set(dag.get_task(task_id).upstream_task_ids)


def test_the_chain_is_wired_in_order(pipeline):
    dag = pipeline
    assert upstream(dag, "open_run") == {"plan", "preflight"}
    assert "open_run" in upstream(dag, "provision.needed_steps")
    assert "provision.needed_steps" in upstream(dag, "provision.vpc")
    assert {"prepare_channels", "resolve_code"} <= upstream(dag, "choose_mode")
    assert "choose_mode" in upstream(dag, "train.training_request")
    assert "choose_mode" in upstream(dag, "tune.tuning_request")
    assert upstream(dag, "train.wait_for_training_job") == {"train.start_training_job"}
    assert upstream(dag, "tune.wait_for_tuning_job") == {"tune.start_tuning_job"}
    assert {"train.wait_for_training_job", "tune.wait_for_tuning_job"} <= upstream(dag, "pick_best")
    assert dag.get_task("pick_best").trigger_rule == "none_failed_min_one_success"
    assert "pick_best" in upstream(dag, "copy_best_weights")
    assert "copy_best_weights" in upstream(dag, "register_model")
    assert "register_model" in upstream(dag, "quality_gate")
    assert "quality_gate" in upstream(dag, "deploy.create_model_and_config")
    assert upstream(dag, "deploy.wait_for_endpoint") == {"deploy.deploy_endpoint"}
    assert "deploy.wait_for_endpoint" in upstream(dag, "autoscale")
    assert "autoscale" in upstream(dag, "smoke_test")
    assert "smoke_test" in upstream(dag, "promote")


def test_teardown_is_a_teardown_of_the_run_and_runs_whatever_failed(pipeline):
    close = pipeline.get_task("close_run")
    assert close.is_teardown
    assert pipeline.get_task("open_run").is_setup
    assert "open_run" in close.upstream_task_ids and "promote" in close.upstream_task_ids
    assert close.trigger_rule == "all_done_setup_success"
    # Every task that creates or waits for something lies between the setup and its teardown.
    for task in pipeline.tasks:
        if task.task_id not in ("plan", "preflight", "open_run", "close_run", "outcome"):
            assert "close_run" in {t.task_id for t in task.get_flat_relatives(upstream=False)}, task.task_id


def test_the_summary_reports_what_the_dags_own_tasks_returned(pipeline):
    """close_run learns the summary's sources from the DAG it is built in: each a task of this DAG."""
    reported = pipeline.get_task("close_run").op_args[1]
    assert set(reported) == {
        "data",
        "code",
        "best",
        "weights",
        "model_package",
        "autoscaling",
        "smoke_test",
        "promoted",
    }
    assert reported["smoke_test"] == "smoke_test" and reported["best"] == "pick_best"
    assert all(pipeline.has_task(task_id) for task_id in reported.values())


def test_the_tasks_after_provisioning_take_the_ids_it_returned(pipeline):
    """The jobs' and the model's VpcConfig, the host's command and its result use the ids the provision group
    returned (its ``provisioned`` task's XCom, an argument of theirs), never a lookup by tags."""
    for task_id in (
        "train.training_request",
        "tune.tuning_request",
        "deploy.create_model_and_config",
        "host.command_request",
        "pick_best",
    ):
        assert "provision.provisioned" in upstream(pipeline, task_id), task_id


def test_the_runs_outcome_is_a_teardown_that_decides_the_runs_state(pipeline):
    """Airflow judges a run by its leaves, teardowns left out; a run marked failed from the UI fails the
    running tasks and skips the rest (leaves included), so the outcome task, a teardown marking the run
    failed cannot skip, and one that counts (on_failure_fail_dagrun), must be a leaf after close_run."""
    verdict = pipeline.get_task("outcome")
    assert verdict.is_teardown and verdict.on_failure_fail_dagrun
    assert upstream(pipeline, "outcome") >= {"close_run"} and not verdict.downstream_task_ids
    assert verdict.retries == 0
    close = pipeline.get_task("close_run")
    assert not close.on_failure_fail_dagrun  # teardown's own success never decides the run's state


def test_one_decision_skips_the_provisioning_steps_the_run_does_not_need(pipeline):
    """The decision in front of the group names every task of the group but the join, so the scheduler
    never queues one only for it to skip itself; the join runs past what was skipped."""
    from ml_pipeline.infra.operators import SkipUnneededSteps
    from ml_pipeline.infra.provisioning import STEPS

    decide = pipeline.get_task("provision.needed_steps")
    assert isinstance(decide, SkipUnneededSteps)
    named = {task_id for task_ids in decide.step_tasks.values() for task_id in task_ids}
    group = {t.task_id for t in pipeline.tasks if t.task_id.startswith("provision.")}
    assert named == group - {"provision.needed_steps", "provision.provisioned"}
    assert list(decide.step_tasks) == [step.name for step in STEPS]
    assert pipeline.get_task("provision.provisioned").trigger_rule == "none_failed"
    # The join waits for each step's last task: with the host's steps skipped at once (a run that needs only
    # the network), a join behind the last of them alone ran before the network was made.
    ends = {task_ids[-1] for task_ids in decide.step_tasks.values()}
    assert ends <= upstream(pipeline, "provision.provisioned")


def test_every_job_wait_is_a_deferrable_sensor(pipeline):
    from airflow.sdk.bases.sensor import BaseSensorOperator

    sensors = {t.task_id: t for t in pipeline.tasks if isinstance(t, BaseSensorOperator)}
    jobs = {
        "train.wait_for_training_job",
        "tune.wait_for_tuning_job",
        "deploy.wait_for_endpoint",
        "host.wait_for_host_training",
        "provision.host_running",
    }
    assert jobs <= set(sensors)
    assert all(sensors[task_id].deferrable for task_id in jobs)
    for task_id in (
        "train.start_training_job",
        "tune.start_tuning_job",
        "deploy.deploy_endpoint",
        "host.start_host_training",
    ):
        assert pipeline.get_task(task_id).wait_for_completion is False  # the sensor waits, deferred
    # Every provisioned resource has a sensor on its state before the next step builds on it.
    for step, state in (
        ("vpc", "available"),
        ("internet_gateway", "attached"),
        ("subnets", "available"),
        ("instance_profile", "ready"),
        ("volume", "available"),
        ("attach_volume", "in_use"),
    ):
        assert f"provision.{step}" in upstream(pipeline, f"provision.{step}_{state}")
    assert "provision.attach_volume_in_use" in upstream(pipeline, "provision.host_ready")


def test_no_sensor_holds_a_worker_slot_while_it_waits(pipeline):
    """Sensors defer, or reschedule between pokes: a poking sensor held one of the machine's few slots for
    up to an hour (HostReadySensor) while nothing ran."""
    from airflow.sdk.bases.sensor import BaseSensorOperator

    for task in pipeline.tasks:
        if isinstance(task, BaseSensorOperator):
            assert getattr(task, "deferrable", False) or task.mode == "reschedule", (task.task_id, task.mode)


def test_provisioning_is_the_first_stage_inside_the_run(pipeline):
    assert "open_run" in upstream(pipeline, "provision.needed_steps")
    assert {"provision.needed_steps", "preflight"} <= upstream(pipeline, "provision.vpc")
    assert "provision.host_ready" in upstream(pipeline, "provision.provisioned")
    for task_id in ("prepare_channels", "resolve_code"):
        assert "provision.provisioned" in upstream(pipeline, task_id)
    assert "choose_mode" in upstream(pipeline, "host.command_request")
    assert "host.wait_for_host_training" in upstream(pipeline, "pick_best")


def test_every_param_has_a_schema_and_a_description(pipeline):
    for name, param in pipeline.params.items():
        schema = param.schema
        assert "type" in schema or "enum" in schema, name
        assert schema.get("description") or schema.get("title"), name


@pytest.mark.parametrize(
    "bad",
    [
        {"mode": "sideways"},
        {"instance_count": 99},
        {"instance_type": "p4d.24xlarge"},
        {"min_capacity": 0},
        {"hyperparameters": {"layers": [1]}},
        {"preset": "gpu"},
        {"bucket": "Not_A_Bucket"},
        {"role_arn": "admin"},
    ],
)
def test_bad_params_are_refused_by_their_schema(pipeline, bad):
    import copy

    params = copy.deepcopy(pipeline.params)
    with pytest.raises(Exception, match="Invalid input|is not|is greater|is less|does not match|not valid"):
        for key, value in bad.items():
            params[key] = value
        params.validate()


def test_weekly_schedule_or_a_change_to_the_experiment(pipeline):
    """Scheduled retraining (the experiment's @weekly) and runs on commit (its asset, watched in git) share
    the DAG."""
    timetable = pipeline.timetable
    assert timetable.timetable.expression == "0 0 * * 0"
    asset = timetable.asset_condition
    assert asset.name == f"experiments/{pipeline.dag_id.removeprefix('train_')}"
    assert asset.watchers  # the experiment folder lies in this repository


def test_param_copies_keep_their_own_values_and_serialize_as_params(pipeline):
    """The DAG's Params share their schemas between the copies Airflow makes (parse time), not values."""
    import copy

    from airflow.serialization.serialized_objects import DagSerialization

    dag_param = pipeline.params.get_param("allowed_cidrs")
    copied = copy.deepcopy(pipeline.params).get_param("allowed_cidrs")
    assert copied is not dag_param and copied.schema is dag_param.schema
    copied.value.append("10.2.0.0/16")
    assert "10.2.0.0/16" not in dag_param.value

    restored = DagSerialization.from_dict(DagSerialization.to_dict(pipeline))
    for name, param in pipeline.params.items():
        assert restored.params.get_param(name).schema == param.schema, name
        assert restored.params[name] == param.value, name


@pytest.fixture(scope="module")
def served_params(pipeline):
    """The Params as the API server serves them to the trigger form: from the serialized DAG."""
    from airflow.serialization.serialized_objects import DagSerialization

    restored = DagSerialization.from_dict(DagSerialization.to_dict(pipeline))
    return {name: restored.params.get_param(name) for name in restored.params}


def test_the_trigger_form_puts_every_param_in_a_section(served_params):
    from ml_pipeline.params import SECTIONS

    sections = {name: param.schema.get("section") for name, param in served_params.items()}
    assert set(sections.values()) == set(SECTIONS), sections
    first_seen = list(dict.fromkeys(sections.values()))
    assert first_seen == list(SECTIONS)  # the form shows them in this order: the run, training, ... VPC


def test_form_descriptions_name_fields_by_their_labels(served_params):
    """A description that says "max_runtime_seconds" points at nothing on screen: it names the label."""
    import re

    names = [name for name in served_params if "_" in name]
    for name, param in served_params.items():
        text = " ".join(filter(None, [param.description, param.schema.get("description")]))
        mentioned = [other for other in names if re.search(rf"\b{other}\b", text)]
        assert mentioned == [], f"{name}'s description names {mentioned}"
        assert param.schema.get("title"), name


def test_the_preset_field_says_what_each_preset_is_for_and_the_presets_values(served_params):
    from tests.dags.experiment_support import plain

    experiment = plain()
    preset = served_params["preset"]
    assert preset.schema["enum"] == [None, *experiment["presets"]]
    assert "quick: Fewer trees" in preset.description
    # What an empty Training field becomes, as the form tells it, is what the experiment says:
    # "<value> for <preset>", then the experiment's own value.
    for field in ("instance_type", "max_runtime_seconds"):
        said = served_params[field].description
        for name, values in experiment["presets"].items():
            if field in values:
                assert f"{values[field]} for {name}" in said, (field, name, said)
        assert f"the experiment's, {experiment[field]}" in said, (field, said)
    for name in ("instance_type", "instance_count", "max_runtime_seconds"):
        assert served_params[name].value is None  # empty: the preset's, else the experiment's
