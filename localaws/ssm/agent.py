"""localaws as the SSM agent of the run's host: Run Command for the project's documents, for real.

Moto stores a SendCommand and calls it ``Success`` at once, without running anything, and has no
ListCommandInvocations or DescribeInstanceInformation. For the project's two documents
(``documents.py``) localaws carries the command out on this machine instead:

* **HostCheck**: reports what this "host" really has (the runner localaws would use, no accelerator,
  no cloud-init: the user data's readiness mark cannot exist here and is reported as such) and whether
  the data volume is attached to the instance.
* **TrainContainer**: what the document's script does on a host, with localaws's own pieces: the
  channels downloaded from S3 (``sagemaker/s3io.py``), the config files and environment of the
  ``/opt/ml`` contract (``sagemaker/contract.py``), the image's ``train`` started by the runner that
  serves SageMaker jobs (``sagemaker/runners``), ``model.tar.gz`` and ``train.log`` uploaded. A SageMaker
  framework image in script mode gets its ``sagemaker_submit_directory`` in /opt/ml/code first
  (``sagemaker/frameworks/source.py``), as for a job: on a real host its toolkit downloads it itself. The
  accelerator flags (``--gpus all``, ``--runtime=habana``) can do nothing without an accelerator: the
  command records the line it would run and the runner runs without them.

Commands report as SSM does: Pending -> InProgress -> Success | Failed | Cancelled | TimedOut,
ResponseCode (the script's exit code; -1 before it runs), StandardOutputContent (the first 24,000
characters, empty until the command ends) and StandardErrorContent (the first 8,000), and their output
streamed to CloudWatch Logs (``<CommandId>/<InstanceId>/<step>/stdout``) when CloudWatchOutputConfig
asks for it. CancelCommand stops the process (SIGTERM, then SIGKILL after the grace period); a command
whose instance stops running fails as its process is killed.

DescribeInstanceInformation lists moto's running instances whose instance profile's role may register
with SSM (``ssm:UpdateInstanceInformation``, or AmazonSSMManagedInstanceCore) as ``Online``, as the
agent preinstalled on the Deep Learning AMIs would register them.
"""
from __future__ import annotations

import base64
import json
import logging
import os
import shutil
import threading
import time
import traceback
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone

from localaws import aws_errors, bodies
from localaws.aws_errors import AwsError
from localaws.ssm import documents, seed
from localaws.ssm.documents import SsmError
from localaws.state.pickling import runtime

log = logging.getLogger(__name__)

TARGET_PREFIX = "AmazonSSM."
JSON = "application/x-amz-json-1.1"
STDOUT_LIMIT = 24_000
STDERR_LIMIT = 8_000
PLUGIN_OUTPUT_LIMIT = 2_500
ACTIVE = ("Pending", "InProgress", "Delayed", "Cancelling")
_POLL = 0.2
_INSTANCE_CHECK_SECONDS = 2.0


def _iso(epoch: float | None) -> str:
    if epoch is None:
        return ""
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.") + f"{int(epoch * 1000) % 1000:03d}Z"


def _duration(seconds: float) -> str:
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
    status: str = "Pending"
    status_details: str = "Pending"
    response_code: int = -1
    started: float | None = None
    ended: float | None = None
    stdout: list = field(default_factory=list)
    stderr: list = field(default_factory=list)
    cancel: threading.Event = runtime(default_factory=threading.Event)
    #: What would run on a real host (the accelerator flags), for whoever inspects the command.
    would_run: str = ""

    @property
    def done(self) -> bool:
        return self.status not in ACTIVE

    def out_text(self) -> str:
        return "".join(self.stdout)

    def err_text(self) -> str:
        return "".join(self.stderr)


