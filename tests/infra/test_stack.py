"""Provisioning the run's stack on localaws, and teardown leaving nothing behind whatever failed."""

from __future__ import annotations

import pytest

from ml_pipeline.infra.provisioning import STEPS
from tests.infra.support import ZERO, FailingClients, Failure, key_pair, plan

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def aws(localaws_process):
    key_pair(localaws_process.client)  # the tests' ssh_key_name
    return localaws_process.client


def provision(client, run_plan: dict, after_step=None) -> dict:
    from ml_pipeline.infra.params import preflight
    from ml_pipeline.infra.stack import provision as provision_all

    return provision_all(client, run_plan, preflight(client, run_plan), after_step)


def teardown(client, key: str) -> dict:
    from ml_pipeline.infra.teardown import teardown_stack

    return teardown_stack(client, key, poll=0.2, timeout=60)


def remaining(client, key: str) -> dict:
    from ml_pipeline.infra.teardown import remaining as count

    return count(client, key)


@pytest.mark.slow
def test_host_stack_is_provisioned_tagged_locked_down_and_removed(aws):
    from ml_pipeline.infra import stack, tags

    run = plan(
        compute="host",
        host_instance_type="g5.xlarge",
        ssh_key_name="ops",
        allowed_cidrs=["203.0.113.0/24", "2001:db8::/48"],
    )
    ids = provision(aws, run)
    assert provision(aws, run) == ids  # every step finds what it made (the host too): nothing is created twice
    counts = remaining(aws, run["key"])
    assert counts == {
        **ZERO,
        "instances": 1,
        "volumes": 2,
        "security_groups": 1,
        "subnets": 2,
        "route_tables": 2,
        "internet_gateways": 1,
        "vpc_endpoints": 1,
        "vpcs": 1,
        "roles": 1,
        "instance_profiles": 1,
        "ssm_documents": 2,
    }
    ec2 = aws("ec2")

    # The security group: SSH only from the allowed CIDRs, egress HTTPS only; never 0.0.0.0/0 in.
    group = ec2.describe_security_groups(GroupIds=[ids["host_security_group_id"]])["SecurityGroups"][0]
    assert [
        (
            r["IpProtocol"],
            r["FromPort"],
            sorted(x["CidrIp"] for x in r["IpRanges"]),
            sorted(x["CidrIpv6"] for x in r["Ipv6Ranges"]),
        )
        for r in group["IpPermissions"]
    ] == [("tcp", 22, ["203.0.113.0/24"], ["2001:db8::/48"])]
    assert [(r["IpProtocol"], r.get("FromPort")) for r in group["IpPermissionsEgress"]] == [("tcp", 443)]

    # Subnets in one zone; the public route table's default route through the gateway.
    subnets = ec2.describe_subnets(SubnetIds=[ids["public_subnet_id"], ids["private_subnet_id"]])["Subnets"]
    assert {s["AvailabilityZone"] for s in subnets} == {ids["availability_zone"]}
    public = ec2.describe_route_tables(RouteTableIds=[ids["public_route_table_id"]])["RouteTables"][0]
    assert {"0.0.0.0/0": ids["internet_gateway_id"]}.items() <= {
        r.get("DestinationCidrBlock"): r.get("GatewayId") for r in public["Routes"]
    }.items()
    private = ec2.describe_route_tables(RouteTableIds=[ids["private_route_table_id"]])["RouteTables"][0]
    assert not any(r.get("DestinationCidrBlock") == "0.0.0.0/0" for r in private["Routes"])

    # The host: the AMI, IMDSv2 only, the instance profile, the encrypted data volume attached.
    host = ec2.describe_instances(InstanceIds=[ids["instance_id"]])["Reservations"][0]["Instances"][0]
    assert host["InstanceType"] == "g5.xlarge" and host["ImageId"] == ids["ami_id"]
    assert host["MetadataOptions"]["HttpTokens"] == "required"
    assert host["IamInstanceProfile"]["Arn"] == ids["instance_profile_arn"]
    volume = ec2.describe_volumes(VolumeIds=[ids["volume_id"]])["Volumes"][0]
    assert volume["Encrypted"] and volume["State"] == "in-use"
    assert volume["Attachments"][0]["InstanceId"] == ids["instance_id"]
    user_data = ec2.describe_instance_attribute(InstanceId=ids["instance_id"], Attribute="userData")
    assert user_data["UserData"]["Value"]  # base64 of include/host/user-data.sh
    assert "nvidia-smi" in stack.user_data(run) and "${" not in stack.user_data(run).split("\n", 4)[3]

    # Every resource carries the project, the run, its creation time and its TTL.
    for resource_tags in ([t for t in host["Tags"]], volume["Tags"], group["Tags"], subnets[0]["Tags"]):
        found = tags.as_dict(resource_tags)
        assert found["project"] == "ml-pipeline" and found["run"] == run["key"]
        assert found["created-at"] and float(found["ttl-hours"]) == run["params"]["stack_ttl_hours"]

    # The sensors' view of each resource.
    assert stack.resource_state(aws, "vpc", ids["vpc_id"]) == "available"
    assert stack.resource_state(aws, "internet_gateway", ids["internet_gateway_id"]) == "attached"
    assert stack.resource_state(aws, "volume", ids["volume_id"]) == "in-use"
    assert stack.resource_state(aws, "instance", ids["instance_id"]) == "running"
    assert stack.resource_state(aws, "instance_profile", ids["instance_profile_name"]) == "ready"

    report = teardown(aws, run["key"])
    assert report["errors"] == [] and report["removed"]["instance"] == [ids["instance_id"]]
    assert remaining(aws, run["key"]) == ZERO
    assert teardown(aws, run["key"])["removed"] == {}  # idempotent


