"""The `qemu` provider end to end: three VMs under QEMU, here under software emulation.

No Flatcar image can be downloaded on this machine, so the VMs boot the small Debian
image of tests/e2e/qemu_image.py (built once, cached), with the provider's
`config_delivery: fw_cfg-files`: the provider renders each node's Ignition config and
hands it over as a tar through fw_cfg, which the image unpacks in its initramfs.
Everything else is the provider's real path: the KVM probe (it hangs here, so TCG),
overlays, daemonized QEMU with pid files, user-mode networking restricted and forwarded
on 127.0.0.1 only, the private segment on loopback multicast, verified host keys,
etcd over the private addresses, reboot, destroy.

The tests share one cluster (module fixture) and run in file order; the destroy test
ends it and proves nothing is left. Prefix, ports and multicast port are this module's
own, so a conformance run's qemu cluster is never touched.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from helpers.inventory import parse
from helpers.providers.base import ProviderError, ProviderUnavailable
from helpers.providers.qemu import QemuProvider
from helpers.providers.qemu_accel import BOOT_MARKERS
from helpers.providers.qemu_vm import find_leftovers, qmp_command
from helpers.ssh import Connection, HostKeyRejected
from tests.e2e.qemu_image import ensure_image, image_dir

PREFIX = "k8sqe2e"
SSH_BASE_PORT = 22340
MCAST_PORT = 22339
CACHE_DIR = Path("/var/cache/k8s-coreos-conformance/qemu")
# Console logs and the KVM verdict stay here for a look after the run (pytest's basetemp
# is rotated away by concurrent sessions, even during this one); the run's key does not.
RUN_DIR = Path("/tmp/k8sconf-qemu-e2e")
WORK_DIR = Path("/var/lib/k8s-coreos-conformance/qemu")

# three TCG VMs: about 3 minutes on this 2-core machine with the image cached (+1 to build it)
pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.qemu,
              pytest.mark.xdist_group("qemu-cluster")]


def settings(image, **changes) -> dict:
    base = {"image_path": str(image.base), "kernel": str(image.kernel),
            "initrd": str(image.initrd), "config_delivery": "fw_cfg-files",
            "memory_mb": 512, "cpus": 1, "accel": "auto", "prefix": PREFIX,
            "ssh_base_port": SSH_BASE_PORT, "private_mcast_port": MCAST_PORT,
            "boot_timeout": 600, "cache_dir": str(CACHE_DIR), "work_dir": str(WORK_DIR),
            # a throw-away test VM: spare the emulated CPU the speculation mitigations
            "kernel_append": "root=/dev/vda rw console=ttyS0 mitigations=off"}
    base.update(changes)
    return base


@pytest.fixture(scope="module")
def test_image(request, measured):
    capman = request.config.pluginmanager.getplugin("capturemanager")
    building = not (image_dir(CACHE_DIR) / "base.qcow2").is_file()
    # the first build (a minute or more) shows mmdebstrap's progress live
    quiet = capman.global_and_fixture_disabled() if capman and building \
        else contextlib.nullcontext()
    with quiet:
        image = ensure_image(CACHE_DIR)
    if image.built:
        measured["qemu: test image build (mmdebstrap, mkfs.ext4 -d, qcow2)"] = \
            f"{image.seconds:.1f} s"
    return image


@pytest.fixture(scope="module")
def qemu_provider(test_image):
    inventory = parse({"provider": "qemu", "bootstrap": {"enabled": False},
                       "qemu": settings(test_image)})
    shutil.rmtree(RUN_DIR, ignore_errors=True)
    provider = QemuProvider(inventory, RUN_DIR / "cluster", f"e2e{os.getpid()}")
    try:
        provider.preflight()
    except ProviderUnavailable as exc:   # a missing tool is a failure here, not a skip
        pytest.fail(f"{exc} (scripts/install installs it)", pytrace=False)
    return provider


@pytest.fixture(scope="module")
def qemu_cluster(qemu_provider, measured):
    started = time.monotonic()
    cluster = qemu_provider.create()
    measured["qemu: create, 3 VMs (KVM probe + boot to SSH + etcd healthy)"] = \
        f"{time.monotonic() - started:.1f} s (boot {cluster.state['boot_seconds']} s, " \
        f"{cluster.state['accel']})"
    try:
        yield cluster
    finally:
        qemu_provider.destroy(cluster)
        for key in (Path(cluster.ssh_key), Path(cluster.ssh_key + ".pub")):
            key.unlink(missing_ok=True)     # it opens nothing any more; the logs stay


@pytest.fixture(scope="module")
def connections(qemu_cluster):
    conns = {n.name: Connection(n, qemu_cluster.ssh_user, qemu_cluster.ssh_key,
                                command_timeout=60).connect()
             for n in qemu_cluster.nodes}
    yield conns
    for conn in conns.values():
        conn.close()


def run(conn, command: str, **kwargs):
    return conn.run(command, timeout=kwargs.pop("timeout", 60), **kwargs)


def qemu_processes(marker: str) -> dict[int, str]:
    """Live (non-zombie) processes whose command line contains marker."""
    found = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if marker in cmdline and state != "Z":
            found[int(proc.name)] = cmdline
    return found


# -- the cluster ---------------------------------------------------------------------------
def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_kvm_is_probed_and_tcg_chosen_when_the_probe_hangs(qemu_provider, qemu_cluster,
                                                           measured):
    measured["qemu: host CPU per VM up to ready"] = ", ".join(
        f"{n} {cpu_seconds(info['pid']):.0f} s" for n, info in qemu_cluster.state["nodes"].items())
    verdict = json.loads((qemu_provider.run_dir / "kvm-probe.json").read_text())
    assert verdict["accel"] == qemu_cluster.state["accel"]
    if Path("/dev/kvm").exists():    # this machine: nested KVM hangs after decompression
        assert "KVM test boot" in qemu_cluster.state["accel_reason"]
    if qemu_cluster.state["accel"] == "tcg":
        cmdline = Path(qemu_cluster.state["nodes"]["coreos-1"]["dir"], "qemu.cmdline").read_text()
        assert "-accel tcg,tb-size=128" in cmdline


def test_every_vm_answers_ssh_with_its_own_verified_host_key(qemu_cluster, connections):
    keys = [n.host_keys for n in qemu_cluster.nodes]
    assert all(len(k) == 1 for k in keys) and len({k[0] for k in keys}) == 3
    for node in qemu_cluster.nodes:
        assert (node.ssh_host, node.ssh_port) == ("127.0.0.1", SSH_BASE_PORT + int(node.name[-1]))
        served = run(connections[node.name], "cat /etc/ssh/ssh_host_ed25519_key.pub").stdout
        assert served.split()[:2] == node.host_keys[0].split()
    # a connection that pins another node's key is refused: the key is checked, not trusted
    first, second = qemu_cluster.nodes[0], qemu_cluster.nodes[1]
    impostor = dataclasses.replace(first, host_keys=second.host_keys)
    with pytest.raises(HostKeyRejected):
        Connection(impostor, qemu_cluster.ssh_user, qemu_cluster.ssh_key).connect()


def test_each_vm_is_the_guides_host(qemu_cluster, connections):
    for node in qemu_cluster.nodes:
        conn = connections[node.name]
        assert run(conn, "hostname").stdout.strip() == node.name
        env = run(conn, "cat /etc/environment").stdout
        assert dict(line.split("=", 1) for line in env.split()) == {
            "COREOS_PUBLIC_IPV4": node.public_ip, "COREOS_PRIVATE_IPV4": node.private_ip}
        addrs = json.loads(run(conn, "ip -j addr").stdout)
        by_mac = {a["address"]: [f"{i['local']}/{i['prefixlen']}" for i in a["addr_info"]
                                 if i["family"] == "inet"] for a in addrs}
        index = int(node.name[-1])
        assert by_mac[f"52:54:00:00:01:{index:02x}"] == [f"{node.public_ip}/24"]
        assert by_mac[f"52:54:00:00:02:{index:02x}"] == [f"{node.private_ip}/24"]
        assert by_mac[f"52:54:00:00:03:{index:02x}"] == ["10.0.2.15/24"]   # the SSH forward's
        assert run(conn, "true", sudo=True).ok, f"{node.name}: core has no passwordless sudo"
        # the guide's units Require etcd.service: here it is Flatcar's etcd, by its alias
        assert run(conn, "systemctl show -p Id,ActiveState etcd.service").stdout.split() == [
            "Id=etcd-member.service", "ActiveState=active"], node.name
        assert run(conn, "stat -c %U:%a /home/core/.ssh /home/core/.ssh/authorized_keys"
                   ).stdout.split() == ["core:700", "core:600"]
    assert [n.public_ip for n in qemu_cluster.nodes] == ["192.168.2.1", "192.168.2.2",
                                                         "192.168.2.3"]


@pytest.mark.parametrize("side", ["public_ip", "private_ip"])
def test_both_segments_connect_the_vms(qemu_cluster, connections, side):
    """The guide's two networks: the master reaches the minions' kubelets on their public
    addresses, flannel and etcd talk over the private ones."""
    master = connections["coreos-1"]
    for other in qemu_cluster.minions:
        ping = run(master, f"ping -c 3 -i 0.3 -W 3 {getattr(other, side)}")
        assert ping.ok, str(ping)
    back = run(connections["coreos-3"], f"ping -c 2 -W 3 {getattr(qemu_cluster.master, side)}")
    assert back.ok, str(back)


def test_guests_cannot_reach_out_of_their_user_network(qemu_cluster, connections):
    """restrict=on: not even the host answers (a listener on the host's loopback, which
    QEMU's gateway address on the management network, 10.0.2.2, would otherwise lead to)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        attempt = run(connections["coreos-2"],
                      f"timeout 5 bash -c 'echo > /dev/tcp/10.0.2.2/{port}' && echo reached")
        assert "reached" not in attempt.stdout and not attempt.ok


