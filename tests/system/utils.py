"""What the provider's system-test DAGs take from Airflow's own test utilities (``system.amazon.aws.utils``
and ``tests_common.test_utils.watcher``, both Airflow 2 era and not packaged): the few lines they need,
for Airflow 3.

* ``SystemTestContextBuilder``: a task giving the run its ``ENV_ID`` (``SYSTEM_TESTS_ENV_ID``) and the
  variables the DAG asks for, from the environment (Airflow's reads SSM as well; nothing here needs it).
* ``watcher``: fails the run when any task failed, teardown tasks (``ALL_DONE``) succeeding or not.
* ``prune_logs``: deletes the run's CloudWatch log streams (not their groups, which other jobs of a
  shared localaws may be writing to).
"""

from __future__ import annotations

import os

from airflow.sdk import task
from airflow.utils.trigger_rule import TriggerRule

ENV_ID_KEY = "ENV_ID"
ENV_ID_ENVIRON_KEY = "SYSTEM_TESTS_ENV_ID"


class SystemTestContextBuilder:
    def __init__(self):
        self.variables: list[str] = []

    def add_variable(self, name: str, **_options) -> SystemTestContextBuilder:
        self.variables.append(name)
        return self

    def build(self):
        names = tuple(self.variables)

        @task(task_id="variable_fetcher", multiple_outputs=True)
        def variable_fetcher() -> dict[str, str]:
            missing = [name for name in (ENV_ID_ENVIRON_KEY, *names) if not os.environ.get(name)]
            if missing:
                raise ValueError(f"the system test needs these environment variables: {', '.join(missing)}")
            return {ENV_ID_KEY: os.environ[ENV_ID_ENVIRON_KEY], **{name: os.environ[name] for name in names}}

        return variable_fetcher


@task(trigger_rule=TriggerRule.ONE_FAILED, retries=0)
def watcher():
    from airflow.exceptions import AirflowException

    raise AirflowException("Failing task because one or more upstream tasks failed.")


@task(trigger_rule=TriggerRule.ALL_DONE)
def prune_logs(logs: list[tuple[str, str | None]]):
    """Delete each (log group, stream prefix)'s streams."""
    import boto3

    client = boto3.client("logs")
    for group, prefix in logs:
        try:
            pages = client.get_paginator("describe_log_streams").paginate(
                logGroupName=group, **({"logStreamNamePrefix": prefix} if prefix else {})
            )
            for page in pages:
                for stream in page["logStreams"]:
                    client.delete_log_stream(logGroupName=group, logStreamName=stream["logStreamName"])
        except client.exceptions.ResourceNotFoundException:
            continue  # nothing was logged there
