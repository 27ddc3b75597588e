"""Bad input is refused before anything is created: an open CIDR, an unknown instance type, a missing AMI."""

from __future__ import annotations

import pytest

from tests.infra.support import ZERO, key_pair, params, plan

pytestmark = pytest.mark.timeout(300)


def start(client, **overrides) -> dict:
    """What the DAG does first: the plan (``make_plan`` runs validate_infra, no AWS call), the preflight
    (the AMI, the zone), and only then provisioning."""
    from ml_pipeline.infra.params import preflight
    from ml_pipeline.infra.stack import provision

    run = plan(**overrides)
    started.append(run)
    return provision(client, run, preflight(client, run))


started: list[dict] = []


def vpc_count(client) -> int:
    return len(client("ec2").describe_vpcs()["Vpcs"])


@pytest.mark.slow
@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"allowed_cidrs": ["0.0.0.0/0"]}, "whole internet"),
        ({"allowed_cidrs": ["203.0.113.0/24", "::/0"]}, "whole internet"),
        ({"host_instance_type": "g7x.hyper"}, "is not an EC2 instance type"),
        ({"host_instance_type": "p3.2xlarge"}, "not a type the Deep Learning AMIs support"),
        ({"allowed_cidrs": ["::ffff:0.0.0.0/96"]}, "covers every IPv4 address"),
        ({"ami_id": "ami-0123456789abcdef0"}, "does not exist"),
        ({"ami_ssm_parameter": "/aws/service/deeplearning/ami/x86_64/no-such-ami/latest/ami-id"}, "does not exist"),
        # What only AWS can tell: a zone of another region, a key pair that does not exist.
        ({"availability_zone": "eu-west-1a"}, "eu-west-1a is not an available zone of us-east-1"),
        ({"ssh_key_name": "nobodys-key"}, "no EC2 key pair 'nobodys-key'"),
    ],
)
def test_refused_before_anything_is_created(localaws_process, overrides, message):
    from ml_pipeline.infra.teardown import remaining

    client = localaws_process.client
    started.clear()
    before = vpc_count(client)
    with pytest.raises(ValueError, match=message):
        start(client, **{"compute": "host", "ssh_key_name": key_pair(client), **overrides})
    for run in started:  # refused by the preflight: the plan exists, nothing of it was created
        assert remaining(client, run["key"]) == ZERO
    assert vpc_count(client) == before


def test_a_zone_of_another_region_is_refused_for_sagemaker_in_the_runs_vpc(localaws_process):
    client = localaws_process.client
    started.clear()
    before = vpc_count(client)
    with pytest.raises(ValueError, match="eu-west-1a is not an available zone of us-east-1"):
        start(client, compute="sagemaker", provision_vpc=True, availability_zone="eu-west-1a")
    assert remaining_of(client, started) == [ZERO] and vpc_count(client) == before


def remaining_of(client, runs: list[dict]) -> list[dict]:
    from ml_pipeline.infra.teardown import remaining

    return [remaining(client, run["key"]) for run in runs]


def test_the_deep_learning_amis_are_found_from_their_public_parameters(localaws_process):
    from ml_pipeline.infra.params import DEFAULT_AMI_PARAMETERS, check_ami

    ssm, ec2 = localaws_process.client("ssm"), localaws_process.client("ec2")
    found = {t: check_ami(ssm, ec2, params(host_instance_type=t)) for t in ("g5.xlarge", "dl1.24xlarge")}
    assert found["g5.xlarge"] != found["dl1.24xlarge"]
    for instance_type, accelerator in (("g5.xlarge", "nvidia"), ("dl1.24xlarge", "habana")):
        value = ssm.get_parameter(Name=DEFAULT_AMI_PARAMETERS[accelerator])["Parameter"]["Value"]
        assert found[instance_type] == value
        image = ec2.describe_images(ImageIds=[value])["Images"][0]
        assert ("Habana" in image["Name"]) == (accelerator == "habana")
    # An AMI id given explicitly wins, when it exists.
    assert (
        check_ami(ssm, ec2, params(ami_id=found["g5.xlarge"], host_instance_type="dl1.24xlarge")) == found["g5.xlarge"]
    )


def test_a_type_not_offered_in_the_zone_is_refused(localaws_process):
    from ml_pipeline.infra.params import choose_availability_zone

    ec2 = localaws_process.client("ec2")
    assert choose_availability_zone(ec2, params(host_instance_type="dl1.24xlarge")) == "us-east-1a"
    with pytest.raises(ValueError, match="not offered in us-east-1f"):
        choose_availability_zone(ec2, params(host_instance_type="dl1.24xlarge", availability_zone="us-east-1f"))


def test_what_the_plan_accepts_ec2_accepts_and_what_ec2_refuses_the_plan_refuses(localaws_process):
    """allowed_cidrs against a real security group rule (moto's EC2 checks CIDR syntax and duplicates as AWS
    does): everything cidr_errors lets through is accepted; the forms EC2 refuses never reach it."""
    from ml_pipeline.infra.params import cidr_errors
    from ml_pipeline.infra.stack import ssh_ingress

    ec2 = localaws_process.client("ec2")
    vpc = ec2.create_vpc(CidrBlock="10.9.0.0/16", AmazonProvidedIpv6CidrBlock=True)["Vpc"]["VpcId"]
    group = ec2.create_security_group(GroupName="cidr-fidelity", Description="test", VpcId=vpc)["GroupId"]
    try:
        accepted = [
            "203.0.113.0/24",
            "2001:db8::/48",
            "::ffff:a00:0/104",
            "64:ff9b::cb00:7100/120",
            "2002:cb00:7100::/40",
        ]
        assert cidr_errors(accepted) == []
        ec2.authorize_security_group_ingress(GroupId=group, IpPermissions=ssh_ingress(accepted))
        rule = ec2.describe_security_groups(GroupIds=[group])["SecurityGroups"][0]["IpPermissions"][0]
        assert sorted([r["CidrIp"] for r in rule["IpRanges"]] + [r["CidrIpv6"] for r in rule["Ipv6Ranges"]]) == sorted(
            accepted
        )
        for refused in (["::ffff:203.0.113.0/120"], ["198.51.100.0/24", "198.51.100.0/24"]):
            assert cidr_errors(refused)
            with pytest.raises(ec2.exceptions.ClientError):
                v4 = [{"CidrIp": c} for c in refused if ":" not in c]
                v6 = [{"CidrIpv6": c} for c in refused if ":" in c]
                ec2.authorize_security_group_ingress(
                    GroupId=group,
                    IpPermissions=[
                        {"IpProtocol": "tcp", "FromPort": 2222, "ToPort": 2222, "IpRanges": v4, "Ipv6Ranges": v6}
                    ],
                )
    finally:
        ec2.delete_security_group(GroupId=group)
        ec2.delete_vpc(VpcId=vpc)
