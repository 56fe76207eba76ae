"""etcd, the cluster the guide starts from: the unit the guide's units name, healthy with
every member, holding the flannel network config that flannel.service writes."""
import json
from urllib.parse import urlsplit

from helpers import spec
from helpers.checks import expect, guide_section
from helpers.node_facts import ETCD_CONFIG, SHOW
from helpers.probes import Http, Probe, reads
from helpers.trace import verifies

pytestmark = guide_section("etcd", "critical")

ETCD_HEALTH = Probe("etcd_health", lambda at: Http(f"{at.etcd}/health"))
ETCD_MEMBERS = Probe("etcd_members", lambda at: Http(f"{at.etcd}/v2/members"))
ETCD_SELF = Probe("etcd_self", lambda at: Http(f"{at.etcd}/v2/stats/self"))


def _etcd_found(units: dict) -> str:
    etcd, member = units.get(spec.ETCD, {}), units.get(spec.FLATCAR_ETCD, {})
    if etcd.get("LoadState") == "loaded":
        alias = f" (an alias of {etcd['Id']})" if etcd.get("Id") != spec.ETCD else ""
        return f"{spec.ETCD}{alias}: ActiveState={etcd.get('ActiveState', '?')}"
    if member.get("LoadState") == "loaded":
        return (f"no {spec.ETCD} (LoadState={etcd.get('LoadState', '?')}); etcd runs as "
                f"{spec.FLATCAR_ETCD} (Flatcar's name, ActiveState="
                f"{member.get('ActiveState', '?')}), which no unit of the guide names: "
                f"flannel's Requires={spec.ETCD} cannot be met. Make {spec.ETCD} an alias "
                f"of it, or point the guide's units at it")
    return f"no {spec.ETCD} (LoadState={etcd.get('LoadState', '?')}) and no {spec.FLATCAR_ETCD}"


@verifies("G-TOPO-3", "G-UNIT-4", "G-UNIT-10")
@reads(SHOW)
def test_etcd_runs_as_the_unit_the_guides_units_name(node, facts):
    """flannel Requires= and every unit orders itself After= `etcd.service`, which CoreOS
    shipped in 2014. Flatcar names its etcd etcd-member.service: without an alias, the
    guide's units wait for a unit that does not exist."""
    units = facts.units()
    etcd = units.get(spec.ETCD, {})
    expect(etcd.get("LoadState") == "loaded" and etcd.get("ActiveState") == "active",
           node.name, f"etcd runs as {spec.ETCD}, the unit the guide's units name",
           expected=f"{spec.ETCD} (or an alias of that name) loaded and active",
           found=_etcd_found(units),
           evidence={f"systemctl show {spec.ETCD} {spec.FLATCAR_ETCD}": "\n\n".join(
               "\n".join(f"{k}={v}" for k, v in units.get(name, {}).items()
                         if k in ("Id", "Names", "LoadState", "ActiveState", "FragmentPath"))
               for name in (spec.ETCD, spec.FLATCAR_ETCD))})


@verifies("G-SHOW-4", "G-UNIT-4")
@reads(ETCD_CONFIG)
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
@reads(ETCD_HEALTH, ETCD_MEMBERS)
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


@verifies("G-TOPO-3")
@reads(ETCD_MEMBERS, ETCD_SELF)
def test_etcd_member_talks_over_the_private_address(node, facts):
    """This node's etcd member (found by the id /v2/stats/self reports) advertises its
    peer and client URLs on the node's private IPv4, as the guide's starting point has it."""
    try:
        own = json.loads(facts.http("etcd_self").body)["id"]
        member = next(m for m in json.loads(facts.http("etcd_members").body)["members"]
                      if m["id"] == own)
        urls = {kind: list(member[kind]) for kind in ("peerURLs", "clientURLs")}
    except (ValueError, KeyError, TypeError, StopIteration):
        urls = {}
    elsewhere = [f"{kind} {url}" for kind, listed in urls.items() for url in listed
                 if urlsplit(url).hostname != node.private_ip]
    empty = [kind for kind, listed in urls.items() if not listed]
    expect(bool(urls) and not elsewhere and not empty, node.name,
           "etcd's member URLs are on the private address",
           expected=f"peerURLs and clientURLs on {node.private_ip}",
           found=("; ".join(elsewhere + [f"no {kind}" for kind in empty]) if urls else
                  "no member of this node's etcd in /v2/members"),
           evidence={"etcd /v2/stats/self": facts.section("etcd_self"),
                     "etcd /v2/members": facts.section("etcd_members")})
