"""The production stack of docker-compose.yaml on this machine, from images built here (no Docker Hub).

  python scripts/stack.py up [--no-build]     make stack: engine, images, .env, `up`, wait until healthy
  python scripts/stack.py down [--volumes]    make stack-down: stop and remove the containers (volumes kept
                                              unless --volumes)
  python scripts/stack.py worker [--services-at ADDRESS]
                                              one more Celery worker: on this host, on the stack's network;
                                              or, with --services-at, pointed at the stack on ADDRESS
  python scripts/stack.py status              each service's state and health

What differs from `docker compose --profile localaws up` with the published file is only the base images
(docker-compose.yaml's AIRFLOW_IMAGE, POSTGRES_IMAGE, REDIS_IMAGE, LOCALAWS_PYTHON_IMAGE): built from a
bootstrapped Debian (scripts/docker-engine.sh stack-base) and docker/stack/. The compose project is
``ml-pipeline`` (COMPOSE_PROJECT_NAME), whatever the checkout's folder is called.

Secrets: .env beside docker-compose.yaml (git-ignored, mode 600), written on the first `up` with generated
values; later `up`s keep it and add only what is missing. Nothing is printed of it but the admin's name.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "docker-compose.yaml"
#: The stack's secrets; ML_PIPELINE_STACK_ENV_FILE names another (the stack test's own).
ENV_FILE = Path(os.environ.get("ML_PIPELINE_STACK_ENV_FILE") or ROOT / ".env")
ENGINE_SCRIPT = ROOT / "scripts" / "docker-engine.sh"
PROJECT = os.environ.get("COMPOSE_PROJECT_NAME", "ml-pipeline")
PROFILE = "localaws"

#: The stand-ins for the official images, and what builds each (context, Dockerfile).
LOCAL_IMAGES = {
    "localaws/debian-postgres:15": (ROOT / "docker/stack/postgres", ROOT / "docker/stack/postgres/Dockerfile"),
    "localaws/debian-redis:7.0": (ROOT / "docker/stack/redis", ROOT / "docker/stack/redis/Dockerfile"),
    "localaws/debian-airflow:3.3.2": (ROOT, ROOT / "docker/stack/airflow/Dockerfile"),
}
#: docker-compose.yaml's base-image variables, set to the stand-ins.
BASES = {
    "AIRFLOW_IMAGE": "localaws/debian-airflow:3.3.2",
    "POSTGRES_IMAGE": "localaws/debian-postgres:15",
    "REDIS_IMAGE": "localaws/debian-redis:7.0",
    "LOCALAWS_PYTHON_IMAGE": "localaws/debian-stack:bookworm",
}
#: The services `up` waits for, in the order they come up; airflow-init runs once and exits.
SERVICES = [
    "postgres",
    "redis",
    "localaws",
    "airflow-init",
    "mlflow",
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "airflow-worker",
]
ONE_SHOT = {"airflow-init"}
HEALTHY_WITHIN = float(os.environ.get("ML_PIPELINE_STACK_TIMEOUT", "1200"))
UI = "http://127.0.0.1:8080"


def log(message: str) -> None:
    print(f"stack: {message}", flush=True)


# ------------------------------------------------------------------------------------------- secrets
def _fernet_key() -> str:
    import base64  # noqa: PLC0415

    return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()


def _token(size: int) -> str:
    """URL-safe (two go into connection URLs) and never starting with "-": a command line given one as an
    option's value (`airflow users create --password ...`) would read it as an option."""
    while True:
        value = secrets.token_urlsafe(size)
        if not value.startswith("-"):
            return value


#: What .env must hold, each generated when missing.
GENERATED = {
    "POSTGRES_PASSWORD": lambda: _token(24),
    "REDIS_PASSWORD": lambda: _token(24),
    "AIRFLOW_FERNET_KEY": _fernet_key,
    "AIRFLOW_JWT_SECRET": lambda: _token(48),
    "AIRFLOW_API_SECRET_KEY": lambda: _token(48),
    "_AIRFLOW_WWW_USER_USERNAME": lambda: "admin",
    "_AIRFLOW_WWW_USER_PASSWORD": lambda: _token(18),
}


