"""Accelerators: what an instance type has, what this machine has, what a job or an endpoint gets.

A job or endpoint on a GPU instance type (``ml.g*``, ``ml.p*``) gets as many of this machine's NVIDIA
GPUs as its instance type has (fewer when the machine has fewer); a Habana type (``ml.dl1*``) gets
Gaudi cards where ``hl-smi`` finds them. On a machine without them it runs on the CPU, and says so.
The docker runner hands them over as Docker does (``--gpus``: a device request; ``--runtime=habana``),
the process runner through ``CUDA_VISIBLE_DEVICES`` / ``HABANA_VISIBLE_DEVICES``.

What the machine has is asked once, of ``nvidia-smi -L`` and ``hl-smi``, through ``query`` alone; how
busy the devices a host got are, at each of its usage samples, through ``figures``.
"""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
from dataclasses import dataclass

NVIDIA, HABANA = "nvidia", "habana"

#: Accelerators of the instance types whose count is not their family's usual one (AWS's instance
#: type pages): every other size of a g family has one GPU.
_COUNTS = {
    "ml.p2.xlarge": 1,
    "ml.p2.8xlarge": 8,
    "ml.p2.16xlarge": 16,
    "ml.p3.2xlarge": 1,
    "ml.p3.8xlarge": 4,
    "ml.p3.16xlarge": 8,
    "ml.p3dn.24xlarge": 8,
    "ml.p4d.24xlarge": 8,
    "ml.p4de.24xlarge": 8,
    "ml.p5.48xlarge": 8,
    "ml.p5e.48xlarge": 8,
    "ml.p5en.48xlarge": 8,
    "ml.p6-b200.48xlarge": 8,
    "ml.dl1.24xlarge": 8,
}
#: Sizes of the g families (g4dn, g5, g6, g6e, ...) with more than one GPU.
_G_SIZES = {"12xlarge": 4, "24xlarge": 4, "48xlarge": 8, "metal": 8}
_TYPE = re.compile(r"^ml\.(?P<family>[a-z]+\d*[a-z0-9-]*)\.(?P<size>[a-z0-9]+)$")


def instance_accelerators(instance_type: str) -> tuple[str | None, int]:
    """(NVIDIA or HABANA, how many) an instance type has; (None, 0) for a CPU type."""
    match = _TYPE.match(instance_type or "")
    if not match:
        return None, 0
    family, size = match["family"], match["size"]
    if family.startswith("dl1"):
        return HABANA, _COUNTS.get(instance_type, 8)
    if family.startswith("p"):
        return NVIDIA, _COUNTS.get(instance_type, 8 if size.startswith("48") else 1)
    if family.startswith("g") and not family.startswith("g4ad"):  # g4ad's GPUs are AMD's
        return NVIDIA, _COUNTS.get(instance_type, _G_SIZES.get(size, 1))
    return None, 0


def _lines(command: list[str], timeout: float = 20) -> list[str]:
    if shutil.which(command[0]) is None:
        return []
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.SubprocessError):
        return []
    return result.stdout.splitlines() if result.returncode == 0 else []


@functools.cache
def query() -> dict[str, int]:
    """How many accelerators of each kind this machine has, asked once (tests stand in for it)."""
    gpus = [line for line in _lines(["nvidia-smi", "-L"]) if line.startswith("GPU ")]
    gaudis = [line for line in _lines(["hl-smi", "-Q", "index", "-f", "csv,noheader"]) if line.strip().isdigit()]
    return {NVIDIA: len(gpus), HABANA: len(gaudis)}


@dataclass(frozen=True)
class Grant:
    """The accelerators one host (a training host, a serving instance) gets."""

    instance_type: str
    kind: str | None  # NVIDIA, HABANA or None
    count: int  # how many it gets: the type's, capped by the machine's
    wanted: int  # how many the instance type has

    @property
    def visible(self) -> str:
        """The devices' indices as CUDA_VISIBLE_DEVICES and HABANA_VISIBLE_DEVICES take them."""
        return ",".join(str(index) for index in range(self.count))

    @property
    def note(self) -> str | None:
        """What a status message says about it: None when the host gets what its type has."""
        if not self.wanted or self.count == self.wanted:
            return None
        what = "GPU" if self.kind == NVIDIA else "Habana Gaudi accelerator"
        plural = "s" if self.wanted > 1 else ""
        if not self.count:
            return f"{self.instance_type} has {self.wanted} {what}{plural}; this machine has none: it runs on the CPU"
        return f"{self.instance_type} has {self.wanted} {what}{plural}; this machine has {self.count}: it gets those"


def every(kind: str) -> Grant:
    """What a host's ``docker run --gpus all`` (NVIDIA) or ``--runtime=habana`` gets: every device of that
    kind this machine has (none here: the container runs on the CPU)."""
    have = query().get(kind, 0)
    return Grant(f"docker run ({kind})", kind, have, have)


def grant(instance_type: str) -> Grant:
    kind, wanted = instance_accelerators(instance_type)
    have = query().get(kind, 0) if kind else 0
    return Grant(instance_type, kind, min(wanted, have), wanted)


@dataclass(frozen=True)
class DeviceFigures:
    """One accelerator's figures at one moment, as ``nvidia-smi`` or ``hl-smi`` report them."""

    utilization: float  # percent of the device busy
    memory_used_mib: float
    memory_total_mib: float

    @property
    def memory_percent(self) -> float:
        return 100.0 * self.memory_used_mib / self.memory_total_mib if self.memory_total_mib > 0 else 0.0


#: The query of each kind's tool: index, utilization, memory used and total (MiB), one device a line.
_FIGURES = {
    NVIDIA: [
        "nvidia-smi",
        "--query-gpu=index,utilization.gpu,memory.used,memory.total",
        "--format=csv,noheader,nounits",
    ],
    HABANA: ["hl-smi", "-Q", "index,utilization.aip,memory.used,memory.total", "-f", "csv,noheader,nounits"],
}


def figures(grant: Grant | None) -> list[DeviceFigures]:
    """The figures of the devices ``grant`` gave (the first ``count`` of its kind, as ``visible`` names
    them); empty when it gave none or the tool does not answer. Whole devices: on AWS a host's devices are
    its own; here two hosts given the same device both see what either does with it."""
    if grant is None or not grant.count or grant.kind not in _FIGURES:
        return []
    found: dict[int, DeviceFigures] = {}
    for line in _lines(_FIGURES[grant.kind], timeout=5):
        fields = [field.strip() for field in line.split(",")]
        try:
            index, utilization, used, total = int(fields[0]), float(fields[1]), float(fields[2]), float(fields[3])
        except (ValueError, IndexError):  # "[N/A]" or a line of another shape
            continue
        if index < grant.count:
            found[index] = DeviceFigures(utilization, used, total)
    return [found[index] for index in sorted(found)]
