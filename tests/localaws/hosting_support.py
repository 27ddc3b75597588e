"""Helpers for the hosting tests: deploying, waiting, invoking, load, leftovers."""

from __future__ import annotations

import io
import json
import os
import tarfile
import threading
import time
import urllib.request
from pathlib import Path

from tests.support import ROLE_ARN

STEADY = ("InService", "Failed")
#: One gunicorn worker per instance: the tests share 2 cores with everything else.
SMALL = {"SAGEMAKER_MODEL_SERVER_WORKERS": "1"}


def create_model(sm, name: str, image: str, model_data: str | None, env: dict | None = None) -> None:
    container = {"Image": image, "Environment": dict(SMALL if env is None else env)}
    if model_data:
        container["ModelDataUrl"] = model_data
    sm.create_model(ModelName=name, PrimaryContainer=container, ExecutionRoleArn=ROLE_ARN)


def variant(name: str, model: str, count: int = 1, weight: float = 1.0, **extra) -> dict:
    return {
        "VariantName": name,
        "ModelName": model,
        "InstanceType": "ml.m5.large",
        "InitialInstanceCount": count,
        "InitialVariantWeight": weight,
        **extra,
    }


def deploy(
    sm,
    name: str,
    image: str,
    model_data: str | None,
    count: int = 1,
    env: dict | None = None,
    wait: bool = True,
    **variant_extra,
) -> dict | None:
    """Model ``<name>-m``, config ``<name>-c`` with one variant AllTraffic, endpoint ``<name>``."""
    create_model(sm, f"{name}-m", image, model_data, env)
    sm.create_endpoint_config(
        EndpointConfigName=f"{name}-c", ProductionVariants=[variant("AllTraffic", f"{name}-m", count, **variant_extra)]
    )
    sm.create_endpoint(EndpointName=name, EndpointConfigName=f"{name}-c")
    return wait_endpoint(sm, name) if wait else None


def wait_endpoint(sm, name: str, until=STEADY, timeout: float = 600, seen: list | None = None) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        description = sm.describe_endpoint(EndpointName=name)
        if seen is not None and (not seen or seen[-1] != description["EndpointStatus"]):
            seen.append(description["EndpointStatus"])
        if description["EndpointStatus"] in until:
            return description
        if time.monotonic() > deadline:
            raise TimeoutError(f"{name} still {description['EndpointStatus']} after {timeout}s")
        time.sleep(0.3)


def wait_gone(sm, name: str, timeout: float = 120) -> None:
    from botocore.exceptions import ClientError

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            sm.describe_endpoint(EndpointName=name)
        except ClientError as error:
            assert error.response["Error"]["Code"] == "ValidationException"
            return
        time.sleep(0.3)
    raise TimeoutError(f"{name} still exists after {timeout}s")


def delete_quietly(sm, name: str) -> None:
    try:
        sm.delete_endpoint(EndpointName=name)
        wait_gone(sm, name)
    except Exception:  # noqa: BLE001 - cleanup
        pass


def predict(rt, name: str, rows, **kwargs) -> tuple[list, dict]:
    response = rt.invoke_endpoint(
        EndpointName=name,
        Body=json.dumps({"instances": [list(map(int, r)) for r in rows]}),
        ContentType="application/json",
        Accept="application/json",
        **kwargs,
    )
    return json.loads(response["Body"].read())["predictions"], response


def model_tarball(model_dir: Path) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for path in sorted(model_dir.iterdir()):
            tar.add(path, arcname=path.name)
    return buffer.getvalue()


def constant_model(directory: Path, label: int) -> Path:
    """A model written with digits.model.save that answers ``label`` whatever it is shown."""
    import torch
    from digits import model as digits_model

    net = digits_model.DigitsMLP(hidden_units=16, dropout=0.0)
    state = net.state_dict()
    last = sorted(key for key in state if key.endswith(".bias"))[-1]
    for key in state:
        state[key] = torch.zeros_like(state[key])
    state[last][label] = 10.0
    config = {**digits_model.architecture(64, 16, 10, 0.0), "classes": list(range(10))}
    digits_model.save(directory, state, config)
    return directory


def instances(localaws, name: str) -> dict:
    with urllib.request.urlopen(f"{localaws.endpoint_url}/_localaws/endpoints/{name}", timeout=10) as response:
        return json.loads(response.read())


def _process_alive(pid: int) -> bool:
    """Whether any process of the group ``pid`` leads (a serving master and its workers) still runs."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        state, pgrp = fields[0], int(fields[2])
        if (int(entry) == pid or pgrp == pid) and state != "Z":
            return True
    return False


def alive(found: list[dict], docker_client=None) -> list[str]:
    """Which of the containers / processes named in admin views still run."""
    left = []
    for instance in found:
        for container in instance["Containers"]:
            if "Pid" in container and _process_alive(container["Pid"]):
                left.append(f"process {container['Pid']}")
            if "ContainerId" in container and docker_client is not None:
                import docker.errors

                try:
                    docker_client.containers.get(container["ContainerId"])
                    left.append(f"container {container['ContainerId'][:12]}")
                except docker.errors.NotFound:
                    pass
    return left


def labelled_containers(docker_client, prefix: str) -> list[str]:
    return [
        c.name
        for c in docker_client.containers.list(all=True, filters={"label": "localaws=1"})
        if c.name.startswith(prefix)
    ]


class Load:
    """Invocations from a few threads until stopped: every answer and every error, kept."""

    def __init__(
        self, localaws, name: str, rows, threads: int = 3, target_variant: str | None = None, pause: float = 0.0
    ):
        self.client = localaws.client("sagemaker-runtime")
        self.name = name
        self.body = json.dumps({"instances": [list(map(int, r)) for r in rows]})
        self.target_variant = target_variant
        self.pause = pause
        self.results: list[tuple[float, str, list]] = []  # (time, variant, classes)
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def _run(self) -> None:
        extra = {"TargetVariant": self.target_variant} if self.target_variant else {}
        while not self._stop.is_set():
            try:
                response = self.client.invoke_endpoint(
                    EndpointName=self.name, Body=self.body, ContentType="application/json", **extra
                )
                classes = [p["class"] for p in json.loads(response["Body"].read())["predictions"]]
                self.results.append((time.monotonic(), response["InvokedProductionVariant"], classes))
            except Exception as error:  # noqa: BLE001 - every failure is a finding
                self.errors.append(f"{type(error).__name__}: {error}")
            if self.pause:
                time.sleep(self.pause)

    def __enter__(self) -> "Load":
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=90)
