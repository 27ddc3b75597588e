"""SageMaker batch transform through localaws over HTTP with boto3: jobs that run the model's ``serve``
(tests/localaws/images/line-scorer, a linear model over CSV and JSON Lines records) over S3 data, with
their outputs read back from S3 and checked line by line against the scores the model's weights give.
The runner is what the first test is about (both runners); the rest are the job's own logic and run
under the process runner. The last tests check the record splitting and the JSONPath subset alone."""

from __future__ import annotations

import gzip
import io
import json
import math
import os
import struct
import tarfile
import time

import pytest
from botocore.exceptions import ClientError

from tests.conftest import LocalAWSProcess, unique
from tests.fixtures.images import LINE_SCORER, MISBEHAVING, image_for
from tests.support import ROLE_ARN

pytestmark = pytest.mark.timeout(300)

TERMINAL = ("Completed", "Failed", "Stopped")
LOG_GROUP = "/aws/sagemaker/TransformJobs"
WEIGHTS, BIAS = [1.0, 2.0, 3.0], 0.5


# --- helpers -------------------------------------------------------------------------------------


def score(values) -> float:
    return sum(w * float(v) for w, v in zip(WEIGHTS, values, strict=True)) + BIAS


def model_archive() -> bytes:
    buffer = io.BytesIO()
    data = json.dumps({"weights": WEIGHTS, "bias": BIAS}).encode()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        info = tarfile.TarInfo("model.json")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def create_model(server, bucket: str, image: str, env: dict | None = None, with_data: bool = True) -> str:
    name = unique("scorer")
    container = {"Image": image, "Environment": env or {}}
    if with_data:
        key = f"models/{name}/model.tar.gz"
        server.client("s3").put_object(Bucket=bucket, Key=key, Body=model_archive())
        container["ModelDataUrl"] = f"s3://{bucket}/{key}"
    server.client("sagemaker").create_model(ModelName=name, PrimaryContainer=container, ExecutionRoleArn=ROLE_ARN)
    return name


def transform_request(name: str, model: str, source: str, output: str, **extra) -> dict:
    transform_input = {
        "DataSource": {"S3DataSource": {"S3DataType": extra.pop("data_type", "S3Prefix"), "S3Uri": source}},
        "ContentType": extra.pop("content_type", "text/csv"),
        "SplitType": extra.pop("split_type", "Line"),
        **extra.pop("transform_input", {}),
    }
    return {
        "TransformJobName": name,
        "ModelName": model,
        "TransformInput": transform_input,
        "TransformOutput": {"S3OutputPath": output, "AssembleWith": "Line", **extra.pop("transform_output", {})},
        "TransformResources": {"InstanceType": "ml.m5.large", "InstanceCount": extra.pop("instances", 1)},
        **extra,
    }


def wait_transform(sm, name: str, until=TERMINAL, timeout: float = 180) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        description = sm.describe_transform_job(TransformJobName=name)
        if description["TransformJobStatus"] in until:
            return description
        if time.monotonic() > deadline:
            raise TimeoutError(f"{name} still {description['TransformJobStatus']} after {timeout}s")
        time.sleep(0.1)


def read_lines(s3, bucket: str, key: str) -> list[str]:
    return s3.get_object(Bucket=bucket, Key=key)["Body"].read().decode().splitlines()


def output_keys(s3, bucket: str, prefix: str) -> list[str]:
    return sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", []))


def job_logs(server, name: str) -> dict[str, list[str]]:
    """Every log stream of the job (``<job>/<instance>-<epoch>`` and its ``/data-log``) -> its messages."""
    logs = server.client("logs")
    streams = logs.describe_log_streams(logGroupName=LOG_GROUP, logStreamNamePrefix=f"{name}/")["logStreams"]
    return {
        stream["logStreamName"]: [
            event["message"]
            for event in logs.get_log_events(
                logGroupName=LOG_GROUP, logStreamName=stream["logStreamName"], startFromHead=True
            )["events"]
        ]
        for stream in streams
    }


