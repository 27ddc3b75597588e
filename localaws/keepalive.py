"""werkzeug's development server handler, with HTTP/1.1 keep-alive that works.

werkzeug 3.1's ``WSGIRequestHandler.run_wsgi`` answers every request with
``Connection: close`` (and then waits 10 ms reading whatever the client sends
next, to discard it): each SDK call pays a new TCP connection and a new server
thread. Keep-alive needs only that the server knows where a request body ends
before it reads the next request line; this handler gives the application the
body as a stream limited to ``Content-Length`` (or the de-chunked stream, with
``wsgi.input_terminated``), drains what the application did not read, and keeps
the connection open unless the client asked to close it, the request's framing
was unknown, the application refused an oversized body unread, or it failed
mid-answer. Headers go out with the first body chunk in one write, with
Nagle's algorithm off, so small answers cost one segment.

Request headers are parsed without the email package (http.server's way costs
more than the rest of a small request), and an InvokeEndpoint request gets a
lean WSGI environ: it is the one call on a model's request path.
"""

from __future__ import annotations

import socket
import sys
import time
from http import HTTPStatus
from typing import Any
from urllib.parse import unquote

from werkzeug.exceptions import InternalServerError
from werkzeug.serving import DechunkedInput, WSGIRequestHandler
from werkzeug.wsgi import LimitedStream

from localaws.bodies import CLOSE_CONNECTION

_DROPPED = (ConnectionError, socket.timeout, TimeoutError)
_MAX_LINE = 65536
_MAX_HEADERS = 100
_FAST_PREFIX = "/endpoints/"


class _Body:
    """A request body of known length on the connection's buffered reader (InvokeEndpoint's path)."""

    __slots__ = ("_rfile", "_left")

    def __init__(self, rfile, size: int):
        self._rfile = rfile
        self._left = size

    def read(self, size: int = -1) -> bytes:
        if self._left <= 0:
            return b""
        size = self._left if size is None or size < 0 else min(size, self._left)
        data = self._rfile.read(size)
        if len(data) < size:
            raise ConnectionError("the client closed the connection mid-body")
        self._left -= len(data)
        return data

    def readline(self, size: int = -1) -> bytes:
        if self._left <= 0:
            return b""
        limit = self._left if size is None or size < 0 else min(size, self._left)
        data = self._rfile.readline(limit)
        self._left -= len(data)
        return data


class Headers:
    """Request headers as http.server's handlers and werkzeug read them (``get``, ``items``...),
    parsed with a plain loop."""

    __slots__ = ("_items", "_first")

    def __init__(self, items: list[tuple[str, str]]):
        self._items = items
        first: dict[str, str] = {}
        for name, value in items:
            first.setdefault(name.lower(), value)
        self._first = first

    def get(self, name: str, default=None):
        return self._first.get(name.lower(), default)

    def __getitem__(self, name: str):
        return self._first.get(name.lower())

    def __contains__(self, name: str) -> bool:
        return name.lower() in self._first

    def get_all(self, name: str, default=None):
        found = [value for key, value in self._items if key.lower() == name.lower()]
        return found or default

    def items(self) -> list[tuple[str, str]]:
        return list(self._items)

    def keys(self) -> list[str]:
        return [name for name, _ in self._items]

    def values(self) -> list[str]:
        return [value for _, value in self._items]

    def __iter__(self):
        return iter(self.keys())

    def __len__(self) -> int:
        return len(self._items)

    def __str__(self) -> str:
        return "".join(f"{name}: {value}\r\n" for name, value in self._items) + "\r\n"


