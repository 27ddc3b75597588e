"""The code a run trains and serves, as SageMaker gets it.

Three kinds (the experiment's ``code_kind``):

    script       SageMaker script mode, as the SageMaker Python SDK sends it: ``source_dir`` packed into a
                 ``sourcedir.tar.gz`` in S3 (once per content hash), the framework's training and inference
                 images from ``sagemaker.core.image_uris``, and the ``sagemaker_*`` hyperparameters (and
                 the model's ``SAGEMAKER_*`` environment) that name the entry point and the archive
    image        the experiment's own image URI, used as it is
    dockerfile   the experiment's build context, built and pushed to ECR under its content hash

``resolve`` does it for a run; ``preflight`` refuses what cannot work before anything is created.
``call`` runs a ``module:function`` of the experiment's source (its ``prepare`` and smoke ``check``).
"""

from __future__ import annotations

import contextlib
import gzip
import importlib.util
import io
import json
import os
import re
import sys
import tarfile
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ml_pipeline import images
from ml_pipeline.aws import object_exists

if TYPE_CHECKING:
    from ml_pipeline.aws import Client
    from ml_pipeline.plan import Plan

#: Script mode's defaults per framework: (framework_version, py_version).
FRAMEWORK_DEFAULTS = {"pytorch": ("2.5", "py311"), "sklearn": ("1.2-1", "py3")}
ARCHIVE = "sourcedir.tar.gz"
#: The SDK's default ``container_log_level`` (logging.INFO).
CONTAINER_LOG_LEVEL = 20
#: Every model's serving settings (the inference toolkits read them; own containers may).
SERVING_ENVIRONMENT = {"SAGEMAKER_MODEL_SERVER_WORKERS": "2", "SAGEMAKER_MODEL_SERVER_TIMEOUT": "60"}
#: Archive members' fixed metadata, so the same source gives the same bytes anywhere.
_MTIME = 946684800  # 2000-01-01T00:00:00Z
_FUNCTION = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*):([A-Za-z_][A-Za-z0-9_]*)$")


def _where(experiment: dict) -> str:
    return f"experiments/{experiment['name']}/experiment.yaml"


def inside(folder: str | os.PathLike, relative: str, what: str) -> Path:
    """``folder/relative``, resolved; a path (or a link) leading out of ``folder`` is refused."""
    base = Path(os.path.realpath(folder))
    path = Path(os.path.realpath(base / relative))
    if os.path.commonpath([base, path]) != str(base):
        raise ValueError(f"{what}: {relative} leads out of {folder}")
    return path


def region_of(client: Client) -> str:
    return client.meta.region_name


# --- script mode's source archive ------------------------------------------------------------


def package_source(source_dir: str | os.PathLike) -> tuple[bytes, str]:
    """(``sourcedir.tar.gz``'s bytes, the source's content hash): the files of ``images.tree_files``
    (no ``__pycache__`` or ``.pyc``; a link out refused, one inside stored as the file it names), sorted,
    as regular members with fixed owner, mode and time, gzip'd with no name or time in its header."""
    root = Path(source_dir)
    files = images.tree_files(root)
    if not files:
        raise ValueError(f"source_dir {root} holds no file")
    buffer = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buffer, mtime=0) as zipped:
        with tarfile.open(fileobj=zipped, mode="w", format=tarfile.PAX_FORMAT) as archive:
            for relative in files:
                data = (root / relative).read_bytes()
                member = tarfile.TarInfo(relative)
                member.size = len(data)
                member.mtime = _MTIME
                member.mode = 0o755 if os.access(root / relative, os.X_OK) else 0o644
                member.uid = member.gid = 0
                member.uname = member.gname = ""
                archive.addfile(member, io.BytesIO(data))
    return buffer.getvalue(), images.files_hash(root, files)


