"""Provisioning the run's stack, one idempotent step at a time.

Every step is ``step(client, plan, [the ids it builds on]) -> ids`` (a small dict for XCom): the ids of
the earlier steps' resources are given to it (``provisioning.STEPS`` says which, ``run_step`` passes them),
never looked up again. Each step first looks for what it would create itself among the resources tagged
with the run (``tags.py``) and creates only what is missing, so a retried or cleared task never makes a
second VPC or host. Everything is created with its tags in the same call (TagSpecifications, IAM Tags),
so there is no window in which a resource exists untagged, and teardown can always find a partly created
stack.

The network (compute=host, or compute=sagemaker with provision_vpc):

    vpc               10.42.0.0/16 (vpc_cidr), DNS support and hostnames on (SSM needs them)
    internet_gateway  attached to the VPC
    subnets           public and private, one availability zone (where the host type is offered)
    route_tables      public: 0.0.0.0/0 -> the internet gateway; private: no route out but the
                      S3 gateway endpoint (SageMaker jobs in the VPC read and write S3 through it)
    security_groups   host: no ingress at all, or SSH only from allowed_cidrs when ssh_key_name is
                      set; egress HTTPS only. SageMaker: ingress only from itself (the job's hosts)

The host (compute=host):

    instance_profile  role ml-pipeline/ml-pipeline-host-<run> (include/iam/host-instance-*.json)
    volume            encrypted gp3 data volume in the subnet's zone
    documents         the SSM command documents (host_training.py)
    host              the Deep Learning AMI on the host type, encrypted root, IMDSv2 only, user data
                      checking Docker and the accelerator (include/host/user-data.sh)
    attach_volume     the data volume on /dev/sdf

``resource_state`` is what the sensors watch; ``provision`` runs every step in order (tests, scripts), as
the DAG's provision group does.
The project's bucket (every run, whatever its compute): ``check_bucket`` (preflight, read only) and
``ensure_bucket`` (open_run: creates and configures only a bucket the run creates).
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import re
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, overload
from urllib.parse import urlsplit

from ml_pipeline.infra import iam, tags
from ml_pipeline.infra.params import accelerator, choose_availability_zone, cidr_errors
from ml_pipeline.infra.provisioning import STEPS, merged, steps_for

if TYPE_CHECKING:
    from ml_pipeline.aws import Client, Clients
    from ml_pipeline.plan import Plan

log = logging.getLogger(__name__)

USER_DATA = Path(__file__).resolve().parents[3] / "include" / "host" / "user-data.sh"
DATA_DEVICE = "/dev/sdf"
ROOT_VOLUME_GB = 100
#: The permissions boundary every host role is created with (the Airflow role may create roles only
#: with it); unset on localaws. See the README's IAM section.
BOUNDARY_ENV = "ML_PIPELINE_HOST_PERMISSIONS_BOUNDARY"
LIVE_INSTANCE_STATES = ["pending", "running", "stopping", "stopped", "shutting-down"]


# --- finding the run's resources by their tags --------------------------------------------------


def _part_filter(plan_or_key: Plan | str, part: str) -> list[dict]:
    key = plan_or_key["key"] if isinstance(plan_or_key, dict) else plan_or_key
    return tags.run_filter(key) + [{"Name": "tag:Name", "Values": [f"{tags.PROJECT}-{key}-{part}"]}]


def _one(items: list[dict], what: str) -> dict | None:
    if len(items) > 1:
        log.warning("%d %s found for one run; using the first", len(items), what)
    return items[0] if items else None


def find_vpc(ec2: Client, plan: Plan) -> dict | None:
    return _one(ec2.describe_vpcs(Filters=_part_filter(plan, "vpc"))["Vpcs"], "VPCs")


def find_subnet(ec2: Client, plan: Plan, part: str) -> dict | None:
    return _one(ec2.describe_subnets(Filters=_part_filter(plan, part))["Subnets"], f"{part} subnets")


def find_host(ec2: Client, plan: Plan) -> dict | None:
    filters = _part_filter(plan, "host") + [{"Name": "instance-state-name", "Values": LIVE_INSTANCE_STATES}]
    instances = [i for r in ec2.describe_instances(Filters=filters)["Reservations"] for i in r["Instances"]]
    return _one(instances, "hosts")


def find_volume(ec2: Client, plan: Plan) -> dict | None:
    return _one(ec2.describe_volumes(Filters=_part_filter(plan, "data"))["Volumes"], "data volumes")


def find_security_group(ec2: Client, plan: Plan, part: str) -> dict | None:
    return _one(
        ec2.describe_security_groups(Filters=_part_filter(plan, part))["SecurityGroups"], f"{part} security groups"
    )


def role_name(key: str) -> str:
    return f"{tags.PROJECT}-host-{key}"


# --- network -------------------------------------------------------------------------------------


def create_vpc(client: Clients, plan: Plan) -> dict:
    ec2 = client("ec2")
    vpc = find_vpc(ec2, plan)
    if vpc is None:
        vpc = ec2.create_vpc(
            CidrBlock=plan["params"]["vpc_cidr"], TagSpecifications=tags.tag_spec("vpc", tags.plan_tags(plan, "vpc"))
        )["Vpc"]
        log.info("created VPC %s", vpc["VpcId"])
    for attribute in ("EnableDnsSupport", "EnableDnsHostnames"):  # SSM's endpoints are reached by name
        ec2.modify_vpc_attribute(VpcId=vpc["VpcId"], **{attribute: {"Value": True}})
    return {"vpc_id": vpc["VpcId"]}


def create_internet_gateway(client: Clients, plan: Plan, vpc_id: str) -> dict:
    ec2 = client("ec2")
    found = ec2.describe_internet_gateways(Filters=_part_filter(plan, "igw"))["InternetGateways"]
    igw = (
        _one(found, "internet gateways")
        or ec2.create_internet_gateway(
            TagSpecifications=tags.tag_spec("internet-gateway", tags.plan_tags(plan, "igw"))
        )["InternetGateway"]
    )
    if not any(a["VpcId"] == vpc_id for a in igw.get("Attachments", [])):
        ec2.attach_internet_gateway(InternetGatewayId=igw["InternetGatewayId"], VpcId=vpc_id)
    return {"internet_gateway_id": igw["InternetGatewayId"], "vpc_id": vpc_id}


def subnet_cidrs(vpc_cidr: str) -> tuple[str, str]:
    """The VPC's first two quarters: (public, private)."""
    network = ipaddress.ip_network(vpc_cidr)
    quarters = list(network.subnets(prefixlen_diff=2))
    return str(quarters[0]), str(quarters[1])


