"""The starting point the guide takes from the clustering guide before it: each node's
/etc/environment names its own addresses, which the flannel and kubelet units read."""
from helpers import spec
from helpers.checks import expect, guide_section
from helpers.probes import Probe, reads
from helpers.trace import verifies

pytestmark = guide_section("Starting point", "blocker")

ENVIRONMENT = Probe("environment", f"cat {spec.NODE_ENVIRONMENT}")


@verifies("G-TOPO-4")
@reads(ENVIRONMENT)
def test_etc_environment_names_the_nodes_own_addresses(node, facts):
    """COREOS_PRIVATE_IPV4 is what flannel's -iface and the kubelet's -address become;
    COREOS_PUBLIC_IPV4 is CoreOS's own pair to it. A file that could not be read fails,
    it does not read as empty values."""
    pairs = facts.env_file("environment")
    wanted = {"COREOS_PUBLIC_IPV4": node.public_ip, "COREOS_PRIVATE_IPV4": node.private_ip}
    wrong = {k: pairs.get(k, "(absent)") for k, v in wanted.items() if pairs.get(k) != v}
    expect(facts.ok("environment") and not wrong, node.name,
           f"{spec.NODE_ENVIRONMENT} names this node's own addresses",
           expected=", ".join(f"{k}={v}" for k, v in wanted.items()),
           found=(", ".join(f"{k}={v}" for k, v in wrong.items()) if facts.ok("environment")
                  else f"{spec.NODE_ENVIRONMENT} could not be read: "
                       f"{facts.section('environment')[:200]}"),
           evidence={spec.NODE_ENVIRONMENT: facts.section("environment")})
