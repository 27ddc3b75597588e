"""The run's bucket, through the DAG's own preflight and open_run tasks against localaws: a bucket the run did
not create is checked and left exactly as it was (refused when unencrypted or public); a missing one is
created hardened."""

from __future__ import annotations

import json

import pytest

from tests.conftest import unique
from tests.infra.support import plan
from tests.support import localaws_connection

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def pipeline():
    from ml_pipeline.pipeline_dag import build_dag
    from tests.dags.experiment_support import plain

    return build_dag(plain())


@pytest.fixture
def tasks(pipeline, localaws_process, monkeypatch):
    """The DAG's preflight and open_run callables, with the DAG's AWS connection pointing at localaws."""
    from ml_pipeline import aws

    monkeypatch.setenv(
        "AIRFLOW_CONN_AWS_DEFAULT",
        localaws_connection(localaws_process.endpoint_url),
    )
    aws.client.cache_clear()  # a task process reads its connection once: here, each test is one
    aws.hook.cache_clear()
    return {name: pipeline.get_task(name).python_callable for name in ("preflight", "open_run")}


def snapshot(s3, bucket: str) -> dict:
    """Everything about the bucket's configuration a run could change."""
    found = {}
    for name, call, key in (
        ("encryption", s3.get_bucket_encryption, "ServerSideEncryptionConfiguration"),
        ("public_access_block", s3.get_public_access_block, "PublicAccessBlockConfiguration"),
        ("policy", s3.get_bucket_policy, "Policy"),
        ("tags", s3.get_bucket_tagging, "TagSet"),
        ("acl", s3.get_bucket_acl, "Grants"),
        ("versioning", s3.get_bucket_versioning, "Status"),
    ):
        try:
            found[name] = call(Bucket=bucket).get(key)
        except s3.exceptions.ClientError as error:
            found[name] = error.response["Error"]["Code"]
    return found


@pytest.mark.slow
def test_an_existing_sse_kms_bucket_is_used_and_left_untouched(tasks, localaws_process):
    s3, kms = localaws_process.client("s3"), localaws_process.client("kms")
    bucket = unique("users-kms")
    key = kms.create_key(Description="the user's own key")["KeyMetadata"]["Arn"]
    s3.create_bucket(Bucket=bucket)
    s3.put_bucket_encryption(
        Bucket=bucket,
        ServerSideEncryptionConfiguration={
            "Rules": [
                {
                    "ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": key},
                    "BucketKeyEnabled": True,
                }
            ]
        },
    )
    s3.put_public_access_block(
        Bucket=bucket,
        PublicAccessBlockConfiguration={
            "BlockPublicAcls": True,
            "IgnorePublicAcls": True,
            "BlockPublicPolicy": True,
            "RestrictPublicBuckets": True,
        },
    )
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Suspended"})
    s3.put_bucket_policy(
        Bucket=bucket,
        Policy=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Sid": "TeamReads",
                        "Effect": "Allow",
                        "Principal": {"AWS": "arn:aws:iam::123456789012:role/team"},
                        "Action": "s3:GetObject",
                        "Resource": f"arn:aws:s3:::{bucket}/*",
                    }
                ],
            }
        ),
    )
    s3.put_bucket_tagging(Bucket=bucket, Tagging={"TagSet": [{"Key": "owner", "Value": "data-team"}]})
    before = snapshot(s3, bucket)

    run = plan(bucket=bucket)
    pre = tasks["preflight"](run)
    assert pre["bucket"]["exists"] is True
    assert any("versioning" in warning for warning in pre["bucket"]["warnings"])  # said, not changed
    opened = tasks["open_run"](run, pre)
    assert opened["bucket"] == bucket and opened["created"] is False
    after = snapshot(s3, bucket)
    assert after == before
    assert after["encryption"]["Rules"][0]["ApplyServerSideEncryptionByDefault"] == {
        "SSEAlgorithm": "aws:kms",
        "KMSMasterKeyID": key,
    }


