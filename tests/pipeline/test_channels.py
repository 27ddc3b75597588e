"""channels.prepare against localaws's S3: an s3:// prefix as it is, a folder once per content hash, a
prepare function's partition written once per data interval; hostile and empty channels refused."""

from __future__ import annotations

import json
import os

import pytest

from tests.pipeline.steps_support import experiment, plan, write

PREPARE = """
import json, os, pathlib

def write_channels(output_dir, *, start, end, seed):
    calls = pathlib.Path(os.environ["PREPARE_CALLS"])
    calls.write_text(calls.read_text() + json.dumps({"start": start.isoformat(), "end": end.isoformat(),
                                                     "seed": seed, "type": type(output_dir).__name__}) + "\\n")
    for channel, rows in (("train", 3), ("validation", 1)):
        (output_dir / channel).mkdir()
        for index in range(rows):
            (output_dir / channel / f"part-{index}.csv").write_text(f"{seed},{index}\\n")
"""


def keys(s3, bucket: str, prefix: str = "") -> list[str]:
    return sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", []))


def test_an_s3_prefix_is_used_as_it_is_and_an_empty_one_refused(s3_bucket, tmp_path):
    from ml_pipeline import channels

    s3, bucket = s3_bucket
    s3.put_object(Bucket=bucket, Key="shared/train/a.csv", Body=b"1,2\n")
    resolved = experiment(
        write(tmp_path / "wine", {"train.py": ""}),
        channels={
            "train": f"s3://{bucket}/shared/train/",
            "validation": {"source": f"s3://{bucket}/shared/train/", "content_type": "text/csv"},
        },
    )
    assert channels.prepare(s3, plan(resolved, bucket)) == {
        "train": f"s3://{bucket}/shared/train/",
        "validation": f"s3://{bucket}/shared/train/",
    }
    assert keys(s3, bucket) == ["shared/train/a.csv"]  # nothing copied

    resolved["channels"]["test"] = f"s3://{bucket}/shared/nothing/"
    with pytest.raises(ValueError, match=r"wine/experiment.yaml: channel test: nothing in s3://.*/shared/nothing/"):
        channels.prepare(s3, plan(resolved, bucket))


def test_a_folder_is_uploaded_once_per_content_hash(s3_bucket, tmp_path):
    from ml_pipeline import channels
    from ml_pipeline.images import context_hash

    s3, bucket = s3_bucket
    folder = write(
        tmp_path / "wine",
        {"data/train/a.csv": "1,2\n", "data/train/sub/b.csv": "3,4\n", "data/validation/v.csv": "5,6\n"},
    )
    resolved = experiment(
        folder,
        channels={
            "train": "data/train",
            "validation": {"source": "data/validation", "distribution": "FullyReplicated"},
        },
    )
    run = plan(resolved, bucket)
    digest = context_hash(folder / "data" / "train")
    made = channels.prepare(s3, run)
    assert made["train"] == f"s3://{bucket}/wine/data/{digest}/train/"
    assert keys(s3, bucket, f"wine/data/{digest}/") == [
        f"wine/data/{digest}/train.complete.json",
        f"wine/data/{digest}/train/a.csv",
        f"wine/data/{digest}/train/sub/b.csv",
    ]
    assert s3.get_object(Bucket=bucket, Key=f"wine/data/{digest}/train/sub/b.csv")["Body"].read() == b"3,4\n"
    marker = s3.head_object(Bucket=bucket, Key=f"wine/data/{digest}/train.complete.json")

    assert channels.prepare(s3, plan(resolved, bucket)) == made  # another run: found, not uploaded again
    assert (
        s3.head_object(Bucket=bucket, Key=f"wine/data/{digest}/train.complete.json")["LastModified"]
        == marker["LastModified"]
    )
    assert len(keys(s3, bucket, "wine/data/")) == 5

    (folder / "data" / "train" / "a.csv").write_text("1,2\n7,8\n")
    changed = channels.prepare(s3, run)
    assert changed["train"] != made["train"] and changed["validation"] == made["validation"]


def test_a_folder_with_a_link_out_is_refused_and_nothing_uploaded(s3_bucket, tmp_path):
    from ml_pipeline import channels

    s3, bucket = s3_bucket
    (tmp_path / "secret.txt").write_text("credentials")
    folder = write(tmp_path / "wine", {"data/train/a.csv": "1,2\n", "src/train.py": ""})
    resolved = experiment(folder, channels={"train": "data/train"}, source_dir_relative="src")
    os.symlink(tmp_path / "secret.txt", folder / "data" / "train" / "b.csv")
    with pytest.raises(ValueError, match="channel train: .*b.csv is a link leading out of the folder"):
        channels.prepare(s3, plan(resolved, bucket))
    resolved["channels"] = {"train": "../"}
    with pytest.raises(ValueError, match="channel train: ../ leads out of"):
        channels.prepare(s3, plan(resolved, bucket))
    resolved["channels"] = {"train": "/etc"}
    with pytest.raises(ValueError, match="channel train: /etc leads out of"):
        channels.prepare(s3, plan(resolved, bucket))
    assert keys(s3, bucket) == []


def test_an_empty_folder_is_an_error_naming_its_channel(s3_bucket, tmp_path):
    from ml_pipeline import channels

    s3, bucket = s3_bucket
    folder = write(tmp_path / "wine", {"train.py": ""})
    (folder / "data" / "empty").mkdir(parents=True)
    resolved = experiment(folder, channels={"validation": "data/empty"})
    with pytest.raises(ValueError, match="channel validation: .* holds no file"):
        channels.prepare(s3, plan(resolved, bucket))
    resolved["channels"] = {"validation": "data/missing"}
    with pytest.raises(ValueError, match="channel validation: data/missing is not a folder"):
        channels.prepare(s3, plan(resolved, bucket))


