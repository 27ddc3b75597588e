"""Runs on commit, piece by piece: the git folder trigger against real git repositories (its async
generator run as the triggerer runs it), the schedule an experiment's DAG gets, and the revision a run
reads from the asset events that started it. tests/pipeline/test_runs_on_commit.py runs it all in Airflow."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

POLL = 0.05
#: Long enough for many polls: a change missed in it would have been seen.
QUIET = 40 * POLL


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


def commit(repo: Path, files: dict[str, str | None], message: str = "change") -> str:
    """Writes (or, for None, deletes) the files and commits them; the new commit."""
    for name, text in files.items():
        path = repo / name
        if text is None:
            path.unlink()
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "--allow-empty", "-m", message)
    return git(repo, "rev-parse", "HEAD")


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:12]


@pytest.fixture
def repo(tmp_path) -> Path:
    path = tmp_path / "repo"
    git(tmp_path, "init", "-q", "-b", "main", str(path))
    return path


class Watch:
    """The trigger's generator run on the event loop as the triggerer runs it, its events collected."""

    def __init__(self, trigger):
        self.trigger, self.events = trigger, []

    async def __aenter__(self):
        async def consume():
            async for event in self.trigger.run():
                self.events.append(event.payload)

        self.task = asyncio.create_task(consume())
        return self

    async def __aexit__(self, *exc):
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)

    async def until(self, count: int, timeout: float = 10) -> list[dict]:
        deadline = time.monotonic() + timeout
        while len(self.events) < count:
            if self.task.done():
                self.task.result()  # the generator's own error, if it died
                raise AssertionError(f"the trigger ended after {self.events}")
            assert time.monotonic() < deadline, f"{count} events awaited, {len(self.events)} came: {self.events}"
            await asyncio.sleep(POLL)
        return self.events

    async def quiet(self) -> list[dict]:
        await asyncio.sleep(QUIET)
        assert not self.task.done(), self.task
        return self.events


class StateStore:
    """The asset state store's two calls the trigger makes (``AssetStateStoreAccessors.aget``/``aset``),
    over a dict: what the triggerer's database keeps between two trigger instances."""

    def __init__(self):
        self.values = {}

    async def aget(self, key, default=None):
        return json.loads(self.values[key]) if key in self.values else default

    async def aset(self, key, value):
        self.values[key] = json.dumps(value)  # a JSON value, as the database holds it


def trigger(repo: Path, path: str = "experiments/toy", store=None, **kwargs):
    from ml_pipeline.triggers.git import GitFolderTrigger

    made = GitFolderTrigger(repo=str(repo), path=path, **{"poll_seconds": POLL, **kwargs})
    made.asset_state_store = store  # as the triggerer injects it
    return made


def test_the_folder_seen_first_fires_with_its_commit_tree_and_file_hash(repo):
    yaml = "hyperparameters: {n: 1}\n"
    first = commit(repo, {"experiments/toy/experiment.yaml": yaml, "experiments/toy/train.py": "print(1)\n"})

    async def scenario():
        async with Watch(trigger(repo)) as watch:
            return await watch.until(1)

    [event] = asyncio.run(scenario())
    assert event == {
        "commit": first,
        "tree": git(repo, "rev-parse", f"{first}:experiments/toy"),
        "path": "experiments/toy",
        "file_hash": digest(yaml),
    }


def test_a_commit_elsewhere_starts_nothing_and_one_in_the_folder_fires(repo):
    yaml = "a: 1\n"
    commit(repo, {"experiments/toy/experiment.yaml": yaml, "README.md": "x\n"})

    async def scenario():
        async with Watch(trigger(repo)) as watch:
            await watch.until(1)
            commit(repo, {"README.md": "y\n", "experiments/other/experiment.yaml": "b: 2\n"})
            assert len(await watch.quiet()) == 1, watch.events
            # Any file of the folder is the experiment's (its training code too); the file hash is the yaml's.
            second = commit(repo, {"experiments/toy/train.py": "print(2)\n"})
            event = (await watch.until(2))[1]
            assert (event["commit"], event["file_hash"]) == (second, digest(yaml))
            third = commit(repo, {"experiments/toy/experiment.yaml": "a: 2\n"})
            event = (await watch.until(3))[2]
            assert (event["commit"], event["file_hash"]) == (third, digest("a: 2\n"))
            # Back to an earlier content is a change too.
            fourth = commit(repo, {"experiments/toy/experiment.yaml": yaml})
            assert (await watch.until(4))[3]["commit"] == fourth
            assert len(await watch.quiet()) == 4, watch.events

    asyncio.run(scenario())


