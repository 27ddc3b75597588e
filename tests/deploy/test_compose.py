"""docker-compose.yaml: valid for the compose tool itself, and of the shape the project promises.

The compose tool validates the file (``config -q``) and resolves it (interpolation, YAML merge keys,
profiles); the shape is asserted on the tool's resolved output, never on our own reading of the YAML.
The tool is ``docker compose`` (the v2 plugin) when installed, else ``docker-compose``; when neither
is there and we are root (as in CI), Debian's ``docker-compose`` (1.29) is installed with apt. Debian
12 packages no v2 plugin. No Docker engine is needed: ``config`` never talks to one.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import urllib.parse
from pathlib import Path

import pytest
import yaml

from scripts.stack import BASES, ensure_env, find_compose, install_compose, read_env

REPO_ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO_ROOT / "docker-compose.yaml"

AIRFLOW_SERVICES = {
    "airflow-apiserver": "api-server",
    "airflow-scheduler": "scheduler",
    "airflow-dag-processor": "dag-processor",
    "airflow-triggerer": "triggerer",
    "airflow-worker": "celery worker",
}
ALL_SERVICES = {"postgres", "redis", "airflow-init", "localaws", *AIRFLOW_SERVICES}
AIRFLOW_CONTAINERS = {"airflow-init", *AIRFLOW_SERVICES}

# The only credential the file itself carries: localaws's dummy key (localaws takes any key). Every password
# and secret comes from .env or the environment, with no default.
LOCAL_DUMMIES = {"localaws"}
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|FERNET|_KEY$|_KEY_ID$")
AWS_CREDENTIAL_VARIABLES = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")

# What the compose tool sees of this environment: nothing from the developer's shell or .env.
CLEAN_ENV_KEEP = ("PATH", "HOME", "LANG", "LC_ALL", "DOCKER_CONFIG")


# ------------------------------------------------------------------------------------------ the tool
@pytest.fixture(scope="module")
def compose() -> list[str]:
    command = find_compose()
    if command is None:
        if os.geteuid() != 0 or not shutil.which("apt-get"):
            pytest.skip("no compose tool (docker compose / docker-compose), and installing one needs root and apt")
        try:
            command = install_compose()
        except SystemExit as error:
            pytest.fail(str(error))
    return command


def _run(compose: list[str], *args: str, env_file: Path, extra_env: dict | None = None):
    env = {key: os.environ[key] for key in CLEAN_ENV_KEEP if key in os.environ}
    env.update(extra_env or {})
    return subprocess.run(
        [*compose, "--project-directory", str(REPO_ROOT), "-f", str(COMPOSE_FILE), "--env-file", str(env_file), *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


@pytest.fixture(scope="module")
def bare_env_file(tmp_path_factory) -> Path:
    """An .env with nothing in it: the file must refuse it (no default passwords)."""
    path = tmp_path_factory.mktemp("compose") / "bare.env"
    path.write_text("")
    return path


@pytest.fixture(scope="module")
def empty_env_file(tmp_path_factory) -> Path:
    """Stands in for the developer's .env: the secrets as `make stack` generates them (scripts/stack.py), and
    nothing else, so that the file's own defaults are what is tested."""
    path = tmp_path_factory.mktemp("compose") / "secrets.env"
    ensure_env(path)
    return path


def _resolved(compose, env_file: Path, *profiles: str, extra_env: dict | None = None) -> dict:
    args = [arg for profile in profiles for arg in ("--profile", profile)]
    result = _run(compose, *args, "config", env_file=env_file, extra_env=extra_env)
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


@pytest.fixture(scope="module")
def config(compose, empty_env_file) -> dict:
    """The file as the compose tool resolves it with the localaws profile and no .env."""
    return _resolved(compose, empty_env_file, "localaws")


# ------------------------------------------------------------------------------------ normalisation
def _environment(service: dict) -> dict:
    env = service.get("environment") or {}
    if isinstance(env, list):  # KEY=VALUE list form
        env = dict(item.split("=", 1) if "=" in item else (item, None) for item in env)
    return env


def _volumes(service: dict) -> list[dict]:
    """Each volume as {source, target, read_only}, from compose v1's short or v2's long syntax."""
    out = []
    for volume in service.get("volumes") or []:
        if isinstance(volume, str):
            parts = volume.split(":")
            mode = parts[2] if len(parts) > 2 else "rw"
            out.append({"source": parts[0], "target": parts[1], "read_only": "ro" in mode.split(",")})
        else:
            out.append(
                {"source": volume.get("source"), "target": volume["target"], "read_only": bool(volume.get("read_only"))}
            )
    return out