def read_env(path: Path = ENV_FILE) -> dict[str, str]:
    values = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            key, sep, value = line.partition("=")
            if sep and not line.lstrip().startswith("#"):
                values[key.strip()] = value.strip()
    return values


def ensure_env(path: Path = ENV_FILE) -> list[str]:
    """Add the missing secrets to ``path`` (created mode 600); returns the names added."""
    present = read_env(path)
    missing = [name for name in GENERATED if not present.get(name)]
    if missing:
        fresh = not path.exists()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(fd, "a") as out:
            if fresh:
                out.write("# Written by scripts/stack.py (make stack): this stack's secrets. Never commit it.\n")
            for name in missing:
                out.write(f"{name}={GENERATED[name]()}\n")
    os.chmod(path, 0o600)
    return missing


# ------------------------------------------------------------------------------------------- tools
def _works(command: list[str]) -> bool:
    try:
        return subprocess.run([*command, "version"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def find_compose() -> list[str] | None:
    """``docker compose`` (the v2 plugin) when installed, else ``docker-compose``."""
    if shutil.which("docker") and _works(["docker", "compose"]):
        return ["docker", "compose"]
    if shutil.which("docker-compose") and _works(["docker-compose"]):
        return ["docker-compose"]
    return None


def install_compose() -> list[str]:
    """The compose tool, installing Debian's docker-compose (1.29) with apt when there is none."""
    command = find_compose()
    if command is not None:
        return command
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise SystemExit("no compose tool (docker compose / docker-compose), and installing one needs root and apt")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "docker-compose"]
    if not list(Path("/var/lib/apt/lists").glob("*_Packages")):
        subprocess.run(["apt-get", "update", "-qq"], capture_output=True, env=env, timeout=300)
    result = subprocess.run(install, capture_output=True, text=True, env=env, timeout=600)
    if result.returncode != 0:
        subprocess.run(["apt-get", "update", "-qq"], capture_output=True, env=env, timeout=300)
        result = subprocess.run(install, capture_output=True, text=True, env=env, timeout=600)
    command = find_compose()
    if command is None:
        raise SystemExit(f"apt-get install docker-compose failed: {(result.stdout + result.stderr)[-2000:]}")
    return command


def compose_env() -> dict[str, str]:
    """The environment `docker-compose` runs in: the shell's, the stand-in bases, the project and profile."""
    env = dict(os.environ)
    for name, image in BASES.items():
        env.setdefault(name, image)
    env["COMPOSE_PROJECT_NAME"] = PROJECT
    env.setdefault("COMPOSE_PROFILES", PROFILE)
    return env


def compose(*args: str, check: bool = True, capture: bool = False, timeout: float = 1800):
    command = [*install_compose(), "--project-directory", str(ROOT), "-f", str(COMPOSE_FILE)]
    command += ["--env-file", str(ENV_FILE), *args]
    result = subprocess.run(
        command, cwd=ROOT, env=compose_env(), text=True, capture_output=capture, timeout=timeout, check=False
    )
    if check and result.returncode != 0:
        detail = f":\n{(result.stdout or '')[-3000:]}{(result.stderr or '')[-3000:]}" if capture else ""
        raise SystemExit(f"{' '.join(command[:2])} {' '.join(args)} failed ({result.returncode}){detail}")
    return result


def docker(*args: str, check: bool = True, timeout: float = 1800) -> subprocess.CompletedProcess:
    result = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout, check=False)
    if check and result.returncode != 0:
        raise SystemExit(f"docker {' '.join(args[:3])} failed ({result.returncode}): {result.stderr[-3000:]}")
    return result


