"""The infrastructure's Params and the refusals that need no AWS call."""

from __future__ import annotations

import copy

import pytest

from tests.infra.support import params


def errors(**overrides) -> list[str]:
    from ml_pipeline.infra.params import validate_infra

    return validate_infra(params(**overrides))


def test_the_defaults_are_accepted():
    assert errors() == []
    assert errors(compute="host") == []
    assert errors(compute="sagemaker", provision_vpc=True) == []


@pytest.mark.parametrize(
    "cidrs, fragment",
    [
        (["0.0.0.0/0"], "whole internet"),
        (["203.0.113.0/24", "::/0"], "whole internet"),
        (["0.0.0.0/1", "128.0.0.0/1"], "broader than /8"),
        (["10.0.0.1/24"], "not a network CIDR"),
        (["not-a-cidr"], "not a network CIDR"),
        # IPv6 ranges that carry IPv4 addresses, judged by the IPv4 space they cover
        (["::ffff:0.0.0.0/96"], "(IPv4-mapped) covers every IPv4 address"),
        (["::ffff:0:0/96"], "(IPv4-mapped) covers every IPv4 address"),
        (["::ffff:a00:0/103"], "covers an IPv4 range of /7"),
        (["::ffff:0:0:0/96"], "(IPv4-translated) covers every IPv4 address"),
        (["::/96"], "(IPv4-compatible) covers every IPv4 address"),
        (["::/64"], "covers every IPv4 address"),  # contains the IPv4-mapped range
        (["64:ff9b::/96"], "(NAT64) covers every IPv4 address"),
        (["64:ff9b:1::/64"], "(local-use NAT64) covers every IPv4 address"),
        (["2001::/32"], "(Teredo) covers every IPv4 address"),
        (["2002::/16"], "broader than /32"),  # 6to4: refused as IPv6 already
        # what EC2 would refuse
        (["::ffff:10.0.0.0/104"], "hexadecimal notation"),
        (["fe80::%eth0/64"], "hexadecimal notation"),
        (["2001:db8::/48", "2001:DB8::/48"], "is the same range as 2001:db8::/48"),
    ],
)
def test_open_or_malformed_cidrs_are_refused(cidrs, fragment):
    found = errors(compute="host", allowed_cidrs=cidrs)
    assert found and any(fragment in e for e in found), found


@pytest.mark.parametrize(
    "cidr",
    [
        "203.0.113.0/24",
        "10.0.0.0/8",
        "2001:db8::/48",
        "::ffff:a00:0/104",
        "64:ff9b::cb00:7100/120",
        "2002:cb00:7100::/40",
        "64:ff9b:1::/104",
    ],
)
def test_ranges_within_the_limits_are_accepted(cidr):
    assert errors(compute="host", allowed_cidrs=[cidr]) == []


@pytest.mark.parametrize(
    "instance_type, fragment",
    [
        ("g9.colossal", "is not an EC2 instance type"),  # botocore's model, not moto's catalogue
        ("t3.micro", "is not a type the Deep Learning AMIs support"),
        ("p3.2xlarge", "is not a type the Deep Learning AMIs support"),  # no longer in the DLAMI's release notes
        ("p3dn.24xlarge", "is not a type the Deep Learning AMIs support"),
        ("g5g.xlarge", "is not a type the Deep Learning AMIs support"),  # ARM: not the x86_64 AMI's
    ],
)
def test_unknown_or_unsupported_instance_types_are_refused(instance_type, fragment):
    found = errors(compute="host", host_instance_type=instance_type)
    assert any(fragment in e for e in found), found


@pytest.mark.parametrize(
    "instance_type",
    [
        "g4dn.xlarge",
        "g5.12xlarge",
        "g6.xlarge",
        "gr6.4xlarge",
        "g6e.xlarge",
        "g7.2xlarge",
        "p4d.24xlarge",
        "p4de.24xlarge",
        "p5.4xlarge",
        "p5e.48xlarge",
        "p5en.48xlarge",
        "p6-b200.48xlarge",
        "dl1.24xlarge",
    ],
)
def test_the_types_the_deep_learning_amis_support_are_accepted(instance_type):
    assert errors(compute="host", host_instance_type=instance_type) == []


