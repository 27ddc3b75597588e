"""What the process runner reads of an image's Dockerfile: the command ``docker run`` would start (its
ENTRYPOINT and CMD), its WORKDIR, and where its COPY and ADD put the build context's files, so that a
path of the image (``/opt/program/process.py``) names the context's file (``<context>/process.py``).

Only the last stage counts, and only what the context itself holds: a base image's ENTRYPOINT or files,
``COPY --from`` another stage, URLs and wildcards are not seen (those images need the Docker runner).
"""

from __future__ import annotations

import json
import os
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from localaws.sagemaker import confined


@dataclass
class Dockerfile:
    context: Path
    entrypoint: list[str] | None = None
    cmd: list[str] | None = None
    workdir: str | None = None
    #: (path in the image, file or folder of the context it holds), in the order the Dockerfile copies.
    copies: list[tuple[str, Path]] = field(default_factory=list)

    def command(self, entrypoint: list[str] | None, arguments: list[str] | None) -> list[str]:
        """What ``docker run [--entrypoint <entrypoint>] <image> [<arguments>]`` runs: an entrypoint of
        the caller's replaces the image's CMD too, arguments replace CMD."""
        if entrypoint:
            return [*entrypoint, *(arguments or [])]
        return [*(self.entrypoint or []), *(arguments if arguments is not None else self.cmd or [])]

    def context_path(self, image_path: str) -> Path | None:
        """The context's file or folder at ``image_path`` in the image (the last copy there wins); None
        when the image holds nothing of the context there."""
        image_path = os.path.normpath(image_path)
        for destination, source in reversed(self.copies):
            if image_path == destination:
                return source
            if source.is_dir() and image_path.startswith(destination.rstrip("/") + "/"):
                try:
                    found = confined.join_inside(source, os.path.relpath(image_path, destination))
                except confined.OutsideFolder:
                    continue
                if found.exists():
                    return found
        return None


def _exec_form(text: str) -> list[str]:
    """ENTRYPOINT's or CMD's argument: the JSON array of the exec form, or the shell form's ``sh -c``."""
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return value
    return ["/bin/sh", "-c", text]


def _instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, its arguments) per instruction, continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        whole = (pending + stripped).strip()
        pending = ""
        if whole:
            keyword, _, rest = whole.partition(" ")
            out.append((keyword.upper(), rest.strip()))
    return out


def _copy(context: Path, arguments: str, workdir: str) -> list[tuple[str, Path]]:
    try:
        words = _exec_form(arguments) if arguments.startswith("[") else shlex.split(arguments)
    except ValueError:
        return []
    if any(word.startswith("--from") for word in words):
        return []
    words = [word for word in words if not word.startswith("--")]
    if len(words) < 2:
        return []
    *sources, destination = words
    if not destination.startswith("/"):
        destination = os.path.join(workdir, destination)
    into_folder = destination.endswith("/") or len(sources) > 1
    destination = os.path.normpath(destination)
    copies = []
    for source in sources:
        if "://" in source or any(char in source for char in "*?["):
            continue
        try:
            path = context if os.path.normpath(source) == "." else confined.join_inside(context, source)
        except confined.OutsideFolder:
            continue
        if path.is_dir():  # a folder's contents go into the destination
            copies.append((destination, path))
        elif path.is_file():
            copies.append((os.path.join(destination, path.name) if into_folder else destination, path))
    return copies


def read(context: Path) -> Dockerfile:
    """The context's Dockerfile as the process runner uses it (empty when it has none)."""
    found = Dockerfile(context)
    path = context / "Dockerfile"
    if not path.is_file():
        return found
    workdir = "/"
    for keyword, arguments in _instructions(path.read_text(errors="replace")):
        if keyword == "FROM":  # a new stage: what came before is another image
            found = Dockerfile(context)
            workdir = "/"
        elif keyword == "ENTRYPOINT":
            found.entrypoint = _exec_form(arguments)
            found.cmd = None  # as Docker does: an ENTRYPOINT resets the CMD set before it
        elif keyword == "CMD":
            found.cmd = _exec_form(arguments)
        elif keyword == "WORKDIR":
            workdir = os.path.normpath(os.path.join(workdir, arguments))
            found.workdir = workdir
        elif keyword in ("COPY", "ADD"):
            found.copies.extend(_copy(context, arguments, workdir))
    return found