# ------------------------------------------------------------------------------------------- images
def engine_and_bases() -> None:
    """The Docker engine and registry (scripts/docker-engine.sh), its base image for jobs, the stack's base."""
    for step in ("install", "start", "base-image", "stack-base"):
        started = time.monotonic()
        result = subprocess.run(["bash", str(ENGINE_SCRIPT), step], capture_output=True, text=True, timeout=3600)
        if result.returncode != 0:
            raise SystemExit(f"docker-engine.sh {step} failed:\n{result.stdout}{result.stderr}")
        log(f"docker-engine.sh {step}: {time.monotonic() - started:.0f}s")


def build_local_images() -> None:
    for image, (context, dockerfile) in LOCAL_IMAGES.items():
        started = time.monotonic()
        docker("build", "--quiet", "--tag", image, "--file", str(dockerfile), str(context), timeout=3600)
        log(f"built {image}: {time.monotonic() - started:.0f}s")


# ------------------------------------------------------------------------------------------- health
def containers(service: str) -> list[str]:
    result = compose("ps", "-q", service, check=False, capture=True)
    return [line for line in result.stdout.split() if line]


def inspect(container: str) -> dict:
    result = docker("inspect", container, check=False)
    return json.loads(result.stdout)[0] if result.returncode == 0 else {}


def state_of(service: str) -> str:
    """healthy / unhealthy / starting / exited(N) / running / missing, for the service's first container."""
    ids = containers(service)
    if not ids:
        return "missing"
    state = inspect(ids[0]).get("State") or {}
    if state.get("Status") == "exited":
        return f"exited({state.get('ExitCode')})"
    health = (state.get("Health") or {}).get("Status")
    return health or state.get("Status", "unknown")


def wait_until_healthy(started: float, services: list[str] = SERVICES) -> dict[str, float]:
    """Each service's seconds from ``started`` to healthy (to exit 0 for one-shot ones)."""
    took: dict[str, float] = {}
    deadline = started + HEALTHY_WITHIN
    while len(took) < len(services):
        for service in services:
            if service in took:
                continue
            state = state_of(service)
            done = state == "exited(0)" if service in ONE_SHOT else state == "healthy"
            if done:
                took[service] = time.monotonic() - started
                log(f"{service}: {'done' if service in ONE_SHOT else 'healthy'} after {took[service]:.0f}s")
            elif state.startswith("exited") and service in ONE_SHOT:
                raise SystemExit(f"{service} failed ({state}):\n{logs(service)}")
        if time.monotonic() > deadline:
            late = {service: state_of(service) for service in services if service not in took}
            raise SystemExit(
                f"not healthy within {HEALTHY_WITHIN:.0f}s: {late}\n"
                + "\n".join(f"--- {service}\n{logs(service)}" for service in late)
            )
        time.sleep(2)
    return took


def logs(service: str, lines: int = 40) -> str:
    result = compose("logs", "--no-color", "--tail", str(lines), service, check=False, capture=True)
    return result.stdout[-6000:]


# ------------------------------------------------------------------------------------------- commands
def up(build: bool = True) -> dict[str, float]:
    if build:
        engine_and_bases()
        build_local_images()
    added = ensure_env()
    if added:
        log(f"{ENV_FILE.name}: generated {', '.join(added)} (mode 600, git-ignored)")
    started = time.monotonic()
    compose("up", "--detach", *(["--build"] if build else []))
    took = wait_until_healthy(started)
    user = read_env().get("_AIRFLOW_WWW_USER_USERNAME", "admin")
    log(f"healthy in {max(took.values()):.0f}s")
    log(f"Airflow UI and REST API: {UI}  login: {user}, password: _AIRFLOW_WWW_USER_PASSWORD in {ENV_FILE}")
    log("MLflow UI: http://127.0.0.1:5050   localaws: http://127.0.0.1:4566")
    return took


