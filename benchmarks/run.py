"""`make bench`: localaws's overheads, measured, written to benchmarks/results.json.

``--only SECTION`` (repeatable) measures a part alone and updates its figures in results.json:
training, tuning, parse, pipeline, hosting, transform, docker (the digits image under the docker runner),
runner (the shared runner against a bare ``docker run``: benchmarks/runner.py).

training_overhead: one training job of about 20 s through localaws (create to
Completed, as a client sees it) against the same ``train`` entry run directly on
the same data with the same interpreter (process runner) or the same image
(docker runner). Goal: at most 1.1 times the direct run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "plugins")]

from localaws.client import register_image  # noqa: E402
from ml_pipeline.images import context_hash  # noqa: E402
from localaws.sagemaker.contract import HostConfig, Layout  # noqa: E402
from localaws.sagemaker.runners.process import VirtualEnvs  # noqa: E402
from localaws.settings import Settings  # noqa: E402
from ml_pipeline.config import sagemaker_hyperparameters  # noqa: E402
from tests.conftest import LocalAWSProcess  # noqa: E402
from tests.fixtures import digits_example  # noqa: E402
from tests.support import training_request, wait_for_training  # noqa: E402

CONTEXT = ROOT / "experiments" / "digits"
RESULTS = ROOT / "benchmarks" / "results.json"
SEED = 11


def bench_hyperparameters() -> dict[str, str]:
    """The quick preset, made long enough (about 20 s on 2 cores) for overheads to be measured fairly."""
    hyperparameters = sagemaker_hyperparameters(digits_example.preset("quick"))
    hyperparameters.update({"epochs": os.environ.get("BENCH_EPOCHS", "500"), "early_stopping_patience": "1000"})
    return hyperparameters


def direct_layout(tmp: Path) -> Layout:
    layout = Layout(tmp / "opt-ml")
    digits_example.write_local_channels(layout.input_data, seed=SEED)
    layout.create(["train", "validation"])
    return layout


def host_config(hyperparameters: dict) -> HostConfig:
    return HostConfig(
        job_name="direct",
        job_arn="arn:aws:sagemaker:us-east-1:123456789012:training-job/direct",
        current_host="algo-1",
        hosts=["algo-1"],
        hyperparameters=hyperparameters,
        channels={
            name: {"TrainingInputMode": "File", "S3DistributionType": "FullyReplicated", "RecordWrapperType": "None"}
            for name in ("train", "validation")
        },
        instance_type="ml.m5.large",
        num_cpus=os.cpu_count() or 1,
    )


def run_direct_process(tmp: Path, hyperparameters: dict) -> float:
    python = VirtualEnvs(Settings().cache_dir / "venvs").for_context(CONTEXT)
    layout = direct_layout(tmp)
    config = host_config(hyperparameters)
    config.write_config_files(layout)
    env = {
        "PATH": os.environ["PATH"],
        "HOME": os.environ.get("HOME", "/root"),
        **config.environment(layout),
        "SAGEMAKER_BASE_DIR": str(layout.root),
    }
    started = time.monotonic()
    subprocess.run(
        [str(python), str(CONTEXT / "train")],
        cwd=CONTEXT,
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    elapsed = time.monotonic() - started
    shutil.rmtree(layout.root, ignore_errors=True)
    return elapsed


def run_direct_docker(tmp: Path, hyperparameters: dict, image: str) -> float:
    layout = direct_layout(tmp)
    config = host_config(hyperparameters)
    config.write_config_files(layout)
    env_args = [
        arg for key, value in config.environment(Layout(Path("/opt/ml"))).items() for arg in ("-e", f"{key}={value}")
    ]
    started = time.monotonic()
    subprocess.run(
        ["docker", "run", "--rm", "-v", f"{layout.root}:/opt/ml", *env_args, image, "train"],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    elapsed = time.monotonic() - started
    shutil.rmtree(layout.root, ignore_errors=True)
    return elapsed


def run_through_localaws(server, bucket: str, channels: dict, hyperparameters: dict, index: int) -> tuple[float, dict]:
    sm = server.client("sagemaker")
    name = f"bench-{server.runner}-{int(time.time())}-{index}"
    request = training_request(
        name,
        server.image_uri,
        {"train": channels["train"], "validation": channels["validation"]},
        f"s3://{bucket}/jobs",
        hyperparameters,
        digits_example.experiment()["metric_definitions"],
    )
    started = time.monotonic()
    sm.create_training_job(**request)
    description = wait_for_training(sm, name, timeout=900, poll=0.05)
    elapsed = time.monotonic() - started
    assert description["TrainingJobStatus"] == "Completed", description.get("FailureReason")
    return elapsed, description


def training_overhead(runner: str, tmp: Path, repeats: int, image: str | None = None, env: dict | None = None) -> dict:
    hyperparameters = bench_hyperparameters()
    server = LocalAWSProcess(tmp, runner, **(env or {})).start()
    try:
        if runner == "process":
            server.image_uri = f"123456789012.dkr.ecr.us-east-1.amazonaws.com/digits-training:{context_hash(CONTEXT)}"
            register_image(server.endpoint_url, server.image_uri, CONTEXT)
        else:
            server.image_uri = image
        s3 = server.client("s3")
        bucket = "bench"
        s3.create_bucket(Bucket=bucket)
        channels = digits_example.write_channels(s3, bucket, "digits", seed=SEED)
        # Warm-up: builds the cached environment or pulls the image, once, outside the timings.
        run_through_localaws(server, bucket, channels, {**hyperparameters, "epochs": "1"}, 0)
        direct, through, phases = [], [], []
        for index in range(repeats):
            if runner == "process":
                direct.append(run_direct_process(tmp, hyperparameters))
            else:
                direct.append(run_direct_docker(tmp, hyperparameters, image))
            elapsed, description = run_through_localaws(server, bucket, channels, hyperparameters, index + 1)
            through.append(elapsed)
            phases.append(
                {
                    t["Status"]: round(t["EndTime"].timestamp() - t["StartTime"].timestamp(), 2)
                    for t in description["SecondaryStatusTransitions"]
                    if "EndTime" in t
                }
            )
    finally:
        server.stop()
    return {
        "runner": runner,
        "epochs": hyperparameters["epochs"],
        "direct_seconds": [round(x, 2) for x in direct],
        "localaws_seconds": [round(x, 2) for x in through],
        "ratio_median": round(statistics.median(through) / statistics.median(direct), 3),
        "goal": "<= 1.1",
        "phases_seconds": phases,
    }


def tuning_parallel_efficiency(tmp: Path) -> dict:
    """A tuning job of 6 trials with MaxParallelTrainingJobs 2: the sum of the trials' own wall times
    over twice the tuning job's wall time. 1.0 means two trials ran at every moment. Goal: >= 0.85."""
    server = LocalAWSProcess(tmp, "process").start()
    try:
        server.image_uri = f"123456789012.dkr.ecr.us-east-1.amazonaws.com/digits-training:{context_hash(CONTEXT)}"
        register_image(server.endpoint_url, server.image_uri, CONTEXT)
        s3, sm = server.client("s3"), server.client("sagemaker")
        s3.create_bucket(Bucket="bench-tuning")
        channels = digits_example.write_channels(s3, "bench-tuning", "digits", seed=SEED)
        static = {
            **sagemaker_hyperparameters(digits_example.preset("quick")),
            "epochs": "30",
            "early_stopping_patience": "30",
        }
        ranges = {
            "ContinuousParameterRanges": [
                {"Name": "learning_rate", "MinValue": "0.002", "MaxValue": "0.05", "ScalingType": "Logarithmic"}
            ]
        }
        static.pop("learning_rate")
        name = f"bench-tuning-{int(time.time())}"
        request = training_request(
            name,
            server.image_uri,
            {"train": channels["train"], "validation": channels["validation"]},
            "s3://bench-tuning/jobs",
            {},
            digits_example.experiment()["metric_definitions"],
        )
        definition = {
            key: request[key]
            for key in (
                "AlgorithmSpecification",
                "RoleArn",
                "InputDataConfig",
                "OutputDataConfig",
                "ResourceConfig",
                "StoppingCondition",
            )
        }
        definition["StaticHyperParameters"] = static
        sm.create_hyper_parameter_tuning_job(
            HyperParameterTuningJobName=name,
            HyperParameterTuningJobConfig={
                "Strategy": "Random",
                "HyperParameterTuningJobObjective": {"Type": "Minimize", "MetricName": "validation:loss"},
                "ResourceLimits": {"MaxNumberOfTrainingJobs": 6, "MaxParallelTrainingJobs": 2},
                "ParameterRanges": ranges,
            },
            TrainingJobDefinition=definition,
        )
        while True:
            tuning = sm.describe_hyper_parameter_tuning_job(HyperParameterTuningJobName=name)
            if tuning["HyperParameterTuningJobStatus"] in ("Completed", "Failed", "Stopped"):
                break
            time.sleep(0.5)
        assert tuning["HyperParameterTuningJobStatus"] == "Completed", tuning.get("FailureReason")
        trials = sm.list_training_jobs_for_hyper_parameter_tuning_job(HyperParameterTuningJobName=name, MaxResults=100)[
            "TrainingJobSummaries"
        ]
        own = [(t["TrainingEndTime"] - t["CreationTime"]).total_seconds() for t in trials]
        wall = (tuning["HyperParameterTuningEndTime"] - tuning["CreationTime"]).total_seconds()
    finally:
        server.stop()
    return {
        "trials": len(trials),
        "trial_seconds": [round(x, 2) for x in own],
        "tuning_wall_seconds": round(wall, 2),
        "parallel_efficiency": round(sum(own) / (2 * wall), 3),
        "goal": ">= 0.85",
    }


