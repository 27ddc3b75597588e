"""``DataProcessing``: ``InputFilter``, ``JoinSource`` and ``OutputFilter``, on CSV and JSON records.

Each record is read as SageMaker reads it: a CSV line (RFC 4180) as a JSON array of its fields, a JSON
(Lines) record as its JSON value. ``InputFilter`` picks what the model is sent, ``JoinSource: Input``
joins each whole input record with the model's output for it (a CSV row gets the output's columns
appended; a JSON object gets ``SageMakerOutput``; any other JSON value becomes
``{"SageMakerInput": ..., "SageMakerOutput": ...}``), and ``OutputFilter`` picks what is written.

SageMaker's subset of JSONPath (https://docs.aws.amazon.com/sagemaker/latest/dg/batch-transform-data-processing.html):

    $                   the record
    .name  ['name']     a child; ['a','b'] several (an object of those)
    .*  [*]             every child
    [1]  [-1]  [0,2]    an index (negative from the end), several
    [2:5]  [:5]  [2:]   a slice, both ends included, as SageMaker documents it ($[1:4]: the 2nd to 5th)

After a step that yields several values (a wildcard, a slice, several indexes) the next steps apply to
each of them. A path that names nothing in a record fails that record's object (``RecordError``).
"""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass
from typing import Any

CSV = "csv"
JSON = "json"
_JSON_TYPES = ("application/json", "application/jsonlines", "application/x-jsonlines", "application/jsonl")
_NAME = re.compile(r"[A-Za-z0-9_$@-]+")
_INDEX = re.compile(r"-?\d+")
_QUOTED = re.compile(r"'([^']*)'|\"([^\"]*)\"")
_NAMES = re.compile(r"""\s*(?:'[^']*'|"[^"]*")(?:\s*,\s*(?:'[^']*'|"[^"]*"))*\s*""")


class PathError(ValueError):
    """A JSONPath outside SageMaker's subset."""


class RecordError(ValueError):
    """A record that cannot be read as its format, or that a filter finds nothing in."""


def media_format(media: str | None) -> str | None:
    """``CSV``, ``JSON`` or None (a format DataProcessing cannot read) for a MIME type."""
    value = (media or "").split(";", 1)[0].strip().lower()
    if value == "text/csv":
        return CSV
    if value in _JSON_TYPES:
        return JSON
    return None


# --- JSONPath ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Step:
    kind: str  # "key", "keys", "index", "indexes", "slice", "all"
    values: tuple = ()

    @property
    def several(self) -> bool:
        return self.kind in ("keys", "indexes", "slice", "all")


def _quoted(text: str, at: int, path: str) -> tuple[str, int]:
    quote = text[at]
    end = text.find(quote, at + 1)
    if end < 0:
        raise PathError(f"unterminated quote in JSONPath {path!r}")
    return text[at + 1 : end], end + 1


def _bracket(body: str, path: str) -> _Step:
    body = body.strip()
    if body == "*":
        return _Step("all")
    if body[:1] in ("'", '"'):
        if not _NAMES.fullmatch(body):
            raise PathError(f"bad names [{body}] in JSONPath {path!r}")
        names = [match.group(1) or match.group(2) for match in _QUOTED.finditer(body)]
        return _Step("key", (names[0],)) if len(names) == 1 else _Step("keys", tuple(names))
    if ":" in body:
        parts = [part.strip() for part in body.split(":")]
        if len(parts) != 2 or any(part and not _INDEX.fullmatch(part) for part in parts):
            raise PathError(f"bad slice [{body}] in JSONPath {path!r}")
        start, end = (int(part) if part else None for part in parts)
        return _Step("slice", (start, end))
    indexes = [part.strip() for part in body.split(",")]
    if not all(_INDEX.fullmatch(index) for index in indexes):
        raise PathError(f"bad index [{body}] in JSONPath {path!r}")
    numbers = tuple(int(index) for index in indexes)
    return _Step("index", numbers) if len(numbers) == 1 else _Step("indexes", numbers)