def test_a_new_trigger_starts_from_the_stored_state_and_does_not_fire_again(repo):
    """A triggerer restart, a move to another triggerer, a DAG paused and unpaused: a new trigger instance
    with the asset's state store."""
    commit(repo, {"experiments/toy/experiment.yaml": "a: 1\n"})
    store = StateStore()

    async def scenario():
        async with Watch(trigger(repo, store=store)) as watch:
            await watch.until(1)
        seen = await store.aget("git_folder_last_seen")
        assert seen["tree"] == watch.events[0]["tree"]
        commit(repo, {"elsewhere.txt": "1\n"})
        # ... even with another poll interval (a new trigger to Airflow: its kwargs differ).
        async with Watch(trigger(repo, store=store, poll_seconds=POLL / 2)) as again:
            assert await again.quiet() == []
            changed = commit(repo, {"experiments/toy/experiment.yaml": "a: 2\n"})
            assert (await again.until(1))[0]["commit"] == changed
        assert (await store.aget("git_folder_last_seen"))["commit"] == changed

    asyncio.run(scenario())


def test_a_folder_missing_at_head_fires_nothing_until_it_comes_back_changed(repo):
    commit(repo, {"experiments/toy/experiment.yaml": "a: 1\n", "keep": "\n"})

    async def scenario():
        async with Watch(trigger(repo)) as watch:
            await watch.until(1)
            commit(repo, {"experiments/toy/experiment.yaml": None})
            assert len(await watch.quiet()) == 1
            commit(repo, {"experiments/toy/experiment.yaml": "a: 1\n"})  # as it was: nothing to train anew
            assert len(await watch.quiet()) == 1
            back = commit(repo, {"experiments/toy/experiment.yaml": "a: 3\n"})
            assert (await watch.until(2))[1]["commit"] == back

    asyncio.run(scenario())


def test_a_repository_without_commits_or_no_repository_at_all_fires_nothing_and_keeps_polling(repo, tmp_path, capsys):
    async def scenario():
        async with Watch(trigger(repo)) as empty, Watch(trigger(tmp_path / "nowhere")) as missing:
            assert await empty.quiet() == [] and await missing.quiet() == []
            first = commit(repo, {"experiments/toy/experiment.yaml": "a: 1\n"})
            assert (await empty.until(1))[0]["commit"] == first

    asyncio.run(scenario())  # the trigger logs through Airflow's structlog, to stdout here
    said = [line for line in capsys.readouterr().out.splitlines() if "Cannot read experiments/toy" in line]
    assert len(said) == 1 and str(tmp_path / "nowhere") in said[0], said  # said once, not at every poll


def test_a_repository_of_its_own_is_watched_at_its_top_level(repo):
    first = commit(repo, {"experiment.yaml": "a: 1\n"})

    async def scenario():
        async with Watch(trigger(repo, path="")) as watch:
            return await watch.until(1)

    [event] = asyncio.run(scenario())
    assert (event["commit"], event["tree"], event["file_hash"]) == (
        first,
        git(repo, "rev-parse", "HEAD^{tree}"),
        digest("a: 1\n"),
    )


def test_a_bare_repository_a_deployment_pushes_to_is_watched_at_its_head(repo, tmp_path):
    commit(repo, {"experiments/toy/experiment.yaml": "a: 1\n"})
    bare = tmp_path / "deployed.git"
    git(tmp_path, "clone", "-q", "--bare", str(repo), str(bare))

    async def scenario():
        async with Watch(trigger(bare)) as watch:
            await watch.until(1)
            pushed = commit(repo, {"experiments/toy/experiment.yaml": "a: 2\n"})
            git(repo, "push", "-q", str(bare), "main")
            assert (await watch.until(2))[1]["commit"] == pushed

    asyncio.run(scenario())


def test_the_trigger_serializes_to_what_rebuilds_it():
    from ml_pipeline.triggers.git import GitFolderTrigger

    made = GitFolderTrigger(repo="/srv/repo", path="experiments/toy/", poll_seconds=5)
    classpath, kwargs = made.serialize()
    assert classpath == "ml_pipeline.triggers.git.GitFolderTrigger"
    assert kwargs == {"repo": "/srv/repo", "path": "experiments/toy", "file": "experiment.yaml", "poll_seconds": 5}
    assert GitFolderTrigger(**kwargs).serialize() == (classpath, kwargs)
    with pytest.raises(ValueError, match="poll_seconds"):
        GitFolderTrigger(repo="/srv/repo", path="x", poll_seconds=0)


# --- the DAG's schedule -------------------------------------------------------------------------------


def experiment(folder, schedule=None, name="toy") -> dict:
    return {"name": name, "folder": str(folder), "file_hash": "0" * 12, "schedule": schedule}


