"""Small helpers the tests share: request builders, waits, response-shape checks."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time

from botocore import session as botocore_session

ROLE_ARN = "arn:aws:iam::123456789012:role/SageMakerExecution"
TERMINAL = ("Completed", "Failed", "Stopped")


def training_request(
    name: str,
    image: str,
    channels: dict[str, str],
    output: str,
    hyperparameters: dict[str, str],
    metric_definitions: list[dict] | None = None,
    max_runtime: int = 600,
    **extra,
) -> dict:
    request = {
        "TrainingJobName": name,
        "AlgorithmSpecification": {
            "TrainingImage": image,
            "TrainingInputMode": "File",
            "MetricDefinitions": metric_definitions or [],
        },
        "RoleArn": ROLE_ARN,
        "InputDataConfig": [
            {
                "ChannelName": channel,
                "DataSource": {
                    "S3DataSource": {
                        "S3DataType": "S3Prefix",
                        "S3Uri": uri,
                        "S3DataDistributionType": "FullyReplicated",
                    }
                },
                "ContentType": "text/csv",
            }
            for channel, uri in channels.items()
        ],
        "OutputDataConfig": {"S3OutputPath": output},
        "ResourceConfig": {"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 10},
        "StoppingCondition": {"MaxRuntimeInSeconds": max_runtime},
        "HyperParameters": hyperparameters,
        **extra,
    }
    if not channels:  # botocore: InputDataConfig, when given, holds at least one channel
        del request["InputDataConfig"]
    return request


def wait_for_training(sm, name: str, timeout: float = 600, until=TERMINAL, poll: float = 0.5) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        description = sm.describe_training_job(TrainingJobName=name)
        if description["TrainingJobStatus"] in until or description["SecondaryStatus"] in until:
            return description
        if time.monotonic() > deadline:
            raise TimeoutError(f"{name} still {description['SecondaryStatus']} after {timeout}s")
        time.sleep(poll)


def wait_until(what, timeout: float = 120, poll: float = 0.3, waiting_for: str = ""):
    """``what()``'s first truthy value, asked every ``poll`` seconds; TimeoutError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = what()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"still waiting after {timeout}s{': ' + waiting_for if waiting_for else ''}")
        time.sleep(poll)


def stop_standalone(process: subprocess.Popen, grace: float) -> None:
    """Stops scripts/airflow_standalone.py as Ctrl-C does (SIGTERM: it stops its components, each in a
    session of its own), then kills whatever of it and its descendants is left after ``grace`` seconds.
    A component stuck past its stop (a scheduler was seen not to handle SIGTERM for a minute) costs a
    test the grace, not the script's own 60 s, and never outlives it."""
    import psutil  # noqa: PLC0415 - installed with Airflow

    tree: list = []
    with contextlib.suppress(psutil.NoSuchProcess):
        tree = [psutil.Process(process.pid), *psutil.Process(process.pid).children(recursive=True)]
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    for child in tree:
        with contextlib.suppress(psutil.NoSuchProcess):
            child.kill()
    process.wait()


def unknown_members(service: str, operation: str, response: dict) -> list[str]:
    """Members of ``response`` that botocore's output shape for ``operation`` does not have."""
    model = botocore_session.get_session().get_service_model(service)
    shape = model.operation_model(operation).output_shape
    found: list[str] = []

    def walk(shape, value, path):
        if shape.type_name == "structure" and isinstance(value, dict):
            for key, item in value.items():
                if key == "ResponseMetadata" and not path:
                    continue
                if key not in shape.members:
                    found.append(f"{path}{key}")
                else:
                    walk(shape.members[key], item, f"{path}{key}.")
        elif shape.type_name == "list" and isinstance(value, list):
            for item in value:
                walk(shape.member, item, path)
        elif shape.type_name == "map" and isinstance(value, dict):
            for item in value.values():
                walk(shape.value, item, path)

    walk(shape, response, "")
    return found


def localaws_connection(endpoint_url: str, login: str = "testing", password: str = "testing") -> str:
    """An Airflow AWS connection to a localaws (AIRFLOW_CONN_<ID>'s JSON)."""
    return json.dumps(
        {
            "conn_type": "aws",
            "login": login,
            "password": password,
            "extra": {"endpoint_url": endpoint_url, "region_name": "us-east-1"},
        }
    )


_MIGRATED: dict[str, str] = {}  # this interpreter's freshly migrated Airflow database, copied into each new home


def migrate(env: dict) -> None:
    """``scripts.run_pipeline.migrate``, run once per test process: a later home gets a copy of the first one's
    freshly migrated database (``airflow db migrate`` costs seconds of CPU, and the suite makes a dozen homes)."""
    import atexit
    import shutil
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    from scripts.run_pipeline import migrate as migrate_home

    home = Path(env["AIRFLOW_HOME"])
    if (home / ".migrated").exists():
        return
    if "db" not in _MIGRATED:
        template = Path(tempfile.mkdtemp(prefix="airflow-db-template-"))
        atexit.register(shutil.rmtree, template, True)
        migrate_home({**env, "AIRFLOW_HOME": str(template)})
        _MIGRATED["db"] = str(template / "airflow.db")
    home.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(_MIGRATED["db"], home / "airflow.db")
    # Airflow writes the home's airflow.cfg (its generated JWT secret and Fernet key among it) on its first
    # import: once, here, or a standalone's components would each write their own at once and reject each
    # other's tokens.
    subprocess.run(
        [
            sys.executable,
            "-c",
            "from airflow.configuration import write_default_airflow_configuration_if_needed as w; w()",
        ],
        env=env,
        check=True,
    )
    (home / ".migrated").write_text("ok")
