"""Script mode on SageMaker's framework images, as the SageMaker Python SDK sends it, over HTTP with boto3.

A scikit-learn (and a PyTorch) training job whose ``TrainingImage`` is the URI
``sagemaker.core.image_uris`` names, with JSON-encoded hyperparameters and ``sagemaker_program`` /
``sagemaker_submit_directory`` naming a sourcedir.tar.gz in S3; then ``CreateModel`` with the
framework's inference image and ``SAGEMAKER_PROGRAM`` / ``SAGEMAKER_SUBMIT_DIRECTORY``, or a
model.tar.gz holding ``code/inference.py``. The scripts assert the toolkit's contract themselves.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import tarfile
import textwrap
import zipfile

import pytest
from botocore.exceptions import ClientError

from tests.conftest import unique
from tests.localaws.hosting_support import delete_quietly, wait_endpoint
from tests.support import ROLE_ARN, training_request, wait_for_training

pytestmark = pytest.mark.timeout(900)

# As sagemaker.core.image_uris.retrieve names them (us-east-1; the account differs by region).
SKLEARN_IMAGE = "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-scikit-learn:1.2-1-cpu-py3"
PYTORCH_TRAINING = "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-training:2.5-cpu-py311"
PYTORCH_INFERENCE = "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-inference:2.5-cpu-py311"
RMSE = [{"Name": "validation:rmse", "Regex": "validation rmse=([0-9.eE+-]+)"}]
HYPERPARAMETERS = {"n_estimators": 20, "learning_rate": 0.1, "loss": "squared_error"}

TRAIN_PY = textwrap.dedent("""
    import argparse, json, os, sys

    import joblib
    import numpy as np
    import tinyreq  # installed from requirements.txt before this runs
    from sklearn.ensemble import GradientBoostingRegressor

    assert tinyreq.MAGIC == 42
    parser = argparse.ArgumentParser()
    parser.add_argument("--n_estimators", type=int)
    parser.add_argument("--learning_rate", type=float)
    parser.add_argument("--loss")
    args = parser.parse_args()
    if args.learning_rate >= 1:
        raise ValueError(f"learning_rate must be below 1, not {args.learning_rate}")

    # The toolkit's contract: user hyperparameters only, JSON-decoded, as sorted --name value pairs.
    expected = {"n_estimators": 20, "learning_rate": 0.1, "loss": "squared_error"}
    assert json.loads(os.environ["SM_HPS"]) == expected, os.environ["SM_HPS"]
    assert sys.argv[1:] == ["--learning_rate", "0.1", "--loss", "squared_error", "--n_estimators", "20"], sys.argv
    assert json.loads(os.environ["SM_USER_ARGS"]) == sys.argv[1:]
    assert os.environ["SM_HP_N_ESTIMATORS"] == "20" and "SM_HP_SAGEMAKER_PROGRAM" not in os.environ
    base = os.environ.get("SAGEMAKER_BASE_DIR", "/opt/ml")  # where /opt/ml is under the process runner
    assert os.environ["SM_MODEL_DIR"] == base + "/model"
    assert os.environ["SM_CHANNEL_TRAIN"] == base + "/input/data/train"
    assert json.loads(os.environ["SM_CHANNELS"]) == ["train"]
    assert os.environ["SM_OUTPUT_DATA_DIR"] == base + "/output/data"
    assert os.environ["SM_INPUT_DIR"] == base + "/input" and os.environ["SM_OUTPUT_DIR"] == base + "/output"
    assert os.getcwd() == base + "/code" and os.path.isfile("train.py")
    hosts = json.loads(os.environ["SM_HOSTS"])
    assert hosts == ["algo-1", "algo-2"] and os.environ["SM_CURRENT_HOST"] in hosts
    assert os.environ["SM_NUM_GPUS"] == "0" and int(os.environ["SM_NUM_CPUS"]) >= 1
    assert os.environ["SM_MODULE_DIR"].startswith("s3://") and os.environ["SM_MODULE_DIR"].endswith("sourcedir.tar.gz")
    training_env = json.loads(os.environ["SM_TRAINING_ENV"])
    assert training_env["hyperparameters"] == expected and training_env["module_name"] == "train"
    assert training_env["current_host"] == os.environ["SM_CURRENT_HOST"]
    assert training_env["channel_input_dirs"] == {"train": os.environ["SM_CHANNEL_TRAIN"]}

    data = np.loadtxt(os.path.join(os.environ["SM_CHANNEL_TRAIN"], "train.csv"), delimiter=",")
    features, target = data[:, :2], data[:, 2]
    model = GradientBoostingRegressor(n_estimators=args.n_estimators, learning_rate=args.learning_rate,
                                      loss=args.loss, random_state=0).fit(features, target)
    rmse = float(np.sqrt(np.mean((model.predict(features) - target) ** 2)))
    print(f"validation rmse={rmse:.6f}")
    joblib.dump(model, os.path.join(os.environ["SM_MODEL_DIR"], "model.joblib"))
    with open(os.path.join(os.environ["SM_OUTPUT_DATA_DIR"], "host.txt"), "w") as out:
        out.write(os.environ["SM_CURRENT_HOST"])
