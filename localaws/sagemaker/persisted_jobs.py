"""What a job backend hands localaws/state across a restart: its ``jobs`` (name -> job), and on the way
back, the jobs that were running ended as each kind's ``end_interrupted`` says."""

from __future__ import annotations

import threading
from typing import Any


class PersistedJobs:
    """Mixed into a backend whose ``jobs`` (each with ``done``, ``name`` and ``end_interrupted``) persist,
    guarded by its ``lock``."""

    jobs: dict[str, Any]
    lock: threading.Lock | threading.RLock

    def state(self) -> dict:
        """What is persisted (pickled by the caller, under the lock)."""
        return {"jobs": self.jobs}

    def restore(self, state: dict, stopped_at: float) -> list[str]:
        """Put a snapshot back; the jobs that were running end as ``end_interrupted`` says (their names)."""
        interrupted = []
        with self.lock:
            self.jobs.update(state.get("jobs", {}))
            for job in self.jobs.values():
                if not job.done:
                    job.end_interrupted(stopped_at)
                    interrupted.append(job.name)
        return interrupted
