"""Request bodies as HTTP frames them (``Content-Length`` or chunked), size-limited, and JSON as
AWS reads it (no ``NaN`` or ``Infinity``, which Python's json accepts).

Every body localaws reads itself goes through ``buffer`` (InvokeEndpoint's, handed to the model
and nobody else, through ``read``): the server's handler (``keepalive.py``)
gives the application a stream that ends where the body ends, de-chunked when the client
sent it chunked (``wsgi.input_terminated``), so a chunked body is read to its end instead of
being taken for empty. A body over its limit is refused before it is read whole, and the
connection is closed after the answer rather than drained of it. A body is read once per
request: whoever reads it next (moto, after our engine passed on a request) gets the same bytes,
and a body refused part-way read is never handed on.
"""

from __future__ import annotations

import io
import json
import math

#: Set in the environ when the connection must close after the answer (what is left of an
#: oversized body is not read, so nothing else can follow it on the connection).
CLOSE_CONNECTION = "localaws.close_connection"

#: AWS's JSON APIs (SageMaker, Application Auto Scaling, SSM), as localaws serves them.
MAX_JSON_BODY = 10 * 1024 * 1024
#: localaws's own admin API (small JSON documents).
MAX_ADMIN_BODY = 1024 * 1024


#: The request's body once ``buffer`` read it: its bytes, or the error that refused it.
BUFFERED = "localaws.body"


class BodyTooLarge(Exception):
    def __init__(self, limit: int):
        super().__init__(f"The request body is larger than {limit} bytes.")
        self.limit = limit


class MalformedBody(ValueError):
    """A chunked body whose framing is broken."""


def buffer(environ: dict, limit: int) -> bytes:
    """The whole request body (as ``read`` reads it), put back in the environ as a stream at its
    start for whoever reads it next. Read from the client once: a later call returns the same
    bytes, or raises the same error (what is left of a body refused part-way is never read, so
    nobody can take its tail for a request)."""
    held = environ.get(BUFFERED)
    if held is None:
        try:
            held = read(environ, limit)
        except (BodyTooLarge, MalformedBody) as error:
            held = error
        environ[BUFFERED] = held
        environ["wsgi.input_terminated"] = True
    if isinstance(held, Exception):
        environ["wsgi.input"], environ["CONTENT_LENGTH"] = io.BytesIO(), "0"
        raise held
    if len(held) > limit:  # read whole by someone with a larger limit
        raise BodyTooLarge(limit)
    environ["wsgi.input"], environ["CONTENT_LENGTH"] = io.BytesIO(held), str(len(held))
    return held


def buffered(environ: dict) -> bytes | None:
    """The body if ``buffer`` has read it (None otherwise: it may still be on the wire)."""
    held = environ.get(BUFFERED)
    return held if isinstance(held, bytes) else None


def read(environ: dict, limit: int) -> bytes:
    """The whole request body, at most ``limit`` bytes (``BodyTooLarge`` beyond; ``MalformedBody``
    for broken chunked framing), read from the client's stream: use ``buffer``, which reads it once."""
    try:
        return _read(environ, limit)
    except (ConnectionError, TimeoutError):  # the client went away: the server's handler sees to it
        raise
    except OSError as error:  # werkzeug's de-chunker: "Invalid chunk header" and the like
        environ[CLOSE_CONNECTION] = True
        raise MalformedBody(f"The request body's chunked framing is malformed: {error}") from None


def _read(environ: dict, limit: int) -> bytes:
    stream = environ["wsgi.input"]
    length = environ.get("CONTENT_LENGTH") or ""
    if length:
        try:
            size = int(length)
        except ValueError:
            size = -1
        if size > limit:
            environ[CLOSE_CONNECTION] = True
            raise BodyTooLarge(limit)
        if size >= 0:
            return _read_exactly(stream, size)
    if not environ.get("wsgi.input_terminated"):
        return b""  # no length and no framing the server vouches for: no body
    chunks: list[bytes] = []
    total = 0
    while True:  # chunked: read to the end, never more than the limit
        chunk = stream.read(min(65536, limit + 1 - total))
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        total += len(chunk)
        if total > limit:
            environ[CLOSE_CONNECTION] = True
            raise BodyTooLarge(limit)


def _read_exactly(stream, size: int) -> bytes:
    chunks, left = [], size
    while left > 0:
        chunk = stream.read(left)
        if not chunk:
            break  # the client sent less than it announced: the server sees the connection end
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


class NotJSON(ValueError):
    """A body that is not JSON as AWS reads it."""


def _refuse_constant(name: str):
    raise NotJSON(f"Non-standard token '{name}': NaN and Infinity are not JSON numbers")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e999 overflows to inf
        raise NotJSON(f"Numeric value ({text}) out of range of a finite number")
    return value


def loads(body: bytes | str):
    """``json.loads`` without NaN, Infinity or numbers that overflow to them (``NotJSON``)."""
    try:
        return json.loads(body, parse_constant=_refuse_constant, parse_float=_finite_float)
    except NotJSON:
        raise
    except RecursionError:  # [[[[...]]]] deeper than the interpreter's stack
        raise NotJSON("The JSON is nested too deeply.") from None
    except (ValueError, UnicodeDecodeError) as error:
        raise NotJSON(str(error)) from None
