"""A simulated droplet boots with the digitalocean provider's user_data, applied by
the real Ignition from its own metadata service: SSH answers with the host key the
user_data carried, and the identity unit gave it the hostname and /etc/environment
from the metadata. The image is Flatcar-like where the provider cares: etcd only as
etcd-member.service, and Docker pulling `busybox` from the cloud's registry.
Octet 92 (this module's cloud networks)."""
from __future__ import annotations

import os
import time

import pytest

from helpers.providers import do_userdata, netns
from helpers.providers.base import Node
from helpers.ssh import wait_for_ssh
from tests.simulated_cloud import SimulatedCloud
from tests.sshd import keygen

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group(__name__),
              pytest.mark.skipif(os.geteuid() != 0, reason="needs root (nspawn, ip netns)")]
CLOUD = "dosim92"


def test_droplet_boots_from_its_user_data_through_real_ignition(tmp_path):
    key = tmp_path / "id_ed25519"
    keygen(key, "droplet-login")
    private, public = do_userdata.generate_host_key()
    user_data = do_userdata.render_user_data("ignition", "core", [key.with_suffix(".pub").read_text()
                                                         .strip()], private, public, "beef")
    cloud = SimulatedCloud(CLOUD, 92, tmp_path)
    try:
        started = time.monotonic()
        cloud.start()
        machine = cloud.launch(3164444, "coreos-1-beef", user_data)
        assert machine.ready.wait(120) and not machine.error, machine.error
        node = Node("coreos-1", "master", "192.168.92.2", "10.192.0.2",
                    ssh_host="192.168.92.2", ssh_port=22, host_keys=(public,))
        netns.confirm_route(node.ssh_host, cloud.bridges[0])
        conn = wait_for_ssh(node, "core", str(key), 90)   # verifies the injected host key
        try:
            deadline = time.monotonic() + 30
            while True:
                state = conn.run("systemctl is-active " + do_userdata.IDENTITY_UNIT, timeout=15).stdout.strip()
                if state == "active" or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
            assert state == "active", f"{do_userdata.IDENTITY_UNIT} is {state!r} on the droplet"
            assert conn.run("hostname", timeout=15).stdout.strip() == "coreos-1"
            env = conn.run("cat /etc/environment", timeout=15).stdout
            assert "COREOS_PUBLIC_IPV4=192.168.92.2" in env, env
            assert "COREOS_PRIVATE_IPV4=10.192.0.2" in env, env
            units = conn.run("systemctl list-unit-files 'etcd*' --no-legend", timeout=15).stdout
            assert units.split() == ["etcd-member.service", "disabled", "enabled"], units
            absent = conn.run("systemctl show -p LoadState etcd.service", timeout=15).stdout
            assert absent.strip() == "LoadState=not-found", absent
            pulled = conn.run("sudo -n systemctl start docker && sudo -n docker pull busybox"
                              " && sudo -n docker run --rm busybox echo ran", timeout=90)
            assert pulled.ok and pulled.stdout.strip().endswith("ran"), pulled.stdout + pulled.stderr
        finally:
            conn.close()
        print(f"droplet up and identified in {time.monotonic() - started:.1f} s")
    finally:
        cloud.stop()
    assert cloud.leftovers() == []
