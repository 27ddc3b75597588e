"""What localaws answers on the wire, sent as clients other than botocore may send it: raw HTTP
with wrong JSON types, NaN, chunked and oversized bodies, malformed XML, operations moto lacks,
no credentials; and IAM's policy simulator with the SageMaker SDK's own role validation.

botocore validates a request before sending it, so these tests send raw HTTP (with a
SigV4-shaped Authorization header, as AWS's front door reads the service from it)."""

from __future__ import annotations

import json
import socket
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import requests
from botocore.config import Config
from botocore.exceptions import ClientError

from tests.conftest import LocalAWSProcess, unique
from tests.fixtures.docker_engine import ecr_uri
from tests.localaws.hosting_support import delete_quietly, deploy
from tests.support import ROLE_ARN

pytestmark = pytest.mark.timeout(600)

MISBEHAVING = Path(__file__).parent / "images" / "misbehaving"
NO_RETRIES = Config(retries={"max_attempts": 1, "mode": "standard"})
SIX_MB = 6 * 1024 * 1024


def auth(service: str) -> str:
    return (
        f"AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/{service}/aws4_request, "
        "SignedHeaders=host;x-amz-date, Signature=" + "0" * 64
    )


def call(server, service: str, target: str, body, content_type="application/x-amz-json-1.1", **headers):
    return requests.post(
        server.endpoint_url + "/",
        data=body,
        timeout=60,
        headers={"Authorization": auth(service), "X-Amz-Target": target, "Content-Type": content_type, **headers},
    )


def sagemaker(server, operation: str, body):
    return call(server, "sagemaker", f"SageMaker.{operation}", body)


def json_error(response) -> tuple[int, str, str]:
    body = response.json()
    assert response.headers["x-amzn-ErrorType"] == body["__type"]
    return response.status_code, body["__type"], body.get("message") or body.get("Message")


def xml_error(response) -> tuple[int, str, str]:
    root = ET.fromstring(response.content)
    error = root if root.tag == "Error" else root.find(".//Error")
    return response.status_code, error.findtext("Code"), error.findtext("Message")


def chunked(data: bytes, size: int = 65536):
    for start in range(0, len(data), size):
        yield data[start : start + size]


# --- SageMaker's JSON: types, required members, NaN (item 11) ------------------------------


@pytest.mark.parametrize(
    "operation,body,expected",
    [
        ("DescribeTrainingJob", "[1]", (400, "SerializationException", "Start of list found where not expected")),
        (
            "DescribeTrainingJob",
            '{"TrainingJobName": 5}',
            (400, "SerializationException", "NUMBER_VALUE can not be converted to a String"),
        ),
        (
            "ListTrainingJobs",
            '{"MaxResults": "2"}',
            (400, "SerializationException", "STRING_VALUE can not be converted to an Integer"),
        ),
        (
            "ListTrainingJobs",
            '{"MaxResults": true}',
            (400, "SerializationException", "TRUE_VALUE can not be converted to an Integer"),
        ),
        (
            "DescribeEndpoint",
            '{"EndpointName": {"a": 1}}',
            (400, "SerializationException", "Start of structure or map found where not expected."),
        ),
        (
            "DescribeTrainingJob",
            "{}",
            (
                400,
                "ValidationException",
                "1 validation error detected: Value null at "
                "'trainingJobName' failed to satisfy constraint: Member must not be null",
            ),
        ),
        (
            "DescribeModelPackage",
            "{}",
            (
                400,
                "ValidationException",
                "1 validation error detected: Value null at "
                "'modelPackageName' failed to satisfy constraint: Member must not be null",
            ),
        ),
    ],
)
def test_wrong_json_types_and_missing_members_are_the_clients_error(localaws_process, operation, body, expected):
    assert json_error(sagemaker(localaws_process, operation, body)) == expected


@pytest.mark.parametrize(
    "body",
    [
        '{"MaxResults": NaN}',
        '{"MaxResults": Infinity}',
        '{"MaxResults": -Infinity}',
        '{"MaxResults": 1e999}',
        "not json",
        '{"MaxResults": 1',
    ],
)
def test_non_finite_numbers_and_non_json_are_serialization_errors(localaws_process, body):
    status, code, _ = json_error(sagemaker(localaws_process, "ListTrainingJobs", body))
    assert (status, code) == (400, "SerializationException")


