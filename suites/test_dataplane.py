"""Beyond the guide's text, what flannel is for: a container on each node reaches a
container on every other node across the flannel subnets."""
import secrets

import pytest

from helpers.checks import expect, guide_section
from helpers.facts import PROBE_IMAGE
from helpers.ssh import SSHError

pytestmark = guide_section("Container networking", "blocker")


@pytest.fixture(scope="session")
def probe_containers(cluster, connections):
    """One long-lived container per node: {node name: (container name, its IP, start log)};
    a node where none could be started (its IP "") fails its own check only."""
    name = f"k8sconf-probe-{secrets.token_hex(3)}"
    started, unreachable = {}, set()
    try:
        for node in cluster.nodes:
            try:
                result = connections[node.name].sudo(
                    f"docker run -d --rm --name {name} {PROBE_IMAGE} sleep 600 >/dev/null && "
                    f"docker inspect -f '{{{{.NetworkSettings.IPAddress}}}}' {name}", timeout=60)
            except SSHError as exc:   # an unreachable node must not error every node's check
                started[node.name] = (name, "", str(exc))
                unreachable.add(node.name)
                continue
            started[node.name] = (name, result.stdout.strip() if result.ok else "",
                                  str(result))
        yield started
    finally:
        for node_name in set(started) - unreachable:
            try:
                connections[node_name].sudo(f"docker rm -f {name}", timeout=30)
            except SSHError:
                pass


def test_container_reaches_every_other_node(node, cluster, connections, probe_containers):
    name, mine, start_log = probe_containers[node.name]
    expect(bool(mine), node.name, "a probe container runs on the node",
           expected="a container with an IP", found="none", evidence={"docker run": start_log})
    # a node without a probe container fails its own check (above), not every other node's
    targets = {other: ip for other, (_, ip, _) in probe_containers.items()
               if other != node.name and ip}
    script = "; ".join(f"docker exec {name} ping -c 1 -W 2 {ip} >/dev/null 2>&1 "
                       f"&& echo {other} ok || echo {other} FAILED"
                       for other, ip in targets.items()) or "true"
    result = connections[node.name].sudo(script, timeout=60)
    unreachable = [line.split()[0] for line in result.stdout.splitlines() if "FAILED" in line]
    if result.ok and not unreachable:
        return
    expect(False, node.name, "its container reaches a container on every other node",
           expected=", ".join(f"{n} ({ip})" for n, ip in targets.items()),
           found="unreachable: " + ", ".join(unreachable) if unreachable else str(result),
           evidence={"pings": result.stdout + result.stderr,
                     "ip route": connections[node.name].run("ip route", timeout=10).stdout})
