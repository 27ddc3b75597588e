"""The infrastructure's knobs (Airflow Params with JSON Schema) and the checks run before anything exists.

    infra_params()             the Params, to merge into the pipeline's (``{**pipeline_params(), **infra_params()}``)
    validate_infra(params)     every refusal that needs no AWS call: a list of messages, empty when fine
    check_ami(ssm, ec2, params) the AMI the host boots: the given ``ami_id``, else the public SSM parameter
                               of the matching AWS Deep Learning AMI; raises AmiError when it does not exist
    preflight(client, plan)    the bucket (an existing one unencrypted, public or another account's is refused);
                               for compute=host check_ami, the SSH key pair and an availability zone of the
                               region offering the instance type; with provision_vpc, a zone of the region

No AWS call at import, and only botocore's model (no network) in validate_infra.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from airflow.sdk import Param

from ml_pipeline.params import HOST, RUN, VPC, form_param

if TYPE_CHECKING:
    from ml_pipeline.aws import Client, Clients
    from ml_pipeline.plan import Plan

COMPUTE = ["sagemaker", "host"]
#: The instance families the host's AMI supports, each with its accelerator runtime. NVIDIA: those the release
#: notes of the AWS Deep Learning Base OSS Nvidia Driver GPU AMI (x86_64) list (P3 is no longer among them);
#: Habana: DL1, with Habana's Deep Learning AMI. Any size of these families that EC2 knows is accepted.
HOST_FAMILIES = {
    "g4dn": "nvidia",
    "g5": "nvidia",
    "g6": "nvidia",
    "gr6": "nvidia",
    "g6e": "nvidia",
    "g7": "nvidia",
    "p4d": "nvidia",
    "p4de": "nvidia",
    "p5": "nvidia",
    "p5e": "nvidia",
    "p5en": "nvidia",
    "p6-b200": "nvidia",
    "p6-b300": "nvidia",
    "dl1": "habana",
}
#: Proposed in the trigger form (any other size of a supported family may be typed in).
HOST_EXAMPLES = [
    "g5.xlarge",
    "g5.2xlarge",
    "g4dn.xlarge",
    "g6.xlarge",
    "g6e.xlarge",
    "gr6.4xlarge",
    "g7.2xlarge",
    "p4d.24xlarge",
    "p4de.24xlarge",
    "p5.4xlarge",
    "p5.48xlarge",
    "p5e.48xlarge",
    "p5en.48xlarge",
    "p6-b200.48xlarge",
    "p6-b300.48xlarge",
    "dl1.24xlarge",
]
_HOST_TYPE = rf"^({'|'.join(sorted(HOST_FAMILIES, key=len, reverse=True))})\.[a-z0-9]+$"
#: The public SSM parameters of the AWS Deep Learning AMIs
#: (``/aws/service/deeplearning/ami/<arch>/<type>/latest/ami-id``, where <type> is the DLAMI's name without "Deep
#: Learning AMI"). NVIDIA: "Deep Learning Base OSS Nvidia Driver GPU AMI (Ubuntu 22.04)", documented in the DLAMI
#: guide. Habana: AWS documents no public parameter we could confirm; this name follows the same convention, and
#: ``ami_ssm_parameter`` or ``ami_id`` override it.
DEFAULT_AMI_PARAMETERS = {
    "nvidia": "/aws/service/deeplearning/ami/x86_64/base-oss-nvidia-driver-gpu-ubuntu-22.04/latest/ami-id",
    "habana": "/aws/service/deeplearning/ami/x86_64/habana-pytorch-ubuntu-22.04/latest/ami-id",
}
DOCUMENTATION_CIDR = "203.0.113.0/24"  # TEST-NET-3 (RFC 5737): reaches nobody until a user sets theirs
#: The broadest ranges accepted: a CIDR wider than these opens the host to a large part of the internet.
MIN_PREFIX = {4: 8, 6: 32}
#: IPv6 ranges whose addresses carry an IPv4 address, and the bits of the IPv6 address that hold it (for
#: local-use NAT64, each of RFC 6052's layouts an operator may choose; bits 64-71 are never used). An IPv6
#: CIDR overlapping one of them is judged by the IPv4 space it covers, as an IPv4 CIDR would be.
IPV4_EMBEDDINGS = (
    ("::ffff:0:0/96", "IPv4-mapped", [range(96, 128)]),
    ("::ffff:0:0:0/96", "IPv4-translated", [range(96, 128)]),
    ("::/96", "IPv4-compatible", [range(96, 128)]),
    ("64:ff9b::/96", "NAT64", [range(96, 128)]),
    (
        "64:ff9b:1::/48",
        "local-use NAT64",
        [[*range(48, 64), *range(72, 88)], [*range(56, 64), *range(72, 96)], range(72, 104), range(96, 128)],
    ),
    ("2002::/16", "6to4", [range(16, 48)]),
    ("2001::/32", "Teredo", [range(96, 128)]),  # the client's address (obfuscated, still one per IPv4 address)
)
_AMI = r"^ami-[0-9a-f]{8,17}$"
_SSM_NAME = r"^/[a-zA-Z0-9_.\-/]{1,2047}$"
_AZ = r"^[a-z]{2}(-[a-z]+)+-\d[a-z]$"


class AmiError(ValueError):
    """The host's AMI does not exist: refused before anything is created."""


