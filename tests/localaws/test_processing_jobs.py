"""SageMaker processing jobs through localaws over HTTP with boto3, running a real processing script
(tests/localaws/images/processor: it sums and scales the integers of its inputs) on the process
runner, and once in a real container: inputs downloaded (sharded over two hosts), outputs uploaded and
read back, ExitMessage and FailureReason, stop and MaxRuntimeInSeconds, List's filters and pages, and
what is refused before anything runs."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
import requests
from botocore.exceptions import ClientError

from tests.conftest import unique
from tests.fixtures.images import IMAGES, image_for
from tests.support import ROLE_ARN, unknown_members, wait_until

pytestmark = pytest.mark.timeout(300)

PROCESSOR = IMAGES / "processor"
GROUP = "/aws/sagemaker/ProcessingJobs"
TERMINAL = ("Completed", "Failed", "Stopped")


@pytest.fixture
def processor(request, localaws):
    return image_for(request, localaws, PROCESSOR, "processor")


def put_numbers(s3, bucket: str, files: dict[str, list[int]]) -> None:
    for key, numbers in files.items():
        s3.put_object(Bucket=bucket, Key=key, Body="".join(f"{n}\n" for n in numbers).encode())


def s3_input(name: str, uri: str, local: str, **extra) -> dict:
    return {
        "InputName": name,
        "S3Input": {"S3Uri": uri, "LocalPath": local, "S3DataType": "S3Prefix", "S3InputMode": "File", **extra},
    }


def s3_output(name: str, uri: str, local: str, mode: str = "EndOfJob") -> dict:
    return {"OutputName": name, "S3Output": {"S3Uri": uri, "LocalPath": local, "S3UploadMode": mode}}


def processing_request(name, image, inputs, outputs, arguments, instances=1, **extra) -> dict:
    request = {
        "ProcessingJobName": name,
        "ProcessingInputs": inputs,
        "ProcessingOutputConfig": {"Outputs": outputs},
        "ProcessingResources": {
            "ClusterConfig": {"InstanceCount": instances, "InstanceType": "ml.m5.large", "VolumeSizeInGB": 1}
        },
        "StoppingCondition": {"MaxRuntimeInSeconds": 120},
        "AppSpecification": {"ImageUri": image, "ContainerArguments": arguments},
        "RoleArn": ROLE_ARN,
        **extra,
    }
    if not inputs:
        del request["ProcessingInputs"]
    return request


def wait_for_processing(sm, name: str, until=TERMINAL, timeout: float = 120) -> dict:
    return wait_until(
        lambda: (job := sm.describe_processing_job(ProcessingJobName=name))["ProcessingJobStatus"] in until and job,
        timeout=timeout,
        poll=0.2,
        waiting_for=f"processing job {name} to be one of {until}",
    )


def read_json(s3, bucket: str, key: str) -> dict:
    return json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())


def keys(s3, bucket: str, prefix: str) -> list[str]:
    return sorted(obj["Key"] for obj in s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", []))


def log_lines(logs, name: str) -> dict[str, list[str]]:
    streams = logs.describe_log_streams(logGroupName=GROUP, logStreamNamePrefix=name + "/")["logStreams"]
    return {
        stream["logStreamName"]: [
            event["message"]
            for event in logs.get_log_events(
                logGroupName=GROUP, logStreamName=stream["logStreamName"], startFromHead=True
            )["events"]
        ]
        for stream in streams
    }


def run_and_check_a_script(server, image: str, bucket: str) -> None:
    """The script reads an S3 prefix and a manifest's objects, its Environment and /opt/ml/config; its
    outputs, read back from S3, are what its inputs imply."""
    sm, s3, logs = server.client("sagemaker"), server.client("s3"), server.client("logs")
    put_numbers(
        s3, bucket, {"raw/a.csv": [1, 2, 3], "raw/sub/b.csv": [10, 20], "extra/c.csv": [100], "extra/d.csv": [7]}
    )
    manifest = [{"prefix": f"s3://{bucket}/extra/"}, "c.csv", "d.csv"]
    s3.put_object(Bucket=bucket, Key="manifests/extra.json", Body=json.dumps(manifest).encode())
    name = unique("process")
    request = processing_request(
        name,
        image,
        [
            s3_input("raw", f"s3://{bucket}/raw", "/opt/ml/processing/input/raw"),
            s3_input(
                "extra",
                f"s3://{bucket}/manifests/extra.json",
                "/opt/ml/processing/input/extra",
                S3DataType="ManifestFile",
            ),
        ],
        [s3_output("result", f"s3://{bucket}/out/{name}", "/opt/ml/processing/output")],
        ["--input", "/opt/ml/processing/input/raw", "--input=/opt/ml/processing/input/extra"]
        + ["--output", "/opt/ml/processing/output"],
        Environment={"SCALE": "3"},
        Tags=[{"Key": "team", "Value": "data"}],
    )
    arn = sm.create_processing_job(**request)["ProcessingJobArn"]
    assert arn.endswith(f":processing-job/{name}")
    assert sm.describe_processing_job(ProcessingJobName=name)["ProcessingJobStatus"] == "InProgress"
    done = wait_for_processing(sm, name)
    assert done["ProcessingJobStatus"] == "Completed", done.get("FailureReason")
    assert unknown_members("sagemaker", "DescribeProcessingJob", done) == []
    assert done["ExitMessage"] == "processed 4 files on algo-1"
    assert "FailureReason" not in done
    assert done["CreationTime"] <= done["ProcessingStartTime"] <= done["ProcessingEndTime"]
    # What was left out, as AWS fills it in.
    assert done["ProcessingInputs"][0]["S3Input"]["S3DataDistributionType"] == "FullyReplicated"
    assert done["ProcessingInputs"][0]["S3Input"]["S3CompressionType"] == "None"
    assert done["ProcessingInputs"][0]["AppManaged"] is False
    assert sm.list_tags(ResourceArn=arn)["Tags"] == [{"Key": "team", "Value": "data"}]

    summary = read_json(s3, bucket, f"out/{name}/algo-1.json")
    assert summary == {
        "host": "algo-1",
        "hosts": ["algo-1"],
        "job": name,
        "sums": {"a.csv": 6, "sub/b.csv": 30, "c.csv": 100, "d.csv": 7},
        "total": 143,
        "scale": 3,
    }
    assert s3.get_object(Bucket=bucket, Key=f"out/{name}/scaled/sub/b.csv")["Body"].read() == b"30\n60\n"
    [(stream, lines)] = log_lines(logs, name).items()
    assert stream.startswith(f"{name}/algo-1-")
    assert "processed 4 files, total 143" in lines


def test_a_processing_script_reads_its_inputs_and_its_outputs_are_uploaded(localaws_process, request):
    bucket = unique("processing")
    localaws_process.client("s3").create_bucket(Bucket=bucket)
    run_and_check_a_script(localaws_process, image_for(request, localaws_process, PROCESSOR, "processor"), bucket)


@pytest.mark.docker
def test_a_processing_script_runs_in_a_container_under_the_docker_runner(localaws_docker, request):
    """The image's own ENTRYPOINT, /opt/ml mounted: the same script and checks as on the process runner."""
    bucket = unique("processing")
    localaws_docker.client("s3").create_bucket(Bucket=bucket)
    run_and_check_a_script(localaws_docker, image_for(request, localaws_docker, PROCESSOR, "processor"), bucket)


