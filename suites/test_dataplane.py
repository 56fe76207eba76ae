"""Beyond the guide's text, what flannel is for: a container on each node reaches a
container on every other node across the flannel subnets."""
import secrets

import pytest

from helpers.checks import expect, guide_section
from helpers.facts import PROBE_IMAGE

pytestmark = guide_section("Container networking", "blocker")


@pytest.fixture(scope="session")
def probe_containers(cluster, connections):
    """One long-lived container per node: {node name: (container name, its IP)}."""
    name = f"k8sconf-probe-{secrets.token_hex(3)}"
    started = {}
    try:
        for node in cluster.nodes:
            result = connections[node.name].sudo(
                f"docker run -d --rm --name {name} {PROBE_IMAGE} sleep 600 >/dev/null && "
                f"docker inspect -f '{{{{.NetworkSettings.IPAddress}}}}' {name}", timeout=60)
            started[node.name] = (name, result.stdout.strip() if result.ok else "",
                                  str(result))
        yield started
    finally:
        for node_name in started:
            connections[node_name].sudo(f"docker rm -f {name}", timeout=30)


def test_container_reaches_every_other_node(node, cluster, connections, probe_containers):
    name, _, start_log = probe_containers[node.name]
    targets = {other: ip for other, (_, ip, _) in probe_containers.items() if other != node.name}
    expect(all(targets.values()) and probe_containers[node.name][1], node.name,
           "a probe container runs on every node", expected="a container IP per node",
           found=", ".join(f"{n}: {ip or 'none'}" for n, (_, ip, _) in probe_containers.items()),
           evidence={"docker run": start_log})
    script = "; ".join(f"docker exec {name} ping -c 1 -W 2 {ip} >/dev/null 2>&1 "
                       f"&& echo {other} ok || echo {other} FAILED"
                       for other, ip in targets.items())
    result = connections[node.name].sudo(script, timeout=60)
    unreachable = [line.split()[0] for line in result.stdout.splitlines() if "FAILED" in line]
    expect(result.ok and not unreachable, node.name,
           "its container reaches a container on every other node",
           expected=", ".join(f"{n} ({ip})" for n, ip in targets.items()),
           found="unreachable: " + ", ".join(unreachable) if unreachable else str(result),
           evidence={"pings": result.stdout + result.stderr,
                     "ip route": connections[node.name].run("ip route", timeout=10).stdout})
