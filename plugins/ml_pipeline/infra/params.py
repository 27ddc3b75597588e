"""The infrastructure's knobs (Airflow Params with JSON Schema) and the checks run before anything exists.

    infra_params()             the Params, to merge into the pipeline's (``{**pipeline_params(), **infra_params()}``)
    validate_infra(params)     every refusal that needs no AWS call: a list of messages, empty when fine
    check_ami(ssm, ec2, params) the AMI the host boots: the given ``ami_id``, else the public SSM parameter
                               of the matching AWS Deep Learning AMI; raises AmiError when it does not exist
    preflight(client, plan)    the bucket (an existing one unencrypted or public is refused), and for
                               compute=host check_ami plus an availability zone offering the instance type

No AWS call at import, and only botocore's model (no network) in validate_infra.
"""
from __future__ import annotations

import ipaddress
import re
from functools import lru_cache

from airflow.sdk import Param

from ml_pipeline.params import form_param

COMPUTE = ["sagemaker", "host"]
#: The host types this project supports, each with its accelerator runtime.
HOST_INSTANCE_TYPES = {
    "g5.xlarge": "nvidia",
    "g5.2xlarge": "nvidia",
    "g4dn.xlarge": "nvidia",
    "g4dn.2xlarge": "nvidia",
    "p3.2xlarge": "nvidia",
    "p4d.24xlarge": "nvidia",
    "dl1.24xlarge": "habana",
}
#: The public SSM parameters of the AWS Deep Learning AMIs (``/aws/service/deeplearning/ami/<arch>/<type>/latest/ami-id``,
#: where <type> is the DLAMI's name without "Deep Learning AMI"). NVIDIA: "Deep Learning Base OSS Nvidia Driver
#: GPU AMI (Ubuntu 22.04)", documented in the DLAMI guide. Habana: AWS documents no public parameter we could
#: confirm; this name follows the same convention, and ``ami_ssm_parameter`` or ``ami_id`` override it.
DEFAULT_AMI_PARAMETERS = {
    "nvidia": "/aws/service/deeplearning/ami/x86_64/base-oss-nvidia-driver-gpu-ubuntu-22.04/latest/ami-id",
    "habana": "/aws/service/deeplearning/ami/x86_64/habana-pytorch-ubuntu-22.04/latest/ami-id",
}
DOCUMENTATION_CIDR = "203.0.113.0/24"  # TEST-NET-3 (RFC 5737): reaches nobody until a user sets theirs
#: The broadest ranges accepted: a CIDR wider than these opens the host to a large part of the internet.
MIN_PREFIX = {4: 8, 6: 32}
_AMI = r"^ami-[0-9a-f]{8,17}$"
_SSM_NAME = r"^/[a-zA-Z0-9_.\-/]{1,2047}$"
_AZ = r"^[a-z]{2}(-[a-z]+)+-\d[a-z]$"


class AmiError(ValueError):
    """The host's AMI does not exist: refused before anything is created."""


