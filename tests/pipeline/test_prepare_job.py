"""``prepare`` as a processing job, its parts one at a time: the job's entry (include/processing/
prepare_channels.py) run as the container runs it, checking what the experiment's function wrote as the
worker checks it; the channels read back from the job's output in localaws's S3; and teardown stopping a
processing job the run left running. The whole chain runs in tests/pipeline/test_experiments_e2e.py."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.pipeline.steps_support import experiment, plan, write

ENTRY_FUNCTIONS = """
import pathlib

def shares(output_dir, *, start, end, seed, host, hosts):
    folder = pathlib.Path(output_dir) / "train"
    folder.mkdir()
    (folder / f"{host}.csv").write_text(f"{seed},{start:%Y-%m-%d},{end:%Y-%m-%d},{len(hosts)}\\n")

def stray(output_dir, *, start, end, seed):
    (pathlib.Path(output_dir) / "train").mkdir()
    (pathlib.Path(output_dir) / "train" / "a.csv").write_text("1\\n")
    (pathlib.Path(output_dir) / "notes.txt").write_text("not a channel\\n")

def empty(output_dir, *, start, end, seed):
    (pathlib.Path(output_dir) / "validation").mkdir()

def broken(output_dir, *, start, end, seed):
    raise RuntimeError("no data for this week")
