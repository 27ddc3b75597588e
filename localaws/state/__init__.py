"""localaws's state across restarts (``LOCALAWS_STATE_DIR``, ``serve --state-dir``), as the cloud keeps it.

With a state folder, everything localaws holds (moto's services: S3 buckets and objects, EC2 and
VPCs, IAM, SSM, ECR, CloudWatch, the rest; our engine: SageMaker's jobs, models, endpoints and
registry, Application Auto Scaling for variants, SSM commands) is written there behind the requests
that change it and read back at the next start:

* **Write-behind.** A thread wakes every half second; it pickles moto's backends when a request
  that may change them has reached moto since the last time, and our engine's records (under each
  part's lock) when a request to the engine may have changed them or something of theirs is
  running, writing them when they differ from the last snapshot. A request pays only for telling
  reads from writes and, into moto, for being counted in and out of a gate (its body already read,
  so a slow client holds no snapshot up); moto is pickled with the gate shut (requests to moto
  wait, a few milliseconds) so it is never caught half-way through a change. AWS's managed IAM
  policies are not in the pickle (moto makes them afresh at start; a snapshot names them). Each
  file is replaced atomically (``files.py``); a SIGKILL loses at most the last half second or so,
  and leaves the previous snapshot whole.
* **Graceful stop** (SIGTERM, Ctrl-C): a last snapshot before anything is stopped.
* **Start.** moto's services come back as they were. A snapshot that cannot be read (another
  moto or Python: its header says so before anything is unpickled) is set aside, with the S3
  bodies it refers to, and that part starts empty. Whatever was running cannot be: training and
  tuning jobs and SSM commands that had not ended come back Failed, their end at the moment
  localaws stopped, with the reason; endpoints that served start their fleets again from their
  model data and serve (see ``HostingEngine.restart``); scaling targets and policies carry on.

Without a state folder (the default of a plain ``python -m localaws serve`` and of the tests)
nothing here runs: localaws is in memory, as before.
"""

from __future__ import annotations

import logging
import threading
import time

from localaws import bodies
from localaws.state import engine as engine_state
from localaws.state.files import StateDirInUse, StateFolder
from localaws.state.moto_backends import MotoState
from localaws.state.pickling import BLOB_NAME, Blobs

__all__ = ["Persistence", "StateDirInUse", "attach"]

log = logging.getLogger("localaws.state")

INTERVAL_SECONDS = 0.5
_ALIVE_SECONDS = 1.0
#: How long a snapshot waits for the requests in moto to finish (new ones wait meanwhile) before it
#: pickles without the gate (a long upload is in flight): the next snapshot follows that request.
_QUIET_TIMEOUT = 0.05
#: Operation names that only read (every other request to moto counts as a change).
_READ_PREFIXES = (
    "Describe",
    "List",
    "Get",
    "Head",
    "Lookup",
    "Search",
    "Scan",
    "Query",
    "Filter",
    "BatchGet",
    "Select",
    "Simulate",
    "Test",
    "Validate",
    "Estimate",
    "Check",
)
#: Our engine is compared with its last snapshot at least this often, whatever else happens.
_ENGINE_CHECK_SECONDS = 30.0
#: How long ``close`` waits for a snapshot under way before it gives up its own (the one before stands).
_CLOSE_WAIT_SECONDS = 60.0


def attach(gateway) -> "Persistence | None":
    """Restore the gateway's state from its settings' state folder and keep it there; None when
    it has none. Call before the first request is served and ``close()`` before the gateway's."""
    if not gateway.settings.state_dir:
        return None
    persistence = Persistence(gateway, StateFolder(gateway.settings.state_dir))
    persistence.open()
    return persistence


class _Gate:
    """Requests into moto count themselves in and out; a snapshot shuts the gate and waits for none."""

    def __init__(self):
        self._cond = threading.Condition(threading.Lock())
        self._inside = 0
        self._shut = False

    def enter(self) -> None:
        with self._cond:
            while self._shut:
                self._cond.wait()
            self._inside += 1

    def leave(self) -> None:
        with self._cond:
            self._inside -= 1
            if self._inside == 0 and self._shut:
                self._cond.notify_all()

    def shut(self, timeout: float) -> bool:
        """Stop new requests and wait for those inside; False (and open again) if they did not finish."""
        with self._cond:
            self._shut = True
            if self._cond.wait_for(lambda: self._inside == 0, timeout):
                return True
            self._shut = False
            self._cond.notify_all()
            return False

    def open(self) -> None:
        with self._cond:
            self._shut = False
            self._cond.notify_all()


