"""Watches one folder of a git repository at HEAD, for asset watchers (event-driven scheduling).

The triggerer runs ``GitFolderTrigger.run``: every ``poll_seconds`` it asks git (plain, local
commands: no fetch, no network, no lock taken) which tree the folder has at HEAD, and yields a
``TriggerEvent`` ``{"commit", "tree", "file_hash", "path"}`` when that tree differs from the one last
seen. The tree id is git's content hash of the folder, so a commit that changes other files leaves it
as it is and starts nothing, and moving the repository or renaming the branch changes nothing either.

What was last seen lives in Airflow's database, in the watched asset's state store (the one the
provider's Kinesis trigger keeps its checkpoints in): a triggerer that restarts, a second triggerer
the trigger moves to, a DAG paused and unpaused, or a new poll interval (a new trigger) all start
from it, and do not fire again for a folder that did not change. A file of state would be one per
machine, and the asset's events are not readable from the triggerer. The folder seen for the first
time (no state yet) fires: a new experiment committed is a change. Delivery is as the Kinesis
trigger's: a triggerer killed in the second between yielding an event and Airflow storing it may lose
that event (the next change, or the schedule, runs the experiment).
"""

from __future__ import annotations

import asyncio
import enum
import hashlib
import os
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseEventTrigger, TriggerEvent

#: The asset state store's key for the last tree seen.
STATE_KEY = "git_folder_last_seen"
GIT_TIMEOUT_SECONDS = 30


class _Unknown(enum.Enum):
    """What was last seen cannot be read now (a sentinel with a type of its own, told apart by ``is``)."""

    TOKEN = 0


_UNKNOWN = _Unknown.TOKEN
#: What git reads from the environment that would point it at another repository than ``repo``.
_GIT_LOCATION = ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_OBJECT_DIRECTORY", "GIT_COMMON_DIR")


class GitError(RuntimeError):
    """A git command that failed, with what it said."""


async def git(repo: str, *args: str) -> bytes:
    """``git -C repo args...`` in a subprocess, without blocking the event loop; its stdout."""
    env = {k: v for k, v in os.environ.items() if k not in _GIT_LOCATION}
    # Polling must not write to the repository (an index refresh would take index.lock) nor ask anything.
    env.update(GIT_OPTIONAL_LOCKS="0", GIT_TERMINAL_PROMPT="0", LC_ALL="C")
    process = await asyncio.create_subprocess_exec(
        "git",
        "-C",
        repo,
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), GIT_TIMEOUT_SECONDS)
    except BaseException:  # a timeout, or the trigger cancelled: the command goes too
        if process.returncode is None:
            process.kill()
            await process.wait()
        raise
    if process.returncode != 0:
        raise GitError(f"git {' '.join(args)} in {repo}: {err.decode(errors='replace').strip()}")
    return out


async def folder_at_head(repo: str, path: str) -> dict[str, Any] | None:
    """``{"commit", "tree", "path"}`` of ``path`` at HEAD, or None when HEAD has no such folder (or no
    commit yet). The commit is read first and the tree from that commit, so both belong together."""
    try:
        commit = (await git(repo, "rev-parse", "--verify", "--quiet", "HEAD^{commit}")).decode().strip()
    except GitError:
        await git(repo, "rev-parse", "--git-dir")  # raises when ``repo`` is no repository at all
        return None  # a repository whose HEAD has no commit yet
    try:
        # ``<commit>:<path>`` names the folder's tree (everything after the colon is the path: no ``^{tree}``).
        tree = (await git(repo, "rev-parse", "--verify", "--quiet", f"{commit}:{path}")).decode().strip()
    except GitError:
        return None  # not (or no longer) a folder at this commit
    return {"commit": commit, "tree": tree, "path": path}


async def file_hash(repo: str, commit: str, path: str) -> str | None:
    """sha256 of the file's bytes at ``commit``, 12 hex (``experiments.load``'s ``file_hash``); None
    when the commit has no such file."""
    try:
        body = await git(repo, "cat-file", "blob", f"{commit}:{path}")
    except GitError:
        return None
    return hashlib.sha256(body).hexdigest()[:12]


class GitFolderTrigger(BaseEventTrigger):
    """
    Fire when the content of a folder at a git repository's HEAD changes.

    :param repo: the repository's working tree (or a bare repository), as ``git -C`` takes it. Its HEAD
        is what is watched: the checkout that a deployment (git-sync, a pull, a push to a bare repo) moves.
    :param path: the folder, relative to the repository's top level, with ``/`` separators ("": the top level).
    :param file: a file in the folder whose content hash the event carries (``file_hash``).
    :param poll_seconds: seconds between two looks at HEAD.
    """

    def __init__(self, repo: str, path: str, file: str = "experiment.yaml", poll_seconds: float = 60) -> None:
        super().__init__()
        if not poll_seconds > 0:
            raise ValueError(f"poll_seconds must be positive, not {poll_seconds!r}")
        self.repo, self.path, self.file, self.poll_seconds = repo, path.strip("/"), file, poll_seconds

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {"repo": self.repo, "path": self.path, "file": self.file, "poll_seconds": self.poll_seconds},
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        last: dict | None | _Unknown = _UNKNOWN
        failing = None  # the last error said, so that a lasting one is said once
        while True:
            if last is _UNKNOWN:
                last = await self._last_seen()
                if last is not _UNKNOWN:
                    self.log.info(
                        "Watching %s in %s every %s s; last seen: %s",
                        self.path,
                        self.repo,
                        self.poll_seconds,
                        f"tree {last['tree']} at {last['commit']}" if last else "nothing",
                    )
            if last is not _UNKNOWN:
                try:
                    seen = await folder_at_head(self.repo, self.path)
                    failing = None
                except (GitError, OSError, asyncio.TimeoutError) as error:
                    # A repository being replaced, git missing: said once, and polling goes on.
                    if str(error) != failing:
                        self.log.warning("Cannot read %s in %s: %s", self.path, self.repo, error)
                        failing = str(error)
                    seen = None
                if seen is not None and (last is None or seen["tree"] != last["tree"]):
                    file = "/".join(filter(None, (self.path, self.file)))
                    seen["file_hash"] = await file_hash(self.repo, seen["commit"], file)
                    self.log.info("%s changed: tree %s at commit %s", self.path, seen["tree"], seen["commit"])
                    yield TriggerEvent(seen)
                    last = seen
                    await self._remember(seen)
            await asyncio.sleep(self.poll_seconds)

    async def _last_seen(self) -> dict | None | _Unknown:
        """What was seen last (None: nothing yet), or ``_UNKNOWN`` while the store cannot be read: no event
        is fired then, since the folder may well be the one already seen."""
        store = self.asset_state_store
        if store is None:
            return None
        try:
            value = await store.aget(STATE_KEY, default=None)
        except ValueError:  # more than one watched asset: the store cannot say whose state it would be
            self.log.warning("No single watched asset to keep what was seen in: it is kept in memory only")
            self.asset_state_store = None
            return None
        except Exception as error:  # noqa: BLE001 - the database unreachable: asked again at the next poll
            self.log.warning("Cannot read what was last seen (asked again in %s s): %s", self.poll_seconds, error)
            return _UNKNOWN
        return value if isinstance(value, dict) and isinstance(value.get("tree"), str) else None

    async def _remember(self, seen: dict) -> None:
        if self.asset_state_store is None:
            return  # kept in ``run``'s memory only
        try:
            await self.asset_state_store.aset(STATE_KEY, seen)
        except Exception as error:  # noqa: BLE001 - kept in memory; a restart before the next save re-fires
            self.log.warning("Cannot store what was seen: %s", error)