def test_sharded_by_s3_key_over_two_instances_each_with_its_resourceconfig(localaws, processor, bucket):
    sm, s3 = localaws.client("sagemaker"), localaws.client("s3")
    shards = {f"shards/part-{n}.csv": [n, n * 10] for n in range(4)}
    put_numbers(s3, bucket, {**shards, "lookup/base.csv": [1000]})
    name = unique("sharded")
    request = processing_request(
        name,
        processor,
        [
            s3_input(
                "shards", f"s3://{bucket}/shards/", "/opt/ml/processing/shards", S3DataDistributionType="ShardedByS3Key"
            ),
            s3_input("lookup", f"s3://{bucket}/lookup/base.csv", "/opt/ml/processing/lookup"),
        ],
        [s3_output("result", f"s3://{bucket}/out/{name}/", "/opt/ml/processing/output")],
        ["--input", "/opt/ml/processing/shards", "--input", "/opt/ml/processing/lookup"]
        + ["--output", "/opt/ml/processing/output"],
        instances=2,
    )
    # The program named by the job's own entrypoint, found on the image's PATH.
    request["AppSpecification"]["ContainerEntrypoint"] = ["process"]
    sm.create_processing_job(**request)
    done = wait_for_processing(sm, name)
    assert done["ProcessingJobStatus"] == "Completed", done.get("FailureReason")
    assert done["ExitMessage"] == "processed 3 files on algo-1processed 3 files on algo-2"

    hosts = {host: read_json(s3, bucket, f"out/{name}/{host}.json") for host in ("algo-1", "algo-2")}
    seen = []
    for host, summary in hosts.items():
        assert summary["host"] == host and summary["hosts"] == ["algo-1", "algo-2"]
        assert summary["sums"].pop("base.csv") == 1000  # FullyReplicated: on both
        assert len(summary["sums"]) == 2  # ShardedByS3Key: half of the four each
        seen += summary["sums"]
    assert sorted(seen) == sorted(key.split("/", 1)[1] for key in shards)
    streams = log_lines(localaws.client("logs"), name)
    assert sorted(stream.split("/")[1].rsplit("-", 1)[0] for stream in streams) == ["algo-1", "algo-2"]


