"""Beyond the guide's text, what flannel is for: a container on each node reaches a
container on every other node across the flannel subnets.

The facts round starts one probe container per node; the next round has each of them
ping all the others (helpers/facts.py), so this check only reads the answers."""
from helpers.checks import dropped_there, expect, guide_section
from helpers.node_facts import FORWARD_RULES, PINGS, PROBE_CONTAINER
from helpers.probes import Probe, reads
from helpers.trace import verifies

pytestmark = guide_section("Container networking", "blocker")

IP_ROUTE = Probe("ip_route", "ip route")


@verifies("G-INST-2", "G-INST-3")
@reads(IP_ROUTE, PINGS, PROBE_CONTAINER)
def test_container_reaches_every_other_node(node, facts, cluster_facts):
    expect(bool(facts.probe_address()), node.name, "a probe container runs on the node",
           expected="a container with an IPv4 on eth0",
           found=facts.section("probe_container") or "none",
           evidence={"docker run": facts.section("probe_container"),
                     "journalctl -b -u docker.service": facts.journal("docker.service")})
    # a node without a probe container fails its own check (above), not every other node's
    targets = {name: other.probe_address() for name, other in cluster_facts.readable().items()
               if name != node.name and other.probe_address()}
    reached = facts.pings()
    unreachable = [name for name in targets if not reached.get(name)]
    expect(not unreachable, node.name, "its container reaches a container on every other node",
           expected=", ".join(f"{n} ({ip})" for n, ip in targets.items()),
           found="unreachable: " + ", ".join(
               f"{n} ({targets[n]}{dropped_there(cluster_facts, n, 'pings')})"
               for n in unreachable),
           evidence={"pings": facts.section("pings"), "ip route": facts.section("ip_route"),
                     "ip addr (brief)": facts.brief_addresses()})


@verifies("G-INST-2", "G-UNIT-5")
@reads(FORWARD_RULES, PINGS)
def test_forward_chain_passes_container_traffic(node, facts):
    """What drops cross-node container traffic, as the node saw it: the FORWARD chain's
    policy counter before and after the pings. Docker >= 1.13 sets FORWARD's policy to DROP
    and flannel 0.2.0 adds no FORWARD rules of its own (later flannel releases do)."""
    policy, dropped = facts.dropped_during_pings()
    expect(facts.ok("pings") and dropped == 0, node.name,
           "the FORWARD chain drops none of the containers' traffic",
           expected="no packet dropped by the FORWARD policy while the containers pinged",
           found=(f"chain FORWARD policy {policy} dropped {dropped} packets during the pings "
                  "(Docker >= 1.13 sets the policy to DROP; flannel 0.2.0 adds no FORWARD "
                  "rules: see deviation docker_forward_accept)" if dropped > 0
                  else "the pings did not run" if dropped < 0 else "none"),
           evidence={"iptables -S FORWARD": facts.section("forward_rules"),
                     "pings": facts.section("pings")})