def infra_params() -> dict[str, Param]:
    return {
        "compute": form_param("sagemaker", enum=COMPUTE, title="Where training runs",
                              description="sagemaker: SageMaker training jobs. host: a GPU or Habana DL1 EC2 host this "
                                          "run provisions in its own VPC, training the same image through SSM Run "
                                          "Command; the host and its network are torn down at the end."),
        "provision_vpc": form_param(False, type="boolean", title="SageMaker inside the run's VPC",
                                    description="compute=sagemaker only: provision the run's VPC and run the training "
                                                "jobs and the endpoint in its private subnet (VpcConfig). The host is "
                                                "never created with compute=sagemaker."),
        "host_instance_type": form_param("g5.xlarge", enum=list(HOST_INSTANCE_TYPES), title="Host instance type",
                                         description="compute=host: NVIDIA GPUs (g5, g4dn, p3, p4d) or Habana Gaudi "
                                                     "(dl1.24xlarge). The AMI is the matching AWS Deep Learning AMI."),
        "allowed_cidrs": form_param([DOCUMENTATION_CIDR], type="array",
                                    items={"type": "string", "not": {"enum": ["0.0.0.0/0", "::/0"]},
                                           "pattern": r"^[0-9a-fA-F:.]+/\d{1,3}$"},
                                    maxItems=20, title="CIDRs allowed to reach the host",
                                    description="The only sources the host's security group admits (SSH, and only "
                                                "when ssh_key_name is set: the host is reached through SSM otherwise). "
                                                "0.0.0.0/0, ::/0 and ranges broader than /8 (IPv4) or /32 (IPv6) are "
                                                "refused. The default is a documentation range that reaches nobody."),
        "ssh_key_name": form_param(None, type=["null", "string"], maxLength=255, title="SSH key pair",
                                   description="Empty (the default): no SSH port at all; use SSM Session Manager. "
                                               "Set: SSH (22) from allowed_cidrs with this EC2 key pair."),
        "ami_id": form_param(None, type=["null", "string"], pattern=_AMI, title="Host AMI",
                             description="Overrides the AMI found from the Deep Learning AMI's public SSM parameter."),
        "ami_ssm_parameter": form_param(None, type=["null", "string"], pattern=_SSM_NAME, title="AMI SSM parameter",
                                        description="The SSM parameter naming the host's AMI; empty: the public "
                                                    "parameter of the matching AWS Deep Learning AMI."),
        "vpc_cidr": form_param("10.42.0.0/16", type="string", pattern=r"^\d{1,3}(\.\d{1,3}){3}/\d{1,2}$",
                               title="VPC CIDR", description="A private range, /16 to /24; the public and private "
                                                             "subnets are its first two quarters."),
        "availability_zone": form_param(None, type=["null", "string"], pattern=_AZ, title="Availability zone",
                                        description="Empty: the first zone of the region offering the host type "
                                                    "(DL1 and P3 are not offered everywhere)."),
        "data_volume_gb": form_param(100, type="integer", minimum=1, maximum=16384, title="Data volume (GiB)",
                                     description="An encrypted gp3 EBS volume attached to the host for data and jobs."),
        "stack_ttl_hours": form_param(12, type="number", minimum=0.1, maximum=720, title="Stack time-to-live (hours)",
                                      description="The hourly reaper removes the run's stack after this long, whatever "
                                                  "happened to the run."),
    }


@lru_cache(maxsize=1)
def _instance_types() -> frozenset[str]:
    import botocore.session  # noqa: PLC0415 - the model is read only when a run starts

    return frozenset(botocore.session.get_session().get_service_model("ec2").shape_for("InstanceType").enum)


def cidr_errors(cidrs) -> list[str]:
    errors = []
    if not isinstance(cidrs, (list, tuple)):
        return [f"allowed_cidrs must be a list of CIDRs, got {cidrs!r}"]
    for cidr in cidrs:
        try:
            network = ipaddress.ip_network(str(cidr), strict=True)
        except ValueError as error:
            errors.append(f"allowed_cidrs: {cidr!r} is not a network CIDR ({error})")
            continue
        if network.prefixlen == 0:
            errors.append(f"allowed_cidrs: {cidr} opens the host to the whole internet: refused")
        elif network.prefixlen < MIN_PREFIX[network.version]:
            errors.append(f"allowed_cidrs: {cidr} is broader than /{MIN_PREFIX[network.version]}: "
                          "refused (name the networks that need access)")
    return errors


def validate_infra(params: dict) -> list[str]:
    """Every refusal that needs no AWS call, as messages (empty: fine)."""
    p = params
    errors: list[str] = []
    compute = p.get("compute", "sagemaker")
    if compute not in COMPUTE:
        errors.append(f"compute: {compute!r} is not one of {COMPUTE}")
    errors.extend(cidr_errors(p.get("allowed_cidrs", [DOCUMENTATION_CIDR])))
    host_type = p.get("host_instance_type", "g5.xlarge")
    if host_type not in _instance_types():
        errors.append(f"host_instance_type: {host_type} is not an EC2 instance type")
    elif host_type not in HOST_INSTANCE_TYPES:
        errors.append(f"host_instance_type: {host_type} is not a supported GPU or DL1 type "
                      f"({', '.join(HOST_INSTANCE_TYPES)})")
    if p.get("ami_id") and not re.match(_AMI, str(p["ami_id"])):
        errors.append(f"ami_id: {p['ami_id']!r} is not an AMI id (ami-...)")
    if p.get("ami_ssm_parameter") and not re.match(_SSM_NAME, str(p["ami_ssm_parameter"])):
        errors.append(f"ami_ssm_parameter: {p['ami_ssm_parameter']!r} is not an SSM parameter name")
    if p.get("availability_zone") and not re.match(_AZ, str(p["availability_zone"])):
        errors.append(f"availability_zone: {p['availability_zone']!r} is not an availability zone")
    try:
        vpc = ipaddress.ip_network(str(p.get("vpc_cidr", "10.42.0.0/16")), strict=True)
        if vpc.version != 4 or not 16 <= vpc.prefixlen <= 24:
            errors.append(f"vpc_cidr: {vpc} must be an IPv4 range from /16 to /24")
        elif not vpc.is_private:
            errors.append(f"vpc_cidr: {vpc} is not a private (RFC 1918) range")
    except ValueError as error:
        errors.append(f"vpc_cidr: {p.get('vpc_cidr')!r} is not a network CIDR ({error})")
    if compute == "sagemaker" and p.get("provision_vpc") and p.get("keep_endpoint"):
        errors.append("keep_endpoint with provision_vpc: the endpoint would outlive the run's VPC, which "
                      "teardown removes")
    if compute == "host":
        if p.get("mode", "train") == "tune":
            errors.append("compute=host trains one job on the host: tune mode runs on SageMaker only")
        if p.get("instance_count", 1) != 1:
            errors.append("compute=host trains on one host: instance_count must be 1")
        if p.get("use_spot"):
            errors.append("use_spot is SageMaker managed spot training: not with compute=host")
    return errors