def test_a_failing_script_fails_the_job_with_its_message_and_uploads_nothing(localaws, processor, bucket):
    sm, s3 = localaws.client("sagemaker"), localaws.client("s3")
    put_numbers(s3, bucket, {"in/a.csv": [1]})
    name = unique("failing")
    sm.create_processing_job(
        **processing_request(
            name,
            processor,
            [s3_input("in", f"s3://{bucket}/in", "/opt/ml/processing/in")],
            [s3_output("out", f"s3://{bucket}/out/{name}", "/opt/ml/processing/out")],
            [
                "--input",
                "/opt/ml/processing/in",
                "--output",
                "/opt/ml/processing/out",
                "--fail",
                "row 7 is not a number",
            ],
        )
    )
    done = wait_for_processing(sm, name)
    assert done["ProcessingJobStatus"] == "Failed"
    assert done["FailureReason"] == "AlgorithmError: See job logs for more information"
    assert done["ExitMessage"] == "row 7 is not a number"
    assert keys(s3, bucket, "out/") == []
    [lines] = log_lines(localaws.client("logs"), name).values()
    assert "failing: row 7 is not a number" in lines

    # An input prefix with nothing under it: a ClientError before the container runs.
    empty = unique("empty")
    sm.create_processing_job(
        **processing_request(
            empty,
            processor,
            [s3_input("in", f"s3://{bucket}/nothing-here/", "/opt/ml/processing/in")],
            [],
            ["--output", "/opt/ml/processing/out"],
        )
    )
    done = wait_for_processing(sm, empty)
    assert done["ProcessingJobStatus"] == "Failed"
    assert done["FailureReason"].startswith("ClientError: Data download failed:No S3 objects found under S3 URL")
    assert "ProcessingStartTime" not in done