""")

INFERENCE_PY = textwrap.dedent("""
    import os

    import joblib
    import numpy as np


    def model_fn(model_dir):
        return joblib.load(os.path.join(model_dir, "model.joblib"))


    def input_fn(body, content_type):
        if content_type != "text/csv":
            raise ValueError(f"this model reads text/csv, not {content_type}")
        return np.array([[float(value) for value in line.split(",")] for line in body.strip().splitlines()])


    def predict_fn(data, model):
        return model.predict(data)


    def output_fn(prediction, accept):
        return "".join(f"{value:.4f}\\n" for value in prediction), "text/csv"
""")

# The SDK's other form: code/inference.py inside model.tar.gz, model_fn alone (the rest: defaults).
MODEL_FN_ONLY = textwrap.dedent("""
    import os

    import joblib


    def model_fn(model_dir):
        return joblib.load(os.path.join(model_dir, "model.joblib"))
""")


def hyperparameters(**values) -> dict:
    """As the SDK sends them: every value JSON-encoded."""
    return {key: json.dumps(value) for key, value in values.items()}


def build_wheel() -> tuple[str, bytes]:
    """A tiny pure-Python wheel (module ``tinyreq``, MAGIC = 42), made here: no index needed."""
    name, version = "tinyreq", "0.1"
    info = f"{name}-{version}.dist-info"
    files = {
        f"{name}.py": b"MAGIC = 42\n",
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
        f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for path, content in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(content).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(content)}")
    files[f"{info}/RECORD"] = ("\n".join(record + [f"{info}/RECORD,,"]) + "\n").encode()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as wheel:
        for path, content in files.items():  # a fixed date: the same wheel, the same cached environment
            wheel.writestr(zipfile.ZipInfo(path, date_time=(2024, 1, 1, 0, 0, 0)), content)
    return f"{name}-{version}-py3-none-any.whl", buffer.getvalue()


def tar_gz(members: dict[str, bytes], links: dict[str, str] | None = None) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for path, content in members.items():
            info = tarfile.TarInfo(path)
            info.size, info.mode = len(content), 0o644
            tar.addfile(info, io.BytesIO(content))
        for path, target in (links or {}).items():
            info = tarfile.TarInfo(path)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)
    return buffer.getvalue()


def sourcedir(train_py: str = TRAIN_PY) -> bytes:
    wheel, content = build_wheel()
    return tar_gz(
        {
            "train.py": train_py.encode(),
            "inference.py": INFERENCE_PY.encode(),
            "requirements.txt": f"./wheels/{wheel}\n".encode(),
            f"wheels/{wheel}": content,
        }
    )


def training_data() -> bytes:
    import numpy as np

    rng = np.random.default_rng(3)
    features = rng.uniform(-1, 1, size=(60, 2))
    target = 3 * features[:, 0] - 2 * features[:, 1] + 1 + rng.normal(0, 0.05, size=60)
    rows = np.column_stack([features, target])
    return "".join(",".join(f"{v:.6f}" for v in row) + "\n" for row in rows).encode()


def put(s3, bucket: str, key: str, body: bytes) -> str:
    s3.put_object(Bucket=bucket, Key=key, Body=body)
    return f"s3://{bucket}/{key}"


def script_job(name: str, bucket: str, image: str, submit: str, train: str, count: int = 1, **hyper) -> dict:
    request = training_request(
        name,
        image,
        {"train": train},
        f"s3://{bucket}/jobs",
        hyperparameters(
            **hyper,
            sagemaker_program="train.py",
            sagemaker_submit_directory=submit,
            sagemaker_region="us-east-1",
            sagemaker_container_log_level=20,
            sagemaker_job_name=name,
        ),
        RMSE,
    )
    request["ResourceConfig"]["InstanceCount"] = count
    return request


def invoke(rt, endpoint: str, body: bytes, content_type: str, accept: str = "text/csv") -> bytes:
    return rt.invoke_endpoint(EndpointName=endpoint, Body=body, ContentType=content_type, Accept=accept)["Body"].read()


def serve(sm, name: str, image: str, model_data: str, env: dict) -> dict:
    sm.create_model(
        ModelName=name,
        ExecutionRoleArn=ROLE_ARN,
        PrimaryContainer={"Image": image, "ModelDataUrl": model_data, "Environment": env},
    )
    sm.create_endpoint_config(
        EndpointConfigName=name,
        ProductionVariants=[
            {"VariantName": "AllTraffic", "ModelName": name, "InstanceType": "ml.m5.large", "InitialInstanceCount": 1}
        ],
    )
    sm.create_endpoint(EndpointName=name, EndpointConfigName=name)
    return wait_endpoint(sm, name, timeout=300)


@pytest.mark.slow
@pytest.mark.runners
def test_sklearn_script_mode_trains_on_two_hosts_and_serves(localaws, bucket):
    sm, s3, rt = localaws.client("sagemaker"), localaws.client("s3"), localaws.client("sagemaker-runtime")
    submit = put(s3, bucket, "digits-free/source/abc/sourcedir.tar.gz", sourcedir())
    train = put(s3, bucket, "data/train/train.csv", training_data())
    name = unique("sklearn")
    sm.create_training_job(**script_job(name, bucket, SKLEARN_IMAGE, submit, train, count=2, **HYPERPARAMETERS))
    job = wait_for_training(sm, name, timeout=600)
    assert job["TrainingJobStatus"] == "Completed", job.get("FailureReason")
    metrics = {m["MetricName"]: m["Value"] for m in job["FinalMetricDataList"]}
    assert 0 < metrics["validation:rmse"] < 0.5, metrics
    model_data = job["ModelArtifacts"]["S3ModelArtifacts"]
    output = s3.get_object(Bucket=bucket, Key=f"jobs/{name}/output/output.tar.gz")["Body"].read()
    with tarfile.open(fileobj=io.BytesIO(output)) as tar:
        assert tar.extractfile("host.txt").read() == b"algo-1"  # the first host's output, as SageMaker keeps

    # Serving with the script's inference.py (SAGEMAKER_SUBMIT_DIRECTORY: the same sourcedir in S3).
    endpoint = unique("sk-ep")
    env = {
        "SAGEMAKER_PROGRAM": "inference.py",
        "SAGEMAKER_SUBMIT_DIRECTORY": submit,
        "SAGEMAKER_REGION": "us-east-1",
        "SAGEMAKER_CONTAINER_LOG_LEVEL": "20",
    }
    try:
        described = serve(sm, endpoint, SKLEARN_IMAGE, model_data, env)
        assert described["EndpointStatus"] == "InService", described.get("FailureReason")
        answer = invoke(rt, endpoint, b"0.5,0.5\n-0.5,0.25\n", "text/csv").decode().split()
        assert len(answer) == 2 and abs(float(answer[0]) - 1.5) < 0.5 and abs(float(answer[1]) + 1.0) < 0.5, answer
        # The user's input_fn raising: 500, its message in the ModelError.
        with pytest.raises(ClientError) as refused:
            invoke(rt, endpoint, b"[[0.5, 0.5]]", "application/json")
        assert refused.value.response["Error"]["Code"] == "ModelError"
        assert refused.value.response["OriginalStatusCode"] == 500
        assert "this model reads text/csv, not application/json" in refused.value.response["Error"]["Message"]
    finally:
        delete_quietly(sm, endpoint)

    # The SDK's other form: model.tar.gz holding code/inference.py with model_fn alone: the default
    # input_fn, predict_fn and output_fn of the scikit-learn container.
    with tarfile.open(
        fileobj=io.BytesIO(s3.get_object(Bucket=bucket, Key=model_data.split("/", 3)[3])["Body"].read())
    ) as tar:
        model = tar.extractfile("model.joblib").read()
    packed = put(
        s3,
        bucket,
        f"models/{name}/model.tar.gz",
        tar_gz({"model.joblib": model, "code/inference.py": MODEL_FN_ONLY.encode()}),
    )
    endpoint = unique("sk-def")
    try:
        described = serve(
            sm,
            endpoint,
            SKLEARN_IMAGE,
            packed,
            {"SAGEMAKER_PROGRAM": "inference.py", "SAGEMAKER_SUBMIT_DIRECTORY": "/opt/ml/model/code"},
        )
        assert described["EndpointStatus"] == "InService", described.get("FailureReason")
        answer = invoke(rt, endpoint, b"0.5,0.5\n-0.5,0.25\n", "text/csv").decode().split()
        assert len(answer) == 2 and abs(float(answer[0]) - 1.5) < 0.5, answer
        as_json = json.loads(invoke(rt, endpoint, b"[[0.5, 0.5]]", "application/json", "application/json"))
        assert len(as_json) == 1 and abs(as_json[0] - 1.5) < 0.5, as_json
        with pytest.raises(ClientError) as unsupported:  # no input_fn for it: the container's 415
            invoke(rt, endpoint, b"\x89PNG", "image/png")
        assert unsupported.value.response["OriginalStatusCode"] == 415
        assert "Content type image/png is not supported" in unsupported.value.response["Error"]["Message"]
    finally:
        delete_quietly(sm, endpoint)


@pytest.mark.slow
def test_a_failing_script_fails_the_job_with_its_error(localaws_process):
    sm, s3 = localaws_process.client("sagemaker"), localaws_process.client("s3")
    bucket = unique("fail")
    s3.create_bucket(Bucket=bucket)
    submit = put(s3, bucket, "source/sourcedir.tar.gz", sourcedir())
    train = put(s3, bucket, "data/train/train.csv", training_data())
    name = unique("fails")
    sm.create_training_job(
        **script_job(name, bucket, SKLEARN_IMAGE, submit, train, count=2, **{**HYPERPARAMETERS, "learning_rate": 5})
    )
    job = wait_for_training(sm, name)
    assert job["TrainingJobStatus"] == "Failed"
    reason = job["FailureReason"]
    assert reason.startswith("AlgorithmError: ExecuteUserScriptError:\nExitCode 1\n"), reason
    assert "ValueError: learning_rate must be below 1, not 5.0" in reason, reason
    assert 'Command "' in reason and "train.py --learning_rate 5 --loss squared_error --n_estimators 20" in reason


@pytest.mark.parametrize(
    "archive, member",
    [
        (tar_gz({"train.py": b"print('hi')\n", "../escape.py": b"x = 1\n"}), "'../escape.py'"),
        (tar_gz({"train.py": b"print('hi')\n"}, links={"etc": "/etc"}), "'etc'"),
        (tar_gz({"train.py": b"print('hi')\n"}, links={"up": "../../../.."}), "'up'"),
    ],
)
def test_a_hostile_sourcedir_fails_the_job_naming_the_member(localaws_process, archive, member):
    sm, s3 = localaws_process.client("sagemaker"), localaws_process.client("s3")
    bucket = unique("hostile")
    s3.create_bucket(Bucket=bucket)
    submit = put(s3, bucket, "source/sourcedir.tar.gz", archive)
    train = put(s3, bucket, "data/train/train.csv", training_data())
    name = unique("hostile")
    sm.create_training_job(**script_job(name, bucket, SKLEARN_IMAGE, submit, train, **HYPERPARAMETERS))
    job = wait_for_training(sm, name)
    assert job["TrainingJobStatus"] == "Failed"
    assert job["FailureReason"].startswith(
        f"AlgorithmError: the source archive {submit} (sagemaker_submit_directory) was refused: member "
    ), job["FailureReason"]
    assert member in job["FailureReason"], job["FailureReason"]


PYTORCH_TRAIN = textwrap.dedent("""
    import argparse, os

    import torch

    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--optimizer")
    args = parser.parse_args()
    assert args.optimizer == "adam", args
    torch.manual_seed(0)
    model = torch.nn.Linear(2, 1)
    features = torch.rand(64, 2)
    target = features @ torch.tensor([[3.0], [-2.0]]) + 1
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    for epoch in range(args.epochs):
        optimizer.zero_grad()
        loss = torch.nn.functional.mse_loss(model(features), target)
        loss.backward()
        optimizer.step()
    print(f"validation rmse={loss.item() ** 0.5:.6f}")
    torch.jit.script(model).save(os.path.join(os.environ["SM_MODEL_DIR"], "model.pt"))