def accelerator(instance_type: str) -> str:
    """"nvidia" or "habana"."""
    return HOST_INSTANCE_TYPES[instance_type]


def ami_parameter(params: dict) -> str:
    return params.get("ami_ssm_parameter") or DEFAULT_AMI_PARAMETERS[accelerator(params["host_instance_type"])]


def _existing_image(ec2, ami_id: str, source: str) -> str:
    try:
        images = ec2.describe_images(ImageIds=[ami_id])["Images"]
    except ec2.exceptions.ClientError as error:
        if error.response["Error"]["Code"].startswith("InvalidAMIID"):
            raise AmiError(f"{source}: AMI {ami_id} does not exist in this region") from None
        raise
    if not images or images[0].get("State", "available") != "available":
        raise AmiError(f"{source}: AMI {ami_id} is not available")
    return ami_id


def check_ami(ssm, ec2, params: dict) -> str:
    """The host's AMI id: ``ami_id`` when given, else the one the (public) SSM parameter names; it must exist.
    Raises AmiError with a message saying which source failed."""
    if params.get("ami_id"):
        return _existing_image(ec2, params["ami_id"], "ami_id")
    name = ami_parameter(params)
    try:
        value = ssm.get_parameter(Name=name)["Parameter"]["Value"]
    except ssm.exceptions.ParameterNotFound:
        raise AmiError(f"The AMI parameter {name} does not exist in this region: set ami_id or "
                       "ami_ssm_parameter (on localaws, the Deep Learning AMI parameters are seeded)") from None
    return _existing_image(ec2, value, f"SSM parameter {name}")


def choose_availability_zone(ec2, params: dict) -> str:
    """The given zone, or the first of the region's zones offering the host type; refused when none does."""
    instance_type = params["host_instance_type"]
    offered = sorted(o["Location"] for o in ec2.describe_instance_type_offerings(
        LocationType="availability-zone",
        Filters=[{"Name": "instance-type", "Values": [instance_type]}])["InstanceTypeOfferings"])
    wanted = params.get("availability_zone")
    if wanted:
        if wanted not in offered:
            raise ValueError(f"{instance_type} is not offered in {wanted} (offered in: {', '.join(offered) or 'none'})")
        return wanted
    if not offered:
        raise ValueError(f"{instance_type} is not offered in any availability zone of this region")
    return offered[0]


def preflight(client, plan: dict) -> dict:
    """The AWS-side checks before anything is created. Every run: the bucket (an existing one must be encrypted
    and private; it is never changed). compute=host: the AMI and the zone. With compute=sagemaker and
    provision_vpc: a zone of the region. Returns what open_run and the provisioning steps need."""
    from ml_pipeline.infra.stack import check_bucket  # noqa: PLC0415 - stack imports this module

    p = plan["params"]
    bucket = check_bucket(client("s3"), p["bucket"], plan["key"])
    ec2 = client("ec2")
    if p.get("compute") == "host":
        return {
            "bucket": bucket,
            "ami_id": check_ami(client("ssm"), ec2, p),
            "availability_zone": choose_availability_zone(ec2, p),
            "accelerator": accelerator(p["host_instance_type"]),
            "instance_type": p["host_instance_type"],
        }
    if p.get("provision_vpc"):
        zones = ec2.describe_availability_zones(Filters=[{"Name": "state", "Values": ["available"]}])
        names = sorted(z["ZoneName"] for z in zones["AvailabilityZones"])
        return {"bucket": bucket, "ami_id": None, "availability_zone": p.get("availability_zone") or names[0],
                "accelerator": None, "instance_type": None}
    return {"bucket": bucket, "ami_id": None, "availability_zone": None, "accelerator": None, "instance_type": None}