def test_an_input_key_that_climbs_out_fails_the_job_and_links_in_outputs_are_not_followed(
    localaws, processor, bucket, tmp_path
):
    sm, s3 = localaws.client("sagemaker"), localaws.client("s3")
    outside = tmp_path / "escaped-from-the-input"
    s3.put_object(Bucket=bucket, Key="in/ok.csv", Body=b"1\n")
    hostile = "in/" + "../" * 40 + str(outside).lstrip("/")
    s3.put_object(Bucket=bucket, Key=hostile, Body=b"written outside")
    name = unique("climbing")
    sm.create_processing_job(
        **processing_request(
            name,
            processor,
            [s3_input("in", f"s3://{bucket}/in/", "/opt/ml/processing/in")],
            [],
            ["--input", "/opt/ml/processing/in", "--output", "/opt/ml/processing/out"],
        )
    )
    done = wait_for_processing(sm, name)
    assert done["ProcessingJobStatus"] == "Failed"
    assert done["FailureReason"].startswith("ClientError: Data download failed:")
    assert f"s3://{bucket}/{hostile}" in done["FailureReason"]
    assert not outside.exists()

    # The container leaves links in its output (a file and a folder of this machine's): S3 gets neither.
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "key.txt").write_text("not the job's")
    name = unique("linking")
    links = [
        f"--link=/opt/ml/processing/out/{link}={secret}{target}" for link, target in (("file", "/key.txt"), ("dir", ""))
    ]
    sm.create_processing_job(
        **processing_request(
            name,
            processor,
            [],
            [s3_output("out", f"s3://{bucket}/out/{name}", "/opt/ml/processing/out")],
            ["--output", "/opt/ml/processing/out", *links],
        )
    )
    done = wait_for_processing(sm, name)
    assert done["ProcessingJobStatus"] == "Completed", done.get("FailureReason")
    assert keys(s3, bucket, f"out/{name}/") == [f"out/{name}/algo-1.json"]


def test_stop_ends_the_job_stopped_its_continuous_output_already_uploaded(localaws, processor, bucket):
    sm, s3 = localaws.client("sagemaker"), localaws.client("s3")
    name = unique("stopped")
    sm.create_processing_job(
        **processing_request(
            name,
            processor,
            [],
            [
                s3_output("progress", f"s3://{bucket}/progress/{name}", "/opt/ml/processing/progress", "Continuous"),
                s3_output("result", f"s3://{bucket}/out/{name}", "/opt/ml/processing/output"),
            ],
            ["--output", "/opt/ml/processing/output", "--progress", "/opt/ml/processing/progress", "--sleep", "60"],
        )
    )
    # Continuous: uploaded while the job runs.
    wait_until(lambda: keys(s3, bucket, f"progress/{name}/"), timeout=60, waiting_for="a continuous upload")
    assert sm.describe_processing_job(ProcessingJobName=name)["ProcessingJobStatus"] == "InProgress"
    sm.stop_processing_job(ProcessingJobName=name)
    assert sm.describe_processing_job(ProcessingJobName=name)["ProcessingJobStatus"] in ("Stopping", "Stopped")
    done = wait_for_processing(sm, name, timeout=60)
    assert done["ProcessingJobStatus"] == "Stopped"
    assert done["ExitMessage"] == "stopped by SIGTERM on algo-1"
    assert "FailureReason" not in done
    assert keys(s3, bucket, f"out/{name}/") == []  # EndOfJob: only a job that completed uploads it
    with pytest.raises(ClientError) as error:
        sm.stop_processing_job(ProcessingJobName=name)
    assert error.value.response["Error"]["Code"] == "ValidationException"

    # MaxRuntimeInSeconds: SIGTERM at the limit, and the job fails saying so.
    late = unique("late")
    request = processing_request(late, processor, [], [], ["--output", "/opt/ml/processing/o", "--sleep", "60"])
    request["StoppingCondition"] = {"MaxRuntimeInSeconds": 1}
    sm.create_processing_job(**request)
    done = wait_for_processing(sm, late, timeout=60)
    assert done["ProcessingJobStatus"] == "Failed"
    assert done["FailureReason"].startswith("MaxRuntimeExceeded:")
    assert done["ProcessingEndTime"].timestamp() - done["ProcessingStartTime"].timestamp() < 15


