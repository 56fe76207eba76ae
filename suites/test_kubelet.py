"""Every kubelet listens on <private IPv4>:10250, healthy, reachable from the master over
the private network, and not on the public address."""
from helpers.checks import expect, guide_section

pytestmark = guide_section("Kubelet", "blocker")


def test_kubelet_listens_on_the_private_ip(node, facts, inventory):
    wanted = f"{node.private_ip}:{inventory.guide.kubelet_port}"
    expect(wanted in facts.listening(), node.name, f"the kubelet listens on {wanted}",
           expected=wanted, found=" ".join(sorted(facts.listening())) or "nothing listens",
           evidence={"listening sockets": facts.section("listen"),
                     "journalctl -b -u kubelet.service": facts.journal("kubelet.service")})


def test_kubelet_is_healthy(node, facts):
    answer = facts.http("kubelet_health")
    expect(answer.status == 200, node.name, "the kubelet's /healthz is ok",
           expected="HTTP 200", found=f"HTTP {answer.status} {answer.body[:200]!r}",
           evidence={"journalctl -b -u kubelet.service": facts.journal("kubelet.service")})


def test_kubelet_reachable_from_the_master(node, master_facts, inventory):
    answer = master_facts.http(f"kubelet_from_master {node.name}")
    expect(answer.status == 200, node.name,
           "the master reaches the kubelet over the private network",
           expected=f"HTTP 200 from http://{node.private_ip}:{inventory.guide.kubelet_port}/healthz",
           found=f"HTTP {answer.status}" if answer.answered else "no answer",
           evidence={"from the master": master_facts.section(f"kubelet_from_master {node.name}")})


def test_kubelet_not_bound_to_the_public_address(node, facts, master_facts, inventory):
    port = inventory.guide.kubelet_port
    bound = {s for s in facts.listening()
             if s in (f"{node.public_ip}:{port}", f"0.0.0.0:{port}", f"*:{port}", f"[::]:{port}")}
    answer = master_facts.http(f"kubelet_public {node.name}")
    expect(not bound and not answer.answered, node.name,
           "the kubelet is not reachable on the public address",
           expected=f"nothing on {node.public_ip}:{port}",
           found=(", ".join(sorted(bound)) or "") + (f" (HTTP {answer.status} from the master)"
                                                      if answer.answered else ""),
           evidence={"listening sockets": facts.section("listen")})
