"""The Airflow UI's link from each run to its MLflow run: an extra link "MLflow run" on the run's
``close_run`` task (the task that logs it, ``tracking.log_run``), to the URL its summary (the task's XCom)
holds under ``mlflow``. Read by the api-server from the metadata database when the task's page is shown;
a run not logged to MLflow (no server, or the server was down) has no link."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from airflow.plugins_manager import AirflowPlugin
from airflow.sdk import BaseOperatorLink

if TYPE_CHECKING:
    from airflow.sdk import BaseOperator
    from airflow.sdk.types import TaskInstanceKey

#: The task whose XCom is the run's summary, with the MLflow run's URL in it.
SUMMARY_TASK = "close_run"


def mlflow_url(summary: dict | None) -> str:
    """The MLflow run's URL in a run's summary, "" when it has none."""
    logged = (summary or {}).get("mlflow")
    return str(logged.get("url") or "") if isinstance(logged, dict) else ""


class MlflowRunLink(BaseOperatorLink):
    """A global link (every operator has it): it points somewhere on the run's close_run task only."""

    name: ClassVar[str] = "MLflow run"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        if ti_key.task_id != SUMMARY_TASK:
            return ""
        from ml_pipeline.summary_page import stored_summary  # noqa: PLC0415

        return mlflow_url(stored_summary(ti_key.dag_id, ti_key.run_id))


class MlflowLinkPlugin(AirflowPlugin):
    name = "ml_pipeline_mlflow_link"
    global_operator_extra_links = [MlflowRunLink()]
