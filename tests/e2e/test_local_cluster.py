"""The `local` provider end to end: three systemd-nspawn nodes as the guide's starting point.

The e2e tests share one cluster (module fixture) and run in file order; the last one
destroys it and proves nothing is left. The unmarked tests at the top are pure and
need neither root nor a cluster.
"""
from __future__ import annotations

import ipaddress
import json
import time
from pathlib import Path

import pytest

from helpers.providers import netns
from helpers.providers.base import ProviderError
from helpers.providers.local import LocalProvider
from helpers.providers.local_nspawn import SUPERVISOR_NAME

PUBLIC = ipaddress.IPv4Network("192.168.2.0/24")
PRIVATE = ipaddress.IPv4Network("10.120.0.0/24")
OURS = {"k8sconf-pub", "k8sconf-priv"}
# Every e2e test carries xdist_group("local-cluster"): one cluster, so one worker.


# -- pure: no root, no cluster ----------------------------------------------------------
def test_collision_with_a_foreign_route_is_reported():
    routes = [{"dst": "default", "gateway": "192.0.2.1", "dev": "eth0"},
              {"dst": "192.0.2.0/24", "dev": "eth0"},
              {"dst": "192.168.0.0/16", "dev": "wlan0"}]
    found = netns.collisions([PUBLIC, PRIVATE], routes, [], OURS)
    assert found == ["route 192.168.0.0/16 dev wlan0"]


def test_collision_with_a_foreign_address_is_reported():
    addrs = [{"ifname": "eth0", "addr_info": [{"family": "inet", "local": "10.120.0.7",
                                               "prefixlen": 16}]}]
    assert netns.collisions([PUBLIC, PRIVATE], [], addrs, OURS) == [
        "address 10.120.0.7/16 on eth0"]


def test_our_own_routes_default_route_and_ipv6_are_no_collision():
    routes = [{"dst": "default", "dev": "eth0"},
              {"dst": "192.168.2.0/24", "dev": "k8sconf-pub"},
              {"dst": "10.120.0.0/24", "dev": "k8sconf-priv"},
              {"type": "local", "dst": "10.120.0.254", "dev": "lo"}]
    addrs = [{"ifname": "k8sconf-pub", "addr_info": [{"family": "inet", "local": "192.168.2.254",
                                                      "prefixlen": 24}]},
             {"ifname": "eth0", "addr_info": [{"family": "inet6", "local": "fd00::2",
                                               "prefixlen": 64}]}]
    assert netns.collisions([PUBLIC, PRIVATE], routes, addrs, OURS) == []


def test_interface_names_fit_the_kernel_limit():
    assert netns.bridge_names("k8sconf") == ("k8sconf-pub", "k8sconf-priv")
    assert netns.veth_names("k8sconf", 16) == ("k8sconf-16pub", "k8sconf-16priv")
    long = netns.veth_names("a-very-long-prefix", 3)
    assert all(len(name) <= 15 for name in long)
    assert all(name.startswith(netns.link_prefix("a-very-long-prefix")) for name in long)


def test_node_addresses_default_to_the_guides_and_must_lie_in_the_networks(tmp_path,
                                                                         local_inventory):
    plans = LocalProvider(local_inventory, tmp_path, "t")._plans()
    assert [(p.name, p.role, p.public_ip, p.private_ip) for p in plans] == [
        ("coreos-1", "master", "192.168.2.1", "10.120.0.1"),
        ("coreos-2", "minion", "192.168.2.2", "10.120.0.2"),
        ("coreos-3", "minion", "192.168.2.3", "10.120.0.3")]
    from helpers.inventory import parse
    outside = parse({"provider": "local", "bootstrap": {"enabled": False}, "nodes": [
        {"name": "coreos-1", "role": "master", "public_ip": "192.168.9.1"}]})
    with pytest.raises(ProviderError, match="192.168.9.1 is not a usable node address"):
        LocalProvider(outside, tmp_path, "t")._plans()


# -- e2e: one real cluster ----------------------------------------------------------------
def run(conn, command: str, **kwargs):
    return conn.run(command, timeout=kwargs.pop("timeout", 60), **kwargs)