def create_subnets(client: Clients, plan: Plan, vpc_id: str, availability_zone: str | None = None) -> dict:
    ec2 = client("ec2")
    p = plan["params"]
    public_cidr, private_cidr = subnet_cidrs(p["vpc_cidr"])  # the VPC's, as create_vpc made it
    existing = {part: find_subnet(ec2, plan, part) for part in ("public", "private")}
    zone = next((s["AvailabilityZone"] for s in existing.values() if s), None) or availability_zone
    if zone is None:
        if p.get("compute") == "host":
            zone = choose_availability_zone(ec2, p)
        else:
            zones = ec2.describe_availability_zones(Filters=[{"Name": "state", "Values": ["available"]}])
            zone = p.get("availability_zone") or sorted(z["ZoneName"] for z in zones["AvailabilityZones"])[0]
    ids = {}
    for part, cidr in (("public", public_cidr), ("private", private_cidr)):
        subnet = (
            existing[part]
            or ec2.create_subnet(
                VpcId=vpc_id,
                CidrBlock=cidr,
                AvailabilityZone=zone,
                TagSpecifications=tags.tag_spec("subnet", tags.plan_tags(plan, part)),
            )["Subnet"]
        )
        ids[f"{part}_subnet_id"] = subnet["SubnetId"]
    # The host gets a public address to reach SSM, ECR and S3 without a NAT gateway; no port is open to it.
    ec2.modify_subnet_attribute(SubnetId=ids["public_subnet_id"], MapPublicIpOnLaunch={"Value": True})
    return {**ids, "availability_zone": zone, "vpc_id": vpc_id}


def _route_table(ec2: Client, plan: Plan, vpc_id: str, part: str) -> dict:
    found = ec2.describe_route_tables(Filters=_part_filter(plan, f"{part}-rt"))["RouteTables"]
    return (
        _one(found, f"{part} route tables")
        or ec2.create_route_table(
            VpcId=vpc_id, TagSpecifications=tags.tag_spec("route-table", tags.plan_tags(plan, f"{part}-rt"))
        )["RouteTable"]
    )