def upload_source(s3: Client, bucket: str, experiment: dict) -> dict:
    """The experiment's source in ``s3://<bucket>/<experiment>/source/<hash>/sourcedir.tar.gz``, uploaded
    once: the key names the content, so an existing object is that same archive and is never written
    over (the put is conditional, for two runs racing)."""
    body, digest = package_source(experiment["source_dir"])
    key = f"{experiment['name']}/source/{digest}/{ARCHIVE}"
    uri = f"s3://{bucket}/{key}"
    if object_exists(s3, bucket, key):
        return {"uri": uri, "hash": digest, "uploaded": False}
    try:
        s3.put_object(Bucket=bucket, Key=key, Body=body, IfNoneMatch="*", ContentType="application/gzip")
    except s3.exceptions.ClientError as error:
        if error.response["Error"]["Code"] not in ("PreconditionFailed", "ConditionalRequestConflict"):
            raise
        return {"uri": uri, "hash": digest, "uploaded": False}  # another run put the same archive first
    return {"uri": uri, "hash": digest, "uploaded": True}


# --- images -----------------------------------------------------------------------------------


def framework_version(experiment: dict) -> tuple[str, str | None]:
    default_version, default_py = FRAMEWORK_DEFAULTS[experiment["framework"]]
    version = experiment.get("framework_version") or default_version
    # The default Python goes with the default version only; another version takes the SDK's choice.
    py_version = experiment.get("py_version") or (default_py if version == default_version else None)
    return version, py_version


def framework_image(experiment: dict, region: str, instance_type: str, scope: str) -> str:
    """The framework's image for ``scope`` (training | inference), as the SDK picks it; ValueError names
    the field at fault (framework_version, or the instance type the framework has no image for)."""
    from sagemaker.core import image_uris  # noqa: PLC0415 - 1.4 s: at task time only

    version, py_version = framework_version(experiment)
    framework = experiment["framework"]
    try:
        return image_uris.retrieve(
            framework, region, version=version, py_version=py_version, instance_type=instance_type, image_scope=scope
        )
    except ValueError as error:
        message = str(error).replace(" You may need to upgrade your SDK version (pip install -U sagemaker)", "")
        if f"Unsupported {framework} version" in message:
            raise ValueError(f"{_where(experiment)}: framework_version: {message}") from None
        raise ValueError(
            f"{_where(experiment)}: {framework} {version} has no {scope} image for {instance_type} "
            f"in {region}: {message}"
        ) from None


def training_image(experiment: dict, plan: Plan, region: str) -> str:
    """The framework's training image for where the run trains: its SageMaker instance type, or on
    ``compute=host`` the host's type (a GPU host gets the GPU image); a framework with no image for the
    host's processor (scikit-learn on a GPU) runs its CPU image there."""
    p = plan["params"]
    if p.get("compute") == "host":
        try:
            return framework_image(experiment, region, f"ml.{p['host_instance_type']}", "training")
        except ValueError as error:
            if "framework_version" in str(error):
                raise
    return framework_image(experiment, region, p["instance_type"], "training")


def _serving_instance_type(plan: Plan) -> str:
    p = plan["params"]
    return (
        p.get("endpoint_instance_type")
        or (plan["experiment"].get("deploy") or {}).get("instance_type")
        or p["instance_type"]
    )


def _serving_program(experiment: dict) -> str:
    """``inference.py`` when source_dir has one; else the entry point, as the SDK's ``estimator.deploy``
    serves the training script (the framework container then takes its default handlers)."""
    return "inference.py" if (Path(experiment["source_dir"]) / "inference.py").is_file() else experiment["entry_point"]


