"""Each ``experiments/<name>/experiment.yaml`` is a DAG file of its own: its DAG, or its own import error.

Airflow records import errors per file, and an import error marks every DAG of its file broken (not
scheduled, not triggerable). So one generator file for every experiment would let one bad experiment file
stop them all. Instead the experiments folder is a DAG bundle of its own (``BUNDLE``, a LocalDagBundle in
``[dag_processor] dag_bundle_config_list``) whose DAG files are the experiment files, read by
``ExperimentDagImporter``, registered in Airflow's importer registry (keyed by extension) by ``register()``,
which ``plugins/airflow_local_settings.py`` calls in every Airflow process (dag-processor, workers,
``dag.test()``, DagBag).

Airflow 3.3.2's DagBag asks that registry which files to parse, but its dag-processor still finds files
with ``airflow.utils.file.find_dag_file_paths`` (.py and .zip only); ``register()`` makes that function
list the experiment files in the experiments bundle, and only them: an experiment's own Python (train.py,
prepare.py) is never imported by Airflow.
"""

from __future__ import annotations

import os
import traceback
from collections.abc import Iterator
from pathlib import Path

from airflow.dag_processing.importers.base import AbstractDagImporter, DagImportError, DagImportResult

from ml_pipeline import experiments

#: The bundle's name in [dag_processor] dag_bundle_config_list.
BUNDLE = "experiments"


class ExperimentDagImporter(AbstractDagImporter):
    """``experiment.yaml`` -> the experiment's DAG (``pipeline_dag.build_dag``), or an import error naming the
    file, the field and what is wrong."""

    @classmethod
    def supported_extensions(cls) -> list[str]:
        return [".yaml"]

    def list_dag_files(self, directory: str | os.PathLike, safe_mode: bool = True) -> Iterator[str]:
        base = Path(directory)
        if (base / experiments.FILE).is_file():
            yield str(base / experiments.FILE)
            return
        if base.is_dir():
            for folder in sorted(base.iterdir()):
                if (folder / experiments.FILE).is_file() and not folder.name.startswith("."):
                    yield str(folder / experiments.FILE)

    def import_file(
        self,
        file_path: str | os.PathLike,
        *,
        bundle_path: Path | None = None,
        bundle_name: str | None = None,
        safe_mode: bool = True,
    ) -> DagImportResult:
        path = Path(file_path)
        relative = self.get_relative_path(path, bundle_path)
        result = DagImportResult(file_path=relative)
        if path.name != experiments.FILE:
            result.skipped_files.append(str(path))  # another .yaml: not ours to read
            return result
        try:
            experiment = experiments.load(path.parent)
            from ml_pipeline.pipeline_dag import build_dag  # noqa: PLC0415 - the provider's operators

            dag = build_dag(experiment)
        except experiments.ExperimentError as error:
            result.errors.append(
                DagImportError(file_path=relative, message=str(error), error_type="experiment", stacktrace=str(error))
            )
            return result
        except Exception as error:  # noqa: BLE001 - as Airflow's own importer reports a failing DAG file
            result.errors.append(
                DagImportError(
                    file_path=relative, message=f"{type(error).__name__}: {error}", stacktrace=traceback.format_exc()
                )
            )
            return result
        dag.fileloc = str(path)
        dag.relative_fileloc = relative
        result.dags.append(dag)
        return result


def is_experiments_root(directory: str | os.PathLike) -> bool:
    try:
        return Path(directory).resolve() == experiments.root().resolve()
    except OSError:
        return False


def register() -> None:
    """Register the importer and let the dag-processor's file discovery see the experiment files (idempotent)."""
    import airflow.utils.file as airflow_file  # noqa: PLC0415
    from airflow.dag_processing.importers import get_importer_registry  # noqa: PLC0415

    registry = get_importer_registry()
    if not isinstance(registry.get_importer(experiments.FILE), ExperimentDagImporter):
        registry.register(ExperimentDagImporter())
    if getattr(airflow_file.find_dag_file_paths, "_experiments", False):
        return
    original = airflow_file.find_dag_file_paths

    def find_dag_file_paths(directory, safe_mode):
        if is_experiments_root(directory):
            return list(ExperimentDagImporter().list_dag_files(directory))
        return original(directory, safe_mode)

    # A mark on the function itself, found by any copy of this module (the getattr above).
    find_dag_file_paths._experiments = True  # type: ignore[attr-defined]
    airflow_file.find_dag_file_paths = find_dag_file_paths
