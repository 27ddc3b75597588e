"""localaws keeps its state across restarts (LOCALAWS_STATE_DIR), as the cloud it stands in for does.

Each test runs a real ``python -m localaws serve`` with a state folder, stops it (SIGTERM) or kills it
(SIGKILL, once the snapshots hold the last change: ``saved``) and starts it again on the same state
folder and work dir: what was created is there, what was running has ended with a reason, endpoints serve again,
and what a killed localaws left behind is gone. The images are quick stand-ins
(``tests/localaws/images/lingering`` trains in a moment or as long as told, ``misbehaving`` serves).
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import boto3
import pytest
from botocore.exceptions import ClientError

from tests.conftest import REPO_ROOT, LocalAWSProcess, unique
from tests.fixtures.docker_engine import ecr_uri
from tests.localaws.hosting_support import deploy, instances, wait_endpoint, wait_gone
from tests.localaws.test_processing_jobs import PROCESSOR, processing_request, s3_output, wait_for_processing
from tests.support import ROLE_ARN, training_request, wait_for_training, wait_until

pytestmark = [pytest.mark.timeout(900), pytest.mark.slow]  # localaws stopped, killed and started again

IMAGES = Path(__file__).parent / "images"
LINGERING = IMAGES / "lingering"
MISBEHAVING = IMAGES / "misbehaving"
LOSS = [{"Name": "loss", "Regex": r"loss=([0-9.]+)"}]
STOPPED_REASON = "InternalServerError: localaws stopped while the training job was running."


class Restartable(LocalAWSProcess):
    """A localaws with a state folder that a test stops or kills and starts again."""

    def __init__(self, tmp: Path, runner: str = "process", **env: str):
        super().__init__(tmp, runner, LOCALAWS_STATE_DIR=str(tmp / "state"), **env)
        self.tmp = tmp
        self.starts = 0

    @property
    def work_dir(self) -> Path:
        return Path(self.env["LOCALAWS_WORK_DIR"])

    @property
    def state_dir(self) -> Path:
        return Path(self.env["LOCALAWS_STATE_DIR"])

    def start(self) -> "Restartable":
        self.starts += 1
        self.log_path = self.tmp / f"localaws-{self.starts}.log"
        return super().start()

    def end(self, how: str) -> float:
        """SIGTERM (and wait for it to stop) or SIGKILL; when it was sent (``exited``: when it was gone)."""
        self.process.send_signal(getattr(signal, how))
        at = time.time()
        self.process.wait(120)
        self.exited = time.time()
        self._log.close()
        return at

    def log(self) -> str:
        return "".join(path.read_text() for path in sorted(self.tmp.glob("localaws-*.log")))


@pytest.fixture
def restartable(tmp_path):
    from localaws.client import register_image
    from ml_pipeline.images import context_hash

    server = Restartable(tmp_path).start()
    server.train_image = ecr_uri("lingering", context_hash(LINGERING))
    server.serve_image = ecr_uri("misbehaving", context_hash(MISBEHAVING))
    register_image(server.endpoint_url, server.train_image, LINGERING)
    register_image(server.endpoint_url, server.serve_image, MISBEHAVING)
    yield server
    server.stop()


def saved(localaws) -> None:
    """Wait until the state folder holds every change made so far: one more change to moto and one to
    our engine, made after all the others, until each is in its snapshot file (a snapshot is whole:
    what it holds, it holds with everything before it). No clock: a loaded machine only waits longer."""
    marker = unique("saved")
    localaws.client("ssm").put_parameter(Name=f"/saved/{marker}", Value="x", Type="String")
    localaws.client("sagemaker").create_model_package_group(ModelPackageGroupName=marker)

    def written() -> bool:
        try:
            return all(
                marker.encode() in (localaws.state_dir / name).read_bytes() for name in ("moto.pickle", "engine.pickle")
            )
        except FileNotFoundError:
            return False

    wait_until(written, timeout=120, poll=0.1, waiting_for=f"{marker} in the snapshots")


def train(localaws, bucket: str, name: str, seconds: int = 0, **extra) -> None:
    localaws.client("sagemaker").create_training_job(
        **training_request(
            name, localaws.train_image, {}, f"s3://{bucket}/jobs", {"seconds": str(seconds)}, LOSS, **extra
        )
    )


def helper_pids(localaws, group: str) -> list[int]:
    """The pids the lingering image reported in CloudWatch Logs."""
    logs = localaws.client("logs")
    try:
        events = logs.filter_log_events(logGroupName=group, filterPattern='"helper pid"')["events"]
    except ClientError:
        return []
    return [int(event["message"].split()[-1]) for event in events if event["message"].startswith("helper pid")]


def running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def registered_version(sm, group: str, artifact: str, image: str) -> str:
    return sm.create_model_package(
        ModelPackageGroupName=group,
        ModelApprovalStatus="PendingManualApproval",
        InferenceSpecification={
            "Containers": [{"Image": image, "ModelDataUrl": artifact}],
            "SupportedContentTypes": ["application/json"],
            "SupportedResponseMIMETypes": ["application/json"],
        },
    )["ModelPackageArn"]


def test_resources_survive_a_stop_and_a_kill(restartable):
    localaws = restartable
    s3, sm = localaws.client("s3"), localaws.client("sagemaker")
    bucket = unique("state")
    s3.create_bucket(Bucket=bucket)
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    large = os.urandom(3 * 1024 * 1024)
    s3.put_object(Bucket=bucket, Key="data/large.bin", Body=large)
    s3.put_object(Bucket=bucket, Key="data/small.txt", Body=b"first")
    s3.put_object(Bucket=bucket, Key="data/small.txt", Body=b"second")
    job = unique("done")
    train(localaws, bucket, job)
    described = wait_for_training(sm, job)
    assert described["TrainingJobStatus"] == "Completed", described.get("FailureReason")
    artifact = described["ModelArtifacts"]["S3ModelArtifacts"]
    sm.add_tags(ResourceArn=described["TrainingJobArn"], Tags=[{"Key": "run", "Value": "one"}])
    group = unique("models")
    sm.create_model_package_group(ModelPackageGroupName=group)
    first = registered_version(sm, group, artifact, localaws.train_image)
    vpc = localaws.client("ec2").create_vpc(CidrBlock="10.7.0.0/16")["Vpc"]["VpcId"]
    localaws.client("iam").create_role(RoleName=unique("role"), AssumeRolePolicyDocument="{}")
    localaws.client("ssm").put_parameter(Name=f"/{bucket}/p", Value="kept", Type="String")
    localaws.client("ecr").create_repository(repositoryName=bucket)
    localaws.client("cloudwatch").put_metric_data(Namespace=bucket, MetricData=[{"MetricName": "m", "Value": 4.0}])
    stream = localaws.client("logs").describe_log_streams(
        logGroupName="/aws/sagemaker/TrainingJobs", logStreamNamePrefix=job
    )["logStreams"][0]["logStreamName"]

    def state() -> dict:
        versions = s3.list_object_versions(Bucket=bucket, Prefix="data/small.txt")["Versions"]
        return {
            "job": {k: v for k, v in sm.describe_training_job(TrainingJobName=job).items() if k != "ResponseMetadata"},
            "tags": sm.list_tags(ResourceArn=described["TrainingJobArn"])["Tags"],
            "listed": [j["TrainingJobName"] for j in sm.list_training_jobs()["TrainingJobSummaries"]],
            "artifact": s3.head_object(Bucket=bucket, Key=artifact.split(f"s3://{bucket}/", 1)[1])["ContentLength"],
            "large": s3.get_object(Bucket=bucket, Key="data/large.bin")["Body"].read() == large,
            "small": [
                s3.get_object(Bucket=bucket, Key="data/small.txt", VersionId=v["VersionId"])["Body"].read()
                for v in versions
            ],
            "version": sm.describe_model_package(ModelPackageName=first)["ModelApprovalStatus"],
            "vpc": localaws.client("ec2").describe_vpcs(VpcIds=[vpc])["Vpcs"][0]["CidrBlock"],
            "parameter": localaws.client("ssm").get_parameter(Name=f"/{bucket}/p")["Parameter"]["Value"],
            "repository": localaws.client("ecr").describe_repositories(repositoryNames=[bucket])["repositories"][0][
                "repositoryUri"
            ],
            "metric": [
                p["Sum"]
                for p in localaws.client("cloudwatch").get_metric_statistics(
                    Namespace=bucket,
                    MetricName="m",
                    StartTime=time.time() - 3600,
                    EndTime=time.time() + 60,
                    Period=3600,
                    Statistics=["Sum"],
                )["Datapoints"]
            ],
            "log": [
                e["message"]
                for e in localaws.client("logs").get_log_events(
                    logGroupName="/aws/sagemaker/TrainingJobs", logStreamName=stream
                )["events"]
            ],
        }

    before = state()
    assert before["small"] == [b"second", b"first"] and before["large"] and "loss=0.25" in before["log"]
    assert before["metric"] == [4.0]

    localaws.end("SIGTERM")
    localaws.start()
    assert state() == before

    # Changes made just before a kill are there too, whatever protocol made them.
    s3.put_object(Bucket=bucket, Key="data/late.txt", Body=b"late")  # REST
    s3.delete_object(Bucket=bucket, Key="data/large.bin")
    second = registered_version(sm, group, artifact, localaws.train_image)  # our engine
    group_id = localaws.client("ec2").create_security_group(  # EC2's query protocol
        GroupName=unique("sg"), Description="late", VpcId=vpc
    )["GroupId"]
    localaws.client("ssm").put_parameter(Name=f"/{bucket}/p", Value="late", Type="String", Overwrite=True)  # JSON
    localaws.client("cloudwatch").put_metric_alarm(  # JSON 1.0 (botocore's pick of CloudWatch's protocols)
        AlarmName=f"{bucket}-alarm",
        MetricName="m",
        Namespace="n",
        Statistic="Sum",
        Period=60,
        EvaluationPeriods=1,
        Threshold=1.0,
        ComparisonOperator="GreaterThanThreshold",
    )
    localaws.client("iam").create_role(RoleName=f"{bucket}-late", AssumeRolePolicyDocument="{}")  # query (IAM)
    saved(localaws)
    localaws.end("SIGKILL")
    localaws.start()
    assert localaws.client("ec2").describe_security_groups(GroupIds=[group_id])["SecurityGroups"][0]["VpcId"] == vpc
    assert localaws.client("ssm").get_parameter(Name=f"/{bucket}/p")["Parameter"]["Value"] == "late"
    assert [
        a["AlarmName"]
        for a in localaws.client("cloudwatch").describe_alarms(AlarmNames=[f"{bucket}-alarm"])["MetricAlarms"]
    ] == [f"{bucket}-alarm"]
    assert localaws.client("iam").get_role(RoleName=f"{bucket}-late")["Role"]["RoleName"] == f"{bucket}-late"
    assert s3.get_object(Bucket=bucket, Key="data/late.txt")["Body"].read() == b"late"
    with pytest.raises(ClientError, match="NoSuchKey"):
        s3.get_object(Bucket=bucket, Key="data/large.bin")
    assert sm.describe_training_job(TrainingJobName=job)["TrainingJobStatus"] == "Completed"
    assert sm.describe_model_package(ModelPackageName=second)["ModelPackageVersion"] == 2
    third = registered_version(sm, group, artifact, localaws.train_image)
    assert sm.describe_model_package(ModelPackageName=third)["ModelPackageVersion"] == 3  # numbering goes on
    assert "localaws state: restored" in localaws.log()


def test_what_a_read_made_is_kept_too(restartable):
    """moto makes a region's EC2 on its first call, a read included, with a default VPC of random id."""
    ec2 = restartable.client("ec2")
    default = [vpc["VpcId"] for vpc in ec2.describe_vpcs()["Vpcs"] if vpc["IsDefault"]]
    assert len(default) == 1
    saved(restartable)
    restartable.end("SIGKILL")
    restartable.start()
    assert [vpc["VpcId"] for vpc in ec2.describe_vpcs()["Vpcs"] if vpc["IsDefault"]] == default


