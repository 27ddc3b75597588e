"""`make run`: one real SageMaker training job of the example workload, through localaws.

Starts localaws unless one already listens, writes the digits data set to S3,
makes the training image available (registered build context; a Docker engine's
registry is used when localaws finds one), runs the job with the default
hyperparameter preset while streaming its CloudWatch log, then loads the trained
model and predicts held-out digits. Prints a summary and writes it as JSON.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "plugins"), str(ROOT / "docker" / "training")]

import boto3  # noqa: E402

from localaws.client import register_image  # noqa: E402
from localaws.images import context_hash  # noqa: E402
from ml_pipeline.config import load_preset, sagemaker_hyperparameters  # noqa: E402
from ml_pipeline.dataset import held_out, write_channels  # noqa: E402

CONTEXT = ROOT / "docker" / "training"
ROLE_ARN = "arn:aws:iam::123456789012:role/SageMakerExecution"


def healthy(endpoint: str) -> bool:
    try:
        with urllib.request.urlopen(endpoint + "/_localaws/health", timeout=1):
            return True
    except OSError:
        return False


def start_localaws(endpoint: str, out: Path) -> subprocess.Popen | None:
    if healthy(endpoint):
        print(f"localaws already listening on {endpoint}")
        return None
    log = open(out / "localaws.log", "w")
    port = endpoint.rsplit(":", 1)[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "localaws", "serve", "--port", port], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT
    )
    started = time.monotonic()
    while not healthy(endpoint):
        if process.poll() is not None or time.monotonic() - started > 30:
            raise SystemExit(f"localaws did not start; see {out / 'localaws.log'}")
        time.sleep(0.1)
    print(f"started localaws on {endpoint} in {time.monotonic() - started:.1f}s (log: {out / 'localaws.log'})")
    return process


def stream_logs(logs, job: str, seen: dict) -> None:
    group = "/aws/sagemaker/TrainingJobs"
    try:
        streams = logs.describe_log_streams(logGroupName=group, logStreamNamePrefix=job + "/")["logStreams"]
    except logs.exceptions.ResourceNotFoundException:
        return
    for stream in streams:
        name = stream["logStreamName"]
        kwargs = {"nextToken": seen[name]} if name in seen else {}
        response = logs.get_log_events(logGroupName=group, logStreamName=name, startFromHead=True, **kwargs)
        for event in response["events"]:
            print(f"  [{name.split('/')[-1]}] {event['message']}")
        seen[name] = response["nextForwardToken"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--endpoint-url", default=os.environ.get("LOCALAWS_ENDPOINT", "http://127.0.0.1:4566"))
    parser.add_argument("--preset", default="default")
    parser.add_argument("--out", default=str(ROOT / "out"))
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "localaws")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "localaws")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")

    server = start_localaws(args.endpoint_url, out)
    try:
        return run(args, out)
    finally:
        if server is not None:
            server.terminate()
            server.wait(60)


def run(args, out: Path) -> int:
    def client(service):
        return boto3.client(service, endpoint_url=args.endpoint_url)

    s3, sm, ecr, logs = client("s3"), client("sagemaker"), client("ecr"), client("logs")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    bucket = "ml-pipeline-example"
    try:
        s3.create_bucket(Bucket=bucket)
    except s3.exceptions.BucketAlreadyOwnedByYou:
        pass

    channels = write_channels(s3, bucket, f"datasets/digits/{stamp}", seed=42)
    print(f"data: train {channels['train']}, validation {channels['validation']}")

    tag = context_hash(CONTEXT)
    try:
        repository = ecr.create_repository(repositoryName="digits-training")["repository"]
    except ecr.exceptions.RepositoryAlreadyExistsException:
        repository = ecr.describe_repositories(repositoryNames=["digits-training"])["repositories"][0]
    image = f"{repository['repositoryUri']}:{tag}"
    register_image(args.endpoint_url, image, CONTEXT)
    print(f"image: {image} (build context docker/training, content hash {tag})")

    preset = load_preset(args.preset)
    job = f"digits-{args.preset}-{stamp}"
    started = time.monotonic()
    sm.create_training_job(
        TrainingJobName=job,
        AlgorithmSpecification={
            "TrainingImage": image,
            "TrainingInputMode": "File",
            "MetricDefinitions": preset["metric_definitions"],
        },
        RoleArn=ROLE_ARN,
        InputDataConfig=[
            {
                "ChannelName": name,
                "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": channels[name],
                                                "S3DataDistributionType": "FullyReplicated"}},
                "ContentType": "text/csv",
            }
            for name in ("train", "validation")
        ],
        OutputDataConfig={"S3OutputPath": f"s3://{bucket}/training-jobs"},
        ResourceConfig={"InstanceType": "ml.m5.xlarge", "InstanceCount": 1, "VolumeSizeInGB": 10},
        StoppingCondition={"MaxRuntimeInSeconds": 1800},
        HyperParameters=sagemaker_hyperparameters(preset),
        CheckpointConfig={"S3Uri": f"s3://{bucket}/checkpoints/{job}"},
        Tags=[{"Key": "project", "Value": "ml-pipeline"}],
    )
    print(f"training job {job}: created; its CloudWatch log follows")
    seen: dict = {}
    secondary = None
    while True:
        description = sm.describe_training_job(TrainingJobName=job)
        if description["SecondaryStatus"] != secondary:
            secondary = description["SecondaryStatus"]
            print(f"  status {description['TrainingJobStatus']} / {secondary}: "
                  f"{description['SecondaryStatusTransitions'][-1]['StatusMessage']}")
        stream_logs(logs, job, seen)
        if description["TrainingJobStatus"] in ("Completed", "Failed", "Stopped"):
            break
        time.sleep(1)
    stream_logs(logs, job, seen)
    wall = time.monotonic() - started

    summary = {
        "training_job": job,
        "status": description["TrainingJobStatus"],
        "failure_reason": description.get("FailureReason"),
        "wall_seconds": round(wall, 1),
        "training_seconds": description.get("TrainingTimeInSeconds"),
        "billable_seconds": description.get("BillableTimeInSeconds"),
        "phases": [
            {"status": t["Status"], "seconds": round(t["EndTime"].timestamp() - t["StartTime"].timestamp(), 1)
             if "EndTime" in t else None, "message": t["StatusMessage"]}
            for t in description["SecondaryStatusTransitions"]
        ],
        "hyperparameters": description["HyperParameters"],
        "final_metrics": {m["MetricName"]: round(m["Value"], 4) for m in description.get("FinalMetricDataList", [])},
        "model_artifact": description.get("ModelArtifacts", {}).get("S3ModelArtifacts"),
        "image": image,
        "data": channels,
    }
    if description["TrainingJobStatus"] == "Completed":
        summary["held_out"] = evaluate(s3, summary["model_artifact"])
    path = out / "run-summary.json"
    path.write_text(json.dumps(summary, indent=2, default=str))
    print_summary(summary, path)
    return 0 if description["TrainingJobStatus"] == "Completed" else 1


def evaluate(s3, artifact: str) -> dict:
    """Load model.tar.gz as a serving container would and predict the held-out test split."""
    from digits import model as digits_model

    bucket, key = artifact[len("s3://"):].split("/", 1)
    with tempfile.TemporaryDirectory() as model_dir:
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        with tarfile.open(fileobj=io.BytesIO(body), mode="r:gz") as tar:
            tar.extractall(model_dir)
        net = digits_model.load(Path(model_dir))
        features, labels = held_out(seed=42)
        predictions = digits_model.predict(net, features)
    correct = sum(int(p == y) for p, y in zip(predictions, labels))
    return {
        "samples": len(labels),
        "accuracy": round(correct / len(labels), 4),
        "first_predictions": [{"label": int(y), "predicted": int(p)} for p, y in list(zip(predictions, labels))[:8]],
    }


def print_summary(summary: dict, path: Path) -> None:
    print("\n=== summary ===")
    print(f"training job   {summary['training_job']}: {summary['status']}"
          + (f" ({summary['failure_reason']})" if summary["failure_reason"] else ""))
    print(f"time           {summary['wall_seconds']}s wall, {summary['training_seconds']}s training, "
          f"{summary['billable_seconds']}s billable")
    for phase in summary["phases"]:
        print(f"  {phase['status']:<12} {phase['seconds'] if phase['seconds'] is not None else '':>6}s  "
              f"{phase['message']}")
    print(f"metrics        {summary['final_metrics']}")
    print(f"model          {summary['model_artifact']}")
    if "held_out" in summary:
        held = summary["held_out"]
        print(f"held-out test  {held['accuracy']:.1%} of {held['samples']} digits right; first few "
              + ", ".join(f"{p['label']}->{p['predicted']}" for p in held["first_predictions"]))
    print(f"summary JSON   {path}")


if __name__ == "__main__":
    sys.exit(main())
