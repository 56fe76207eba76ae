"""The guide's known defects (GUIDE-SPEC.md, "Known defects"), and the insecure port the
CIS Kubernetes benchmark fails. Each is a strict expected failure: an install that
fixes one turns its check into a failure that says so, so the change is seen."""
import ipaddress
import re

import pytest

from helpers import exposure, spec
from helpers.checks import CheckFailed, expect, guide_section
from helpers.node_facts import FORWARD_RULES, LISTEN, LOCAL_API
from helpers.probes import HTTP_TIMEOUT, Probe, reads
from helpers.trace import verifies

pytestmark = guide_section("Advisories (known defects of the guide)", "minor")

PAUSE_IMAGE = Probe("pause_image", f"docker image inspect {spec.PAUSE_IMAGE} --format "
                                   f"'{{{{index .Config.Labels \"{spec.PRELOAD_LABEL}\"}}}}'")
# what the v0.7 kubelet sends to start a container (unversioned, with a body), and the
# same request under Docker 1.3's API: only the version differs
DOCKER_START_REQUEST = Probe("docker_start_request", "; ".join(
    f"curl -s -m {HTTP_TIMEOUT} --unix-socket {spec.DOCKER_SOCKET} -X POST -H "
    f"'Content-Type: application/json' -d '{{\"PortBindings\": {{}}}}' "
    f"-w '\\n@@status %{{http_code}}\\n' "
    f"http://docker{prefix}/containers/k8sconf-none/start" for prefix in ("", "/v1.15")))
ADVISORY = {a.id: a for a in spec.ADVISORIES}
INSECURE_PORT_DEFAULT = "8080"


def advisory(key: str):
    a = ADVISORY[key]
    # only the check's own failure is the advisory; a broken set-up stays an error
    return pytest.mark.xfail(strict=True, raises=CheckFailed,
                             reason=f"advisory {a.id}: {a.explanation}")


def _flag(facts, unit: str, flag: str) -> str:
    argv = facts.unit(unit).get("ExecStart", "")
    found = re.search(rf"{re.escape(flag)}=(\S+)", argv)
    return found.group(1) if found else ""


@verifies("G-DEFECT-1")
@advisory("portal-net-overlaps-flannel")
@pytest.mark.role(spec.MASTER)
def test_portal_net_is_apart_from_the_flannel_network(node, facts, inventory):
    portal = _flag(facts, spec.APISERVER, "-portal_net") or str(inventory.guide.portal_net)
    network = inventory.guide.flannel_network
    overlaps = ipaddress.IPv4Network(portal, strict=False).overlaps(network)
    expect(not overlaps, node.name, "portal_net does not overlap the flannel network",
           expected=f"a range apart from {network}", found=f"-portal_net={portal}")


@verifies("G-DEFECT-2", "G-UNIT-3")
@advisory("minion-scheduler-unreachable")
@pytest.mark.role(spec.MINION)
@reads(LOCAL_API)
def test_scheduler_on_minion_reaches_the_api(node, facts):
    answer = facts.http("local_api")
    expect(answer.status == 200, node.name, "the minion's scheduler reaches the API server",
           expected=f"an API at {_flag(facts, 'scheduler.service', '-master')}",
           found="nothing answers there (the API listens on the master's loopback only)",
           evidence={"journalctl -b -u scheduler.service": facts.journal("scheduler.service")})


@verifies("G-DEFECT-3")
@advisory("insecure-api-port")
@pytest.mark.role(spec.MASTER)
@reads(LISTEN)
def test_api_server_serves_no_insecure_port(node, facts):
    """Judged from the API server's own flags, so a stopped API server (or another process
    on 8080) does not read as a fixed install; its sockets are the evidence."""
    flags = {name: _flag(facts, spec.APISERVER, name)
             for name in ("-port", "-insecure_port", "--insecure-port")}
    given = {name: value for name, value in flags.items() if value}
    # the 2014 API server serves its insecure port on 8080 unless told otherwise
    port = next(iter(given.values()), INSECURE_PORT_DEFAULT)
    pid = facts.unit(spec.APISERVER).get("ExecMainPID", "")
    sockets = [s for s, owner in facts.listening_processes().items() if pid and owner == pid]
    expect(port == "0", node.name, "no insecure (unauthenticated) API port",
           expected="--insecure-port=0 (CIS 1.2.19)",
           found=(", ".join(f"{k}={v}" for k, v in given.items())
                  or f"no port flag: the default {INSECURE_PORT_DEFAULT}")
                 + f"; the API server listens on {', '.join(sorted(sockets)) or 'nothing now'}",
           evidence={"apiserver.service ExecStart":
                         facts.unit(spec.APISERVER).get("ExecStart", ""),
                     "ss -ltnp": facts.section("listen")})


@verifies("G-DEFECT-4")
@pytest.mark.role(spec.MASTER)
def test_docker_unit_uses_current_docker_syntax(node, facts, inventory, request):
    if "docker_command" not in inventory.deviations.declared():
        request.applymarker(advisory("docker-1x-syntax"))
    argv = facts.unit("docker.service").get("ExecStart", "")
    expect(" -d " not in argv and "-s=btrfs" not in argv, node.name,
           "docker.service runs current Docker syntax",
           expected="dockerd with a storage driver that fits", found=argv)


