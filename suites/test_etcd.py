"""etcd, the cluster the guide starts from: healthy with every member, holding the
flannel network config that flannel.service writes."""
import json

from helpers import spec
from helpers.checks import expect, guide_section
from helpers.trace import verifies

pytestmark = guide_section("etcd", "critical")


@verifies("G-SHOW-4", "G-UNIT-4")
def test_network_config_equals_the_spec(node, facts, inventory):
    try:
        stored = json.loads(json.loads(facts.http("etcd_config").body)["node"]["value"])
    except (ValueError, KeyError, TypeError):
        stored = None
    wanted = {"Network": str(inventory.guide.flannel_network)}
    expect(stored == wanted, node.name, f"etcd's {spec.NETWORK_CONFIG_KEY} is the guide's",
           expected=json.dumps(wanted), found=json.dumps(stored) if stored else "missing",
           evidence={"etcd answer": facts.section("etcd_config")})


@verifies("G-TOPO-3")
def test_etcd_is_healthy_with_every_member(node, facts, cluster):
    health = facts.http("etcd_health")
    try:
        members = json.loads(facts.http("etcd_members").body)["members"]
    except (ValueError, KeyError, TypeError):
        members = []
    healthy = health.status == 200 and '"health":"true"' in health.body.replace(" ", "")
    expect(healthy and len(members) == len(cluster.nodes), node.name,
           "etcd is healthy with every member",
           expected=f"health true, {len(cluster.nodes)} members",
           found=f"health HTTP {health.status} {health.body[:100]!r}, {len(members)} members",
           evidence={"etcd /health": facts.section("etcd_health"),
                     "etcd /v2/members": facts.section("etcd_members"),
                     "journalctl -b -u etcd.service": facts.journal("etcd.service")})
