"""The IAM policy documents shipped in include/iam/: valid JSON, valid IAM grammar, least privilege,
and accepted by (moto's) IAM."""

from __future__ import annotations

import json
import re

import pytest

from tests.conftest import REPO_ROOT

IAM_DIR = REPO_ROOT / "include" / "iam"
POLICIES = sorted(p.name for p in IAM_DIR.glob("*.json") if p.name != "wildcard-resources.json")
TRUSTS = [name for name in POLICIES if name.endswith("-trust.json")]
PERMISSIONS = [name for name in POLICIES if not name.endswith("-trust.json")]
VALUES = {
    "Partition": "aws",
    "Region": "us-east-1",
    "Account": "123456789012",
    "Bucket": "ml-pipeline-artifacts",
    "Repository": "wine-training",
    "RunKey": "20260105-abcdef",
    "LogGroup": "/ml-pipeline/host-training",
    "SageMakerRoleName": "SageMakerExecution",
    "EndpointName": "wine-endpoint",
    "ModelPackageGroup": "wine-models",
    "Experiment": "wine",
    "DataPrefix": "wine/datasets/20260105",
    "OutputPrefix": "wine/training-jobs/20260105-abcdef",
    "CheckpointPrefix": "wine/checkpoints/20260105-abcdef",
    "HostBoundaryArn": "arn:aws:iam::123456789012:policy/ml-pipeline-host-boundary",
}
ACTION = re.compile(r"^[a-z0-9-]+:[A-Za-z0-9*]+$")
STATEMENT_KEYS = {
    "Sid",
    "Effect",
    "Principal",
    "NotPrincipal",
    "Action",
    "NotAction",
    "Resource",
    "NotResource",
    "Condition",
}


def rendered(name: str) -> dict:
    from ml_pipeline.infra.iam import render

    return render(name, **VALUES)


def as_list(value) -> list:
    return value if isinstance(value, list) else [value]


def test_every_file_the_code_names_is_shipped_and_every_placeholder_is_known():
    from ml_pipeline.infra.iam import POLICY_FILES, placeholders

    assert set(POLICY_FILES) == set(POLICIES)
    for name in POLICIES:
        assert placeholders(name) <= set(VALUES), name
        text = json.dumps(rendered(name))
        assert "${" not in text, name


@pytest.mark.parametrize("name", POLICIES)
def test_valid_iam_grammar(name):
    document = json.loads((IAM_DIR / name).read_text())  # valid JSON as shipped, placeholders and all
    assert set(document) == {"Version", "Statement"}
    assert document["Version"] == "2012-10-17"
    sids = [s.get("Sid") for s in document["Statement"]]
    assert len(sids) == len(set(sids)), "duplicate Sid"
    for statement in rendered(name)["Statement"]:
        assert set(statement) <= STATEMENT_KEYS, statement
        assert statement["Effect"] in ("Allow", "Deny")
        assert re.match(r"^[A-Za-z0-9]+$", statement["Sid"])
        actions = as_list(statement["Action"])
        assert actions and all(ACTION.match(a) for a in actions), actions
        assert "*" not in actions and not any(a.endswith(":*") for a in actions), "an action wildcard"
        if name.endswith("-trust.json"):
            assert actions == ["sts:AssumeRole"] and "Principal" in statement and "Resource" not in statement
        else:
            assert "Principal" not in statement and statement["Resource"], statement
            for resource in as_list(statement["Resource"]):
                assert resource == "*" or resource.startswith("arn:aws:"), resource


@pytest.mark.parametrize("name", PERMISSIONS)
def test_resource_star_only_for_the_listed_exceptions(name):
    from ml_pipeline.infra.iam import wildcard_exceptions

    allowed = wildcard_exceptions()
    for statement in rendered(name)["Statement"]:
        if statement["Effect"] == "Allow" and "*" in as_list(statement["Resource"]):
            unexplained = [a for a in as_list(statement["Action"]) if a not in allowed]
            assert unexplained == [], f"{name} {statement['Sid']}: Resource * for {unexplained}"


def s3_resources(document: dict, action: str | None = None) -> list[str]:
    return [
        r
        for s in document["Statement"]
        if action is None or action in as_list(s["Action"])
        for r in as_list(s["Resource"])
        if r.startswith("arn:aws:s3:::")
    ]


def test_the_host_reads_and_writes_only_its_experiments_and_runs_prefixes():
    document = rendered("host-instance-policy.json")
    s3 = s3_resources(document)
    assert s3 and all(
        r == "arn:aws:s3:::ml-pipeline-artifacts" or r.startswith("arn:aws:s3:::ml-pipeline-artifacts/wine/")
        for r in s3
    ), s3
    writes = s3_resources(document, "s3:PutObject")
    assert sorted(writes) == [
        "arn:aws:s3:::ml-pipeline-artifacts/wine/checkpoints/20260105-abcdef/*",
        "arn:aws:s3:::ml-pipeline-artifacts/wine/training-jobs/20260105-abcdef/*",
    ]
    assert "arn:aws:s3:::ml-pipeline-artifacts/wine/source/*" in s3_resources(document, "s3:GetObject")
    ecr = [r for s in document["Statement"] for r in as_list(s["Resource"]) if ":ecr:" in r]
    assert ecr[0] == "arn:aws:ecr:us-east-1:123456789012:repository/wine-training"
    assert all(r.endswith(("/pytorch-training", "/pytorch-inference", "/sagemaker-scikit-learn")) for r in ecr[1:])


