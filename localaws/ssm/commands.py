"""What runs on the run's stand-in host for a command, as the SSM agent runs it there.

* **TrainContainer**: the document's own ``aws:runShellScript``, its parameters substituted
  (``documents.step_script``), run with bash in a folder of the command's own, with the AWS CLI pointed at
  localaws (``AWS_ENDPOINT_URL``) and a ``docker`` whose commands localaws's runner serves
  (``dockerd.py``, ``bin/docker``). ``ML_PIPELINE_BASE`` puts the script's data folder in the command's
  folder (on a host the script uses /mnt/data or /var/lib/ml-pipeline).
* **HostCheck**: reports what this "host" really has (the runner localaws would use, no cloud-init: the
  user data's readiness mark cannot exist here and is reported as such) and whether the data volume is
  attached to the instance.

The script's stdout and stderr are kept (GetCommandInvocation) and streamed to CloudWatch Logs
(``<CommandId>/<InstanceId>/<step>/stdout``) when CloudWatchOutputConfig asks for it; its exit code is
the ResponseCode. CancelCommand and the step's timeoutSeconds stop it as the agent does: SIGTERM to its
process group (and to the containers it started), SIGKILL after the grace period; a command whose
instance stops running fails as its process is killed.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Iterator

from localaws.aws import LOCAL_CREDENTIALS
from localaws.lifetime import die_with_parent
from localaws.sagemaker.hosting.logs import LogShipper
from localaws.sagemaker.runners.hosts import Host, pump
from localaws.sagemaker.runners.process import RunningProcess
from localaws.ssm.dockerd import SHIM_DIR, DockerDaemon
from localaws.ssm.models import Commands, Invocation

log = logging.getLogger(__name__)

_POLL = 0.2
_INSTANCE_CHECK_SECONDS = 2.0


class Output:
    """A command's stdout or stderr: kept whole, and shipped to CloudWatch Logs when asked."""

    def __init__(self, clients, settings, invocation: Invocation, stream: str, sink: list):
        self.sink = sink
        self.shipper = None
        if invocation.cloudwatch.get("CloudWatchOutputEnabled"):
            self.shipper = LogShipper(
                clients,
                invocation.log_group(),
                f"{invocation.command_id}/{invocation.instance_id}/{invocation.plugin}/{stream}",
                settings.log_flush_seconds,
            )

    def write(self, text: str) -> None:
        if not text:
            return
        self.sink.append(text)
        if self.shipper is not None:
            for line in text.rstrip("\n").split("\n"):
                self.shipper.write(line)

    def line(self, text: str) -> None:
        self.write(text.rstrip("\n") + "\n")

    def close(self) -> None:
        if self.shipper is not None:
            self.shipper.close()


class Script(RunningProcess):
    """bash running the step's script in its own process group: stdout as its lines, stderr apart."""

    def error_lines(self) -> Iterator[str]:
        assert self.process.stderr is not None
        yield from iter(self.process.stderr.readline, "")

    def wait(self, timeout: float | None = None) -> int | None:
        code = super().wait(timeout)
        return 128 - code if code is not None and code < 0 else code  # killed by a signal, as a shell says


class _Errors:
    """``Script``'s stderr as a ``Running``'s lines, for ``pump``."""

    def __init__(self, script: Script):
        self.lines = script.error_lines


