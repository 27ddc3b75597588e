"""SSM Run Command's state for the project's documents: the commands localaws carries out, each one
invocation per instance, as SSM reports them, and what survives a restart (``localaws/state``).

Commands report as SSM does: Pending -> InProgress -> Success | Failed | Cancelled | TimedOut,
ResponseCode (the script's exit code; -1 before it runs), StandardOutputContent (the first 24,000
characters, empty until the command ends) and StandardErrorContent (the first 8,000).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone

from localaws.ssm.documents import SsmError
from localaws.state.pickling import runtime

STDOUT_LIMIT = 24_000
STDERR_LIMIT = 8_000
PLUGIN_OUTPUT_LIMIT = 2_500
ACTIVE = ("Pending", "InProgress", "Delayed", "Cancelling")


def iso(epoch: float | None) -> str:
    if epoch is None:
        return ""
    moment = datetime.fromtimestamp(epoch, timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{int(epoch * 1000) % 1000:03d}Z"


def duration(seconds: float) -> str:
    return f"PT{seconds:.3f}S"


@dataclass
class Invocation:
    command_id: str
    instance_id: str
    document_name: str
    document_version: str
    kind: str
    comment: str
    parameters: dict  # as sent: name -> [value]
    values: dict  # resolved: name -> value
    plugin: str
    timeout: int
    requested: float
    expires: float
    cloudwatch: dict
    region: str
    service_role: str = ""
    #: The step's script, its parameters substituted as the agent substitutes them (aws:runShellScript).
    script: str = ""
    status: str = "Pending"
    status_details: str = "Pending"
    response_code: int = -1
    started: float | None = None
    ended: float | None = None
    stdout: list = field(default_factory=list)
    stderr: list = field(default_factory=list)
    cancel: threading.Event = runtime(default_factory=threading.Event)

    @property
    def done(self) -> bool:
        return self.status not in ACTIVE

    def out_text(self) -> str:
        return "".join(self.stdout)

    def err_text(self) -> str:
        return "".join(self.stderr)

    def log_group(self) -> str:
        return self.cloudwatch.get("CloudWatchLogGroupName") or f"/aws/ssm/{self.document_name}"

    def cloudwatch_config(self) -> dict:
        enabled = bool(self.cloudwatch.get("CloudWatchOutputEnabled"))
        return {"CloudWatchOutputEnabled": enabled, **({"CloudWatchLogGroupName": self.log_group()} if enabled else {})}


class Commands:
    """Every command localaws carries out, by command id; guarded by ``lock``."""

    def __init__(self):
        self.lock = threading.RLock()
        self.commands: dict[str, list[Invocation]] = {}

    def add(self, command_id: str, invocations: list[Invocation]) -> None:
        with self.lock:
            self.commands[command_id] = invocations

    def __contains__(self, command_id) -> bool:
        return command_id in self.commands

    def invocation(self, command_id: str, instance_id: str) -> Invocation:
        for invocation in self.commands.get(command_id, []):
            if invocation.instance_id == instance_id:
                return invocation
        raise SsmError("InvocationDoesNotExist", "An error occurred (InvocationDoesNotExist)")

    def matching(self, command_id: str | None, instance_id: str | None) -> list[Invocation]:
        with self.lock:
            return [
                i
                for invocations in self.commands.values()
                for i in invocations
                if (not command_id or i.command_id == command_id) and (not instance_id or i.instance_id == instance_id)
            ]

    def command_ids(self, command_id: str | None, instance_id: str | None) -> list[str]:
        with self.lock:
            return [
                cid
                for cid, invocations in self.commands.items()
                if (not command_id or cid == command_id)
                and (not instance_id or any(i.instance_id == instance_id for i in invocations))
            ]

    def running(self) -> bool:
        with self.lock:
            return any(not i.done for invocations in self.commands.values() for i in invocations)

    def set(self, invocation: Invocation, status: str, details: str | None = None, code: int | None = None) -> None:
        with self.lock:
            invocation.status = status
            invocation.status_details = details or status
            if code is not None:
                invocation.response_code = code
            if status not in ACTIVE:
                invocation.ended = time.time()

    def cancel(self, command_id: str, instance_ids: list[str] | None) -> None:
        with self.lock:
            for invocation in self.commands[command_id]:
                if instance_ids and invocation.instance_id not in instance_ids:
                    continue
                if not invocation.done:
                    invocation.cancel.set()
                    if invocation.status == "InProgress":
                        invocation.status = invocation.status_details = "Cancelling"

    # --- what SSM answers about them -------------------------------------------------------------

    def describe_invocation(self, invocation: Invocation) -> dict:
        """GetCommandInvocation's answer."""
        with self.lock:
            done = invocation.done
            return {
                "CommandId": invocation.command_id,
                "InstanceId": invocation.instance_id,
                "Comment": invocation.comment,
                "DocumentName": invocation.document_name,
                "DocumentVersion": invocation.document_version,
                "PluginName": invocation.plugin,
                "ResponseCode": invocation.response_code,
                "ExecutionStartDateTime": iso(invocation.started),
                "ExecutionElapsedTime": duration(
                    ((invocation.ended or time.time()) - invocation.started) if invocation.started else 0
                ),
                "ExecutionEndDateTime": iso(invocation.ended),
                "Status": invocation.status,
                "StatusDetails": invocation.status_details,
                "StandardOutputContent": invocation.out_text()[:STDOUT_LIMIT] if done else "",
                "StandardOutputUrl": "",
                "StandardErrorContent": invocation.err_text()[:STDERR_LIMIT] if done else "",
                "StandardErrorUrl": "",
                "CloudWatchOutputConfig": invocation.cloudwatch_config(),
            }

    def describe_command(self, command_id: str) -> dict:
        """A command as SendCommand and ListCommands answer it: its status summed over its instances."""
        with self.lock:
            invocations = self.commands[command_id]
            first = invocations[0]
            statuses = [i.status for i in invocations]
        if all(s == "Success" for s in statuses):
            status = "Success"
        elif any(s in ACTIVE for s in statuses):
            status = "InProgress" if any(s != "Pending" for s in statuses) else "Pending"
        elif any(s == "Cancelled" for s in statuses):
            status = "Cancelled"
        elif any(s == "TimedOut" for s in statuses):
            status = "TimedOut"
        else:
            status = "Failed"
        return {
            "CommandId": command_id,
            "DocumentName": first.document_name,
            "DocumentVersion": first.document_version,
            "Comment": first.comment,
            "ExpiresAfter": first.expires,
            "Parameters": first.parameters,
            "InstanceIds": [i.instance_id for i in invocations],
            "Targets": [],
            "RequestedDateTime": first.requested,
            "Status": status,
            "StatusDetails": status,
            "OutputS3Region": first.region,
            "OutputS3BucketName": "",
            "OutputS3KeyPrefix": "",
            "MaxConcurrency": "50",
            "MaxErrors": "0",
            "TargetCount": len(invocations),
            "CompletedCount": sum(1 for i in invocations if i.done),
            "ErrorCount": sum(1 for i in invocations if i.status in ("Failed", "TimedOut")),
            "DeliveryTimedOutCount": 0,
            "ServiceRole": first.service_role,
            "NotificationConfig": {},
            "CloudWatchOutputConfig": first.cloudwatch_config(),
            "TimeoutSeconds": int(first.expires - first.requested),
        }

    def summary(self, invocation: Invocation, details: bool) -> dict:
        """ListCommandInvocations' entry (with its plugin's output when ``details``)."""
        with self.lock:
            summary = {
                "CommandId": invocation.command_id,
                "InstanceId": invocation.instance_id,
                "InstanceName": "",
                "Comment": invocation.comment,
                "DocumentName": invocation.document_name,
                "DocumentVersion": invocation.document_version,
                "RequestedDateTime": invocation.requested,
                "Status": invocation.status,
                "StatusDetails": invocation.status_details,
                "TraceOutput": "",
                "StandardOutputUrl": "",
                "StandardErrorUrl": "",
                "CommandPlugins": [],
                "ServiceRole": invocation.service_role,
                "NotificationConfig": {},
                "CloudWatchOutputConfig": invocation.cloudwatch_config(),
            }
            if details:
                summary["CommandPlugins"] = [
                    {
                        "Name": invocation.plugin,
                        "Status": invocation.status,
                        "StatusDetails": invocation.status_details,
                        "ResponseCode": invocation.response_code,
                        **({"ResponseStartDateTime": invocation.started} if invocation.started else {}),
                        **({"ResponseFinishDateTime": invocation.ended} if invocation.ended else {}),
                        "Output": invocation.out_text()[:PLUGIN_OUTPUT_LIMIT] if invocation.done else "",
                        "StandardOutputUrl": "",
                        "StandardErrorUrl": "",
                        "OutputS3Region": invocation.region,
                        "OutputS3BucketName": "",
                        "OutputS3KeyPrefix": "",
                    }
                ]
        return summary

    # --- across restarts (localaws/state) ------------------------------------------------------

    def state(self) -> dict:
        return {"commands": self.commands}

    def restore(self, state: dict, stopped_at: float) -> list[str]:
        """Put a snapshot back; a command that had not ended when localaws stopped has ended now, as one
        whose agent went away does: Failed (Undeliverable if it never started), or Cancelled if a
        cancel was asked for. The command ids of those."""
        interrupted = []
        with self.lock:
            self.commands.update(state.get("commands", {}))
            for command_id, invocations in self.commands.items():
                for invocation in invocations:
                    if invocation.done:
                        continue
                    if invocation.status == "Cancelling":
                        invocation.status = invocation.status_details = "Cancelled"
                    elif invocation.status == "Pending":
                        invocation.status, invocation.status_details = "Failed", "Undeliverable"
                    else:
                        invocation.status = invocation.status_details = "Failed"
                    invocation.stderr.append("localaws stopped while the command was running.\n")
                    invocation.ended = stopped_at
                    if command_id not in interrupted:
                        interrupted.append(command_id)
        return interrupted