@verifies("G-DEFECT-5")
@advisory("etcd-v2-api")
@pytest.mark.role(spec.MASTER)
def test_flannel_config_written_without_the_etcd_v2_api(node, facts):
    text = facts.unit_file(spec.FLANNEL)
    expect("etcdctl set" not in text, node.name, "flannel.service needs no etcd v2 API",
           expected="an etcd v3 write (etcdctl put)", found="etcdctl set (v2)")


@verifies("G-DEFECT-3", "G-UNIT-1")
@advisory("api-read-only-port-exposed")
@pytest.mark.role(spec.MASTER)
def test_api_server_read_only_port_is_not_exposed(node, facts):
    """From the API server's sockets: its read-only port on anything but loopback. A
    stopped API server (no socket at all) does not read as a fixed install: only
    -read_only_port=0, or sockets that keep the port on loopback, do."""
    port = exposure.read_only_port(facts)
    running = facts.sockets_of(spec.APISERVER)
    sockets = [s for s in exposure.exposed(facts, spec.APISERVER, ("loopback",))
               if s.port == port]
    expect(port == "0" or (running and not sockets), node.name,
           "the API server's read-only port is not exposed",
           expected=f"-read_only_port=0, or no socket of {spec.APISERVER} on port {port} "
                    "beyond loopback",
           found=exposure.described(sockets, node) if running else
                 f"the API server has no socket now; its flags leave -read_only_port={port}",
           evidence={"who listens where": exposure.table(facts)})


def _deviation_advisory(request, inventory, field: str, key: str) -> None:
    """The guide's line as written fails here: an expected failure where the inventory
    declares the deviation that works around it, a plain failure naming it where not."""
    if field in inventory.deviations.declared():
        request.applymarker(advisory(key))


@verifies("G-UNIT-5", "G-INST-3")
@reads(FORWARD_RULES)
def test_guide_docker_forwards_flannel_traffic(node, facts, inventory, request):
    _deviation_advisory(request, inventory, "docker_forward_accept", "docker-forward-policy-drop")
    policy, dropped = facts.forward_policy()
    expect(policy == "ACCEPT", node.name,
           "the guide's docker.service leaves FORWARD open to flannel's traffic",
           expected="FORWARD policy ACCEPT (as Docker 1.x left it)",
           found=f"-P FORWARD {policy or '?'} ({dropped} packets dropped so far): Docker >= "
                 "1.13 sets it; flannel 0.2.0 adds no FORWARD rules",
           evidence={"iptables -S FORWARD": facts.section("forward_rules")})


def _start_answers(facts) -> list[tuple[str, str]]:
    """(status, body) of the unversioned and the v1.15 start request, in that order."""
    parts = re.split(r"@@status (\d{3})\n?", facts.section("docker_start_request"))
    # each body is followed by its status; the text after the last status is left over
    return [(code, body.strip()) for body, code in zip(parts[::2], parts[1::2], strict=False)]


@verifies("G-UNIT-7", "G-INST-3")
@reads(DOCKER_START_REQUEST)
def test_docker_accepts_the_kubelets_start_request(node, facts, inventory, request):
    """The start request the v0.7 kubelet sends (unversioned, with a HostConfig body),
    to a container that does not exist: an API that still takes the body answers 404,
    one that refuses it 400. The same request under API v1.15 is the control."""
    _deviation_advisory(request, inventory, "kubelet_docker_api", "kubelet-unversioned-docker-api")
    answers = _start_answers(facts)
    unversioned = answers[0] if answers else ("?", facts.section("docker_start_request"))
    expect(unversioned[0] == "404", node.name,
           "Docker takes the v0.7 kubelet's start request (unversioned, with a body)",
           expected="HTTP 404 No such container (the body accepted)",
           found=f"HTTP {unversioned[0]} {unversioned[1][:200]}"
                 + (f"; as API v1.15: HTTP {answers[1][0]} {answers[1][1][:100]}"
                    if len(answers) > 1 else ""),
           evidence={"POST /containers/k8sconf-none/start, then /v1.15/...":
                         facts.section("docker_start_request")})


@verifies("G-INST-4")
@reads(PAUSE_IMAGE)
def test_pause_image_is_dockers_own(node, facts, inventory, request):
    _deviation_advisory(request, inventory, "pause_image", "pause-image-preloaded")
    label = facts.section("pause_image").strip()
    expect(facts.ok("pause_image") and not label, node.name,
           f"{spec.PAUSE_IMAGE} is on the node as the kubelet pulled it",
           expected=f"{spec.PAUSE_IMAGE} present, without our {spec.PRELOAD_LABEL} label",
           found=(f"our preload ({spec.PRELOAD_LABEL}={label})" if facts.ok("pause_image")
                  else f"absent: {label[:200]}"),
           evidence={"docker image inspect": facts.section("pause_image")})

