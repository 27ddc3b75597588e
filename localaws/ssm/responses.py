"""SSM's protocol for what localaws answers itself: Run Command of the project's documents, and the two
operations moto lacks; every other SSM request goes on to moto (``claims``).

Moto stores a SendCommand and calls it ``Success`` at once, without running anything, and has no
ListCommandInvocations or DescribeInstanceInformation. DescribeInstanceInformation lists moto's running
instances whose instance profile's role may register with SSM (``ssm:UpdateInstanceInformation``, or
AmazonSSMManagedInstanceCore) as ``Online``, as the agent preinstalled on the Deep Learning AMIs would.
"""

from __future__ import annotations

import functools
import json
import time
import uuid

from localaws.protocol import JsonProtocol, snake
from localaws.ssm import documents, seed
from localaws.ssm.commands import HostCommands
from localaws.ssm.documents import SsmError
from localaws.ssm.models import Commands, Invocation

TARGET_PREFIX = "AmazonSSM."


class SsmResponses:
    operations = (
        "SendCommand",
        "GetCommandInvocation",
        "ListCommandInvocations",
        "ListCommands",
        "CancelCommand",
        "DescribeInstanceInformation",
    )

    def __init__(self, settings, clients, commands: Commands, host: HostCommands, moto_ssm_backend):
        self.settings = settings
        self.clients = clients
        self.commands = commands
        self.host = host
        self.moto_ssm_backend = moto_ssm_backend

    def handle(self, environ: dict, target: str, region: str | None):
        """(status, headers, body) when the request is ours; None (its body read, for moto) otherwise."""
        region = region or self.settings.region
        seed.seed_region(self.settings.account_id, region)
        protocol = JsonProtocol(
            "ssm",
            TARGET_PREFIX,
            {
                operation: functools.partial(getattr(self, snake(operation)), region=region)
                for operation in self.operations
            },
            crash_code="InternalServerError",
        )
        # moto would take NaN, any JSON type anywhere, a chunked body or any size: SSM's errors, whoever's the
        # request is; and what is read there is what decides whose it is.
        return protocol.handle_claimed(environ, target, self.claims)

    def claims(self, operation: str, params: dict) -> bool:
        if operation == "SendCommand":
            return documents.kind_of(params.get("DocumentName")) is not None
        if operation in ("GetCommandInvocation", "CancelCommand"):
            return params.get("CommandId") in self.commands
        if operation in ("ListCommandInvocations", "DescribeInstanceInformation"):
            return True  # moto has neither
        if operation == "ListCommands":
            return (
                params.get("CommandId") in self.commands
                or bool(params.get("InstanceId"))
                or bool(self.commands.commands and not params.get("CommandId"))
            )
        return False

    # --- operations ------------------------------------------------------------------------------------

    def send_command(self, params: dict, region: str) -> dict:
        name = params["DocumentName"]
        kind = documents.kind_of(name)
        if kind is None:  # claims() took only the project's documents
            raise SsmError("InvalidDocument", f"Document with name {name} does not exist.")
        ssm = self.clients.client("ssm")
        try:
            version = {"DocumentVersion": params["DocumentVersion"]} if params.get("DocumentVersion") else {}
            described = ssm.get_document(Name=name, DocumentFormat="JSON", **version)
        except ssm.exceptions.InvalidDocument:
            raise SsmError("InvalidDocument", f"Document with name {name} does not exist.") from None
        document = documents.parse(described["Content"])
        values = documents.resolve_parameters(document, params.get("Parameters") or {})
        instance_ids = list(params.get("InstanceIds") or [])
        if not instance_ids:
            raise SsmError(
                "InvalidInstanceId", "Targets are not supported for this document on localaws: name InstanceIds."
            )
        running = self._running_instances(instance_ids)
        bad = [i for i in instance_ids if i not in running]
        if bad:
            raise SsmError(
                "InvalidInstanceId", f"Instances [{bad}] not in a valid state for account {self.settings.account_id}"
            )
        command_id = str(uuid.uuid4())
        now = time.time()
        delivery = int(params.get("TimeoutSeconds") or 3600)
        invocations = [
            Invocation(
                command_id=command_id,
                instance_id=instance_id,
                document_name=name,
                document_version=str(described.get("DocumentVersion", "1")),
                kind=kind,
                comment=params.get("Comment", ""),
                parameters=params.get("Parameters") or {},
                values=values,
                plugin=documents.step_name(document),
                timeout=documents.step_timeout(document, values),
                requested=now,
                expires=now + delivery,
                cloudwatch=params.get("CloudWatchOutputConfig") or {},
                region=region,
                service_role=params.get("ServiceRoleArn", ""),
                script=documents.step_script(document, values),
            )
            for instance_id in instance_ids
        ]
        self.commands.add(command_id, invocations)
        for invocation in invocations:
            self.host.start(invocation)
        return {"Command": self.commands.describe_command(command_id)}

    def get_command_invocation(self, params: dict, region: str) -> dict:
        return self.commands.describe_invocation(self.commands.invocation(params["CommandId"], params["InstanceId"]))

    def list_command_invocations(self, params: dict, region: str) -> dict:
        command_id, instance_id = params.get("CommandId"), params.get("InstanceId")
        listed = [
            self.commands.summary(i, bool(params.get("Details")))
            for i in self.commands.matching(command_id, instance_id)
        ]
        if command_id and command_id not in self.commands:
            listed = self._moto_invocations(command_id, instance_id, region)
        return {"CommandInvocations": listed}

    def list_commands(self, params: dict, region: str) -> dict:
        command_id, instance_id = params.get("CommandId"), params.get("InstanceId")
        listed = [self.commands.describe_command(cid) for cid in self.commands.command_ids(command_id, instance_id)]
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

    def cancel_command(self, params: dict, region: str) -> dict:
        self.commands.cancel(params["CommandId"], params.get("InstanceIds"))
        return {}

    def describe_instance_information(self, params: dict, region: str) -> dict:
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
            listed.append(
                {
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
                }
            )
        for flt in params.get("Filters") or []:
            if flt.get("Key") == "PingStatus":
                listed = [i for i in listed if i["PingStatus"] in flt.get("Values", [])]
        return {"InstanceInformationList": listed}

    # --- moto's commands and instances -------------------------------------------------------------

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
                invocations.append(
                    {
                        "CommandId": command["CommandId"],
                        "InstanceId": iid,
                        "DocumentName": command["DocumentName"] or "",
                        "Comment": command["Comment"],
                        "RequestedDateTime": command["RequestedDateTime"],
                        "Status": command["Status"],
                        "StatusDetails": command["Status"],
                        "CommandPlugins": [],
                    }
                )
        return invocations

    def _running_instances(self, instance_ids: list[str]) -> set[str]:
        ec2 = self.clients.client("ec2")
        try:
            reservations = ec2.describe_instances(InstanceIds=instance_ids)["Reservations"]
        except ec2.exceptions.ClientError:
            return set()
        return {i["InstanceId"] for r in reservations for i in r["Instances"] if i["State"]["Name"] == "running"}

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


def moto_backend(account_id: str):
    def backend(region: str):
        try:
            from moto.ssm.models import ssm_backends  # noqa: PLC0415

            return ssm_backends[account_id][region]
        except Exception:  # noqa: BLE001
            return None

    return backend