class _Output:
    """A command's stdout or stderr: kept whole in memory, and streamed to CloudWatch Logs if asked."""

    def __init__(self, agent: "SsmAgent", invocation: Invocation, stream: str, sink: list):
        self.agent = agent
        self.invocation = invocation
        self.sink = sink
        self.enabled = bool(invocation.cloudwatch.get("CloudWatchOutputEnabled"))
        self.group = invocation.cloudwatch.get("CloudWatchLogGroupName") or f"/aws/ssm/{invocation.document_name}"
        self.stream = f"{invocation.command_id}/{invocation.instance_id}/{invocation.plugin}/{stream}"
        self._pending: list[dict] = []
        self._lock = threading.Lock()
        self._created = False
        self._last_ms = 0

    def write(self, text: str) -> None:
        if not text:
            return
        self.sink.append(text)
        if self.enabled:
            ms = max(int(time.time() * 1000), self._last_ms)
            self._last_ms = ms
            with self._lock:
                self._pending.extend({"timestamp": ms, "message": line or " "}
                                     for line in text.rstrip("\n").split("\n"))

    def line(self, text: str) -> None:
        self.write(text.rstrip("\n") + "\n")

    def flush(self) -> None:
        with self._lock:
            events, self._pending = self._pending, []
        if not events:
            return
        logs = self.agent.clients.logs
        try:
            if not self._created:
                try:
                    logs.create_log_group(logGroupName=self.group)
                except logs.exceptions.ResourceAlreadyExistsException:
                    pass
                try:
                    logs.create_log_stream(logGroupName=self.group, logStreamName=self.stream)
                except logs.exceptions.ResourceAlreadyExistsException:
                    pass
                self._created = True
            for start in range(0, len(events), 10_000):
                logs.put_log_events(logGroupName=self.group, logStreamName=self.stream,
                                    logEvents=events[start:start + 10_000])
        except Exception:  # noqa: BLE001 - output shipping is best effort, as the agent's is
            log.warning("could not ship command output to CloudWatch Logs", exc_info=True)


