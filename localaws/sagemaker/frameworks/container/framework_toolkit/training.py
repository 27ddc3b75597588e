"""``train``: script mode as sagemaker-training-toolkit runs it.

The source is in /opt/ml/code (localaws unpacks ``sagemaker_submit_directory``'s
sourcedir.tar.gz there before the container starts, as the toolkit would download it; a local
folder or archive named instead is copied in here). Its requirements.txt is installed, then the
entry point runs from /opt/ml/code as ``python <program> --name value ...`` (a non-Python
program as ``./<program> ...``) with the toolkit's ``SM_*`` environment. The script's output is
the job's log; when it fails, /opt/ml/output/failure gets ``ExecuteUserScriptError`` with its
exit code, its last error lines and the command, and the container exits 1.
"""

from __future__ import annotations

import collections
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import threading
import traceback
from pathlib import Path

from framework_toolkit import environment, paths, requirements


class ClientError(Exception):
    """The user's doing: its message is the failure reason as it is."""


class ExecuteUserScriptError(ClientError):
    def __init__(self, command: list[str], code: int, error_lines: list[str]):
        message = "\n".join(error_lines).strip()
        super().__init__(
            f'ExecuteUserScriptError:\nExitCode {code}\nErrorMessage "{message}"\nCommand "{" ".join(command)}"'
        )


def _error_lines(lines: list[str], keep: int = 6, limit: int = 600) -> list[str]:
    """The end of what the script wrote to stderr: its traceback's last lines, or its last lines."""
    lines = [line.rstrip("\n") for line in lines if line.strip()]
    starts = [index for index, line in enumerate(lines) if line.startswith("Traceback")]
    tail = lines[starts[-1] :] if starts else lines
    tail = tail[-keep:]
    while len("\n".join(tail)) > limit and len(tail) > 1:
        tail = tail[1:]
    return [line[-limit:] for line in tail]


def _place_code(env: environment.TrainingEnv) -> None:
    """A ``sagemaker_submit_directory`` that is a local folder or archive rather than S3 (the
    engine has put an S3 one in place already)."""
    source = env.module_dir
    if source.startswith("s3://") or not source:
        return
    local = paths.local(source[len("file://") :] if source.startswith("file://") else source)
    if local.resolve() == env.code_dir.resolve():
        return
    if local.is_dir():
        shutil.copytree(local, env.code_dir, dirs_exist_ok=True)
    elif local.is_file():
        with tarfile.open(local, "r:*") as tar:
            tar.extractall(env.code_dir, filter="data")
    else:
        raise ClientError(f"sagemaker_submit_directory {source} is neither in S3 nor a folder or archive here")


def _entry_point(env: environment.TrainingEnv) -> Path:
    name = env.user_entry_point
    if not name:
        raise ClientError(
            "No entry point: set the sagemaker_program hyperparameter (or SAGEMAKER_PROGRAM) "
            'to the script in sagemaker_submit_directory, e.g. "train.py".'
        )
    entry = (env.code_dir / name).resolve()
    code = env.code_dir.resolve()
    if os.path.isabs(name) or code not in entry.parents:
        raise ClientError(f"The entry point {name!r} is not a file inside {env.code_dir}.")
    if not entry.is_file():
        found = sorted(str(p.relative_to(env.code_dir)) for p in env.code_dir.rglob("*") if p.is_file())[:20]
        raise ClientError(
            f"The entry point {name!r} is not in the source directory {env.code_dir} "
            f"(it holds: {', '.join(found) or 'nothing'})."
        )
    return entry


def _run(command: list[str], cwd: Path, child_env: dict[str, str]) -> tuple[int, list[str]]:
    """Run the user's code, its stdout and stderr passed through; returns its exit code and the
    last lines of its stderr. SIGTERM (a stop, a spot interruption) is passed on to it."""
    process = subprocess.Popen(
        command,
        cwd=cwd,
        env=child_env,
        stdin=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        errors="replace",
        bufsize=1,
    )
    signal.signal(signal.SIGTERM, lambda signum, frame: process.send_signal(signal.SIGTERM))
    tail: collections.deque[str] = collections.deque(maxlen=200)

    def pump() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            sys.stderr.write(line)
            sys.stderr.flush()
            tail.append(line)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    code = process.wait()
    reader.join(timeout=10)
    return code, list(tail)


def main() -> int:
    env = None
    try:
        env = environment.TrainingEnv()
        framework = paths.framework()
        _place_code(env)
        entry = _entry_point(env)
        python = requirements.install(env.code_dir)
        args = environment.cmd_args(env.hyperparameters)
        relative = str(entry.relative_to(env.code_dir.resolve()))
        if relative.endswith(".py"):
            command = [python, relative, *args]
        else:
            entry.chmod(entry.stat().st_mode | 0o111)
            command = ["/bin/sh", "-c", " ".join([f"./{relative}", *args])]
        child_env = {key: value for key, value in os.environ.items() if not key.startswith("SM_HP_")}
        child_env.update(env.to_env_vars())
        child_env["PYTHONPATH"] = os.pathsep.join([str(env.code_dir), *filter(None, [os.environ.get("PYTHONPATH")])])
        child_env["CURRENT_HOST"] = env.current_host
        child_env["SAGEMAKER_JOB_NAME"] = str(env.framework_hyperparameters.get("sagemaker_job_name", ""))
        child_env["SAGEMAKER_REGION"] = str(env.framework_hyperparameters.get("sagemaker_region", ""))
        child_env["PYTHONUNBUFFERED"] = "1"
        print(
            f"localaws {framework} framework container: training environment {env.to_env_vars()['SM_TRAINING_ENV']}",
            flush=True,
        )
        print(f"Invoking user script: {' '.join(command)}", flush=True)
        code, stderr = _run(command, env.code_dir, child_env)
        if code:
            raise ExecuteUserScriptError(command, code, _error_lines(stderr))
        print("Reporting training SUCCESS", flush=True)
        (env.output_dir / "success").touch()
        return 0
    except (ClientError, requirements.InstallRequirementsError) as error:
        return _fail(env, str(error))
    except Exception as error:  # noqa: BLE001 - ours: reported as the toolkit reports its own
        return _fail(env, f"framework error: \n{traceback.format_exc()}\n{error}")


def _fail(env, message: str) -> int:
    print(message, file=sys.stderr, flush=True)
    print("Reporting training FAILURE", file=sys.stderr, flush=True)
    failure = env.failure_file if env else paths.base() / "output" / "failure"
    try:
        failure.parent.mkdir(parents=True, exist_ok=True)
        failure.write_text(message)
    except OSError:
        pass
    return 1
