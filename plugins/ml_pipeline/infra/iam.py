"""The IAM policy documents shipped in ``include/iam/``, rendered for an account, region and experiments.

Files (``${Name}`` placeholders, filled by ``render``):

    host-instance-trust.json / host-instance-policy.json   the run's host (EC2 instance profile): its
                                                           experiment's source and data, its run's prefixes
    host-instance-boundary.json                            the permissions boundary of every host role
                                                           (the project's convention: <experiment>/<kind>/...)
    sagemaker-execution-trust.json / -policy.json          the SageMaker execution role
    sagemaker-vpc-policy.json                              added to it when jobs run in the VPC (VpcConfig)
    airflow-trust.json / airflow-policy.json               the role the DAGs' AWS connection uses
    wildcard-resources.json                                the only actions granted on "Resource": "*", and why

Least privilege is per experiment: the airflow and execution policies grant only the resources named
``${Experiment}-*`` (jobs, models, endpoint configs) and the objects under ``<bucket>/${Experiment}/``.
A role that serves several experiments is rendered with a list (``Experiment=digits,diabetes`` on the
command line, a list in ``render``): each string naming a listed placeholder is repeated for every value.
The README's "IAM roles for real AWS" says which roles a user creates and how.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ml_pipeline.aws import Clients
    from ml_pipeline.plan import Plan

IAM_DIR = Path(os.environ.get("ML_PIPELINE_IAM_DIR", "") or Path(__file__).resolve().parents[3] / "include" / "iam")
#: The CloudWatch Logs group of the host's training commands (SSM's CloudWatch output goes there).
HOST_LOG_GROUP = "/ml-pipeline/host-training"
_PLACEHOLDER = re.compile(r"\$\{([A-Za-z]+)\}")
POLICY_FILES = (
    "host-instance-trust.json",
    "host-instance-policy.json",
    "host-instance-boundary.json",
    "sagemaker-execution-trust.json",
    "sagemaker-execution-policy.json",
    "sagemaker-vpc-policy.json",
    "airflow-trust.json",
    "airflow-policy.json",
)


def placeholders(name: str) -> set[str]:
    return set(_PLACEHOLDER.findall((IAM_DIR / name).read_text()))


def _expand(text: str, values: dict) -> list[str]:
    """``text`` with its placeholders filled: one string per combination of the list values it names."""
    results = [text]
    for key in dict.fromkeys(_PLACEHOLDER.findall(text)):
        value = values[key]
        choices = [str(v) for v in value] if isinstance(value, (list, tuple)) else [str(value)]
        results = [r.replace("${" + key + "}", choice) for r in results for choice in choices]
    return list(dict.fromkeys(results))


def _fill(node, values: dict):
    if isinstance(node, dict):
        return {key: _fill(value, values) for key, value in node.items()}
    if isinstance(node, list):
        return [
            item
            for element in node
            for item in (_expand(element, values) if isinstance(element, str) else [_fill(element, values)])
        ]
    if isinstance(node, str):
        expanded = _expand(node, values)
        return expanded[0] if len(expanded) == 1 else expanded
    return node


def render(name: str, **values: str | list[str]) -> dict:
    """``include/iam/<name>`` with every ``${Key}`` replaced; a missing value is an error. A value may be a
    list (e.g. the experiments a role serves): a string naming it becomes one string per item (a lone
    string, such as a Resource, becomes a list of them)."""
    text = (IAM_DIR / name).read_text()
    missing = sorted(set(_PLACEHOLDER.findall(text)) - set(values))
    if missing:
        raise KeyError(f"{name} needs {', '.join(missing)}")
    empty = sorted(key for key, value in values.items() if isinstance(value, (list, tuple)) and not value)
    if empty:
        raise ValueError(f"{name}: no value for {', '.join(empty)}")
    return _fill(json.loads(text), values)


def partition_of(region: str) -> str:
    if region.startswith("cn-"):
        return "aws-cn"
    if region.startswith("us-gov-"):
        return "aws-us-gov"
    return "aws"


def account_of(client: Clients) -> str:
    return client("sts").get_caller_identity()["Account"]


def host_values(client: Clients, plan: Plan) -> dict:
    """What the host's policy documents are rendered with."""
    region = client("ec2").meta.region_name
    p = plan["params"]
    return {
        "Partition": partition_of(region),
        "Region": region,
        "Account": account_of(client),
        "Bucket": p["bucket"],
        "Repository": p["ecr_repository"],
        "RunKey": plan["key"],
        "LogGroup": HOST_LOG_GROUP,
        "Experiment": plan["experiment"]["name"],
        "DataPrefix": plan["names"]["data_prefix"].strip("/"),
        "OutputPrefix": plan["names"]["output_prefix"].strip("/"),
        "CheckpointPrefix": plan["names"]["checkpoint_prefix"].strip("/"),
    }


def wildcard_exceptions() -> dict[str, str]:
    return json.loads((IAM_DIR / "wildcard-resources.json").read_text())["actions"]


def main(argv: list[str] | None = None) -> int:
    """``python plugins/ml_pipeline/infra/iam.py airflow-policy.json Account=123456789012 Region=eu-west-1
    Experiment=digits,diabetes ...``: a document rendered for your account and experiments (print it, then
    ``aws iam create-policy --policy-document file://...``)."""
    import sys  # noqa: PLC0415

    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] not in POLICY_FILES:
        print(f"usage: iam.py {{{','.join(POLICY_FILES)}}} Key=Value ...", file=sys.stderr)
        return 2
    values = {
        key: value.split(",") if "," in value else value for key, value in (arg.split("=", 1) for arg in args[1:])
    }
    region = values.get("Region", "us-east-1")
    if not isinstance(region, str):
        print("usage: Region takes one region", file=sys.stderr)
        return 2
    values.setdefault("Partition", partition_of(region))
    values.setdefault("LogGroup", HOST_LOG_GROUP)
    try:
        print(json.dumps(render(args[0], **values), indent=2))
    except (KeyError, ValueError) as error:
        print(f"missing values: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
