"""An experiment's ``prepare`` as a SageMaker processing job (``prepare: {function, compute: processing}``).

For data too large for the Airflow worker: the job calls the same ``module:function`` for the run's data
interval, with the same arguments, and its one output uploads what it wrote to the prefixes the worker's
prepare writes (``s3://<bucket>/<data_prefix>/<channel>/``), so training reads them unchanged; the worker
then reads the channels back and writes the partition's manifest (``channels.prepare``). The job:

    inputs   code    the experiment's source_dir -> /opt/ml/processing/input/code
             entry   include/processing/prepare_channels.py -> /opt/ml/processing/input/entry
                     (both uploaded once per content hash, under s3://<bucket>/<experiment>/prepare-code/<hash>/)
    runs     python3 .../entry/prepare_channels.py, in ``prepare.image`` or the experiment's training image
    output   channels  /opt/ml/processing/output/channels -> s3://<bucket>/<data_prefix>/ (EndOfJob)

Its name is the run's (``names["processing_job"]``): the DAG's operator re-attaches to it on a retry.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from ml_pipeline import channels, images
from ml_pipeline import sagemaker_requests as requests
from ml_pipeline.aws import object_exists
from ml_pipeline.config import REPO_ROOT

if TYPE_CHECKING:
    from ml_pipeline.aws import Client
    from ml_pipeline.plan import Plan

log = logging.getLogger(__name__)

ENTRY = REPO_ROOT / "include" / "processing" / "prepare_channels.py"
CODE_PATH = "/opt/ml/processing/input/code"
ENTRY_PATH = "/opt/ml/processing/input/entry"
OUTPUT_PATH = "/opt/ml/processing/output/channels"
#: Where the container leaves its exit message and SageMaker its resource configuration.
MESSAGE_PATH = "/opt/ml/output/message"
RESOURCES_PATH = "/opt/ml/config/resourceconfig.json"


def upload_code(s3: Client, plan: Plan) -> dict[str, str]:
    """The job's two code inputs in S3, {"code": uri, "entry": uri, "hash": ...}: the experiment's source
    and the entry, uploaded once per their content (a marker beside them, written last, says they are whole)."""
    experiment, bucket = plan["experiment"], plan["params"]["bucket"]
    files = images.tree_files(experiment["source_dir"])
    if not files:
        raise ValueError(f"source_dir {experiment['source_dir']} holds no file")
    entry = ENTRY.read_bytes()
    digest = hashlib.sha256(
        f"{images.files_hash(experiment['source_dir'], files)}:{hashlib.sha256(entry).hexdigest()}".encode()
    ).hexdigest()[:12]
    base = f"{experiment['name']}/prepare-code/{digest}"
    uris = {"code": f"s3://{bucket}/{base}/code/", "entry": f"s3://{bucket}/{base}/entry/", "hash": digest}
    marker = f"{base}.complete.json"
    if object_exists(s3, bucket, marker):
        return uris
    channels.upload_tree(s3, Path(experiment["source_dir"]), files, bucket, f"{base}/code")
    s3.put_object(Bucket=bucket, Key=f"{base}/entry/{ENTRY.name}", Body=entry, ContentType="text/x-python")
    s3.put_object(
        Bucket=bucket,
        Key=marker,
        ContentType="application/json",
        Body=json.dumps({"source_dir": experiment["source_dir"], "files": files, "entry": ENTRY.name}).encode(),
    )
    log.info("prepare's code: %s files and the entry uploaded under s3://%s/%s/", len(files), bucket, base)
    return uris


def _input(name: str, uri: str, local_path: str) -> dict:
    return {
        "InputName": name,
        "S3Input": {
            "S3Uri": uri,
            "LocalPath": local_path,
            "S3DataType": "S3Prefix",
            "S3InputMode": "File",
            "S3DataDistributionType": "FullyReplicated",
        },
    }


def request(plan: Plan, code: dict, uploaded: dict[str, str], vpc_config: dict | None = None) -> dict:
    """The CreateProcessingJob request: ``code`` is ``code.resolve``'s (its training image is the default
    image), ``uploaded`` is ``upload_code``'s."""
    experiment, p, names = plan["experiment"], plan["params"], plan["names"]
    settings = experiment["prepare_job"]
    start, end = channels.data_interval(plan)
    arguments = {
        "--code": CODE_PATH,
        "--function": experiment["prepare"],
        "--output": OUTPUT_PATH,
        "--start": start.isoformat(),
        "--end": end.isoformat(),
        "--seed": str(plan["data_seed"]),
        "--message": MESSAGE_PATH,
        "--resources": RESOURCES_PATH,
    }
    made = {
        "ProcessingJobName": names["processing_job"],
        "ProcessingInputs": [
            _input("code", uploaded["code"], CODE_PATH),
            _input("entry", uploaded["entry"], ENTRY_PATH),
        ],
        "ProcessingOutputConfig": {
            "Outputs": [
                {
                    "OutputName": "channels",
                    "S3Output": {
                        "S3Uri": f"s3://{p['bucket']}/{names['data_prefix'].strip('/')}/",
                        "LocalPath": OUTPUT_PATH,
                        "S3UploadMode": "EndOfJob",
                    },
                }
            ]
        },
        "ProcessingResources": {
            "ClusterConfig": {
                "InstanceCount": settings["instance_count"],
                "InstanceType": settings["instance_type"],
                "VolumeSizeInGB": settings["volume_size_gb"],
            }
        },
        "StoppingCondition": {"MaxRuntimeInSeconds": settings["max_runtime_seconds"]},
        "AppSpecification": {
            "ImageUri": settings["image"] or code["training_image"],
            "ContainerEntrypoint": ["python3", f"{ENTRY_PATH}/{ENTRY.name}"],
            "ContainerArguments": [item for pair in arguments.items() for item in pair],
        },
        "Environment": {"PYTHONUNBUFFERED": "1"},
        "RoleArn": p["role_arn"],
        "Tags": requests.tags(plan),
    }
    if vpc_config:  # inside the run's own VPC, as its training jobs
        made["NetworkConfig"] = {"VpcConfig": vpc_config}
    return made
