"""code.resolve and code.preflight: script mode's sourcedir.tar.gz in S3 (once, byte for byte the same),
the framework images, an image as given, and the refusals before anything is created."""

from __future__ import annotations

import io
import json
import os
import sys
import tarfile

import pytest

from tests.pipeline.steps_support import experiment, plan, write

TRAIN = "import argparse\nprint('validation rmse=1.0')\n"


def script_experiment(tmp_path, **keys):
    folder = write(
        tmp_path / "wine",
        {
            "train.py": TRAIN,
            "inference.py": "def model_fn(model_dir):\n    return None\n",
            "requirements.txt": "scikit-learn\n",
            "lib/helpers.py": "X = 1\n",
            "smoke/samples.csv": "1,2,3\n",
            "__pycache__/train.cpython-311.pyc": b"\0junk",
            "lib/helpers.pyc": b"\0junk",
        },
    )
    os.chmod(folder / "train.py", 0o755)
    return experiment(folder, **keys)


def test_script_mode_uploads_the_source_once_and_names_it_as_the_sdk_does(s3_bucket, tmp_path):
    from ml_pipeline import code

    s3, bucket = s3_bucket
    resolved = script_experiment(tmp_path, framework="pytorch")
    run = plan(resolved, bucket)
    first = code.resolve(None, s3, run)

    uri = f"s3://{bucket}/wine/source/{resolved['source_hash']}/sourcedir.tar.gz"
    assert first["source"] == {"uri": uri, "hash": resolved["source_hash"]}
    assert first["training_image"] == "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-training:2.5-cpu-py311"
    assert first["serving_image"] == "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-inference:2.5-cpu-py311"
    assert first["hyperparameters"] == {
        "sagemaker_program": '"train.py"',
        "sagemaker_submit_directory": json.dumps(uri),
        "sagemaker_region": '"us-east-1"',
        "sagemaker_container_log_level": "20",
    }
    assert first["environment"] == {
        "SAGEMAKER_PROGRAM": "inference.py",
        "SAGEMAKER_SUBMIT_DIRECTORY": uri,
        "SAGEMAKER_REGION": "us-east-1",
        "SAGEMAKER_CONTAINER_LOG_LEVEL": "20",
        "SAGEMAKER_MODEL_SERVER_WORKERS": "2",
        "SAGEMAKER_MODEL_SERVER_TIMEOUT": "60",
    }
    assert "uploaded" in first["how"] and "before" not in first["how"]

    key = uri[len(f"s3://{bucket}/") :]
    stored = s3.get_object(Bucket=bucket, Key=key)
    body = stored["Body"].read()
    with tarfile.open(fileobj=io.BytesIO(body), mode="r:gz") as archive:
        members = archive.getmembers()
        assert [m.name for m in members] == [
            "inference.py",
            "lib/helpers.py",
            "requirements.txt",
            "smoke/samples.csv",
            "train.py",
        ]
        assert all(m.isfile() and m.uid == 0 and m.mtime == members[0].mtime for m in members)
        assert archive.getmember("train.py").mode == 0o755 and archive.getmember("lib/helpers.py").mode == 0o644
        assert archive.extractfile("train.py").read().decode() == TRAIN

    again = code.resolve(None, s3, run)  # a retry, or the next run of an unchanged source
    assert again["source"] == first["source"] and "uploaded before" in again["how"]
    assert s3.head_object(Bucket=bucket, Key=key)["ETag"] == stored["ETag"]
    assert s3.head_object(Bucket=bucket, Key=key)["LastModified"] == stored["LastModified"]
    assert code.package_source(resolved["source_dir"])[0] == body  # the same bytes whenever it is packed

    (tmp_path / "wine" / "train.py").write_text(TRAIN + "# changed\n")
    changed = code.resolve(None, s3, run)
    assert changed["source"]["hash"] != resolved["source_hash"] and changed["source"]["uri"] != uri
    listed = s3.list_objects_v2(Bucket=bucket, Prefix="wine/source/")["Contents"]
    assert len(listed) == 2


def test_an_archive_already_under_the_key_is_never_written_over(s3_bucket, tmp_path):
    from ml_pipeline import code

    s3, bucket = s3_bucket
    resolved = script_experiment(tmp_path)
    key = f"wine/source/{resolved['source_hash']}/sourcedir.tar.gz"
    s3.put_object(Bucket=bucket, Key=key, Body=b"another run's")
    made = code.resolve(None, s3, plan(resolved, bucket))
    assert made["source"]["uri"] == f"s3://{bucket}/{key}"
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == b"another run's"