def test_a_create_with_a_string_count_creates_nothing(localaws_process):
    name = unique("types")
    request = {
        "TrainingJobName": name,
        "RoleArn": ROLE_ARN,
        "AlgorithmSpecification": {"TrainingImage": localaws_process.image_uri, "TrainingInputMode": "File"},
        "OutputDataConfig": {"S3OutputPath": "s3://bucket/out"},
        "ResourceConfig": {"InstanceType": "ml.m5.large", "InstanceCount": "2", "VolumeSizeInGB": 1},
        "StoppingCondition": {"MaxRuntimeInSeconds": 60},
    }
    assert json_error(sagemaker(localaws_process, "CreateTrainingJob", json.dumps(request))) == (
        400,
        "SerializationException",
        "STRING_VALUE can not be converted to an Integer",
    )
    assert (
        json_error(sagemaker(localaws_process, "DescribeTrainingJob", json.dumps({"TrainingJobName": name})))[1]
        == "ValidationException"
    )  # not created


@pytest.mark.parametrize("channel", [".", ".."])
def test_a_channel_named_by_dots_only_is_refused_before_the_job_exists(localaws_process, channel):
    """The model's pattern admits it; its folder would be input/data itself or the folder above."""
    sm = localaws_process.client("sagemaker")
    name = unique("dots")
    request = {
        "TrainingJobName": name,
        "RoleArn": ROLE_ARN,
        "AlgorithmSpecification": {"TrainingImage": localaws_process.image_uri, "TrainingInputMode": "File"},
        "InputDataConfig": [
            {
                "ChannelName": channel,
                "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": "s3://bucket/data"}},
            }
        ],
        "OutputDataConfig": {"S3OutputPath": "s3://bucket/out"},
        "ResourceConfig": {"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 1},
        "StoppingCondition": {"MaxRuntimeInSeconds": 60},
    }
    with pytest.raises(ClientError) as refused:
        sm.create_training_job(**request)
    assert refused.value.response["Error"]["Code"] == "ValidationException"
    assert f"Channel name '{channel}'" in refused.value.response["Error"]["Message"]
    assert sm.list_training_jobs(NameContains=name)["TrainingJobSummaries"] == []


def test_a_number_where_an_integer_is_expected_is_truncated_as_aws_does(localaws_process):
    answer = sagemaker(localaws_process, "ListTrainingJobs", '{"MaxResults": 2.7}')
    assert answer.status_code == 200 and "TrainingJobSummaries" in answer.json()


def test_autoscaling_and_ssm_read_json_as_aws_does(localaws_process):
    target = "AnyScaleFrontendService.DescribeScalableTargets"
    status, code, _ = json_error(
        call(
            localaws_process, "application-autoscaling", target, '{"ServiceNamespace": "sagemaker", "MaxResults": NaN}'
        )
    )
    assert (status, code) == (400, "SerializationException")
    assert json_error(
        call(
            localaws_process, "application-autoscaling", target, '{"ServiceNamespace": "sagemaker", "MaxResults": "5"}'
        )
    ) == (400, "SerializationException", "STRING_VALUE can not be converted to an Integer")
    assert json_error(call(localaws_process, "ssm", "AmazonSSM.ListCommandInvocations", '{"CommandId": 5}')) == (
        400,
        "SerializationException",
        "NUMBER_VALUE can not be converted to a String",
    )
    status, code, _ = json_error(call(localaws_process, "logs", "Logs_20140328.DescribeLogGroups", '{"limit": NaN}'))
    assert (status, code) == (400, "SerializationException")  # moto's JSON too: its json takes NaN


@pytest.mark.parametrize(
    "operation,body,expected",
    [
        ("ListModels", '{"CreationTimeAfter": "abc"}', (400, "SerializationException")),
        ("ListModels", '{"CreationTimeAfter": true}', (400, "SerializationException")),
        ("ListModels", '{"CreationTimeAfter": "2020-01-01T00:00:00Z"}', (200, None)),
        ("ListModels", '{"CreationTimeAfter": "2020-01-01T00:00:00"}', (200, None)),
        ("ListModels", '{"CreationTimeBefore": 1893456000.5}', (200, None)),
    ],
)
def test_timestamps_are_read_as_aws_reads_them(localaws_process, operation, body, expected):
    """Epoch seconds or an ISO 8601 date; anything else is the client's error, not a crash of ours."""
    answer = sagemaker(localaws_process, operation, body)
    if expected[0] == 200:
        assert answer.status_code == 200 and "Models" in answer.json(), answer.text
    else:
        assert json_error(answer)[:2] == expected


