"""The project's Airflow plugins (plugins/.airflowignore keeps the ml_pipeline package's own files out of the
plugins manager, which would import each under its bare name)."""

from ml_pipeline.summary_page import RunSummaryPlugin  # noqa: F401 - found here by the plugins manager
from ml_pipeline.tracking_link import MlflowLinkPlugin  # noqa: F401 - the runs' links to MLflow