def create_route_tables(
    client: Clients, plan: Plan, vpc_id: str, internet_gateway_id: str, public_subnet_id: str, private_subnet_id: str
) -> dict:
    ec2 = client("ec2")
    public = _route_table(ec2, plan, vpc_id, "public")
    if not any(r.get("DestinationCidrBlock") == "0.0.0.0/0" for r in public.get("Routes", [])):
        ec2.create_route(
            RouteTableId=public["RouteTableId"], DestinationCidrBlock="0.0.0.0/0", GatewayId=internet_gateway_id
        )
    private = _route_table(ec2, plan, vpc_id, "private")
    for table, subnet_id in ((public, public_subnet_id), (private, private_subnet_id)):
        if not any(a.get("SubnetId") == subnet_id for a in table.get("Associations", [])):
            ec2.associate_route_table(RouteTableId=table["RouteTableId"], SubnetId=subnet_id)
    region = ec2.meta.region_name
    endpoint = _one(
        ec2.describe_vpc_endpoints(Filters=_part_filter(plan, "s3-endpoint"))["VpcEndpoints"], "S3 endpoints"
    )
    if endpoint is None:
        endpoint = ec2.create_vpc_endpoint(
            VpcId=vpc_id,
            ServiceName=f"com.amazonaws.{region}.s3",
            VpcEndpointType="Gateway",
            RouteTableIds=[private["RouteTableId"]],
            TagSpecifications=tags.tag_spec("vpc-endpoint", tags.plan_tags(plan, "s3-endpoint")),
        )["VpcEndpoint"]
    return {
        "public_route_table_id": public["RouteTableId"],
        "private_route_table_id": private["RouteTableId"],
        "s3_endpoint_id": endpoint["VpcEndpointId"],
    }


def _security_group(ec2: Client, plan: Plan, vpc_id: str, part: str, description: str) -> tuple[dict, bool]:
    group = find_security_group(ec2, plan, part)
    if group is not None:
        return group, False
    group_id = ec2.create_security_group(
        GroupName=f"{tags.PROJECT}-{plan['key']}-{part}",
        Description=description,
        VpcId=vpc_id,
        TagSpecifications=tags.tag_spec("security-group", tags.plan_tags(plan, part)),
    )["GroupId"]
    return ec2.describe_security_groups(GroupIds=[group_id])["SecurityGroups"][0], True


def _https_out_only(ec2: Client, group: dict) -> None:
    """Egress: HTTPS to AWS's endpoints, nothing else (the default allow-all rule is removed)."""
    for rule in group.get("IpPermissionsEgress", []):
        if rule.get("IpProtocol") == "-1":
            ec2.revoke_security_group_egress(
                GroupId=group["GroupId"],
                IpPermissions=[
                    {"IpProtocol": "-1", "IpRanges": [{"CidrIp": r["CidrIp"]} for r in rule.get("IpRanges", [])]}
                ],
            )
    if not any(r.get("FromPort") == 443 for r in group.get("IpPermissionsEgress", [])):
        ec2.authorize_security_group_egress(
            GroupId=group["GroupId"],
            IpPermissions=[
                {
                    "IpProtocol": "tcp",
                    "FromPort": 443,
                    "ToPort": 443,
                    "IpRanges": [{"CidrIp": "0.0.0.0/0", "Description": "AWS APIs: SSM, ECR, S3, CloudWatch"}],
                }
            ],
        )


def ssh_ingress(cidrs: list[str]) -> list[dict]:
    """SSH from the allowed CIDRs only; refuses (again, whatever the caller checked) anything too broad."""
    errors = cidr_errors(cidrs)
    if errors:
        raise ValueError("; ".join(errors))
    v4 = [{"CidrIp": c, "Description": "allowed_cidrs"} for c in cidrs if ipaddress.ip_network(c).version == 4]
    v6 = [{"CidrIpv6": c, "Description": "allowed_cidrs"} for c in cidrs if ipaddress.ip_network(c).version == 6]
    return [{"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": v4, "Ipv6Ranges": v6}] if cidrs else []