def wait_healthy(conn, address: str, timeout: float = 90) -> None:
    """etcd answers healthy (under emulation on a busy host a member can miss a beat)."""
    deadline = time.monotonic() + timeout
    while True:
        health = run(conn, f"curl -s --max-time 5 http://{address}:4001/health")
        if '"health":"true"' in health.stdout:
            return
        assert time.monotonic() < deadline, \
            f"{conn.node.name} -> {address}: {health.stdout or health.stderr}"
        time.sleep(2)


def test_etcd_has_three_members_over_the_private_addresses(qemu_cluster, connections):
    names = sorted(n.name for n in qemu_cluster.nodes)
    for conn in connections.values():
        for target in qemu_cluster.nodes:
            wait_healthy(conn, target.private_ip)
        members = json.loads(run(conn, "curl -s --max-time 5 http://127.0.0.1:4001/v2/members"
                                 ).stdout)
        assert sorted(m["name"] for m in members["members"]) == names
        peers = {m["name"]: m["peerURLs"] for m in members["members"]}
        assert all(peers[n.name] == [f"http://{n.private_ip}:2380"] for n in qemu_cluster.nodes)


def test_consoles_are_logged_and_vms_stay_small(qemu_cluster, measured):
    rss = {}
    for name, info in qemu_cluster.state["nodes"].items():
        console = Path(info["console"]).read_text(errors="replace")
        assert "k8sconf: configuration from fw_cfg applied" in console
        assert qmp_command(Path(info["dir"]) / "qmp.sock", "query-status")["return"][
            "status"] == "running"
        status = Path(f"/proc/{info['pid']}/status").read_text()
        rss[name] = int(next(row for row in status.splitlines() if row.startswith("VmRSS:")).split()[1])
    measured["qemu: host memory per VM (QEMU RSS, 512 MiB guests)"] = ", ".join(
        f"{n} {kb >> 10} MiB" for n, kb in rss.items())
    assert all(kb < 800 << 10 for kb in rss.values()), rss