@pytest.mark.parametrize(
    "target,body,expected",
    [
        (
            "AmazonSSM.GetParameter",
            '{"Name": 5}',
            (400, "SerializationException", "NUMBER_VALUE can not be converted to a String"),
        ),
        (
            "AmazonSSM.SendCommand",
            '{"DocumentName": ["x"], "InstanceIds": ["i-1"]}',
            (400, "SerializationException", "Start of list found where not expected"),
        ),
        (
            "AmazonSSM.GetCommandInvocation",
            '{"CommandId": ["x"], "InstanceId": "i-1"}',
            (400, "SerializationException", "Start of list found where not expected"),
        ),
        (
            "AmazonSSM.GetParameter",
            "{}",
            (
                400,
                "ValidationException",
                "1 validation error detected: Value null at "
                "'name' failed to satisfy constraint: Member must not be null",
            ),
        ),
        (
            "Logs_20140328.DescribeLogGroups",
            '{"limit": "5"}',
            (400, "SerializationException", "STRING_VALUE can not be converted to an Integer"),
        ),
        (
            "AmazonEC2ContainerRegistry_V20150921.DescribeRepositories",
            '{"repositoryNames": "x"}',
            (400, "SerializationException", "Expected list or null"),
        ),
    ],
)
def test_moto_json_services_read_values_into_their_shapes(localaws_process, target, body, expected):
    service = {"AmazonSSM": "ssm", "Logs_20140328": "logs"}.get(target.split(".")[0], "ecr")
    assert json_error(call(localaws_process, service, target, body)) == expected


def test_boto3_still_gets_through_to_moto_json_services(localaws_process):
    ssm, logs = localaws_process.client("ssm"), localaws_process.client("logs")
    name = unique("/wire/p")
    ssm.put_parameter(Name=name, Value="v", Type="String", Tags=[{"Key": "k", "Value": "v"}])
    assert ssm.get_parameter(Name=name)["Parameter"]["Value"] == "v"
    group = unique("/wire/g")
    logs.create_log_group(logGroupName=group)
    logs.create_log_stream(logGroupName=group, logStreamName="s")
    import time as clock

    logs.put_log_events(
        logGroupName=group, logStreamName="s", logEvents=[{"timestamp": int(clock.time() * 1000), "message": "m"}]
    )
    assert [e["message"] for e in logs.filter_log_events(logGroupName=group, startTime=0)["events"]] == ["m"]


def test_deeply_nested_json_is_a_serialization_error(localaws_process):
    nested = "[" * 100_000 + "]" * 100_000
    for service, target in (
        ("sagemaker", "SageMaker.ListTrainingJobs"),
        ("logs", "Logs_20140328.DescribeLogGroups"),
        ("ssm", "AmazonSSM.ListCommands"),
    ):
        assert json_error(call(localaws_process, service, target, nested))[:2] == (400, "SerializationException")


def test_a_gzipped_json_body_is_read_inflated(localaws_process):
    """botocore gzips CloudWatch's PutMetricData over 10 KB: it still works, and NaN inside is refused."""
    import gzip

    cloudwatch = localaws_process.client("cloudwatch")
    namespace = unique("gzip")
    cloudwatch.put_metric_data(
        Namespace=namespace,
        MetricData=[
            {"MetricName": f"m{n}", "Value": float(n), "Dimensions": [{"Name": "d", "Value": "x" * 50}]}
            for n in range(300)
        ],
    )
    assert len(cloudwatch.list_metrics(Namespace=namespace)["Metrics"]) == 300
    body = gzip.compress(b'{"Namespace": "n", "MetricData": [{"MetricName": "m", "Value": NaN}]}')
    answer = call(
        localaws_process,
        "monitoring",
        "GraniteServiceVersion20100801.PutMetricData",
        body,
        content_type="application/x-amz-json-1.0",
        **{"Content-Encoding": "gzip"},
    )
    assert json_error(answer)[:2] == (400, "SerializationException")


# --- request bodies: chunked, size-limited (item 3) ---------------------------------------


@pytest.fixture(scope="module")
def echo_endpoint(localaws_process):
    """An endpoint of the misbehaving stand-in, which answers how many body bytes it received."""
    from localaws.client import register_image
    from ml_pipeline.images import context_hash

    image = ecr_uri("misbehaving", context_hash(MISBEHAVING))
    register_image(localaws_process.endpoint_url, image, MISBEHAVING)
    sm = localaws_process.client("sagemaker")
    name = unique("echo")
    described = deploy(sm, name, image, None, env={})
    assert described["EndpointStatus"] == "InService", described.get("FailureReason")
    yield name
    delete_quietly(sm, name)


def invoke(server, endpoint: str, data, **headers):
    return requests.post(
        f"{server.endpoint_url}/endpoints/{endpoint}/invocations",
        data=data,
        timeout=60,
        headers={"Authorization": auth("sagemaker"), "Content-Type": "application/json", **headers},
    )


def test_a_chunked_invocation_body_reaches_the_model(localaws_process, echo_endpoint):
    payload = json.dumps({"instances": [[1] * 64] * 500}).encode()
    answer = invoke(localaws_process, echo_endpoint, chunked(payload, 1000))
    assert answer.status_code == 200, answer.text
    assert answer.json()["bytes_received"] == len(payload)
    framed = invoke(localaws_process, echo_endpoint, payload)  # and with Content-Length, as before
    assert framed.json()["bytes_received"] == len(payload)