@pytest.mark.e2e
@pytest.mark.xdist_group("local-cluster")
def test_systemd_runs_on_every_node(local_cluster, connections):
    states = {}
    for name, conn in connections.items():
        state = run(conn, "systemctl is-system-running").stdout.strip()
        failed = run(conn, "systemctl --failed --no-legend --plain").stdout.strip()
        states[name] = (state, failed)
    bad = {n: s for n, s in states.items() if s[0] not in ("running", "degraded")}
    assert not bad, f"systemd not up: {bad}"
    degraded = {n: s[1] for n, s in states.items() if s[0] == "degraded"}
    assert not degraded, f"failed units: {degraded}"


@pytest.mark.e2e
@pytest.mark.xdist_group("local-cluster")
def test_each_node_is_the_guides_host(local_cluster, connections):
    for node in local_cluster.nodes:
        conn = connections[node.name]
        assert run(conn, "hostname").stdout.strip() == node.name
        env = run(conn, "cat /etc/environment").stdout
        assert dict(line.split("=", 1) for line in env.split()) == {
            "COREOS_PUBLIC_IPV4": node.public_ip, "COREOS_PRIVATE_IPV4": node.private_ip}
        addrs = json.loads(run(conn, "ip -j -4 addr").stdout)
        by_if = {a["ifname"]: f"{i['local']}/{i['prefixlen']}" for a in addrs for i in a["addr_info"]}
        assert by_if["eth0"] == f"{node.public_ip}/24" and by_if["eth1"] == f"{node.private_ip}/24"
        assert run(conn, "test ! -e /opt/bin").ok, f"{node.name}: /opt/bin exists before the guide"
        assert run(conn, "id -nG core").stdout.split() >= ["core"]
        assert run(conn, "true", sudo=True).ok, f"{node.name}: core has no passwordless sudo"
        assert run(conn, "systemctl is-enabled docker.service docker.socket").stdout.split() == [
            "disabled", "disabled"]


@pytest.mark.e2e
@pytest.mark.xdist_group("local-cluster")
def test_etcd_has_three_healthy_members_reachable_on_4001_from_every_node(local_cluster,
                                                                          connections):
    names = sorted(n.name for n in local_cluster.nodes)
    for conn in connections.values():
        for target in local_cluster.nodes:
            health = run(conn, f"curl -s --max-time 5 http://{target.private_ip}:4001/health")
            assert '"health":"true"' in health.stdout, \
                f"{conn.node.name} -> {target.name}: {health.stdout or health.stderr}"
        members = json.loads(run(conn, "curl -s --max-time 5 http://127.0.0.1:4001/v2/members").stdout)
        assert sorted(m["name"] for m in members["members"]) == names
        urls = {m["name"]: m["clientURLs"] for m in members["members"]}
        for node in local_cluster.nodes:
            assert f"http://{node.private_ip}:4001" in urls[node.name]


@pytest.mark.e2e
@pytest.mark.xdist_group("local-cluster")
def test_docker_in_a_node_creates_docker0_and_runs_a_container(local_cluster, connections):
    conn = connections[local_cluster.minions[0].name]
    started = run(conn, "systemd-run --unit=k8sconf-e2e-dockerd dockerd -s vfs "
                        "--bip=10.100.63.1/24 --mtu=1450 -H unix:///var/run/docker.sock",
                  sudo=True)
    assert started.ok, str(started)
    try:
        imported = run(conn, "k8sconf-import-busybox 60", sudo=True, timeout=90)
        assert imported.ok and imported.stdout.strip() == "busybox", str(imported)
        inside = run(conn, "docker run --rm busybox sh -c 'ip -4 -o addr show eth0; "
                           "cat /sys/class/net/eth0/mtu'", sudo=True, timeout=90)
        assert inside.ok, str(inside)
        assert "inet 10.100.63." in inside.stdout and inside.stdout.split()[-1] == "1450"
        bridge = run(conn, "ip -4 -o addr show docker0").stdout
        assert "10.100.63.1/24" in bridge
    finally:
        run(conn, "systemctl stop k8sconf-e2e-dockerd", sudo=True, timeout=60)