def test_an_experiment_in_a_repository_is_scheduled_on_its_watched_asset_and_its_cron(repo, monkeypatch):
    from airflow.sdk import Asset, AssetOrTimeSchedule

    from ml_pipeline.gitops import schedule_for

    monkeypatch.delenv("ML_PIPELINE_GIT_REPO", raising=False)
    monkeypatch.setenv("ML_PIPELINE_GIT_POLL_SECONDS", "7")
    folder = repo / "experiments" / "toy"
    folder.mkdir(parents=True)

    asset = schedule_for(experiment(folder))
    assert isinstance(asset, Asset) and asset.name == "experiments/toy"
    [watcher] = asset.watchers
    assert watcher.trigger.serialize()[1] == {
        "repo": str(repo),
        "path": "experiments/toy",
        "file": "experiment.yaml",
        "poll_seconds": 7.0,
    }
    both = schedule_for(experiment(folder, "@weekly"), poll_seconds=2)
    assert isinstance(both, AssetOrTimeSchedule)
    assert both.asset_condition.name == "experiments/toy" and both.asset_condition.watchers[0].trigger.poll_seconds == 2
    assert (both.timetable.expression, str(both.timetable.timezone)) == ("0 0 * * 0", "UTC")  # @weekly
    assert schedule_for(experiment(folder, "30 2 * * 1-5")).timetable.expression == "30 2 * * 1-5"


def test_without_a_repository_or_with_polling_off_the_asset_has_no_watcher(tmp_path, repo, monkeypatch):
    from airflow.sdk import AssetOrTimeSchedule

    from ml_pipeline.gitops import describe, schedule_for

    monkeypatch.delenv("ML_PIPELINE_GIT_REPO", raising=False)
    outside = tmp_path / "plain" / "toy"
    outside.mkdir(parents=True)
    assert schedule_for(experiment(outside)).watchers == []
    timed = schedule_for(experiment(outside, "@daily"))
    assert isinstance(timed, AssetOrTimeSchedule) and timed.asset_condition.watchers == []
    assert "No commit starts it: the experiment folder is in no git repository" in describe(experiment(outside))
    inside = repo / "experiments" / "toy"
    inside.mkdir(parents=True)
    monkeypatch.setenv("ML_PIPELINE_GIT_POLL_SECONDS", "0")
    assert schedule_for(experiment(inside)).watchers == []
    assert "polling is off" in describe(experiment(inside))


def test_the_repository_can_be_named_and_must_hold_the_folder(repo, tmp_path, monkeypatch):
    from ml_pipeline.gitops import schedule_for

    folder = repo / "experiments" / "toy"
    folder.mkdir(parents=True)
    linked = tmp_path / "linked"
    linked.symlink_to(repo)  # a deployment reaches the repository through a link (git-sync's)
    monkeypatch.setenv("ML_PIPELINE_GIT_REPO", str(linked))
    kwargs = schedule_for(experiment(folder)).watchers[0].trigger.serialize()[1]
    assert (kwargs["repo"], kwargs["path"]) == (str(linked), "experiments/toy")
    git(tmp_path, "init", "-q", str(tmp_path / "elsewhere"))
    monkeypatch.setenv("ML_PIPELINE_GIT_REPO", str(tmp_path / "elsewhere"))
    with pytest.raises(ValueError, match="is not inside the git repository"):
        schedule_for(experiment(folder))
    with pytest.raises(ValueError, match="is not the top level of a git repository"):
        schedule_for(experiment(folder), repo=str(repo / "experiments"))
    # One repository per experiment: the folder is its top level.
    git(folder, "init", "-q")
    own = schedule_for(experiment(folder), repo=str(folder)).watchers[0].trigger
    assert (own.repo, own.path) == (str(folder), "")


@pytest.mark.parametrize("value", ["-1", "nan", "inf", "soon"])
def test_a_poll_interval_that_is_no_number_of_seconds_is_refused(repo, monkeypatch, value):
    from ml_pipeline.gitops import schedule_for

    monkeypatch.setenv("ML_PIPELINE_GIT_POLL_SECONDS", value)
    with pytest.raises(ValueError, match="ML_PIPELINE_GIT_POLL_SECONDS"):
        schedule_for(experiment(repo))


def test_a_schedule_that_does_not_repeat_cannot_be_combined_with_commits(repo):
    from ml_pipeline.gitops import schedule_for

    with pytest.raises(ValueError, match="'@once' cannot be combined"):
        schedule_for(experiment(repo, "@once"))