def infra_params() -> dict[str, Param]:
    return {
        "compute": form_param(
            "sagemaker",
            enum=COMPUTE,
            title="Where training runs",
            section=RUN,
            description="sagemaker: SageMaker training jobs. host: a GPU or Habana DL1 EC2 host this "
            "run provisions in its own VPC (see Host), training the same image through "
            "SSM Run Command; the host and its network are torn down at the end.",
        ),
        "host_instance_type": form_param(
            "g5.xlarge",
            type="string",
            pattern=_HOST_TYPE,
            examples=HOST_EXAMPLES,
            title="Host instance type",
            section=HOST,
            description="Where training runs: host. Any size of the NVIDIA types the AWS "
            "Deep Learning AMI supports (G4dn, G5, G6, Gr6, G6e, G7, P4d, "
            "P4de, P5, P5e, P5en, P6-B200, P6-B300) or Habana Gaudi "
            "(dl1.24xlarge). The AMI is the matching AWS Deep Learning AMI.",
        ),
        "allowed_cidrs": form_param(
            [DOCUMENTATION_CIDR],
            type="array",
            uniqueItems=True,
            items={"type": "string", "not": {"enum": ["0.0.0.0/0", "::/0"]}, "pattern": r"^[0-9a-fA-F:.]+/\d{1,3}$"},
            maxItems=20,
            title="CIDRs allowed to reach the host",
            section=HOST,
            description="The only sources the host's security group admits (SSH, and only "
            "when SSH key pair is set: the host is reached through SSM otherwise). "
            "0.0.0.0/0, ::/0 and ranges broader than /8 (IPv4) or /32 (IPv6) are "
            "refused; IPv6 ranges that carry IPv4 addresses (IPv4-mapped, NAT64, "
            "6to4, Teredo) count as the IPv4 range they cover. IPv6 in hexadecimal "
            "notation. The default is a documentation range that reaches nobody.",
        ),
        "ssh_key_name": form_param(
            None,
            type=["null", "string"],
            pattern=r"^[ -~]{0,255}$",
            title="SSH key pair",
            section=HOST,
            description="Empty (the default): no SSH port at all; use SSM Session Manager. "
            "Set: SSH (22) from CIDRs allowed to reach the host, with this EC2 key "
            "pair (up to 255 ASCII characters).",
        ),
        "ami_id": form_param(
            None,
            type=["null", "string"],
            pattern=_AMI,
            title="Host AMI",
            section=HOST,
            description="Empty: the AMI that AMI SSM parameter names.",
        ),
        "ami_ssm_parameter": form_param(
            None,
            type=["null", "string"],
            pattern=_SSM_NAME,
            title="AMI SSM parameter",
            section=HOST,
            description="The SSM parameter naming the host's AMI; empty: the public "
            "parameter of the AWS Deep Learning AMI for the Host instance "
            "type.",
        ),
        "data_volume_gb": form_param(
            100,
            type="integer",
            minimum=1,
            maximum=16384,
            title="Data volume (GiB)",
            section=HOST,
            description="An encrypted gp3 EBS volume attached to the host for data and jobs.",
        ),
        "provision_vpc": form_param(
            False,
            type="boolean",
            title="SageMaker inside the run's VPC",
            section=VPC,
            description="With Where training runs: sagemaker, provision the run's VPC and run "
            "the training jobs and the endpoint in its private subnet (VpcConfig). "
            "No host is created. Where training runs: host always has its VPC.",
        ),
        "vpc_cidr": form_param(
            "10.42.0.0/16",
            type="string",
            pattern=r"^\d{1,3}(\.\d{1,3}){3}/\d{1,2}$",
            title="VPC CIDR",
            section=VPC,
            description="A private range, /16 to /24; the public and private subnets are its first two quarters.",
        ),
        "availability_zone": form_param(
            None,
            type=["null", "string"],
            pattern=_AZ,
            title="Availability zone",
            section=VPC,
            description="Empty: the first zone of the region offering the Host instance "
            "type (DL1 and the largest types are not offered everywhere).",
        ),
        "stack_ttl_hours": form_param(
            12,
            type="number",
            minimum=0.1,
            maximum=720,
            title="Stack time-to-live (hours)",
            section=VPC,
            description="The hourly reaper removes the run's VPC and host after this long, "
            "whatever happened to the run.",
        ),
    }