def test_sklearn_takes_its_own_repository_for_both_scopes_and_the_entry_point_serves_without_inference_py(
    s3_bucket, tmp_path
):
    from ml_pipeline import code

    s3, bucket = s3_bucket
    folder = write(tmp_path / "trees", {"fit.py": TRAIN})
    made = code.resolve(None, s3, plan(experiment(folder, entry_point="fit.py"), bucket))
    image = "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-scikit-learn:1.2-1-cpu-py3"
    assert made["training_image"] == made["serving_image"] == image
    assert made["environment"]["SAGEMAKER_PROGRAM"] == "fit.py"
    assert made["hyperparameters"]["sagemaker_program"] == '"fit.py"'


def test_an_image_is_used_as_given(s3_bucket, tmp_path):
    from ml_pipeline import code

    s3, bucket = s3_bucket
    image = "123456789012.dkr.ecr.us-east-1.amazonaws.com/mine:1.0"
    made = code.resolve(None, s3, plan(experiment(tmp_path, image=image), bucket))
    assert made["training_image"] == made["serving_image"] == image
    assert made["hyperparameters"] == {} and made["source"] is None
    assert made["environment"] == {"SAGEMAKER_MODEL_SERVER_WORKERS": "2", "SAGEMAKER_MODEL_SERVER_TIMEOUT": "60"}
    assert s3.list_objects_v2(Bucket=bucket).get("KeyCount") == 0


def test_a_link_out_of_the_source_is_refused_before_anything_is_uploaded(s3_bucket, tmp_path):
    from ml_pipeline import code

    s3, bucket = s3_bucket
    (tmp_path / "secret").write_text("key")
    resolved = script_experiment(tmp_path)
    os.symlink(tmp_path / "secret", tmp_path / "wine" / "innocent.txt")
    with pytest.raises(ValueError, match="innocent.txt is a link leading out"):
        code.resolve(None, s3, plan(resolved, bucket))
    with pytest.raises(ValueError, match="source_dir: .*innocent.txt is a link leading out"):
        code.preflight(plan(resolved, bucket))
    assert s3.list_objects_v2(Bucket=bucket).get("KeyCount") == 0


def test_a_link_inside_the_source_is_packed_as_the_file_it_names(tmp_path):
    from ml_pipeline import code

    folder = write(tmp_path / "linked", {"train.py": TRAIN, "real.txt": "inside"})
    os.symlink("real.txt", folder / "alias.txt")
    body, _ = code.package_source(folder)
    with tarfile.open(fileobj=io.BytesIO(body), mode="r:gz") as archive:
        assert archive.getmember("alias.txt").isfile()
        assert archive.extractfile("alias.txt").read() == b"inside"
    os.symlink(folder, folder / "loop")
    with pytest.raises(ValueError, match="loop is a link to a directory"):
        code.package_source(folder)


# --- preflight ---------------------------------------------------------------------------------


def test_preflight_passes_a_sound_experiment(tmp_path):
    from ml_pipeline import code

    code.preflight(plan(script_experiment(tmp_path, framework="pytorch"), "b"))
    code.preflight(plan(experiment(tmp_path, image="123456789012.dkr.ecr.us-east-1.amazonaws.com/x:1"), "b"))


def test_preflight_refuses_a_framework_version_the_sdk_does_not_know_and_lists_the_known_ones(tmp_path):
    from ml_pipeline import code

    with pytest.raises(ValueError) as refused:
        code.preflight(plan(script_experiment(tmp_path, framework="pytorch", framework_version="9.9"), "b"))
    message = str(refused.value)
    assert "experiments/wine/experiment.yaml: framework_version: Unsupported pytorch version: 9.9" in message
    assert "2.5" in message and "2.10" in message  # the versions it knows
    assert message.count("framework_version") == 1  # said once, not once per scope


def test_preflight_refuses_an_instance_type_the_framework_has_no_image_for(tmp_path):
    from ml_pipeline import code

    with pytest.raises(ValueError) as refused:
        code.preflight(plan(script_experiment(tmp_path), "b", instance_type="ml.g5.xlarge"))
    assert "sklearn 1.2-1 has no training image for ml.g5.xlarge" in str(refused.value)
    assert "Unsupported processor: gpu" in str(refused.value)
    assert "inference" not in str(refused.value)  # the endpoint's ml.m5.large has one


