"""Removing a run's stack: every resource tagged with the run, in dependency order, whatever state it is in.

``teardown_stack(client, run_key)`` finds resources by their tags (project=ml-pipeline, run=<key>) and, for
what lives inside the run's VPC, by that VPC, never by names alone. It deletes explicitly what AWS would
not remove on its own (route tables, routes and associations, endpoints, a detached volume, the role's
inline policies) and does not count on emulator quirks. It is idempotent: run it again and it finds
nothing and succeeds. It works on a half-created stack (a gateway never attached, a profile with no role,
a group with no rules, an instance whose volume was never attached).

Order: commands still running on the host -> instances (terminate, wait) -> volumes (detach, delete) ->
VPC endpoints -> network interfaces left in the VPC -> security groups -> route tables -> subnets ->
internet gateways (detach, delete) -> VPCs -> IAM instance profiles and roles -> SSM documents.

Whatever cannot be removed after the waits is listed, and ``TeardownIncomplete`` is raised at the end
(after trying everything else), so the task fails visibly and its retry carries on.

``remaining(client, run_key)`` counts what is left of the run, per resource type.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Set
from typing import TYPE_CHECKING, Any

from ml_pipeline.infra import tags

if TYPE_CHECKING:
    from ml_pipeline.aws import Client, Clients

log = logging.getLogger(__name__)

RETRYABLE = (
    "DependencyViolation",
    "IncorrectState",
    "InvalidState",
    "VolumeInUse",
    "ResourceInUse",
    "IncorrectInstanceState",
    "DeleteConflict",
)
GONE = ("NotFound", "NoSuchEntity", "InvalidDocument", "Malformed")


class TeardownIncomplete(RuntimeError):
    def __init__(self, report: dict):
        self.report = report
        super().__init__(f"teardown of run {report['run']} left: {report['errors']}")


def _code(error) -> str:
    return error.response.get("Error", {}).get("Code", "")


class _Teardown:
    def __init__(self, client: Clients, run_key: str, timeout: float, poll: float):
        self.client = client
        self.key = run_key
        self.timeout = timeout
        self.poll = poll
        self.ec2 = client("ec2")
        self.removed: dict[str, list[str]] = {}
        self.errors: list[str] = []

    def note(self, kind: str, resource_id: str) -> None:
        self.removed.setdefault(kind, []).append(resource_id)
        log.info("teardown %s: removed %s %s", self.key, kind, resource_id)

    def attempt(self, kind: str, resource_id: str, call: Callable[..., object], *, retry: bool = True) -> bool:
        """``call()`` until it succeeds or the resource is gone; retries dependency errors until the timeout."""
        deadline = time.monotonic() + (self.timeout if retry else 0)
        while True:
            try:
                call()
                self.note(kind, resource_id)
                return True
            except Exception as error:  # noqa: BLE001 - botocore's ClientError, whichever client raised it
                code = _code(error) if hasattr(error, "response") else ""
                if any(mark in code for mark in GONE):
                    return False
                if any(mark in code for mark in RETRYABLE) and time.monotonic() < deadline:
                    time.sleep(self.poll)
                    continue
                self.errors.append(f"{kind} {resource_id}: {code or type(error).__name__}: {error}")
                return False

    def wait_until(self, what: str, done: Callable[..., bool], timeout: float | None = None) -> bool:
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while not done():
            if time.monotonic() > deadline:
                self.errors.append(f"timed out waiting until {what}")
                return False
            time.sleep(self.poll)
        return True

    # --- finding ---------------------------------------------------------------------------------

    def tagged(self, describe: str, key: str, **kwargs: Any) -> list[dict]:
        pages = (
            self.ec2.get_paginator(describe).paginate(Filters=tags.run_filter(self.key), **kwargs)
            if self.ec2.can_paginate(describe)
            else [getattr(self.ec2, describe)(Filters=tags.run_filter(self.key))]
        )
        # The filter asks AWS; the tags are checked again here, so an emulator ignoring a filter never
        # widens a teardown to another run's resources.
        return [item for page in pages for item in page[key] if tags.is_run(item.get("Tags"), self.key)]

    def vpc_ids(self) -> list[str]:
        return [vpc["VpcId"] for vpc in self.tagged("describe_vpcs", "Vpcs")]

    def in_vpcs(self, describe: str, key: str, vpc_ids: list[str]) -> list[dict]:
        if not vpc_ids:
            return []
        return getattr(self.ec2, describe)(Filters=[{"Name": "vpc-id", "Values": vpc_ids}])[key]

    def instances(
        self, states: tuple[str, ...] = ("pending", "running", "stopping", "stopped", "shutting-down")
    ) -> list[dict]:
        reservations = self.ec2.describe_instances(
            Filters=tags.run_filter(self.key) + [{"Name": "instance-state-name", "Values": list(states)}]
        )
        return [i for r in reservations["Reservations"] for i in r["Instances"]]

    # --- the steps ---------------------------------------------------------------------------------

    def commands(self) -> None:
        """Cancel Run Command invocations still running on the run's hosts (best effort: terminating the
        instance ends them anyway, but a cancelled command says why)."""
        ssm = self.client("ssm")
        for instance in self.instances():
            try:
                listed = ssm.list_commands(InstanceId=instance["InstanceId"])["Commands"]
            except Exception:  # noqa: BLE001 - optional
                continue
            for command in listed:
                if command["Status"] in ("Pending", "InProgress", "Delayed"):
                    self.attempt(
                        "command",
                        command["CommandId"],
                        lambda c=command: ssm.cancel_command(CommandId=c["CommandId"]),
                        retry=False,
                    )

    def terminate_instances(self) -> None:
        live = self.instances()
        if not live:
            return
        ids = [i["InstanceId"] for i in live]
        try:
            self.ec2.terminate_instances(InstanceIds=ids)
        except Exception as error:  # noqa: BLE001
            self.errors.append(f"instances {ids}: {error}")
            return
        for instance_id in ids:
            self.note("instance", instance_id)
        self.wait_until(f"instances {ids} are terminated", lambda: not self.instances())

    def volumes(self) -> None:
        for volume in self.tagged("describe_volumes", "Volumes"):
            volume_id = volume["VolumeId"]
            for attachment in volume.get("Attachments", []):
                if attachment.get("State") in ("attached", "attaching", "busy"):
                    # moto crashes on DetachVolume with only VolumeId; AWS takes all three as well.
                    self.attempt(
                        "volume attachment",
                        f"{volume_id}@{attachment['InstanceId']}",
                        lambda a=attachment, v=volume_id: self.ec2.detach_volume(
                            VolumeId=v, InstanceId=a["InstanceId"], Device=a["Device"], Force=True
                        ),
                    )
            self.wait_until(f"volume {volume_id} is detached", lambda v=volume_id: self._volume_free(v))
            self.attempt("volume", volume_id, lambda v=volume_id: self.ec2.delete_volume(VolumeId=v))

    def _volume_free(self, volume_id: str) -> bool:
        try:
            volume = self.ec2.describe_volumes(VolumeIds=[volume_id])["Volumes"][0]
        except Exception:  # noqa: BLE001 - gone (deleted on termination)
            return True
        return volume["State"] != "in-use"

    def endpoints(self, vpc_ids: list[str]) -> None:
        found = {e["VpcEndpointId"] for e in self.tagged("describe_vpc_endpoints", "VpcEndpoints")}
        found |= {
            e["VpcEndpointId"]
            for e in self.in_vpcs("describe_vpc_endpoints", "VpcEndpoints", vpc_ids)
            if e.get("State", "").lower() not in ("deleted", "deleting")
        }
        for endpoint_id in sorted(found):
            self.attempt(
                "vpc endpoint",
                endpoint_id,
                lambda e=endpoint_id: self._raise_unsuccessful(self.ec2.delete_vpc_endpoints(VpcEndpointIds=[e])),
            )
        if found:
            self.wait_until(
                "the VPC endpoints are deleted",
                lambda: (
                    not [
                        e
                        for e in self.in_vpcs("describe_vpc_endpoints", "VpcEndpoints", vpc_ids)
                        if e.get("State", "").lower() not in ("deleted",)
                    ]
                ),
            )

    @staticmethod
    def _raise_unsuccessful(response: dict) -> None:
        failed = response.get("Unsuccessful") or []
        if failed:
            from botocore.exceptions import ClientError  # noqa: PLC0415

            error = failed[0].get("Error", {})
            raise ClientError(
                {"Error": {"Code": error.get("Code", "Unsuccessful"), "Message": error.get("Message", "")}},
                "DeleteVpcEndpoints",
            )

    def network_interfaces(self, vpc_ids: list[str]) -> None:
        """What is left in the VPC once the instances are gone (SageMaker's ENIs take a while to go)."""
        for eni in self.in_vpcs("describe_network_interfaces", "NetworkInterfaces", vpc_ids):
            if eni.get("Status") == "available":
                self.attempt(
                    "network interface",
                    eni["NetworkInterfaceId"],
                    lambda e=eni: self.ec2.delete_network_interface(NetworkInterfaceId=e["NetworkInterfaceId"]),
                )

    def security_groups(self, vpc_ids: list[str]) -> None:
        groups = {g["GroupId"]: g for g in self.tagged("describe_security_groups", "SecurityGroups")}
        for group in self.in_vpcs("describe_security_groups", "SecurityGroups", vpc_ids):
            if group["GroupName"] != "default":  # the default group goes with its VPC
                groups.setdefault(group["GroupId"], group)
        # Rules naming another group keep that group alive: revoke them first.
        for group in groups.values():
            for direction, revoke in (
                ("IpPermissions", self.ec2.revoke_security_group_ingress),
                ("IpPermissionsEgress", self.ec2.revoke_security_group_egress),
            ):
                referencing = [r for r in group.get(direction, []) if r.get("UserIdGroupPairs")]
                if referencing:
                    rules = [
                        {k: v for k, v in r.items() if k in ("IpProtocol", "FromPort", "ToPort", "UserIdGroupPairs")}
                        for r in referencing
                    ]
                    for rule in rules:
                        rule["UserIdGroupPairs"] = [{"GroupId": p["GroupId"]} for p in rule["UserIdGroupPairs"]]
                    self.attempt(
                        "security group rules",
                        group["GroupId"],
                        lambda g=group, rv=revoke, rs=rules: rv(GroupId=g["GroupId"], IpPermissions=rs),
                        retry=False,
                    )
        for group_id in groups:
            self.attempt("security group", group_id, lambda g=group_id: self.ec2.delete_security_group(GroupId=g))

    def route_tables(self, vpc_ids: list[str]) -> None:
        tables = {t["RouteTableId"]: t for t in self.tagged("describe_route_tables", "RouteTables")}
        for table in self.in_vpcs("describe_route_tables", "RouteTables", vpc_ids):
            if not any(a.get("Main") for a in table.get("Associations", [])):
                tables.setdefault(table["RouteTableId"], table)
        for table_id, table in tables.items():
            if any(a.get("Main") for a in table.get("Associations", [])):
                continue  # a VPC's main table goes with its VPC
            for association in table.get("Associations", []):
                self.attempt(
                    "route table association",
                    association["RouteTableAssociationId"],
                    lambda a=association: self.ec2.disassociate_route_table(AssociationId=a["RouteTableAssociationId"]),
                    retry=False,
                )
            for route in table.get("Routes", []):
                if route.get("GatewayId") == "local" or route.get("Origin") != "CreateRoute":
                    continue
                destination = route.get("DestinationCidrBlock")
                if destination:
                    self.attempt(
                        "route",
                        f"{table_id}:{destination}",
                        lambda d=destination, t=table_id: self.ec2.delete_route(RouteTableId=t, DestinationCidrBlock=d),
                        retry=False,
                    )
            self.attempt("route table", table_id, lambda t=table_id: self.ec2.delete_route_table(RouteTableId=t))

    def strangers(self, vpc_ids: list[str]) -> tuple[set[str], list[str]]:
        """Instances in the run's VPC that the run did not launch are never terminated: their subnets and
        VPC stay, reported as errors (AWS would refuse to delete them anyway; moto would not)."""
        if not vpc_ids:
            return set(), vpc_ids
        reservations = self.ec2.describe_instances(
            Filters=[
                {"Name": "vpc-id", "Values": vpc_ids},
                {
                    "Name": "instance-state-name",
                    "Values": ["pending", "running", "stopping", "stopped", "shutting-down"],
                },
            ]
        )
        strangers = [
            i for r in reservations["Reservations"] for i in r["Instances"] if not tags.is_run(i.get("Tags"), self.key)
        ]
        for instance in strangers:
            self.errors.append(
                f"instance {instance['InstanceId']} in subnet {instance['SubnetId']} of the run's VPC "
                f"{instance['VpcId']} was not launched by run {self.key}: left, with its subnet and VPC"
            )
        return {i["SubnetId"] for i in strangers}, [v for v in vpc_ids if v not in {i["VpcId"] for i in strangers}]

    def subnets(self, vpc_ids: list[str], kept: Set[str] = frozenset()) -> None:
        subnets = {s["SubnetId"] for s in self.tagged("describe_subnets", "Subnets")}
        subnets |= {s["SubnetId"] for s in self.in_vpcs("describe_subnets", "Subnets", vpc_ids)}
        for subnet_id in sorted(subnets - set(kept)):
            self.attempt("subnet", subnet_id, lambda s=subnet_id: self.ec2.delete_subnet(SubnetId=s))

    def internet_gateways(self, vpc_ids: list[str]) -> None:
        gateways = {g["InternetGatewayId"]: g for g in self.tagged("describe_internet_gateways", "InternetGateways")}
        if vpc_ids:
            for gateway in self.ec2.describe_internet_gateways(
                Filters=[{"Name": "attachment.vpc-id", "Values": vpc_ids}]
            )["InternetGateways"]:
                gateways.setdefault(gateway["InternetGatewayId"], gateway)
        for gateway_id, gateway in gateways.items():
            for attachment in gateway.get("Attachments", []):
                self.attempt(
                    "internet gateway attachment",
                    f"{gateway_id}@{attachment['VpcId']}",
                    lambda a=attachment, g=gateway_id: self.ec2.detach_internet_gateway(
                        InternetGatewayId=g, VpcId=a["VpcId"]
                    ),
                )
            self.attempt(
                "internet gateway",
                gateway_id,
                lambda g=gateway_id: self.ec2.delete_internet_gateway(InternetGatewayId=g),
            )

    def vpcs(self, vpc_ids: list[str]) -> None:
        for vpc_id in vpc_ids:
            self.attempt("vpc", vpc_id, lambda v=vpc_id: self.ec2.delete_vpc(VpcId=v))

    def iam(self) -> None:
        iam_client = self.client("iam")
        profiles = [
            p
            for page in iam_client.get_paginator("list_instance_profiles").paginate(PathPrefix=tags.IAM_PATH)
            for p in page["InstanceProfiles"]
        ]
        for profile in profiles:
            name = profile["InstanceProfileName"]
            try:
                described = iam_client.get_instance_profile(InstanceProfileName=name)["InstanceProfile"]
            except iam_client.exceptions.NoSuchEntityException:
                continue
            if not tags.is_run(described.get("Tags"), self.key):
                continue
            for role in described.get("Roles", []):
                self.attempt(
                    "instance profile role",
                    f"{name}/{role['RoleName']}",
                    lambda r=role, n=name: iam_client.remove_role_from_instance_profile(
                        InstanceProfileName=n, RoleName=r["RoleName"]
                    ),
                    retry=False,
                )
            self.attempt(
                "instance profile", name, lambda n=name: iam_client.delete_instance_profile(InstanceProfileName=n)
            )
        roles = [
            r
            for page in iam_client.get_paginator("list_roles").paginate(PathPrefix=tags.IAM_PATH)
            for r in page["Roles"]
        ]
        for role in roles:
            name = role["RoleName"]
            try:
                role_tags = iam_client.list_role_tags(RoleName=name)["Tags"]
            except iam_client.exceptions.NoSuchEntityException:
                continue
            if not tags.is_run(role_tags, self.key):
                continue
            for profile in iam_client.list_instance_profiles_for_role(RoleName=name)["InstanceProfiles"]:
                self.attempt(
                    "instance profile role",
                    f"{profile['InstanceProfileName']}/{name}",
                    lambda p=profile, n=name: iam_client.remove_role_from_instance_profile(
                        InstanceProfileName=p["InstanceProfileName"], RoleName=n
                    ),
                    retry=False,
                )
            for policy in iam_client.list_role_policies(RoleName=name)["PolicyNames"]:
                self.attempt(
                    "role policy",
                    f"{name}/{policy}",
                    lambda p=policy, n=name: iam_client.delete_role_policy(RoleName=n, PolicyName=p),
                    retry=False,
                )
            for policy in iam_client.list_attached_role_policies(RoleName=name)["AttachedPolicies"]:
                self.attempt(
                    "role policy attachment",
                    f"{name}/{policy['PolicyName']}",
                    lambda p=policy, n=name: iam_client.detach_role_policy(RoleName=n, PolicyArn=p["PolicyArn"]),
                    retry=False,
                )
            self.attempt("role", name, lambda n=name: iam_client.delete_role(RoleName=n))

    def documents(self) -> None:
        ssm = self.client("ssm")
        for document in run_documents(ssm, self.key):
            self.attempt(
                "ssm document", document["Name"], lambda d=document: ssm.delete_document(Name=d["Name"]), retry=False
            )

    def run(self) -> dict:
        started = time.monotonic()
        self.commands()
        self.terminate_instances()
        self.volumes()
        vpc_ids = self.vpc_ids()
        kept_subnets, vpc_ids = self.strangers(vpc_ids)
        self.endpoints(vpc_ids)
        self.network_interfaces(vpc_ids)
        self.security_groups(vpc_ids)
        self.route_tables(vpc_ids)
        self.subnets(vpc_ids, kept_subnets)
        self.internet_gateways(vpc_ids)
        self.vpcs(vpc_ids)
        self.iam()
        self.documents()
        return {
            "run": self.key,
            "removed": self.removed,
            "errors": self.errors,
            "seconds": round(time.monotonic() - started, 1),
        }


def teardown_stack(client: Clients, run_key: str, timeout: float = 900, poll: float = 5) -> dict:
    """Remove every resource of run ``run_key``; returns ``{"run", "removed": {kind: [ids]}, "errors", "seconds"}``.
    Raises TeardownIncomplete (with that report) when something could not be removed."""
    report = _Teardown(client, run_key, timeout, poll).run()
    if report["errors"]:
        raise TeardownIncomplete(report)
    return report


def remaining(client: Clients, run_key: str) -> dict[str, int]:
    """What is left of the run, counted per resource type (instances: not terminated). Each resource's
    tags are checked, not only the filter's answer."""
    ec2 = client("ec2")
    run_filter = tags.run_filter(run_key)

    def count(describe: str, key: str, keep=lambda item: True, **kwargs) -> int:
        items = getattr(ec2, describe)(Filters=run_filter + kwargs.pop("extra", []))[key]
        return sum(1 for item in items if tags.is_run(item.get("Tags"), run_key) and keep(item))

    live = ["pending", "running", "stopping", "stopped", "shutting-down"]
    reservations = ec2.describe_instances(Filters=run_filter + [{"Name": "instance-state-name", "Values": live}])[
        "Reservations"
    ]
    counts = {
        "instances": sum(1 for r in reservations for i in r["Instances"] if tags.is_run(i.get("Tags"), run_key)),
        "volumes": count("describe_volumes", "Volumes"),
        "security_groups": count("describe_security_groups", "SecurityGroups"),
        "subnets": count("describe_subnets", "Subnets"),
        "route_tables": count("describe_route_tables", "RouteTables"),
        "internet_gateways": count("describe_internet_gateways", "InternetGateways"),
        "vpc_endpoints": count(
            "describe_vpc_endpoints", "VpcEndpoints", keep=lambda e: e.get("State", "").lower() != "deleted"
        ),
        "vpcs": count("describe_vpcs", "Vpcs"),
    }
    iam_client = client("iam")
    counts["roles"] = sum(
        1
        for role in iam_client.list_roles(PathPrefix=tags.IAM_PATH)["Roles"]
        if tags.is_run(iam_client.list_role_tags(RoleName=role["RoleName"])["Tags"], run_key)
    )
    counts["instance_profiles"] = sum(
        1
        for profile in iam_client.list_instance_profiles(PathPrefix=tags.IAM_PATH)["InstanceProfiles"]
        if tags.is_run(
            iam_client.get_instance_profile(InstanceProfileName=profile["InstanceProfileName"])["InstanceProfile"].get(
                "Tags"
            ),
            run_key,
        )
    )
    counts["ssm_documents"] = len(run_documents(client("ssm"), run_key))
    return counts


def run_documents(ssm: Client, run_key: str) -> list[dict]:
    """The run's SSM documents: asked by tag, and each one's tags checked (moto ignores tag filters here)."""
    filters = [
        {"Key": f"tag:{tags.PROJECT_KEY}", "Values": [tags.PROJECT]},
        {"Key": f"tag:{tags.RUN_KEY}", "Values": [run_key]},
        {"Key": "Owner", "Values": ["Self"]},
    ]
    found = []
    for page in ssm.get_paginator("list_documents").paginate(Filters=filters):
        for document in page["DocumentIdentifiers"]:
            document_tags = document.get("Tags")
            if document_tags is None:
                document_tags = ssm.list_tags_for_resource(ResourceType="Document", ResourceId=document["Name"])[
                    "TagList"
                ]
            if tags.is_run(document_tags, run_key):
                found.append(document)
    return found
