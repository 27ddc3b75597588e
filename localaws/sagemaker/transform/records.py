"""A transform job's input objects as records, and records as the payloads of ``/invocations`` requests.

``SplitType`` says where records end:

    None      the whole object is one record (it is never split)
    Line      each line, its newline kept (blank lines are no records)
    RecordIO  MXNet's RecordIO: a magic number, a flag and length word, the data, padding to 4 bytes
    TFRecord  a 64-bit length, its masked CRC, the data, the data's masked CRC

``BatchStrategy`` says how many go in a request: ``SingleRecord`` one each, ``MultiRecord`` as many
whole records as fit in ``MaxPayloadInMB`` (0: no limit). As SageMaker does for binary formats, a
single record is sent as its data alone (framing and padding removed), several as they are framed in
the object, so that the model can split them again. A record larger than the limit fails its object
(``PayloadTooLarge``); records of different objects never share a request.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol

MB = 1024 * 1024
RECORDIO_MAGIC = 0xCED7230A
_RECORDIO_HEADER = struct.Struct("<II")
_TFRECORD_LENGTH = struct.Struct("<Q")
_READ_BYTES = 1024 * 1024


class Stream(Protocol):
    """A binary file, plain or gzip: read by the byte, or by the line."""

    def read(self, size: int = -1, /) -> bytes: ...

    def __iter__(self) -> Iterator[bytes]: ...


class MalformedInput(ValueError):
    """The object does not hold records of its SplitType (a truncated RecordIO or TFRecord file)."""


class PayloadTooLarge(ValueError):
    """A record, alone, is larger than MaxPayloadInMB."""

    def __init__(self, size: int, limit: int):
        super().__init__(f"Too much data for max payload size: a record of {size} bytes, over {limit} bytes")
        self.size = size
        self.limit = limit


@dataclass(frozen=True)
class Record:
    framed: bytes  # as it lies in the object (a line with its newline, a binary record with its framing)
    data: bytes  # what a request of this record alone carries
    source: bytes | None = None  # the record as it was read, when an InputFilter made it what it is

    @property
    def original(self) -> bytes:
        return self.data if self.source is None else self.source


def split(stream: Stream, split_type: str) -> Iterator[Record]:
    """The records of one object, read from ``stream`` as they come."""
    if split_type == "Line":
        return _lines(stream)
    if split_type == "RecordIO":
        return _recordio(stream)
    if split_type == "TFRecord":
        return _tfrecords(stream)
    return _whole(stream)


def _whole(stream: Stream) -> Iterator[Record]:
    data = stream.read()
    yield Record(data, data)


def _lines(stream: Stream) -> Iterator[Record]:
    for line in stream:  # a buffered file: lines split in C
        if line in (b"\n", b"\r\n"):
            continue
        yield Record(line, line)


def _exactly(stream: Stream, size: int, what: str) -> bytes:
    data = stream.read(size)
    if len(data) != size:
        raise MalformedInput(f"the object ends inside a {what} ({len(data)} of {size} bytes)")
    return data


def _recordio(stream: Stream) -> Iterator[Record]:
    parts: list[bytes] = []
    framed: list[bytes] = []
    while True:
        header = stream.read(_RECORDIO_HEADER.size)
        if not header:
            if parts:
                raise MalformedInput("the object ends inside a multi-part RecordIO record")
            return
        if len(header) != _RECORDIO_HEADER.size:
            raise MalformedInput("the object ends inside a RecordIO header")
        magic, word = _RECORDIO_HEADER.unpack(header)
        if magic != RECORDIO_MAGIC:
            raise MalformedInput(f"not a RecordIO record: magic number {magic:#x}, expected {RECORDIO_MAGIC:#x}")
        flag, length = word >> 29, word & ((1 << 29) - 1)
        padded = (length + 3) & ~3
        body = _exactly(stream, padded, "RecordIO record")
        framed.append(header + body)
        # Flags 1, 2, 3: the first, a middle and the last part of a record whose data held the magic
        # number; MXNet's reader joins the parts with it.
        parts.append(body[:length])
        if flag in (0, 3):
            data = struct.pack("<I", RECORDIO_MAGIC).join(parts)
            yield Record(b"".join(framed), data)
            parts, framed = [], []


def _tfrecords(stream: Stream) -> Iterator[Record]:
    while True:
        head = stream.read(_TFRECORD_LENGTH.size + 4)
        if not head:
            return
        if len(head) != _TFRECORD_LENGTH.size + 4:
            raise MalformedInput("the object ends inside a TFRecord header")
        (length,) = _TFRECORD_LENGTH.unpack_from(head)
        body = _exactly(stream, length + 4, "TFRecord record")
        yield Record(head + body, body[:length])


def payloads(records: Iterable[Record], strategy: str, max_payload_mb: int) -> Iterator[tuple[bytes, list[Record]]]:
    """(request body, the records it holds), in the records' order."""
    limit = max_payload_mb * MB if max_payload_mb else 0
    if strategy == "SingleRecord":
        for record in records:
            if limit and len(record.data) > limit:
                raise PayloadTooLarge(len(record.data), limit)
            yield record.data, [record]
        return
    batch: list[Record] = []
    size = 0
    for record in records:
        length = len(record.framed)
        if limit and length > limit:
            raise PayloadTooLarge(length, limit)
        if batch and limit and size + length > limit:
            yield b"".join(item.framed for item in batch), batch
            batch, size = [], 0
        batch.append(record)
        size += length
    if batch:
        yield b"".join(item.framed for item in batch), batch