@lru_cache(maxsize=1)
def _instance_types() -> frozenset[str]:
    import botocore.session  # noqa: PLC0415 - the model is read only when a run starts

    return frozenset(botocore.session.get_session().get_service_model("ec2").shape_for("InstanceType").enum)


def _ipv4_covered(network: ipaddress.IPv6Network) -> tuple[int, str] | None:
    """(the prefix length of the IPv4 space an IPv6 range covers, the embedding's name), or None when it
    carries no IPv4 address. Of several RFC 6052 layouts, the broadest reading counts."""
    covered = None
    for block_cidr, kind, layouts in IPV4_EMBEDDINGS:
        block = ipaddress.ip_network(block_cidr)
        if not network.overlaps(block):
            continue
        if network.prefixlen <= block.prefixlen:  # the whole embedding, every IPv4 address
            return 0, kind
        # The IPv4 address's leading bits that the range fixes: those at positions before its prefix length.
        length = min(sum(1 for position in layout if position < network.prefixlen) for layout in layouts)
        if covered is None or length < covered[0]:
            covered = (length, kind)
    return covered


def _cidr_error(cidr: str, network) -> str | None:
    if network.prefixlen == 0:
        return f"allowed_cidrs: {cidr} opens the host to the whole internet: refused"
    if network.prefixlen < MIN_PREFIX[network.version]:
        return (
            f"allowed_cidrs: {cidr} is broader than /{MIN_PREFIX[network.version]}: "
            "refused (name the networks that need access)"
        )
    if network.version == 4:
        return None
    embedded = _ipv4_covered(network)
    if embedded and embedded[0] < MIN_PREFIX[4]:
        covers = "every IPv4 address" if embedded[0] == 0 else f"an IPv4 range of /{embedded[0]}"
        return (
            f"allowed_cidrs: {cidr} ({embedded[1]}) covers {covers}, broader than /{MIN_PREFIX[4]}: "
            "refused (name the networks that need access)"
        )
    if "." in cidr or "%" in cidr:  # EC2 takes IPv6 CIDRs in hexadecimal notation, without a zone
        return f"allowed_cidrs: {cidr}: write IPv6 ranges in hexadecimal notation, without a zone, as EC2 takes them"
    return None