def test_sagemaker_in_the_vpc_gets_a_network_and_no_host(aws):
    from ml_pipeline.infra.stack import vpc_config

    run = plan(compute="sagemaker", provision_vpc=True)
    ids = provision(aws, run)
    assert "instance_id" not in ids and "role_name" not in ids
    config = vpc_config(ids)  # from the ids provisioning returned, not looked up again
    assert config == {"SecurityGroupIds": [ids["sagemaker_security_group_id"]], "Subnets": [ids["private_subnet_id"]]}
    group = aws("ec2").describe_security_groups(GroupIds=[ids["sagemaker_security_group_id"]])["SecurityGroups"][0]
    # Ingress only from the group itself (the job's hosts talk to each other); no CIDR at all.
    assert [[p["GroupId"] for p in r["UserIdGroupPairs"]] for r in group["IpPermissions"]] == [[group["GroupId"]]]
    assert all(not r["IpRanges"] and not r.get("Ipv6Ranges") for r in group["IpPermissions"])
    assert remaining(aws, run["key"])["instances"] == 0
    teardown(aws, run["key"])
    assert remaining(aws, run["key"]) == ZERO


def test_no_provisioning_with_compute_sagemaker_alone():
    from ml_pipeline.infra.provisioning import steps_for

    assert steps_for(plan(compute="sagemaker")["params"]) == []


def test_a_step_is_given_the_ids_it_builds_on_and_refuses_to_run_without_them():
    """A step builds on what the earlier steps returned (the DAG passes their XComs), never on a lookup of
    their resources by tags: without them it refuses before any call to AWS."""
    from ml_pipeline.infra import stack

    run = plan(compute="host")
    with pytest.raises(RuntimeError, match="step route_tables builds on internet_gateway, subnets"):
        stack.run_step(None, run, "route_tables", {}, {"vpc": {"vpc_id": "vpc-1"}})
    with pytest.raises(RuntimeError, match="step host builds on subnets, security_groups, instance_profile"):
        stack.run_step(None, run, "host", {"ami_id": "ami-1"}, {"subnets": None})


@pytest.mark.slow
@pytest.mark.parametrize("failing_step", [step.name for step in STEPS])
def test_a_failure_after_any_step_still_tears_down_to_zero(aws, failing_step):
    run = plan(compute="host", host_instance_type="dl1.24xlarge")

    def fail_after(step, ids):
        if step == failing_step:
            raise Failure(f"after {step}")

    with pytest.raises(Failure):
        provision(aws, run, after_step=fail_after)
    assert sum(remaining(aws, run["key"]).values()) > 0
    teardown(aws, run["key"])
    assert remaining(aws, run["key"]) == ZERO


@pytest.mark.slow
@pytest.mark.parametrize(
    "operation",
    [
        "modify_vpc_attribute",  # a VPC without its DNS settings
        "attach_internet_gateway",  # a gateway never attached
        "create_route",  # a route table with no route
        "associate_route_table",  # a table associated with one subnet of two
        "authorize_security_group_egress",  # a group whose default egress was revoked, nothing authorised
        "put_role_policy",  # a role without its policy
        "add_role_to_instance_profile",  # a profile without its role
        "attach_volume",  # a host whose volume was never attached
    ],
)
def test_a_half_created_resource_is_removed_too(aws, operation):
    run = plan(compute="host", host_instance_type="g6.xlarge", ssh_key_name="ops")
    with pytest.raises(Failure):
        provision(FailingClients(aws, operation), run)
    teardown(aws, run["key"])
    assert remaining(aws, run["key"]) == ZERO


