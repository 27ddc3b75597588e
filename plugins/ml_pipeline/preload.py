"""What a process that forks task processes loads before it forks, so that each task does not load it again.

Every task process parses its DAG's file, imports the modules its task needs and checks the code's
schemas: about two seconds of CPU apiece before the task's own work, most of it the same in every task.
A process whose tasks are forked from it (the LocalExecutor's workers are forked from the scheduler; the
tests' dag.test() runs from ``scripts/dag_test_forks.py``) does that once, here, and its children start
with it done:

    task_modules()   the pipeline DAG's modules, the SageMaker SDK's image lookup, MLflow, the code's
                     schemas checked, the DAGs' AWS services' models parsed (``aws_sessions.preload``)

``plugins/airflow_local_settings.py`` calls it in a process started with ``ML_PIPELINE_PRELOAD=1``
(`make airflow`'s scheduler); nothing in it opens a connection or starts a thread.
"""

from __future__ import annotations

ENV = "ML_PIPELINE_PRELOAD"


def task_modules() -> None:
    # The imports are what is preloaded: each is what one task or another imports when it runs.
    import mlflow  # noqa: F401, PLC0415
    import sagemaker.core.image_uris  # noqa: F401, PLC0415

    import ml_pipeline.pipeline_dag  # noqa: F401, PLC0415
    import ml_pipeline.tracking  # noqa: F401, PLC0415
    from ml_pipeline import config  # noqa: PLC0415
    from ml_pipeline.aws_sessions import preload  # noqa: PLC0415

    for name in (config.PRESET_SCHEMA, config.TUNING_SCHEMA, config.EXPERIMENT_SCHEMA.name):
        config.validator(name)
    preload()