""")


@pytest.mark.slow
@pytest.mark.runners
def test_pytorch_script_mode_trains_and_serves_with_the_default_handlers(localaws, bucket):
    """No inference.py at all: the PyTorch container's model_fn loads model.pt (TorchScript), JSON in and out."""
    sm, s3, rt = (localaws.client(s) for s in ("sagemaker", "s3", "sagemaker-runtime"))
    submit = put(s3, bucket, "source/sourcedir.tar.gz", tar_gz({"train.py": PYTORCH_TRAIN.encode()}))
    train = put(s3, bucket, "data/train/train.csv", training_data())
    name = unique("torch")
    sm.create_training_job(**script_job(name, bucket, PYTORCH_TRAINING, submit, train, epochs=150, optimizer="adam"))
    job = wait_for_training(sm, name)
    assert job["TrainingJobStatus"] == "Completed", job.get("FailureReason")
    assert {m["MetricName"] for m in job["FinalMetricDataList"]} == {"validation:rmse"}
    endpoint = unique("torch-ep")
    try:
        described = serve(sm, endpoint, PYTORCH_INFERENCE, job["ModelArtifacts"]["S3ModelArtifacts"], {})
        assert described["EndpointStatus"] == "InService", described.get("FailureReason")
        answer = json.loads(invoke(rt, endpoint, b"[[0.5, 0.5], [0.0, 0.0]]", "application/json", "application/json"))
        assert abs(answer[0][0] - 1.5) < 0.5 and abs(answer[1][0] - 1.0) < 0.5, answer
    finally:
        delete_quietly(sm, endpoint)