def private_encrypted(s3, bucket: str) -> None:
    s3.create_bucket(Bucket=bucket)
    s3.put_bucket_encryption(
        Bucket=bucket,
        ServerSideEncryptionConfiguration={
            "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]
        },
    )
    s3.put_public_access_block(
        Bucket=bucket,
        PublicAccessBlockConfiguration={
            "BlockPublicAcls": True,
            "IgnorePublicAcls": True,
            "BlockPublicPolicy": True,
            "RestrictPublicBuckets": True,
        },
    )


def no_block(s3, bucket):
    s3.delete_public_access_block(Bucket=bucket)


def public_policy(s3, bucket):
    s3.put_public_access_block(
        Bucket=bucket,
        PublicAccessBlockConfiguration={
            "BlockPublicAcls": True,
            "IgnorePublicAcls": True,
            "BlockPublicPolicy": False,
            "RestrictPublicBuckets": False,
        },
    )
    s3.put_bucket_policy(
        Bucket=bucket,
        Policy=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Principal": "*",
                        "Action": "s3:GetObject",
                        "Resource": f"arn:aws:s3:::{bucket}/*",
                    }
                ],
            }
        ),
    )


def public_acl(s3, bucket):
    s3.delete_public_access_block(Bucket=bucket)
    s3.put_bucket_acl(Bucket=bucket, ACL="public-read")


def unencrypted(s3, bucket):
    s3.delete_bucket_encryption(Bucket=bucket)


@pytest.mark.parametrize(
    "expose, reason",
    [
        (public_policy, "bucket policy makes it public"),
        (public_acl, "ACL grants READ to everyone"),
        (unencrypted, "no default encryption"),
    ],
    ids=["public-policy", "public-acl", "unencrypted"],
)
def test_a_public_or_unencrypted_bucket_is_refused_and_left_as_it_is(tasks, localaws_process, expose, reason):
    from ml_pipeline.infra.stack import BucketRefused

    s3 = localaws_process.client("s3")
    bucket = unique("users-open")
    private_encrypted(s3, bucket)
    run = plan(bucket=bucket)
    fit = tasks["preflight"](run)
    expose(s3, bucket)
    before = snapshot(s3, bucket)
    with pytest.raises(BucketRefused, match=reason):
        tasks["preflight"](run)
    with pytest.raises(BucketRefused, match=reason):  # exposed after a preflight that found it fit
        tasks["open_run"](run, fit)
    assert snapshot(s3, bucket) == before


def test_a_private_bucket_without_block_public_access_is_used_with_a_warning_and_left_as_it_is(tasks, localaws_process):
    s3 = localaws_process.client("s3")
    bucket = unique("users-noblock")
    private_encrypted(s3, bucket)
    no_block(s3, bucket)
    before = snapshot(s3, bucket)
    run = plan(bucket=bucket)
    pre = tasks["preflight"](run)
    assert any("no Block Public Access configuration" in warning for warning in pre["bucket"]["warnings"])
    assert tasks["open_run"](run, pre)["created"] is False
    assert snapshot(s3, bucket) == before