def cidr_errors(cidrs: object) -> list[str]:
    """What is wrong with ``allowed_cidrs``, as EC2 and the project's limits see it (empty: fine)."""
    if not isinstance(cidrs, (list, tuple)):
        return [f"allowed_cidrs must be a list of CIDRs, got {cidrs!r}"]
    errors: list[str] = []
    seen: dict = {}
    for cidr in map(str, cidrs):
        try:
            network = ipaddress.ip_network(cidr, strict=True)
        except ValueError as error:
            errors.append(f"allowed_cidrs: {cidr!r} is not a network CIDR ({error})")
            continue
        if network in seen:  # EC2 refuses the same permission twice in one request
            errors.append(f"allowed_cidrs: {cidr} is the same range as {seen[network]}")
            continue
        seen[network] = cidr
        refusal = _cidr_error(cidr, network)
        if refusal:
            errors.append(refusal)
    return errors


def host_family(instance_type: str) -> str:
    return str(instance_type).split(".", 1)[0]


def validate_infra(params: Mapping[str, Any]) -> list[str]:
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
    elif host_family(host_type) not in HOST_FAMILIES:
        errors.append(
            f"host_instance_type: {host_type} is not a type the Deep Learning AMIs support "
            f"(families: {', '.join(HOST_FAMILIES)})"
        )
    if p.get("ami_id") and not re.match(_AMI, str(p["ami_id"])):
        errors.append(f"ami_id: {p['ami_id']!r} is not an AMI id (ami-...)")
    if p.get("ami_ssm_parameter") and not re.match(_SSM_NAME, str(p["ami_ssm_parameter"])):
        errors.append(f"ami_ssm_parameter: {p['ami_ssm_parameter']!r} is not an SSM parameter name")
    if p.get("ssh_key_name") and not re.match(r"^[ -~]{1,255}$", str(p["ssh_key_name"])):
        errors.append(f"ssh_key_name: {p['ssh_key_name']!r} is not an EC2 key pair name (1-255 ASCII characters)")
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
        errors.append(
            "keep_endpoint with provision_vpc: the endpoint would outlive the run's VPC, which teardown removes"
        )
    if compute == "host":
        if p.get("mode", "train") == "tune":
            errors.append("compute=host trains one job on the host: tune mode runs on SageMaker only")
        if p.get("instance_count") not in (None, 1):  # None: the preset's, which plan resolves first
            errors.append("compute=host trains on one host: instance_count must be 1")
        if p.get("use_spot"):
            errors.append("use_spot is SageMaker managed spot training: not with compute=host")
    return errors


def accelerator(instance_type: str) -> str:
    """ "nvidia" or "habana"."""
    return HOST_FAMILIES[host_family(instance_type)]


def ami_parameter(params: Mapping[str, Any]) -> str:
    return params.get("ami_ssm_parameter") or DEFAULT_AMI_PARAMETERS[accelerator(params["host_instance_type"])]


def _existing_image(ec2: Client, ami_id: str, source: str) -> str:
    try:
        images = ec2.describe_images(ImageIds=[ami_id])["Images"]
    except ec2.exceptions.ClientError as error:
        if error.response["Error"]["Code"].startswith("InvalidAMIID"):
            raise AmiError(f"{source}: AMI {ami_id} does not exist in this region") from None
        raise
    if not images or images[0].get("State", "available") != "available":
        raise AmiError(f"{source}: AMI {ami_id} is not available")
    return ami_id


