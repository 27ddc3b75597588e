"""What AWS has and moto lacks, seeded into the embedded moto so the host path works out of the box.

* The public SSM parameters of the AWS Deep Learning AMIs (``/aws/service/deeplearning/ami/...``), each
  naming a Deep Learning AMI-like image registered in moto's EC2 (owner alias ``amazon``). Public
  parameters cannot be written through the API (``/aws`` names are reserved, as on AWS), so they go into
  moto's backend directly, once per region, on the first SSM request there.
* Instance type offerings moto's catalogue lacks: ``dl1.24xlarge`` (AWS offers DL1 in us-east-1 and
  us-west-2 only), so choosing a zone for it behaves as on AWS. (moto has the NVIDIA types the plugin supports.)

Set ``LOCALAWS_SEED_DLAMI=0`` to leave moto as it is (a run then refuses compute=host for want of an AMI).
"""

from __future__ import annotations

import logging
import os
import threading

log = logging.getLogger(__name__)

#: parameter name -> (fixed AMI id, AMI name). The names follow plugins/ml_pipeline/infra/params.py.
DLAMI_PARAMETERS = {
    "/aws/service/deeplearning/ami/x86_64/base-oss-nvidia-driver-gpu-ubuntu-22.04/latest/ami-id": (
        "ami-0c0ffee0000000001",
        "Deep Learning Base OSS Nvidia Driver GPU AMI (Ubuntu 22.04) localaws",
    ),
    "/aws/service/deeplearning/ami/x86_64/habana-pytorch-ubuntu-22.04/latest/ami-id": (
        "ami-0c0ffee0000000002",
        "Deep Learning AMI Habana PyTorch (Ubuntu 22.04) localaws",
    ),
}
AMAZON_DLAMI_OWNER = "898082745236"
#: (instance type, region) -> availability zones, added to moto's offerings when missing.
EXTRA_OFFERINGS = {
    ("dl1.24xlarge", "us-east-1"): ["us-east-1a", "us-east-1b"],
    ("dl1.24xlarge", "us-west-2"): ["us-west-2a", "us-west-2b"],
}

_lock = threading.Lock()
_seeded: set[tuple[str, str]] = set()
_offerings_done = False


def enabled() -> bool:
    return os.environ.get("LOCALAWS_SEED_DLAMI", "1") not in ("0", "false", "no")


def seed_offerings() -> None:
    """Extends moto's module-level catalogue once (no EC2 backend is loaded, but importing moto's EC2 models
    takes about 1.7 s of CPU: the gateway calls it before the first EC2 request)."""
    global _offerings_done
    if _offerings_done or not enabled():
        return
    from moto.ec2.models.instance_types import INSTANCE_TYPE_OFFERINGS  # noqa: PLC0415

    with _lock:
        for (instance_type, region), zones in EXTRA_OFFERINGS.items():
            by_zone = INSTANCE_TYPE_OFFERINGS.get("availability-zone", {}).setdefault(region, [])
            have = {o["Location"] for o in by_zone if o["InstanceType"] == instance_type}
            by_zone.extend({"InstanceType": instance_type, "Location": z} for z in zones if z not in have)
            by_region = INSTANCE_TYPE_OFFERINGS.get("region", {}).setdefault(region, [])
            if not any(o["InstanceType"] == instance_type for o in by_region):
                by_region.append({"InstanceType": instance_type, "Location": region})
        _offerings_done = True


def seed_region(account_id: str, region: str) -> None:
    """The Deep Learning AMI parameters and images in ``region`` (idempotent; the first call loads moto's
    EC2 backend for the region, about a second and a half)."""
    if not enabled() or (account_id, region) in _seeded:
        return
    with _lock:
        if (account_id, region) in _seeded:
            return
        from moto.core.utils import utcnow  # noqa: PLC0415
        from moto.ec2.models import ec2_backends  # noqa: PLC0415
        from moto.ec2.models.amis import Ami  # noqa: PLC0415
        from moto.ssm.models import Parameter, ssm_backends  # noqa: PLC0415

        ec2 = ec2_backends[account_id][region]
        ssm = ssm_backends[account_id][region]
        for name, (ami_id, ami_name) in DLAMI_PARAMETERS.items():
            if ami_id not in ec2.amis:
                ec2.amis[ami_id] = Ami(
                    ec2,
                    ami_id,
                    name=ami_name,
                    description=f"{ami_name}: a stand-in seeded by localaws",
                    owner_id=AMAZON_DLAMI_OWNER,
                    owner_alias="amazon",
                    public=True,
                    virtualization_type="hvm",
                    architecture="x86_64",
                    root_device_type="ebs",
                    root_device_name="/dev/sda1",
                    hypervisor="xen",
                    region_name=region,
                    boot_mode="uefi-preferred",
                )
            if not ssm._parameters.get(name):
                # moto's CloudFormationModel declares abstract members Parameter leaves out; not an ABC at run time.
                ssm._parameters[name].append(
                    Parameter(  # type: ignore[abstract]
                        account_id=account_id,
                        name=name,
                        value=ami_id,
                        parameter_type="String",
                        description=None,
                        allowed_pattern=None,
                        keyid=None,
                        last_modified_date=utcnow(),
                        version=1,
                        data_type="aws:ec2:image",
                    )
                )
        _seeded.add((account_id, region))
        log.info("localaws: seeded the Deep Learning AMI parameters in %s", region)