@pytest.mark.slow
def test_the_sdks_registry_is_recognised_across_regions():
    """What image_uris.retrieve names in each region the SDK lists is a framework image; another account's
    repository of the same name is not (it is the user's own image)."""
    from sagemaker.core import image_uris

    from localaws.sagemaker import frameworks

    config = json.loads((frameworks._config_dir() / "sklearn.json").read_text())
    listed = sorted(config["training"]["versions"]["1.2-1"]["registries"])
    assert len(listed) > 20
    # A sample (retrieve takes ~70 ms a call): every fifth, China's and an ISO partition's.
    regions = sorted({*listed[::5], "cn-north-1", "us-iso-east-1", "eu-west-1"} & set(listed))
    for region in regions:
        for framework, options in (
            ("sklearn", {"version": "1.2-1"}),
            ("pytorch", {"version": "2.5", "py_version": "py311"}),
        ):
            for scope in ("training", "inference"):
                try:
                    uri = image_uris.retrieve(
                        framework, region, instance_type="ml.m5.large", image_scope=scope, **options
                    )
                except ValueError:  # not offered in that region
                    continue
                image = frameworks.recognise(uri)
                assert image is not None and image.framework == framework and image.version, uri
                assert frameworks.recognise(uri.replace(uri.split(".", 1)[0], "123456789012", 1)) is None


