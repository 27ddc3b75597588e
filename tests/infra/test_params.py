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


@pytest.mark.parametrize("cidrs, fragment", [
    (["0.0.0.0/0"], "whole internet"),
    (["203.0.113.0/24", "::/0"], "whole internet"),
    (["0.0.0.0/1", "128.0.0.0/1"], "broader than /8"),
    (["10.0.0.1/24"], "not a network CIDR"),
    (["not-a-cidr"], "not a network CIDR"),
])
def test_open_or_malformed_cidrs_are_refused(cidrs, fragment):
    found = errors(compute="host", allowed_cidrs=cidrs)
    assert found and any(fragment in e for e in found), found


@pytest.mark.parametrize("instance_type, fragment", [
    ("g9.colossal", "is not an EC2 instance type"),  # botocore's model, not moto's catalogue
    ("t3.micro", "is not a supported GPU or DL1 type"),
])
def test_unknown_or_unsupported_instance_types_are_refused(instance_type, fragment):
    found = errors(compute="host", host_instance_type=instance_type)
    assert any(fragment in e for e in found), found


def test_every_supported_type_is_known_to_botocore_and_has_an_accelerator():
    from ml_pipeline.infra.params import HOST_INSTANCE_TYPES, _instance_types

    assert set(HOST_INSTANCE_TYPES) <= _instance_types()
    assert HOST_INSTANCE_TYPES["dl1.24xlarge"] == "habana"
    assert {HOST_INSTANCE_TYPES[t] for t in HOST_INSTANCE_TYPES if t != "dl1.24xlarge"} == {"nvidia"}


@pytest.mark.parametrize("overrides, fragment", [
    ({"mode": "tune"}, "tune mode runs on SageMaker only"),
    ({"instance_count": 2}, "instance_count must be 1"),
    ({"use_spot": True}, "not with compute=host"),
    ({"vpc_cidr": "8.8.0.0/16"}, "not a private"),
    ({"vpc_cidr": "10.0.0.0/8"}, "from /16 to /24"),
    ({"ami_id": "ubuntu"}, "not an AMI id"),
])
def test_cross_field_rules(overrides, fragment):
    found = errors(compute="host", **overrides)
    assert any(fragment in e for e in found), found


def test_the_param_schemas_refuse_what_the_trigger_form_must_refuse():
    from airflow.sdk.definitions.param import ParamsDict

    from ml_pipeline.infra.params import infra_params

    for bad in ({"allowed_cidrs": ["0.0.0.0/0"]}, {"allowed_cidrs": ["::/0"]}, {"compute": "laptop"},
                {"host_instance_type": "t3.micro"}, {"ami_id": "ami-XYZ"}, {"stack_ttl_hours": 0}):
        values = ParamsDict(copy.deepcopy(infra_params()))
        with pytest.raises(Exception):
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
