"""werkzeug's development server handler, with HTTP/1.1 keep-alive that works.

werkzeug 3.1's ``WSGIRequestHandler.run_wsgi`` answers every request with
``Connection: close`` (and then waits 10 ms reading whatever the client sends
next, to discard it): each SDK call pays a new TCP connection and a new server
thread. Keep-alive needs only that the server knows where a request body ends
before it reads the next request line; this handler gives the application the
body as a stream limited to ``Content-Length`` (or the de-chunked stream), drains
what the application did not read, and keeps the connection open unless the
client asked to close it, the request's framing was unknown, or the application
failed mid-answer. Headers go out with the first body chunk in one write, with
Nagle's algorithm off, so small answers cost one segment.
"""
from __future__ import annotations

import socket

from werkzeug.exceptions import InternalServerError
from werkzeug.serving import DechunkedInput, WSGIRequestHandler
from werkzeug.wsgi import LimitedStream

_DROPPED = (ConnectionError, socket.timeout, TimeoutError)


class KeepAliveRequestHandler(WSGIRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    #: An idle kept-alive connection is closed after this many seconds.
    timeout = 120

    def run_wsgi(self) -> None:  # noqa: C901 - one request, start to end
        if self.headers.get("Expect", "").lower().strip() == "100-continue":
            self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")

        self.environ = environ = self.make_environ()
        framed = True
        if isinstance(environ["wsgi.input"], DechunkedInput):
            body = environ["wsgi.input"]
        else:
            length = environ.get("CONTENT_LENGTH", "")
            try:
                size = int(length) if length else 0
            except ValueError:
                size, framed = 0, False
            if size < 0:
                size, framed = 0, False
            body = LimitedStream(self.rfile, size)
            environ["wsgi.input"] = body
            environ["wsgi.input_terminated"] = True

        state = {"status": None, "headers": None, "sent": False, "chunked": False}
        head_request = environ["REQUEST_METHOD"] == "HEAD"

        def send_head(first: bytes) -> None:
            code_text, _, message = state["status"].partition(" ")
            code = int(code_text)
            lines = [f"{self.protocol_version} {code} {message}\r\n".encode("latin-1")]
            keys = set()
            for key, value in state["headers"]:
                lines.append(f"{key}: {value}\r\n".encode("latin-1"))
                keys.add(key.lower())
            if "server" not in keys:
                lines.append(f"Server: {self.version_string()}\r\n".encode("latin-1"))
            if "date" not in keys:
                lines.append(f"Date: {self.date_time_string()}\r\n".encode("latin-1"))
            bodyless = head_request or 100 <= code < 200 or code in (204, 304)
            if "content-length" not in keys and not bodyless:
                if self.request_version >= "HTTP/1.1":
                    state["chunked"] = True
                    lines.append(b"Transfer-Encoding: chunked\r\n")
                else:
                    self.close_connection = True
            if self.close_connection:
                lines.append(b"Connection: close\r\n")
            elif self.request_version < "HTTP/1.1":
                lines.append(b"Connection: keep-alive\r\n")
            lines.append(b"\r\n")
            self.wfile.write(b"".join(lines) + self._frame(first, state["chunked"]))
            state["sent"] = True
            self.log_request(code, "-")

        def write(data: bytes) -> None:
            assert state["status"] is not None, "write() before start_response"
            if not state["sent"]:
                send_head(data)
            elif data:
                self.wfile.write(self._frame(data, state["chunked"]))

        def start_response(status, headers, exc_info=None):
            if exc_info:
                try:
                    if state["sent"]:
                        raise exc_info[1].with_traceback(exc_info[2])
                finally:
                    exc_info = None
            elif state["status"] is not None and state["sent"]:
                raise AssertionError("Headers already sent")
            state["status"], state["headers"] = status, headers
            return write

        if not framed:
            self.close_connection = True

        def execute(app) -> None:
            application_iter = app(environ, start_response)
            try:
                for data in application_iter:
                    write(data)
                if not state["sent"]:
                    write(b"")
                if state["chunked"]:
                    self.wfile.write(b"0\r\n\r\n")
            finally:
                if hasattr(application_iter, "close"):
                    application_iter.close()

        try:
            execute(self.server.app)
        except _DROPPED as error:
            self.close_connection = True
            self.connection_dropped(error, environ)
            return
        except Exception as error:  # noqa: BLE001 - as werkzeug: a 500 if nothing was sent yet
            self.close_connection = True
            if self.server.passthrough_errors:
                raise
            if not state["sent"]:
                state["status"] = None
                try:
                    execute(InternalServerError())
                except Exception:  # noqa: BLE001
                    pass
            from werkzeug.debug.tbtools import DebugTraceback

            self.server.log("error", f"Error on request:\n{DebugTraceback(error).render_traceback_text()}")
            return
        # What the application left of the body must go before the next request line.
        try:
            while body.read(65536):
                pass
        except Exception:  # noqa: BLE001 - the client went away mid-body: nothing to keep alive
            self.close_connection = True

    def log_error(self, format: str, *args) -> None:  # noqa: A002 - http.server's signature
        if format.startswith("Request timed out"):
            return  # an idle kept-alive connection closing: routine
        super().log_error(format, *args)

    @staticmethod
    def _frame(data: bytes, chunked: bool) -> bytes:
        if not chunked or not data:
            return data
        return b"%x\r\n%s\r\n" % (len(data), data)
