"""The network localaws's own container is on, when localaws runs in a container of the engine it
drives (compose's ``localaws`` service, the engine's socket mounted).

Then a port published on the engine host's 127.0.0.1 is not this container's 127.0.0.1: the docker
runner attaches serving containers to this network instead and localaws reaches them at their address
there. ``LOCALAWS_DOCKER_NETWORK`` names the network explicitly (and applies outside a container too).
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Mapping
from pathlib import Path

NETWORK_ENV = "LOCALAWS_DOCKER_NETWORK"
#: Docker bind-mounts /etc/hostname, /etc/hosts and /etc/resolv.conf from <data-root>/containers/<id>/.
_MOUNTINFO_ID = re.compile(r"/containers/([0-9a-f]{64})/(?:hostname|hosts|resolv\.conf)\b")
#: Networks that put a container on no shared bridge (host: localaws's 127.0.0.1 is the engine host's).
_NOT_SHARED = {"host", "none"}


def container_id_from_mountinfo(text: str) -> str | None:
    """The 64-hex id of the container whose /proc/self/mountinfo this is, or None."""
    match = _MOUNTINFO_ID.search(text)
    return match.group(1) if match else None


def candidates(mountinfo: str | None = None, hostname: str | None = None) -> list[str]:
    """What may name our own container to the engine: the id from mountinfo, else the host name
    (Docker's default host name is the short id)."""
    if mountinfo is None:
        try:
            mountinfo = Path("/proc/self/mountinfo").read_text(errors="replace")
        except OSError:
            mountinfo = ""
    found = container_id_from_mountinfo(mountinfo)
    out = [found] if found else []
    hostname = hostname if hostname is not None else (os.environ.get("HOSTNAME") or socket.gethostname())
    if re.fullmatch(r"[0-9a-f]{12,64}", hostname or "") and hostname not in out:
        out.append(hostname)
    return out


def pick_network(attrs: dict) -> str | None:
    """The shared network of an inspected container: a user-defined one first (sorted, for one
    answer), else the default bridge; None with host or no networking."""
    networks = sorted(((attrs.get("NetworkSettings") or {}).get("Networks") or {}).keys())
    if not networks or any(name in _NOT_SHARED for name in networks):
        return None
    user = [name for name in networks if name != "bridge"]
    return (user or networks)[0]


def find(
    client, environ: Mapping[str, str] | None = None, mountinfo: str | None = None, hostname: str | None = None
) -> str | None:
    """The network serving containers join, or None: the normal case (publish on 127.0.0.1).

    ``client`` is a docker SDK client; a candidate counts only once the engine confirms it: a
    running container whose id is (or starts with) that candidate."""
    explicit = ((os.environ if environ is None else environ).get(NETWORK_ENV) or "").strip()
    if explicit:
        client.networks.get(explicit)  # NotFound: a clear error before anything starts
        return explicit
    for candidate in candidates(mountinfo, hostname):
        try:
            container = client.containers.get(candidate)
        except Exception:  # noqa: BLE001 - not a container of this engine (or no engine): not our case
            continue
        if not container.id.startswith(candidate) or container.status != "running":
            continue
        return pick_network(container.attrs)
    return None