@pytest.mark.e2e
@pytest.mark.xdist_group("local-cluster")
def test_memory_per_node_is_small(local_cluster, connections, measured):
    usage = {n.name: LocalProvider.memory(local_cluster, n) for n in local_cluster.nodes}
    rss = {}
    for name, conn in connections.items():
        out = run(conn, "ps -e -o rss=").stdout.split()
        rss[name] = sum(int(kb) for kb in out) * 1024
    measured["memory per node (cgroup rss / usage incl. cache / sum of process RSS)"] = ", ".join(
        f"{n} {u['rss'] >> 20}/{u['usage'] >> 20}/{rss[n] >> 20} MiB" for n, u in usage.items())
    for name, u in usage.items():
        assert u["usage"] < 512 << 20, f"{name} uses {u['usage'] >> 20} MiB"


@pytest.mark.e2e
@pytest.mark.xdist_group("local-cluster")
def test_reboot_returns_with_a_new_boot_id_and_etcd_healthy(local_provider, local_cluster,
                                                            connections, measured):
    node = local_cluster.minions[-1]
    old_boot_id = connections[node.name].boot_id()
    started = time.monotonic()
    local_provider.reboot(local_cluster, node, timeout=120)
    measured["reboot (to SSH with a new boot id)"] = f"{time.monotonic() - started:.1f} s"
    connections[node.name].close()     # reconnects on next use
    conn = connections[node.name]
    assert conn.boot_id() != old_boot_id
    deadline = time.monotonic() + 60
    while True:
        health = run(conn, "curl -s --max-time 3 http://127.0.0.1:4001/health").stdout
        members = run(conn, "curl -s --max-time 3 http://127.0.0.1:4001/v2/members").stdout
        if '"health":"true"' in health and members.count('"clientURLs"') == 3:
            break
        assert time.monotonic() < deadline, f"etcd on {node.name} after reboot: {health} {members}"
        time.sleep(1)
    measured["reboot (to etcd healthy again)"] = f"{time.monotonic() - started:.1f} s"
    assert run(conn, "systemctl is-system-running --wait", timeout=90).stdout.strip() == "running"


@pytest.mark.e2e
@pytest.mark.xdist_group("local-cluster")
def test_destroy_leaves_nothing_behind(local_provider, local_cluster, connections, measured):
    for conn in connections.values():
        conn.close()
    work_dir = Path(local_cluster.state["work_dir"])
    started = time.monotonic()
    local_provider.destroy(local_cluster)
    measured["destroy"] = f"{time.monotonic() - started:.1f} s"
    local_provider.destroy(local_cluster)          # idempotent
    local_provider.destroy(None)                   # and from leftovers by prefix
    prefix = local_cluster.state["prefix"]
    assert leftovers(prefix, work_dir) == {}


def leftovers(prefix: str, work_dir: Path) -> dict[str, list[str]]:
    """Everything on the host that still names our prefix."""
    marker = f"{prefix}-"
    found = {
        # a supervisor names its node's directory (work_dir is shared by every cluster)
        "processes": [c for c in _cmdlines() if marker in c or
                      (SUPERVISOR_NAME in c and f"{work_dir}/{marker}" in c)],
        "namespaces": [n for n in (p.name for p in netns.NETNS_DIR.glob("*"))
                       if n.startswith(marker)] if netns.NETNS_DIR.is_dir() else [],
        "links": netns.our_links(prefix),
        "mounts": [line for line in Path("/proc/self/mountinfo").read_text().splitlines()
                   if marker in line],
        "node dirs": [str(p) for p in work_dir.glob(f"{marker}*")],
        "cgroups": [str(p) for p in Path("/sys/fs/cgroup").glob(f"*/**/{marker}*")],
        "nspawn runtime": [str(p) for p in Path("/run/systemd/nspawn").rglob(f"{marker}*")],
    }
    return {what: items for what, items in found.items() if items}


def _cmdlines() -> list[str]:
    lines = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            lines.append((proc / "cmdline").read_bytes().replace(b"\0", b" ").decode())
        except OSError:
            pass
    return lines