def requests_logged(logs: dict[str, list[str]]) -> list[tuple[int, int]]:
    """(records, bytes) of every /invocations request the containers printed."""
    found = []
    for stream, lines in logs.items():
        if not stream.endswith("/data-log"):
            for line in lines:
                if line.startswith("invocations "):
                    fields = dict(part.split("=") for part in line.split()[1:])
                    found.append((int(fields["records"]), int(fields["bytes"])))
    return found


def data_log(logs: dict[str, list[str]]) -> list[str]:
    """The data logs' lines without their time stamps."""
    return [
        line.split(":[sagemaker logs]: ", 1)[1]
        for stream, lines in sorted(logs.items())
        if stream.endswith("/data-log")
        for line in lines
    ]


def left_running(server, name: str, docker_client=None) -> list[str]:
    """The job's containers or processes still there."""
    if docker_client is not None:
        return [
            c.name
            for c in docker_client.containers.list(all=True, filters={"label": "localaws=1"})
            if c.name.startswith(f"localaws-tj-{name}-")
        ]
    marker = f"/transform-jobs/{name}/".encode()
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/environ", "rb") as handle:
                environ = handle.read()
        except OSError:
            continue
        if any(item.startswith(b"SAGEMAKER_BASE_DIR=") and marker in item for item in environ.split(b"\0")):
            found.append(pid)
    return found


@pytest.fixture
def scorer(request, localaws):
    return image_for(request, localaws, LINE_SCORER, "line-scorer")


@pytest.fixture(scope="module")
def process_scorer(request, localaws_process):
    return image_for(request, localaws_process, LINE_SCORER, "line-scorer")


@pytest.fixture
def space(localaws_process):
    bucket = unique("transform")
    localaws_process.client("s3").create_bucket(Bucket=bucket)
    return bucket


# --- jobs ----------------------------------------------------------------------------------------


@pytest.mark.runners
def test_line_split_multirecord_batches_fill_max_payload_and_keep_the_records_order(request, localaws, scorer, bucket):
    s3, sm = localaws.client("s3"), localaws.client("sagemaker")
    pad = "0" * 25  # ~84-byte lines: 30,000 of them are 2.4 MiB, three requests of at most 1 MiB
    rows = [(i % 7, i % 9, i % 5) for i in range(30_000)]  # one digit each: lines of one length
    body = "".join(f"{a}.{pad},{b}.{pad},{c}.{pad}\n" for a, b, c in rows).encode()
    line_bytes = len(body) // len(rows)
    s3.put_object(Bucket=bucket, Key="batch/in/scores.csv", Body=body)
    model = create_model(
        localaws, bucket, scorer, env={"FROM_MODEL": "1", "SHARED": "model", "ECHO_ENV": "FROM_MODEL,FROM_JOB,SHARED"}
    )
    name = unique("multi")
    sm.create_transform_job(
        **transform_request(
            name,
            model,
            f"s3://{bucket}/batch/in/",
            f"s3://{bucket}/batch/out",
            BatchStrategy="MultiRecord",
            MaxPayloadInMB=1,
            MaxConcurrentTransforms=2,
            Environment={"FROM_JOB": "1", "SHARED": "job"},
            Tags=[{"Key": "team", "Value": "scoring"}],
        )
    )
    done = wait_transform(sm, name)
    assert done["TransformJobStatus"] == "Completed", done.get("FailureReason")
    assert done["TransformStartTime"] <= done["TransformEndTime"]
    assert (done["BatchStrategy"], done["MaxPayloadInMB"], done["MaxConcurrentTransforms"]) == ("MultiRecord", 1, 2)

    lines = read_lines(s3, bucket, "batch/out/scores.csv.out")
    assert len(lines) == len(rows)
    for line, row in zip(lines, rows, strict=True):
        assert math.isclose(float(line), score(row), rel_tol=1e-6), (line, row)

    logs = job_logs(localaws, name)
    per_request = (1024 * 1024) // line_bytes
    sent = requests_logged(logs)
    assert sorted(records for records, _ in sent) == sorted([per_request, per_request, len(rows) - 2 * per_request])
    assert all(size <= 1024 * 1024 for _, size in sent)
    container = next(lines for stream, lines in logs.items() if not stream.endswith("/data-log"))
    assert (
        "batch environment SAGEMAKER_BATCH=true SAGEMAKER_MAX_CONCURRENT_TRANSFORMS=2 "
        "SAGEMAKER_BATCH_STRATEGY=MULTI_RECORD SAGEMAKER_MAX_PAYLOAD_IN_MB=1"
    ) in container
    assert any("model from" in line for line in container)  # the ModelDataUrl's model.json, unpacked
    assert "environment FROM_MODEL=1 FROM_JOB=1 SHARED=job" in container  # the job's over the model's
    assert sm.list_tags(ResourceArn=done["TransformJobArn"])["Tags"] == [{"Key": "team", "Value": "scoring"}]
    assert data_log(logs) == ["MaxConcurrentTransforms=2, MaxPayloadInMB=1, BatchStrategy=MULTI_RECORD"]
    (stream,) = [s for s in logs if not s.endswith("/data-log")]
    assert stream.startswith(f"{name}/i-") and stream.rsplit("-", 1)[1].isdigit()
    docker_client = request.getfixturevalue("docker_client") if localaws.runner == "docker" else None
    assert left_running(localaws, name, docker_client) == []