@pytest.mark.parametrize("how", ["SIGTERM", "SIGKILL"])
def test_running_work_comes_back_failed_and_its_leftovers_go(restartable, how):
    localaws = restartable
    s3, sm, ssm = localaws.client("s3"), localaws.client("sagemaker"), localaws.client("ssm")
    bucket = unique("running")
    s3.create_bucket(Bucket=bucket)
    job, tuning = unique("running"), unique("tuning")
    train(localaws, bucket, job, seconds=600)
    sm.create_hyper_parameter_tuning_job(
        HyperParameterTuningJobName=tuning,
        HyperParameterTuningJobConfig={
            "Strategy": "Random",
            "HyperParameterTuningJobObjective": {"Type": "Minimize", "MetricName": "loss"},
            "ResourceLimits": {"MaxNumberOfTrainingJobs": 2, "MaxParallelTrainingJobs": 2},
            "ParameterRanges": {"CategoricalParameterRanges": [{"Name": "loss", "Values": ["0.5", "0.7"]}]},
        },
        TrainingJobDefinition={
            "AlgorithmSpecification": {
                "TrainingImage": localaws.train_image,
                "TrainingInputMode": "File",
                "MetricDefinitions": LOSS,
            },
            "RoleArn": ROLE_ARN,
            "StaticHyperParameters": {"seconds": "600"},
            "OutputDataConfig": {"S3OutputPath": f"s3://{bucket}/tuning"},
            "ResourceConfig": {"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 10},
            "StoppingCondition": {"MaxRuntimeInSeconds": 3600},
        },
    )
    command_id, instance_id = send_long_command(localaws, bucket)

    # Everything is under way, each with its helper process, before localaws goes.
    wait_until(
        lambda: (
            len(helper_pids(localaws, "/aws/sagemaker/TrainingJobs")) == 3
            and len(helper_pids(localaws, "/ml-pipeline/host-training")) == 1
        ),
        timeout=300,
    )
    helpers = helper_pids(localaws, "/aws/sagemaker/TrainingJobs") + helper_pids(localaws, "/ml-pipeline/host-training")
    training = sm.describe_training_job(TrainingJobName=job)
    assert training["SecondaryStatus"] == "Training"
    assert ssm.get_command_invocation(CommandId=command_id, InstanceId=instance_id)["Status"] == "InProgress"
    assert any((localaws.work_dir / "training-jobs").iterdir())
    if how == "SIGKILL":
        saved(localaws)
    ended = localaws.end(how)
    if how == "SIGKILL":  # what a killed localaws leaves: its children's children run on
        assert all(running(pid) for pid in helpers), [pid for pid in helpers if not running(pid)]
    if how == "SIGTERM":  # its jobs (tuning's trials among them) tried no upload through its stopped gateway
        assert " crashed:" not in localaws.log(), localaws.log()[-3000:]
    localaws.start()

    described = sm.describe_training_job(TrainingJobName=job)
    assert (described["TrainingJobStatus"], described["SecondaryStatus"]) == ("Failed", "Failed")
    assert described["FailureReason"] == STOPPED_REASON
    end = described["TrainingEndTime"].timestamp()
    assert described["TrainingStartTime"] <= described["TrainingEndTime"]
    # Everything that was running ended at one moment, the engine's record of when localaws stopped: not
    # after its process was gone, nor much before the signal (a SIGKILL leaves the last mark of the
    # write-behind thread, every second or so; a few seconds on a loaded machine).
    assert ended - 5 <= end <= localaws.exited, (end, ended, localaws.exited)
    transitions = described["SecondaryStatusTransitions"]
    assert [t["Status"] for t in transitions][-2:] == ["Training", "Failed"]
    assert all("EndTime" in t for t in transitions)
    assert transitions[-1]["StatusMessage"] == f"Training job failed. Reason: {STOPPED_REASON}"
    assert described["BillableTimeInSeconds"] >= 1

    tuned = sm.describe_hyper_parameter_tuning_job(HyperParameterTuningJobName=tuning)
    assert tuned["HyperParameterTuningJobStatus"] == "Failed"
    assert tuned["FailureReason"] == "InternalServerError: localaws stopped while the tuning job was running."
    assert tuned["HyperParameterTuningEndTime"].timestamp() == pytest.approx(end, abs=0.001)
    assert tuned["TrainingJobStatusCounters"] == {
        "Completed": 0,
        "InProgress": 0,
        "RetryableError": 2,
        "NonRetryableError": 0,
        "Stopped": 0,
    }
    assert tuned["ObjectiveStatusCounters"] == {"Succeeded": 0, "Pending": 0, "Failed": 2}
    trials = sm.list_training_jobs_for_hyper_parameter_tuning_job(HyperParameterTuningJobName=tuning)
    assert {t["TrainingJobStatus"] for t in trials["TrainingJobSummaries"]} == {"Failed"}

    invocation = ssm.get_command_invocation(CommandId=command_id, InstanceId=instance_id)
    assert invocation["Status"] == "Failed"
    assert "localaws stopped while the command was running." in invocation["StandardErrorContent"]
    from datetime import datetime

    assert datetime.fromisoformat(
        invocation["ExecutionEndDateTime"].replace("Z", "+00:00")
    ).timestamp() == pytest.approx(end, abs=0.001)
    assert ssm.list_commands(CommandId=command_id)["Commands"][0]["Status"] == "Failed"

    # Nothing of what ran is left: processes, job and command folders.
    assert wait_until(lambda: not any(running(pid) for pid in helpers), timeout=10)
    assert not any((localaws.work_dir / "training-jobs").iterdir())
    assert not (localaws.work_dir / "ssm-commands").exists() or not any((localaws.work_dir / "ssm-commands").iterdir())
    # And the engine works on: a new job runs to completion.
    again = unique("again")
    train(localaws, bucket, again)
    assert wait_for_training(sm, again)["TrainingJobStatus"] == "Completed"


def send_long_command(localaws, bucket: str) -> tuple[str, str]:
    """The project's host-training command on a moto instance, training the lingering image for 10 minutes."""
    ec2, ssm = localaws.client("ec2"), localaws.client("ssm")
    document = unique("MLPipeline-TrainContainer")
    ssm.create_document(
        Name=document,
        DocumentType="Command",
        DocumentFormat="JSON",
        Content=(REPO_ROOT / "include" / "ssm" / "run-training-container.json").read_text(),
    )
    instance = ec2.run_instances(ImageId="ami-12c6146b", MinCount=1, MaxCount=1, InstanceType="g5.xlarge")["Instances"][
        0
    ]["InstanceId"]
    spec = {
        "hyperparameters": {"seconds": "600"},
        "inputdataconfig": {},
        "resourceconfig": {"current_host": "algo-1", "current_instance_type": "g5.xlarge", "hosts": ["algo-1"]},
        "channels": {},
        "environment": {},
    }
    command = ssm.send_command(
        DocumentName=document,
        InstanceIds=[instance],
        Parameters={
            "JobName": [unique("host")],
            "Image": [localaws.train_image],
            "Spec": [base64.b64encode(json.dumps(spec).encode()).decode()],
            "OutputPath": [f"s3://{bucket}/host"],
            "Accelerator": ["nvidia"],
            "Region": ["us-east-1"],
        },
        CloudWatchOutputConfig={
            "CloudWatchLogGroupName": "/ml-pipeline/host-training",
            "CloudWatchOutputEnabled": True,
        },
    )["Command"]
    return command["CommandId"], instance


def test_a_processing_job_running_when_localaws_stops_comes_back_failed(restartable):
    """As a training job: one that had completed is still there as it ended; one whose container ran when
    localaws stopped comes back Failed, at the moment it stopped, with nothing of it left in the work dir."""
    from localaws.client import register_image
    from ml_pipeline.images import context_hash

    localaws = restartable
    image = ecr_uri("processor", context_hash(PROCESSOR))
    register_image(localaws.endpoint_url, image, PROCESSOR)
    s3, sm = localaws.client("s3"), localaws.client("sagemaker")
    bucket = unique("state")
    s3.create_bucket(Bucket=bucket)
    done, running = unique("processed"), unique("processing")
    for name, extra in ((done, []), (running, ["--sleep", "600"])):
        output = s3_output("result", f"s3://{bucket}/{name}", "/opt/ml/processing/output")
        sm.create_processing_job(
            **processing_request(name, image, [], [output], ["--output", "/opt/ml/processing/output", *extra])
        )
        if name == done:
            assert wait_for_processing(sm, done)["ProcessingJobStatus"] == "Completed"
    wait_until(
        lambda: "ProcessingStartTime" in sm.describe_processing_job(ProcessingJobName=running),
        timeout=120,
        waiting_for=f"{running}'s container to run",
    )
    ended = localaws.end("SIGTERM")
    localaws.start()

    described = sm.describe_processing_job(ProcessingJobName=running)
    assert described["ProcessingJobStatus"] == "Failed"
    assert described["FailureReason"] == "InternalServerError: localaws stopped while the processing job was running."
    assert ended - 5 <= described["ProcessingEndTime"].timestamp() <= localaws.exited
    assert described["ProcessingStartTime"] <= described["ProcessingEndTime"]
    kept = sm.describe_processing_job(ProcessingJobName=done)
    assert (kept["ProcessingJobStatus"], kept["ExitMessage"]) == ("Completed", "processed 0 files on algo-1")
    listed = sm.list_processing_jobs(NameContains="process")["ProcessingJobSummaries"]
    assert {(job["ProcessingJobName"], job["ProcessingJobStatus"]) for job in listed} == {
        (done, "Completed"),
        (running, "Failed"),
    }
    assert not list((localaws.work_dir / "processing-jobs").glob("*"))


@pytest.mark.parametrize("how", ["SIGTERM", "SIGKILL"])
def test_an_endpoint_serves_again_and_keeps_scaling(restartable, how):
    localaws = restartable
    sm, runtime, aas = (
        localaws.client("sagemaker"),
        localaws.client("sagemaker-runtime"),
        localaws.client("application-autoscaling"),
    )
    name = unique("kept")
    assert deploy(sm, name, localaws.serve_image, None, env={})["EndpointStatus"] == "InService"
    resource = f"endpoint/{name}/variant/AllTraffic"
    dimension = "sagemaker:variant:DesiredInstanceCount"
    aas.register_scalable_target(
        ServiceNamespace="sagemaker", ResourceId=resource, ScalableDimension=dimension, MinCapacity=1, MaxCapacity=2
    )
    policy = aas.put_scaling_policy(
        PolicyName="invocations",
        ServiceNamespace="sagemaker",
        ResourceId=resource,
        ScalableDimension=dimension,
        PolicyType="TargetTrackingScaling",
        TargetTrackingScalingPolicyConfiguration={
            "TargetValue": 5.0,
            "ScaleOutCooldown": 60,
            "ScaleInCooldown": 600,
            "PredefinedMetricSpecification": {"PredefinedMetricType": "SageMakerVariantInvocationsPerInstance"},
        },
    )
    before = json.loads(runtime.invoke_endpoint(EndpointName=name, Body=b"{}")["Body"].read())["pid"]
    old = instances(localaws, name)["Instances"]
    if how == "SIGKILL":
        saved(localaws)
    localaws.end(how)
    localaws.start()

    seen: list[str] = []
    described = wait_endpoint(sm, name, until=("InService",), timeout=120, seen=seen)
    assert described["ProductionVariants"][0]["CurrentInstanceCount"] == 1
    assert "FailureReason" not in described
    answer = json.loads(runtime.invoke_endpoint(EndpointName=name, Body=b"{}")["Body"].read())
    assert answer["served_by"] == "misbehaving" and answer["pid"] != before  # a new fleet, from the stored model
    assert sm.describe_model(ModelName=f"{name}-m")["PrimaryContainer"]["Image"] == localaws.serve_image
    assert (
        sm.describe_endpoint_config(EndpointConfigName=f"{name}-c")["ProductionVariants"][0]["ModelName"] == f"{name}-m"
    )
    assert not any(running(c["Pid"]) for i in old for c in i["Containers"])
    targets = aas.describe_scalable_targets(ServiceNamespace="sagemaker", ResourceIds=[resource])["ScalableTargets"]
    assert [(t["MinCapacity"], t["MaxCapacity"]) for t in targets] == [(1, 2)]
    policies = aas.describe_scaling_policies(ServiceNamespace="sagemaker", ResourceId=resource)["ScalingPolicies"]
    assert [p["PolicyARN"] for p in policies] == [policy["PolicyARN"]]
    assert [a["AlarmName"] for a in policies[0]["Alarms"]] == [a["AlarmName"] for a in policy["Alarms"]]

    # The policy still scales: well above 5 invocations per instance per (compressed) minute.
    stop = threading.Event()

    def load():
        client = localaws.client("sagemaker-runtime")
        while not stop.is_set():
            try:
                client.invoke_endpoint(EndpointName=name, Body=b"{}")
            except ClientError:
                pass
            time.sleep(0.02)

    thread = threading.Thread(target=load, daemon=True)
    thread.start()
    try:
        wait_until(
            lambda: sm.describe_endpoint(EndpointName=name)["ProductionVariants"][0]["CurrentInstanceCount"] == 2,
            timeout=120,
        )
    finally:
        stop.set()
        thread.join(timeout=30)
    activities = aas.describe_scaling_activities(ServiceNamespace="sagemaker", ResourceId=resource)
    assert activities["ScalingActivities"][0]["Description"] == "Setting desired instance count to 2."
    sm.delete_endpoint(EndpointName=name)
    wait_gone(sm, name)
    assert aas.describe_scalable_targets(ServiceNamespace="sagemaker", ResourceIds=[resource])["ScalableTargets"] == []


def test_containers_of_a_killed_localaws_are_removed(tmp_path, docker_engine, docker_client):
    from tests.fixtures.docker_engine import build_and_push

    image = build_and_push(
        docker_client, MISBEHAVING, "misbehaving", docker_engine["registry"], base_image=docker_engine["base_image"]
    )
    localaws = Restartable(tmp_path, "docker", LOCALAWS_REGISTRY=docker_engine["registry"]).start()
    try:
        sm = localaws.client("sagemaker")
        name = unique("contained")
        assert deploy(sm, name, image, None, env={})["EndpointStatus"] == "InService"
        old = [c["ContainerId"] for i in instances(localaws, name)["Instances"] for c in i["Containers"]]
        saved(localaws)
        localaws.end("SIGKILL")
        assert [docker_client.containers.get(c).status for c in old] == ["running"]  # left behind
        localaws.start()
        import docker.errors

        for container in old:
            with pytest.raises(docker.errors.NotFound):
                docker_client.containers.get(container)
        assert wait_endpoint(sm, name, until=("InService",))["EndpointStatus"] == "InService"
        answer = localaws.client("sagemaker-runtime").invoke_endpoint(EndpointName=name, Body=b"{}")
        assert json.loads(answer["Body"].read())["served_by"] == "misbehaving"
        sm.delete_endpoint(EndpointName=name)
        wait_gone(sm, name)
    finally:
        localaws.stop()


def test_an_unreadable_snapshot_is_set_aside(tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    (state / "moto.pickle").write_bytes(b"not a pickle")
    (state / "engine.pickle").write_bytes(b"\x80\x05 neither")
    localaws = Restartable(tmp_path).start()
    try:
        s3 = localaws.client("s3")
        s3.create_bucket(Bucket="after-an-unreadable-snapshot")
        assert [b["Name"] for b in s3.list_buckets()["Buckets"]] == ["after-an-unreadable-snapshot"]
        aside = sorted(path.name for path in state.glob("*.unreadable-*") if not path.name.endswith(".why"))
        assert [name.split(".unreadable-")[0] for name in aside] == ["engine.pickle", "moto.pickle"]
        assert "could not read moto.pickle" in localaws.log()
    finally:
        localaws.stop()


def test_an_unreadable_moto_snapshot_keeps_the_s3_bodies_it_refers_to(restartable):
    """Set aside, the snapshot takes its S3 bodies with it: the next snapshot, which refers to none of
    them, does not take them for garbage."""
    localaws = restartable
    s3 = localaws.client("s3")
    body = os.urandom(64 * 1024)
    s3.create_bucket(Bucket="kept-bodies")
    s3.put_object(Bucket="kept-bodies", Key="k", Body=body)
    localaws.end("SIGTERM")
    (localaws.state_dir / "moto.pickle").write_bytes(b"not a pickle any more")
    localaws.start()
    assert s3.list_buckets()["Buckets"] == []  # that part starts empty
    s3.create_bucket(Bucket="after")
    s3.put_object(Bucket="after", Key="k", Body=b"new")
    saved(localaws)
    assert any(path.read_bytes() == body for path in localaws.state_dir.rglob("*") if path.is_file())
    aside = [path.name for path in localaws.state_dir.iterdir() if ".unreadable-" in path.name]
    assert any(name.startswith("moto.pickle.unreadable-") and name.endswith(".blobs") for name in aside), aside


class _OpenWhenUnpickled:
    """Unpickling this creates a file: whether a snapshot was unpickled at all shows on disk."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return open, (str(self.path), "w")


def test_a_snapshot_of_another_moto_is_refused_before_it_is_unpickled(tmp_path):
    import pickle

    state = tmp_path / "state"
    state.mkdir()
    unpickled = tmp_path / "unpickled"
    # What an older localaws wrote (its versions inside the pickle), and one naming another moto in its header.
    older = pickle.dumps(
        {"format": 1, "moto": "0.0.1", "python": (3, 11), "services": {}, "x": _OpenWhenUnpickled(unpickled)}
    )
    headed = b'localaws-moto-state {"format": 2, "moto": "0.0.1", "python": "3.11"}\n' + pickle.dumps(
        _OpenWhenUnpickled(unpickled)
    )
    for snapshot in (older, headed):
        (state / "moto.pickle").write_bytes(snapshot)
        localaws = Restartable(tmp_path).start()
        try:
            assert localaws.client("s3").list_buckets()["Buckets"] == []
            assert "could not read moto.pickle" in localaws.log()
        finally:
            localaws.stop()
        assert not unpickled.exists()


def test_attachments_to_aws_managed_policies_come_back_without_their_documents_in_the_snapshot(restartable):
    localaws = restartable
    iam = localaws.client("iam")
    iam.create_role(RoleName="kept", AssumeRolePolicyDocument="{}")
    iam.attach_role_policy(RoleName="kept", PolicyArn="arn:aws:iam::aws:policy/AmazonSageMakerFullAccess")
    iam.create_user(UserName="kept")
    iam.attach_user_policy(UserName="kept", PolicyArn="arn:aws:iam::aws:policy/AmazonS3ReadOnlyAccess")
    before = iam.get_policy(PolicyArn="arn:aws:iam::aws:policy/AmazonSageMakerFullAccess")["Policy"]
    localaws.end("SIGTERM")
    # AWS's policies are made afresh by moto: the snapshot names them, it does not hold their documents.
    assert b"s3-object-lambda:Get*" not in (localaws.state_dir / "moto.pickle").read_bytes()
    localaws.start()
    assert [p["PolicyName"] for p in iam.list_attached_role_policies(RoleName="kept")["AttachedPolicies"]] == [
        "AmazonSageMakerFullAccess"
    ]
    assert [p["PolicyName"] for p in iam.list_attached_user_policies(UserName="kept")["AttachedPolicies"]] == [
        "AmazonS3ReadOnlyAccess"
    ]
    after = iam.get_policy(PolicyArn="arn:aws:iam::aws:policy/AmazonSageMakerFullAccess")["Policy"]
    assert (after["PolicyId"], after["AttachmentCount"]) == (before["PolicyId"], 1)
    assert sorted(p["PolicyName"] for p in iam.list_policies(OnlyAttached=True)["Policies"]) == [
        "AmazonS3ReadOnlyAccess",
        "AmazonSageMakerFullAccess",
    ]
    decided = iam.simulate_principal_policy(
        PolicySourceArn="arn:aws:iam::123456789012:role/kept", ActionNames=["sagemaker:CreateTrainingJob"]
    )["EvaluationResults"]
    assert decided[0]["EvalDecision"] == "allowed"
    assert iam.get_policy(PolicyArn="arn:aws:iam::aws:policy/AmazonS3ReadOnlyAccess")["Policy"]["IsAttachable"]


def test_the_write_behind_outlives_a_deleted_state_folder(restartable):
    """Deleted under it, the state folder cannot be written: localaws says so and keeps trying, and
    writes again once the folder is back."""
    import shutil

    localaws = restartable
    shutil.rmtree(localaws.state_dir)
    wait_until(lambda: "cannot mark" in localaws.log(), timeout=30, waiting_for="the alive mark's failure logged")
    (localaws.state_dir / "blobs").mkdir(parents=True)
    saved(localaws)
    assert localaws.process.poll() is None


def test_a_localaws_that_cannot_listen_leaves_nothing_behind(tmp_path):
    """The port in use: what was started before the socket (the gateway's threads, the work dir's lock) stops."""
    import fcntl
    import socket

    from localaws.server import LocalAWS
    from localaws.settings import Settings

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        before = set(threading.enumerate())
        with pytest.raises((OSError, SystemExit)):  # werkzeug exits when the address is in use
            LocalAWS(
                Settings(
                    host="127.0.0.1",
                    port=busy.getsockname()[1],
                    work_dir=tmp_path / "work",
                    state_dir=None,
                    cache_dir=tmp_path / "cache",
                    runner="process",
                )
            )
    wait_until(lambda: set(threading.enumerate()) <= before, timeout=30, waiting_for="the gateway's threads to end")
    with open(tmp_path / "work" / ".localaws.lock", "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)  # the work dir is free for the next localaws


def test_a_state_folder_serves_one_localaws_at_a_time(restartable):
    other = subprocess.run(
        [
            sys.executable,
            "-m",
            "localaws",
            "serve",
            "--port",
            "0",
            "--runner",
            "process",
            "--state-dir",
            str(restartable.state_dir),
        ],
        cwd=REPO_ROOT,
        env={**restartable.env, "LOCALAWS_WORK_DIR": str(restartable.tmp / "other-work")},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert other.returncode == 1
    assert f"the state folder {restartable.state_dir} is in use by another localaws (pid " in other.stderr


def test_make_airflow_keeps_the_state_of_its_localaws_with_airflows(tmp_path, monkeypatch):
    from scripts.airflow_standalone import HOME, localaws_state_dir
    from scripts.localaws_process import ensure_localaws
    from tests.conftest import free_port

    monkeypatch.delenv("LOCALAWS_STATE_DIR", raising=False)
    assert localaws_state_dir(HOME) == HOME / "localaws-state"  # .airflow/: git-ignored, deleted to start afresh
    ignored = subprocess.run(["git", "check-ignore", "-q", str(localaws_state_dir(HOME))], cwd=REPO_ROOT)
    assert ignored.returncode == 0
    monkeypatch.setenv("LOCALAWS_STATE_DIR", "")
    assert localaws_state_dir(HOME) is None  # empty: in memory

    # The localaws it starts (and stops on exit) keeps that state from one `make airflow` to the next.
    monkeypatch.setenv("LOCALAWS_WORK_DIR", str(tmp_path / "work"))
    endpoint = f"http://127.0.0.1:{free_port()}"
    s3 = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    with ensure_localaws(endpoint, tmp_path / "first.log", state_dir=tmp_path / "state"):
        s3.create_bucket(Bucket="kept-by-make-airflow")
    with ensure_localaws(endpoint, tmp_path / "second.log", state_dir=tmp_path / "state"):
        assert [b["Name"] for b in s3.list_buckets()["Buckets"]] == ["kept-by-make-airflow"]