PARSE = r"""
import sys, time
sys.path.insert(0, sys.argv[1])
import airflow.sdk  # as the dag-processor has it before it parses a file
import croniter  # its import runs `file -b <python>` (platform.architecture): any cron schedule's cost, not ours
ran = []
sys.addaudithook(lambda event, args: ran.append((event, str(args)[:80]))
                 if event in ("subprocess.Popen", "os.exec", "os.posix_spawn", "socket.connect") else None)
started = time.perf_counter()
from ml_pipeline.gitops import describe, schedule_for
for i in range(20):
    experiment = {"name": f"e{i}", "folder": f"{sys.argv[2]}/experiments/e{i}", "file_hash": "0" * 12,
                  "schedule": "@weekly" if i % 2 else None}
    schedule_for(experiment), describe(experiment)
print(time.perf_counter() - started, ran)
"""


def test_building_twenty_schedules_runs_nothing_and_is_cheap(repo):
    """No git, no network at parse time: the watcher runs git later, in the triggerer."""
    for i in range(20):
        (repo / "experiments" / f"e{i}").mkdir(parents=True)
    out = subprocess.run(
        [sys.executable, "-c", PARSE, str(REPO_ROOT / "plugins"), str(repo)],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "AIRFLOW__CORE__LOAD_EXAMPLES": "False"},
    )
    seconds, ran = out.stdout.split(" ", 1)
    assert ran.strip() == "[]", ran
    assert float(seconds) < 0.1, seconds


# --- the run's revision ----------------------------------------------------------------------------------


def events(*extras: dict, start=datetime(2026, 7, 6, tzinfo=timezone.utc)):
    """``context["triggering_asset_events"]`` as the task runner builds it, for events with these extras."""
    from airflow.sdk.execution_time.comms import AssetEventDagRunReferenceResult
    from airflow.sdk.execution_time.context import TriggeringAssetEventsAccessor

    return TriggeringAssetEventsAccessor.build(
        [
            AssetEventDagRunReferenceResult(
                asset={"name": "experiments/toy", "uri": "experiments/toy", "extra": {}},
                extra=extra,
                source_task_id=None,
                source_dag_id=None,
                source_run_id=None,
                source_map_index=-1,
                source_aliases=[],
                timestamp=start + timedelta(seconds=i),
            )
            for i, extra in enumerate(extras)
        ]
    )


def test_the_revision_is_the_latest_triggering_events_commit_from_the_watcher_or_a_webhook():
    from ml_pipeline.gitops import revision

    watcher = {
        "from_trigger": True,
        "payload": {"commit": "a" * 40, "tree": "b" * 40, "path": "experiments/toy", "file_hash": "c" * 12},
    }
    assert revision({"triggering_asset_events": events(watcher)}) == {
        "commit": "a" * 40,
        "file_hash": "c" * 12,
        "source": "watcher",
    }
    webhook = {"from_rest_api": True, "commit": "d" * 40}
    assert revision({"triggering_asset_events": events(watcher, webhook)}) == {
        "commit": "d" * 40,
        "file_hash": None,
        "source": "webhook",
    }
    # A scheduled or manual run: nothing started it but the clock or a person.
    assert revision({"triggering_asset_events": events()}) is None
    assert revision({}) is None
    assert revision({"triggering_asset_events": events({"from_rest_api": True})}) is None


@pytest.mark.parametrize(
    "extra",
    [
        {"commit": "main; rm -rf /"},
        {"commit": 12345},
        {"commit": "A" * 40},
        {"commit": "a" * 40, "file_hash": "not-a-hash"},
    ],
)
def test_a_webhook_event_with_a_commit_that_is_no_object_name_is_refused(extra):
    from ml_pipeline.gitops import revision

    with pytest.raises(ValueError, match="asset event that started this run"):
        revision({"triggering_asset_events": events({"from_rest_api": True, **extra})})


def test_head_commit_is_the_repositorys_head_or_none(repo, tmp_path):
    from ml_pipeline.gitops import head_commit

    assert head_commit(str(repo)) is None  # no commit yet
    first = commit(repo, {"experiments/toy/experiment.yaml": "a: 1\n"})
    assert head_commit(str(repo / "experiments" / "toy")) == first
    (tmp_path / "plain").mkdir()
    assert head_commit(str(tmp_path / "plain")) is None
    assert head_commit(str(tmp_path / "missing")) is None


def test_the_repository_is_the_git_top_level_as_git_says_for_a_worktree_too(repo, tmp_path):
    from ml_pipeline.gitops import repository

    commit(repo, {"experiments/toy/experiment.yaml": "a: 1\n"})
    git(repo, "worktree", "add", "-q", str(tmp_path / "worktree"))  # its .git is a file
    for top in (repo, tmp_path / "worktree"):
        folder = top / "experiments" / "toy"
        assert repository(str(folder)) == git(folder, "rev-parse", "--show-toplevel") == str(top)
    (tmp_path / "plain").mkdir()
    assert repository(str(tmp_path / "plain")) is None