def test_single_record_from_execution_parameters_over_several_files_and_instances(
    localaws_process, process_scorer, space
):
    s3, sm = localaws_process.client("s3"), localaws_process.client("sagemaker")
    files = {"a.csv": [(1, 2, 3), (0, 0, 1), (2, 2, 2)], "b.csv": [(4, 0, 0), (1, 1, 1)], "sub/c.csv": [(0, 5, 0)]}
    for key, rows in files.items():
        s3.put_object(Bucket=space, Key=f"in/{key}", Body="".join(",".join(map(str, r)) + "\n" for r in rows))
    asked = {"BatchStrategy": "SINGLE_RECORD", "MaxConcurrentTransforms": 3, "MaxPayloadInMB": 2}
    model = create_model(localaws_process, space, process_scorer, env={"EXECUTION_PARAMETERS": json.dumps(asked)})
    name = unique("single")
    sm.create_transform_job(
        **transform_request(
            name,
            model,
            f"s3://{space}/in",
            f"s3://{space}/out/",
            instances=2,
            transform_output={"AssembleWith": "None"},
        )
    )
    done = wait_transform(sm, name)
    assert done["TransformJobStatus"] == "Completed", done.get("FailureReason")
    # What the container's /execution-parameters asked for, the request having said nothing.
    assert (done["BatchStrategy"], done["MaxConcurrentTransforms"], done["MaxPayloadInMB"]) == ("SingleRecord", 3, 2)
    assert output_keys(s3, space, "out/") == ["out/a.csv.out", "out/b.csv.out", "out/sub/c.csv.out"]
    for key, rows in files.items():
        assert [float(x) for x in read_lines(s3, space, f"out/{key}.out")] == [score(r) for r in rows]

    logs = job_logs(localaws_process, name)
    assert len([s for s in logs if s.endswith("/data-log")]) == 2  # one per instance
    assert requests_logged(logs) == [(1, 6)] * 6
    served = [sum(line.startswith("invocations ") for line in lines) for s, lines in logs.items() if "data" not in s]
    assert sorted(served) == [2, 4]  # every other object to each instance: a and c, b
    assert data_log(logs) == ["MaxConcurrentTransforms=3, MaxPayloadInMB=2, BatchStrategy=SINGLE_RECORD"] * 2
    environments = [line for lines in logs.values() for line in lines if line.startswith("batch environment")]
    # Not set by the request: not passed (the container asked for its own).
    assert (
        environments
        == [
            "batch environment SAGEMAKER_BATCH=true SAGEMAKER_MAX_CONCURRENT_TRANSFORMS=- SAGEMAKER_BATCH_STRATEGY=- "
            "SAGEMAKER_MAX_PAYLOAD_IN_MB=-"
        ]
        * 2
    )