def test_list_filters_sorts_and_pages(localaws, processor, bucket):
    sm = localaws.client("sagemaker")
    prefix = unique("listed")
    names = [f"{prefix}-{letter}" for letter in "abc"]
    for name in names:
        fail = ["--fail", "no"] if name.endswith("b") else []
        sm.create_processing_job(
            **processing_request(name, processor, [], [], ["--output", "/opt/ml/processing/o", *fail])
        )
    for name in names:
        wait_for_processing(sm, name)

    def listed(**params) -> list[str]:
        return [
            job["ProcessingJobName"]
            for job in sm.list_processing_jobs(NameContains=prefix, **params)["ProcessingJobSummaries"]
        ]

    assert listed() == names  # by creation time, oldest first
    assert listed(SortBy="Name", SortOrder="Descending") == names[::-1]
    assert listed(StatusEquals="Failed") == [names[1]]
    assert listed(StatusEquals="Completed") == [names[0], names[2]]
    [failed] = sm.list_processing_jobs(NameContains=prefix, StatusEquals="Failed")["ProcessingJobSummaries"]
    assert failed["FailureReason"] == "AlgorithmError: See job logs for more information"
    assert failed["ExitMessage"] == "no"
    first = sm.list_processing_jobs(NameContains=prefix, MaxResults=2)
    assert [job["ProcessingJobName"] for job in first["ProcessingJobSummaries"]] == names[:2]
    rest = sm.list_processing_jobs(NameContains=prefix, MaxResults=2, NextToken=first["NextToken"])
    assert [job["ProcessingJobName"] for job in rest["ProcessingJobSummaries"]] == names[2:]
    assert "NextToken" not in rest
    # Times by the second as botocore sends them: an hour each side of the first one's creation.
    created = sm.describe_processing_job(ProcessingJobName=names[0])["CreationTime"]
    assert listed(CreationTimeAfter=created - timedelta(hours=1)) == names
    assert listed(CreationTimeBefore=created - timedelta(hours=1)) == []
    assert listed(LastModifiedTimeAfter=created + timedelta(hours=1)) == []
    pages = sm.get_paginator("list_processing_jobs").paginate(NameContains=prefix, PaginationConfig={"PageSize": 1})
    assert [job["ProcessingJobName"] for page in pages for job in page["ProcessingJobSummaries"]] == names


@pytest.mark.parametrize(
    "change, code, says",
    [
        (lambda r: r.update(ProcessingJobName="bad_name"), "ValidationException", "processingJobName"),
        (
            lambda r: r["ProcessingInputs"][0]["S3Input"].update(LocalPath="/tmp/x"),
            "ValidationException",
            "/opt/ml/processing/",
        ),
        (
            lambda r: r["ProcessingInputs"][0]["S3Input"].update(LocalPath="/opt/ml/processing/../input"),
            "ValidationException",
            "/opt/ml/processing/",
        ),
        (
            lambda r: r["ProcessingOutputConfig"]["Outputs"][0]["S3Output"].update(LocalPath="/opt/ml/model"),
            "ValidationException",
            "/opt/ml/processing/",
        ),
        (lambda r: r["ProcessingInputs"][0]["S3Input"].update(S3CompressionType="Gzip"), "ValidationException", "Pipe"),
        (lambda r: r["ProcessingInputs"].append(r["ProcessingInputs"][0]), "ValidationException", "unique"),
        (
            lambda r: r["ProcessingInputs"][0]["S3Input"].update(S3Uri="https://example.com/x"),
            "ValidationException",
            "s3://",
        ),
    ],
    ids=[
        "name-pattern",
        "local-path-outside",
        "local-path-climbing-out",
        "output-local-path-outside",
        "gzip-in-file-mode",
        "duplicate-input-name",
        "not-an-s3-uri",
    ],
)
def test_bad_requests_are_refused_before_anything_runs(localaws_process, change, code, says):
    sm = localaws_process.client("sagemaker")
    name = unique("refused")
    request = processing_request(
        name,
        "123456789012.dkr.ecr.us-east-1.amazonaws.com/never-used:1",
        [s3_input("in", "s3://bucket/in", "/opt/ml/processing/in")],
        [s3_output("out", "s3://bucket/out", "/opt/ml/processing/out")],
        ["--output", "/opt/ml/processing/out"],
    )
    change(request)
    with pytest.raises(ClientError) as error:
        sm.create_processing_job(**request)
    assert error.value.response["Error"]["Code"] == code
    assert says in error.value.response["Error"]["Message"]
    assert sm.list_processing_jobs(NameContains=name)["ProcessingJobSummaries"] == []


