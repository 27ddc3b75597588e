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

# The only secrets the file may carry: public, local-only dummies (documented at its top).
LOCAL_DUMMIES = {
    "airflow",  # Postgres and the admin user
    "localaws",  # the AWS connection's access key and secret for localaws
    "bG9jYWwtb25seS1mZXJuZXQta2V5LWNoYW5nZS1tZSE=",  # base64("local-only-fernet-key-change-me!")
    "local-only-jwt-secret-change-me",
    "local-only-api-secret-key-change-me",
}
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|FERNET|_KEY$|_KEY_ID$")
AWS_CREDENTIAL_VARIABLES = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")

# What the compose tool sees of this environment: nothing from the developer's shell or .env.
CLEAN_ENV_KEEP = ("PATH", "HOME", "LANG", "LC_ALL", "DOCKER_CONFIG")


# ------------------------------------------------------------------------------------------ the tool
def _works(command: list[str]) -> bool:
    try:
        return subprocess.run([*command, "version"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _find_compose() -> list[str] | None:
    if shutil.which("docker") and _works(["docker", "compose"]):
        return ["docker", "compose"]
    if shutil.which("docker-compose") and _works(["docker-compose"]):
        return ["docker-compose"]
    return None


def _apt_install_docker_compose() -> str:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "docker-compose"]
    # apt-get update only when the package lists are missing or a first attempt fails.
    if not list(Path("/var/lib/apt/lists").glob("*_Packages")):
        subprocess.run(["apt-get", "update", "-qq"], capture_output=True, env=env, timeout=300)
    result = subprocess.run(install, capture_output=True, text=True, env=env, timeout=600)
    if result.returncode != 0:
        subprocess.run(["apt-get", "update", "-qq"], capture_output=True, env=env, timeout=300)
        result = subprocess.run(install, capture_output=True, text=True, env=env, timeout=600)
    return "" if result.returncode == 0 else (result.stdout + result.stderr)[-2000:]


@pytest.fixture(scope="module")
def compose() -> list[str]:
    command = _find_compose()
    if command is None:
        if os.geteuid() != 0 or not shutil.which("apt-get"):
            pytest.skip("no compose tool (docker compose / docker-compose), and installing one needs root and apt")
        error = _apt_install_docker_compose()
        command = _find_compose()
        if command is None:
            pytest.fail(f"apt-get install docker-compose did not give a working docker-compose: {error}")
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
def empty_env_file(tmp_path_factory) -> Path:
    """Stands in for the developer's .env, so that the file's own defaults are what is tested."""
    path = tmp_path_factory.mktemp("compose") / "empty.env"
    path.write_text("")
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
    dockerfile = (REPO_ROOT / "docker" / "localaws" / "Dockerfile").read_text()
    assert "FROM python:3.11-slim" in dockerfile
    assert "pip install -r requirements-dev.txt -c constraints.txt" in dockerfile
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


def test_no_credentials_but_the_documented_local_dummies(compose, empty_env_file):
    text = COMPOSE_FILE.read_text()
    assert not re.search(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b", text), "an AWS access key id in docker-compose.yaml"
    assert not re.search(r"(?im)aws_secret_access_key[ \t]*[:=][ \t]*[^\s#]", text)
    # Resolved with no .env and no AWS_* in the environment: whatever is left is in the file itself.
    resolved = _resolved(compose, empty_env_file, "localaws", "flower")
    for name, service in resolved["services"].items():
        for key, value in _environment(service).items():
            if value in (None, ""):
                continue
            if SECRET_NAME.search(key):
                assert value in LOCAL_DUMMIES, f"{name}: {key}={value!r} is not a documented local dummy"
            for match in re.finditer(r"[a-z0-9+]+://([^/@\s]*)@", value):
                userinfo = urllib.parse.unquote(match.group(1))
                _, _, password = userinfo.partition(":")
                assert password in LOCAL_DUMMIES | {""}, f"{name}: {key} carries a password {password!r}"


def test_gitignore_keeps_local_state_out():
    ignored = (REPO_ROOT / ".gitignore").read_text().split()
    assert "/.env" in ignored and "/.airflow/" in ignored