def check_ami(ssm: Client, ec2: Client, params: Mapping[str, Any]) -> str:
    """The host's AMI id: ``ami_id`` when given, else the one the (public) SSM parameter names; it must exist.
    Raises AmiError with a message saying which source failed."""
    if params.get("ami_id"):
        return _existing_image(ec2, params["ami_id"], "ami_id")
    name = ami_parameter(params)
    try:
        value = ssm.get_parameter(Name=name)["Parameter"]["Value"]
    except ssm.exceptions.ParameterNotFound:
        raise AmiError(
            f"The AMI parameter {name} does not exist in this region: set ami_id or "
            "ami_ssm_parameter (on localaws, the Deep Learning AMI parameters are seeded)"
        ) from None
    return _existing_image(ec2, value, f"SSM parameter {name}")


def choose_availability_zone(ec2: Client, params: Mapping[str, Any]) -> str:
    """The given zone, or the first of the region's zones offering the host type; refused when none does."""
    instance_type = params["host_instance_type"]
    offered = sorted(
        o["Location"]
        for o in ec2.describe_instance_type_offerings(
            LocationType="availability-zone", Filters=[{"Name": "instance-type", "Values": [instance_type]}]
        )["InstanceTypeOfferings"]
    )
    wanted = params.get("availability_zone")
    if wanted:
        if wanted not in offered:
            raise ValueError(f"{instance_type} is not offered in {wanted} (offered in: {', '.join(offered) or 'none'})")
        return wanted
    if not offered:
        raise ValueError(f"{instance_type} is not offered in any availability zone of this region")
    return offered[0]


def check_zone(ec2: Client, params: Mapping[str, Any]) -> str:
    """The given availability zone, which must be an available zone of this region, else the region's first."""
    zones = ec2.describe_availability_zones(Filters=[{"Name": "state", "Values": ["available"]}])
    names = sorted(z["ZoneName"] for z in zones["AvailabilityZones"])
    wanted = params.get("availability_zone")
    if wanted and wanted not in names:
        raise ValueError(
            f"availability_zone: {wanted} is not an available zone of {ec2.meta.region_name} "
            f"(its zones: {', '.join(names) or 'none'})"
        )
    return wanted or names[0]


def check_key_pair(ec2: Client, params: Mapping[str, Any]) -> None:
    """``ssh_key_name``, when set, must be an EC2 key pair of this region (RunInstances would refuse it only
    after the VPC exists)."""
    name = params.get("ssh_key_name")
    if not name:
        return
    try:
        ec2.describe_key_pairs(KeyNames=[name])
    except ec2.exceptions.ClientError as error:
        if error.response["Error"]["Code"] == "InvalidKeyPair.NotFound":
            raise ValueError(f"ssh_key_name: no EC2 key pair {name!r} in {ec2.meta.region_name}") from None
        raise


def preflight(client: Clients, plan: Plan) -> dict:
    """The AWS-side checks before anything is created. Every run: the bucket (an existing one must be this
    account's, encrypted and private; it is never changed). compute=host: the AMI, the key pair and a zone
    offering the type. With compute=sagemaker and provision_vpc: a zone of the region. Returns what open_run
    and the provisioning steps need."""
    from ml_pipeline.infra.stack import account_of, check_bucket  # noqa: PLC0415 - stack imports this module

    p = plan["params"]
    bucket = check_bucket(client("s3"), p["bucket"], plan["key"], owner=account_of(client))
    ec2 = client("ec2")
    if p.get("compute") == "host":
        check_zone(ec2, p)
        check_key_pair(ec2, p)
        return {
            "bucket": bucket,
            "ami_id": check_ami(client("ssm"), ec2, p),
            "availability_zone": choose_availability_zone(ec2, p),
            "accelerator": accelerator(p["host_instance_type"]),
            "instance_type": p["host_instance_type"],
        }
    if p.get("provision_vpc"):
        return {
            "bucket": bucket,
            "ami_id": None,
            "availability_zone": check_zone(ec2, p),
            "accelerator": None,
            "instance_type": None,
        }
    return {"bucket": bucket, "ami_id": None, "availability_zone": None, "accelerator": None, "instance_type": None}
