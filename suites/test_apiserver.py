"""The API server answers on 127.0.0.1:8080 on the master, and only there: none of its
ports may be reachable on the master's public or private address."""
import pytest

from helpers import exposure, spec
from helpers.checks import expect, guide_section
from helpers.node_facts import LISTEN, LOCAL_API
from helpers.probes import Http, Probe, reads
from helpers.reporting import attach
from helpers.trace import verifies

pytestmark = [*guide_section("API server", "blocker"), pytest.mark.role(spec.MASTER)]

API_ON_PUBLIC = Probe("api_on_public", lambda at: Http(
    f"http://{at.node.public_ip}:{at.guide['apiserver_port']}/healthz"), master_only=True)
API_ON_PRIVATE = Probe("api_on_private", lambda at: Http(
    f"http://{at.node.private_ip}:{at.guide['apiserver_port']}/healthz"), master_only=True)


@verifies("G-SHOW-7", "G-UNIT-1", "G-UNIT-11")
@reads(LISTEN, LOCAL_API)
def test_api_server_answers_on_loopback(node, facts, inventory):
    answer = facts.http("local_api")
    where = f"{inventory.guide.apiserver_address}:{inventory.guide.apiserver_port}"
    expect(answer.status == 200 and answer.body.strip() == "ok", node.name,
           f"the API server answers on {where}", expected="HTTP 200 ok from /healthz",
           found=f"HTTP {answer.status} {answer.body[:200]!r}" if answer.answered else "no answer",
           evidence={"journalctl -b -u apiserver.service": facts.journal(spec.APISERVER),
                     "listening sockets": facts.section("listen")})


@verifies("G-UNIT-1", "G-SHOW-7")
@reads(API_ON_PUBLIC, API_ON_PRIVATE)
def test_api_server_is_reachable_only_on_loopback(node, facts):
    """From every socket of the API server's processes: any of its ports on the public or
    private network (or all networks) is a finding; the read-only port, which the guide's
    flags leave on the public address, is its own advisory (test_advisories)."""
    read_only = exposure.read_only_port(facts)
    sockets = [s for s in exposure.exposed(facts, spec.APISERVER, ("loopback",))
               if s.port != read_only]
    attach(f"{node.name}: listening sockets of the guide's units", exposure.table(facts))
    expect(facts.sockets_of(spec.APISERVER) and not sockets, node.name,
           "the API server listens on the master's loopback only",
           expected=f"every socket of {spec.APISERVER} on 127.0.0.0/8 (the read-only port "
                    f"{read_only} aside)",
           found=(exposure.described(sockets, node)
                  or "the API server has no socket"),
           evidence={"who listens where": exposure.table(facts),
                     "apiserver.service ExecStart": facts.unit(spec.APISERVER).get("ExecStart", ""),
                     "from the master, HTTP on its public and private address":
                         f"public: {facts.section('api_on_public')}\n"
                         f"private: {facts.section('api_on_private')}"})