def test_a_duplicate_name_and_a_non_finite_number_create_nothing(localaws_process, request):
    sm = localaws_process.client("sagemaker")
    processor = image_for(request, localaws_process, PROCESSOR, "processor")
    name = unique("twice")
    job = processing_request(name, processor, [], [], ["--output", "/opt/ml/processing/o"])
    arn = sm.create_processing_job(**job)["ProcessingJobArn"]
    with pytest.raises(ClientError) as error:
        sm.create_processing_job(**job)
    assert error.value.response["Error"]["Code"] == "ResourceInUse"
    assert arn in error.value.response["Error"]["Message"]
    wait_for_processing(sm, name)
    with pytest.raises(ClientError) as error:
        sm.describe_processing_job(ProcessingJobName=unique("never"))
    assert error.value.response["Error"]["Code"] == "ValidationException"  # what the provider's operator reads

    # botocore never sends NaN: raw HTTP, as another client may.
    other = unique("nan")
    body = json.dumps({**job, "ProcessingJobName": other}).replace(
        '"MaxRuntimeInSeconds": 120', '"MaxRuntimeInSeconds": NaN'
    )
    answer = requests.post(
        localaws_process.endpoint_url + "/",
        data=body,
        timeout=30,
        headers={
            "Authorization": "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/sagemaker/aws4_request, "
            "SignedHeaders=host;x-amz-date, Signature=" + "0" * 64,
            "X-Amz-Target": "SageMaker.CreateProcessingJob",
            "Content-Type": "application/x-amz-json-1.1",
        },
    )
    assert answer.status_code == 400 and answer.json()["__type"] == "SerializationException"
    assert sm.list_processing_jobs(NameContains=other)["ProcessingJobSummaries"] == []


def test_the_process_runner_reads_an_images_command_and_files_from_its_dockerfile(tmp_path):
    """What the process runner runs of an image without a container: the last stage's ENTRYPOINT and
    CMD, and the image paths its COPY gives the context's files (no localaws needed)."""
    from localaws.sagemaker.runners import dockerfile

    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "job.py").write_text("")
    (tmp_path / "run.sh").write_text("")
    (tmp_path / "Dockerfile").write_text(
        'FROM builder AS one\nENTRYPOINT ["elsewhere"]\n'
        "FROM base\nWORKDIR /opt\nCOPY src program/\nCOPY --chown=1 run.sh \\\n  /usr/local/bin/run\n"
        "CMD python3 program/job.py\n"
    )
    image = dockerfile.read(tmp_path)
    assert image.entrypoint is None and image.workdir == "/opt"
    assert image.cmd == ["/bin/sh", "-c", "python3 program/job.py"]
    assert image.context_path("/opt/program/job.py") == tmp_path / "src" / "job.py"
    assert image.context_path("/usr/local/bin/run") == tmp_path / "run.sh"
    assert image.context_path("/opt/program/missing.py") is None
    assert image.command(None, ["--x"]) == ["--x"]  # arguments replace CMD
    assert image.command(["python3", "-u"], None) == ["python3", "-u"]  # an entrypoint of the job's drops CMD
    assert dockerfile.read(PROCESSOR).command(None, None) == ["python3", "/opt/program/process"]


