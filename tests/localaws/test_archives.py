"""archives.extract in-process, with tarfile's ``data`` filter and without it (Pythons before 3.11.4, such
as Debian bookworm's 3.11.2 that the stack's localaws image runs): the same archives are refused or
unpacked the same way on both paths. Through a running localaws: test_hostile_paths.py."""

from __future__ import annotations

import io
import stat
import tarfile

import pytest

from localaws.sagemaker import archives


@pytest.fixture(params=["data_filter", "by_hand"])
def path(request, monkeypatch):
    if request.param == "by_hand":
        monkeypatch.delattr(tarfile, "data_filter")
    return request.param


def archive(tmp_path, *members: tuple[tarfile.TarInfo, bytes | None]):
    target = tmp_path / "model.tar.gz"
    with tarfile.open(target, "w:gz") as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return target


def member(name: str, kind: bytes = tarfile.REGTYPE, mode: int = 0o644, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.linkname, info.uid, info.gid = kind, mode, linkname, 4242, 4242
    return info


def test_plain_members_unpack_without_setuid_or_group_write(tmp_path, path):
    packed = archive(
        tmp_path,
        (member("model.pth", mode=0o4777), b"weights"),
        (member("code", tarfile.DIRTYPE, mode=0o777), None),
        (member("code/inference.py"), b"print()"),
        (member("latest", tarfile.SYMTYPE, linkname="/opt/ml/model/model.pth"), None),
    )
    into = tmp_path / "model"
    into.mkdir()
    archives.extract(packed, into, "/opt/ml/model", "model")
    assert (into / "model.pth").read_bytes() == b"weights"
    assert (into / "code" / "inference.py").read_text() == "print()"
    mode = stat.S_IMODE((into / "model.pth").stat().st_mode)
    assert not mode & (stat.S_ISUID | stat.S_IWGRP | stat.S_IWOTH), oct(mode)
    assert (into / "latest").readlink().as_posix() == "model.pth"  # made relative: the same file anywhere


@pytest.mark.parametrize(
    "hostile, said",
    [
        (member("../escape.txt"), "leads outside"),
        (member("/etc/escape.txt"), "absolute path"),
        (member("out", tarfile.SYMTYPE, linkname="/etc/passwd"), "links outside"),
        (member("up", tarfile.SYMTYPE, linkname="../../secret"), "leads outside"),
    ],
    ids=["climbs", "absolute", "absolute-link", "relative-link"],
)
def test_members_that_reach_outside_are_refused_and_nothing_lands(tmp_path, path, hostile, said):
    data = b"x" if hostile.isfile() else None
    packed = archive(tmp_path, (hostile, data))
    into = tmp_path / "model"
    into.mkdir()
    with pytest.raises(archives.ArchiveRefused, match=said):
        archives.extract(packed, into, "/opt/ml/model", "model")
    assert list(into.iterdir()) == [] and not (tmp_path / "escape.txt").exists()


def test_a_device_or_fifo_is_never_made(tmp_path, path):
    packed = archive(tmp_path, (member("pipe", tarfile.FIFOTYPE), None))
    into = tmp_path / "model"
    into.mkdir()
    with pytest.raises(tarfile.TarError):
        archives.extract(packed, into, "/opt/ml/model", "model")
    assert not (into / "pipe").exists()