def parse_path(path: str) -> tuple[_Step, ...]:
    """The steps of a JSONPath of SageMaker's subset; ``PathError`` for anything else."""
    text = path.strip()
    if not text.startswith("$"):
        raise PathError(f"JSONPath {path!r} must start with '$'")
    steps: list[_Step] = []
    at = 1
    while at < len(text):
        char = text[at]
        if char == ".":
            at += 1
            if at < len(text) and text[at] == "[":  # $.field.['a','b'], as SageMaker's docs write it
                continue
            if at < len(text) and text[at] == "*":
                steps.append(_Step("all"))
                at += 1
                continue
            match = _NAME.match(text, at)
            if not match:
                raise PathError(f"expected a name after '.' at {at} in JSONPath {path!r}")
            steps.append(_Step("key", (match.group(),)))
            at = match.end()
        elif char == "[":
            depth_end, inside = at + 1, None
            while depth_end < len(text):
                if text[depth_end] in ("'", '"'):
                    _, depth_end = _quoted(text, depth_end, path)
                    continue
                if text[depth_end] == "]":
                    inside = text[at + 1 : depth_end]
                    break
                depth_end += 1
            if inside is None:
                raise PathError(f"unterminated '[' in JSONPath {path!r}")
            if steps and steps[-1].kind == "keys":
                raise PathError(f"JSONPath {path!r}: no step may follow several names")
            steps.append(_bracket(inside, path))
            at = depth_end + 1
        else:
            raise PathError(f"unexpected {char!r} at {at} in JSONPath {path!r}")
    return tuple(steps)


def _index(value: list, index: int) -> Any:
    if not isinstance(value, list):
        raise RecordError(f"[{index}] applies to an array, not {type(value).__name__}")
    try:
        return value[index]
    except IndexError:
        raise RecordError(f"index {index} is out of range (the array holds {len(value)})") from None


def _apply(step: _Step, value: Any) -> Any:
    if step.kind == "key":
        if not isinstance(value, dict) or step.values[0] not in value:
            raise RecordError(f"no attribute {step.values[0]!r} in the record")
        return value[step.values[0]]
    if step.kind == "keys":
        if not isinstance(value, dict):
            raise RecordError(f"{list(step.values)} applies to an object, not {type(value).__name__}")
        return {name: value[name] for name in step.values if name in value}
    if step.kind == "index":
        return _index(value, step.values[0])
    if step.kind == "indexes":
        return [_index(value, index) for index in step.values]
    if step.kind == "slice":
        if not isinstance(value, list):
            raise RecordError(f"a slice applies to an array, not {type(value).__name__}")
        start, end = step.values
        # SageMaker's slices include their end: $[1:4] is the 2nd to the 5th element.
        stop = None if end is None else (end + 1 if end != -1 else None)
        return value[start:stop]
    if isinstance(value, dict):
        return list(value.values())
    if isinstance(value, list):
        return list(value)
    raise RecordError(f"'*' applies to an object or an array, not {type(value).__name__}")


def select(steps: tuple[_Step, ...], value: Any) -> Any:
    """What the path's steps pick out of ``value``."""
    several = False
    for step in steps:
        if several:
            value = [_apply(step, item) for item in value]
        else:
            value = _apply(step, value)
        several = several or step.several
    return value


# --- reading and writing records ----------------------------------------------------------------


def read(data: bytes, fmt: str) -> Any:
    text = data.decode("utf-8").rstrip("\r\n")
    if fmt == CSV:
        rows = list(csv.reader([text]))
        return rows[0] if rows else []
    try:
        return json.loads(text)
    except ValueError as error:
        raise RecordError(f"the record is not JSON: {error}") from None


