"""The reaper removes an expired stack and an idle endpoint, and nothing else.

A localaws of its own: the reaper looks at the whole account, and the other tests' resources must be
neither its victims nor its alibis.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import pytest

from tests.conftest import LocalAWSProcess, unique
from tests.fixtures.images import MISBEHAVING
from tests.infra.support import ZERO, plan
from tests.support import wait_until

pytestmark = pytest.mark.timeout(600)
WINDOW_SECONDS = 12


@pytest.fixture(scope="module")
def localaws(tmp_path_factory):
    from localaws.client import register_image
    from ml_pipeline.images import context_hash
    from tests.fixtures.docker_engine import ecr_uri

    server = LocalAWSProcess(
        tmp_path_factory.mktemp("localaws-reaper"), "process", LOCALAWS_HOSTING_METRICS_SECONDS="0.5"
    ).start()
    # The endpoints only need to answer (the reaper reads their invocations): the standard-library server.
    server.image_uri = ecr_uri("misbehaving", context_hash(MISBEHAVING))
    register_image(server.endpoint_url, server.image_uri, MISBEHAVING)
    yield server
    server.stop()


def age(client, run_key: str, hours: float) -> None:
    """Make a stack look ``hours`` old: its created-at tags moved back (as if created then)."""
    from ml_pipeline.infra import tags

    created = (datetime.now(timezone.utc) - timedelta(hours=hours)).strftime("%Y-%m-%dT%H:%M:%SZ")
    tag = [{"Key": tags.CREATED_AT, "Value": created}]
    ec2 = client("ec2")
    found = ec2.describe_tags(Filters=[{"Name": "key", "Values": ["run"]}, {"Name": "value", "Values": [run_key]}])
    ids = sorted({t["ResourceId"] for t in found["Tags"] if t["Key"] == "run" and t["Value"] == run_key})
    if ids:
        ec2.create_tags(Resources=ids, Tags=tag)
    iam = client("iam")
    for role in iam.list_roles(PathPrefix=tags.IAM_PATH)["Roles"]:
        if tags.is_run(iam.list_role_tags(RoleName=role["RoleName"])["Tags"], run_key):
            iam.tag_role(RoleName=role["RoleName"], Tags=tag)
            iam.tag_instance_profile(InstanceProfileName=role["RoleName"], Tags=tag)
    ssm = client("ssm")
    for document in ssm.list_documents(
        Filters=[{"Key": "tag:run", "Values": [run_key]}, {"Key": "Owner", "Values": ["Self"]}]
    )["DocumentIdentifiers"]:
        ssm.add_tags_to_resource(ResourceType="Document", ResourceId=document["Name"], Tags=tag)


@pytest.mark.slow
def test_the_reaper_removes_an_expired_stack_and_an_idle_endpoint_and_nothing_else(localaws, tmp_path):
    """Whichever experiment made them: the stacks and endpoints are found by the project's tags."""
    from ml_pipeline import experiments
    from ml_pipeline.infra.params import preflight
    from ml_pipeline.infra.reaper import reap
    from ml_pipeline.infra.stack import provision
    from ml_pipeline.infra.teardown import remaining, teardown_stack
    from tests.dags.experiment_support import write_experiment
    from tests.localaws.hosting_support import wait_endpoint, wait_gone

    client = localaws.client
    other = experiments.load(write_experiment(tmp_path, "another-model"))
    expired = plan(compute="host", host_instance_type="g5.xlarge", stack_ttl_hours=1)
    young = plan(other, compute="sagemaker", provision_vpc=True, stack_ttl_hours=48)
    for run in (expired, young):
        provision(client, run, preflight(client, run))
        age(client, run["key"], hours=2)
    young_counts = remaining(client, young["key"])

    s3, sm = client("s3"), client("sagemaker")
    bucket = unique("reaper")
    s3.create_bucket(Bucket=bucket)
    names = {kind: unique(f"reaper-{kind}") for kind in ("idle", "busy", "other")}
    for kind, name in names.items():
        sm.create_model(
            ModelName=name,
            ExecutionRoleArn="arn:aws:iam::123456789012:role/SageMakerExecution",
            PrimaryContainer={"Image": localaws.image_uri},
        )
        sm.create_endpoint_config(
            EndpointConfigName=name,
            ProductionVariants=[
                {
                    "VariantName": "AllTraffic",
                    "ModelName": name,
                    "InstanceType": "ml.m5.large",
                    "InitialInstanceCount": 1,
                }
            ],
        )
        project = (
            [{"Key": "project", "Value": "ml-pipeline"}, {"Key": "experiment", "Value": f"exp-{kind}"}]
            if kind != "other"
            else [{"Key": "team", "Value": "x"}]
        )
        sm.create_endpoint(EndpointName=name, EndpointConfigName=name, Tags=project)
    for name in names.values():
        assert wait_endpoint(sm, name)["EndpointStatus"] == "InService"
    time.sleep(WINDOW_SECONDS + 1)  # every endpoint is now older than the idle window
    for _ in range(3):
        client("sagemaker-runtime").invoke_endpoint(
            EndpointName=names["busy"], Body=b"{}", ContentType="application/json"
        )

    def invocations() -> list[dict]:
        return client("cloudwatch").get_metric_statistics(
            Namespace="AWS/SageMaker",
            MetricName="Invocations",
            StartTime=time.time() - 600,
            EndTime=time.time() + 60,
            Period=60,
            Statistics=["Sum"],
            Dimensions=[
                {"Name": "EndpointName", "Value": names["busy"]},
                {"Name": "VariantName", "Value": "AllTraffic"},
            ],
        )["Datapoints"]

    wait_until(
        lambda: sum(point["Sum"] for point in invocations()) >= 3,
        timeout=60,
        waiting_for="the busy endpoint's metrics in CloudWatch",
    )
    # Judged as of the instant the busy endpoint's calls were counted: the edge of the window, where a call
    # in its last second must still count (and the expired stack's teardown, which the reaper does first,
    # cannot push the calls out of the window however long it takes on a loaded machine).
    judged = max(point["Timestamp"] for point in invocations())

    report = reap(client, idle_hours=WINDOW_SECONDS / 3600, now=judged, poll=0.2, timeout=60)
    assert report["errors"] == []
    assert [(s["run"], s["experiment"]) for s in report["stacks"]] == [(expired["key"], "plain")]
    assert report["stacks"][0]["removed"]["instance"]
    assert [(e["endpoint"], e["experiment"]) for e in report["endpoints"]] == [(names["idle"], "exp-idle")]

    assert remaining(client, expired["key"]) == ZERO
    assert remaining(client, young["key"]) == young_counts and young_counts["vpcs"] == 1
    wait_gone(sm, names["idle"])
    for kind in ("busy", "other"):
        assert sm.describe_endpoint(EndpointName=names[kind])["EndpointStatus"] == "InService"

    # The next hour's reaper has nothing more to do.
    again = reap(client, idle_hours=1, poll=0.2, timeout=60)
    assert again == {"stacks": [], "endpoints": [], "errors": []}

    teardown_stack(client, young["key"], poll=0.2)
    for kind in ("busy", "other"):
        sm.delete_endpoint(EndpointName=names[kind])


