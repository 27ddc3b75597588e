"""The host path in script mode, for real on localaws: a scikit-learn experiment's ``train.py`` trained on
the run's GPU host through SSM Run Command with the DAG's own functions (``code.resolve``,
``channels.prepare``, ``host_training.command_request``, ``host_readiness``, ``host_result``).

The command carries the framework image and the ``sagemaker_*`` hyperparameters, as a SageMaker job of
the same experiment would; localaws's agent stands in for the host: the source in /opt/ml/code, our
framework toolkit running the script with the training toolkit's arguments and environment.
"""

from __future__ import annotations

import io
import json
import tarfile
import textwrap
import time

import pytest

from tests.conftest import unique
from tests.infra.support import plan

pytestmark = pytest.mark.timeout(600)

# A script in SageMaker's conventions: the toolkit's arguments and environment, a model in SM_MODEL_DIR,
# the metric in the log, and what it was given written next to the model for the test to read.
TRAIN = textwrap.dedent("""\
    import argparse, csv, json, math, os, sys

    parser = argparse.ArgumentParser()
    parser.add_argument("--shift", type=float, default=0.0)
    parser.add_argument("--fail", type=str, default="no")
    args = parser.parse_args()
    if args.fail == "yes":
        raise ValueError("the script was told to fail (fail=yes)")

    def rows(channel):
        folder = os.environ[f"SM_CHANNEL_{channel.upper()}"]
        return [[float(v) for v in row] for name in sorted(os.listdir(folder))
                for row in csv.reader(open(os.path.join(folder, name)))]

    train, validation = rows("train"), rows("validation")
    mean = sum(r[0] for r in train) / len(train) + args.shift
    rmse = math.sqrt(sum((r[0] - mean) ** 2 for r in validation) / len(validation))
    with open(os.path.join(os.environ["SM_MODEL_DIR"], "model.json"), "w") as out:
        json.dump({"mean": mean, "argv": sys.argv[1:], "cwd": os.getcwd(),
                   "hps": json.loads(os.environ["SM_HPS"]), "hosts": json.loads(os.environ["SM_HOSTS"]),
                   "current_host": os.environ["SM_CURRENT_HOST"], "num_gpus": os.environ["SM_NUM_GPUS"],
                   "channels": json.loads(os.environ["SM_CHANNELS"])}, out)
    print(f"validation rmse={rmse:.6f}", flush=True)
    """)

EXPERIMENT = {
    "description": "A mean predictor in script mode, trained on the host",
    "framework": "sklearn",
    "entry_point": "train.py",
    "channels": {"train": "data/train", "validation": "data/validation"},
    "hyperparameters": {"shift": 0.5, "fail": "no"},
    "metric_definitions": [{"Name": "validation:rmse", "Regex": "validation rmse=([0-9.eE+-]+)"}],
    "objective": {"metric": "validation:rmse", "type": "Minimize"},
    "instance_type": "ml.m5.large",
    "max_runtime_seconds": 600,
    "presets": {"quick": {"hyperparameters": {}}},
    "gate": {"metric": "validation:rmse", "direction": "Minimize", "min_improvement": 0.0},
    "deploy": False,
    "schedule": None,
}


def write_experiment(root, name: str = "hostsk") -> dict:
    import yaml

    from ml_pipeline import experiments

    folder = root / name
    for channel, values in (("train", [1, 2, 3, 4]), ("validation", [2, 3])):
        (folder / "data" / channel).mkdir(parents=True)
        (folder / "data" / channel / f"{channel}.csv").write_text("".join(f"{v}\n" for v in values))
    (folder / "train.py").write_text(TRAIN)
    (folder / "experiment.yaml").write_text(yaml.safe_dump(EXPERIMENT, sort_keys=False))
    return experiments.load(folder)