def resolve(ecr: Client, s3: Client, plan: Plan, endpoint_url: str | None = None) -> dict:
    """What the run trains and serves: {training_image, serving_image, hyperparameters (script mode's
    ``sagemaker_*``, JSON-encoded as the SDK does; {} for a container), environment (the model
    container's), source (None or {uri, hash}), how (one line for the log)}."""
    experiment, p = plan["experiment"], plan["params"]
    kind = experiment["code_kind"]
    if kind == "script":
        region = region_of(s3)
        source = upload_source(s3, p["bucket"], experiment)
        training = training_image(experiment, plan, region)
        serving = framework_image(experiment, region, _serving_instance_type(plan), "inference")
        program = experiment["entry_point"]
        return {
            "training_image": training,
            "serving_image": serving,
            "hyperparameters": {
                "sagemaker_program": json.dumps(program),
                "sagemaker_submit_directory": json.dumps(source["uri"]),
                "sagemaker_region": json.dumps(region),
                "sagemaker_container_log_level": json.dumps(CONTAINER_LOG_LEVEL),
            },
            "environment": {
                "SAGEMAKER_PROGRAM": _serving_program(experiment),
                "SAGEMAKER_SUBMIT_DIRECTORY": source["uri"],
                "SAGEMAKER_REGION": region,
                "SAGEMAKER_CONTAINER_LOG_LEVEL": str(CONTAINER_LOG_LEVEL),
                **SERVING_ENVIRONMENT,
            },
            "source": {"uri": source["uri"], "hash": source["hash"]},
            "how": (
                f"script mode: {experiment['framework']} {framework_version(experiment)[0]}, {program} in "
                f"{source['uri']} ({'uploaded' if source['uploaded'] else 'uploaded before'})"
            ),
        }
    if kind == "image":
        return {
            "training_image": experiment["image"],
            "serving_image": experiment["image"],
            "hyperparameters": {},
            "environment": dict(SERVING_ENVIRONMENT),
            "source": None,
            "how": f"the experiment's image {experiment['image']}",
        }
    if kind == "dockerfile":
        context = inside(experiment["folder"], experiment["dockerfile"], f"{_where(experiment)}: dockerfile")
        built = images.build_and_push(ecr, p["ecr_repository"], context, endpoint_url, log=lambda line: None)
        return {
            "training_image": built["image"],
            "serving_image": built["image"],
            "hyperparameters": {},
            "environment": dict(SERVING_ENVIRONMENT),
            "source": None,
            "how": f"{built['image']} from {experiment['dockerfile']}: {built['how']}",
        }
    raise ValueError(f"{_where(experiment)}: unknown code kind {kind!r}")


# --- refusals before anything is created ------------------------------------------------------------


def _region(plan: Plan) -> str:
    # The run has no region Param: the region is the environment's, as the AWS connection's.
    return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"


def preflight(plan: Plan) -> None:
    """Raise ValueError, naming the experiment file and the field, for what would fail later: a framework
    version or instance type the framework has no image for, an entry point, module or build context
    that is missing, a source that cannot be packed, a Dockerfile with no Docker engine to build it."""
    experiment, p = plan["experiment"], plan["params"]
    where, kind = _where(experiment), experiment["code_kind"]
    errors = []
    if kind == "script":
        if experiment.get("framework") not in FRAMEWORK_DEFAULTS:
            errors.append(
                f"{where}: framework: {experiment.get('framework')!r} is not one of {', '.join(FRAMEWORK_DEFAULTS)}"
            )
        else:
            scopes = [("training", p["instance_type"])]
            if experiment.get("deploy") is not False:
                scopes.append(("inference", _serving_instance_type(plan)))
            for scope, instance_type in scopes:
                try:
                    framework_image(experiment, _region(plan), instance_type, scope)
                except ValueError as error:
                    errors.append(str(error))
                    if "framework_version" in str(error):
                        break
        try:
            entry = inside(experiment["source_dir"], experiment["entry_point"], "entry_point")
            if not entry.is_file():
                errors.append(f"{where}: entry_point: {experiment['entry_point']} is not a file in source_dir")
        except ValueError as error:
            errors.append(f"{where}: {error}")
        try:
            package_source(experiment["source_dir"])
        except (ValueError, OSError) as error:
            errors.append(f"{where}: source_dir: {error}")
    elif kind == "dockerfile":
        try:
            context = inside(experiment["folder"], experiment["dockerfile"], "dockerfile")
            if not (context / "Dockerfile").is_file():
                errors.append(f"{where}: dockerfile: {experiment['dockerfile']} holds no Dockerfile")
            else:
                images.tree_files(context)
        except ValueError as error:
            errors.append(f"{where}: {error}")
        except OSError as error:
            errors.append(f"{where}: dockerfile: {error}")
        if images.docker_engine() is None:
            errors.append(
                f"{where}: dockerfile: no Docker engine answers here to build {experiment['dockerfile']}: "
                "install one where the tasks run (Debian: apt-get install docker.io; then start dockerd), "
                "or train in script mode (framework, entry_point) or from a pushed image (image)"
            )
    for field, spec in _functions(experiment):
        try:
            module_file(experiment, spec)
        except ValueError as error:
            errors.append(f"{where}: {field}: {error}")
    if errors:
        raise ValueError("Refused before anything was created:\n- " + "\n- ".join(errors))