@pytest.mark.parametrize("framing", ["chunked", "content-length"])
def test_an_invocation_body_over_6_mb_is_refused_however_it_is_sent(localaws_process, echo_endpoint, framing):
    payload = b"x" * (SIX_MB + 1)
    answer = invoke(localaws_process, echo_endpoint, chunked(payload) if framing == "chunked" else payload)
    assert answer.status_code == 400
    assert answer.headers["x-amzn-ErrorType"] == "ValidationError"
    assert "Member must have length less than or equal to 6291456" in answer.json()["message"]
    at_limit = invoke(
        localaws_process, echo_endpoint, chunked(b"x" * SIX_MB) if framing == "chunked" else b"x" * SIX_MB
    )
    assert at_limit.json()["bytes_received"] == SIX_MB


def test_boto3_sending_over_6_mb_gets_the_validation_error_not_a_broken_connection(localaws_process, echo_endpoint):
    import boto3

    runtime = boto3.client(
        "sagemaker-runtime",
        endpoint_url=localaws_process.endpoint_url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=NO_RETRIES,
    )
    for _ in range(3):  # the refused body is not read, yet the connection is not reset before the answer
        with pytest.raises(ClientError) as error:
            runtime.invoke_endpoint(EndpointName=echo_endpoint, Body=b"x" * (SIX_MB + 1024))
        assert error.value.response["Error"]["Code"] == "ValidationError"
    assert (
        json.loads(runtime.invoke_endpoint(EndpointName=echo_endpoint, Body=b"{}")["Body"].read())["bytes_received"]
        == 2
    )


def test_the_json_apis_read_chunked_bodies_and_refuse_oversized_ones(localaws_process):
    listed = sagemaker(localaws_process, "ListTrainingJobs", chunked(b'{"MaxResults": 3}', 5))
    assert listed.status_code == 200 and "TrainingJobSummaries" in listed.json()
    huge = b'{"NameContains": "' + b"a" * (11 * 1024 * 1024) + b'"}'
    for body in (huge, chunked(huge)):
        assert json_error(sagemaker(localaws_process, "ListTrainingJobs", body))[:2] == (
            413,
            "RequestEntityTooLargeException",
        )
    admin = requests.post(localaws_process.endpoint_url + "/_localaws/images", data=chunked(b"x" * (2 * 1024 * 1024)))
    assert admin.status_code == 413
    chunked_admin = requests.post(
        localaws_process.endpoint_url + "/_localaws/images",
        data=chunked(json.dumps({"ImageUri": "x", "Context": "/no/such/dir"}).encode(), 7),
    )
    assert chunked_admin.status_code == 400 and "/no/such/dir" in chunked_admin.json()["message"]


def test_a_body_refused_unread_closes_its_connection_and_the_next_one_is_served(localaws_process):
    """After a 413 the server closes the connection (it did not read the body, which could hold
    anything); the next request, on a new connection, is answered."""
    with socket.create_connection(("127.0.0.1", localaws_process.port), timeout=30) as sock:
        sock.sendall(
            b"POST / HTTP/1.1\r\nHost: x\r\nX-Amz-Target: SageMaker.ListTrainingJobs\r\n"
            b"Authorization: " + auth("sagemaker").encode() + b"\r\n"
            b"Content-Type: application/x-amz-json-1.1\r\nContent-Length: 999999999\r\n\r\n{"
        )
        head = sock.recv(65536)
        assert head.startswith(b"HTTP/1.1 413") and b"Connection: close" in head
    assert sagemaker(localaws_process, "ListTrainingJobs", "{}").status_code == 200