def create_security_groups(client: Clients, plan: Plan, vpc_id: str) -> dict:
    ec2 = client("ec2")
    p = plan["params"]
    ids = {"host_security_group_id": None, "sagemaker_security_group_id": None}
    if p.get("compute") == "host":
        group, new = _security_group(
            ec2, plan, vpc_id, "host", "ml-pipeline host: no ingress but SSH from allowed_cidrs when enabled"
        )
        if new:
            _https_out_only(ec2, group)
            if p.get("ssh_key_name"):
                rules = ssh_ingress(list(p.get("allowed_cidrs") or []))
                if rules:
                    ec2.authorize_security_group_ingress(GroupId=group["GroupId"], IpPermissions=rules)
        ids["host_security_group_id"] = group["GroupId"]
    else:
        group, new = _security_group(
            ec2, plan, vpc_id, "sagemaker", "ml-pipeline SageMaker jobs and endpoint: ingress only from this group"
        )
        if new:
            _https_out_only(ec2, group)
            itself = [{"IpProtocol": "-1", "UserIdGroupPairs": [{"GroupId": group["GroupId"]}]}]
            ec2.authorize_security_group_ingress(GroupId=group["GroupId"], IpPermissions=itself)
            ec2.authorize_security_group_egress(GroupId=group["GroupId"], IpPermissions=itself)
        ids["sagemaker_security_group_id"] = group["GroupId"]
    return ids


def vpc_config(provisioned: dict) -> dict:
    """SageMaker's VpcConfig for the run's jobs, model and endpoint (compute=sagemaker, provision_vpc): the
    private subnet and the SageMaker security group, as provisioning returned them."""
    if not provisioned.get("sagemaker_security_group_id") or not provisioned.get("private_subnet_id"):
        raise RuntimeError("no private subnet or SageMaker security group was provisioned for the run")
    return {
        "SecurityGroupIds": [provisioned["sagemaker_security_group_id"]],
        "Subnets": [provisioned["private_subnet_id"]],
    }


# --- the project's bucket -------------------------------------------------------------------------

#: The tag marking the bucket a run created (and may finish configuring on a retry); other buckets are never changed.
CREATED_BY_RUN = "created-by-run"
_PUBLIC_GRANTEES = (
    "http://acs.amazonaws.com/groups/global/AllUsers",
    "http://acs.amazonaws.com/groups/global/AuthenticatedUsers",
)


class BucketRefused(ValueError):
    """An existing bucket the run will not use (and will not change): unencrypted, public, or not ours."""


def _error_code(error) -> str:
    return error.response["Error"]["Code"]


def _owned_by(owner: str | None) -> dict:
    """ExpectedBucketOwner: S3 answers 403 when the bucket is another account's, even one that grants this
    role access."""
    return {"ExpectedBucketOwner": owner} if owner else {}


def account_of(client: Clients) -> str:
    """The account the run's credentials belong to (STS GetCallerIdentity needs no permission)."""
    return client("sts").get_caller_identity()["Account"]


def _bucket_exists(s3: Client, bucket: str, owner: str | None = None) -> bool:
    try:
        s3.head_bucket(Bucket=bucket, **_owned_by(owner))
        return True
    except s3.exceptions.ClientError as error:
        if _error_code(error) in ("404", "NoSuchBucket"):
            return False
        if _error_code(error) in ("403", "AccessDenied"):
            raise BucketRefused(
                f"s3://{bucket} exists but this account may not use it (another account's "
                "bucket, or no s3:ListBucket on it): choose another bucket"
            ) from None
        raise


@overload
def _read(s3: Client, operation: str, bucket: str, absent: None = None, owner: str | None = None) -> dict: ...
@overload
def _read(s3: Client, operation: str, bucket: str, absent: str, owner: str | None = None) -> dict | None: ...
def _read(s3: Client, operation: str, bucket: str, absent: str | None = None, owner: str | None = None) -> dict | None:
    """One of the bucket's settings (None: it has none); a setting the run may not read refuses the bucket."""
    try:
        return getattr(s3, operation)(Bucket=bucket, **_owned_by(owner))
    except s3.exceptions.ClientError as error:
        if _error_code(error) == absent:
            return None
        if _error_code(error) in ("403", "AccessDenied"):
            raise BucketRefused(f"s3://{bucket} cannot be checked: {operation} is denied to this role") from None
        raise