def test_a_new_bucket_is_created_hardened_and_a_later_run_changes_nothing(tasks, localaws_process):
    s3 = localaws_process.client("s3")
    run = plan(bucket=unique("new-bucket"))
    bucket = run["params"]["bucket"]
    pre = tasks["preflight"](run)
    assert pre["bucket"]["exists"] is False
    assert tasks["open_run"](run, pre)["created"] is True
    found = snapshot(s3, bucket)
    assert found["encryption"]["Rules"][0]["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    assert found["versioning"] == "Enabled"
    assert all(found["public_access_block"].values()) and len(found["public_access_block"]) == 4
    # TLS only where S3 is reached over TLS: localaws is plain HTTP, where the policy would lock the run out.
    assert found["policy"] == "NoSuchBucketPolicy"
    s3.put_object(Bucket=bucket, Key="runs/x/probe", Body=b"the run can use its bucket")
    assert s3.get_object(Bucket=bucket, Key="runs/x/probe")["Body"].read() == b"the run can use its bucket"
    assert {"Key": "project", "Value": "ml-pipeline"} in found["tags"]
    assert {"Key": "created-by-run", "Value": run["key"]} in found["tags"]
    assert tasks["open_run"](run, pre)["created"] is True  # the same run's retry: idempotent
    assert snapshot(s3, bucket) == found

    later = plan(bucket=bucket)
    checked = tasks["preflight"](later)
    assert checked["bucket"] == {"bucket": bucket, "exists": True, "warnings": []}
    assert tasks["open_run"](later, checked)["created"] is False
    assert snapshot(s3, bucket) == found


def test_a_bucket_someone_creates_after_the_preflight_is_left_as_it_is(tasks, localaws_process):
    """The preflight saw no bucket; before open_run, someone else made it (another run, a backfill, a user):
    only the created-by-run tag makes a bucket the run's, so this one is checked and left exactly as it is."""
    s3, kms = localaws_process.client("s3"), localaws_process.client("kms")
    run = plan(bucket=unique("raced"))
    bucket = run["params"]["bucket"]
    pre = tasks["preflight"](run)
    assert pre["bucket"]["exists"] is False
    key = kms.create_key(Description="the other owner's key")["KeyMetadata"]["Arn"]
    s3.create_bucket(Bucket=bucket)
    s3.put_bucket_encryption(
        Bucket=bucket,
        ServerSideEncryptionConfiguration={
            "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": key}}]
        },
    )
    s3.put_public_access_block(
        Bucket=bucket,
        PublicAccessBlockConfiguration={
            "BlockPublicAcls": True,
            "IgnorePublicAcls": True,
            "BlockPublicPolicy": True,
            "RestrictPublicBuckets": True,
        },
    )
    s3.put_bucket_tagging(Bucket=bucket, Tagging={"TagSet": [{"Key": "owner", "Value": "data-team"}]})
    before = snapshot(s3, bucket)
    opened = tasks["open_run"](run, pre)
    assert opened["created"] is False
    assert snapshot(s3, bucket) == before


def test_the_bucket_checks_name_this_account_as_the_buckets_owner(tasks, localaws_process):
    """Every call of the bucket's check says which account must own it (ExpectedBucketOwner): S3 then refuses
    another account's bucket even when that bucket grants this role access. (localaws's S3, moto's, does not
    act on it: the request is what is checked here.)"""
    from ml_pipeline import aws

    s3 = localaws_process.client("s3")
    bucket = unique("owned")
    private_encrypted(s3, bucket)
    account = localaws_process.client("sts").get_caller_identity()["Account"]
    sent = []
    aws.client("s3").meta.events.register(
        "before-send.s3",
        lambda request, **_: sent.append((request.url, request.headers.get("x-amz-expected-bucket-owner"))),
    )
    assert tasks["preflight"](plan(bucket=bucket))["bucket"]["exists"] is True
    assert len(sent) >= 6  # HeadBucket, tagging, encryption, Block Public Access, policy status, ACL, versioning
    assert [url for url, owner in sent if owner != account.encode()] == []


def test_a_tasks_aws_clients_share_one_connection_read_once(tasks, localaws_process):
    """One hook per task: the provider logs where the connection's credentials came from once, however
    many clients the task makes; each client is the provider's (its endpoint, its user agent)."""
    from structlog.testing import capture_logs

    from ml_pipeline import aws

    with capture_logs() as logged:
        clients = [aws.client(service) for service in ("s3", "ec2", "sagemaker", "s3")]
    assert clients[0] is clients[3]
    assert [c.meta.endpoint_url for c in clients] == [localaws_process.endpoint_url] * 4
    assert all("Airflow/" in c.meta.config.user_agent_extra for c in clients)
    assert sum("credentials retrieved" in str(entry.get("event")) for entry in logged) == 1, logged
