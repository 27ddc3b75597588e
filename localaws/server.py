"""Serving the gateway over HTTP, and stopping everything it started when it stops."""

from __future__ import annotations

import contextlib
import logging
import signal
import threading

from werkzeug.serving import ThreadedWSGIServer

from localaws import leftovers, state
from localaws.gateway import Gateway
from localaws.keepalive import KeepAliveRequestHandler
from localaws.settings import Settings
from localaws.unsigned import RequireCredentials, is_loopback

log = logging.getLogger("localaws")


class _QuietHandler(KeepAliveRequestHandler):  # keep-alive: SDK clients reuse connections
    def log_request(self, code="-", size="-"):  # one line per request drowns the job logs
        if log.isEnabledFor(logging.DEBUG):
            super().log_request(code, size)


class LocalAWS:
    def __init__(self, settings: Settings | None = None):
        self.settings = settings or Settings()
        # Whatever fails here (the port in use, say), what was started so far stops again.
        with contextlib.ExitStack() as started:
            self.gateway = Gateway(self.settings)
            started.callback(self.gateway.close)
            self.work_dir = leftovers.WorkDir(self.settings.work_dir)
            started.callback(self.work_dir.close)
            leftovers.clean(self.settings, self.work_dir)
            self.http = ThreadedWSGIServer(self.settings.host, self.settings.port, self.gateway, handler=_QuietHandler)
            started.callback(self.http.server_close)
            self.http.daemon_threads = True
            self.settings.port = self.http.server_port  # port 0 picks a free one
            # After the socket listens (a restored endpoint fetches its model through it), before serving.
            self.state = state.attach(self.gateway)
            app = self.gateway if self.state is None else self.state.track(self.gateway)
            if not is_loopback(self.settings.host):  # reachable from elsewhere: no request without credentials
                log.warning(
                    "localaws: listening on %s, beyond loopback: requests without credentials are "
                    "refused (and no signature is checked)",
                    self.settings.host,
                )
                app = RequireCredentials(app)
            self.http.app = app
            started.pop_all()  # all started: close() stops them from now on

    @property
    def endpoint_url(self) -> str:
        return self.settings.endpoint_url

    def serve_forever(self) -> None:
        self.http.serve_forever(poll_interval=0.2)

    def start_in_thread(self) -> threading.Thread:
        thread = threading.Thread(target=self.serve_forever, name="localaws-http", daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        self.http.shutdown()
        self.close()

    def close(self) -> None:
        """Everything but the HTTP server's loop: the last snapshot first, while all is as it was."""
        if self.state is not None:
            self.state.close()
        self._release()

    def _release(self) -> None:
        self.gateway.close()
        self.work_dir.close()
        self.http.server_close()


def serve(settings: Settings) -> None:
    server = LocalAWS(settings)
    stopping = threading.Event()

    def _stop(signum, _frame):
        if not stopping.is_set():
            stopping.set()
            log.info("localaws: stopping (signal %s)", signum)
            threading.Thread(target=server.http.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    log.info("localaws: ready on %s (SageMaker: localaws engine; other services: moto)", server.endpoint_url)
    try:
        server.serve_forever()
    finally:
        server.close()
        log.info("localaws: stopped")
