"""Runs on commit: an experiment's DAG runs when its folder changes in git, on its schedule as well.

Each experiment has an asset, ``experiments/<name>``. Where the experiment folder lies in a git
repository, the asset has a watcher: ``triggers.git.GitFolderTrigger`` polls the folder's tree at the
repository's HEAD from the triggerer and emits an asset event ``{"commit", "tree", "file_hash", "path"}``
when it changes. The DAG is scheduled on the asset, or on the asset or its ``schedule:`` (Airflow's
``AssetOrTimeSchedule``), so a commit and the clock start the same DAG. A git webhook (or a
``post-receive`` hook) can post the same event through Airflow's REST API (``POST /api/v2/assets/events``
with ``{"commit": ...}`` in ``extra``: README, "Runs on commit"); ``revision`` reads either.

Settings (environment, read when the DAG file is parsed):
  ML_PIPELINE_GIT_REPO            the repository to watch (default: the experiment folder's git top level)
  ML_PIPELINE_GIT_POLL_SECONDS    seconds between two looks at HEAD (default 60); 0: no watcher, only
                                  webhook events start runs on commit

Nothing here runs git or reads more than a few ``stat`` calls when a DAG file is parsed: git runs in the
triggerer (the watcher) and in tasks (``head_commit``).
"""

from __future__ import annotations

import math
import os
import re
import subprocess
from collections.abc import Mapping
from typing import Any

from airflow.sdk import Asset, AssetOrTimeSchedule, AssetWatcher, CronDataIntervalTimetable, CronTriggerTimetable
from airflow.sdk.configuration import conf

DEFAULT_POLL_SECONDS = 60.0
#: A git object name (SHA-1 or SHA-256, abbreviated to at least 7): what an event's commit must look like.
_OBJECT_NAME = re.compile(r"^[0-9a-f]{7,64}$")
_FILE_HASH = re.compile(r"^[0-9a-f]{12}$")


def asset_name(experiment_name: str) -> str:
    """The experiment's asset: its events start its DAG (the name a webhook looks its id up by)."""
    return f"experiments/{experiment_name}"


def schedule_for(
    experiment: dict, repo: str | None = None, *, poll_seconds: float | None = None
) -> Asset | AssetOrTimeSchedule:
    """The DAG's ``schedule``: the experiment's asset (watched in git where there is a repository), or
    ``AssetOrTimeSchedule`` of the asset and the experiment's ``schedule:`` (a cron expression or preset).

    ``repo`` (else ``$ML_PIPELINE_GIT_REPO``, else the folder's git top level) is the repository whose
    HEAD is watched; ``poll_seconds`` (else ``$ML_PIPELINE_GIT_POLL_SECONDS``, else 60) how often.
    Without a repository, or with polling off (0), the asset has no watcher: the DAG runs on its schedule,
    by hand, or on a webhook's asset event.
    """
    watch = _watch(experiment, repo, poll_seconds)
    watchers = []
    if watch is not None:
        # Only a watched folder loads the trigger's module (and Airflow's trigger base) at parse time.
        from ml_pipeline.triggers.git import GitFolderTrigger  # noqa: PLC0415 - see above

        root, path, poll = watch
        watchers = [
            AssetWatcher(name=f"git:{path or '.'}", trigger=GitFolderTrigger(repo=root, path=path, poll_seconds=poll))
        ]
    asset = Asset(name=asset_name(experiment["name"]), group="experiment", watchers=watchers)
    timetable = _timetable(experiment.get("schedule"))
    return asset if timetable is None else AssetOrTimeSchedule(timetable=timetable, assets=asset)


def describe(experiment: dict, repo: str | None = None, *, poll_seconds: float | None = None) -> str:
    """One Markdown paragraph for the DAG's doc: what starts its runs (as ``schedule_for`` decided)."""
    watch = _watch(experiment, repo, poll_seconds)
    when = f"on its schedule `{experiment['schedule']}`, " if experiment.get("schedule") else ""
    event = f'an asset event on `{asset_name(experiment["name"])}` (a webhook: README, "Runs on commit")'
    if watch is None:
        why = (
            "polling is off (`ML_PIPELINE_GIT_POLL_SECONDS=0`)"
            if _poll_seconds(poll_seconds) == 0
            else "the experiment folder is in no git repository"
        )
        return f"**Runs** {when}by hand, or on {event}. No commit starts it: {why}."
    root, path, poll = watch
    return (
        f"**Runs** {when}by hand, and on every commit that changes `{path or '.'}/` in `{root}` (HEAD looked "
        f"at every {poll:g} s by the triggerer), or on {event}. The run records the commit it trained from."
    )