def down(volumes: bool = False) -> None:
    extra_workers()  # the workers `worker` added are no service of compose's: removed first
    compose("down", *(["--volumes"] if volumes else []))


def extra_workers() -> list[str]:
    """Remove the worker containers `worker` started (label ml-pipeline.extra-worker)."""
    found = docker("ps", "-aq", "--filter", f"label=ml-pipeline.extra-worker={PROJECT}", check=False).stdout.split()
    if found:
        docker("rm", "--force", *found, check=False)
    return found


def worker(services_at: str | None = None, name: str | None = None) -> str:
    """One more Celery worker from the stack's image and settings: the worker service's container as compose
    resolved it, started anew (its own hostname), on the stack's network or pointed at ``services_at``."""
    ids = containers("airflow-worker")
    if not ids and services_at is None:
        raise SystemExit("no airflow-worker container: `make stack` first")
    template = inspect(ids[0]) if ids else {}
    if not template:
        raise SystemExit("--services-at needs this host's image and settings: run `make stack` here once")
    config = template["Config"]
    name = name or f"{PROJECT}-worker-{secrets.token_hex(3)}"
    args = ["run", "--detach", "--name", name, "--hostname", name, "--restart", "always"]
    args += ["--label", f"ml-pipeline.extra-worker={PROJECT}", "--user", config.get("User") or "50000:0"]
    for mount in template.get("Mounts") or []:
        if mount.get("Type") == "bind":
            spec = f"{mount['Source']}:{mount['Destination']}{'' if mount.get('RW', True) else ':ro'}"
        else:
            spec = f"{mount['Name']}:{mount['Destination']}"
        args += ["--volume", spec]
    if services_at is None:
        network = next(iter((template.get("NetworkSettings") or {}).get("Networks") or {}))
        args += ["--network", network]
    else:
        # The same URLs (postgres, redis, airflow-apiserver ...) name the other host, which publishes them.
        for host in ("postgres", "redis", "airflow-apiserver", "localaws", "mlflow"):
            args += ["--add-host", f"{host}:{services_at}"]
    health = config.get("Healthcheck") or {}
    if health.get("Test"):
        args += ["--health-cmd", health["Test"][-1], "--health-interval", "30s", "--health-start-period", "30s"]
    args += [config["Image"], *(config.get("Cmd") or ["celery", "worker"])]
    # The settings (secrets among them) through a file only this user reads, never on a command line.
    with tempfile.NamedTemporaryFile("w", prefix="worker-env-", suffix=".env") as env_file:
        env_file.write("".join(f"{item}\n" for item in config.get("Env") or []))
        env_file.flush()
        docker(*args[:1], "--env-file", env_file.name, *args[1:])
    log(f"worker {name} started ({'on ' + services_at if services_at else 'on this host'})")
    return name


def status() -> int:
    bad = 0
    for service in SERVICES:
        state = state_of(service)
        ok = state == ("exited(0)" if service in ONE_SHOT else "healthy")
        bad += not ok
        print(f"{service:24} {state}")
    return 1 if bad else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    up_parser = sub.add_parser("up", help="build, start, wait until healthy")
    up_parser.add_argument("--no-build", action="store_true", help="start what is built")
    down_parser = sub.add_parser("down", help="stop and remove the containers")
    down_parser.add_argument("--volumes", action="store_true", help="also delete the volumes (all state)")
    worker_parser = sub.add_parser("worker", help="one more Celery worker")
    worker_parser.add_argument("--services-at", metavar="ADDRESS", help="the host whose stack it joins")
    worker_parser.add_argument("--name", help="its container's name and hostname")
    sub.add_parser("status", help="each service's state")
    args = parser.parse_args(argv)
    if args.command == "up":
        up(build=not args.no_build)
    elif args.command == "down":
        down(volumes=args.volumes)
    elif args.command == "worker":
        worker(args.services_at, args.name)
    else:
        return status()
    return 0


if __name__ == "__main__":
    sys.exit(main())
