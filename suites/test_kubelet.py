"""Every kubelet listens on <private IPv4>:10250, healthy, reachable from the master over
the private network, and not on the public address."""
from helpers import exposure
from helpers.checks import expect, guide_section
from helpers.node_facts import LISTEN
from helpers.probes import Http, Probe, reads
from helpers.reporting import attach
from helpers.trace import verifies

pytestmark = guide_section("Kubelet", "blocker")

KUBELET_HEALTH = Probe("kubelet_health", lambda at: Http(
    f"http://{at.node.private_ip}:{at.guide['kubelet_port']}/healthz"))
# from the master, each node's kubelet over the private and over the public address
KUBELET_FROM_MASTER = Probe("kubelet_from_master", lambda at: Http(
    f"http://{at.other.private_ip}:{at.guide['kubelet_port']}/healthz"),
    master_only=True, each_node=True)
KUBELET_PUBLIC = Probe("kubelet_public", lambda at: Http(
    f"http://{at.other.public_ip}:{at.guide['kubelet_port']}/healthz"),
    master_only=True, each_node=True)


@verifies("G-SHOW-8", "G-UNIT-7", "G-TOPO-4")
@reads(LISTEN)
def test_kubelet_listens_on_the_private_ip(node, facts, inventory):
    wanted = f"{node.private_ip}:{inventory.guide.kubelet_port}"
    expect(wanted in facts.listening(), node.name, f"the kubelet listens on {wanted}",
           expected=wanted, found=" ".join(sorted(facts.listening())) or "nothing listens",
           evidence={"listening sockets": facts.section("listen"),
                     "journalctl -b -u kubelet.service": facts.journal("kubelet.service")})


@verifies("G-SHOW-8")
@reads(KUBELET_HEALTH)
def test_kubelet_is_healthy(node, facts):
    answer = facts.http("kubelet_health")
    expect(answer.status == 200, node.name, "the kubelet's /healthz is ok",
           expected="HTTP 200", found=f"HTTP {answer.status} {answer.body[:200]!r}",
           evidence={"journalctl -b -u kubelet.service": facts.journal("kubelet.service")})


@verifies("G-SHOW-8", "G-TOPO-3")
@reads(KUBELET_FROM_MASTER)
def test_kubelet_reachable_from_the_master(node, master_facts, inventory):
    answer = master_facts.http(f"kubelet_from_master {node.name}")
    expect(answer.status == 200, node.name,
           "the master reaches the kubelet over the private network",
           expected=f"HTTP 200 from http://{node.private_ip}:{inventory.guide.kubelet_port}/healthz",
           found=f"HTTP {answer.status}" if answer.answered else "no answer",
           evidence={"from the master": master_facts.section(f"kubelet_from_master {node.name}")})


@verifies("G-UNIT-7", "G-SHOW-8")
@reads(KUBELET_PUBLIC)
def test_kubelet_is_reachable_only_on_the_private_address(node, facts, master_facts):
    """From every socket of the kubelet's processes: any on the public address (or on all
    addresses) is a finding."""
    sockets = exposure.exposed(facts, "kubelet.service", ("private", "loopback"))
    attach(f"{node.name}: listening sockets of the guide's units", exposure.table(facts))
    expect(facts.sockets_of("kubelet.service") and not sockets, node.name,
           "the kubelet listens on the private address only",
           expected=f"every socket of kubelet.service on {node.private_ip} (or loopback)",
           found=(exposure.described(sockets, node)
                  or "the kubelet has no socket"),
           evidence={"who listens where": exposure.table(facts),
                     f"from the master, HTTP to {node.public_ip}":
                         master_facts.section(f"kubelet_public {node.name}")})
