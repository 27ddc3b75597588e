"""The Amazon provider's own SageMakerTrainingOperator against localaws, print_log streaming live. The job
runs the digits trainer's stand-in (tests/localaws/images/quick-trainer): the log's streaming is the
point, not training."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import pytest

from tests.conftest import REPO_ROOT, unique
from tests.fixtures import digits_example
from tests.support import localaws_connection, training_request

pytestmark = pytest.mark.timeout(900)

OPERATOR_SCRIPT = """
import json, sys
from airflow.providers.amazon.aws.operators.sagemaker import SageMakerTrainingOperator
config = json.loads(sys.argv[1])
operator = SageMakerTrainingOperator(
    task_id="train", config=config, aws_conn_id="aws_default", wait_for_completion=True,
    print_log=True, check_interval=2, action_if_job_exists="fail", deferrable=False,
)
result = operator.execute({})
print("RESULT " + result["Training"]["TrainingJobStatus"], flush=True)
"""


@pytest.mark.slow
def test_training_operator_print_log_shows_the_job_log_live(localaws_process, quick_trainer, tmp_path):
    from ml_pipeline.config import sagemaker_hyperparameters

    sm = localaws_process.client("sagemaker")
    bucket = unique("operator")
    localaws_process.client("s3").create_bucket(Bucket=bucket)
    preset = digits_example.preset("quick")
    channels = digits_example.write_channels(localaws_process.client("s3"), bucket, "data", seed=3)
    name = unique("operator")
    config = training_request(
        name,
        quick_trainer,
        {"train": channels["train"], "validation": channels["validation"]},
        f"s3://{bucket}/jobs",
        # Long enough that the job is still training when the operator first reads its log.
        {**sagemaker_hyperparameters(preset), "epochs": "40", "early_stopping_patience": "40"},
        digits_example.experiment()["metric_definitions"],
        Environment={"EPOCH_SECONDS": "0.25"},
    )
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(tmp_path / "airflow"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW_CONN_AWS_DEFAULT": localaws_connection(localaws_process.endpoint_url),
    }
    process = subprocess.Popen(
        [sys.executable, "-c", OPERATOR_SCRIPT, json.dumps(config)],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    arrivals: list[tuple[float, str]] = []

    def read():
        for line in process.stdout:
            arrivals.append((time.time(), line.rstrip()))

    reader = threading.Thread(target=read)
    reader.start()
    process.wait(600)
    reader.join(10)
    output = "\n".join(line for _, line in arrivals)
    assert process.returncode == 0, output
    assert "RESULT Completed" in output

    description = sm.describe_training_job(TrainingJobName=name)
    ended = description["TrainingEndTime"].timestamp()
    epoch_lines = [(at, line) for at, line in arrivals if "validation_accuracy=" in line]
    assert epoch_lines, output
    # Live: the operator printed the job's own log lines while the job was still training.
    assert epoch_lines[0][0] < ended, output
