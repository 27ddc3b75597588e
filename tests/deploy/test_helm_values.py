"""deploy/helm/values.yaml, the official Airflow chart's values: what can be checked without the chart.

No network and no chart here: the file parses, names secrets and never holds one, and runs the same image
and the same environment as docker-compose.yaml (executor, the two DAG bundles, MLflow, the AWS
connection). The chart's own validation (its values.schema.json, `helm lint`, `helm template`) needs the
chart, which is not in the repository: README.md, "Production", says how it was run.
"""

from __future__ import annotations

import json
import re
import urllib.parse
from pathlib import Path

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
VALUES_FILE = REPO_ROOT / "deploy" / "helm" / "values.yaml"
COMPOSE_FILE = REPO_ROOT / "docker-compose.yaml"

#: Keys of the chart that take a literal secret; the file must use their *SecretName (or valueFrom) instead.
LITERAL_SECRET_KEYS = {
    "fernetKey",
    "jwtSecret",
    "apiSecretKey",
    "webserverSecretKey",
    "password",
    "pass",
    "brokerUrl",
    "sshKey",
    "keytabBase64Content",
}
SECRET_NAME_KEYS = {
    ("data", "metadataSecretName"),
    ("data", "brokerUrlSecretName"),
    ("fernetKeySecretName",),
    ("jwtSecretName",),
    ("apiSecretKeySecretName",),
    ("redis", "passwordSecretName"),
}
SECRET_ENV = re.compile(r"PASSWORD|SECRET|TOKEN|FERNET|_KEY$|_KEY_ID$")
AWS_KEY_ID = re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b")
COMPONENTS = ("workers", "triggerer", "scheduler", "apiServer", "dagProcessor")


@pytest.fixture(scope="module")
def values() -> dict:
    loaded = yaml.safe_load(VALUES_FILE.read_text())
    assert isinstance(loaded, dict), "the values file is not a mapping"
    return loaded


@pytest.fixture(scope="module")
def compose_env() -> dict:
    """The environment docker-compose.yaml gives its Airflow containers (a worker's), with ${VAR:-default}
    read as its default: what the file itself says when nothing overrides it."""
    compose = yaml.safe_load(COMPOSE_FILE.read_text())
    env = compose["services"]["airflow-worker"]["environment"]
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, None) for item in env)
    return {key: _compose_default(value) for key, value in env.items()}


@pytest.fixture(scope="module")
def compose_image() -> tuple[str, str]:
    compose = yaml.safe_load(COMPOSE_FILE.read_text())
    image = _compose_default(compose["services"]["airflow-worker"]["image"])
    repository, _, tag = image.rpartition(":")
    return repository, tag


def _compose_default(value):
    """``${NAME:-default}`` / ``${NAME-default}`` -> default, ``${NAME}`` / ``${NAME:?error}`` -> ""."""
    if not isinstance(value, str):
        return value
    return re.sub(r"\$\{[A-Za-z_][A-Za-z0-9_]*(?::?-([^}]*)|:?\?[^}]*)?\}", lambda m: m.group(1) or "", value)


def _env(values: dict) -> dict:
    return {item["name"]: item for item in values.get("env") or []}


def _walk(node, path=()):
    """Every (path, value) leaf of a YAML tree, keys and list indexes as path parts."""
    if isinstance(node, dict):
        for key, child in node.items():
            yield from _walk(child, (*path, key))
    elif isinstance(node, list):
        for index, child in enumerate(node):
            yield from _walk(child, (*path, index))
    else:
        yield path, node


def secret_literals(values: dict) -> list[str]:
    """Where the values carry a secret itself rather than a secret's name."""
    found = []
    for path, value in _walk(values):
        where = ".".join(map(str, path))
        if value in (None, "", False):
            continue
        if path[-1] in LITERAL_SECRET_KEYS:
            found.append(f"{where}: a literal secret (use the chart's secret name for it)")
        if isinstance(value, str):
            if AWS_KEY_ID.search(value):
                found.append(f"{where}: an AWS access key id")
            for match in re.finditer(r"[a-z0-9+]+://([^/@\s]*)@", value):
                if ":" in urllib.parse.unquote(match.group(1)):
                    found.append(f"{where}: a URL with a password")
    for name, item in _env(values).items():
        if SECRET_ENV.search(name) and "value" in item:
            found.append(f"env {name}: a literal value (valueFrom a secret instead)")
    for component in ("createUserJob", *COMPONENTS):
        for item in (values.get(component) or {}).get("env") or []:
            if SECRET_ENV.search(item["name"]) and "value" in item:
                found.append(f"{component}.env {item['name']}: a literal value (valueFrom a secret instead)")
    return found


