"""Imported by every Airflow process (the plugins folder is on its path): experiment files are DAG files.

See ``ml_pipeline.experiment_importer``. A deployment with an airflow_local_settings.py of its own (in
$AIRFLOW_HOME/config, found first) calls ``register()`` from it.
"""

import sys

# Importing ml_pipeline.experiment_importer first imports Airflow, which imports this file: the code that
# imported it then calls register() itself (the tests do).
if "ml_pipeline.experiment_importer" not in sys.modules:
    from ml_pipeline.experiment_importer import register

    register()