def test_an_unlisted_framework_version_is_refused_with_the_reason(localaws_process):
    sm, s3 = localaws_process.client("sagemaker"), localaws_process.client("s3")
    bucket = unique("version")
    s3.create_bucket(Bucket=bucket)
    train = put(s3, bucket, "data/train/train.csv", training_data())
    name = unique("version")
    image = "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-scikit-learn:0.1-9-cpu-py3"
    sm.create_training_job(**script_job(name, bucket, image, f"s3://{bucket}/none.tar.gz", train, **HYPERPARAMETERS))
    job = wait_for_training(sm, name)
    assert job["TrainingJobStatus"] == "Failed"
    assert "names no sagemaker-scikit-learn version that the SageMaker Python SDK lists" in job["FailureReason"]


SDK_TRAIN = textwrap.dedent("""
    import json, os, sys

    import joblib
    import numpy as np
    from sklearn.linear_model import Ridge

    print("hyperparameters", json.loads(os.environ["SM_HPS"]), "argv", sys.argv[1:])
    data = np.loadtxt(os.path.join(os.environ["SM_CHANNEL_TRAIN"], "train.csv"), delimiter=",")
    model = Ridge(alpha=float(json.loads(os.environ["SM_HPS"])["alpha"])).fit(data[:, :2], data[:, 2])
    rmse = float(np.sqrt(np.mean((model.predict(data[:, :2]) - data[:, 2]) ** 2)))
    print(f"validation rmse={rmse:.6f}")
    joblib.dump(model, os.path.join(os.environ["SM_MODEL_DIR"], "model.joblib"))
""")