# ------------------------------------------------------------------------------------------ secrets
def test_the_secret_check_finds_literals():
    planted = {
        "fernetKey": "x" * 44,
        "redis": {"password": "hunter2"},
        "data": {"metadataConnection": {"pass": "postgres"}},
        "env": [
            {"name": "AIRFLOW__API_AUTH__JWT_SECRET", "value": "s"},
            {"name": "X", "value": "AKIAABCDEFGHIJKLMNOP"},
        ],
        "config": {"celery": {"broker_url": "redis://:pw@redis:6379/0"}},
        "createUserJob": {"env": [{"name": "ADMIN_PASSWORD", "value": "admin"}]},
    }
    assert len(secret_literals(planted)) == 7, secret_literals(planted)


def test_the_values_name_secrets_and_hold_none(values):
    assert secret_literals(values) == []
    for path in SECRET_NAME_KEYS:
        node = values
        for key in path:
            node = node[key]
        assert isinstance(node, str) and node, f"{'.'.join(path)} must name a secret"
    # The chart's own default admin password ("admin") is never used: the job reads it from a secret.
    assert "defaultUser" not in values["createUserJob"]
    (password,) = [item for item in values["createUserJob"]["env"] if "PASSWORD" in item["name"]]
    assert password["valueFrom"]["secretKeyRef"]["name"]
    assert password["name"] in " ".join(values["createUserJob"]["args"])


def test_the_aws_identity_is_the_pods_role(values):
    env = _env(values)
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        assert name not in env
    connection = json.loads(env["AIRFLOW_CONN_AWS_DEFAULT"]["value"])
    assert connection["conn_type"] == "aws"
    assert not {"login", "password"} & set(connection), "keys in the AWS connection"
    assert "endpoint_url" not in connection.get("extra", {}), "the chart runs against real AWS"
    role = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]+$")
    for component in ("workers", "triggerer", "apiServer"):
        annotations = values[component]["serviceAccount"]["annotations"]
        assert role.match(annotations["eks.amazonaws.com/role-arn"]), component


# ------------------------------------------------------------------------------ same as compose
def test_the_image_is_composes_in_ecr(values, compose_image):
    repository, tag = compose_image
    ecr = re.compile(r"^\d{12}\.dkr\.ecr\.[a-z0-9-]+\.amazonaws\.com/" + re.escape(repository) + "$")
    for image_repository, image_tag in (
        (values["images"]["airflow"]["repository"], values["images"]["airflow"]["tag"]),
        (values["defaultAirflowRepository"], values["defaultAirflowTag"]),
    ):
        assert ecr.match(image_repository), image_repository
        assert image_tag == tag
    # The chart renders for the Airflow version the image carries (compose's base image's).
    compose = yaml.safe_load(COMPOSE_FILE.read_text())
    base = _compose_default(compose["services"]["airflow-worker"]["build"]["args"]["AIRFLOW_IMAGE"])
    assert base.startswith(f"apache/airflow:{values['airflowVersion']}-"), base


def test_the_executor_is_composes(values, compose_env):
    assert values["executor"] == compose_env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert values["redis"]["enabled"] is True and values["postgresql"]["enabled"] is False
    assert values["workers"]["celery"]["replicas"] >= 2
    assert values["dagProcessor"]["enabled"] is True
    assert values["triggerer"]["replicas"] >= 1


def test_the_dag_bundles_are_composes(values, compose_env):
    compose_bundles = json.loads(compose_env["AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST"])
    helm_bundles = values["dagProcessor"]["dagBundleConfigList"]
    assert [(b["name"], b["classpath"]) for b in helm_bundles] == [(b["name"], b["classpath"]) for b in compose_bundles]
    # The same repository folders: compose mounts them at /opt/airflow/<folder>, git-sync lays the repository
    # out under /opt/airflow/dags/repo/<subPath>.
    git_sync = values["dags"]["gitSync"]
    checkout = Path("/opt/airflow/dags/repo") / git_sync["subPath"]
    assert git_sync["enabled"] is True
    for helm_bundle, compose_bundle in zip(helm_bundles, compose_bundles, strict=True):
        path = Path(helm_bundle["kwargs"]["path"])
        assert path.parent == checkout and path.name == Path(compose_bundle["kwargs"]["path"]).name
        assert (REPO_ROOT / path.name).is_dir(), path.name
    # The experiments bundle is the folder ML_PIPELINE_EXPERIMENTS_DIR names (experiment_importer matches it).
    experiments = {b["name"]: b["kwargs"]["path"] for b in helm_bundles}["experiments"]
    assert _env(values)["ML_PIPELINE_EXPERIMENTS_DIR"]["value"] == experiments
    compose_experiments = {b["name"]: b["kwargs"]["path"] for b in compose_bundles}["experiments"]
    assert compose_env["ML_PIPELINE_EXPERIMENTS_DIR"] == compose_experiments