def test_an_iam_body_over_its_limit_is_answered_not_smuggled_to_moto(localaws_process):
    """A chunked query body past the limit is refused where it is read; what is left of it, unread,
    never reaches moto as a request of its own."""
    padding = b"x" * (65 * 1024 * 1024)
    body = b"Action=ListRoles&Version=2010-05-08&x=" + padding + b"&Action=CreateUser&UserName=smuggled"
    answer = requests.post(
        localaws_process.endpoint_url + "/",
        data=chunked(body, 1 << 20),
        timeout=120,
        headers={"Authorization": auth("iam"), "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert ET.fromstring(answer.content).tag == "ErrorResponse"
    assert xml_error(answer)[:2] == (413, "RequestEntityTooLargeException")
    with pytest.raises(ClientError, match="NoSuchEntity"):
        localaws_process.client("iam").get_user(UserName="smuggled")


@pytest.mark.parametrize(
    "form,code",
    [
        ("MaxItems=abc", "ValidationError"),
        ("MaxItems=0", "ValidationError"),
        ("Marker=not-ours", "InvalidInput"),
    ],
)
def test_the_iam_simulators_paging_members_are_checked(localaws_process, form, code):
    policy = json.dumps(
        {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}
    )
    answer = iam_form(
        localaws_process,
        {
            "Action": "SimulateCustomPolicy",
            "PolicyInputList.member.1": policy,
            "ActionNames.member.1": "s3:GetObject",
            **dict([form.split("=")]),
        },
    )
    assert xml_error(answer)[:2] == (400, code)


def iam_form(server, values: dict):
    from urllib.parse import urlencode

    return requests.post(
        server.endpoint_url + "/",
        data=urlencode({"Version": "2010-05-08", **values}),
        timeout=60,
        headers={"Authorization": auth("iam"), "Content-Type": "application/x-www-form-urlencoded"},
    )


@pytest.mark.parametrize(
    "statement",
    [
        {"Action": "s3:*", "Resource": "*"},  # no Effect
        {"Effect": "allow", "Action": "s3:*", "Resource": "*"},  # not Allow or Deny
        {"Effect": "Allow", "Action": 5, "Resource": "*"},  # not a string
        {"Effect": "Allow", "Action": ["s3:*", {"a": 1}], "Resource": "*"},  # not a list of strings
        {"Effect": "Allow", "Action": "s3:*", "Resource": "*", "Condition": [1]},  # not operators -> keys
        {"Effect": "Allow", "Action": "s3:*", "Resource": "*", "Condition": {"StringEquals": "x"}},
        "not a statement",
    ],
)
def test_a_policy_outside_iams_grammar_is_invalid_input(localaws_process, statement):
    iam = localaws_process.client("iam")
    policy = json.dumps({"Version": "2012-10-17", "Statement": [statement]})
    with pytest.raises(ClientError) as refused:
        iam.simulate_custom_policy(PolicyInputList=[policy], ActionNames=["s3:GetObject"])
    assert refused.value.response["Error"]["Code"] == "InvalidInput"
    with pytest.raises(ClientError) as malformed:
        iam.simulate_custom_policy(PolicyInputList=["{not json"], ActionNames=["s3:GetObject"])
    assert (
        malformed.value.response["Error"]["Code"] == "InvalidInput"
    )  # what Simulate* lists, not MalformedPolicyDocument


def test_an_explicit_deny_in_the_boundary_is_an_explicit_deny(localaws_process):
    iam = localaws_process.client("iam")
    allow_other = json.dumps(
        {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "ec2:*", "Resource": "*"}]}
    )  # s3:GetObject: an implicit deny here
    deny = json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Deny", "Action": "s3:*", "Resource": "*"}]})
    result = iam.simulate_custom_policy(
        PolicyInputList=[allow_other],
        PermissionsBoundaryPolicyInputList=[deny],
        ActionNames=["s3:GetObject", "ec2:RunInstances"],
    )["EvaluationResults"]
    decided = {r["EvalActionName"]: r["EvalDecision"] for r in result}
    assert decided == {"s3:GetObject": "explicitDeny", "ec2:RunInstances": "implicitDeny"}


# --- S3 bodies: their length known before they stream to moto --------------------------------


def s3_put(server, bucket: str, key: str, data, **headers):
    return requests.put(
        f"{server.endpoint_url}/{bucket}/{key}",
        data=data,
        timeout=120,
        headers={"Authorization": auth("s3"), **headers},
    )


def test_a_chunked_s3_put_without_its_length_is_refused_as_s3_refuses_it(localaws_process, bucket_name):
    answer = s3_put(localaws_process, bucket_name, "chunked", chunked(b"x" * 100_000, 1000))
    assert xml_error(answer)[:2] == (411, "MissingContentLength")
    s3 = localaws_process.client("s3")
    with pytest.raises(ClientError, match="Not Found|NoSuchKey|404"):
        s3.head_object(Bucket=bucket_name, Key="chunked")
    s3.put_object(Bucket=bucket_name, Key="framed", Body=b"y" * 100_000)  # boto3 says its length
    assert s3.get_object(Bucket=bucket_name, Key="framed")["Body"].read() == b"y" * 100_000


def aws_chunked(data: bytes, size: int = 8192):
    """S3's aws-chunked encoding (unsigned, as STREAMING-UNSIGNED-PAYLOAD-TRAILER frames it), in pieces."""
    for start in range(0, len(data), size):
        piece = data[start : start + size]
        yield b"%x\r\n%s\r\n" % (len(piece), piece)
    yield b"0\r\n\r\n"


