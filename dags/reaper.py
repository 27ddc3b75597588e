"""
### The reaper: nothing this project made outlives its welcome

Hourly. Finds every run's stack, whichever experiment's, by its tags (`project=ml-pipeline`, `run=<key>`,
`created-at`, `ttl-hours`; `experiment=<name>` says whose) and removes those older than their time-to-live with the
same teardown a run ends with (one mapped task per stack, so each retries on its own). Then deletes the project's
SageMaker endpoints (tag `project=ml-pipeline`) that served no invocation (CloudWatch `AWS/SageMaker`
`Invocations`, per variant) in the last `idle_hours`. Reports what it removed. Only what carries the project's tag
is touched.

A run triggered by hand is a dry run (it reports what it would remove) unless its form's "Dry run" is
turned off; the hourly schedule removes.
"""

from __future__ import annotations

import os
from datetime import timedelta

import pendulum
from airflow.sdk import DAG, TriggerRule, get_current_context, task

from ml_pipeline.aws import client
from ml_pipeline.params import form_param


def dry_run(params: dict, run_type: str) -> bool:
    """The hourly schedule removes; any other run (from the form, the API, a backfill) removes nothing
    unless its "Dry run" was turned off."""
    return run_type != "scheduled" and params["dry_run"] is not False


def this_run_is_dry(params: dict) -> bool:
    return dry_run(params, get_current_context()["dag_run"].run_type)  # a str enum: "manual", "scheduled", ...


with DAG(
    dag_id="ml_pipeline_reaper",
    description="Remove expired run stacks and idle endpoints this project tagged; report what was removed.",
    doc_md=__doc__,
    schedule="@hourly",
    start_date=pendulum.datetime(2026, 1, 5, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    params={
        "default_ttl_hours": form_param(
            float(os.environ.get("ML_PIPELINE_STACK_TTL_HOURS", "12")),
            type="number",
            minimum=0.1,
            maximum=720,
            title="Default stack TTL (hours)",
            description="For a stack whose resources carry no ttl-hours tag.",
        ),
        "idle_hours": form_param(
            float(os.environ.get("ML_PIPELINE_IDLE_ENDPOINT_HOURS", "24")),
            type="number",
            minimum=0.001,
            maximum=720,
            title="Idle endpoint window (hours)",
            description="An endpoint older than this with no invocation during it is deleted.",
        ),
        "dry_run": form_param(
            True,
            type="boolean",
            title="Dry run",
            description="On (the default for a run triggered here): report what would be removed "
            "and remove nothing. Turn it off to remove. The hourly schedule always "
            "removes.",
        ),
    },
    default_args={"owner": "ml-platform", "retries": 2, "retry_delay": timedelta(minutes=2)},
    tags=["ml", "cost", "cleanup"],
) as dag:

    @task
    def find_expired_stacks(params: dict | None = None) -> list[str]:
        from ml_pipeline.infra.reaper import expired_stacks  # noqa: PLC0415

        expired = expired_stacks(client, default_ttl_hours=params["default_ttl_hours"])
        for stack in expired:
            print(
                f"run {stack['run']} (experiment {stack['experiment'] or 'unknown'}): "
                f"{stack['age_hours']:.1f} h old, TTL {stack['ttl_hours']:.1f} h: expired"
            )
        return [stack["run"] for stack in expired]

    @task(max_active_tis_per_dagrun=4)
    def remove_stack(run_key: str, params: dict | None = None) -> dict:
        from ml_pipeline.infra.teardown import teardown_stack  # noqa: PLC0415

        if this_run_is_dry(params):
            print(f"run {run_key}: dry run, left in place (turn Dry run off to remove it)")
            return {"run": run_key, "removed": "dry run"}
        report = teardown_stack(client, run_key)
        print(f"run {run_key}: removed {report['removed']}")
        return report

    @task
    def remove_idle_endpoints(params: dict | None = None) -> dict:
        from ml_pipeline.infra.reaper import reap_endpoints  # noqa: PLC0415

        result = reap_endpoints(client, idle_hours=params["idle_hours"], dry_run=this_run_is_dry(params))
        for endpoint in result["endpoints"]:
            print(
                f"endpoint {endpoint['endpoint']} (experiment {endpoint['experiment'] or 'unknown'}): no invocations "
                f"in {endpoint['idle_hours']} h: {endpoint['removed']}"
            )
        if result["errors"]:
            raise RuntimeError(f"could not delete: {result['errors']}")
        return result

    @task(trigger_rule=TriggerRule.ALL_DONE)
    def report(stacks: list | None, endpoints: dict | None, params: dict | None = None) -> dict:
        summary = {
            "dry_run": this_run_is_dry(params),
            "stacks": [{"run": s["run"], "removed": s["removed"]} for s in (stacks or []) if s],
            "endpoints": [e["endpoint"] for e in (endpoints or {}).get("endpoints", [])],
        }
        verb = "would remove (dry run)" if summary["dry_run"] else "removed"
        print(f"reaper {verb} {len(summary['stacks'])} stack(s) and {len(summary['endpoints'])} endpoint(s): {summary}")
        return summary

    removed = remove_stack.expand(run_key=find_expired_stacks())
    report(removed, remove_idle_endpoints())
