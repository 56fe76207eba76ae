"""Flannel (GUIDE-SPEC.md, "What the guide implies"): each node leases its own subnet inside
the network stored in etcd and writes it to /run/flannel/subnet.env."""
import ipaddress
import json

from helpers import spec
from helpers.checks import expect, guide_section
from helpers.node_facts import ETCD_CONFIG, SUBNET_ENV, as_int
from helpers.probes import Http, Probe, reads
from helpers.trace import verifies

pytestmark = guide_section("Flannel network fabric", "blocker")

ETCD_SUBNETS = Probe("etcd_subnets",
                     lambda at: Http(f"{at.etcd}/v2/keys{spec.SUBNETS_KEY}?recursive=true"))


def _subnet(facts):
    value = facts.env_file("subnet_env").get("FLANNEL_SUBNET", "")
    try:
        return ipaddress.IPv4Interface(value)
    except ValueError:
        return None


def _leases(facts) -> dict:
    """{subnet: PublicIP} from etcd's v2 listing of the subnets directory."""
    answer = facts.http("etcd_subnets")
    try:
        nodes = json.loads(answer.body)["node"].get("nodes", [])
        return {n["key"].rsplit("/", 1)[1]: json.loads(n["value"]).get("PublicIP")
                for n in nodes}
    except (ValueError, KeyError, TypeError, AttributeError):
        return {}


def _network_config(facts) -> dict:
    try:
        return json.loads(json.loads(facts.http("etcd_config").body)["node"]["value"])
    except (ValueError, KeyError, TypeError):
        return {}


@verifies("G-SHOW-5", "G-UNIT-12")
@reads(SUBNET_ENV)
def test_subnet_env_exists_and_parses(node, facts):
    pairs = facts.env_file("subnet_env")
    expect(facts.ok("subnet_env") and _subnet(facts) is not None and "FLANNEL_MTU" in pairs,
           node.name, f"{spec.SUBNET_ENV} holds FLANNEL_SUBNET and FLANNEL_MTU",
           expected="FLANNEL_SUBNET=<a.b.c.d/len>, FLANNEL_MTU=<int>",
           found=facts.section("subnet_env") or "(no file)",
           evidence={"subnet.env": facts.section("subnet_env"),
                     "journalctl -b -u flannel.service": facts.journal(spec.FLANNEL)})


@verifies("G-SHOW-5", "G-INST-2")
@reads(ETCD_CONFIG, SUBNET_ENV)
def test_subnet_lies_in_the_network_stored_in_etcd(node, facts, inventory):
    config = _network_config(facts)
    subnet = _subnet(facts)
    try:
        network = ipaddress.IPv4Network(config.get("Network", ""))
    except ValueError:
        network = None
    length = as_int(str(config.get("SubnetLen", inventory.guide.flannel_subnet_len)), -1)
    ok = bool(subnet and network and subnet.network.subnet_of(network)
              and subnet.network.prefixlen == length)
    expect(ok, node.name, "FLANNEL_SUBNET lies inside the flannel network",
           expected=f"a /{length} inside {network or '(no config in etcd)'}",
           found=str(subnet) if subnet else "no FLANNEL_SUBNET",
           evidence={"subnet.env": facts.section("subnet_env"),
                     "etcd network config": facts.section("etcd_config")})


@verifies("G-SHOW-5", "G-INST-2")
@reads(SUBNET_ENV)
def test_subnet_is_unique_across_nodes(node, facts, cluster_facts):
    mine = _subnet(facts)
    others = cluster_facts.readable()
    shared = [other for other, f in others.items()
              if other != node.name and mine and _subnet(f)
              and _subnet(f).network == mine.network]
    expect(mine is not None and not shared, node.name, "no other node holds this subnet",
           expected=f"{mine.network if mine else 'a subnet'} held by {node.name} only",
           found=f"also on {', '.join(shared)}" if shared else "no subnet",
           evidence={f"{n} subnet.env": f.section("subnet_env") for n, f in others.items()})


@verifies("G-UNIT-4", "G-TOPO-4")
@reads(ETCD_SUBNETS, SUBNET_ENV)
def test_etcd_lease_names_the_private_ip(node, facts):
    subnet = _subnet(facts)
    key = f"{subnet.network.network_address}-{subnet.network.prefixlen}" if subnet else "?"
    leases = _leases(facts)
    expect(leases.get(key) == node.private_ip, node.name,
           f"the etcd lease {spec.SUBNETS_KEY}/{key} names the node's private IP",
           expected=f"PublicIP={node.private_ip}",
           found=f"PublicIP={leases.get(key)}" if key in leases else "no such lease",
           evidence={"etcd subnets": facts.section("etcd_subnets")})


@verifies("G-SHOW-5")
@reads(SUBNET_ENV)
def test_mtu_is_a_sane_integer(node, facts):
    raw = facts.env_file("subnet_env").get("FLANNEL_MTU", "")
    mtu = as_int(raw, None)
    expect(mtu is not None and 576 <= mtu <= 9000, node.name, "FLANNEL_MTU is sane",
           expected="an integer in 576..9000", found=raw or "missing",
           evidence={"subnet.env": facts.section("subnet_env")})
