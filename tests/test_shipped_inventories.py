"""The inventories shipped for a current Flatcar (DigitalOcean, QEMU, your own hosts) declare
the deviations it needs: without them the guide's lines as written cannot pass there."""
from __future__ import annotations

import re

import pytest
import yaml

from helpers import inventory as inv

FLATCAR_INVENTORIES = ("do.yaml", "qemu.yaml", "static.example.yaml")

# What a current Flatcar (Docker >= 20.10, etcd v3.5's etcdctl, ext4 root) needs, and why:
FLATCAR_NEEDS = {
    "docker_command": "/usr/bin/dockerd",    # no `docker -d` since Docker 1.12
    "docker_storage_flag": "-s overlay2",   # no btrfs root
    "etcdctl_env": "ETCDCTL_API=2 ",        # etcdctl v3 speaks v3 unless told
    "docker_forward_accept": True,          # Docker >= 1.13 drops FORWARD
    "kubelet_docker_api": "1.15",           # the v0.7 kubelet's unversioned requests
    "pause_image": "preload",               # schema-1 kubernetes/pause is refused
}
NEEDS_THE_BUILD = ("kubelet_docker_api", "pause_image")   # docker-api-pin, pause.tar


@pytest.fixture(params=FLATCAR_INVENTORIES)
def shipped(request):
    path = inv.INVENTORY_DIR / request.param
    return path, inv.load(path)


def test_declares_what_flatcar_needs(shipped):
    path, inventory = shipped
    assert inventory.deviations.declared() == FLATCAR_NEEDS, path.name


def test_deviations_needing_programs_come_with_the_build(shipped):
    path, inventory = shipped
    declared = inventory.deviations.declared()
    if any(name in declared for name in NEEDS_THE_BUILD):
        assert inventory.artifacts is not None and inventory.artifacts.build, \
            f"{path.name}: {NEEDS_THE_BUILD} need the programs only `build: true` makes"


def test_each_deviation_says_why(shipped):
    path, _ = shipped
    text = path.read_text()
    section = text[text.index("\ndeviations:"):]
    for name in yaml.safe_load(section)["deviations"]:
        (line,) = re.findall(rf"^  {name}:.*$", section, flags=re.M)
        assert re.search(r"#\s*\S.{10,}", line), f"{path.name}: {name} has no comment saying why"


def test_local_inventory_declares_the_same_kinds():
    """The embedded cluster differs only where Debian differs from Flatcar (dockerd's path,
    no overlay2 under nspawn, no docker.socket)."""
    local = inv.load(inv.INVENTORY_DIR / "local.yaml").deviations.declared()
    assert set(FLATCAR_NEEDS) <= set(local)