def _ports(service: dict) -> list[dict]:
    """Each published port as {host_ip, published, target}, from either syntax."""
    out = []
    for port in service.get("ports") or []:
        if isinstance(port, (str, int)):
            spec = str(port).split("/")[0]
            parts = spec.split(":")
            host_ip = parts[0] if len(parts) == 3 else ""
            out.append(
                {"host_ip": host_ip, "published": str(parts[-2]) if len(parts) > 1 else "", "target": str(parts[-1])}
            )
        else:
            out.append(
                {
                    "host_ip": port.get("host_ip", ""),
                    "published": str(port.get("published", "")),
                    "target": str(port["target"]),
                }
            )
    return out


def _command(service: dict) -> str:
    command = service.get("command") or ""
    return " ".join(command) if isinstance(command, list) else command


# ---------------------------------------------------------------------------------------- validity
@pytest.mark.slow
@pytest.mark.parametrize("profiles", [(), ("localaws",), ("localaws", "flower")], ids=["plain", "localaws", "flower"])
def test_the_compose_tool_validates_the_file(compose, empty_env_file, profiles):
    args = [arg for profile in profiles for arg in ("--profile", profile)]
    result = _run(compose, *args, "config", "-q", env_file=empty_env_file)
    assert result.returncode == 0, f"{' '.join(compose)} config -q: {result.stderr}"


def test_the_services(config):
    services = config["services"]
    assert ALL_SERVICES <= set(services)
    for name, command in AIRFLOW_SERVICES.items():
        assert _command(services[name]) == command, name
        assert "healthcheck" in services[name], name
    for name in ("postgres", "redis", "localaws"):
        assert "healthcheck" in services[name], name
    assert services["postgres"]["image"].startswith("postgres:")
    assert services["redis"]["image"].startswith("redis:")


def test_airflow_image_is_the_official_one_with_the_projects_requirements(config):
    for name in AIRFLOW_CONTAINERS:
        build = config["services"][name]["build"]
        assert build["dockerfile"] == "docker/airflow/Dockerfile"
        assert Path(build["context"]).resolve() == REPO_ROOT
        assert build["args"]["AIRFLOW_IMAGE"] == "apache/airflow:3.3.2-python3.11"
    dockerfile = (REPO_ROOT / "docker" / "airflow" / "Dockerfile").read_text()
    assert "ARG AIRFLOW_IMAGE=apache/airflow:3.3.2-python3.11" in dockerfile
    assert "FROM ${AIRFLOW_IMAGE}" in dockerfile
    assert re.search(r"pip install .*-r \S*requirements\.txt -c \S*constraints\.txt", dockerfile.replace("\\\n", " "))


def test_localaws_service_is_built_from_the_repository_and_only_in_its_profile(compose, empty_env_file, config):
    localaws = config["services"]["localaws"]
    assert localaws["profiles"] == ["localaws"]
    assert localaws["build"]["dockerfile"] == "docker/localaws/Dockerfile"
    assert _command(localaws) == "python -m localaws serve --host 0.0.0.0 --port 4566"
    assert localaws["build"]["args"]["PYTHON_IMAGE"] == "python:3.11-slim"
    dockerfile = (REPO_ROOT / "docker" / "localaws" / "Dockerfile").read_text()
    assert "ARG PYTHON_IMAGE=python:3.11-slim" in dockerfile and "FROM ${PYTHON_IMAGE}" in dockerfile
    assert "pip install -r requirements.txt -c constraints.txt" in dockerfile
    targets = {volume["target"]: volume for volume in _volumes(localaws)}
    assert targets["/var/run/docker.sock"]["source"] == "/var/run/docker.sock"
    # The docker runner bind-mounts jobs' trees through the host's engine: same path on both sides.
    work_dir = _environment(localaws)["LOCALAWS_WORK_DIR"]
    assert targets[work_dir]["source"] == work_dir
    # Without the profile there is no localaws (compose v1's `config` still lists it, with its
    # profile), and nothing depends on it, so a plain `up` starts Airflow alone.
    plain = _resolved(compose, empty_env_file)
    assert plain["services"].get("localaws", {"profiles": ["localaws"]})["profiles"] == ["localaws"]
    for name, service in config["services"].items():
        depends_on = service.get("depends_on") or {}
        assert "localaws" not in depends_on, f"{name} depends on localaws"


