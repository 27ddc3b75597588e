"""Start localaws for a command that needs it, unless one already listens; stop it after if we started it."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def healthy(endpoint: str) -> bool:
    try:
        with urllib.request.urlopen(endpoint.rstrip("/") + "/_localaws/health", timeout=1):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def ensure_localaws(endpoint: str, log_path: Path, state_dir: Path | None = None):
    """``state_dir``: where the localaws started here keeps its state across restarts (None: in memory)."""
    if healthy(endpoint):
        print(f"localaws already listening on {endpoint} (its state is as it was started)")
        yield None
        return
    sys.path.insert(0, str(ROOT))
    from localaws.lifetime import die_with_parent  # noqa: PLC0415 - importable once ROOT is on sys.path

    port = endpoint.rsplit(":", 1)[1].strip("/")
    log = open(log_path, "w")
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "localaws", "AWS_SECRET_ACCESS_KEY": "localaws"}
    command = [sys.executable, "-m", "localaws", "serve", "--port", port]
    if state_dir:
        command += ["--state-dir", str(state_dir)]
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        preexec_fn=die_with_parent(signal.SIGTERM),
    )
    started = time.monotonic()
    while not healthy(endpoint):
        if process.poll() is not None or time.monotonic() - started > 30:
            raise SystemExit(f"localaws did not start; see {log_path}")
        time.sleep(0.1)
    kept = state_dir or os.environ.get("LOCALAWS_STATE_DIR")
    kept = f"state in {kept}" if kept else "state in memory"
    print(f"started localaws on {endpoint} in {time.monotonic() - started:.1f}s ({kept}; log: {log_path})")
    try:
        yield process
    finally:
        process.terminate()
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()