@pytest.mark.e2e
def test_the_reaper_dag_runs_hourly_and_reports(localaws, dag_test_home, tmp_path):
    """The DAG itself, with ``dag.test()`` (a manual run) against this localaws: with the form's defaults a
    dry run that removes nothing; with Dry run off, the expired stack torn down by its mapped task, and the
    report."""
    import json

    from ml_pipeline.infra.params import preflight
    from ml_pipeline.infra.stack import provision
    from ml_pipeline.infra.teardown import remaining
    from scripts.dag_test_forks import forks
    from scripts.run_pipeline import airflow_env
    from tests.conftest import REPO_ROOT

    client = localaws.client
    run = plan(compute="sagemaker", provision_vpc=True, stack_ttl_hours=1)
    provision(client, run, preflight(client, run))
    age(client, run["key"], hours=3)
    counts = remaining(client, run["key"])
    env = airflow_env(localaws.endpoint_url, dag_test_home)  # its connection: this module's localaws

    def reaper_run(conf: dict, date: str, name: str) -> str:
        log_path = tmp_path / f"{name}.log"
        forks(env).run(env, [str(REPO_ROOT / "dags"), "ml_pipeline_reaper", json.dumps(conf), date], log_path)
        text = log_path.read_text()
        result = [line for line in text.splitlines() if line.startswith("DAGRUN ")]
        assert result and json.loads(result[-1][len("DAGRUN ") :])["state"] == "success", text[-5000:]
        return text

    text = reaper_run({"idle_hours": 1}, "2026-03-02T00:00:00+00:00", "dry")
    assert f"run {run['key']} (experiment {run['experiment']['name']}): 3.0 h old, TTL 1.0 h: expired" in text
    assert f"run {run['key']}: dry run, left in place" in text
    assert "reaper would remove (dry run) 1 stack(s)" in text
    assert remaining(client, run["key"]) == counts  # a curious trigger from the form deletes nothing

    text = reaper_run({"idle_hours": 1, "dry_run": False}, "2026-03-02T01:00:00+00:00", "remove")
    assert f"run {run['key']} (experiment {run['experiment']['name']}): 3.0 h old, TTL 1.0 h: expired" in text
    assert "reaper removed 1 stack(s) and 0 endpoint(s)" in text
    assert remaining(client, run["key"]) == ZERO


def test_only_the_schedule_removes_without_being_asked():
    """Dry run is on by default in the form; the hourly schedule's runs remove whatever the default says."""
    import importlib.util

    from tests.conftest import REPO_ROOT

    spec = importlib.util.spec_from_file_location("reaper_dag", REPO_ROOT / "dags" / "reaper.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    defaults = {name: param.value for name, param in module.dag.params.items()}
    assert defaults["dry_run"] is True
    assert module.dry_run(defaults, "manual") is True
    assert module.dry_run({**defaults, "dry_run": False}, "manual") is False
    assert module.dry_run(defaults, "scheduled") is False
    assert module.dry_run(defaults, "backfill") is True