def test_the_sagemaker_sdks_model_trainer_runs_a_script_on_the_framework_image(localaws_docker, tmp_path, monkeypatch):
    """sagemaker 3's ModelTrainer with SourceCode sends no sagemaker_program: the source and its own
    drivers as channels, and ContainerEntrypoint/ContainerArguments running its sm_train.sh, which
    needs /opt/ml itself, hence a container (the process runner refuses it, saying so)."""
    for name, value in {
        "AWS_ENDPOINT_URL": localaws_docker.endpoint_url,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "SAGEMAKER_VALIDATE_ROLE": "false",
    }.items():
        monkeypatch.setenv(name, value)
    import boto3
    from sagemaker.core import image_uris
    from sagemaker.core.helper.session_helper import Session
    from sagemaker.train import ModelTrainer
    from sagemaker.train.configs import Compute, InputData, SourceCode

    sm, s3 = localaws_docker.client("sagemaker"), localaws_docker.client("s3")
    bucket = unique("sdk")
    s3.create_bucket(Bucket=bucket)
    train = put(s3, bucket, "data/train/train.csv", training_data())
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "train.py").write_text(SDK_TRAIN)
    image = image_uris.retrieve(
        "sklearn", "us-east-1", version="1.2-1", instance_type="ml.m5.large", image_scope="training"
    )
    assert image == SKLEARN_IMAGE
    trainer = ModelTrainer(
        training_image=image,
        role=ROLE_ARN,
        base_job_name="sdk",
        sagemaker_session=Session(boto_session=boto3.Session(region_name="us-east-1"), default_bucket=bucket),
        source_code=SourceCode(source_dir=str(tmp_path / "src"), entry_script="train.py"),
        compute=Compute(instance_type="ml.m5.large", instance_count=1),
        hyperparameters={"alpha": 0.5},
    )
    trainer.train(
        input_data_config=[InputData(channel_name="train", data_source=train.rsplit("/", 1)[0])], wait=True, logs=False
    )
    job = sm.describe_training_job(TrainingJobName=trainer._latest_training_job.training_job_name)
    assert job["TrainingJobStatus"] == "Completed", job.get("FailureReason")
    assert job["AlgorithmSpecification"]["ContainerEntrypoint"] == ["/bin/bash"]
    assert {channel["ChannelName"] for channel in job["InputDataConfig"]} == {"train", "code", "sm_drivers"}
    assert job["ModelArtifacts"]["S3ModelArtifacts"].endswith("/output/model.tar.gz")