def bucket_findings(s3: Client, bucket: str, owner: str | None = None) -> tuple[list[str], list[str]]:
    """What makes an existing bucket unfit (refusals) and what is only worth saying (warnings); read only."""
    refusals, warnings = [], []
    encryption = _read(s3, "get_bucket_encryption", bucket, "ServerSideEncryptionConfigurationNotFoundError", owner)
    rules = (encryption or {}).get("ServerSideEncryptionConfiguration", {}).get("Rules", [])
    if not any(r.get("ApplyServerSideEncryptionByDefault", {}).get("SSEAlgorithm") for r in rules):
        refusals.append("it has no default encryption")
    # Public is refused; a private bucket without Block Public Access is only said: the account's own
    # setting may cover it, and turning it on is the owner's change, not the run's.
    block = _read(s3, "get_public_access_block", bucket, "NoSuchPublicAccessBlockConfiguration", owner)
    settings = (block or {}).get("PublicAccessBlockConfiguration", {})
    off = [
        name
        for name in ("BlockPublicAcls", "IgnorePublicAcls", "BlockPublicPolicy", "RestrictPublicBuckets")
        if not settings.get(name)
    ]
    if off:
        which = (
            "has no Block Public Access configuration"
            if block is None
            else f"has Block Public Access partly off ({', '.join(off)})"
        )
        warnings.append(f"it {which}: it is private now, but nothing in the bucket stops it being made public")
    status = _read(s3, "get_bucket_policy_status", bucket, "NoSuchBucketPolicy", owner)
    if status and status["PolicyStatus"].get("IsPublic") and not settings.get("RestrictPublicBuckets"):
        refusals.append("its bucket policy makes it public")
    public = sorted(
        {
            grant["Permission"]
            for grant in _read(s3, "get_bucket_acl", bucket, owner=owner)["Grants"]
            if grant["Grantee"].get("URI") in _PUBLIC_GRANTEES and not settings.get("IgnorePublicAcls")
        }
    )
    if public:
        refusals.append(f"its ACL grants {', '.join(public)} to everyone")
    if _read(s3, "get_bucket_versioning", bucket, owner=owner).get("Status") != "Enabled":
        warnings.append("versioning is not enabled: an overwritten or deleted artifact cannot be recovered")
    return refusals, warnings


def check_bucket(s3: Client, bucket: str, run_key: str | None = None, owner: str | None = None) -> dict:
    """The preflight of the run's bucket, changing nothing: ``{"bucket", "exists", "warnings"}``; an existing
    bucket that is unencrypted or public, or not this account's (``owner``, the account: every call names it as
    the ExpectedBucketOwner, so another account's bucket is refused even when it grants this role access), raises
    BucketRefused, unless it is the one this run (``run_key``) created and has yet to finish configuring."""
    if not _bucket_exists(s3, bucket, owner):
        return {"bucket": bucket, "exists": False, "warnings": []}
    if run_key and _created_by(s3, bucket, owner) == run_key:
        return {"bucket": bucket, "exists": True, "warnings": [], "created_by_this_run": True}
    refusals, warnings = bucket_findings(s3, bucket, owner)
    if refusals:
        raise BucketRefused(
            f"s3://{bucket} is refused: {'; '.join(refusals)}. The run does not reconfigure a "
            "bucket it did not create: fix it, or name a new bucket for the run to create"
        )
    for warning in warnings:
        log.warning("s3://%s: %s", bucket, warning)
    return {"bucket": bucket, "exists": True, "warnings": warnings}


def _bucket_tags(s3: Client, bucket: str, owner: str | None = None) -> dict[str, str]:
    try:
        return tags.as_dict(s3.get_bucket_tagging(Bucket=bucket, **_owned_by(owner))["TagSet"])
    except s3.exceptions.ClientError:  # NoSuchTagSet
        return {}


def _created_by(s3: Client, bucket: str, owner: str | None = None) -> str | None:
    return _bucket_tags(s3, bucket, owner).get(CREATED_BY_RUN)


def tls_only_policy(bucket: str, region: str) -> dict:
    arn = f"arn:{iam.partition_of(region)}:s3:::{bucket}"
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "TlsOnly",
                "Effect": "Deny",
                "Principal": "*",
                "Action": "s3:*",
                "Resource": [arn, f"{arn}/*"],
                "Condition": {"Bool": {"aws:SecureTransport": "false"}},
            }
        ],
    }


def _configure_new_bucket(s3: Client, bucket: str) -> None:
    """A bucket the run created: private, encrypted, versioned, and TLS-only where S3 is reached over HTTPS."""
    s3.put_public_access_block(
        Bucket=bucket,
        PublicAccessBlockConfiguration={
            "BlockPublicAcls": True,
            "IgnorePublicAcls": True,
            "BlockPublicPolicy": True,
            "RestrictPublicBuckets": True,
        },
    )
    s3.put_bucket_encryption(
        Bucket=bucket,
        ServerSideEncryptionConfiguration={
            "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]
        },
    )
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    if urlsplit(s3.meta.endpoint_url).scheme == "https":
        s3.put_bucket_policy(Bucket=bucket, Policy=json.dumps(tls_only_policy(bucket, s3.meta.region_name)))
    else:  # localaws on 127.0.0.1: the policy would deny the run's own plain-HTTP requests, as S3 would
        log.info("s3://%s is reached over plain HTTP (%s): no TLS-only policy", bucket, s3.meta.endpoint_url)