def test_an_aws_chunked_upload_is_limited_by_its_decoded_length(localaws_process, bucket_name):
    s3 = localaws_process.client("s3")
    headers = {"Content-Encoding": "aws-chunked", "x-amz-content-sha256": "STREAMING-UNSIGNED-PAYLOAD-TRAILER"}
    data = b"z" * 50_000
    fine = s3_put(
        localaws_process,
        bucket_name,
        "fine",
        aws_chunked(data),
        **headers,
        **{"x-amz-decoded-content-length": str(len(data))},
    )
    assert fine.status_code == 200, fine.text
    assert s3.get_object(Bucket=bucket_name, Key="fine")["Body"].read() == data
    huge = s3_put(
        localaws_process,
        bucket_name,
        "huge",
        aws_chunked(b"z" * 1000),
        **headers,
        **{"x-amz-decoded-content-length": str(6 * 1024**3)},
    )
    assert xml_error(huge)[:2] == (400, "EntityTooLarge")
    longer = s3_put(
        localaws_process,
        bucket_name,
        "longer",
        aws_chunked(b"z" * (2 * 1024 * 1024)),
        **headers,
        **{"x-amz-decoded-content-length": "10"},
    )
    assert xml_error(longer)[:2] == (400, "IncompleteBody")
    for key in ("huge", "longer"):
        with pytest.raises(ClientError, match="Not Found|NoSuchKey|404"):
            s3.head_object(Bucket=bucket_name, Key=key)


# --- every error in the service's protocol (item 12) --------------------------------------


def test_malformed_xml_to_s3_is_malformed_xml(localaws_process, bucket_name):
    response = requests.put(
        f"{localaws_process.endpoint_url}/{bucket_name}?tagging",
        data=b"<Tagging><TagSet><Tag>",
        headers={"Authorization": auth("s3")},
    )
    assert response.headers["Content-Type"] == "application/xml"
    status, code, _ = xml_error(response)
    assert (status, code) == (400, "MalformedXML")


@pytest.mark.parametrize(
    "service,call_it,status",
    [
        ("iam", lambda c: c.change_password(OldPassword="a", NewPassword="b"), 501),  # query
        ("ec2", lambda c: c.accept_address_transfer(Address="192.0.2.1"), 501),  # ec2
        ("logs", lambda c: c.cancel_import_task(importId="x"), 501),  # json
        ("efs", lambda c: c.delete_file_system_policy(FileSystemId="fs-12345678"), 501),  # rest-json
        ("efs", lambda c: c.describe_account_preferences(), 501),  # no route in moto
    ],
)
def test_an_operation_moto_lacks_is_a_clear_aws_error(localaws_process, service, call_it, status):
    import boto3

    client = boto3.client(
        service,
        endpoint_url=localaws_process.endpoint_url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=NO_RETRIES,
    )
    with pytest.raises(ClientError) as error:  # a ClientError, not ResponseParserError
        call_it(client)
    assert error.value.response["Error"]["Code"] == "NotImplemented"
    assert error.value.response["ResponseMetadata"]["HTTPStatusCode"] == status
    operation = error.value.operation_name
    assert "localaws does not implement" in error.value.response["Error"]["Message"]
    assert operation in error.value.response["Error"]["Message"]


def test_an_operation_no_service_has_is_unknown(localaws_process):
    assert json_error(call(localaws_process, "logs", "Logs_20140328.NoSuchOperation", "{}"))[:2] == (
        400,
        "UnknownOperationException",
    )
    response = requests.post(
        localaws_process.endpoint_url + "/",
        data="Action=NoSuchAction&Version=2010-05-08",
        headers={"Authorization": auth("iam"), "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert xml_error(response)[:2] == (400, "InvalidAction")


@pytest.fixture
def bucket_name(localaws_process):
    name = unique("wire")
    localaws_process.client("s3").create_bucket(Bucket=name)
    return name


# --- IAM: managed policies and the policy simulator (items 12, 13) ------------------------


TRUST = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Principal": {"Service": "sagemaker.amazonaws.com"}, "Action": "sts:AssumeRole"}
        ],
    }
)


def test_aws_managed_policies_can_be_attached(localaws_process):
    iam = localaws_process.client("iam")
    name = unique("role")
    iam.create_role(RoleName=name, AssumeRolePolicyDocument=TRUST)
    iam.attach_role_policy(RoleName=name, PolicyArn="arn:aws:iam::aws:policy/AmazonSageMakerFullAccess")
    attached = iam.list_attached_role_policies(RoleName=name)["AttachedPolicies"]
    assert [p["PolicyName"] for p in attached] == ["AmazonSageMakerFullAccess"]
    assert iam.get_policy(PolicyArn="arn:aws:iam::aws:policy/AmazonS3ReadOnlyAccess")["Policy"]["IsAttachable"]


