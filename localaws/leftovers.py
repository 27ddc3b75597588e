"""What a localaws that was killed (SIGKILL, OOM, a crash) left behind, removed at its next start.

A localaws that stops gracefully removes everything it started. One that is killed cannot: its
jobs' ``/opt/ml`` trees stay in its work dir, its containers (training, serving, SSM) stay in the
Docker engine, and a process-runner child's own children may outlive it (the child itself gets
SIGKILL with its parent). At the next start with the same work dir, localaws removes exactly what it
made there, and nothing else on the machine:

* the folders of jobs, commands and serving instances under the work dir (``LOCALAWS_KEEP_JOB_DIRS=1``
  keeps the jobs' and commands', for debugging, as it does while localaws runs);
* the containers and networks labelled with this work dir (``localaws.work-dir``);
* the processes whose ``SAGEMAKER_BASE_DIR`` (the /opt/ml tree the process runner gave them) lies in
  it and whose localaws is gone.

The work dir is taken with a lock for as long as localaws runs: a second localaws on the same work
dir does not clean up what the first one is running (it warns).
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import signal
from pathlib import Path

log = logging.getLogger("localaws")

#: Docker label naming the work dir of the localaws that made a container or network.
WORK_DIR_LABEL = "localaws.work-dir"
_JOB_FOLDERS = ("training-jobs", "processing-jobs", "transform-jobs", "ssm-commands")
_RUNTIME_FOLDERS = (Path("hosting") / "instances", Path("hosting") / "models")


class WorkDir:
    """The work dir, held (flock) for as long as this object lives."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._handle = open(self.root / ".localaws.lock", "a+")
        try:
            fcntl.flock(self._handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            self.owned = True
        except BlockingIOError:
            self.owned = False

    def close(self) -> None:
        self._handle.close()


def clean(settings, work_dir: WorkDir) -> dict[str, int]:
    """Remove what a previous localaws on this work dir left; how much of each, for the log."""
    if not work_dir.owned:
        log.warning(
            "localaws: another localaws uses the work dir %s; what it runs there is left alone "
            "(give this one its own LOCALAWS_WORK_DIR)",
            work_dir.root,
        )
        return {}
    removed = {"processes": _kill_processes(work_dir.root), "folders": 0, "containers": 0}
    keep_jobs = bool(os.environ.get("LOCALAWS_KEEP_JOB_DIRS"))
    folders = [] if keep_jobs else [work_dir.root / name for name in _JOB_FOLDERS]
    folders += [work_dir.root / name for name in _RUNTIME_FOLDERS]
    for folder in folders:
        if folder.is_dir():
            for child in folder.iterdir():
                shutil.rmtree(child, ignore_errors=True) if child.is_dir() else child.unlink(missing_ok=True)
                removed["folders"] += 1
    if settings.runner in ("auto", "docker"):
        removed["containers"] = _remove_containers(settings, work_dir.root)
    if any(removed.values()):
        log.info("localaws: removed what the last localaws on %s left behind: %s", work_dir.root, removed)
    return removed


def _remove_containers(settings, root: Path) -> int:
    from localaws.sagemaker.runners.docker import cleanup_leftovers, engine_available  # noqa: PLC0415

    if not engine_available(settings.docker_host):
        return 0
    try:
        return cleanup_leftovers(settings.docker_host, labels={WORK_DIR_LABEL: str(root)})
    except Exception:  # noqa: BLE001 - the engine refused: say so, start anyway
        log.warning("localaws: could not remove the containers a killed localaws left", exc_info=True)
        return 0


def _kill_processes(root: Path) -> int:
    """SIGKILL the orphans running with an /opt/ml tree (``SAGEMAKER_BASE_DIR``) under ``root``: those
    no living localaws (one that took no lock: an older version) is the parent of."""
    from localaws.sagemaker.contract import OPT_ML_ENV  # noqa: PLC0415

    marker = f"{OPT_ML_ENV}=".encode()
    prefixes = tuple({str(root).rstrip("/").encode() + b"/", str(root.resolve()).encode() + b"/"})
    marked, parents = set(), {}
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else ():
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            environ = Path(f"/proc/{entry}/environ").read_bytes()
            parents[int(entry)] = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):  # gone, or not ours to read
            continue
        for variable in environ.split(b"\0"):
            if variable.startswith(marker) and (variable[len(marker) :] + b"/").startswith(prefixes):
                marked.add(int(entry))
                break
    killed = 0
    for pid in marked:
        ancestor, seen = pid, set()
        while ancestor in marked and ancestor not in seen:  # up to the first that is not a job's
            seen.add(ancestor)
            ancestor = parents.get(ancestor, 1)
        if _is_localaws(ancestor):
            continue
        try:
            os.kill(pid, signal.SIGKILL)
            killed += 1
        except OSError:
            pass
    return killed


def _is_localaws(pid: int) -> bool:
    try:
        arguments = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"localaws" in arguments and b"serve" in arguments