def ensure_bucket(client: Clients, plan: Plan) -> dict:
    """The run's bucket (open_run). Only its ``created-by-run`` tag says the run created it: a bucket the run
    creates is tagged right after its CreateBucket succeeded (with the project too, not with ``run``: it
    outlives runs and no teardown removes it), then configured; TLS only when S3 is reached over HTTPS (always
    on AWS). A retry finds the tag and finishes the configuration. Any other bucket is checked as the
    preflight checks it and left exactly as it is: one there at the preflight, one someone made since (another
    run, a backfill; CreateBucket then answers BucketAlreadyOwnedByYou or BucketAlreadyExists), or one a try
    left untagged between creating and tagging it."""
    s3 = client("s3")
    bucket, key = plan["params"]["bucket"], plan["key"]
    owner = account_of(client)
    if _bucket_exists(s3, bucket, owner):
        made_by = _created_by(s3, bucket, owner)
    else:
        made_by = _create_bucket(s3, bucket, key, owner)
    if made_by != key:
        found = check_bucket(s3, bucket, owner=owner)
        return {"bucket": bucket, "created": False, "warnings": found["warnings"]}
    _configure_new_bucket(s3, bucket)
    return {"bucket": bucket, "created": True, "warnings": []}


def _create_bucket(s3: Client, bucket: str, key: str, owner: str) -> str | None:
    """Creates the bucket and tags it as run ``key``'s; the run that created it (None: not this run)."""
    region = s3.meta.region_name
    kwargs = {"CreateBucketConfiguration": {"LocationConstraint": region}} if region != "us-east-1" else {}
    try:
        s3.create_bucket(Bucket=bucket, **kwargs)
    except s3.exceptions.ClientError as error:
        if _error_code(error) not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
            raise
        log.info("s3://%s was created meanwhile, not by this run (%s)", bucket, _error_code(error))
        return None
    # us-east-1 answers CreateBucket of a bucket the account owns with success: one with tags was there before.
    found = _bucket_tags(s3, bucket, owner)
    if found:
        return found.get(CREATED_BY_RUN)
    s3.put_bucket_tagging(
        Bucket=bucket,
        ExpectedBucketOwner=owner,
        Tagging={"TagSet": [tags.project_tag(), {"Key": CREATED_BY_RUN, "Value": key}]},
    )
    log.info("created s3://%s", bucket)
    return key


# --- the host --------------------------------------------------------------------------------------


def create_instance_profile(client: Clients, plan: Plan) -> dict:
    """The host's role (trust: EC2; inline policy: include/iam/host-instance-policy.json) and its profile."""
    iam_client = client("iam")
    name = role_name(plan["key"])
    values = iam.host_values(client, plan)
    role_tags = tags.plan_tags(plan, "host-role")
    try:
        role = iam_client.get_role(RoleName=name)["Role"]
    except iam_client.exceptions.NoSuchEntityException:
        kwargs = {}
        if os.environ.get(BOUNDARY_ENV):
            kwargs["PermissionsBoundary"] = os.environ[BOUNDARY_ENV]
        role = iam_client.create_role(
            RoleName=name,
            Path=tags.IAM_PATH,
            Tags=role_tags,
            MaxSessionDuration=3600,
            Description=f"ml-pipeline run {plan['key']}: the training host",
            AssumeRolePolicyDocument=json.dumps(iam.render("host-instance-trust.json", **values)),
            **kwargs,
        )["Role"]
    iam_client.put_role_policy(
        RoleName=name, PolicyName="host", PolicyDocument=json.dumps(iam.render("host-instance-policy.json", **values))
    )
    try:
        profile = iam_client.get_instance_profile(InstanceProfileName=name)["InstanceProfile"]
    except iam_client.exceptions.NoSuchEntityException:
        profile = iam_client.create_instance_profile(
            InstanceProfileName=name, Path=tags.IAM_PATH, Tags=tags.plan_tags(plan, "host-profile")
        )["InstanceProfile"]
    if not any(r["RoleName"] == name for r in profile.get("Roles", [])):
        iam_client.add_role_to_instance_profile(InstanceProfileName=name, RoleName=name)
    return {
        "role_name": name,
        "role_arn": role["Arn"],
        "instance_profile_name": name,
        "instance_profile_arn": profile["Arn"],
    }