def test_simulate_principal_policy_evaluates_the_roles_policies(localaws_process):
    iam = localaws_process.client("iam")
    name = unique("role")
    arn = iam.create_role(RoleName=name, AssumeRolePolicyDocument=TRUST)["Role"]["Arn"]
    decide = lambda actions, **kw: {  # noqa: E731
        r["EvalActionName"]: r["EvalDecision"]
        for r in iam.simulate_principal_policy(PolicySourceArn=arn, ActionNames=actions, **kw)["EvaluationResults"]
    }
    assert decide(["s3:GetObject"]) == {"s3:GetObject": "implicitDeny"}
    iam.attach_role_policy(RoleName=name, PolicyArn="arn:aws:iam::aws:policy/AmazonSageMakerFullAccess")
    policy = iam.create_policy(
        PolicyName=unique("bucket"),
        PolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "arn:aws:s3:::mine/*"}],
            }
        ),
    )["Policy"]["Arn"]
    iam.attach_role_policy(RoleName=name, PolicyArn=policy)
    iam.put_role_policy(
        RoleName=name,
        PolicyName="no-delete",
        PolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": [{"Effect": "Deny", "Action": "s3:Delete*", "Resource": "*"}]}
        ),
    )
    assert decide(["sagemaker:CreateTrainingJob", "ec2:RunInstances"]) == {
        "sagemaker:CreateTrainingJob": "allowed",
        "ec2:RunInstances": "implicitDeny",
    }
    assert decide(["s3:PutObject", "s3:DeleteObject"], ResourceArns=["arn:aws:s3:::mine/key"]) == {
        "s3:PutObject": "allowed",
        "s3:DeleteObject": "explicitDeny",
    }  # an explicit deny wins over s3:*
    assert decide(["s3:PutObject"], ResourceArns=["arn:aws:s3:::theirs/key"]) == {"s3:PutObject": "implicitDeny"}
    matched = iam.simulate_principal_policy(PolicySourceArn=arn, ActionNames=["s3:DeleteObject"])["EvaluationResults"][
        0
    ]["MatchedStatements"]
    assert matched == [{"SourcePolicyId": "no-delete", "SourcePolicyType": "role"}]
    with pytest.raises(ClientError) as error:
        iam.simulate_principal_policy(PolicySourceArn=arn.replace(name, "no-such-role"), ActionNames=["s3:GetObject"])
    assert error.value.response["Error"]["Code"] == "NoSuchEntity"


def test_simulate_custom_policy_with_conditions_and_pages(localaws_process):
    iam = localaws_process.client("iam")
    policy = json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Action": "s3:Get*",
                    "Resource": "*",
                    "Condition": {"StringEquals": {"aws:username": "ana"}},
                }
            ],
        }
    )
    result = iam.simulate_custom_policy(PolicyInputList=[policy], ActionNames=["s3:GetObject"])["EvaluationResults"][0]
    assert (result["EvalDecision"], result["MissingContextValues"]) == ("implicitDeny", ["aws:username"])
    given = iam.simulate_custom_policy(
        PolicyInputList=[policy],
        ActionNames=["s3:GetObject"],
        ContextEntries=[{"ContextKeyName": "aws:username", "ContextKeyValues": ["ana"], "ContextKeyType": "string"}],
    )
    assert given["EvaluationResults"][0]["EvalDecision"] == "allowed"
    pages = list(
        iam.get_paginator("simulate_custom_policy").paginate(
            PolicyInputList=[policy], ActionNames=[f"s3:Get{n}" for n in range(5)], PaginationConfig={"PageSize": 2}
        )
    )
    assert [len(page["EvaluationResults"]) for page in pages] == [2, 2, 1]