def test_reboot_comes_back_with_a_new_boot_id(qemu_provider, qemu_cluster, connections, measured):
    node = qemu_cluster.node("coreos-3")
    old = connections[node.name].boot_id()
    pid = qemu_cluster.state["nodes"][node.name]["pid"]
    started = time.monotonic()
    qemu_provider.reboot(qemu_cluster, node, timeout=240)
    measured["qemu: reboot (to SSH with a new boot id)"] = f"{time.monotonic() - started:.1f} s"
    connections[node.name].close()
    conn = connections[node.name]
    assert conn.boot_id() != old
    assert qemu_processes(qemu_cluster.state["nodes"][node.name]["dir"]).keys() == {pid}, \
        "the guest rebooted inside the same QEMU process"
    assert run(conn, "hostname").stdout.strip() == node.name
    assert run(conn, "cat /etc/environment").stdout.count("=") == 2


def test_destroy_leaves_nothing_behind(qemu_provider, qemu_cluster, connections, test_image,
                                       measured):
    for conn in connections.values():
        conn.close()
    dirs = [Path(info["dir"]) for info in qemu_cluster.state["nodes"].values()]
    assert all((d / "disk.qcow2").is_file() and (d / "qmp.sock").is_socket() for d in dirs)
    base_mtime = test_image.base.stat().st_mtime_ns
    # a provider of ANOTHER run finds this cluster as leftovers by its pid files, as
    # create() does after a killed run, and ends it
    other_run = QemuProvider(qemu_provider.inventory, qemu_provider.run_dir, "another-run")
    started = time.monotonic()
    other_run.destroy(None)
    measured["qemu: destroy (3 VMs)"] = f"{time.monotonic() - started:.1f} s"
    qemu_provider.destroy(qemu_cluster)             # idempotent
    assert qemu_processes(str(WORK_DIR / PREFIX)) == {}
    assert find_leftovers(PREFIX, WORK_DIR) == [] and not any(d.exists() for d in dirs)
    assert not list(WORK_DIR.glob(f"{PREFIX}-*")) if WORK_DIR.exists() else True
    ours = [line for line in subprocess.run(["pgrep", "-a", "qemu-system"], capture_output=True,
                                            text=True).stdout.splitlines()
            if str(WORK_DIR / PREFIX) in line]
    assert ours == []
    for node in qemu_cluster.nodes:   # the forwarded ports are free again
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", node.ssh_port))
    assert test_image.base.stat().st_mtime_ns == base_mtime, "the base image was written"