def test_no_document_names_an_example():
    for path in IAM_DIR.glob("*.json"):
        assert "digits" not in path.read_text(), path.name


def test_the_airflow_and_execution_roles_reach_only_their_experiments():
    for name in ("airflow-policy.json", "sagemaker-execution-policy.json"):
        document = rendered(name)
        objects = [r for r in s3_resources(document) if r != "arn:aws:s3:::ml-pipeline-artifacts"]
        assert objects and all(
            r.startswith(("arn:aws:s3:::ml-pipeline-artifacts/wine/", "arn:aws:s3:::ml-pipeline-artifacts/runs/"))
            for r in objects
        ), objects
    sagemaker = [
        r
        for s in rendered("airflow-policy.json")["Statement"]
        for r in as_list(s["Resource"])
        if ":sagemaker:" in r and ":training-job/" in r
    ]
    assert sagemaker == ["arn:aws:sagemaker:us-east-1:123456789012:training-job/wine-*"]


def test_a_role_for_several_experiments_repeats_each_experiments_grants():
    from ml_pipeline.infra.iam import render

    document = render(
        "airflow-policy.json",
        **{**VALUES, "Experiment": ["wine", "digits"], "Repository": ["wine-training", "digits-training"]},
    )
    jobs = [r for s in document["Statement"] for r in as_list(s["Resource"]) if ":training-job/" in r]
    assert jobs == [
        "arn:aws:sagemaker:us-east-1:123456789012:training-job/wine-*",
        "arn:aws:sagemaker:us-east-1:123456789012:training-job/digits-*",
    ]
    repositories = [r for s in document["Statement"] for r in as_list(s["Resource"]) if ":repository/" in r]
    assert repositories == [
        "arn:aws:ecr:us-east-1:123456789012:repository/wine-training",
        "arn:aws:ecr:us-east-1:123456789012:repository/digits-training",
    ]
    with pytest.raises(ValueError, match="Experiment"):
        render("airflow-policy.json", **{**VALUES, "Experiment": []})


def test_the_command_line_renders_a_list(capsys):
    from ml_pipeline.infra.iam import main

    args = [f"{key}={value}" for key, value in VALUES.items() if key != "Experiment"]
    assert main(["sagemaker-execution-policy.json", *args, "Experiment=wine,beer"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert {"arn:aws:s3:::ml-pipeline-artifacts/wine/*", "arn:aws:s3:::ml-pipeline-artifacts/beer/*"} <= set(
        s3_resources(document, "s3:GetObject")
    )


def test_the_airflow_role_creates_host_roles_only_within_the_boundary():
    document = rendered("airflow-policy.json")
    create = [s for s in document["Statement"] if "iam:CreateRole" in as_list(s["Action"])]
    assert create and all(
        s["Condition"]["StringEquals"]["iam:PermissionsBoundary"] == VALUES["HostBoundaryArn"] for s in create
    )
    deny = [s for s in document["Statement"] if s["Effect"] == "Deny"]
    assert {"iam:DeleteRolePermissionsBoundary", "iam:PutRolePermissionsBoundary"} <= {
        a for s in deny for a in as_list(s["Action"])
    }
    passes = [s for s in document["Statement"] if "iam:PassRole" in as_list(s["Action"])]
    assert all(s["Condition"]["StringEquals"]["iam:PassedToService"] for s in passes)


def test_iam_accepts_every_document(localaws_process):
    """moto's IAM validates policy grammar on CreatePolicy, and trust policies on CreateRole."""
    iam = localaws_process.client("iam")
    suffix = localaws_process.port
    for name in PERMISSIONS:
        policy = iam.create_policy(
            PolicyName=f"test-{suffix}-{name[:-5]}",
            Path="/ml-pipeline-test/",
            PolicyDocument=json.dumps(rendered(name)),
        )["Policy"]
        iam.delete_policy(PolicyArn=policy["Arn"])
    for name in TRUSTS:
        role = f"test-{suffix}-{name[:-5]}"
        iam.create_role(RoleName=role, Path="/ml-pipeline-test/", AssumeRolePolicyDocument=json.dumps(rendered(name)))
        iam.delete_role(RoleName=role)


@pytest.mark.slow
def test_the_host_role_carries_the_rendered_policy(localaws_process):
    from ml_pipeline.infra.stack import create_instance_profile
    from ml_pipeline.infra.teardown import teardown_stack
    from tests.infra.support import plan

    run = plan(compute="host")
    client = localaws_process.client
    ids = create_instance_profile(client, run)
    iam = client("iam")
    stored = iam.get_role_policy(RoleName=ids["role_name"], PolicyName="host")["PolicyDocument"]
    stored = json.loads(stored) if isinstance(stored, str) else stored
    assert any(run["key"] in json.dumps(s) for s in stored["Statement"])
    trust = iam.get_role(RoleName=ids["role_name"])["Role"]["AssumeRolePolicyDocument"]
    assert "ec2.amazonaws.com" in json.dumps(trust)
    teardown_stack(client, run["key"], poll=0.2)
