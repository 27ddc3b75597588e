"""One container or process of a job's host, once for every caller: a training job's hosts
(``training.py``), an endpoint's instances (``hosting/fleet.py``) and the ``docker run`` of a command
on the run's stand-in host (``ssm/dockerd.py``).

A ``Host`` is what the runner started (``runners/base.py``'s ``Running``) with its output read line by
line in a thread of its own, and stopped as SageMaker stops one: SIGTERM, then SIGKILL once the grace
period has passed.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable

from localaws.sagemaker.runners.base import Running

log = logging.getLogger(__name__)


def free_port() -> int:
    """A port on 127.0.0.1 nothing listens on now (a serving container's, a rendezvous's)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def pump(running: Running, write: Callable[[str], None]) -> None:
    """Every line ``running`` writes, to ``write``, until it exits (run in a thread)."""
    try:
        for line in running.lines():
            write(line)
    except Exception:  # noqa: BLE001 - a stream closed at kill time is normal
        log.debug("the output of %s ended", running, exc_info=True)


class Host:
    """A started container or process, its lines going to ``write`` as they come."""

    def __init__(self, running: Running, write: Callable[[str], None], name: str):
        self.running = running
        self.terminated_at: float | None = None
        self.reader = threading.Thread(target=pump, args=(running, write), name=f"lines-{name}", daemon=True)
        self.reader.start()

    def poll(self) -> int | None:
        """The exit code, or None while it runs."""
        return self.running.wait(0)

    def wait(self, timeout: float | None = None) -> int | None:
        return self.running.wait(timeout)

    def terminate(self) -> None:
        """SIGTERM (once): the algorithm may save its model and checkpoints; the grace period starts."""
        if self.terminated_at is None:
            self.terminated_at = time.monotonic()
            self.running.terminate()

    def kill_after(self, grace_seconds: float) -> None:
        """SIGKILL once the grace period after SIGTERM has passed."""
        if self.terminated_at is not None and time.monotonic() - self.terminated_at > grace_seconds:
            self.running.kill()

    def close(self, timeout: float = 10) -> None:
        """Killed if still running, and its last lines read."""
        self.running.kill()
        self.reader.join(timeout=timeout)
