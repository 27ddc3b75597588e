"""Finding the network of localaws's own container (runners/own_network.py) and what the docker
runner then gives a serving container: no published port, the shared network."""

from __future__ import annotations

from pathlib import Path

import docker
import docker.errors
import pytest

from localaws.sagemaker.runners import own_network
from localaws.sagemaker.runners.base import ContainerSpec
from localaws.sagemaker.runners.docker import DockerRunner

ID = "3f" * 32
OTHER = "ab" * 32

MOUNTINFO_DOCKER = f"""\
612 590 0:52 / / rw,relatime master:311 - overlay overlay rw,lowerdir=/var/lib/docker/overlay2/l/X
640 612 254:1 /var/lib/docker/containers/{ID}/resolv.conf /etc/resolv.conf rw,relatime - ext4 /dev/vda1 rw
641 612 254:1 /var/lib/docker/containers/{ID}/hostname /etc/hostname rw,relatime - ext4 /dev/vda1 rw
642 612 254:1 /var/lib/docker/containers/{ID}/hosts /etc/hosts rw,relatime - ext4 /dev/vda1 rw
"""
#: /var/lib/docker on a volume of its own: the root field starts at /docker/...
MOUNTINFO_OWN_VOLUME = f"641 612 8:17 /docker/containers/{ID}/hostname /etc/hostname rw - ext4 /dev/sdb1 rw\n"
MOUNTINFO_HOST = """\
27 1 254:0 / / rw,relatime - ext4 /dev/vda rw
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""


class FakeContainer:
    def __init__(self, container_id: str, networks: dict, status: str = "running"):
        self.id = container_id
        self.status = status
        self.attrs = {"NetworkSettings": {"Networks": networks}}


class FakeClient:
    """The two engine calls detection makes: containers.get and networks.get."""

    def __init__(self, containers: dict[str, FakeContainer] = (), networks=()):
        self._containers = dict(containers)
        self._networks = set(networks)
        self.containers = self
        self.networks = self
        self.asked: list[str] = []

    def get(self, name):
        self.asked.append(name)
        if name in self._networks:
            return name
        for key, container in self._containers.items():
            if key.startswith(name) or container.id.startswith(name):
                return container
        raise docker.errors.NotFound(f"no such object: {name}")


def test_id_from_mountinfo():
    assert own_network.container_id_from_mountinfo(MOUNTINFO_DOCKER) == ID
    assert own_network.container_id_from_mountinfo(MOUNTINFO_OWN_VOLUME) == ID
    assert own_network.container_id_from_mountinfo(MOUNTINFO_HOST) is None
    # A 64-hex folder that is not a container's bind-mounted file is not taken.
    assert own_network.container_id_from_mountinfo(f"1 1 0:1 /containers/{ID}/data /data rw - ext4 x rw") is None


def test_candidates_mountinfo_then_short_id_host_name():
    assert own_network.candidates(MOUNTINFO_DOCKER, ID[:12]) == [ID, ID[:12]]
    assert own_network.candidates(MOUNTINFO_HOST, OTHER[:12]) == [OTHER[:12]]
    assert own_network.candidates(MOUNTINFO_HOST, "build-box") == []  # a named host: not a candidate


def test_finds_its_user_network():
    client = FakeClient({ID: FakeContainer(ID, {"proj_default": {}, "bridge": {}})})
    assert own_network.find(client, {}, MOUNTINFO_DOCKER, "localaws") == "proj_default"
    client = FakeClient({ID: FakeContainer(ID, {"bridge": {}})})
    assert own_network.find(client, {}, MOUNTINFO_DOCKER, "localaws") == "bridge"


def test_by_host_name_when_mountinfo_says_nothing():
    client = FakeClient({OTHER: FakeContainer(OTHER, {"b_net": {}, "a_net": {}})})
    assert own_network.find(client, {}, MOUNTINFO_HOST, OTHER[:12]) == "a_net"


def test_not_in_a_container():
    client = FakeClient()
    assert own_network.find(client, {}, MOUNTINFO_HOST, "vm") is None
    assert client.asked == []  # nothing to ask the engine
    # An id the engine does not know (a container of another engine, this machine itself): normal mode.
    assert own_network.find(FakeClient(), {}, MOUNTINFO_DOCKER, "vm") is None
    # Known but not running, or on the host's network: normal mode too.
    stopped = FakeClient({ID: FakeContainer(ID, {"n": {}}, status="exited")})
    assert own_network.find(stopped, {}, MOUNTINFO_DOCKER, "vm") is None
    host = FakeClient({ID: FakeContainer(ID, {"host": {}})})
    assert own_network.find(host, {}, MOUNTINFO_DOCKER, "vm") is None


def test_env_override_wins_and_must_exist():
    client = FakeClient({ID: FakeContainer(ID, {"proj_default": {}})}, networks={"mine"})
    env = {own_network.NETWORK_ENV: "mine"}
    assert own_network.find(client, env, MOUNTINFO_DOCKER, "vm") == "mine"
    assert own_network.find(FakeClient(networks={"mine"}), env, MOUNTINFO_HOST, "vm") == "mine"
    with pytest.raises(docker.errors.NotFound):
        own_network.find(FakeClient(), {own_network.NETWORK_ENV: "missing"}, MOUNTINFO_HOST, "vm")


def _spec(**extra) -> ContainerSpec:
    return ContainerSpec(
        image="img", command="serve", host_dir=Path("/tmp/x"), host_name="primary", env={}, name="n", **extra
    )


def _runner(shared: str | None) -> DockerRunner:
    client = docker.DockerClient(base_url="unix:///nonexistent.sock", version="1.41")
    return DockerRunner(client=client, shared_network=shared)


def test_serving_container_joins_the_shared_network_unpublished():
    options = _runner("proj_default").create_options(_spec(ports={8080: 40001}), "img", Path("/tmp/x"))
    assert options["ports"] == {}
    assert options["network"] == "proj_default"


def test_normal_mode_publishes_on_loopback():
    options = _runner(None).create_options(_spec(ports={8080: 40001}), "img", Path("/tmp/x"))
    assert options["ports"] == {"8080/tcp": ("127.0.0.1", 40001)}
    assert "network" not in options


def test_a_job_without_ports_is_unchanged():
    options = _runner("proj_default").create_options(_spec(), "img", Path("/tmp/x"))
    assert "network" not in options and options["ports"] == {}
