"""A process that forks task processes loads what the tasks load before it forks; the other components do not."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT

PRELOADED = ("ml_pipeline.pipeline_dag", "mlflow", "sagemaker.core.image_uris")
PROBE = f"""
import json, sys
import airflow
from ml_pipeline import config
from ml_pipeline.aws_sessions import _LOADER
print(json.dumps({{
    "modules": [name for name in {PRELOADED!r} if name in sys.modules],
    "validators": config.validator.cache_info().currsize,
    "models": sorted(set(key[1] for key in _LOADER._cache if key[0] == "load_service_model")),
}}))
"""


def probe(tmp_path, **env) -> dict:
    from scripts.run_pipeline import airflow_env

    from ml_pipeline.preload import ENV

    environment = airflow_env("http://127.0.0.1:9", tmp_path / "home")
    environment.pop(ENV, None)
    environment.update(env)
    completed = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=REPO_ROOT, env=environment, capture_output=True, text=True, timeout=120
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    return json.loads(completed.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_a_process_started_to_preload_has_what_tasks_load_as_soon_as_airflow_is_imported(tmp_path):
    from ml_pipeline.aws_sessions import SERVICES

    found = probe(tmp_path, ML_PIPELINE_PRELOAD="1")
    assert found["modules"] == list(PRELOADED)
    assert found["validators"] == 3
    assert set(SERVICES) <= set(found["models"])


@pytest.mark.slow
def test_any_other_airflow_process_stays_light(tmp_path):
    found = probe(tmp_path)
    assert found == {"modules": [], "validators": 0, "models": []}


def test_only_the_standalone_scheduler_preloads():
    from ml_pipeline.preload import ENV
    from scripts.airflow_standalone import COMPONENTS, component_env

    preloading = [name for name in COMPONENTS if component_env({}, name).get(ENV) == "1"]
    assert preloading == ["scheduler"]