SDK_SCRIPT = """
import os, sys
import numpy as np

arguments = dict(zip(sys.argv[1::2], sys.argv[2::2]))
rows = np.loadtxt(os.path.join(arguments["--in"], "data.csv"), delimiter=",")
os.makedirs(arguments["--out"], exist_ok=True)
np.savetxt(os.path.join(arguments["--out"], "sums.csv"), rows.sum(axis=1), fmt="%d")
print("summed", len(rows), "rows")
"""


def test_the_sagemaker_sdks_script_processor_runs_on_the_framework_image(localaws_process, tmp_path, monkeypatch):
    """The SDK's ScriptProcessor, unchanged, on its scikit-learn image: its code uploaded as an input under
    /opt/ml/processing/input/code and run by ``python3`` there, its logs in CloudWatch. (The SDK's own
    wait and log reader poll every 10 s: the test waits itself.)"""
    for name, value in {
        "AWS_ENDPOINT_URL": localaws_process.endpoint_url,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "SAGEMAKER_VALIDATE_ROLE": "false",
    }.items():
        monkeypatch.setenv(name, value)
    import boto3
    from sagemaker.core import image_uris
    from sagemaker.core.helper.session_helper import Session
    from sagemaker.core.processing import (
        ProcessingInput,
        ProcessingOutput,
        ProcessingS3Input,
        ScriptProcessor,
    )
    from sagemaker.core.shapes import ProcessingS3Output

    s3, bucket = localaws_process.client("s3"), unique("sdk")
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="raw/data.csv", Body=b"1,2\n3,4\n")
    (tmp_path / "prepare.py").write_text(SDK_SCRIPT)
    session = Session(boto_session=boto3.Session(region_name="us-east-1"), default_bucket=bucket)
    processor = ScriptProcessor(
        role=ROLE_ARN,
        image_uri=image_uris.retrieve(
            "sklearn", "us-east-1", version="1.2-1", instance_type="ml.m5.large", image_scope="training"
        ),
        command=["python3"],
        instance_count=1,
        instance_type="ml.m5.large",
        sagemaker_session=session,
    )
    processor.run(
        code=str(tmp_path / "prepare.py"),
        inputs=[
            ProcessingInput(
                input_name="raw",
                s3_input=ProcessingS3Input(
                    s3_uri=f"s3://{bucket}/raw",
                    local_path="/opt/ml/processing/input/raw",
                    s3_data_type="S3Prefix",
                    s3_input_mode="File",
                ),
            )
        ],
        outputs=[
            ProcessingOutput(
                output_name="sums",
                s3_output=ProcessingS3Output(
                    s3_uri=f"s3://{bucket}/sums", local_path="/opt/ml/processing/output", s3_upload_mode="EndOfJob"
                ),
            )
        ],
        arguments=["--in", "/opt/ml/processing/input/raw", "--out", "/opt/ml/processing/output"],
        wait=False,
        logs=False,
    )
    name = processor.latest_job.processing_job_name
    job = wait_for_processing(localaws_process.client("sagemaker"), name)
    assert job["ProcessingJobStatus"] == "Completed", job.get("FailureReason")
    assert s3.get_object(Bucket=bucket, Key="sums/sums.csv")["Body"].read() == b"3\n7\n"
    [lines] = log_lines(localaws_process.client("logs"), name).values()
    assert "summed 2 rows" in " ".join(lines)
    assert job["AppSpecification"]["ContainerEntrypoint"][0] == "python3"
    assert any(item["InputName"] == "code" for item in job["ProcessingInputs"])