def host_run(localaws, tmp_path, **hyperparameters) -> tuple[dict, dict, dict, dict]:
    """The run's plan, channels, resolved code and provisioned host, ready to train (its check passed)."""
    from ml_pipeline import channels as channels_module
    from ml_pipeline import code as code_module
    from ml_pipeline.infra import host_training
    from ml_pipeline.infra.params import preflight
    from ml_pipeline.infra.stack import ensure_bucket, provision

    run = plan(write_experiment(tmp_path), compute="host", host_instance_type="g5.xlarge", bucket=unique("hostsm"))
    run["hyperparameters"] = {**run["hyperparameters"], **hyperparameters}
    client = localaws.client
    code_module.preflight(run)
    pre = preflight(client, run)
    ensure_bucket(client, run)
    channels = channels_module.prepare(client("s3"), run)
    code = code_module.resolve(client("ecr"), client("s3"), run, localaws.endpoint_url)
    ids = provision(client, run, pre)
    deadline = time.monotonic() + 120
    while not host_training.host_readiness(client, run, ids["instance_id"], ids.get("volume_id"))["ready"]:
        assert time.monotonic() < deadline, "the host never became ready"
        time.sleep(0.5)
    return run, channels, code, ids


def train_on_host(localaws, run, channels, code, ids) -> tuple[str, dict]:
    from ml_pipeline.infra import host_training

    request = host_training.command_request(
        localaws.client, run, code["training_image"], channels, ids["instance_id"], code
    )
    ssm = localaws.client("ssm")
    command_id = ssm.send_command(**request)["Command"]["CommandId"]
    deadline = time.monotonic() + 300
    while (found := ssm.get_command_invocation(CommandId=command_id, InstanceId=ids["instance_id"]))["Status"] in (
        "Pending",
        "InProgress",
        "Delayed",
    ):
        assert time.monotonic() < deadline, found
        time.sleep(0.5)
    return command_id, found


@pytest.mark.slow
@pytest.mark.runners
def test_a_script_mode_experiment_trains_on_the_host(localaws, tmp_path):
    """Under both runners: our framework image as a process, and as a container with /opt/ml mounted."""
    from ml_pipeline.infra import host_training
    from ml_pipeline.infra.teardown import remaining, teardown_stack
    from tests.infra.support import ZERO

    run, channels, code, ids = host_run(localaws, tmp_path)
    try:
        # The framework's GPU-host image: scikit-learn has CPU images only, which a GPU host runs.
        assert code["training_image"].startswith("683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-scikit-learn:")
        spec = host_training.job_spec(run, channels, code)
        assert json.loads(spec["hyperparameters"]["sagemaker_submit_directory"]) == code["source"]["uri"]
        assert spec["hyperparameters"]["sagemaker_program"] == '"train.py"'
        assert spec["hyperparameters"]["shift"] == "0.5" and spec["hyperparameters"]["fail"] == '"no"'

        command_id, found = train_on_host(localaws, run, channels, code, ids)
        assert found["Status"] == "Success", found["StandardErrorContent"]
        assert "/opt/ml/code" in found["StandardOutputContent"]

        best = host_training.host_result(
            localaws.client, run, command_id, ids["instance_id"], code["training_image"], code
        )
        assert best["compute"] == "host" and best["hyperparameters"] == spec["hyperparameters"]
        # mean of train 2.5, shifted 3.0; validation 2 and 3: rmse sqrt((1 + 0) / 2)
        assert best["objective"]["value"] == pytest.approx(0.707107, abs=1e-6)
        bucket, key = best["model_artifact"][len("s3://") :].split("/", 1)
        body = localaws.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()
        with tarfile.open(fileobj=io.BytesIO(body)) as archive:
            model = json.load(
                archive.extractfile("./model.json")
                if "./model.json" in archive.getnames()
                else archive.extractfile("model.json")
            )
        # The training toolkit's contract: user hyperparameters only, decoded, as arguments and SM_HPS.
        assert model["mean"] == pytest.approx(3.0)
        assert sorted(model["argv"]) == sorted(["--fail", "no", "--shift", "0.5"])
        assert model["hps"] == {"shift": 0.5, "fail": "no"}
        assert model["hosts"] == ["algo-1"] and model["current_host"] == "algo-1"
        assert sorted(model["channels"]) == ["train", "validation"]
        assert model["cwd"].endswith("code")
    finally:
        report = teardown_stack(localaws.client, run["key"], poll=0.2)
    assert report["errors"] == []
    assert remaining(localaws.client, run["key"]) == ZERO