def create_volume(client: Clients, plan: Plan, availability_zone: str) -> dict:
    """The data volume, in the subnets' zone (the host's)."""
    ec2 = client("ec2")
    volume = find_volume(ec2, plan)
    if volume is None:
        volume = ec2.create_volume(
            AvailabilityZone=availability_zone,
            Size=int(plan["params"].get("data_volume_gb", 100)),
            VolumeType="gp3",
            Encrypted=True,
            TagSpecifications=tags.tag_spec("volume", tags.plan_tags(plan, "data")),
        )
    return {"volume_id": volume["VolumeId"], "availability_zone": volume["AvailabilityZone"]}


def user_data(plan: Plan) -> str:
    values = {"Accelerator": accelerator(plan["params"]["host_instance_type"]), "RunKey": plan["key"]}
    return re.sub(r"\$\{(Accelerator|RunKey)\}", lambda m: values[m.group(1)], USER_DATA.read_text())


def host_request(
    client: Clients, plan: Plan, ami_id: str, subnet_id: str, security_group_id: str, instance_profile_name: str
) -> dict:
    """RunInstances' arguments for the run's host, in its public subnet with its security group and profile."""
    ec2 = client("ec2")
    image = ec2.describe_images(ImageIds=[ami_id])["Images"][0]
    root = image.get("RootDeviceName") or "/dev/sda1"
    # The AMI's root snapshot size (the Deep Learning AMIs need their full size); 100 GiB when not reported.
    root_size = (
        next(
            (
                m["Ebs"].get("VolumeSize")
                for m in image.get("BlockDeviceMappings", [])
                if m.get("DeviceName") == root and m.get("Ebs")
            ),
            None,
        )
        or ROOT_VOLUME_GB
    )
    p = plan["params"]
    request = {
        "ImageId": ami_id,
        "InstanceType": p["host_instance_type"],
        "MinCount": 1,
        "MaxCount": 1,
        "SubnetId": subnet_id,
        "SecurityGroupIds": [security_group_id],
        "IamInstanceProfile": {"Name": instance_profile_name},
        "UserData": user_data(plan),
        "MetadataOptions": {"HttpTokens": "required", "HttpEndpoint": "enabled", "HttpPutResponseHopLimit": 2},
        "BlockDeviceMappings": [
            {
                "DeviceName": root,
                "Ebs": {"Encrypted": True, "VolumeType": "gp3", "VolumeSize": root_size, "DeleteOnTermination": True},
            }
        ],
        "InstanceInitiatedShutdownBehavior": "terminate",
        "TagSpecifications": tags.tag_spec("instance", tags.plan_tags(plan, "host"))
        + tags.tag_spec("volume", tags.plan_tags(plan, "host-root")),
    }
    if p.get("ssh_key_name"):
        request["KeyName"] = p["ssh_key_name"]
    return request


def create_host(
    client: Clients,
    plan: Plan,
    ami_id: str,
    subnet_id: str,
    security_group_id: str,
    instance_profile_name: str,
    profile_wait_seconds: float = 90,
) -> dict:
    """The run's host, launched once: a retry finds it by its tags."""
    ec2 = client("ec2")
    host = find_host(ec2, plan)
    if host is None:
        request = host_request(client, plan, ami_id, subnet_id, security_group_id, instance_profile_name)
        deadline = time.monotonic() + profile_wait_seconds
        while True:
            try:
                host = ec2.run_instances(**request)["Instances"][0]
                break
            except ec2.exceptions.ClientError as error:
                # A new instance profile takes a few seconds to be usable by EC2 (IAM is eventually consistent).
                message = error.response["Error"].get("Message", "")
                if "instance profile" not in message.lower() or time.monotonic() > deadline:
                    raise
                time.sleep(5)
        log.info("launched host %s (%s)", host["InstanceId"], plan["params"]["host_instance_type"])
    return {
        "instance_id": host["InstanceId"],
        "instance_type": host["InstanceType"],
        "availability_zone": host["Placement"]["AvailabilityZone"],
        "ami_id": host["ImageId"],
    }


def attach_volume(client: Clients, plan: Plan, volume_id: str, instance_id: str) -> dict:
    ec2 = client("ec2")
    volume = ec2.describe_volumes(VolumeIds=[volume_id])["Volumes"][0]
    if not any(a["InstanceId"] == instance_id for a in volume.get("Attachments", [])):
        ec2.attach_volume(VolumeId=volume_id, InstanceId=instance_id, Device=DATA_DEVICE)
    return {"volume_id": volume_id, "instance_id": instance_id, "device": DATA_DEVICE}