class KeepAliveRequestHandler(WSGIRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    #: An idle kept-alive connection is closed after this many seconds.
    timeout = 120

    _date = (0, "")
    #: Our own parse, read the way http.server's handlers and werkzeug read its email Message.
    headers: Headers  # type: ignore[assignment]

    def parse_request(self) -> bool:
        """http.server's parse_request, reading the headers without the email package."""
        self.command = None  # type: ignore[assignment]  # as http.server's own parse_request: None until parsed
        self.request_version = version = self.default_request_version
        self.close_connection = True
        requestline = str(self.raw_requestline, "iso-8859-1").rstrip("\r\n")
        self.requestline = requestline
        words = requestline.split()
        if not words:
            return False
        if len(words) >= 3:
            version = words[-1]
            try:
                if not version.startswith("HTTP/"):
                    raise ValueError
                major, minor = version.split("/", 1)[1].split(".")
                if not (major.isdigit() and minor.isdigit() and len(major) <= 10 and len(minor) <= 10):
                    raise ValueError
                number = int(major), int(minor)
            except ValueError:
                self.send_error(HTTPStatus.BAD_REQUEST, f"Bad request version ({version!r})")
                return False
            if number >= (1, 1) and self.protocol_version >= "HTTP/1.1":
                self.close_connection = False
            if number >= (2, 0):
                self.send_error(HTTPStatus.HTTP_VERSION_NOT_SUPPORTED, f"Invalid HTTP version ({version})")
                return False
            self.request_version = version
        if not 2 <= len(words) <= 3:
            self.send_error(HTTPStatus.BAD_REQUEST, f"Bad request syntax ({requestline!r})")
            return False
        command, path = words[:2]
        if len(words) == 2:
            self.close_connection = True
            if command != "GET":
                self.send_error(HTTPStatus.BAD_REQUEST, f"Bad HTTP/0.9 request type ({command!r})")
                return False
        self.command, self.path = command, path
        if self.path.startswith("//"):
            self.path = "/" + self.path.lstrip("/")
        items: list[tuple[str, str]] = []
        while True:
            line = self.rfile.readline(_MAX_LINE + 1)
            if len(line) > _MAX_LINE:
                self.send_error(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "Line too long")
                return False
            if line in (b"\r\n", b"\n", b""):
                break
            if len(items) >= _MAX_HEADERS:
                self.send_error(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "Too many headers")
                return False
            text = line.decode("iso-8859-1")
            if text[0] in " \t" and items:  # obsolete line folding: part of the previous value
                name, value = items[-1]
                items[-1] = (name, f"{value} {text.strip()}")
                continue
            name, _, value = text.partition(":")
            items.append((name.strip(), value.strip()))
        self.headers = Headers(items)
        connection = self.headers.get("Connection", "").lower()
        if connection == "close":
            self.close_connection = True
        elif connection == "keep-alive" and self.protocol_version >= "HTTP/1.1":
            self.close_connection = False
        return True

    def date_time_string(self, timestamp=None) -> str:
        if timestamp is not None:
            return super().date_time_string(timestamp)
        now = int(time.time())
        if KeepAliveRequestHandler._date[0] != now:
            KeepAliveRequestHandler._date = (now, super().date_time_string(now))
        return KeepAliveRequestHandler._date[1]

    def lean_environ(self) -> dict | None:
        """A WSGI environ built without werkzeug's generality, for InvokeEndpoint; None when the
        request needs the general one (a chunked body)."""
        headers = self.headers
        if "chunked" in headers.get("Transfer-Encoding", "").lower():
            return None
        path, _, query = self.path.partition("?")
        environ: dict[str, Any] = {
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": "http",
            "wsgi.input": self.rfile,
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": True,
            "wsgi.multiprocess": False,
            "wsgi.run_once": False,
            "REQUEST_METHOD": self.command,
            "SCRIPT_NAME": "",
            "PATH_INFO": unquote(path, "latin-1") if "%" in path else path,
            "QUERY_STRING": query,
            "SERVER_NAME": self.server.server_address[0],
            "SERVER_PORT": str(self.server.server_address[1]),
            "SERVER_PROTOCOL": self.request_version,
            "REMOTE_ADDR": self.client_address[0] if self.client_address else "",
        }
        for name, value in headers._items:
            if "_" in name:
                continue
            key = name.upper().replace("-", "_")
            if key not in ("CONTENT_TYPE", "CONTENT_LENGTH"):
                key = "HTTP_" + key
                if key in environ:
                    value = f"{environ[key]},{value}"
            environ[key] = value
        return environ

    def run_wsgi(self) -> None:  # noqa: C901 - one request, start to end
        if self.headers.get("Expect", "").lower().strip() == "100-continue":
            self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")

        environ = None
        if self.command == "POST" and self.path.startswith(_FAST_PREFIX):
            environ = self.lean_environ()
        lean = environ is not None
        self.environ = environ = environ or self.make_environ()
        framed = True
        body: DechunkedInput | _Body | LimitedStream
        if isinstance(environ["wsgi.input"], DechunkedInput):
            body = environ["wsgi.input"]
            environ.pop("CONTENT_LENGTH", None)  # Transfer-Encoding wins over Content-Length (RFC 9112 6.3)
        else:
            length = environ.get("CONTENT_LENGTH", "")
            try:
                size = int(length) if length else 0
            except ValueError:
                size, framed = 0, False
            if size < 0:
                size, framed = 0, False
            # werkzeug's stub asks for IO[bytes]; LimitedStream reads only read/readline of it.
            body = _Body(self.rfile, size) if lean else LimitedStream(self.rfile, size)  # type: ignore[arg-type]
            environ["wsgi.input"] = body
            environ["wsgi.input_terminated"] = True

        state: dict[str, Any] = {"status": None, "headers": None, "sent": False, "chunked": False}
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
            if environ.get(CLOSE_CONNECTION):  # a body refused unread: the client learns it now
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
            from werkzeug.debug.tbtools import DebugTraceback  # noqa: PLC0415 - only on a crash, as werkzeug does

            self.server.log("error", f"Error on request:\n{DebugTraceback(error).render_traceback_text()}")
            return
        if environ.get(CLOSE_CONNECTION):  # an oversized body refused unread: nothing can follow it
            self.close_connection = True
            self._linger()
            return
        # What the application left of the body must go before the next request line.
        try:
            while body.read(65536):
                pass
        except Exception:  # noqa: BLE001 - the client went away mid-body: nothing to keep alive
            self.close_connection = True

    #: A lingering close reads and drops what the client still sends for this long, at most this much.
    linger_seconds = 2.0
    linger_bytes = 64 * 1024 * 1024

    def _linger(self) -> None:
        """Close after an answer that refused the body unread, without resetting the connection: closing
        a socket with unread data sends a reset, which can reach the client before it has read the
        answer (it then sees a broken connection, not the error). So: no more writes, then read and drop
        what it still sends until it closes, for a moment at most (as HTTP servers' lingering close)."""
        try:
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_WR)
            self.connection.settimeout(self.linger_seconds)  # a timed-out socket file reads no more: one wait
            deadline, left = time.monotonic() + self.linger_seconds, self.linger_bytes
            while left > 0 and time.monotonic() < deadline:
                chunk = self.rfile.read1(65536)
                if not chunk:
                    return
                left -= len(chunk)
        except OSError:  # timed out, or the client is gone already
            pass

    def log_error(self, format: str, *args) -> None:  # noqa: A002 - http.server's signature
        if format.startswith("Request timed out"):
            return  # an idle kept-alive connection closing: routine
        super().log_error(format, *args)

    @staticmethod
    def _frame(data: bytes, chunked: bool) -> bytes:
        if not chunked or not data:
            return data
        return b"%x\r\n%s\r\n" % (len(data), data)
