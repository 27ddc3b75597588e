"""
### The reaper: nothing this project made outlives its welcome

Hourly. Finds every run's stack by its tags (`project=ml-pipeline`, `run=<key>`, `created-at`,
`ttl-hours`) and removes those older than their time-to-live with the same teardown a run ends with
(one mapped task per stack, so each retries on its own). Then deletes the project's SageMaker endpoints
(tag `project=ml-pipeline`) that served no invocation (CloudWatch `AWS/SageMaker` `Invocations`, per
variant) in the last `idle_hours`. Reports what it removed. Only what carries the project's tag is touched.
"""
from __future__ import annotations

import os
from datetime import timedelta

import pendulum
from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook
from airflow.sdk import DAG, Param, TriggerRule, task

AWS_CONN_ID = "aws_default"


def client(service: str):
    return AwsBaseHook(aws_conn_id=AWS_CONN_ID, client_type=service).get_conn()


with DAG(
    dag_id="ml_pipeline_reaper",
    description="Remove expired run stacks and idle endpoints this project tagged; report what was removed.",
    doc_md=__doc__,
    schedule="@hourly",
    start_date=pendulum.datetime(2026, 1, 5, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    params={
        "default_ttl_hours": Param(float(os.environ.get("ML_PIPELINE_STACK_TTL_HOURS", "12")), type="number",
                                   minimum=0.1, maximum=720, title="Default stack TTL (hours)",
                                   description="For a stack whose resources carry no ttl-hours tag."),
        "idle_hours": Param(float(os.environ.get("ML_PIPELINE_IDLE_ENDPOINT_HOURS", "24")), type="number",
                            minimum=0.001, maximum=720, title="Idle endpoint window (hours)",
                            description="An endpoint older than this with no invocation during it is deleted."),
        "dry_run": Param(False, type="boolean", title="Dry run",
                         description="Report what would be removed, remove nothing."),
    },
    default_args={"owner": "ml-platform", "retries": 2, "retry_delay": timedelta(minutes=2)},
    tags=["ml", "cost", "cleanup"],
) as dag:

    @task
    def find_expired_stacks(params: dict | None = None) -> list[str]:
        from ml_pipeline.infra.reaper import expired_stacks  # noqa: PLC0415

        expired = expired_stacks(client, default_ttl_hours=params["default_ttl_hours"])
        for stack in expired:
            print(f"run {stack['run']}: {stack['age_hours']:.1f} h old, TTL {stack['ttl_hours']:.1f} h: expired")
        return [] if params["dry_run"] else [stack["run"] for stack in expired]

    @task(max_active_tis_per_dagrun=4)
    def remove_stack(run_key: str) -> dict:
        from ml_pipeline.infra.teardown import teardown_stack  # noqa: PLC0415

        report = teardown_stack(client, run_key)
        print(f"run {run_key}: removed {report['removed']}")
        return report

    @task
    def remove_idle_endpoints(params: dict | None = None) -> dict:
        from ml_pipeline.infra.reaper import reap_endpoints  # noqa: PLC0415

        result = reap_endpoints(client, idle_hours=params["idle_hours"], dry_run=params["dry_run"])
        for endpoint in result["endpoints"]:
            print(f"endpoint {endpoint['endpoint']}: no invocations in {endpoint['idle_hours']} h: "
                  f"{endpoint['removed']}")
        if result["errors"]:
            raise RuntimeError(f"could not delete: {result['errors']}")
        return result

    @task(trigger_rule=TriggerRule.ALL_DONE)
    def report(stacks: list | None, endpoints: dict | None) -> dict:
        summary = {
            "stacks": [{"run": s["run"], "removed": s["removed"]} for s in (stacks or []) if s],
            "endpoints": [e["endpoint"] for e in (endpoints or {}).get("endpoints", [])],
        }
        print(f"reaper removed {len(summary['stacks'])} stack(s) and {len(summary['endpoints'])} endpoint(s): "
              f"{summary}")
        return summary

    removed = remove_stack.expand(run_key=find_expired_stacks())
    report(removed, remove_idle_endpoints())
