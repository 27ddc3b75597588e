"""Tying a child process's life to its parent's, so nothing outlives localaws."""

from __future__ import annotations

import ctypes
import signal
import sys

_PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int = signal.SIGKILL):
    """A ``preexec_fn`` for Popen: the child gets ``sig`` when the thread that started it ends
    (on Linux; elsewhere a no-op). Start children from a thread that lives as long as they should."""

    def _set() -> None:
        if sys.platform.startswith("linux"):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)

    return _set