def _functions(experiment: dict) -> list[tuple[str, str]]:
    found = []
    if experiment.get("prepare"):
        found.append(("prepare", experiment["prepare"]))
    smoke = (experiment.get("deploy") or {}).get("smoke") or {}
    if smoke.get("check"):
        found.append(("deploy.smoke.check", smoke["check"]))
    return found


# --- the experiment's own functions (prepare, smoke check) ---------------------------------------------


def module_file(experiment: dict, spec: str) -> Path:
    """The file of ``module:function``'s module in source_dir (``a.b`` is ``a/b.py`` or ``a/b/__init__.py``)."""
    match = _FUNCTION.match(spec or "")
    if not match:
        raise ValueError(f"{spec!r} is not module:function")
    parts = match.group(1).split(".")
    for candidate in ("/".join(parts) + ".py", "/".join(parts) + "/__init__.py"):
        path = inside(experiment["source_dir"], candidate, spec)
        if path.is_file():
            return path
    raise ValueError(f"{spec}: no {'/'.join(parts)}.py in source_dir")


@contextlib.contextmanager
def _isolated(source_dir: str):
    """source_dir importable for the duration only: sys.path restored and the modules imported from it
    forgotten afterwards, so one experiment's ``utils`` never shadows another's (or the plugins')."""
    before_path, before_modules = list(sys.path), set(sys.modules)
    sys.path.insert(0, source_dir)
    try:
        yield
    finally:
        sys.path[:] = before_path
        root = os.path.realpath(source_dir)
        for name in set(sys.modules) - before_modules:
            file = getattr(sys.modules.get(name), "__file__", None) or ""
            if name.startswith("_ml_pipeline_experiment_") or (
                file and os.path.commonpath([root, os.path.realpath(file)]) == root
            ):
                sys.modules.pop(name, None)


def call(experiment: dict, spec: str, *args: Any, **kwargs: Any) -> Any:
    """``module:function`` of the experiment's source_dir, imported under a name of its own (not its
    module name, so no module of the same name elsewhere is taken or replaced) and called."""
    path = module_file(experiment, spec)
    function_name = spec.rsplit(":", 1)[1]
    source_dir = os.path.realpath(experiment["source_dir"])
    with _isolated(source_dir):
        unique = f"_ml_pipeline_experiment_{uuid.uuid4().hex}"
        loader_spec = importlib.util.spec_from_file_location(unique, path)
        if loader_spec is None or loader_spec.loader is None:
            raise ImportError(f"{path}: not a Python module that can be loaded")
        module = importlib.util.module_from_spec(loader_spec)
        sys.modules[unique] = module
        loader_spec.loader.exec_module(module)
        function = getattr(module, function_name, None)
        if not callable(function):
            raise ValueError(f"{_where(experiment)}: {spec}: {path.name} has no function {function_name}")
        return function(*args, **kwargs)
