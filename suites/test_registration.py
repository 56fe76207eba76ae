"""Install step 8: on the master, `kubecfg list minions` lists every node (the guide's
table: `Minion identifier`, a dashed line, one id per line), and so does the API."""
import json
import time

import pytest

from helpers import spec
from helpers.checks import expect, guide_section

pytestmark = [*guide_section("Minion registration", "blocker"), pytest.mark.role(spec.MASTER)]
DEADLINE = 60


def _kubecfg_ids(facts) -> list[str] | None:
    lines = [line.strip() for line in facts.section("kubecfg_minions").splitlines()]
    if len(lines) < 2 or lines[0] != "Minion identifier" or set(lines[1]) != {"-"}:
        return None
    return sorted(line for line in lines[2:] if line)


def _api_ids(facts) -> list[str] | None:
    try:
        return sorted(item["id"] for item in json.loads(facts.http("api_minions").body)["items"])
    except (ValueError, KeyError, TypeError):
        return None


@pytest.fixture(scope="session")
def registration_deadline() -> float:
    """One deadline for the run's registration checks, from the first that looks: a second
    check of an unregistered cluster does not wait another DEADLINE."""
    return time.monotonic() + DEADLINE


def _eventually(read, wanted, node, cluster_facts, deadline):
    """Registration is asynchronous: re-read the master until it matches or time is up."""
    facts = cluster_facts.of(node.name)
    while read(facts) != wanted and time.monotonic() < deadline:
        time.sleep(3)
        cluster_facts.refresh(node.name, ("kubecfg_minions", "api_minions"))
        facts = cluster_facts.of(node.name)
    return facts


def test_kubecfg_lists_every_node(node, cluster, cluster_facts, registration_deadline):
    wanted = sorted(n.private_ip for n in cluster.nodes)
    facts = _eventually(_kubecfg_ids, wanted, node, cluster_facts, registration_deadline)
    expect(_kubecfg_ids(facts) == wanted, node.name,
           f"`kubecfg list minions` lists exactly the private IPs (within {DEADLINE} s)",
           expected="Minion identifier / ---------- / " + ", ".join(wanted),
           found=facts.section("kubecfg_minions") or "no output",
           evidence={"kubecfg list minions": facts.section("kubecfg_minions"),
                     "journalctl -b -u controller-manager.service":
                         facts.journal("controller-manager.service")})


def test_api_lists_every_node(node, cluster, cluster_facts, registration_deadline):
    wanted = sorted(n.private_ip for n in cluster.nodes)
    facts = _eventually(_api_ids, wanted, node, cluster_facts, registration_deadline)
    expect(_api_ids(facts) == wanted, node.name,
           "the API's minion list holds exactly the private IPs",
           expected=", ".join(wanted), found=str(_api_ids(facts)),
           evidence={"GET /api/v1beta1/minions": facts.section("api_minions")})


def test_kubecfg_version_answers(node, facts):
    expect(facts.ok("kubecfg_version") and "Kubernetes" in facts.section("kubecfg_version"),
           node.name, "`kubecfg -version` answers (the guide's version check)",
           expected="Kubernetes v...", found=facts.section("kubecfg_version") or "no output")
