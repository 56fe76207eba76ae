"""The provider's user_data, applied by the REAL Ignition as on a droplet: Ignition's
`-platform digitalocean` fetches it from the droplet's metadata service (inside the
droplet's own network namespace, tests/droplet_metadata.py) and its files stage
applies it with `-root` to an overlay of the embedded cluster's node tree."""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from helpers.providers import do_userdata, netns
from helpers.providers.local_rootfs import rootfs_path
from tests import droplet_metadata as md

IGNITION = Path("/usr/lib/dracut/modules.d/30ignition/ignition")
CACHE = Path("/var/cache/k8s-coreos-conformance")
NS = "dosim91-ign"      # scratch octet 91 of this module's range; the namespace only

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (ip netns, mount)")


def ignition(stage: str, root: Path, work: Path) -> subprocess.CompletedProcess:
    # Debian builds Ignition to relabel what it wrote with `setfiles`; the simulated image
    # runs SELinux disabled (no policy to label by), so its setfiles labels nothing
    shims = work / "shims"
    shims.mkdir(exist_ok=True)
    (shims / "setfiles").write_text("#!/bin/sh\ncat >/dev/null\n")
    (shims / "setfiles").chmod(0o755)
    env = {**os.environ, "PATH": f"{shims}:{os.environ.get('PATH', '/usr/bin:/bin')}"}
    return subprocess.run(["ip", "netns", "exec", NS, str(IGNITION), "-platform", "digitalocean",
                           "-stage", stage, "-root", str(root), "-log-to-stdout",
                           "-config-cache", str(work / "ignition.json"),
                           "-state-file", str(work / "state"), "-fetch-timeout", "20s"],
                          capture_output=True, text=True, timeout=120, env=env)


@pytest.fixture
def droplet_root():
    # Ignition writes a user's SSH keys as that user (fsuid): `core` must be able to walk
    # down to the root, which pytest's 0700 tmp_path forbids
    base = Path(tempfile.mkdtemp(prefix="k8sconf-droplet-", dir="/var/tmp"))
    base.chmod(0o755)
    lower = rootfs_path(CACHE)
    if not lower.is_dir():
        pytest.fail(f"the node tree {lower} is missing: run a local cluster once to build it")
    for sub in ("upper", "work", "root"):
        (base / sub).mkdir()
    root = base / "root"
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                    f"lowerdir={lower},upperdir={base / 'upper'},workdir={base / 'work'}",
                    str(root)], check=True)
    # Flatcar's image has an SELinux config, and Debian's Ignition reads it to relabel
    # what it wrote; the simulated image says what Flatcar's droplets run with
    (root / "etc/selinux").mkdir(exist_ok=True)
    (root / "etc/selinux/config").write_text("SELINUX=disabled\nSELINUXTYPE=targeted\n")
    netns.ip("netns", "delete", NS, check=False)
    netns.add_namespace(NS)
    try:
        yield root
    finally:
        netns.ip("netns", "delete", NS, check=False)
        subprocess.run(["umount", str(root)], check=False)
        shutil.rmtree(base)


def test_ignition_is_installed_and_runs():
    out = subprocess.run([str(IGNITION), "-version"], capture_output=True, text=True, timeout=10)
    assert out.returncode == 0 and out.stdout.startswith("Ignition"), out.stdout + out.stderr


def test_real_ignition_applies_the_providers_user_data_from_the_metadata_service(
        droplet_root, tmp_path):
    private, public = do_userdata.generate_host_key()
    login = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBv2ZcG1VJYGmSe5PjS5XWl0ZBRtnoq8c8yCyAa0gEXa t"
    user_data = do_userdata.render_user_data("ignition", "core", [login], private, public, "beef")
    service = md.start_in_namespace(NS, md.metadata(7, "coreos-1-beef", user_data,
                                                    "192.168.91.2", "10.191.0.2"), tmp_path / "md")
    try:
        for stage in ("fetch", "files"):
            result = ignition(stage, droplet_root, tmp_path)
            assert result.returncode == 0, f"ignition {stage}: {result.stdout[-1500:]}"
    finally:
        service.kill()
        service.wait(10)
        for secret in (tmp_path / "ignition.json", tmp_path / "md/metadata.json"):
            secret.unlink(missing_ok=True)   # both carry the run's host private key
    key = droplet_root / "etc/ssh/ssh_host_ed25519_key"
    assert key.read_text() == private and oct(key.stat().st_mode & 0o777) == "0o600"
    keys = list((droplet_root / "home/core/.ssh").rglob("*"))
    assert any(p.is_file() and login in p.read_text() for p in keys), keys
    assert (droplet_root / do_userdata.IDENTITY_SCRIPT.lstrip("/")).stat().st_mode & 0o111
    unit = droplet_root / "etc/systemd/system" / do_userdata.IDENTITY_UNIT
    assert "ExecStart=/bin/sh /etc/k8sconf/identity.sh" in unit.read_text()
    presets = (droplet_root / "etc/systemd/system-preset/20-ignition.preset").read_text()
    assert f"enable {do_userdata.IDENTITY_UNIT}" in presets


def test_metadata_service_answers_the_droplet_api_shape():
    data = md.metadata(7, "coreos-2-beef", "{}", "192.168.91.3", "10.191.0.3")
    assert md.lookup(data, "/hostname") == "coreos-2-beef"
    assert md.lookup(data, "/user-data") == "{}"
    assert md.lookup(data, "/interfaces/private/0/ipv4/address") == "10.191.0.3"
    assert md.lookup(data, "/interfaces/public/0/ipv4/address") == "192.168.91.3"
    assert md.lookup(data, "/interfaces/public/9/ipv4/address") is None
