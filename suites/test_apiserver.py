"""The API server answers on 127.0.0.1:8080 on the master, and only there: the insecure
port must not be reachable on the master's public or private address."""
import pytest

from helpers import spec
from helpers.checks import expect, guide_section

pytestmark = [*guide_section("API server", "blocker"), pytest.mark.role(spec.MASTER)]


def test_api_server_answers_on_loopback(node, facts, inventory):
    answer = facts.http("local_api")
    where = f"{inventory.guide.apiserver_address}:{inventory.guide.apiserver_port}"
    expect(answer.status == 200 and answer.body.strip() == "ok", node.name,
           f"the API server answers on {where}", expected="HTTP 200 ok from /healthz",
           found=f"HTTP {answer.status} {answer.body[:200]!r}" if answer.answered else "no answer",
           evidence={"journalctl -b -u apiserver.service": facts.journal(spec.APISERVER),
                     "listening sockets": facts.section("listen")})


@pytest.mark.parametrize("side", ["public", "private"])
def test_api_server_is_not_exposed(node, facts, side, inventory):
    answer = facts.http(f"api_on_{side}")
    address = node.public_ip if side == "public" else node.private_ip
    expect(not answer.answered, node.name,
           f"the insecure API port is not reachable on the {side} address",
           expected=f"nothing answers on {address}:{inventory.guide.apiserver_port}",
           found=f"HTTP {answer.status}",
           evidence={"listening sockets": facts.section("listen"),
                     "apiserver.service": facts.unit_file(spec.APISERVER)})
