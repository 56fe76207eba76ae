"""Install step 8: on the master, `kubecfg list minions` lists every node (the guide's
table: `Minion identifier`, a dashed line, one id per line), and so does the API."""
import json
import re
import time

import pytest

from helpers import spec
from helpers.bootstrap.artifacts import shipped_version
from helpers.checks import expect, guide_section
from helpers.probes import Http, Probe, reads
from helpers.trace import verifies

pytestmark = [*guide_section("Minion registration", "blocker"), pytest.mark.role(spec.MASTER)]

API_MINIONS = Probe("api_minions", lambda at: Http(f"{at.api}/api/v1beta1/minions"),
                    master_only=True)
KUBECFG_MINIONS = Probe("kubecfg_minions", lambda at: f"{spec.BIN_DIR}/kubecfg -h {at.api} "
                        "list minions", master_only=True)
KUBECFG_VERSION = Probe("kubecfg_version", f"{spec.BIN_DIR}/kubecfg -version", master_only=True)

DEADLINE = 30   # minions register within seconds of the controller manager starting


def table_column(text: str, header: str) -> list[str] | None:
    """One column of a kubecfg table, read by where its header starts: a header line whose
    columns are separated by two or more spaces, then a line of dashes under each header
    (v0.7 prints `Minion identifier   Labels`; the guide shows the first column only)."""
    lines = [line.rstrip() for line in text.splitlines()]
    if len(lines) < 2 or not lines[0].startswith(header):
        return None
    dashes = re.findall(r"-+", lines[1])
    if not lines[1].startswith("-") or len(dashes) != len(re.split(r"\s{2,}", lines[0])):
        return None
    width = next((m.start() for m in re.finditer(r"\s{2,}\S", lines[0])), None)
    return sorted(line[:width].strip() for line in lines[2:] if line.strip())


def _kubecfg_ids(facts) -> list[str] | None:
    return table_column(facts.section("kubecfg_minions"), "Minion identifier")


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
    while read(facts) != wanted and cluster_facts.live and time.monotonic() < deadline:
        time.sleep(3)
        cluster_facts.refresh(node.name, (KUBECFG_MINIONS, API_MINIONS))
        facts = cluster_facts.of(node.name)
    return facts


@verifies("G-SHOW-9", "G-STEP-12", "G-UNIT-2", "G-TOPO-1", "G-LOST-5")
@reads(KUBECFG_MINIONS)
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


@verifies("G-SHOW-9", "G-UNIT-2", "G-TOPO-1")
@reads(API_MINIONS)
def test_api_lists_every_node(node, cluster, cluster_facts, registration_deadline):
    wanted = sorted(n.private_ip for n in cluster.nodes)
    facts = _eventually(_api_ids, wanted, node, cluster_facts, registration_deadline)
    expect(_api_ids(facts) == wanted, node.name,
           "the API's minion list holds exactly the private IPs",
           expected=", ".join(wanted), found=str(_api_ids(facts)),
           evidence={"GET /api/v1beta1/minions": facts.section("api_minions")})


@verifies("G-SHOW-10", "G-INST-1")
@reads(KUBECFG_VERSION)
def test_kubecfg_version_answers(node, facts, run_state):
    """Exactly what the kubecfg that was shipped says of itself on the build host (or, when
    this run shipped nothing, the guide's v0.7.0)."""
    wanted = shipped_version("kubecfg", run_state)
    found = facts.section("kubecfg_version").strip()
    expect(facts.ok("kubecfg_version") and found == wanted, node.name,
           "`kubecfg -version` reports the shipped version (the guide's version check)",
           expected=wanted, found=found or "no output")
