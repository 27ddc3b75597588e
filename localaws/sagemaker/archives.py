"""Unpacking someone else's .tar.gz (a model archive, a script-mode source archive) into a folder.

tarfile's ``data`` filter alone is not trusted (this Python's has public bypasses, CVE-2025-4517
and friends, through chains of links): every member's path and every link's target is checked by
name first, none may go through a link of the archive, and what was unpacked is checked on disk
after. An absolute link into the folder as the container sees it (``/opt/ml/model/...``) is a link
inside the folder, made relative so that it points at the same file where the folder is mounted
elsewhere (under the process runner).
"""

from __future__ import annotations

import copy
import os
import tarfile
from pathlib import Path


class ArchiveRefused(tarfile.TarError):
    """An archive whose members would reach outside the folder it is unpacked into."""


def extract(archive: Path, into: Path, container_folder: str, what: str) -> None:
    """Unpack ``archive`` into ``into`` (the container's ``container_folder``), refusing
    (``ArchiveRefused``, naming the member and the ``what`` folder) any member that would land or
    point outside it."""
    with tarfile.open(archive, mode="r:*") as tar:
        members = tar.getmembers()
        _check_members(members, container_folder, what)
        if hasattr(tarfile, "data_filter"):
            tar.extractall(into, members=members, filter=lambda member, path: _member(member, path, container_folder))
        else:  # Pythons before 3.11.4 (Debian bookworm's 3.11.2, the stack's images): the filter's work by hand
            tar.extractall(into, members=[_plain(member, container_folder, what) for member in members])
    _check_extracted(into, what)


def _check_members(members: list[tarfile.TarInfo], folder: str, what: str) -> None:
    links = {os.path.normpath(m.name) for m in members if m.issym()}
    for member in members:
        if member.name.startswith(("/", os.sep)):  # ``data`` would quietly make /etc/x relative
            raise ArchiveRefused(f"member {member.name!r} has an absolute path")
        where = _walk([], member.name.split("/"), links, member.name, what)
        if not where and not member.isdir():  # "./" is the folder itself, as `tar -C model .` writes it
            raise ArchiveRefused(f"member {member.name!r} names the {what} folder itself")
        if member.issym():
            target = _container_link(member, folder)
            if os.path.isabs(target):
                raise ArchiveRefused(f"member {member.name!r} links outside the {what} folder ({target})")
            _walk(where[:-1], target.split("/"), links, member.name, what)
        elif member.islnk():
            _walk([], member.linkname.split("/"), links, member.name, what)


def _walk(parts: list[str], components: list[str], links: set[str], name: str, what: str) -> list[str]:
    """The path ``components`` lead to from ``parts``, by name, refused when it climbs out of the
    folder or goes on through one of the archive's links."""
    parts = list(parts)
    for component in components:
        if component in ("", "."):
            continue
        if "/".join(parts) in links:
            raise ArchiveRefused(f"member {name!r} goes through the link {'/'.join(parts)!r}")
        if component == "..":
            if not parts:
                raise ArchiveRefused(f"member {name!r} leads outside the {what} folder")
            parts.pop()
        else:
            parts.append(component)
    return parts


def _container_link(member: tarfile.TarInfo, folder: str) -> str:
    """A link's target as the container sees it: one into ``folder``, relative to the link."""
    target = member.linkname
    if target == folder or target.startswith(folder + "/"):
        return os.path.relpath(target, os.path.dirname(os.path.join(folder, member.name)))
    return target


def _member(member: tarfile.TarInfo, destination: str, folder: str) -> tarfile.TarInfo:
    """tarfile's ``data`` filter (no member or link outside the folder, no devices), a link into the
    container's folder made relative first."""
    if member.issym():
        member = member.replace(linkname=_container_link(member, folder), deep=False)
    return tarfile.data_filter(member, destination)


def _plain(member: tarfile.TarInfo, folder: str, what: str) -> tarfile.TarInfo:
    """What the ``data`` filter does to a member the name checks passed, for a tarfile without it: no
    device, fifo or other special file; a link into the container's folder made relative; no setuid,
    setgid, sticky or group/other write bits; owned by whoever unpacks it."""
    if not (member.isfile() or member.isdir() or member.issym() or member.islnk()):
        raise ArchiveRefused(f"member {member.name!r} is a special file, not extracted into the {what} folder")
    member = copy.copy(member)
    if member.issym():
        member.linkname = _container_link(member, folder)
    member.mode = (member.mode & 0o755) | (0o700 if member.isdir() else 0o600)
    member.uid, member.gid, member.uname, member.gname = os.getuid(), os.getgid(), "", ""
    return member


def _check_extracted(root: Path, what: str) -> None:
    """What was unpacked, on disk: every path, a link's target too, resolves inside ``root``."""
    base = os.path.realpath(root)
    for parent, dirs, files in os.walk(root, followlinks=False):
        for name in (*dirs, *files):
            path = os.path.join(parent, name)
            resolved = os.path.realpath(path)
            if os.path.commonpath([base, resolved]) != base:
                raise ArchiveRefused(f"{os.path.relpath(path, root)!r} resolves outside the {what} folder")