def test_localaws_keeps_its_state_in_a_named_volume(config):
    localaws = config["services"]["localaws"]
    state_dir = _environment(localaws)["LOCALAWS_STATE_DIR"]
    volume = {volume["target"]: volume for volume in _volumes(localaws)}[state_dir]
    assert volume["source"] == "localaws-state"  # a named volume, not a bind mount: `down -v` resets it
    assert "localaws-state" in config["volumes"]


def test_celery_executor_with_redis_and_postgres(config):
    services = config["services"]
    for name in AIRFLOW_CONTAINERS:
        env = _environment(services[name])
        assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor", name
        assert (
            env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://")
            and "@redis:6379" in env["AIRFLOW__CELERY__BROKER_URL"]
        )
        assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg2://")
        assert "@postgres/" in env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
        assert env["AIRFLOW__CELERY__RESULT_BACKEND"].startswith("db+postgresql://")
        assert env["AIRFLOW__CORE__LOAD_EXAMPLES"].lower() == "false"
        assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://airflow-apiserver:8080/execution/"


def test_components_share_the_jwt_secret_and_fernet_key(config):
    services = config["services"]
    for key in ("AIRFLOW__API_AUTH__JWT_SECRET", "AIRFLOW__CORE__FERNET_KEY", "AIRFLOW__API__SECRET_KEY"):
        values = {_environment(services[name]).get(key) for name in AIRFLOW_CONTAINERS}
        assert len(values) == 1 and None not in values and "" not in values, (key, values)


def test_startup_order(config):
    services = config["services"]
    for name in AIRFLOW_SERVICES:
        depends_on = services[name]["depends_on"]
        assert depends_on["postgres"]["condition"] == "service_healthy", name
        assert depends_on["redis"]["condition"] == "service_healthy", name
        assert depends_on["airflow-init"]["condition"] == "service_completed_successfully", name
    assert services["airflow-worker"]["depends_on"]["airflow-apiserver"]["condition"] == "service_healthy"
    init = _environment(services["airflow-init"])
    assert init["_AIRFLOW_DB_MIGRATE"] == "true" and init["_AIRFLOW_WWW_USER_CREATE"] == "true"


def test_aws_connection_defaults_to_localaws_with_dummy_keys(config):
    for name in AIRFLOW_CONTAINERS:
        env = _environment(config["services"][name])
        uri = urllib.parse.urlsplit(env["AIRFLOW_CONN_AWS_DEFAULT"])
        extras = dict(urllib.parse.parse_qsl(uri.query))
        assert uri.scheme == "aws"
        assert (uri.username, uri.password) == ("localaws", "localaws")
        assert extras["endpoint_url"] == "http://localaws:4566"
        # Real credentials are never in the file: passed through from the shell only when set there.
        for variable in AWS_CREDENTIAL_VARIABLES:
            assert env.get(variable) in (None, ""), (name, variable)


def test_aws_connection_is_overridden_from_dot_env_for_real_aws(compose, tmp_path):
    real = {"conn_type": "aws", "extra": {"region_name": "eu-west-1"}}
    env_file = tmp_path / "real-aws.env"
    env_file.write_text(f"AIRFLOW_CONN_AWS_DEFAULT={json.dumps(real)}\nAWS_DEFAULT_REGION=eu-west-1\n")
    ensure_env(env_file)  # and the secrets, as make stack adds them to a .env of the user's
    assert _run(compose, "config", "-q", env_file=env_file).returncode == 0
    resolved = _resolved(compose, env_file)
    for name in AIRFLOW_CONTAINERS:
        env = _environment(resolved["services"][name])
        assert json.loads(env["AIRFLOW_CONN_AWS_DEFAULT"]) == real, name
        assert env["AWS_DEFAULT_REGION"] == "eu-west-1"


def test_project_folders_are_mounted(config):
    expected = {
        "/opt/airflow/dags": ("dags", False),
        "/opt/airflow/plugins": ("plugins", False),
        "/opt/airflow/include": ("include", False),
        "/opt/airflow/experiments": ("experiments", True),
        "/opt/airflow/docker": ("docker", True),
    }
    for name in AIRFLOW_CONTAINERS:
        volumes = {volume["target"]: volume for volume in _volumes(config["services"][name])}
        for target, (folder, read_only) in expected.items():
            assert target in volumes, (name, target)
            assert Path(volumes[target]["source"]).resolve() == REPO_ROOT / folder, (name, target)
            assert volumes[target]["read_only"] == read_only, (name, target)