def test_a_vm_that_does_not_come_up_fails_with_its_console_tail(test_image, measured):
    """One VM whose kernel finds no root: create fails within boot_timeout with ONE line
    naming the console log and quoting its end, and removes the VM."""
    inventory = parse({"provider": "qemu", "bootstrap": {"enabled": False},
                       "nodes": [{"name": "coreos-1", "role": "master"}],
                       "qemu": settings(test_image, accel="tcg", boot_timeout=45,
                                        prefix=f"{PREFIX}-bad", ssh_base_port=22350,
                                        private_mcast_port=22349,
                                        kernel_append="root=/dev/vdz rootdelay=2 "
                                                      "console=ttyS0")})
    run_dir = RUN_DIR / "bad"
    provider = QemuProvider(inventory, run_dir, "bad")
    started = time.monotonic()
    try:
        with pytest.raises(ProviderError) as caught:
            provider.create()
    finally:
        for key in run_dir.glob("id_ed25519*"):
            key.unlink()
    message = str(caught.value)
    measured["qemu: failed create (1 VM, boot_timeout 45 s)"] = \
        f"{time.monotonic() - started:.1f} s"
    assert "\n" not in message
    assert message.startswith("qemu: coreos-1 did not answer SSH on 127.0.0.1:22351 within "
                              "boot_timeout 45 s")
    assert f"console {run_dir / 'coreos-1.console.log'} ends: " in message
    assert find_leftovers(f"{PREFIX}-bad", WORK_DIR) == []
    assert qemu_processes(str(WORK_DIR / f"{PREFIX}-bad")) == {}
    # what a real kernel prints is what the KVM probe looks for
    assert BOOT_MARKERS.search((run_dir / "coreos-1.console.log").read_text(errors="replace"))
    print(message)