def docker_ready() -> bool:
    """A Docker engine with the base image, started (and the engine installed) when it can be (root, as in CI)."""
    from tests.fixtures import docker_engine as engine

    try:
        engine._script("install", timeout=900)
        engine._script("start", timeout=300)
        engine._script("base-image", timeout=1800)
        return True
    except Exception as error:  # noqa: BLE001 - report and go on with what can be measured
        print(f"docker runner not measured: {error}")
        return False


def docker_image() -> str | None:
    """The digits training image, built and pushed to the local registry."""
    if not docker_ready():
        return None
    from tests.fixtures import docker_engine as engine
    import docker

    try:
        return engine.build_and_push(docker.from_env(timeout=600), CONTEXT, "digits-training", "127.0.0.1:5000")
    except Exception as error:  # noqa: BLE001 - report and go on with what can be measured
        print(f"docker runner not measured: {error}")
        return None


SECTIONS = ("training", "tuning", "parse", "pipeline", "hosting", "transform", "docker", "runner")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=int(os.environ.get("BENCH_REPEATS", "3")))
    parser.add_argument("--skip-docker", action="store_true")
    parser.add_argument(
        "--only",
        action="append",
        choices=SECTIONS,
        help="measure only these (repeatable); the other figures in results.json stay as they were",
    )
    args = parser.parse_args()
    only = set(args.only or SECTIONS)
    if args.skip_docker:
        only -= {"docker", "runner"}
    results = json.loads(RESULTS.read_text()) if args.only and RESULTS.exists() else {}
    results.update(
        {
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
            "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
    )

    def record(key: str, figures: dict, show=lambda figures: figures) -> None:
        results[key] = figures
        print(json.dumps(show(figures), indent=2), flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        if "training" in only:
            record("training_overhead_process", training_overhead("process", Path(tmp), args.repeats))
        if "tuning" in only:
            record("tuning_parallel_efficiency", tuning_parallel_efficiency(Path(tmp)))
        if "parse" in only:
            from benchmarks.pipeline import dag_parse_times, experiments_parse_time

            record("dag_parse", dag_parse_times())
            (Path(tmp) / "parse").mkdir()
            record("experiments_parse", experiments_parse_time(Path(tmp) / "parse"))
        if "pipeline" in only:
            from benchmarks.pipeline import pipeline_overhead

            (Path(tmp) / "pipeline").mkdir()
            record("pipeline_overhead", pipeline_overhead(Path(tmp) / "pipeline"))
        from benchmarks.hosting import brief, hosting_benchmark

        if "hosting" in only:
            (Path(tmp) / "hosting").mkdir()
            record("hosting", hosting_benchmark(Path(tmp) / "hosting"), brief)
        if "transform" in only:  # benchmarks/transform.py: a batch transform against serve fed by hand
            from benchmarks.transform import transform_benchmark

            (Path(tmp) / "transform").mkdir()
            record("transform", transform_benchmark(Path(tmp) / "transform", args.repeats))
        if "runner" in only and docker_ready():
            from benchmarks.runner import runner_benchmark

            (Path(tmp) / "runner").mkdir()
            record("runner_docker", runner_benchmark(Path(tmp) / "runner", args.repeats))
        image = docker_image() if "docker" in only else None
        if image:
            record(
                "training_overhead_docker",
                training_overhead("docker", Path(tmp), args.repeats, image, {"LOCALAWS_REGISTRY": "127.0.0.1:5000"}),
            )
            (Path(tmp) / "hosting-docker").mkdir()
            record(
                "hosting_docker",
                hosting_benchmark(
                    Path(tmp) / "hosting-docker", "docker", image, {"LOCALAWS_REGISTRY": "127.0.0.1:5000"}
                ),
                brief,
            )
    RESULTS.write_text(json.dumps(results, indent=2))
    print(f"written to {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