def test_published_ports_are_bound_to_localhost(compose, empty_env_file):
    everything = _resolved(compose, empty_env_file, "localaws", "flower")
    published = {}
    for name, service in everything["services"].items():
        for port in _ports(service):
            assert port["host_ip"] == "127.0.0.1", (name, port)
            published[name] = port
    assert published["airflow-apiserver"]["published"] == "8080"
    assert published["localaws"]["published"] == "4566"


def test_no_credentials_and_no_default_password(compose, empty_env_file):
    text = COMPOSE_FILE.read_text()
    assert not re.search(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b", text), "an AWS access key id in docker-compose.yaml"
    assert not re.search(r"(?im)aws_secret_access_key[ \t]*[:=][ \t]*[^\s#]", text)
    # No ${PASSWORD-ish:-default}: a secret variable is either required (:?) or passed through empty.
    for match in re.finditer(r"\$\{([A-Z_]+):?-([^}]*)\}", text):
        assert not SECRET_NAME.search(match[1]) or not match[2], f"{match[0]}: a default for a secret"
    # Resolved with only the generated secrets: every secret value is one of them (or localaws's dummy key).
    generated = set(read_env(empty_env_file).values())
    resolved = _resolved(compose, empty_env_file, "localaws", "flower")
    for name, service in resolved["services"].items():
        for key, value in _environment(service).items():
            if value in (None, ""):
                continue
            if SECRET_NAME.search(key):
                assert value in generated | LOCAL_DUMMIES, f"{name}: {key}={value!r} comes from the file itself"
            for match in re.finditer(r"[a-z0-9+]+://([^/@\s]*)@", value):
                userinfo = urllib.parse.unquote(match.group(1))
                _, _, password = userinfo.partition(":")
                assert password in generated | LOCAL_DUMMIES | {""}, f"{name}: {key} carries a password {password!r}"
    for service in ("redis",):
        command = _command(resolved["services"][service])
        assert "--requirepass" in command and read_env(empty_env_file)["REDIS_PASSWORD"] in command


@pytest.mark.slow
def test_without_the_secrets_the_file_refuses_to_start(compose, bare_env_file):
    result = _run(compose, "--profile", "localaws", "config", "-q", env_file=bare_env_file)
    assert result.returncode != 0
    assert "POSTGRES_PASSWORD" in result.stderr or "REDIS_PASSWORD" in result.stderr, result.stderr
    assert "make stack" in result.stderr  # the error says where the values come from


def test_the_local_stack_differs_only_in_its_base_images(compose, empty_env_file, config):
    """scripts/stack.py's stack (images built here) is the published file with its four base-image variables
    set, and nothing else: the same services, commands, settings, volumes, ports and health checks."""
    local = _resolved(compose, empty_env_file, "localaws", extra_env=BASES)

    def without_bases(resolved: dict) -> dict:
        resolved = json.loads(json.dumps(resolved))
        for service in resolved["services"].values():
            service.pop("image", None)
            ((service.get("build") or {}).get("args") or {}).pop("AIRFLOW_IMAGE", None)
            ((service.get("build") or {}).get("args") or {}).pop("PYTHON_IMAGE", None)
        return resolved

    assert without_bases(local) == without_bases(config)
    services = local["services"]
    assert services["postgres"]["image"] == BASES["POSTGRES_IMAGE"]
    assert services["redis"]["image"] == BASES["REDIS_IMAGE"]
    assert services["localaws"]["build"]["args"]["PYTHON_IMAGE"] == BASES["LOCALAWS_PYTHON_IMAGE"]
    for name in AIRFLOW_CONTAINERS:
        assert services[name]["build"]["args"]["AIRFLOW_IMAGE"] == BASES["AIRFLOW_IMAGE"], name
    # Built images keep their published names (ml-pipeline/airflow, ml-pipeline/localaws).
    for name in [*AIRFLOW_CONTAINERS, "localaws"]:
        assert services[name]["image"] == config["services"][name]["image"], name


def test_gitignore_keeps_local_state_out():
    ignored = (REPO_ROOT / ".gitignore").read_text().split()
    assert "/.env" in ignored and "/.airflow/" in ignored