def write(value: Any, fmt: str) -> bytes:
    if fmt == CSV:
        row = value if isinstance(value, list) else [value]
        out = io.StringIO()
        csv.writer(out, lineterminator="").writerow(
            [json.dumps(v, separators=(",", ":")) if isinstance(v, (dict, list)) else v for v in row]
        )
        return out.getvalue().encode()
    return json.dumps(value, separators=(",", ":")).encode()


def _output_value(data: bytes, fmt: str | None) -> Any:
    """The model's output for one record: read as its format, else as text."""
    if fmt is not None:
        try:
            return read(data, fmt)
        except (RecordError, UnicodeDecodeError):
            pass
    return data.decode("utf-8", "replace").rstrip("\r\n")


class DataProcessing:
    """A job's DataProcessing, checked at CreateTransformJob (``PathError``)."""

    def __init__(self, config: dict | None, input_media: str | None, output_media: str | None):
        config = config or {}
        self.input_filter = parse_path(config.get("InputFilter") or "$")
        self.output_filter = parse_path(config.get("OutputFilter") or "$")
        self.join = config.get("JoinSource") == "Input"
        self.input_format = media_format(input_media)
        self.output_format = media_format(output_media) or self.input_format

    @property
    def active(self) -> bool:
        """Whether records are read at all (otherwise their bytes pass through untouched)."""
        return bool(self.input_filter or self.output_filter or self.join)

    def model_input(self, data: bytes) -> bytes:
        """A record as the model is sent it (its newline, if it had one, kept)."""
        if not self.input_filter:
            return data
        assert self.input_format is not None, "checked at CreateTransformJob"
        newline = b"\n" if data.endswith(b"\n") else b""
        return write(select(self.input_filter, read(data, self.input_format)), self.input_format) + newline

    def result(self, source: bytes, output: bytes) -> bytes:
        """What is written for one record: its output, joined with the input if asked, filtered."""
        if self.join:
            assert self.input_format is not None, "checked at CreateTransformJob"
            original = read(source, self.input_format)
            produced = _output_value(output, self.output_format)
            if self.input_format == CSV:
                joined = original + (produced if isinstance(produced, list) else [produced])
            elif isinstance(original, dict):
                joined = {**original, "SageMakerOutput": produced}
            else:
                joined = {"SageMakerInput": original, "SageMakerOutput": produced}
            return write(select(self.output_filter, joined), self.input_format)
        if not self.output_filter:
            return output.rstrip(b"\r\n")
        fmt = self.output_format or JSON
        return write(select(self.output_filter, _output_value(output, fmt)), fmt)


def split_output(body: bytes, count: int) -> list[bytes]:
    """The model's answer to a request of ``count`` records, one output per record: its lines, or the
    elements of a one-line JSON array of that many; ``RecordError`` when they do not pair up."""
    if count == 1:
        return [body]
    lines = [line for line in body.split(b"\n") if line.strip()]
    if len(lines) == count:
        return lines
    if len(lines) == 1:
        try:
            value = json.loads(lines[0])
        except ValueError:
            value = None
        if isinstance(value, list) and len(value) == count:
            return [json.dumps(item, separators=(",", ":")).encode() for item in value]
    raise RecordError(
        f"the model answered {len(lines)} records for a request of {count}: each record's output must be "
        "a line of the answer to join it with its input or filter it"
    )


def checked(config: dict | None, input_media: str | None, output_media: str | None, split_type: str) -> DataProcessing:
    """The DataProcessing of a CreateTransformJob request; ``ValueError`` with the reason it is refused."""
    processing = DataProcessing(config, input_media, output_media)
    if processing.active:
        if processing.input_format is None:
            raise ValueError(
                "DataProcessing reads CSV and JSON records only: set TransformInput.ContentType to text/csv, "
                "application/json or application/jsonlines."
            )
        if split_type in ("RecordIO", "TFRecord"):
            raise ValueError(f"DataProcessing cannot read {split_type} records: use SplitType Line or None.")
    return processing