class HostCommands:
    """Carries out each invocation in a thread of its own."""

    def __init__(self, settings, clients, runners, commands: Commands):
        self.settings = settings
        self.clients = clients
        self.runners = runners
        self.commands = commands
        self._threads: list[threading.Thread] = []
        self._closing = threading.Event()

    def start(self, invocation: Invocation) -> None:
        thread = threading.Thread(
            target=self._run,
            args=(invocation,),
            daemon=True,
            name=f"ssm-{invocation.command_id[:8]}-{invocation.instance_id}",
        )
        self._threads.append(thread)
        thread.start()

    def shutdown(self) -> None:
        self._closing.set()
        for thread in list(self._threads):
            thread.join(timeout=15)

    def _run(self, invocation: Invocation) -> None:
        out = Output(self.clients, self.settings, invocation, "stdout", invocation.stdout)
        err = Output(self.clients, self.settings, invocation, "stderr", invocation.stderr)
        with self.commands.lock:
            invocation.started = time.time()
            invocation.status = invocation.status_details = "InProgress"
        try:
            if invocation.cancel.is_set():
                self.commands.set(invocation, "Cancelled", code=-1)
            elif invocation.kind == "check":
                self._check(invocation, out, err)
            else:
                self._script(invocation, out, err)
        except Exception as error:  # noqa: BLE001 - the command fails, localaws goes on
            log.error("SSM command %s crashed:\n%s", invocation.command_id, traceback.format_exc())
            err.line(f"localaws: {type(error).__name__}: {error}")
            self.commands.set(invocation, "Failed", code=1)
        finally:
            out.close()
            err.close()

    # --- HostCheck --------------------------------------------------------------------------------------

    def _check(self, invocation: Invocation, out: Output, err: Output) -> None:
        values = invocation.values
        out.line("user data: not run on localaws (no cloud-init); its readiness mark is taken as written")
        mode = self.settings.runner
        docker = self.runners.docker() if mode in ("auto", "docker") else None
        if mode == "docker" and docker is None:
            err.line("docker is not running (LOCALAWS_RUNNER=docker but no Docker engine answers)")
            return self.commands.set(invocation, "Failed", code=1)
        out.line(
            f"docker: {'a Docker engine' if docker else 'none; localaws runs images as processes'} (runner {mode})"
        )
        tool = "nvidia-smi -L" if values["Accelerator"] == "nvidia" else "hl-smi"
        out.line(
            f"accelerator {values['Accelerator']}: none on localaws (on the host: {tool}); training runs on the CPU"
        )
        volume_id = values.get("DataVolumeId")
        if volume_id:
            ec2 = self.clients.client("ec2")
            try:
                volume = ec2.describe_volumes(VolumeIds=[volume_id])["Volumes"][0]
            except ec2.exceptions.ClientError:
                volume = {"Attachments": []}
            if not any(a["InstanceId"] == invocation.instance_id for a in volume.get("Attachments", [])):
                err.line(f"data volume {volume_id} is not attached to {invocation.instance_id}")
                return self.commands.set(invocation, "Failed", code=1)
            out.line(f"data volume {volume_id}: attached, would be mounted at /mnt/data")
        out.line("READY")
        self.commands.set(invocation, "Success", code=0)

    # --- a document's script ----------------------------------------------------------------------------

    def _environment(self, invocation: Invocation, folder: Path, daemon: DockerDaemon) -> dict[str, str]:
        """What the script sees: the host's tools (our docker first, then the AWS CLI of localaws's
        environment), localaws as AWS with its dummy credentials, the command's folder as the data folder."""
        path = os.pathsep.join(
            [str(SHIM_DIR), str(Path(sys.executable).parent), os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin")]
        )
        return {
            "PATH": path,
            "HOME": str(folder),
            "LANG": os.environ.get("LANG", "C.UTF-8"),
            "AWS_ENDPOINT_URL": self.settings.endpoint_url,
            "AWS_DEFAULT_REGION": invocation.region,
            "AWS_ACCESS_KEY_ID": LOCAL_CREDENTIALS["aws_access_key_id"],
            "AWS_SECRET_ACCESS_KEY": LOCAL_CREDENTIALS["aws_secret_access_key"],
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            "DOCKER_HOST": daemon.docker_host,
            "ML_PIPELINE_BASE": str(folder),
        }

    def _script(self, invocation: Invocation, out: Output, err: Output) -> None:
        folder = self.settings.work_dir / "ssm-commands" / invocation.command_id / invocation.instance_id
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        daemon = DockerDaemon(
            self.clients,
            self.runners,
            folder,
            invocation.command_id[:8],
            instance_id=invocation.instance_id,
            usage_seconds=self.settings.usage_metrics_seconds,
        )
        try:
            path = folder / "_script.sh"  # where the agent writes a step's script on a host
            path.write_text(invocation.script)
            process = subprocess.Popen(
                ["bash", str(path)],
                cwd=str(folder),
                env=self._environment(invocation, folder, daemon),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                bufsize=1,
                errors="replace",
                start_new_session=True,
                preexec_fn=die_with_parent(),
            )
            script = Script(process)
            host = Host(script, out.write, f"ssm-{invocation.command_id[:8]}")
            errors = threading.Thread(target=pump, args=(_Errors(script), err.write), daemon=True)
            errors.start()
            code, ending = self._supervise(invocation, host, daemon)
            host.close()
            errors.join(timeout=10)
        finally:
            daemon.close(self.settings.stop_grace_seconds)
            if not os.environ.get("LOCALAWS_KEEP_JOB_DIRS"):
                shutil.rmtree(folder.parent, ignore_errors=True)
        if ending is not None:
            status, details = ending
            return self.commands.set(invocation, status, details, code=code)
        self.commands.set(invocation, "Success" if code == 0 else "Failed", code=code)

    def _supervise(
        self, invocation: Invocation, host: Host, daemon: DockerDaemon
    ) -> tuple[int, tuple[str, str] | None]:
        """Wait for the script; stop it on CancelCommand, the step's timeout, localaws stopping, or its
        instance leaving the running state. Returns (exit code, (status, details) when it was stopped)."""
        deadline = (invocation.started or time.time()) + invocation.timeout
        grace = self.settings.stop_grace_seconds
        ending = None
        next_check = time.monotonic() + _INSTANCE_CHECK_SECONDS
        while True:
            code = host.wait(_POLL)
            if code is not None:
                return code, ending
            if ending is None:
                if invocation.cancel.is_set():
                    ending = ("Cancelled", "Cancelled")
                elif time.time() > deadline:
                    ending = ("TimedOut", "Execution Timed Out")
                elif self._closing.is_set():
                    ending = ("Failed", "Undeliverable")
                elif time.monotonic() >= next_check:
                    next_check = time.monotonic() + _INSTANCE_CHECK_SECONDS
                    state = self._instance_state(invocation.instance_id)
                    if state != "running":  # cancelled while the state was asked (then terminated): Cancelled
                        ending = ("Cancelled", "Cancelled") if invocation.cancel.is_set() else ("Failed", "Failed")
                        log.info(
                            "SSM command %s: instance %s is %s", invocation.command_id, invocation.instance_id, state
                        )
                if ending is not None:
                    host.terminate()
                    daemon.terminate()
            else:
                host.kill_after(grace)
                daemon.kill_after(grace)

    def _instance_state(self, instance_id: str) -> str:
        ec2 = self.clients.client("ec2")
        try:
            reservations = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"]
            return reservations[0]["Instances"][0]["State"]["Name"]
        except Exception:  # noqa: BLE001 - gone
            return "terminated"