# --- states the sensors watch ---------------------------------------------------------------------


def resource_state(client: Clients, kind: str, resource_id: str) -> str | None:
    """The state of one resource as AWS reports it (None: not found).

    vpc, subnet: pending | available. internet_gateway: attached | detached. volume: creating |
    available | in-use | ... vpc_endpoint: pending | available | ... instance: pending | running | ...
    instance_profile: ready (its role is in it) | empty.
    """
    ec2 = client("ec2")
    error_codes = ("NotFound", "Malformed")
    try:
        if kind == "vpc":
            return ec2.describe_vpcs(VpcIds=[resource_id])["Vpcs"][0]["State"]
        if kind == "subnet":
            return ec2.describe_subnets(SubnetIds=[resource_id])["Subnets"][0]["State"]
        if kind == "internet_gateway":
            igw = ec2.describe_internet_gateways(InternetGatewayIds=[resource_id])["InternetGateways"][0]
            attached = any(a["State"] in ("available", "attached") for a in igw.get("Attachments", []))
            return "attached" if attached else "detached"
        if kind == "volume":
            return ec2.describe_volumes(VolumeIds=[resource_id])["Volumes"][0]["State"]
        if kind == "vpc_endpoint":
            return ec2.describe_vpc_endpoints(VpcEndpointIds=[resource_id])["VpcEndpoints"][0]["State"].lower()
        if kind == "instance":
            reservations = ec2.describe_instances(InstanceIds=[resource_id])["Reservations"]
            return reservations[0]["Instances"][0]["State"]["Name"]
    except ec2.exceptions.ClientError as error:
        if any(code in error.response["Error"]["Code"] for code in error_codes):
            return None
        raise
    except IndexError:
        return None
    if kind == "instance_profile":
        iam_client = client("iam")
        try:
            profile = iam_client.get_instance_profile(InstanceProfileName=resource_id)["InstanceProfile"]
        except iam_client.exceptions.NoSuchEntityException:
            return None
        return "ready" if profile.get("Roles") else "empty"
    raise ValueError(f"unknown resource kind {kind!r}")


# --- everything in order ----------------------------------------------------------------------------


def run_step(client: Clients, plan: Plan, step: str, pre: dict, made: Mapping[str, dict | None]) -> dict:
    """Runs provisioning ``step`` (``provisioning.STEPS``): ``pre`` is what the preflight found, ``made`` the
    results of earlier steps by name (at least the step's ``needs``), whose ids the step builds on."""
    from ml_pipeline.infra import host_training  # noqa: PLC0415 - no cycle at import

    needs = next(s.needs for s in STEPS if s.name == step)
    missing = [need for need in needs if not made.get(need)]
    if missing:
        raise RuntimeError(f"run {plan['key']}: step {step} builds on {', '.join(missing)}, which returned nothing")
    ids = merged(made[need] for need in needs)
    functions = {
        "vpc": lambda: create_vpc(client, plan),
        "internet_gateway": lambda: create_internet_gateway(client, plan, ids["vpc_id"]),
        "subnets": lambda: create_subnets(client, plan, ids["vpc_id"], pre.get("availability_zone")),
        "route_tables": lambda: create_route_tables(
            client, plan, ids["vpc_id"], ids["internet_gateway_id"], ids["public_subnet_id"], ids["private_subnet_id"]
        ),
        "security_groups": lambda: create_security_groups(client, plan, ids["vpc_id"]),
        "instance_profile": lambda: create_instance_profile(client, plan),
        "volume": lambda: create_volume(client, plan, ids["availability_zone"]),
        "documents": lambda: host_training.ensure_documents(client("ssm"), plan),
        "host": lambda: create_host(
            client,
            plan,
            pre["ami_id"],
            ids["public_subnet_id"],
            ids["host_security_group_id"],
            ids["instance_profile_name"],
        ),
        "attach_volume": lambda: attach_volume(client, plan, ids["volume_id"], ids["instance_id"]),
    }
    return functions[step]()


def provision(client: Clients, plan: Plan, pre: dict, after_step: Callable[[str, dict], object] | None = None) -> dict:
    """Every step the run needs in order, each given the earlier ones' results; ``after_step(name, ids)`` is
    called after each (tests inject failures there). Returns every id, merged."""
    made: dict[str, dict | None] = {}
    for step in steps_for(plan["params"]):
        made[step] = run_step(client, plan, step, pre, made)
        if after_step is not None:
            after_step(step, merged(made.values()))
    return merged(made.values())