def test_input_filter_join_source_and_output_filter_on_csv_and_gzipped_json_lines_from_a_manifest(
    localaws_process, process_scorer, space
):
    s3, sm = localaws_process.client("s3"), localaws_process.client("sagemaker")
    model = create_model(localaws_process, space, process_scorer)
    csv_rows = [(17, 1, 2, 3), (18, 0, 0, 1), (19, 5, 1, 0)]
    s3.put_object(Bucket=space, Key="csv/in/ids.csv", Body="".join(",".join(map(str, r)) + "\n" for r in csv_rows))
    records = [{"id": f"r{i}", "features": [i, i + 1, 2 * i], "note": "kept out"} for i in range(5)]
    jsonl = "".join(json.dumps(r) + "\n" for r in records).encode()
    s3.put_object(Bucket=space, Key="json/data/part-1.jsonl.gz", Body=gzip.compress(jsonl))
    s3.put_object(Bucket=space, Key="json/data/part-2.jsonl.gz", Body=gzip.compress(jsonl[: len(jsonl) // 2]))
    manifest = [{"prefix": f"s3://{space}/json/data/"}, "part-1.jsonl.gz"]  # part-2 not listed: not read
    s3.put_object(Bucket=space, Key="json/manifest.json", Body=json.dumps(manifest))

    csv_job, json_job = unique("join-csv"), unique("join-json")
    sm.create_transform_job(
        **transform_request(
            csv_job,
            model,
            f"s3://{space}/csv/in/",
            f"s3://{space}/csv/out/",
            transform_output={"Accept": "text/csv"},
            DataProcessing={"InputFilter": "$[1:]", "JoinSource": "Input", "OutputFilter": "$[0,-1]"},
        )
    )
    sm.create_transform_job(
        **transform_request(
            json_job,
            model,
            f"s3://{space}/json/manifest.json",
            f"s3://{space}/json/out",
            data_type="ManifestFile",
            content_type="application/jsonlines",
            transform_input={"CompressionType": "Gzip"},
            transform_output={"Accept": "application/jsonlines"},
            BatchStrategy="MultiRecord",
            DataProcessing={
                "InputFilter": "$.features",
                "JoinSource": "Input",
                "OutputFilter": "$['id','SageMakerOutput']",
            },
        )
    )
    for name in (csv_job, json_job):
        done = wait_transform(sm, name)
        assert done["TransformJobStatus"] == "Completed", done.get("FailureReason")

    # CSV: the id column kept out of the model's input, joined back, the score after it.
    assert read_lines(s3, space, "csv/out/ids.csv.out") == [f"{r[0]},{score(r[1:]):.6g}" for r in csv_rows]
    assert requests_logged(job_logs(localaws_process, csv_job)) == [(3, len("1,2,3\n0,0,1\n5,1,0\n"))]
    # JSON Lines: the features alone sent; each input object gets SageMakerOutput; the filter keeps two keys.
    assert output_keys(s3, space, "json/out/") == ["json/out/part-1.jsonl.gz.out"]
    got = [json.loads(line) for line in read_lines(s3, space, "json/out/part-1.jsonl.gz.out")]
    assert got == [{"id": r["id"], "SageMakerOutput": {"score": round(score(r["features"]), 6)}} for r in records]


def test_a_failing_object_leaves_no_output_the_others_complete_and_the_job_fails_with_the_reason(
    localaws_process, process_scorer, space
):
    s3, sm = localaws_process.client("s3"), localaws_process.client("sagemaker")
    s3.put_object(Bucket=space, Key="in/a-bad.csv", Body="1,2,3\nbad,1,1\n")
    s3.put_object(Bucket=space, Key="in/b-good.csv", Body="1,1,1\n2,0,0\n0,0,1\n")
    s3.put_object(Bucket=space, Key="in/c-huge.csv", Body="1," + "0" * (1024 * 1024 + 10) + ",1\n")
    server_error = create_model(localaws_process, space, process_scorer, env={"FAIL_ON": "bad"})
    client_error = create_model(localaws_process, space, process_scorer, env={"FAIL_ON": "bad", "FAIL_STATUS": "415"})
    five, four = unique("fails-5xx"), unique("fails-4xx")
    for name, model in ((five, server_error), (four, client_error)):
        sm.create_transform_job(
            **transform_request(
                name,
                model,
                f"s3://{space}/in/",
                f"s3://{space}/{name}/",
                MaxPayloadInMB=1,
                ModelClientConfig={"InvocationsMaxRetries": 1, "InvocationsTimeoutInSeconds": 30},
            )
        )
    for name, kind, status, sent in ((five, "AlgorithmError", 500, 2), (four, "ClientError", 415, 1)):
        done = wait_transform(sm, name)
        assert done["TransformJobStatus"] == "Failed"
        assert done["FailureReason"].startswith(
            f"{kind}: See job logs for more information (s3://{space}/in/a-bad.csv:"
        )
        # The good object's output is there, the failed ones' are not.
        assert output_keys(s3, space, f"{name}/") == [f"{name}/b-good.csv.out"]
        assert read_lines(s3, space, f"{name}/b-good.csv.out") == ["6.5", "2.5", "3.5"]
        logs = job_logs(localaws_process, name)
        said = data_log(logs)
        detail = "Bad HTTP status received from algorithm: 500" if status == 500 else "ClientError: 415"
        assert f"{space}/in/a-bad.csv: {detail}" in said, said
        assert f"{space}/in/a-bad.csv: cannot score a record with bad" in said
        assert any(line.startswith(f"{space}/in/c-huge.csv: Too much data for max payload size") for line in said)
        # A 5xx is retried (InvocationsMaxRetries), a 4xx is not; the huge record is never sent.
        assert [records for records, _ in requests_logged(logs)].count(2) == sent
        summary = next(
            s
            for s in sm.list_transform_jobs(NameContains=name)["TransformJobSummaries"]
            if s["TransformJobName"] == name
        )
        assert summary["FailureReason"] == done["FailureReason"]


def test_a_model_that_never_passes_its_ping_fails_the_job_and_leaves_nothing_running(tmp_path, request):
    # A localaws of its own, whose health check gives up after 2 s rather than 10 minutes.
    server = LocalAWSProcess(tmp_path, "process", LOCALAWS_HEALTH_CHECK_TIMEOUT_SECONDS="2").start()
    try:
        sm, s3 = server.client("sagemaker"), server.client("s3")
        image = image_for(request, server, MISBEHAVING, "misbehaving")
        bucket = unique("ping")
        s3.create_bucket(Bucket=bucket)
        s3.put_object(Bucket=bucket, Key="in/a.csv", Body="1,2,3\n")
        exits = create_model(server, bucket, image, {"PING_STATUS": "500", "EXIT_AFTER": "1"}, with_data=False)
        never = create_model(server, bucket, image, {"PING_STATUS": "500"}, with_data=False)
        jobs = {model: unique("ping") for model in (exits, never)}
        started = time.monotonic()
        for model, name in jobs.items():
            sm.create_transform_job(**transform_request(name, model, f"s3://{bucket}/in/", f"s3://{bucket}/out/"))
        exited, timed_out = (wait_transform(sm, name) for name in jobs.values())
        assert 2 <= time.monotonic() - started < 30
        assert exited["TransformJobStatus"] == timed_out["TransformJobStatus"] == "Failed"
        assert exited["FailureReason"].startswith(
            f"ClientError: The primary container of model {exits} did not pass the ping health check. "
            "Please check CloudWatch logs for this transform job. The container exited with code 3"
        ), exited["FailureReason"]
        assert timed_out["FailureReason"] == (
            f"ClientError: The primary container of model {never} did not pass the ping health check within 2 "
            "seconds. Please check CloudWatch logs for this transform job."
        )
        assert output_keys(s3, bucket, "out/") == []
        for name in jobs.values():
            assert left_running(server, name) == []
    finally:
        server.stop()


def test_stop_transform_job_stops_the_containers_and_writes_nothing(localaws_process, process_scorer, space):
    s3, sm = localaws_process.client("s3"), localaws_process.client("sagemaker")
    s3.put_object(Bucket=space, Key="in/a.csv", Body="1,2,3\n")
    model = create_model(localaws_process, space, process_scorer, env={"INVOKE_SLEEP": "60"})
    name = unique("stop")
    sm.create_transform_job(**transform_request(name, model, f"s3://{space}/in/", f"s3://{space}/out/"))
    # Its instance is up once the job has its parameters (after /execution-parameters).
    deadline = time.monotonic() + 60
    while "BatchStrategy" not in sm.describe_transform_job(TransformJobName=name):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    started = time.monotonic()
    sm.stop_transform_job(TransformJobName=name)
    assert sm.describe_transform_job(TransformJobName=name)["TransformJobStatus"] in ("Stopping", "Stopped")
    done = wait_transform(sm, name)
    assert done["TransformJobStatus"] == "Stopped" and "FailureReason" not in done
    assert time.monotonic() - started < 20  # not the minute the request would take
    assert output_keys(s3, space, "out/") == []
    assert left_running(localaws_process, name) == []
    with pytest.raises(ClientError) as refused:
        sm.stop_transform_job(TransformJobName=name)
    assert refused.value.response["Error"]["Code"] == "ValidationException"
    assert "in status Stopped" in refused.value.response["Error"]["Message"]


def test_list_transform_jobs_filters_sorts_and_pages(localaws_process, process_scorer, space):
    sm = localaws_process.client("sagemaker")
    model = create_model(localaws_process, space, process_scorer)
    token = unique("listed")
    names = [f"{token}-{letter}" for letter in "cab"]
    before = time.time()
    for name in names:  # nothing under the prefix: each fails at once, starting nothing
        sm.create_transform_job(**transform_request(name, model, f"s3://{space}/empty/", f"s3://{space}/out/"))
    for name in names:
        done = wait_transform(sm, name)
        assert done["TransformJobStatus"] == "Failed"
        assert done["FailureReason"].startswith("ClientError: Data download failed:No S3 objects found under S3 URL")

    listed = sm.list_transform_jobs(NameContains=token)["TransformJobSummaries"]
    assert [s["TransformJobName"] for s in listed] == names[::-1]  # newest first, by default
    first = sm.list_transform_jobs(NameContains=token, SortBy="Name", SortOrder="Ascending", MaxResults=2)
    assert [s["TransformJobName"] for s in first["TransformJobSummaries"]] == sorted(names)[:2]
    rest = sm.list_transform_jobs(
        NameContains=token, SortBy="Name", SortOrder="Ascending", MaxResults=2, NextToken=first["NextToken"]
    )
    assert [s["TransformJobName"] for s in rest["TransformJobSummaries"]] == sorted(names)[2:]
    assert "NextToken" not in rest
    assert len(sm.list_transform_jobs(NameContains=token, StatusEquals="Failed")["TransformJobSummaries"]) == 3
    assert sm.list_transform_jobs(NameContains=token, StatusEquals="Completed")["TransformJobSummaries"] == []
    assert sm.list_transform_jobs(NameContains=token, CreationTimeBefore=before)["TransformJobSummaries"] == []
    paginated = sm.get_paginator("list_transform_jobs").paginate(NameContains=token, PaginationConfig={"PageSize": 1})
    assert sorted(s["TransformJobName"] for page in paginated for s in page["TransformJobSummaries"]) == sorted(names)


def test_bad_requests_are_refused_before_anything_runs(localaws_process, process_scorer, space):
    sm = localaws_process.client("sagemaker")
    model = create_model(localaws_process, space, process_scorer)
    source, output = f"s3://{space}/in/", f"s3://{space}/out/"

    def refused(request: dict, code: str = "ValidationException") -> str:
        with pytest.raises(ClientError) as caught:
            sm.create_transform_job(**request)
        assert caught.value.response["Error"]["Code"] == code, caught.value.response
        if code == "ValidationException":  # nothing was created
            with pytest.raises(ClientError) as missing:
                sm.describe_transform_job(TransformJobName=request["TransformJobName"])
            assert missing.value.response["Error"]["Message"] == (
                f"Could not find requested job with name {request['TransformJobName']}"
            )
        return caught.value.response["Error"]["Message"]

    name = unique("bad")
    assert refused(transform_request(name, "no-such-model", source, output)) == (
        'Could not find model "arn:aws:sagemaker:us-east-1:123456789012:model/no-such-model".'
    )
    assert "MaxPayloadInMB must be at most 100" in refused(
        transform_request(name, model, source, output, MaxPayloadInMB=101)
    )
    assert "must not exceed 100 MB" in refused(
        transform_request(name, model, source, output, MaxPayloadInMB=30, MaxConcurrentTransforms=4)
    )
    assert "Invalid JSONPath in DataProcessing" in refused(
        transform_request(name, model, source, output, DataProcessing={"InputFilter": "features"})
    )
    assert "reads CSV and JSON records only" in refused(
        transform_request(name, model, source, output, content_type="image/png", DataProcessing={"JoinSource": "Input"})
    )
    assert "Member must satisfy enum value set" in refused(
        transform_request(name, model, source, output, BatchStrategy="EveryRecord")
    )
    assert "must be an S3 URI" in refused(transform_request(name, model, source, "https://example.com/out"))
    with pytest.raises(ClientError) as caught:
        sm.create_transform_job(**transform_request("under_score", model, source, output))
    assert "at 'transformJobName' failed to satisfy constraint" in caught.value.response["Error"]["Message"]

    sm.create_transform_job(**transform_request(name, model, f"s3://{space}/empty/", output))
    message = refused(transform_request(name, model, source, output), code="ResourceInUse")
    assert message.startswith("Job name must be unique within an AWS account and region")
    assert wait_transform(sm, name)["TransformJobStatus"] == "Failed"


# --- records and JSONPath alone ------------------------------------------------------------------


def test_recordio_and_tfrecord_split_into_records_sent_alone_without_their_framing():
    from localaws.sagemaker.transform import records

    def recordio(data: bytes) -> bytes:
        padding = b"\0" * (-len(data) % 4)
        return struct.pack("<II", records.RECORDIO_MAGIC, len(data)) + data + padding

    def tfrecord(data: bytes) -> bytes:
        return struct.pack("<Q", len(data)) + b"crc!" + data + b"crc!"

    for frame, kind in ((recordio, "RecordIO"), (tfrecord, "TFRecord")):
        items = [b"one", b"second", b"3rd record"]
        stream = io.BytesIO(b"".join(frame(item) for item in items))
        found = list(records.split(stream, kind))
        assert [record.data for record in found] == items
        single = list(records.payloads(found, "SingleRecord", 6))
        assert [body for body, _ in single] == items
        (multi,) = list(records.payloads(found, "MultiRecord", 6))
        assert multi[0] == stream.getvalue() and len(multi[1]) == 3  # framed, padding kept
        with pytest.raises(records.MalformedInput):
            list(records.split(io.BytesIO(stream.getvalue()[:-3]), kind))
    # A RecordIO record whose data held the magic number: its parts joined again with it.
    magic = struct.pack("<I", records.RECORDIO_MAGIC)
    parts = [(1, b"left"), (3, b"right")]
    framed = b"".join(
        struct.pack("<II", records.RECORDIO_MAGIC, (flag << 29) | len(d)) + d + b"\0" * (-len(d) % 4)
        for flag, d in parts
    )
    (joined,) = list(records.split(io.BytesIO(framed), "RecordIO"))
    assert joined.data == b"left" + magic + b"right"
    lines = list(records.split(io.BytesIO(b"a\n\nb\r\nc"), "Line"))
    assert [r.data for r in lines] == [b"a\n", b"b\r\n", b"c"]
    with pytest.raises(records.PayloadTooLarge):
        list(records.payloads([records.Record(b"x" * (records.MB + 1), b"x")], "MultiRecord", 1))
    assert [len(batch) for _, batch in records.payloads(lines, "MultiRecord", 0)] == [3]  # 0: no limit


def test_the_jsonpath_subset_sagemaker_supports_and_how_records_are_joined_and_filtered():
    from localaws.sagemaker.transform.dataprocessing import (
        DataProcessing,
        PathError,
        RecordError,
        parse_path,
        select,
        split_output,
    )

    row = ["id", 1, 2, 3, 4, 5]
    record = {"id": 7, "features": {"a": [1, 2], "b": [3, 4]}, "SageMakerOutput": {"score": 1}}
    cases = [
        ("$", row, row),
        ("$[0]", row, "id"),
        ("$[-1]", row, 5),
        ("$[0,2]", row, ["id", 2]),
        ("$[1:]", row, [1, 2, 3, 4, 5]),
        ("$[1:4]", row, [1, 2, 3, 4]),  # both ends included, as SageMaker documents it
        ("$[:2]", row, ["id", 1, 2]),
        ("$.id", record, 7),
        ("$['id','SageMakerOutput']", record, {"id": 7, "SageMakerOutput": {"score": 1}}),
        ("$.features.*", record, [[1, 2], [3, 4]]),
        ("$.features.*[0]", record, [1, 3]),
        ('$.features.["a"]', record, [1, 2]),
        ("$.features.a[1]", record, 2),
    ]
    for path, value, expected in cases:
        assert select(parse_path(path), value) == expected, path
    for bad in ("features", "$..a", "$[a]", "$[1:2:3]", "$['a'", "$.a[", "$.a b"):
        with pytest.raises(PathError):
            parse_path(bad)

    # OutputFilter alone reads the model's output; a joined JSON record that is not an object is wrapped.
    only_output = DataProcessing({"OutputFilter": "$.label"}, "application/json", "application/json")
    assert only_output.result(b'{"x": 1}', b'{"label": 3, "p": 0.9}') == b"3"
    wrapped = DataProcessing({"JoinSource": "Input"}, "application/jsonlines", "application/jsonlines")
    assert json.loads(wrapped.result(b"[1, 2]\n", b'{"label": 3}')) == {
        "SageMakerInput": [1, 2],
        "SageMakerOutput": {"label": 3},
    }
    csv_out = DataProcessing({"JoinSource": "Input", "OutputFilter": "$[1:]"}, "text/csv", None)
    assert csv_out.result(b'7,"a,b"\n', b"0.5,x\n") == b'"a,b",0.5,x'  # RFC 4180 quoting kept
    assert split_output(b"1\n2\n", 2) == [b"1", b"2"] and split_output(b"[1, 2]", 2) == [b"1", b"2"]
    with pytest.raises(RecordError):
        split_output(b"1\n", 2)