"""


def run_entry(tmp_path, function: str) -> tuple[int, str, str]:
    """The entry as the job runs it: its code input, its resource config, its output and message paths."""
    from ml_pipeline import prepare_job

    code = write(tmp_path / "code", {"prep.py": ENTRY_FUNCTIONS})
    config = tmp_path / "resourceconfig.json"
    config.write_text(json.dumps({"current_host": "algo-2", "hosts": ["algo-1", "algo-2"]}))
    message = tmp_path / "output" / "message"
    argv = ["--code", str(code), "--function", f"prep:{function}", "--output", str(tmp_path / "channels")]
    argv += ["--start", "2026-01-05T00:00:00+00:00", "--end", "2026-01-12T00:00:00+00:00", "--seed", "7"]
    argv += ["--message", str(message), "--resources", str(config)]
    done = subprocess.run(
        [sys.executable, str(prepare_job.ENTRY), *argv], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    return done.returncode, message.read_text() if message.exists() else "", done.stdout + done.stderr


def test_the_entry_calls_the_function_with_the_run_and_each_hosts_share(tmp_path):
    code, message, output = run_entry(tmp_path, "shares")
    assert code == 0, output
    assert (tmp_path / "channels" / "train" / "algo-2.csv").read_text() == "7,2026-01-05,2026-01-12,2\n"
    assert message == "prep:shares wrote train (1 files)"
    assert "wrote train (1 files) on algo-2" in output


@pytest.mark.parametrize(
    "function, says",
    [
        ("stray", "prep:stray: wrote notes.txt outside a channel folder (output_dir/<channel>/<files>)"),
        ("empty", "prep:empty: channel validation holds no file (an empty channel)"),
        ("broken", "prep:broken raised RuntimeError: no data for this week"),
    ],
)
def test_the_entry_fails_the_job_saying_why_in_its_exit_message(tmp_path, function, says):
    code, message, output = run_entry(tmp_path, function)
    assert code == 1 and message == says, output


def test_the_channels_are_read_back_from_the_jobs_output_and_a_stray_object_refused(s3_bucket, tmp_path):
    from ml_pipeline import channels

    s3, bucket = s3_bucket
    resolved = experiment(write(tmp_path / "wine", {"prep.py": ""}), prepare="prep:write", prepare_job={"x": 1})
    run = plan(resolved, bucket)
    prefix = run["names"]["data_prefix"]
    for key in ("train/part-0.csv", "train/part-1.csv", "validation/sub/v.csv"):  # as the job's output uploads
        s3.put_object(Bucket=bucket, Key=f"{prefix}/{key}", Body=b"1\n")
    with pytest.raises(ValueError, match="no manifest and no processing job of this run wrote it"):
        channels.prepare(s3, run, None)
    made = channels.prepare(s3, run, "wine-prepare-x")
    assert made == {"train": f"s3://{bucket}/{prefix}/train/", "validation": f"s3://{bucket}/{prefix}/validation/"}
    manifest = json.loads(s3.get_object(Bucket=bucket, Key=f"{prefix}/manifest.json")["Body"].read())
    assert manifest["processing_job"] == "wine-prepare-x" and manifest["files"] == {"train": 2, "validation": 1}
    assert channels.prepare(s3, run, None) == made  # complete: reused, whatever job

    other = plan(resolved, bucket)
    other["names"]["data_prefix"] = f"{prefix}-other"
    s3.put_object(Bucket=bucket, Key=f"{prefix}-other/train/a.csv", Body=b"1\n")
    s3.put_object(Bucket=bucket, Key=f"{prefix}-other/loose.csv", Body=b"1\n")
    with pytest.raises(ValueError, match="wrote loose.csv outside a channel folder"):
        channels.prepare(s3, other, "wine-prepare-y")


def test_teardown_stops_the_processing_job_a_run_left_running_and_names_how_it_ended(localaws_process, request):
    from ml_pipeline.closing import Report, jobs_of_run, stop_jobs
    from tests.conftest import unique
    from tests.fixtures.images import IMAGES, image_for
    from tests.localaws.test_processing_jobs import processing_request, s3_output

    image = image_for(request, localaws_process, IMAGES / "processor", "processor")
    sm = localaws_process.client("sagemaker")
    key = unique("20260105")
    run = {
        "key": key,
        "params": {"mode": "train", "preset": None},
        "names": {"endpoint": "e", "tuning_job": f"wine-{key}"},
        "experiment": {"name": "wine", "deploy": False, "prepare_job": {"instance_count": 1}},
    }
    name = f"wine-prepare-{key}"
    output = s3_output("out", "s3://nowhere/out", "/opt/ml/processing/output")
    sm.create_processing_job(
        **processing_request(name, image, [], [output], ["--output", "/opt/ml/processing/output", "--sleep", "600"])
    )
    report = Report()
    stop_jobs(sm, run, report)
    assert report.removed == [f"stopped processing job {name}"]
    jobs = jobs_of_run(sm, run, {"training": [], "tuning": [], "processing": [name]}, Report(), wait_seconds=60)
    # (with the container's "stopped by SIGTERM" as the reason, when it had started)
    assert [(job["name"], job["status"]) for job in jobs["processing"]] == [(name, "Stopped")]
    assert jobs["training"] == [] and "transform" not in jobs  # an experiment without batch_transform


def test_a_retry_re_attaches_to_the_runs_processing_job_and_one_that_failed_is_followed_by_r2(
    localaws_process, hook, request
):
    """The start task run again (a retry, a cleared task) takes the job of its name as its own while it runs
    or once it completed; after a failed one it starts ``<name>-r2``: never a second job for one attempt."""
    import copy

    from ml_pipeline.operators.sagemaker import RunProcessingJobOperator
    from tests.conftest import unique
    from tests.fixtures.images import IMAGES, image_for
    from tests.localaws.test_processing_jobs import processing_request, s3_output, wait_for_processing

    image = image_for(request, localaws_process, IMAGES / "processor", "processor")
    sm = localaws_process.client("sagemaker")
    bucket = unique("attempts")
    localaws_process.client("s3").create_bucket(Bucket=bucket)
    output = s3_output("out", f"s3://{bucket}/out", "/opt/ml/processing/output")

    def start(name: str, *extra: str) -> dict:
        config = processing_request(name, image, [], [output], ["--output", "/opt/ml/processing/output", *extra])
        operator = RunProcessingJobOperator(task_id="start_processing_job", aws_conn_id="aws_default", config=config)
        return copy.deepcopy(operator.execute({}))["Processing"]

    running = unique("wine-prepare")
    first = start(running, "--sleep", "600")
    again = start(running, "--sleep", "600")
    assert again["ProcessingJobArn"] == first["ProcessingJobArn"] and again["ProcessingJobStatus"] == "InProgress"
    assert [
        j["ProcessingJobName"] for j in sm.list_processing_jobs(NameContains=running)["ProcessingJobSummaries"]
    ] == [running]
    sm.stop_processing_job(ProcessingJobName=running)

    failing = unique("wine-prepare")
    start(failing, "--fail", "no data")
    assert wait_for_processing(sm, failing)["ProcessingJobStatus"] == "Failed"
    retried = start(failing)
    assert retried["ProcessingJobName"] == f"{failing}-r2"
    assert wait_for_processing(sm, f"{failing}-r2")["ProcessingJobStatus"] == "Completed"
    assert start(failing)["ProcessingJobName"] == f"{failing}-r2"  # done well: that one stays the task's