class SsmAgent:
    def __init__(self, settings, clients, runners, moto_ssm_backend=None):
        """``runners(image) -> Runner`` as for training jobs; ``moto_ssm_backend(region)`` gives moto's
        backend (for ListCommands, which merges moto's commands with ours)."""
        self.settings = settings
        self.clients = clients
        self.runners = runners
        self.moto_ssm_backend = moto_ssm_backend or _moto_backend(settings.account_id)
        self.lock = threading.RLock()
        self.commands: dict[str, list[Invocation]] = {}
        self._threads: list[threading.Thread] = []
        self._closing = threading.Event()
        seed.seed_offerings()

    # --- the gateway's entry point -----------------------------------------------------------------

    def handle(self, environ: dict, target: str, region: str | None):
        """(status, headers, body) when the request is ours; None (its body read, for moto) otherwise."""
        from localaws.sagemaker.shapes import check_request  # noqa: PLC0415

        region = region or self.settings.region
        seed.seed_region(self.settings.account_id, region)
        operation = target[len(TARGET_PREFIX):]
        try:
            # moto would take NaN, any JSON type anywhere, a chunked body or any size: SSM's errors,
            # whoever's the request is; and what is read here is what decides whose it is.
            params = aws_errors.json_request(environ, bodies.MAX_JSON_BODY, "ssm", operation)
            if not isinstance(params, dict) or not self.claims(operation, params):
                return None
            check_request(operation, params, "ssm")  # botocore's model of SSM: what else AWS checks
            result = getattr(self, "op_" + operation)(params, region)
            return 200, [("Content-Type", JSON)], json.dumps(result).encode()
        except AwsError as error:
            return aws_errors.answer(environ, "json", error)
        except Exception as error:  # noqa: BLE001 - answer, never drop the connection
            log.exception("SSM %s failed", operation)
            return aws_errors.error(environ, "json", "InternalServerError", f"{type(error).__name__}: {error}", 500)

    def claims(self, operation: str, params: dict) -> bool:
        if operation == "SendCommand":
            return documents.kind_of(params.get("DocumentName")) is not None
        if operation in ("GetCommandInvocation", "CancelCommand"):
            return params.get("CommandId") in self.commands
        if operation in ("ListCommandInvocations", "DescribeInstanceInformation"):
            return True  # moto has neither
        if operation == "ListCommands":
            return params.get("CommandId") in self.commands or bool(params.get("InstanceId")) \
                or bool(self.commands and not params.get("CommandId"))
        return False

    # --- operations ------------------------------------------------------------------------------------

    def op_SendCommand(self, params: dict, region: str) -> dict:
        name = params["DocumentName"]
        kind = documents.kind_of(name)
        ssm = self.clients.client("ssm")
        try:
            version = {"DocumentVersion": params["DocumentVersion"]} if params.get("DocumentVersion") else {}
            described = ssm.get_document(Name=name, DocumentFormat="JSON", **version)
        except ssm.exceptions.InvalidDocument:
            raise SsmError("InvalidDocument", f"Document with name {name} does not exist.") from None
        document = documents.parse(described["Content"])
        values = documents.resolve_parameters(document, params.get("Parameters") or {})
        if kind == "training":
            _training_spec(values)  # refused before anything is created: its channels name folders
        instance_ids = list(params.get("InstanceIds") or [])
        if not instance_ids:
            raise SsmError("InvalidInstanceId", "Targets are not supported for this document on localaws: "
                                                "name InstanceIds.")
        running = self._running_instances(instance_ids)
        bad = [i for i in instance_ids if i not in running]
        if bad:
            raise SsmError("InvalidInstanceId", f"Instances [{bad}] not in a valid state for account "
                                                f"{self.settings.account_id}")
        command_id = str(uuid.uuid4())
        now = time.time()
        delivery = int(params.get("TimeoutSeconds") or 3600)
        invocations = [
            Invocation(command_id=command_id, instance_id=instance_id, document_name=name,
                       document_version=str(described.get("DocumentVersion", "1")), kind=kind,
                       comment=params.get("Comment", ""), parameters=params.get("Parameters") or {}, values=values,
                       plugin=documents.step_name(document), timeout=documents.step_timeout(document, values),
                       requested=now, expires=now + delivery, cloudwatch=params.get("CloudWatchOutputConfig") or {},
                       region=region, service_role=params.get("ServiceRoleArn", ""))
            for instance_id in instance_ids
        ]
        with self.lock:
            self.commands[command_id] = invocations
        for invocation in invocations:
            thread = threading.Thread(target=self._run, args=(invocation,), daemon=True,
                                      name=f"ssm-{command_id[:8]}-{invocation.instance_id}")
            self._threads.append(thread)
            thread.start()
        return {"Command": self._command(command_id)}

    def op_GetCommandInvocation(self, params: dict, region: str) -> dict:
        invocation = self._invocation(params["CommandId"], params["InstanceId"])
        with self.lock:
            done = invocation.done
            result = {
                "CommandId": invocation.command_id,
                "InstanceId": invocation.instance_id,
                "Comment": invocation.comment,
                "DocumentName": invocation.document_name,
                "DocumentVersion": invocation.document_version,
                "PluginName": invocation.plugin,
                "ResponseCode": invocation.response_code,
                "ExecutionStartDateTime": _iso(invocation.started),
                "ExecutionElapsedTime": _duration(((invocation.ended or time.time()) - invocation.started)
                                                  if invocation.started else 0),
                "ExecutionEndDateTime": _iso(invocation.ended),
                "Status": invocation.status,
                "StatusDetails": invocation.status_details,
                "StandardOutputContent": invocation.out_text()[:STDOUT_LIMIT] if done else "",
                "StandardOutputUrl": "",
                "StandardErrorContent": invocation.err_text()[:STDERR_LIMIT] if done else "",
                "StandardErrorUrl": "",
                "CloudWatchOutputConfig": self._cloudwatch(invocation),
            }
        return result

    def op_ListCommandInvocations(self, params: dict, region: str) -> dict:
        command_id, instance_id = params.get("CommandId"), params.get("InstanceId")
        with self.lock:
            found = [i for invocations in self.commands.values() for i in invocations
                     if (not command_id or i.command_id == command_id) and (not instance_id or i.instance_id == instance_id)]
        listed = [self._invocation_summary(i, bool(params.get("Details"))) for i in found]
        if command_id and command_id not in self.commands:
            listed = self._moto_invocations(command_id, instance_id, region)
        return {"CommandInvocations": listed}

    def op_ListCommands(self, params: dict, region: str) -> dict:
        command_id, instance_id = params.get("CommandId"), params.get("InstanceId")
        ours = [cid for cid, invocations in self.commands.items()
                if (not command_id or cid == command_id)
                and (not instance_id or any(i.instance_id == instance_id for i in invocations))]
        listed = [self._command(cid) for cid in ours]
        if not command_id or command_id not in self.commands:
            listed += self._moto_commands(command_id, instance_id, region)
        for flt in params.get("Filters") or []:
            key, value = flt.get("key"), flt.get("value")
            if key == "DocumentName":
                listed = [c for c in listed if c["DocumentName"] == value]
            elif key == "Status":
                listed = [c for c in listed if c["Status"] == value]
        listed.sort(key=lambda c: c["RequestedDateTime"], reverse=True)
        return {"Commands": listed}

    def op_CancelCommand(self, params: dict, region: str) -> dict:
        with self.lock:
            for invocation in self.commands[params["CommandId"]]:
                if params.get("InstanceIds") and invocation.instance_id not in params["InstanceIds"]:
                    continue
                if not invocation.done:
                    invocation.cancel.set()
                    if invocation.status == "InProgress":
                        invocation.status = invocation.status_details = "Cancelling"
        return {}

    def op_DescribeInstanceInformation(self, params: dict, region: str) -> dict:
        wanted: set[str] | None = None
        for flt in params.get("Filters") or []:
            if flt.get("Key") == "InstanceIds":
                wanted = set(flt.get("Values") or [])
        for flt in params.get("InstanceInformationFilterList") or []:
            if flt.get("key") == "InstanceIds":
                wanted = set(flt.get("valueSet") or [])
        ec2 = self.clients.client("ec2")
        filters = [{"Name": "instance-state-name", "Values": ["running"]}]
        reservations = ec2.describe_instances(Filters=filters)["Reservations"]
        listed = []
        for instance in (i for r in reservations for i in r["Instances"]):
            if wanted is not None and instance["InstanceId"] not in wanted:
                continue
            role = self._ssm_role(instance)
            if role is None:
                continue  # no instance profile allowing the agent to register: never Online
            listed.append({
                "InstanceId": instance["InstanceId"],
                "PingStatus": "Online",
                "LastPingDateTime": time.time(),
                "AgentVersion": "3.3.0.0",
                "IsLatestVersion": True,
                "PlatformType": "Linux",
                "PlatformName": "Ubuntu",
                "PlatformVersion": "22.04",
                "ResourceType": "EC2Instance",
                "IamRole": role,
                "IPAddress": instance.get("PrivateIpAddress", ""),
                "ComputerName": instance.get("PrivateDnsName", ""),
                "AssociationStatus": "Success",
                "SourceId": instance["InstanceId"],
                "SourceType": "AWS::EC2::Instance",
            })
        for flt in params.get("Filters") or []:
            if flt.get("Key") == "PingStatus":
                listed = [i for i in listed if i["PingStatus"] in flt.get("Values", [])]
        return {"InstanceInformationList": listed}

    # --- helpers ---------------------------------------------------------------------------------------

    def _invocation(self, command_id: str, instance_id: str) -> Invocation:
        for invocation in self.commands.get(command_id, []):
            if invocation.instance_id == instance_id:
                return invocation
        raise SsmError("InvocationDoesNotExist", "An error occurred (InvocationDoesNotExist)")

    def _cloudwatch(self, invocation: Invocation) -> dict:
        enabled = bool(invocation.cloudwatch.get("CloudWatchOutputEnabled"))
        config = {"CloudWatchOutputEnabled": enabled}
        if enabled:
            config["CloudWatchLogGroupName"] = invocation.cloudwatch.get("CloudWatchLogGroupName") \
                or f"/aws/ssm/{invocation.document_name}"
        return config

    def _command(self, command_id: str) -> dict:
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
            "StatusDetails": status if status != "Failed" else "Failed",
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
            "CloudWatchOutputConfig": self._cloudwatch(first),
            "TimeoutSeconds": int(first.expires - first.requested),
        }

    def _invocation_summary(self, invocation: Invocation, details: bool) -> dict:
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
                "CloudWatchOutputConfig": self._cloudwatch(invocation),
            }
            if details:
                summary["CommandPlugins"] = [{
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
                }]
        return summary

    def _moto_commands(self, command_id: str | None, instance_id: str | None, region: str) -> list[dict]:
        backend = self.moto_ssm_backend(region)
        if backend is None:
            return []
        try:
            commands = backend.list_commands(command_id, instance_id)
        except Exception:  # noqa: BLE001 - an id moto does not know either
            return []
        listed = []
        for command in commands:
            item = command.response_object()
            for key in ("ExpiresAfter", "RequestedDateTime"):
                if hasattr(item.get(key), "timestamp"):
                    item[key] = item[key].timestamp()
            listed.append(item)
        return listed

    def _moto_invocations(self, command_id: str, instance_id: str | None, region: str) -> list[dict]:
        """moto's commands (which it marks Success at once), as ListCommandInvocations would list them."""
        invocations = []
        for command in self._moto_commands(command_id, None, region):
            for iid in command["InstanceIds"]:
                if instance_id and iid != instance_id:
                    continue
                invocations.append({"CommandId": command["CommandId"], "InstanceId": iid,
                                    "DocumentName": command["DocumentName"] or "", "Comment": command["Comment"],
                                    "RequestedDateTime": command["RequestedDateTime"], "Status": command["Status"],
                                    "StatusDetails": command["Status"], "CommandPlugins": []})
        return invocations

    def _running_instances(self, instance_ids: list[str]) -> set[str]:
        ec2 = self.clients.client("ec2")
        try:
            reservations = ec2.describe_instances(InstanceIds=instance_ids)["Reservations"]
        except ec2.exceptions.ClientError:
            return set()
        return {i["InstanceId"] for r in reservations for i in r["Instances"] if i["State"]["Name"] == "running"}

    def _instance_state(self, instance_id: str) -> str:
        ec2 = self.clients.client("ec2")
        try:
            reservations = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"]
            return reservations[0]["Instances"][0]["State"]["Name"]
        except Exception:  # noqa: BLE001 - gone
            return "terminated"

    def _ssm_role(self, instance: dict) -> str | None:
        """The role name when the instance profile lets the agent register (None otherwise)."""
        arn = (instance.get("IamInstanceProfile") or {}).get("Arn")
        if not arn:
            return None
        iam = self.clients.client("iam")
        try:
            profile = iam.get_instance_profile(InstanceProfileName=arn.rsplit("/", 1)[1])["InstanceProfile"]
        except iam.exceptions.NoSuchEntityException:
            return None
        for role in profile.get("Roles", []):
            name = role["RoleName"]
            attached = iam.list_attached_role_policies(RoleName=name)["AttachedPolicies"]
            if any(p["PolicyName"] == "AmazonSSMManagedInstanceCore" for p in attached):
                return name
            for policy in iam.list_role_policies(RoleName=name)["PolicyNames"]:
                document = iam.get_role_policy(RoleName=name, PolicyName=policy)["PolicyDocument"]
                text = document if isinstance(document, str) else json.dumps(document)
                if "ssm:UpdateInstanceInformation" in text or '"ssm:*"' in text:
                    return name
        return None

    # --- carrying a command out ------------------------------------------------------------------------

    def _set(self, invocation: Invocation, status: str, details: str | None = None, code: int | None = None) -> None:
        with self.lock:
            invocation.status = status
            invocation.status_details = details or status
            if code is not None:
                invocation.response_code = code
            if status not in ACTIVE:
                invocation.ended = time.time()

    def _run(self, invocation: Invocation) -> None:
        out = _Output(self, invocation, "stdout", invocation.stdout)
        err = _Output(self, invocation, "stderr", invocation.stderr)
        stop = threading.Event()
        shipper = threading.Thread(target=self._ship, args=(stop, out, err), daemon=True)
        shipper.start()
        with self.lock:
            invocation.started = time.time()
            invocation.status = invocation.status_details = "InProgress"
        try:
            if invocation.cancel.is_set():
                self._set(invocation, "Cancelled", code=-1)
            elif invocation.kind == "check":
                self._check(invocation, out, err)
            else:
                self._train(invocation, out, err)
        except Exception as error:  # noqa: BLE001 - the command fails, localaws goes on
            log.error("SSM command %s crashed:\n%s", invocation.command_id, traceback.format_exc())
            err.line(f"localaws: {type(error).__name__}: {error}")
            self._set(invocation, "Failed", code=1)
        finally:
            stop.set()
            shipper.join(timeout=30)

    def _ship(self, stop: threading.Event, *outputs: _Output) -> None:
        while not stop.wait(self.settings.log_flush_seconds):
            for output in outputs:
                output.flush()
        for output in outputs:
            output.flush()

    def _check(self, invocation: Invocation, out: _Output, err: _Output) -> None:
        values = invocation.values
        out.line("user data: not run on localaws (no cloud-init); its readiness mark is taken as written")
        mode = self.settings.runner
        docker = self.runners.docker() if mode in ("auto", "docker") else None
        if mode == "docker" and docker is None:
            err.line("docker is not running (LOCALAWS_RUNNER=docker but no Docker engine answers)")
            return self._set(invocation, "Failed", code=1)
        out.line(f"docker: {'a Docker engine' if docker else 'none; localaws runs images as processes'} "
                 f"(runner {mode})")
        tool = "nvidia-smi -L" if values["Accelerator"] == "nvidia" else "hl-smi"
        out.line(f"accelerator {values['Accelerator']}: none on localaws (on the host: {tool}); "
                 "training runs on the CPU")
        volume_id = values.get("DataVolumeId")
        if volume_id:
            ec2 = self.clients.client("ec2")
            try:
                volume = ec2.describe_volumes(VolumeIds=[volume_id])["Volumes"][0]
            except ec2.exceptions.ClientError:
                volume = {"Attachments": []}
            if not any(a["InstanceId"] == invocation.instance_id for a in volume.get("Attachments", [])):
                err.line(f"data volume {volume_id} is not attached to {invocation.instance_id}")
                return self._set(invocation, "Failed", code=1)
            out.line(f"data volume {volume_id}: attached, would be mounted at /mnt/data")
        out.line("READY")
        self._set(invocation, "Success", code=0)

    def _train(self, invocation: Invocation, out: _Output, err: _Output) -> None:
        from localaws.sagemaker import confined, s3io  # noqa: PLC0415
        from localaws.sagemaker.contract import HostConfig, Layout  # noqa: PLC0415
        from localaws.sagemaker.frameworks import source  # noqa: PLC0415
        from localaws.sagemaker.runners.base import ContainerSpec, ImageNotFound  # noqa: PLC0415
        from localaws.sagemaker.runners.process import EnvironmentBuildError  # noqa: PLC0415

        values = invocation.values
        job, image, output = values["JobName"], values["Image"], values["OutputPath"].rstrip("/")
        spec = _training_spec(values)
        work = self.settings.work_dir / "ssm-commands" / invocation.command_id / invocation.instance_id
        layout = Layout(work / "opt-ml")
        s3 = self.clients.s3
        try:
            shutil.rmtree(work, ignore_errors=True)
            layout.create(list(spec["channels"]))
            for name in ("hyperparameters", "inputdataconfig", "resourceconfig"):
                (layout.input_config / f"{name}.json").write_text(json.dumps(spec[name], indent=2))
            out.line("[ml-pipeline] downloading the channels")
            for name, uri in spec["channels"].items():
                objects = s3io.channel_objects(s3, {"S3Uri": uri, "S3DataType": "S3Prefix"},
                                               f"instance profile of {invocation.instance_id}", invocation.region)
                s3io.download(s3, objects, layout.channel(name))
            submit = source.submit_directory(image, spec["hyperparameters"])
            if submit is not None:
                # Script mode: a framework image's toolkit would download the source on the host; ours
                # cannot reach localaws's S3 from a container, so the agent puts it in /opt/ml/code first,
                # as the SageMaker engine does for a job.
                out.line(f"[localaws] script mode: {submit} into /opt/ml/code (on a host, the image's toolkit fetches it)")
                try:
                    source.fetch(s3, submit, work / "sourcedir.tar.gz", [layout.code])
                except source.SourceUnavailable as error:
                    err.line(f"AlgorithmError: {error}")
                    return self._set(invocation, "Failed", code=1)
            out.line(f"[ml-pipeline] pulling {image}")
            try:
                runner = self.runners(image)
            except (ImageNotFound, EnvironmentBuildError) as error:
                err.line(f"Unable to find image '{image}': {error}")
                return self._set(invocation, "Failed", code=125)
            flags = ("--gpus all" if values["Accelerator"] == "nvidia"
                     else "--runtime=habana -e HABANA_VISIBLE_DEVICES=all -e OMPI_MCA_btl_vader_single_copy_mechanism=none "
                          "--cap-add=sys_nice --ipc=host")
            invocation.would_run = f"docker run {flags} -v {layout.root}:/opt/ml {image} train"
            out.line(f"[ml-pipeline] docker run {flags} -v {layout.root}:/opt/ml {image} train")
            out.line(f"[localaws] no accelerator here: {type(runner).__name__} runs it without {flags.split(' -e')[0]}")
            resource = spec["resourceconfig"]
            config = HostConfig(
                job_name=job, job_arn=f"arn:aws:ssm:{invocation.region}:{self.settings.account_id}:command/"
                                      f"{invocation.command_id}",
                current_host=resource["current_host"], hosts=resource["hosts"],
                hyperparameters=spec["hyperparameters"], channels=spec["inputdataconfig"],
                instance_type=resource["current_instance_type"], num_cpus=os.cpu_count() or 1,
                extra_env=dict(spec.get("environment") or {}))
            seen = runner.opt_ml_for(layout.root)
            container = ContainerSpec(image=image, command="train", host_dir=layout.root,
                                      host_name=resource["current_host"], env=config.environment(Layout(seen)),
                                      name=f"{job}-{invocation.command_id[:8]}")
            try:
                running = runner.start(container)
            except (ImageNotFound, EnvironmentBuildError) as error:
                err.line(str(error))
                return self._set(invocation, "Failed", code=125)
            log_lines: list[str] = []
            reader = threading.Thread(target=_pump, args=(running, out, log_lines), daemon=True)
            reader.start()
            code, ending = self._supervise(invocation, running)
            reader.join(timeout=10)
            running.remove()
            s3.put_object(Bucket=_bucket(output), Key=f"{_key(output)}/{job}/output/train.log".lstrip("/"),
                          Body="".join(log_lines).encode())
            if ending is not None:
                status, details = ending
                err.line(f"{status} ({details}): the training was stopped")
                return self._set(invocation, status, details, code=code if code is not None else -1)
            if code != 0:
                failure = confined.read_text(layout.root, layout.failure, 1024).strip()
                err.line(f"AlgorithmError: {failure or 'see the log'}, exit code: {code}")
                return self._set(invocation, "Failed", code=code)
            s3io.upload_tar(s3, layout.model, f"{output}/{job}/output/model.tar.gz", within=layout.root)
            if confined.tree(layout.root, layout.output_data):
                s3io.upload_tar(s3, layout.output_data, f"{output}/{job}/output/output.tar.gz", within=layout.root)
            out.line(f"[ml-pipeline] model: {output}/{job}/output/model.tar.gz")
            self._set(invocation, "Success", code=0)
        except s3io.DataDownloadError as error:
            err.line(f"download failed: {error}")
            self._set(invocation, "Failed", code=1)
        finally:
            if not os.environ.get("LOCALAWS_KEEP_JOB_DIRS"):
                shutil.rmtree(work.parent, ignore_errors=True)

    def _supervise(self, invocation: Invocation, running) -> tuple[int | None, tuple[str, str] | None]:
        """Wait for the process; stop it on CancelCommand, the execution timeout, localaws stopping, or its
        instance leaving the running state. Returns (exit code, (status, details) when it was stopped)."""
        deadline = (invocation.started or time.time()) + invocation.timeout
        ending = None
        terminated_at = None
        next_check = time.monotonic() + _INSTANCE_CHECK_SECONDS
        while True:
            code = running.wait(_POLL)
            if code is not None:
                return code, ending
            if terminated_at is None:
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
                        log.info("SSM command %s: instance %s is %s", invocation.command_id, invocation.instance_id, state)
                if ending is not None:
                    running.terminate()
                    terminated_at = time.monotonic()
            elif time.monotonic() - terminated_at > self.settings.stop_grace_seconds:
                running.kill()

    def shutdown(self) -> None:
        self._closing.set()
        for thread in list(self._threads):
            thread.join(timeout=15)

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


