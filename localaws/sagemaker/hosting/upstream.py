"""A lean HTTP/1.1 client for the gateway -> container hop, with kept-alive connections.

On InvokeEndpoint's path every microsecond the gateway spends is a microsecond the
model server does not get on a shared machine. http.client parses headers through
the email package and urllib3 adds a liveness poll and timeout changes per request;
this client writes a request in one ``sendall`` and reads the answer from a
buffered socket: status line, headers, a ``Content-Length`` or chunked body.

A connection taken from the pool may have been closed by the server meanwhile
(an idle keep-alive timing out): if it fails before any byte of the answer came
back, the request is sent once more on a fresh connection.
"""

from __future__ import annotations

import socket
import threading

_MAX_LINE = 65536
_MAX_HEADERS = 100


class UpstreamError(Exception):
    """The container could not be reached or broke the exchange."""


class Unreachable(UpstreamError):
    """Connection refused or not established in time: nothing was sent."""


class Timeout(UpstreamError):
    """The container took longer than the read timeout to answer."""


class _Stale(Exception):
    """A reused connection was found closed before the answer began."""


class Response:
    __slots__ = ("status", "headers", "data")

    def __init__(self, status: int, headers: dict[str, str], data: bytes):
        self.status = status
        self.headers = headers  # lower-case names
        self.data = data


class _Connection:
    __slots__ = ("sock", "reader")

    def __init__(self, host: str, port: int, connect_timeout: float, read_timeout: float):
        try:
            sock = socket.create_connection((host, port), timeout=connect_timeout)
        except socket.timeout:
            raise Unreachable(f"connecting to {host}:{port} timed out") from None
        except OSError as error:
            raise Unreachable(f"cannot connect to {host}:{port}: {error}") from None
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(read_timeout)
        self.sock = sock
        self.reader = sock.makefile("rb", buffering=65536)

    def exchange(self, request: bytes, reused: bool) -> tuple[Response, bool]:
        try:
            self.sock.sendall(request)
            line = self.reader.readline(_MAX_LINE + 1)
        except socket.timeout:
            raise Timeout() from None
        except OSError:
            if reused:
                raise _Stale() from None
            raise UpstreamError("the container closed the connection") from None
        if not line:
            if reused:
                raise _Stale()
            raise UpstreamError("the container closed the connection without answering")
        try:
            version, status_text = line.split(None, 2)[:2]
            status = int(status_text)
            headers: dict[str, str] = {}
            for _ in range(_MAX_HEADERS):
                raw = self.reader.readline(_MAX_LINE + 1)
                if raw in (b"\r\n", b"\n", b""):
                    break
                name, _, value = raw.decode("latin-1").partition(":")
                headers[name.strip().lower()] = value.strip()
            if "content-length" in headers:
                length = int(headers["content-length"])
                data = self.reader.read(length) if length else b""
                if len(data) != length:
                    raise UpstreamError("the container closed the connection mid-answer")
            elif headers.get("transfer-encoding", "").lower() == "chunked":
                data = self._chunked()
            elif status in (204, 304) or 100 <= status < 200:
                data = b""
            else:  # delimited by the connection's end
                data = self.reader.read()
                headers["connection"] = "close"
        except socket.timeout:
            raise Timeout() from None
        except (ValueError, OSError) as error:
            raise UpstreamError(f"malformed answer from the container: {error}") from None
        connection = headers.get("connection", "").lower()
        keep = connection != "close" and (version != b"HTTP/1.0" or connection == "keep-alive")
        return Response(status, headers, data), keep

    def _chunked(self) -> bytes:
        parts: list[bytes] = []
        while True:
            size = int(self.reader.readline(_MAX_LINE + 1).split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                while self.reader.readline(_MAX_LINE + 1) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return b"".join(parts)
            parts.append(self.reader.read(size))
            self.reader.readline(_MAX_LINE + 1)

    def close(self) -> None:
        try:
            self.reader.close()
        finally:
            self.sock.close()


class ConnectionPool:
    """Kept-alive connections to one container port (on 127.0.0.1, or at the container's own address)."""

    def __init__(
        self, port: int, connect_timeout: float, read_timeout: float, max_idle: int = 64, host: str = "127.0.0.1"
    ):
        self.host = host
        self.port = port
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.max_idle = max_idle
        self._idle: list[_Connection] = []
        self._lock = threading.Lock()
        self._closed = False
        self._host = f"Host: {host}:{port}\r\n"

    def request(self, method: str, path: str, headers: dict[str, str] | None = None, body: bytes = b"") -> Response:
        head = [f"{method} {path} HTTP/1.1\r\n", self._host]
        if body or method == "POST":
            head.append(f"Content-Length: {len(body)}\r\n")
        if headers:
            for name, value in headers.items():
                head.append(f"{name}: {value}\r\n")
        head.append("\r\n")
        payload = "".join(head).encode("latin-1") + body
        with self._lock:
            connection = self._idle.pop() if self._idle else None
        for _attempt in range(2):
            reused = connection is not None
            if connection is None:
                connection = _Connection(self.host, self.port, self.connect_timeout, self.read_timeout)
            try:
                response, keep = connection.exchange(payload, reused)
            except _Stale:
                connection.close()
                connection = None
                continue
            except BaseException:
                connection.close()
                raise
            if keep:
                with self._lock:
                    if not self._closed and len(self._idle) < self.max_idle:
                        self._idle.append(connection)
                        connection = None
            if connection is not None:
                connection.close()
            return response
        raise UpstreamError("the container keeps closing connections")

    def close(self) -> None:
        """Close the idle connections (those in use close when their request ends)."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()
