"""Imported by every Airflow process (the plugins folder is on its path): experiment files are DAG files.

See ``ml_pipeline.experiment_importer``. A deployment with an airflow_local_settings.py of its own (in
$AIRFLOW_HOME/config, found first) calls ``register()`` from it.
"""

import os
import sys

from ml_pipeline import preload

# Importing ml_pipeline.experiment_importer first imports Airflow, which imports this file: the code that
# imported it then calls register() itself (the tests do).
if "ml_pipeline.experiment_importer" not in sys.modules:
    from ml_pipeline.experiment_importer import register

    register()

# A process that forks task processes (`make airflow`'s scheduler: its LocalExecutor's workers are forked
# from it) loads what every task loads, once: see ml_pipeline.preload.
if os.environ.get(preload.ENV) == "1":
    preload.task_modules()