def _training_spec(values: dict) -> dict:
    """The TrainContainer document's Spec (base64 of a JSON object), checked as the job's request would be:
    each channel's name by SageMaker's rule (it names the channel's folder), its URI an S3 URI."""
    from localaws.sagemaker.models import check_channel_name  # noqa: PLC0415

    def refuse(why: str):
        raise SsmError("InvalidParameters", f"Parameter \"Spec\" is not valid: {why}")

    try:
        spec = bodies.loads(base64.b64decode(values["Spec"], validate=True))
    except (ValueError, bodies.NotJSON) as error:
        refuse(f"it is not base64 of JSON ({error})")
    if not isinstance(spec, dict):
        refuse("it is not a JSON object")
    for name in ("channels", "hyperparameters", "inputdataconfig", "resourceconfig"):
        if not isinstance(spec.get(name), dict):
            refuse(f"{name} must be a JSON object")
    resource = spec["resourceconfig"]
    if not (isinstance(resource.get("current_host"), str) and isinstance(resource.get("hosts"), list)
            and isinstance(resource.get("current_instance_type"), str)):
        refuse("resourceconfig needs current_host, hosts and current_instance_type")
    if not isinstance(spec.get("environment") or {}, dict):
        refuse("environment must be a JSON object")
    for name, uri in spec["channels"].items():
        try:
            check_channel_name(name)
        except AwsError as error:
            refuse(error.message)
        if not isinstance(uri, str) or not uri.startswith("s3://"):
            refuse(f"channel {name}'s URI must be an S3 URI (s3://bucket/prefix)")
    return spec


def _pump(running, out: _Output, lines: list[str]) -> None:
    try:
        for line in running.lines():
            lines.append(line if line.endswith("\n") else line + "\n")
            out.write(line if line.endswith("\n") else line + "\n")
    except Exception:  # noqa: BLE001 - a closed stream at kill time is normal
        log.debug("command output ended", exc_info=True)


def _bucket(uri: str) -> str:
    return uri[len("s3://"):].split("/", 1)[0]


def _key(uri: str) -> str:
    rest = uri[len("s3://"):].split("/", 1)
    return rest[1] if len(rest) > 1 else ""


def _moto_backend(account_id: str):
    def backend(region: str):
        try:
            from moto.ssm.models import ssm_backends  # noqa: PLC0415

            return ssm_backends[account_id][region]
        except Exception:  # noqa: BLE001
            return None

    return backend