@pytest.mark.slow
def test_a_failing_script_fails_the_host_command_with_its_error(localaws_process, tmp_path):
    from ml_pipeline.infra import host_training
    from ml_pipeline.infra.teardown import teardown_stack

    localaws = localaws_process
    run, channels, code, ids = host_run(localaws, tmp_path, fail="yes")
    try:
        command_id, found = train_on_host(localaws, run, channels, code, ids)
        assert found["Status"] == "Failed" and found["ResponseCode"] not in (0, -1)
        assert "AlgorithmError" in found["StandardErrorContent"]
        assert "the script was told to fail (fail=yes)" in found["StandardErrorContent"]
        with pytest.raises(RuntimeError, match="told to fail"):
            host_training.host_result(
                localaws.client, run, command_id, ids["instance_id"], code["training_image"], code
            )
    finally:
        teardown_stack(localaws.client, run["key"], poll=0.2)


def test_an_own_container_on_the_host_keeps_its_plain_hyperparameters(tmp_path):
    """An image (or dockerfile) experiment's code carries no source: hyperparameters.json holds today's
    plain strings and no sagemaker_* entry, as SageMaker writes it for an own container."""
    from ml_pipeline.infra import host_training

    experiment = write_experiment(tmp_path)
    experiment.update(code_kind="image", image="123456789012.dkr.ecr.us-east-1.amazonaws.com/mine:1.0")
    run = plan(experiment, compute="host", host_instance_type="g5.xlarge")
    code = {
        "training_image": experiment["image"],
        "serving_image": experiment["image"],
        "hyperparameters": {},
        "environment": {},
        "source": None,
    }
    spec = host_training.job_spec(run, {"train": "s3://b/d/train/"}, code)
    assert spec["hyperparameters"] == {"shift": "0.5", "fail": "no"}
    assert spec["hyperparameters"] == host_training.job_spec(run, {"train": "s3://b/d/train/"})["hyperparameters"]


@pytest.mark.parametrize(
    "framework, host_type, tag",
    [
        ("pytorch", "g5.xlarge", "pytorch-training:2.5-gpu-py311"),
        ("pytorch", "dl1.24xlarge", "pytorch-training:2.5-cpu-py311"),  # the SDK names no Habana image
        ("sklearn", "g5.xlarge", "sagemaker-scikit-learn:1.2-1-cpu-py3"),  # CPU only: it runs on the GPU host
    ],
)
def test_the_host_trains_on_the_frameworks_image_for_its_type(tmp_path, framework, host_type, tag):
    from ml_pipeline import code

    experiment = {**write_experiment(tmp_path), "framework": framework, "framework_version": None}
    run = plan(experiment, compute="host", host_instance_type=host_type)
    assert code.training_image(experiment, run, "us-east-1").endswith("/" + tag)
    run["params"]["compute"] = "sagemaker"  # a SageMaker job takes the experiment's instance_type
    assert code.training_image(experiment, run, "us-east-1").endswith("-cpu-" + tag.rsplit("-", 1)[-1])


@pytest.mark.e2e
@pytest.mark.timeout(1200)
def test_the_diabetes_dag_trains_on_the_host_and_deploys(localaws_process, dag_test_home, tmp_path_factory):
    """The diabetes example's DAG end to end with compute=host, as `make run` runs it: a scikit-learn
    script trained on the run's GPU host, its weights deployed and smoke-tested, the stack torn down."""
    from ml_pipeline.infra.teardown import remaining
    from scripts.run_pipeline import airflow_env, read_summary, run_dag

    home = tmp_path_factory.mktemp("airflow-home")  # the run's log
    env = {
        **airflow_env(localaws_process.endpoint_url, dag_test_home),
        "ML_PIPELINE_BUCKET": unique("diabetes-host"),
        "ML_PIPELINE_POLL_SECONDS": "1",
    }
    conf = {
        "mode": "train",
        "compute": "host",
        "host_instance_type": "g5.xlarge",
        "preset": "quick",
        "model_package_group": unique("diabetes"),
    }
    result = run_dag(env, conf, "2026-09-07T00:00:00+00:00", home / "diabetes-host.log", "diabetes")
    log = (home / "diabetes-host.log").read_text()
    assert result["state"] == "success", log[-5000:]
    summary = read_summary(localaws_process.endpoint_url, env["ML_PIPELINE_BUCKET"], result, "diabetes")
    assert summary["training_job"].startswith("diabetes-host-")  # host_training.job_name: it trained on the host
    assert summary["metrics"]["validation:rmse"] > 0
    assert summary["smoke_test"]["response_bytes"] > 0 and summary["smoke_test"]["check"]["samples"] == 20
    assert set(remaining(localaws_process.client, summary["run"]).values()) == {0}