def test_the_projects_local_settings_are_not_shadowed(values):
    # The chart's default mounts an airflow_local_settings.py found before plugins/'s, which registers the
    # experiment files' importer.
    assert values["airflowLocalSettings"] is None
    assert (REPO_ROOT / "plugins" / "airflow_local_settings.py").is_file()


def test_mlflow_and_the_rest_of_composes_environment(values, compose_env):
    env = _env(values)
    for name in ("MLFLOW_TRACKING_URI", "ML_PIPELINE_MLFLOW_UI_URL", "AWS_DEFAULT_REGION", "AIRFLOW_CONN_AWS_DEFAULT"):
        assert name in compose_env, f"docker-compose.yaml no longer sets {name}"
        assert env[name]["value"], name
    assert re.match(r"^(https?://|arn:aws[a-z-]*:sagemaker:)", env["MLFLOW_TRACKING_URI"]["value"])
    assert values["config"]["core"]["dags_are_paused_at_creation"] == "True"
    assert compose_env["AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION"] == "true"


def test_logs_go_to_s3_and_components_have_resources(values):
    logging = values["config"]["logging"]
    assert logging["remote_logging"] == "True"
    assert logging["remote_base_log_folder"].startswith("s3://")
    assert logging["remote_log_conn_id"] == "aws_default"
    for component in COMPONENTS:
        resources = values[component]["resources"]
        assert resources["requests"] and resources["limits"], component


# ------------------------------------------------------------------- the chart's rules, the README
#: Each secret the values name, and the keys the chart reads from it (its templates' secretKeyRef keys).
def _secrets_read(values: dict) -> dict[str, set[str]]:
    read = {
        values["data"]["metadataSecretName"]: {"connection"},
        values["data"]["brokerUrlSecretName"]: {"connection"},
        values["redis"]["passwordSecretName"]: {"password"},
        values["fernetKeySecretName"]: {"fernet-key"},
        values["jwtSecretName"]: {"jwt-secret"},
        values["apiSecretKeySecretName"]: {"api-secret-key"},
        # git-sync's v3 and v4 spellings: the chart's containers read all four.
        values["dags"]["gitSync"]["credentialsSecret"]: {
            "GITSYNC_USERNAME",
            "GITSYNC_PASSWORD",
            "GIT_SYNC_USERNAME",
            "GIT_SYNC_PASSWORD",
        },
    }
    for item in values["createUserJob"]["env"]:
        ref = item["valueFrom"]["secretKeyRef"]
        read.setdefault(ref["name"], set()).add(ref["key"])
    return read


def _readme_secrets() -> dict[str, set[str]]:
    """The secrets README's Production section creates: name -> the keys given."""
    text = (REPO_ROOT / "README.md").read_text()
    section = re.search(r"^## Production\n(.*?)^## ", text, re.MULTILINE | re.DOTALL).group(1)
    commands = re.sub(r"\\\n\s*", " ", section)  # shell line continuations
    created: dict[str, set[str]] = {}
    for line in commands.splitlines():
        match = re.search(r"kubectl \S+ create secret generic (\S+)(.*)", line)
        if match:
            created[match.group(1)] = set(re.findall(r"--from-literal=([A-Za-z0-9_-]+)=", match.group(2)))
    return created


def test_the_readme_creates_every_secret_the_values_name(values):
    assert _readme_secrets() == _secrets_read(values)


def test_the_charts_own_rules(values):
    # The chart's check-values: its Redis with a password secret needs the broker URL's secret too (else the
    # chart writes a broker URL with a random password of its own).
    if values["redis"].get("passwordSecretName"):
        assert values["data"].get("brokerUrlSecretName")
    # With network policies, the api-server's admits nobody unless "from" is given: the release's pods must
    # reach its execution API. README's commands install the release as "airflow".
    if values["networkPolicies"]["enabled"]:
        (source,) = values["apiServer"]["networkPolicy"]["ingress"]["from"]
        assert source["podSelector"]["matchLabels"] == {"tier": "airflow", "release": "airflow"}
    readme = (REPO_ROOT / "README.md").read_text()
    assert "helm upgrade --install airflow " in readme
    assert "redis://:$REDIS_PASSWORD@airflow-redis:6379/0" in readme