@pytest.mark.slow
def test_the_sagemaker_sdk_validates_a_role_against_localaws(localaws_process, monkeypatch):
    """The SDK's own role validation (iam:SimulatePrincipalPolicy, then the trust policy), unchanged."""
    import boto3
    from sagemaker.core.helper.iam_role_resolver import RoleValidationError, resolve_and_validate_role
    from sagemaker.core.helper.session_helper import Session

    for key, value in {
        "AWS_ENDPOINT_URL": localaws_process.endpoint_url,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("SAGEMAKER_VALIDATE_ROLE", raising=False)
    session = Session(boto_session=boto3.Session(region_name="us-east-1"), default_bucket=unique("sdk"))
    iam = localaws_process.client("iam")
    good, bare = unique("sdk-good"), unique("sdk-bare")
    for name in (good, bare):
        iam.create_role(RoleName=name, AssumeRolePolicyDocument=TRUST)
    iam.attach_role_policy(RoleName=good, PolicyArn="arn:aws:iam::aws:policy/AmazonSageMakerFullAccess")
    arn = f"arn:aws:iam::123456789012:role/{good}"
    assert resolve_and_validate_role(provided_role=arn, role_type="training", sagemaker_session=session) == arn
    with pytest.raises(RoleValidationError, match="Missing permissions"):
        resolve_and_validate_role(
            provided_role=f"arn:aws:iam::123456789012:role/{bare}", role_type="training", sagemaker_session=session
        )


# --- requests without credentials beyond loopback (item 5) --------------------------------


@pytest.fixture(scope="module")
def exposed(tmp_path_factory):
    """localaws listening on every address (LOCALAWS_HOST=0.0.0.0), reached here through 127.0.0.1."""
    server = LocalAWSProcess(tmp_path_factory.mktemp("exposed"), "process", LOCALAWS_HOST="0.0.0.0").start()
    yield server
    server.stop()


def test_beyond_loopback_requests_without_credentials_are_refused_in_each_protocol(exposed):
    url = exposed.endpoint_url
    assert requests.get(url + "/_localaws/health").status_code == 200  # liveness stays open
    s3 = requests.get(url + "/")
    assert xml_error(s3) == (403, "AccessDenied", "Access Denied")
    sm = requests.post(
        url + "/",
        data="{}",
        headers={"X-Amz-Target": "SageMaker.ListTrainingJobs", "Content-Type": "application/x-amz-json-1.1"},
    )
    assert json_error(sm)[:2] == (403, "MissingAuthenticationTokenException")
    query = requests.post(
        url + "/",
        data="Action=ListRoles&Version=2010-05-08",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert ET.fromstring(query.content).tag == "ErrorResponse" and xml_error(query)[:2] == (
        403,
        "MissingAuthenticationToken",
    )
    ec2 = requests.post(
        url + "/",
        data="Action=DescribeInstances&Version=2016-11-15",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert ET.fromstring(ec2.content).tag == "Response" and xml_error(ec2)[:2] == (403, "MissingAuthenticationToken")
    runtime = requests.post(url + "/endpoints/any/invocations", data=b"{}")
    assert json_error(runtime)[:2] == (403, "MissingAuthenticationTokenException")
    admin = requests.post(url + "/_localaws/images", data=b"{}")
    assert admin.status_code == 403 and admin.json()["__type"] == "MissingAuthenticationToken"


def test_beyond_loopback_signed_and_presigned_requests_work(exposed, monkeypatch):
    from localaws.client import register_image

    s3 = exposed.client("s3")
    name = unique("exposed")
    s3.create_bucket(Bucket=name)
    s3.put_object(Bucket=name, Key="k", Body=b"value")
    assert (
        requests.get(s3.generate_presigned_url("get_object", Params={"Bucket": name, "Key": "k"})).content == b"value"
    )
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with pytest.raises(RuntimeError, match="is not a build context"):  # past the check: localaws's client signs
        register_image(exposed.endpoint_url, "123456789012.dkr.ecr.us-east-1.amazonaws.com/x:1", "/no/such/context")


def test_on_loopback_unsigned_requests_are_served(localaws_process):
    answer = requests.post(
        localaws_process.endpoint_url + "/",
        data="{}",
        headers={"X-Amz-Target": "SageMaker.ListTrainingJobs", "Content-Type": "application/x-amz-json-1.1"},
    )
    assert answer.status_code == 200


# --- a crash of ours ------------------------------------------------------------------------


@pytest.fixture
def in_process(tmp_path):
    """A localaws in this process, so that a test can make one of its handlers fail."""
    from localaws.server import LocalAWS
    from localaws.settings import Settings

    server = LocalAWS(
        Settings(
            host="127.0.0.1",
            port=0,
            work_dir=tmp_path / "work",
            state_dir=None,
            cache_dir=tmp_path / "cache",
            runner="process",
        )
    )
    server.start_in_thread()
    yield server
    server.stop()


@pytest.mark.slow
def test_a_crash_of_ours_is_answered_in_the_requests_protocol_never_as_html(in_process, monkeypatch):
    """Whatever one of our handlers raises, the client gets AWS's InternalFailure in its protocol."""

    def crash(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(in_process.gateway.iam_simulator, "handle", crash)
    monkeypatch.setattr(in_process.gateway.sagemaker_api, "handle", crash)
    query = requests.post(
        in_process.endpoint_url + "/",
        data="Action=ListRoles&Version=2010-05-08",
        timeout=30,
        headers={"Authorization": auth("iam"), "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert ET.fromstring(query.content).tag == "ErrorResponse"
    assert xml_error(query)[:2] == (500, "InternalFailure") and "RuntimeError: a bug" in xml_error(query)[2]
    answer = sagemaker(in_process, "ListTrainingJobs", "{}")
    assert json_error(answer) == (500, "InternalFailure", "localaws failed: RuntimeError: a bug")
