"""The real ``experiments/digits/train`` entry, run as a subprocess on an /opt/ml-style tree (and the
``serve`` entry's start on the model it writes).

Each run takes a few seconds, mostly importing torch; the module shares runs
between tests where it can.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
CONTEXT = REPO / "experiments" / "digits"
TRAIN = CONTEXT / "train"
for path in (REPO / "plugins", CONTEXT):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from ml_pipeline import config  # noqa: E402
from tests.fixtures import digits_example  # noqa: E402

pytestmark = pytest.mark.timeout(300)

DATA_SEED = 7
#: The interpreter that runs ``train`` (e.g. /usr/bin/python3 with Debian's torch 1.13).
PYTHON = os.environ.get("WORKLOAD_TRAIN_PYTHON") or sys.executable
METRIC_LINE = re.compile(
    r"^epoch=(\d+) train_loss=(\d+\.\d{6}) validation_loss=(\d+\.\d{6}) validation_accuracy=(\d+\.\d{6})$"
)
FINAL_LINE = re.compile(
    r"^best_epoch=(\d+) train_loss=(\d+\.\d{6}) validation_loss=(\d+\.\d{6}) validation_accuracy=(\d+\.\d{6})$"
)


@pytest.fixture(scope="module")
def channels(tmp_path_factory) -> dict:
    return digits_example.write_local_channels(tmp_path_factory.mktemp("digits"), seed=DATA_SEED)


@pytest.fixture(scope="module")
def quick() -> dict:
    return digits_example.preset("quick")


@pytest.fixture(scope="module")
def metric_definitions() -> list:
    return digits_example.experiment()["metric_definitions"]


def clean_env(**extra: str) -> dict:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("SM_", "LOCALAWS_", "TRAINING_JOB"))}
    env.update(PYTHONDONTWRITEBYTECODE="1", **extra)
    return env


def opt_ml(root: Path, channels: dict, hyperparameters: dict, names=("train", "validation")) -> Path:
    """An /opt/ml tree as the engine lays it out: config files and channel copies."""
    (root / "input" / "config").mkdir(parents=True)
    (root / "input" / "config" / "hyperparameters.json").write_text(json.dumps(hyperparameters))
    (root / "input" / "config" / "resourceconfig.json").write_text(
        json.dumps({"current_host": "algo-1", "hosts": ["algo-1"]})
    )
    for name in names:
        shutil.copytree(channels[name], root / "input" / "data" / name)
    return root


def run_train(env: dict, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([PYTHON, str(TRAIN)], env=env, capture_output=True, text=True, timeout=timeout)


def metric_lines(stdout: str) -> list:
    return [tuple(float(g) for g in m.groups()) for m in map(METRIC_LINE.match, stdout.splitlines()) if m]


def final_metrics(stdout: str) -> dict:
    finals = [m for m in map(FINAL_LINE.match, stdout.splitlines()) if m]
    assert len(finals) == 1, stdout
    epoch, train_loss, validation_loss, accuracy = finals[0].groups()
    return {
        "epoch": int(epoch),
        "train_loss": float(train_loss),
        "validation_loss": float(validation_loss),
        "validation_accuracy": float(accuracy),
    }


def accuracy_of(model_dir: Path, features, labels) -> float:
    from digits import model as digits_model

    predictions = digits_model.predict(digits_model.load(model_dir), features)
    return float(np.mean(np.asarray(predictions) == np.asarray(labels)))


def validation_loss_of(model_dir: Path, channel: Path) -> float:
    import torch
    import torch.nn.functional as F
    from digits import data, model as digits_model

    rows = data.read_channel("validation", channel)
    net = digits_model.load(model_dir)
    with torch.no_grad():
        logits = net(torch.as_tensor(rows.features))
        return float(F.cross_entropy(logits, torch.as_tensor(rows.labels)))


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory, channels, quick):
    """The quick preset through hyperparameters.json, with what SageMaker adds to it."""
    hyperparameters = dict(
        config.sagemaker_hyperparameters(quick),
        optimizer='"adam"',  # as the SageMaker SDK's framework estimators encode strings
        sagemaker_program="train",
        sagemaker_region='"us-east-1"',
        _tuning_objective_metric="validation:loss",
    )
    root = opt_ml(tmp_path_factory.mktemp("quick") / "opt_ml", channels, hyperparameters)
    started = time.monotonic()
    result = run_train(clean_env(SAGEMAKER_BASE_DIR=str(root)))
    return root, result, time.monotonic() - started


def test_entry_is_an_executable_python3_script():
    assert os.access(TRAIN, os.X_OK)
    assert TRAIN.read_text().splitlines()[0] == "#!/usr/bin/env python3"


def test_quick_preset_trains_to_high_accuracy(quick_run, quick):
    root, result, seconds = quick_run
    assert result.returncode == 0, result.stdout + result.stderr
    assert not (root / "output" / "failure").exists()
    final = final_metrics(result.stdout)
    assert final["validation_accuracy"] >= 0.9
    epochs = metric_lines(result.stdout)
    assert 1 <= len(epochs) <= quick["hyperparameters"]["epochs"]
    assert [int(e[0]) for e in epochs] == list(range(1, len(epochs) + 1))
    assert "device: cpu" in result.stdout
    history = json.loads((root / "output" / "data" / "metrics.json").read_text())
    assert [h["epoch"] for h in history["history"]] == [int(e[0]) for e in epochs]
    assert history["best"]["epoch"] == final["epoch"]
    assert (root / "checkpoints" / "checkpoint.pt").exists()
    print(
        f"quick preset: {seconds:.1f}s for the process, {history['train_seconds']}s training, "
        f"validation accuracy {final['validation_accuracy']}"
    )


def test_model_loads_and_predicts_the_test_split(quick_run):
    from digits import model as digits_model

    root, result, _ = quick_run
    assert result.returncode == 0, result.stderr
    model_dir = root / "model"
    assert {p.name for p in model_dir.iterdir()} == {"model.pth", "model_config.json"}
    model_config = digits_model.load_config(model_dir)
    assert model_config["input_size"] == 64 and model_config["classes"] == list(range(10))
    assert model_config["hyperparameters"]["hidden_units"] == 128
    assert model_config["best"]["epoch"] == final_metrics(result.stdout)["epoch"]
    features, labels = digits_example.held_out(DATA_SEED)
    assert features.max() == 16  # raw pixels: the model scales them itself
    assert accuracy_of(model_dir, features, labels) >= 0.9


@pytest.mark.slow
def test_serve_runs_one_worker_per_cpu_it_may_use(quick_run):
    """``serve`` confined to one CPU, as in a container given a cpuset, runs one gunicorn worker, not one
    per CPU of the machine (os.cpu_count() counts them all), and answers /ping."""
    from tests.conftest import free_port

    root, _, _ = quick_run
    cpu = min(os.sched_getaffinity(0))
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, str(CONTEXT / "serve")],
        env=clean_env(SAGEMAKER_BASE_DIR=str(root), SAGEMAKER_BIND_TO_PORT=str(port)),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=lambda: os.sched_setaffinity(0, {cpu}),
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
                    sock.sendall(b"GET /ping HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                    assert sock.recv(64).startswith(b"HTTP/1.1 200")
                break
            except (ConnectionRefusedError, TimeoutError):  # not listening yet, or its worker still booting
                assert server.poll() is None and time.monotonic() < deadline, "serve did not start"
                time.sleep(0.2)
    finally:
        server.send_signal(signal.SIGTERM)
        output = server.communicate(timeout=60)[0]
    assert "with 1 worker(s)" in output, output


def test_metric_lines_match_the_experiments_metric_definitions(quick_run, metric_definitions):
    root, result, _ = quick_run
    lines = result.stdout.splitlines()
    epochs = metric_lines(result.stdout)
    best = json.loads((root / "model" / "model_config.json").read_text())["best"]
    keys = {
        "train:loss": "train_loss",
        "validation:loss": "validation_loss",
        "validation:accuracy": "validation_accuracy",
    }
    for definition in metric_definitions:
        values = [float(m.group(1)) for line in lines for m in [re.search(definition["Regex"], line)] if m]
        assert len(values) == len(epochs) + 1, definition  # one per epoch, then the best epoch's
        assert values[-1] == pytest.approx(best[keys[definition["Name"]]], abs=1e-6)


@pytest.mark.slow
def test_hyperparameters_from_sm_hps_and_channels_from_sm_channel(tmp_path, channels):
    env = clean_env(
        SM_HPS=json.dumps({"epochs": "1", "num_threads": "1"}),
        SM_CHANNEL_TRAIN=str(channels["train"]),
        SM_CHANNEL_VALIDATION=str(channels["validation"]),
        SM_MODEL_DIR=str(tmp_path / "m"),
        SM_OUTPUT_DIR=str(tmp_path / "o"),
        SM_OUTPUT_DATA_DIR=str(tmp_path / "o" / "data"),
        SM_HOSTS='["algo-1"]',
        SM_CURRENT_HOST="algo-1",
        SAGEMAKER_BASE_DIR=str(tmp_path / "root"),
    )
    result = run_train(env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert len(metric_lines(result.stdout)) == 1
    assert (tmp_path / "m" / "model.pth").exists() and (tmp_path / "o" / "data" / "metrics.json").exists()
    assert (tmp_path / "root" / "checkpoints" / "checkpoint.pt").exists()  # no SM_ variable for it


@pytest.mark.parametrize(
    "hyperparameters, message",
    [
        ({"learning_rate": "-1"}, "HyperparameterError: learning_rate must be > 0"),
        ({"optimizer": "rmsprop"}, "HyperparameterError: optimizer must be one of adam, sgd, got 'rmsprop'"),
        ({"epochs": "two"}, "HyperparameterError: epochs must be an integer, got 'two'"),
        ({"learning_rte": "0.1"}, "HyperparameterError: unknown hyperparameter learning_rte"),
    ],
)
def test_bad_hyperparameter_fails_with_a_clear_reason(tmp_path, channels, hyperparameters, message):
    root = opt_ml(tmp_path / "opt_ml", channels, hyperparameters)
    result = run_train(clean_env(SAGEMAKER_BASE_DIR=str(root)))
    assert result.returncode == 1
    failure = (root / "output" / "failure").read_text()
    assert failure.startswith(message), failure
    assert message in result.stderr
    assert not (root / "model" / "model.pth").exists()


def test_missing_validation_channel_is_a_clear_error(tmp_path, channels):
    root = opt_ml(tmp_path / "opt_ml", channels, {"epochs": "1"}, names=("train",))
    result = run_train(clean_env(SAGEMAKER_BASE_DIR=str(root)))
    assert result.returncode == 1
    failure = (root / "output" / "failure").read_text()
    assert failure.startswith("DataError: channel 'validation' not found"), failure


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_and_a_rerun_resumes_to_the_same_result(
    tmp_path, channels, quick, metric_definitions
):
    hyperparameters = dict(
        config.sagemaker_hyperparameters(quick), epochs="15", batch_size="8", early_stopping_patience="0"
    )
    root = opt_ml(tmp_path / "opt_ml", channels, hyperparameters)
    env = clean_env(SAGEMAKER_BASE_DIR=str(root))
    process = subprocess.Popen(
        [PYTHON, str(TRAIN)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    first = []
    try:
        for line in process.stdout:
            first.append(line)
            if line.startswith("epoch=2 "):
                process.send_signal(signal.SIGTERM)
                signalled = time.monotonic()
                break
        first.extend(process.stdout)
        code = process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    first_out = "".join(first)
    assert code == 0, first_out
    assert time.monotonic() - signalled < 10
    assert "SIGTERM received: abandoned epoch=" in first_out
    done = int(metric_lines(first_out)[-1][0])
    assert 2 <= done < 15, first_out
    assert f"checkpoint at epoch={done} saved" in first_out
    assert (root / "checkpoints" / "checkpoint.pt").exists()
    assert (root / "model" / "model.pth").exists()  # the best model so far
    assert not (root / "output" / "failure").exists()

    second = run_train(env)
    assert second.returncode == 0, second.stdout + second.stderr
    assert f"resumed from checkpoint at epoch={done}" in second.stdout
    resumed = metric_lines(second.stdout)
    assert int(resumed[0][0]) == done + 1 and int(resumed[-1][0]) == 15
    for definition in metric_definitions:  # nothing else in the log looks like a metric
        assert len(re.findall(definition["Regex"], second.stdout)) == len(resumed) + 1
    resumed_final = final_metrics(second.stdout)
    assert resumed_final["validation_accuracy"] >= 0.9
    features, labels = digits_example.held_out(DATA_SEED)
    assert accuracy_of(root / "model", features, labels) >= 0.9
    history = json.loads((root / "output" / "data" / "metrics.json").read_text())["history"]
    assert [h["epoch"] for h in history] == list(range(1, 16))

    # Seeded per epoch, the resumed run ends where an uninterrupted one does.
    fresh = opt_ml(tmp_path / "fresh", channels, hyperparameters)
    uninterrupted = run_train(clean_env(SAGEMAKER_BASE_DIR=str(fresh)))
    assert uninterrupted.returncode == 0, uninterrupted.stderr
    expected = final_metrics(uninterrupted.stdout)
    assert resumed_final["epoch"] == expected["epoch"]
    assert resumed_final["validation_loss"] == pytest.approx(expected["validation_loss"], abs=1e-3)
    assert resumed_final["validation_accuracy"] == pytest.approx(expected["validation_accuracy"], abs=0.01)


@pytest.mark.slow
def test_early_stopping_keeps_the_best_epochs_weights(tmp_path, channels, quick):
    hyperparameters = dict(
        config.sagemaker_hyperparameters(quick), epochs="40", learning_rate="0.05", early_stopping_patience="1"
    )
    root = opt_ml(tmp_path / "opt_ml", channels, hyperparameters)
    result = run_train(clean_env(SAGEMAKER_BASE_DIR=str(root)))
    assert result.returncode == 0, result.stdout + result.stderr
    epochs = metric_lines(result.stdout)
    stopped = int(epochs[-1][0])
    assert stopped < 40 and f"early stopping at epoch={stopped}" in result.stdout
    final = final_metrics(result.stdout)
    assert final["epoch"] == stopped - 1  # patience 1: the epoch before the first that got worse
    assert epochs[-1][2] >= final["validation_loss"]
    assert final["validation_loss"] == min(e[2] for e in epochs)
    # The saved weights are the best epoch's, not the last one's.
    assert validation_loss_of(root / "model", channels["validation"]) == pytest.approx(
        final["validation_loss"], abs=1e-5
    )
    # A rerun on the finished checkpoint trains no more and keeps the same model.
    again = run_train(clean_env(SAGEMAKER_BASE_DIR=str(root)))
    assert again.returncode == 0 and metric_lines(again.stdout) == []
    assert final_metrics(again.stdout) == final


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_two_hosts_train_data_parallel_over_gloo(tmp_path, channels, quick):
    hosts = ["algo-1", "algo-2"]
    hyperparameters = config.sagemaker_hyperparameters(quick)
    port = str(_free_port())
    shards = sorted(channels["train"].glob("*.csv"))
    processes = []
    for rank, host in enumerate(hosts):
        root = opt_ml(tmp_path / host, channels, hyperparameters, names=("validation",))
        (root / "input" / "data" / "train").mkdir()
        for shard in shards[rank::2]:  # ShardedByS3Key: each host gets its own files
            shutil.copy(shard, root / "input" / "data" / "train")
        env = clean_env(
            SAGEMAKER_BASE_DIR=str(root),
            SM_HOSTS=json.dumps(hosts),
            SM_CURRENT_HOST=host,
            SM_MASTER_ADDR="127.0.0.1",
            SM_MASTER_PORT=port,
            SM_INPUT_DATA_CONFIG=json.dumps({"train": {"S3DistributionType": "ShardedByS3Key"}, "validation": {}}),
        )
        processes.append(
            subprocess.Popen([PYTHON, str(TRAIN)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        )
    outputs = []
    try:
        for process in processes:
            outputs.append(process.communicate(timeout=120)[0])
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
    assert [p.returncode for p in processes] == [0, 0], outputs
    assert "distributed: gloo, rank 0 of 2" in outputs[0]
    assert final_metrics(outputs[0])["validation_accuracy"] >= 0.9
    assert metric_lines(outputs[1]) == [] and "[algo-2]" in outputs[1]  # metrics from rank 0 only
    assert (tmp_path / "algo-1" / "model" / "model.pth").exists()
    assert not (tmp_path / "algo-2" / "model" / "model.pth").exists()
    features, labels = digits_example.held_out(DATA_SEED)
    assert accuracy_of(tmp_path / "algo-1" / "model", features, labels) >= 0.9


def test_install_requirements_keeps_what_the_base_provides(tmp_path, capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location("install_requirements", CONTEXT / "install_requirements.py")
    installer = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(installer)
    shipped = installer.requirements(str(CONTEXT / "requirements.txt"))
    # Ranges the framework images satisfy (Debian's torch calls itself 1.13.0a0), so that script mode's
    # pip install of this file into a PyTorch image changes nothing there.
    assert shipped["torch"] == "torch>=1.13.0a0" and {"numpy", "scikit-learn"} <= set(shipped)
    assert not any("==" in spec for spec in shipped.values()), shipped
    # torch and numpy are here (as in a framework base image): nothing to install, no pip run
    (tmp_path / "requirements.txt").write_text("# comment\ntorch==2.13.0\nnumpy>=1.20  # any\n")
    assert installer.main(str(tmp_path / "requirements.txt")) == 0
    assert "nothing to install" in capsys.readouterr().out
    assert installer.report() == 0