def revision(context: Mapping[str, Any]) -> dict | None:
    """``{"commit", "file_hash", "source"}`` of the asset event that started this run (the latest, when
    several did), ``source`` being ``"watcher"`` or ``"webhook"``; None for a run nothing but the clock or
    a person started (the caller then records ``head_commit`` of the experiment folder and its own
    ``file_hash``). ``file_hash`` is None when a webhook did not send one. An event whose commit is not a
    git object name is refused (it would end up in tags and the summary)."""
    accessor = context.get("triggering_asset_events") or {}
    found = []
    for events in accessor.values():
        for event in events:
            extra = event.extra or {}
            # A trigger's event has its payload under "payload" (Airflow's Trigger.submit_event); the REST API
            # stores the posted extra as it is.
            carried = extra.get("payload") if extra.get("from_trigger") else extra
            if isinstance(carried, dict) and "commit" in carried:
                found.append((event.timestamp, carried, "webhook" if extra.get("from_rest_api") else "watcher"))
    if not found:
        return None
    _, carried, source = max(found, key=lambda item: item[0])
    commit, digest = carried.get("commit"), carried.get("file_hash")
    if not isinstance(commit, str) or not _OBJECT_NAME.match(commit):
        raise ValueError(
            f"the asset event that started this run names commit {commit!r}, not a git object name "
            "(7 to 64 lowercase hex digits)"
        )
    if digest is not None and (not isinstance(digest, str) or not _FILE_HASH.match(digest)):
        raise ValueError(f"the asset event that started this run has file_hash {digest!r}, not 12 lowercase hex digits")
    return {"commit": commit, "file_hash": digest, "source": source}


def head_commit(path: str) -> str | None:
    """The commit at HEAD of the git repository holding ``path``; None when there is none (not a
    repository, no commit yet, git not installed). For tasks: it runs git."""
    try:
        completed = subprocess.run(
            ["git", "-C", str(path), "rev-parse", "--verify", "--quiet", "HEAD^{commit}"],
            capture_output=True,
            text=True,
            timeout=30,
            env={**os.environ, "GIT_OPTIONAL_LOCKS": "0", "GIT_TERMINAL_PROMPT": "0"},
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    commit = completed.stdout.strip()
    return commit if completed.returncode == 0 and _OBJECT_NAME.match(commit) else None


def repository(folder: str) -> str | None:
    """The git top level holding ``folder`` (what ``git rev-parse --show-toplevel`` says, found without
    running git: the nearest folder upwards with a ``.git`` entry, a directory or a worktree's file)."""
    current = os.path.abspath(folder)
    while True:
        if os.path.exists(os.path.join(current, ".git")):
            return current
        parent = os.path.dirname(current)
        if parent == current:
            return None
        current = parent


def _watch(experiment: dict, repo: str | None, poll_seconds: float | None) -> tuple[str, str, float] | None:
    """(repository, folder relative to it, poll seconds) of the watcher, or None for no watcher."""
    poll = _poll_seconds(poll_seconds)
    folder = os.path.abspath(experiment["folder"])
    root = repo or os.environ.get("ML_PIPELINE_GIT_REPO") or repository(folder)
    if poll == 0 or not root:
        return None
    root = os.path.abspath(root)
    # A folder is named relative to the top level (``<commit>:<path>``), and a bare repository has no working tree.
    if not (os.path.exists(os.path.join(root, ".git")) or os.path.isdir(os.path.join(root, "objects"))):
        raise ValueError(
            f"experiments/{experiment['name']}: {root} (ML_PIPELINE_GIT_REPO) is not the top level of a git repository"
        )
    # Compared through the links (the folder may be reached through one), kept as given for git: a link that
    # a deployment moves (git-sync's) is followed at every poll.
    relative = os.path.relpath(os.path.realpath(folder), os.path.realpath(root))
    if relative.split(os.sep)[0] == os.pardir:
        raise ValueError(
            f"experiments/{experiment['name']}: the folder {folder} is not inside the git "
            f"repository {root} (ML_PIPELINE_GIT_REPO)"
        )
    return root, "" if relative == os.curdir else relative.replace(os.sep, "/"), poll


def _poll_seconds(given: float | None) -> float:
    raw = given if given is not None else os.environ.get("ML_PIPELINE_GIT_POLL_SECONDS", DEFAULT_POLL_SECONDS)
    try:
        value = float(raw)
    except (TypeError, ValueError):
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"ML_PIPELINE_GIT_POLL_SECONDS: {raw!r} is not a number of seconds (0 turns polling off)")
    return value


def _timetable(schedule: str | None):
    """The timetable ``DAG(schedule=...)`` makes of the experiment's ``schedule:`` (UTC), or None."""
    if schedule is None:
        return None
    if schedule in ("@once", "@continuous"):
        # Neither repeats on a clock: there is no timetable to combine with the asset.
        raise ValueError(
            f"schedule: {schedule!r} cannot be combined with runs on commit; use a cron expression, "
            "a preset such as @weekly, or null"
        )
    # As DAG(schedule="<cron>") chooses between the two.
    if conf.getboolean("scheduler", "create_cron_data_intervals"):
        return CronDataIntervalTimetable(schedule, "UTC")
    return CronTriggerTimetable(schedule, timezone="UTC")