class Persistence:
    def __init__(self, gateway, folder: StateFolder):
        self.gateway = gateway
        self.folder = folder
        self.moto = MotoState()
        self.gate = _Gate()
        self._dirty = threading.Event()  # moto may have changed since its last snapshot
        self._engine_dirty = threading.Event()  # a request may have changed our engine
        self._engine_parts: dict[str, bytes] | None = None
        self._engine_was_active = True  # the first tick compares the engine with the folder
        self._engine_checked = 0.0
        self._moto_backends = -1  # moto's backends counted at the last tick
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._snapshotting = threading.Lock()  # one snapshot at a time: the thread's or close()'s
        self._moto_call = None  # how MotoErrors called moto before the gate was put there
        self._last_alive = 0.0
        self._failures = 0
        self._alive_failures = 0
        #: What the last start restored, and what that cost (for the log and the README's figures).
        self.restored: dict = {}

    # --- start ----------------------------------------------------------------------------------

    def open(self) -> None:
        self.folder.open()
        try:
            self._restore()
            self._gate_moto()
        except BaseException:
            self.folder.close()
            raise
        self._thread = threading.Thread(target=self._run, name="localaws-state", daemon=True)
        self._thread.start()

    def _restore(self) -> None:
        started = time.perf_counter()
        moto_data = self.folder.read(StateFolder.MOTO)
        engine_data = self.folder.read(StateFolder.ENGINE)
        if moto_data is None and engine_data is None:
            log.info("localaws state: %s is empty; starting afresh", self.folder.root)
            self.folder.touch_alive()
            return
        moments = [self.folder.last_alive()]
        blobs = Blobs(read=self.folder.read_blob)
        if moto_data is not None:
            try:
                held = self.moto.load(moto_data, blobs)
            except Exception as error:  # noqa: BLE001 - never refuse to start over an old snapshot
                # Its S3 bodies go aside with it: the next snapshot's pruning would take them for garbage.
                self._set_aside(StateFolder.MOTO, error, with_blobs=True)
            else:
                self.restored["moto services"] = held
                self.folder.prune_blobs(blobs.referenced)  # written for a snapshot a kill cut short
                if blobs.missing:
                    log.error(
                        "localaws state: %d S3 object bodies were missing and came back empty", len(blobs.missing)
                    )
        if engine_data is not None:
            try:
                moments.append(engine_state.saved_at(engine_data))
                stopped_at = max(moment for moment in moments if moment) if any(moments) else time.time()
                self.restored.update(engine_state.restore(self.gateway, engine_data, stopped_at))
            except Exception as error:  # noqa: BLE001
                self._set_aside(StateFolder.ENGINE, error)
        self._moto_backends = self.moto.backends()
        self.restored["seconds"] = round(time.perf_counter() - started, 3)
        log.info("localaws state: restored from %s: %s", self.folder.root, self.restored)

    def _set_aside(self, name: str, error: Exception, with_blobs: bool = False) -> None:
        why = f"{type(error).__name__}: {error}"
        aside = self.folder.set_aside(name, why, with_blobs=with_blobs)
        log.error(
            "localaws state: could not read %s (%s); it is kept as %s and that part starts empty", name, why, aside
        )

    # --- the request path -----------------------------------------------------------------------

    def track(self, app):
        """The whole gateway: a request our engine answered that may have changed it marks the
        engine's state to be saved (moto's requests mark moto's, in the gate)."""
        from localaws.gateway import ENGINE_CHANGE  # noqa: PLC0415

        changed = self._engine_dirty

        def app_with_state(environ, start_response):
            try:
                return app(environ, start_response)
            finally:
                if environ.get(ENGINE_CHANGE) and not _reads_only(environ):
                    changed.set()

        return app_with_state

    def _gate_moto(self) -> None:
        """Requests into moto, their bodies read: counted in and out of the gate; one that may change
        moto marks it to be saved."""
        gate, changed = self.gate, self._dirty
        moto = self.gateway.moto
        self._moto_call, outer = moto.call, moto.call

        def call(app, environ, start_response):
            gate.enter()
            try:
                return outer(app, environ, start_response)
            finally:
                gate.leave()
                if not _reads_only(environ):
                    changed.set()

        moto.call = call

    # --- write-behind -----------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.wait(INTERVAL_SECONDS):
            try:
                with self._snapshotting:
                    self.snapshot()
                self._failures = 0
            except Exception:  # noqa: BLE001 - keep trying; say so, but not twice a second
                self._failures += 1
                if _worth_saying(self._failures):
                    log.exception("localaws state: a snapshot failed (%d in a row)", self._failures)
            if time.monotonic() - self._last_alive >= _ALIVE_SECONDS:
                self._last_alive = time.monotonic()
                try:
                    self.folder.touch_alive()
                    self._alive_failures = 0
                except OSError:  # the state folder deleted, say: keep going, and say so
                    self._alive_failures += 1
                    if _worth_saying(self._alive_failures):
                        log.exception(
                            "localaws state: cannot mark %s alive (%d in a row)", self.folder.root, self._alive_failures
                        )

    def snapshot(self, everything: bool = False) -> None:
        """Write what changed: moto's snapshot first, so the engine's never refers to what moto lacks.

        Our engine changes on requests and, in between, only while something runs (a job, a command,
        an endpoint or a scaling activity in progress): it is pickled then, once more after, and every
        half minute regardless, and written when its pickle differs from the last one."""
        active = engine_state.active(self.gateway)
        parts = None
        if (
            everything
            or active
            or self._engine_was_active
            or self._engine_dirty.is_set()
            or time.monotonic() - self._engine_checked >= _ENGINE_CHECK_SECONDS
        ):
            self._engine_dirty.clear()
            self._engine_checked = time.monotonic()
            parts = engine_state.dump(self.gateway)
        self._engine_was_active = active
        backends = self.moto.backends()
        if backends != self._moto_backends:
            self._moto_backends = backends
            self._dirty.set()
        if everything or self._dirty.is_set():
            self._dirty.clear()
            try:
                self._save_moto()
            except BaseException:
                self._dirty.set()
                raise
        if parts is not None and parts != self._engine_parts:
            self.folder.write(StateFolder.ENGINE, engine_state.encode(parts, time.time()))
            self._engine_parts = parts

    def _save_moto(self) -> None:
        blobs = Blobs()
        quiet = self.gate.shut(_QUIET_TIMEOUT)
        try:
            data = self._dump_moto(blobs, quiet)
        finally:
            if quiet:
                self.gate.open()
        for key, name in blobs.new:  # bodies: outside the gate (a FakeKey's bytes never change)
            with key.lock:
                try:
                    key._value_buffer.seek(0)
                except ValueError:  # deleted since it was pickled: the next snapshot goes without it
                    self._dirty.set()
                    return
                self.folder.write_blob(name, key._value_buffer)
        self.folder.write(StateFolder.MOTO, data)
        for key, name in blobs.new:
            key.__dict__[BLOB_NAME] = name
        self.folder.prune_blobs(blobs.referenced)

    def _dump_moto(self, blobs: Blobs, quiet: bool) -> bytes:
        for attempt in range(5):
            try:
                data = self.moto.dump(blobs)
                break
            except RuntimeError:  # a request changed a dict as it was pickled (the gate was not shut)
                if quiet or attempt == 4:
                    raise
                blobs.new.clear()
                blobs.referenced.clear()
        for key, _ in blobs.new:
            key.etag  # noqa: B018 - computed now, so that no request computes it while its body is copied
        return data

    # --- stop -------------------------------------------------------------------------------------

    def close(self) -> None:
        """The last snapshot (before the gateway stops anything), then let the folder go."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        # Never beside the thread's: one still under way (a large S3 body on a slow disk) finishes first.
        if self._snapshotting.acquire(timeout=_CLOSE_WAIT_SECONDS):
            try:
                self.snapshot(everything=True)
                self.folder.touch_alive()
            except Exception:  # noqa: BLE001
                log.exception("localaws state: the last snapshot failed; the one before it stands")
            finally:
                self._snapshotting.release()
        else:
            log.error(
                "localaws state: a snapshot still runs after %.0f s; the last one is not taken, the one "
                "before it stands",
                _CLOSE_WAIT_SECONDS,
            )
        self.folder.close()
        if self._moto_call is not None:
            self.gateway.moto.call = self._moto_call


def _reads_only(environ: dict) -> bool:
    """Whether a request cannot change what it reached (when unsure: it can)."""
    target = environ.get("HTTP_X_AMZ_TARGET")
    if target:  # JSON protocols: Logs_20140328.PutLogEvents, SageMaker.DescribeTrainingJob
        return target.rsplit(".", 1)[-1].startswith(_READ_PREFIXES)
    query = environ.get("QUERY_STRING", "")
    method = environ.get("REQUEST_METHOD", "GET")
    if "Action=" in query:
        return _action(query).startswith(_READ_PREFIXES)
    if method == "POST" and environ.get("CONTENT_TYPE", "").startswith("application/x-www-form-urlencoded"):
        # The query protocol (EC2, IAM, STS, ...): the operation is the body's Action (read by then).
        body = bodies.buffered(environ)
        return body is not None and _action(body.decode("latin-1")).startswith(_READ_PREFIXES)
    return method in ("GET", "HEAD", "OPTIONS")  # REST protocols: S3 and the like


def _worth_saying(failures: int) -> bool:
    return failures in (1, 10) or failures % 120 == 0


def _action(form: str) -> str:
    for pair in form.split("&"):
        if pair.startswith("Action="):
            return pair[len("Action=") :]
    return ""
