"""The run's summary on its page in the UI: a "Run summary" tab on every DAG run's page.

A task cannot set its DAG run's note in Airflow 3 (the execution API that tasks talk to takes a note
only when a task triggers another run; the public API that edits notes wants a user's credentials,
which tasks must not hold). So the summary ``close_run`` returns (its XCom) is shown by the api-server
instead: this plugin adds a tab to the run's page (an external view, destination ``dag_run``) whose
page the api-server serves from the metadata database, to users allowed to read the DAG's XComs (the
UI's own session authenticates the tab).
"""

from __future__ import annotations

import html
import json
from functools import cached_property

from airflow.plugins_manager import AirflowPlugin

PREFIX = "/ml-pipeline"
SUMMARY_TASK = "close_run"


def render(dag_id: str, run_id: str, summary: dict | None) -> str:
    """The tab's page: the run's end in one line, then its summary as JSON."""
    from ml_pipeline.closing import outcome_line  # noqa: PLC0415

    if summary is None:
        body = (
            f"<p>No summary for this run: its teardown ({SUMMARY_TASK}) has not finished, or "
            f"{html.escape(dag_id)} writes none.</p>"
        )
    else:
        body = (
            f"<h2>{html.escape(outcome_line(summary))}</h2>"
            f"<p>Written to {html.escape(str(summary.get('summary')))}</p>"
            f"<pre>{html.escape(json.dumps(summary, indent=2, default=str))}</pre>"
        )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(run_id)}</title>"
        "<style>body{font-family:sans-serif;margin:1em}pre{white-space:pre-wrap}"
        "h2{font-size:1.1em}</style></head>"
        f"<body>{body}</body></html>"
    )


def stored_summary(dag_id: str, run_id: str) -> dict | None:
    """The summary a run's ``close_run`` returned (its XCom, in the metadata database), or None."""
    from airflow.models.xcom import XComModel  # noqa: PLC0415
    from airflow.utils.session import create_session  # noqa: PLC0415

    with create_session() as session:
        row = session.scalars(
            XComModel.get_many(run_id=run_id, dag_ids=dag_id, task_ids=SUMMARY_TASK, key="return_value")
        ).first()
        summary = XComModel.deserialize_value(row) if row is not None else None
    return summary if isinstance(summary, dict) else None


def _app():
    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity  # noqa: PLC0415
    from airflow.api_fastapi.core_api.security import requires_access_dag  # noqa: PLC0415
    from fastapi import Depends, FastAPI  # noqa: PLC0415
    from fastapi.responses import HTMLResponse  # noqa: PLC0415

    app = FastAPI(title="ml-pipeline run summaries")

    @app.get(
        "/runs/{dag_id}/{run_id}",
        response_class=HTMLResponse,
        dependencies=[Depends(requires_access_dag("GET", DagAccessEntity.XCOM))],
    )
    def run_summary(dag_id: str, run_id: str) -> str:
        return render(dag_id, run_id, stored_summary(dag_id, run_id))

    return app


class RunSummaryPlugin(AirflowPlugin):
    name = "ml_pipeline_run_summary"
    external_views = [
        {
            "name": "Run summary",
            "href": PREFIX + "/runs/{DAG_ID}/{RUN_ID}",
            "destination": "dag_run",
            "url_route": "run-summary",
        }
    ]

    # AirflowPlugin declares a plain list; Airflow only reads it, so one built when read serves.
    @cached_property
    def fastapi_apps(self) -> list[dict]:  # type: ignore[override]
        # Built when the api-server asks: other processes load this plugin without importing FastAPI.
        return [{"app": _app(), "url_prefix": PREFIX, "name": "ml-pipeline run summaries"}]
