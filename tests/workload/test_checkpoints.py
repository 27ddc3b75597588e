"""Checkpoints reach S3 whole and alone: the workload never writes a temporary file into the checkpoint
directory (SageMaker uploads whatever appears there), and localaws's sync, like SageMaker's, deletes
from S3 what was deleted (or renamed away) in the container."""

from __future__ import annotations

import os

import torch

from tests.conftest import unique


def test_saving_a_checkpoint_puts_nothing_but_the_checkpoint_into_its_directory(tmp_path, monkeypatch):
    from digits import checkpoint

    directory = tmp_path / "opt-ml" / "checkpoints"
    seen_at_rename: list[set[str]] = []
    real_replace = os.replace

    def replace(source, target):  # what a sync listing the directory at that moment would upload
        seen_at_rename.append({p.name for p in directory.iterdir()})
        return real_replace(source, target)

    monkeypatch.setattr(os, "replace", replace)
    for epoch in range(3):
        checkpoint.save(directory, {"epoch": epoch, "weights": torch.ones(4) * epoch, "loss": 0.5 / (epoch + 1)})
    assert seen_at_rename and all(names <= {"checkpoint.pt"} for names in seen_at_rename), seen_at_rename
    assert {p.name for p in directory.iterdir()} == {"checkpoint.pt"}
    state = checkpoint.load(directory)
    assert state["epoch"] == 2 and state["loss"] == 0.5 / 3 and torch.equal(state["weights"], torch.ones(4) * 2)


def test_the_checkpoint_sync_deletes_from_s3_what_is_gone_from_the_directory(localaws_process, tmp_path):
    from localaws.sagemaker.s3io import CheckpointSync

    s3 = localaws_process.client("s3")
    bucket = unique("ckpt")
    s3.create_bucket(Bucket=bucket)
    local = tmp_path / "checkpoints"
    local.mkdir()
    (local / "checkpoint.pt").write_bytes(b"epoch 1")
    (local / ".checkpoint.pt.tmp-42").write_bytes(b"half of epoch 2")
    sync = CheckpointSync(s3, f"s3://{bucket}/checkpoints/run", local)
    assert sync.sync() == 2

    os.replace(local / ".checkpoint.pt.tmp-42", local / "checkpoint.pt")  # the write completes
    assert sync.sync() == 1
    listed = s3.list_objects_v2(Bucket=bucket, Prefix="checkpoints/run/")["Contents"]
    assert [o["Key"] for o in listed] == ["checkpoints/run/checkpoint.pt"]
    assert s3.get_object(Bucket=bucket, Key="checkpoints/run/checkpoint.pt")["Body"].read() == b"half of epoch 2"