def test_preflight_refuses_a_missing_entry_point_module_and_framework(tmp_path):
    from ml_pipeline import code

    resolved = script_experiment(tmp_path, entry_point="nope.py", prepare="prep:write", framework="tensorflow")
    resolved["deploy"]["smoke"]["check"] = "checks:check"
    with pytest.raises(ValueError) as refused:
        code.preflight(plan(resolved, "b"))
    message = str(refused.value)
    assert message.startswith("Refused before anything was created:")
    assert "framework: 'tensorflow' is not one of pytorch, sklearn" in message
    assert "entry_point: nope.py is not a file in source_dir" in message
    assert "prepare: prep:write: no prep.py in source_dir" in message
    assert "deploy.smoke.check: checks:check: no checks.py in source_dir" in message


def test_preflight_refuses_a_module_outside_the_source(tmp_path):
    from ml_pipeline import code

    resolved = script_experiment(tmp_path, prepare="os:path")
    write(tmp_path, {"outside.py": "def f(): pass\n"})
    os.symlink(tmp_path / "outside.py", tmp_path / "wine" / "sneaky.py")
    resolved["prepare"] = "sneaky:f"
    with pytest.raises(ValueError, match="prepare: sneaky:f: sneaky.py leads out of"):
        code.preflight(plan(resolved, "b"))


def test_preflight_refuses_a_dockerfile_where_no_docker_engine_answers(tmp_path, monkeypatch):
    from ml_pipeline import code

    folder = write(tmp_path / "boxed", {"container/Dockerfile": "FROM scratch\n", "container/train": "x"})
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-such.sock")
    with pytest.raises(ValueError) as refused:
        code.preflight(plan(experiment(folder, dockerfile="container"), "b"))
    message = str(refused.value)
    assert "experiments/boxed/experiment.yaml: dockerfile: no Docker engine" in message
    assert "docker.io" in message and "script mode" in message and "image" in message


def test_a_dockerfile_with_no_engine_is_refused_by_the_build_too(tmp_path, monkeypatch):
    from ml_pipeline import images

    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-such.sock")

    class Ecr:  # only what build_and_push asks before it looks for an engine
        class exceptions:  # noqa: N801 - boto3's names
            RepositoryNotFoundException = ImageNotFoundException = KeyError

        def describe_repositories(self, repositoryNames):  # noqa: N803 - boto3's names
            return {"repositories": [{"repositoryUri": "123456789012.dkr.ecr.us-east-1.amazonaws.com/boxed"}]}

        def describe_images(self, repositoryName, imageIds):  # noqa: N803 - boto3's names
            return {"imageDetails": []}

    folder = write(tmp_path / "ctx", {"Dockerfile": "FROM scratch\n"})
    with pytest.raises(RuntimeError, match="No Docker engine to build .*docker.io"):
        images.build_and_push(Ecr(), "boxed", folder)


def test_a_dockerfile_leading_out_of_the_folder_is_refused(tmp_path, monkeypatch):
    from ml_pipeline import code

    folder = write(tmp_path / "boxed", {"experiment.yaml": ""})
    with pytest.raises(ValueError, match="dockerfile: ../elsewhere leads out of"):
        code.preflight(plan(experiment(folder, dockerfile="../elsewhere"), "b"))


# --- the experiment's own functions ---------------------------------------------------------------


def test_call_imports_in_isolation(tmp_path):
    from ml_pipeline import code

    first = experiment(
        write(
            tmp_path / "one",
            {"helpers.py": "NAME = 'one'\n", "prepare.py": "import helpers\ndef who():\n    return helpers.NAME\n"},
        )
    )
    second = experiment(
        write(
            tmp_path / "two",
            {"helpers.py": "NAME = 'two'\n", "prepare.py": "import helpers\ndef who():\n    return helpers.NAME\n"},
        )
    )
    path_before, modules_before = list(sys.path), set(sys.modules)
    assert code.call(first, "prepare:who") == "one"
    assert code.call(second, "prepare:who") == "two"  # not the first experiment's helpers
    assert sys.path == path_before
    assert {"helpers", "prepare"} & set(sys.modules) == set()
    assert not [name for name in set(sys.modules) - modules_before if name.startswith("_ml_pipeline_experiment_")]
    with pytest.raises(ValueError, match="has no function nothing"):
        code.call(first, "prepare:nothing")
    with pytest.raises(ValueError, match="is not module:function"):
        code.call(first, "prepare")