@pytest.mark.slow
def test_teardown_sweeps_the_runs_vpc_but_reports_what_it_must_not_remove(aws):
    """Inside the run's VPC, network pieces go tagged or not (they would keep the VPC alive). An instance
    the run did not launch is never terminated: teardown reports it and raises, after removing the rest."""
    from ml_pipeline.infra.teardown import TeardownIncomplete, teardown_stack

    run = plan(compute="sagemaker", provision_vpc=True)
    ids = provision(aws, run)
    ec2 = aws("ec2")
    other_group = ec2.create_security_group(GroupName="untagged", Description="untagged", VpcId=ids["vpc_id"])
    report = teardown_stack(aws, run["key"], poll=0.1, timeout=2)
    assert other_group["GroupId"] in report["removed"]["security group"]
    assert remaining(aws, run["key"]) == ZERO

    run = plan(compute="sagemaker", provision_vpc=True)
    ids = provision(aws, run)
    image = ec2.describe_images(Owners=["amazon"], MaxResults=5)["Images"][0]["ImageId"]
    stranger = ec2.run_instances(
        ImageId=image, InstanceType="t3.micro", MinCount=1, MaxCount=1, SubnetId=ids["private_subnet_id"]
    )["Instances"][0]["InstanceId"]
    with pytest.raises(TeardownIncomplete) as raised:
        teardown_stack(aws, run["key"], poll=0.1, timeout=1)
    assert any(ids["private_subnet_id"] in error for error in raised.value.report["errors"])
    state = ec2.describe_instances(InstanceIds=[stranger])["Reservations"][0]["Instances"][0]["State"]["Name"]
    assert state == "running"
    ec2.terminate_instances(InstanceIds=[stranger])
    teardown(aws, run["key"])  # the retry finishes the job
    assert remaining(aws, run["key"]) == ZERO


def test_the_project_bucket_is_encrypted_versioned_and_private(aws):
    from ml_pipeline.infra.stack import ensure_bucket
    from tests.conftest import unique

    run = plan(compute="host", bucket=unique("infra-bucket"))
    bucket = ensure_bucket(aws, run)["bucket"]
    assert ensure_bucket(aws, run) == {"bucket": bucket, "created": True, "warnings": []}  # idempotent
    s3 = aws("s3")
    rules = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"]
    assert rules[0]["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"
    assert all(s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"].values())
    assert {"Key": "project", "Value": "ml-pipeline"} in s3.get_bucket_tagging(Bucket=bucket)["TagSet"]


def test_the_tls_only_policy_refuses_plain_http_so_it_goes_only_on_a_bucket_reached_over_tls(aws):
    """S3 (and moto) apply a bucket policy's Deny to object requests: over localaws's plain HTTP the TLS-only
    policy refuses the run's own writes, which is why ensure_bucket puts it only behind an https endpoint."""
    import json

    from ml_pipeline.infra.stack import tls_only_policy
    from tests.conftest import unique

    s3 = aws("s3")
    bucket = unique("tls-only")
    s3.create_bucket(Bucket=bucket)
    policy = tls_only_policy(bucket, "us-east-1")
    assert policy["Statement"][0]["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    assert policy["Statement"][0]["Resource"] == [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"]
    s3.put_bucket_policy(Bucket=bucket, Policy=json.dumps(policy))
    with pytest.raises(s3.exceptions.ClientError, match="403|Forbidden|AccessDenied"):
        s3.put_object(Bucket=bucket, Key="probe", Body=b"x")
    assert tls_only_policy(bucket, "cn-north-1")["Statement"][0]["Resource"][0] == f"arn:aws-cn:s3:::{bucket}"


@pytest.mark.parametrize("operation", ["put_public_access_block", "put_bucket_encryption", "put_bucket_versioning"])
def test_a_bucket_half_configured_by_its_run_is_finished_by_the_retry(aws, operation):
    """open_run failing after it created and tagged the bucket: its retry finishes configuring it, and a
    preflight run again (a cleared task) recognises it by its created-by-run tag; the bucket is not mistaken
    for someone else's and refused."""
    from ml_pipeline.infra.stack import check_bucket, ensure_bucket
    from tests.conftest import unique

    run = plan(bucket=unique("half-bucket"))
    s3, bucket = aws("s3"), run["params"]["bucket"]
    assert check_bucket(s3, bucket, run["key"])["exists"] is False
    with pytest.raises(Failure):
        ensure_bucket(FailingClients(aws, operation, after=False), run)
    assert check_bucket(s3, bucket, run["key"])["created_by_this_run"] is True
    assert ensure_bucket(aws, run)["created"] is True
    assert check_bucket(s3, bucket)["exists"] is True  # fit for any later run: encrypted and private


def test_a_bucket_left_untagged_by_a_failed_try_is_not_taken_for_the_runs(aws):
    """Only the created-by-run tag says the run made a bucket: one a try created and could not tag could be
    anyone's (a bucket made between the preflight and open_run is the same to S3), so the retry checks it
    and changes nothing (moto's new bucket is unencrypted: refused)."""
    from ml_pipeline.infra.stack import BucketRefused, ensure_bucket
    from tests.conftest import unique

    run = plan(bucket=unique("untagged"))
    with pytest.raises(Failure):
        ensure_bucket(FailingClients(aws, "put_bucket_tagging", after=False), run)
    with pytest.raises(BucketRefused, match="no default encryption"):
        ensure_bucket(aws, run)
    with pytest.raises(aws("s3").exceptions.ClientError):  # left as it is: no Block Public Access put on it
        aws("s3").get_public_access_block(Bucket=run["params"]["bucket"])