def test_a_prepare_function_writes_the_partition_once_for_the_data_interval(s3_bucket, tmp_path, monkeypatch):
    from ml_pipeline import channels

    s3, bucket = s3_bucket
    calls = tmp_path / "calls.jsonl"
    calls.write_text("")
    monkeypatch.setenv("PREPARE_CALLS", str(calls))
    folder = write(tmp_path / "wine", {"prepare.py": PREPARE})
    resolved = experiment(
        folder,
        prepare="prepare:write_channels",
        channels={"train": {"content_type": "text/csv", "distribution": "ShardedByS3Key"}},
    )
    run = plan(resolved, bucket)
    made = channels.prepare(s3, run)
    assert made == {
        "train": f"s3://{bucket}/wine/datasets/20260105/train/",
        "validation": f"s3://{bucket}/wine/datasets/20260105/validation/",
    }
    assert [json.loads(line) for line in calls.read_text().splitlines()] == [
        {
            "start": "2026-01-05T00:00:00+00:00",
            "end": "2026-01-12T00:00:00+00:00",
            "seed": 20260105,
            "type": "PosixPath",
        }
    ]
    assert keys(s3, bucket) == [
        "wine/datasets/20260105/manifest.json",
        *[f"wine/datasets/20260105/train/part-{i}.csv" for i in range(3)],
        "wine/datasets/20260105/validation/part-0.csv",
    ]
    manifest = json.loads(s3.get_object(Bucket=bucket, Key="wine/datasets/20260105/manifest.json")["Body"].read())
    assert manifest["channels"] == made and manifest["files"] == {"train": 3, "validation": 1}

    assert channels.prepare(s3, plan(resolved, bucket)) == made  # the same interval, a later run: reused
    assert len(calls.read_text().splitlines()) == 1


def test_a_partition_without_its_manifest_is_written_again(s3_bucket, tmp_path, monkeypatch):
    from ml_pipeline import channels

    s3, bucket = s3_bucket
    calls = tmp_path / "calls.jsonl"
    calls.write_text("")
    monkeypatch.setenv("PREPARE_CALLS", str(calls))
    resolved = experiment(write(tmp_path / "wine", {"prepare.py": PREPARE}), prepare="prepare:write_channels")
    s3.put_object(Bucket=bucket, Key="wine/datasets/20260105/train/part-0.csv", Body=b"half")  # a killed attempt
    channels.prepare(s3, plan(resolved, bucket))
    assert len(calls.read_text().splitlines()) == 1
    assert s3.get_object(Bucket=bucket, Key="wine/datasets/20260105/train/part-0.csv")["Body"].read() == b"20260105,0\n"


@pytest.mark.parametrize(
    "body, message",
    [
        (
            "def f(output_dir, **kw):\n    (output_dir / 'stray.csv').write_text('x')\n",
            "prepare: prepare:f wrote stray.csv outside a channel folder",
        ),
        ("def f(output_dir, **kw):\n    pass\n", "prepare: prepare:f wrote no channel"),
        ("def f(output_dir, **kw):\n    (output_dir / 'train').mkdir()\n", "channel train: .* holds no file"),
        (
            "import os\ndef f(output_dir, **kw):\n    (output_dir / 'train').mkdir()\n"
            "    os.symlink('/etc/passwd', output_dir / 'train' / 'p')\n",
            "channel train: .*p is a link leading out",
        ),
    ],
)
def test_what_a_prepare_function_writes_wrong_is_refused_before_any_upload(s3_bucket, tmp_path, body, message):
    from ml_pipeline import channels

    s3, bucket = s3_bucket
    resolved = experiment(write(tmp_path / "wine", {"prepare.py": body}), prepare="prepare:f")
    with pytest.raises(ValueError, match=message):
        channels.prepare(s3, plan(resolved, bucket))
    assert keys(s3, bucket) == []


def test_a_channel_nobody_writes_and_one_written_twice_are_refused(s3_bucket, tmp_path, monkeypatch):
    from ml_pipeline import channels

    s3, bucket = s3_bucket
    folder = write(tmp_path / "wine", {"data/a.csv": "1\n"})
    resolved = experiment(folder, channels={"train": {"content_type": "text/csv"}})
    with pytest.raises(ValueError, match="channels.train: no source, and no prepare function writes it"):
        channels.prepare(s3, plan(resolved, bucket))

    calls = tmp_path / "calls.jsonl"
    calls.write_text("")
    monkeypatch.setenv("PREPARE_CALLS", str(calls))
    write(folder, {"prepare.py": PREPARE})
    resolved = experiment(folder, prepare="prepare:write_channels", channels={"train": "data"})
    with pytest.raises(ValueError, match="channels.train: prepare writes it and the file names a source too"):
        channels.prepare(s3, plan(resolved, bucket))


def test_a_plan_without_a_data_interval_cannot_prepare(s3_bucket, tmp_path):
    from ml_pipeline import channels

    s3, bucket = s3_bucket
    resolved = experiment(write(tmp_path / "wine", {"prepare.py": PREPARE}), prepare="prepare:write_channels")
    run = plan(resolved, bucket)
    del run["data_interval"]
    with pytest.raises(ValueError, match="no data interval"):
        channels.prepare(s3, run)