def test_every_supported_family_is_known_to_botocore_and_has_an_accelerator():
    from ml_pipeline.infra.params import HOST_EXAMPLES, HOST_FAMILIES, _instance_types, accelerator, host_family

    known = _instance_types()
    assert {host_family(t) for t in known} >= set(HOST_FAMILIES)
    assert set(HOST_EXAMPLES) <= known and {host_family(t) for t in HOST_EXAMPLES} == set(HOST_FAMILIES)
    assert accelerator("dl1.24xlarge") == "habana"
    assert {accelerator(t) for t in HOST_EXAMPLES if t != "dl1.24xlarge"} == {"nvidia"}


@pytest.mark.parametrize(
    "overrides, fragment",
    [
        ({"mode": "tune"}, "tune mode runs on SageMaker only"),
        ({"instance_count": 2}, "instance_count must be 1"),
        ({"use_spot": True}, "not with compute=host"),
        ({"vpc_cidr": "8.8.0.0/16"}, "not a private"),
        ({"vpc_cidr": "10.0.0.0/8"}, "from /16 to /24"),
        ({"ami_id": "ubuntu"}, "not an AMI id"),
    ],
)
def test_cross_field_rules(overrides, fragment):
    found = errors(compute="host", **overrides)
    assert any(fragment in e for e in found), found


def test_the_param_schemas_refuse_what_the_trigger_form_must_refuse():
    from airflow.sdk.definitions.param import ParamsDict
    from airflow.sdk.exceptions import ParamValidationError

    from ml_pipeline.infra.params import infra_params

    for bad in (
        {"allowed_cidrs": ["0.0.0.0/0"]},
        {"allowed_cidrs": ["::/0"]},
        {"compute": "laptop"},
        {"host_instance_type": "t3.micro"},
        {"host_instance_type": "p3.2xlarge"},
        {"ami_id": "ami-XYZ"},
        {"stack_ttl_hours": 0},
        {"stack_ttl_hours": float("nan")},
        {"stack_ttl_hours": float("inf")},
        {"allowed_cidrs": ["203.0.113.0/24", "203.0.113.0/24"]},
    ):
        values = ParamsDict(copy.deepcopy(infra_params()))
        with pytest.raises(ParamValidationError):
            for key, value in bad.items():
                values[key] = value
            values.validate()
    for name, param in infra_params().items():
        assert param.schema.get("description") or param.schema.get("title"), name
        assert "type" in param.schema or "enum" in param.schema, name


def test_localaws_seeds_the_parameters_the_plugin_looks_up():
    from localaws.ssm.seed import DLAMI_PARAMETERS
    from ml_pipeline.infra.params import DEFAULT_AMI_PARAMETERS

    assert set(DEFAULT_AMI_PARAMETERS.values()) == set(DLAMI_PARAMETERS)


def test_localaws_recognises_the_plugins_documents():
    from localaws.ssm import documents
    from ml_pipeline.infra import host_training

    assert documents.TRAINING_PREFIX == host_training.TRAINING_DOCUMENT
    assert documents.CHECK_PREFIX == host_training.CHECK_DOCUMENT
    assert documents.kind_of("MLPipeline-TrainContainer-20260105-abcdef") == "training"
    assert documents.kind_of("MLPipeline-HostCheck-20260105-abcdef") == "check"
    assert documents.kind_of("AWS-RunShellScript") is None


def test_an_endpoint_kept_cannot_live_in_the_runs_vpc():
    found = errors(compute="sagemaker", provision_vpc=True, keep_endpoint=True)
    assert any("outlive the run's VPC" in e for e in found), found
