"""Beyond the guide's text: the cluster runs work. A pod created through the API server with
the guide's `kubecfg` reaches Running on every minion, the master included (the guide
makes it a minion too), and pods on different nodes reach each other over flannel.

The controller runs the pods before the facts are gathered (helpers/workload.py); these
checks read what it saw."""
import pytest

from helpers import workload
from helpers.checks import dropped_there, expect, guide_section
from helpers.probes import Probe, reads
from helpers.trace import verifies

pytestmark = guide_section("Workloads", "blocker")

DOCKER_PS = Probe("docker_ps", "docker ps -a --format '{{.ID}} {{.Image}} {{.Names}} {{.Status}}'")
# glog's error lines (E1203 ...): the kubelet's last words on why a pod did not run (about
# pods and containers: not its start-up's garbage collection before Docker)
KUBELET_ERRORS = Probe("kubelet_errors", "journalctl -b -u kubelet.service --no-pager -o cat | "
                       "grep -E '^E[0-9]{4} ' | grep -iE 'pod|container' | tail -n 4")


@pytest.fixture
def pods(run_state, master_facts) -> dict[str, dict]:
    if run_state.get("workload") != "ran":
        pytest.skip(f"workload {run_state.get('workload', 'not run')} "
                    "(never a release verdict)")
    return workload.parse_pods(master_facts.section("pods"))


def _unanswered(master_facts) -> str:
    """The pods the API server did not answer for (one of them may be this node's)."""
    missing = workload.unanswered(master_facts.section("pods"))
    return "; ".join(f"the API's answer for {name}: {' '.join(body.split())[:160] or 'none'}"
                     for name, body in missing.items())


def _evidence(facts, master_facts) -> dict:
    return {"kubecfg list pods": master_facts.section("kubecfg_pods"),
            "kubecfg create pods": master_facts.section("pods_created"),
            "the kubelet's errors (journalctl -b -u kubelet)": facts.section("kubelet_errors"),
            "docker ps -a": facts.section("docker_ps")}


@verifies("G-TOPO-2", "G-INST-4")
@reads(DOCKER_PS, KUBELET_ERRORS, workload.PODS, workload.KUBECFG_PODS, workload.PODS_CREATED)
def test_a_pod_runs_on_the_node(node, facts, master_facts, pods):
    mine = {name: info for name, info in pods.items()
            if info["host"].rstrip("/") == node.private_ip}
    running = [name for name, info in mine.items() if info["status"] == "Running"]
    why = facts.section("kubelet_errors").strip().splitlines()
    unanswered = _unanswered(master_facts)
    expect(bool(running), node.name, "a pod created through the API runs on the node",
           expected=f"a pod bound to {node.private_ip} Running (within {workload.DEADLINE} s, "
                    "or 3/4 of a raised ssh.command_timeout)",
           found=(", ".join(f"{n} {i['status'] or 'no status'}" for n, i in mine.items())
                  or f"no pod bound to {node.private_ip}"
                  + (f" ({unanswered})" if unanswered else ""))
                 + (f"; the kubelet's last error: {why[-1][:300]}" if why else ""),
           evidence=_evidence(facts, master_facts))


@verifies("G-TOPO-2", "G-INST-2")
@reads(DOCKER_PS, KUBELET_ERRORS, workload.POD_PINGS, workload.KUBECFG_PODS, workload.PODS_CREATED)
def test_pod_reaches_the_pods_on_other_nodes(node, facts, master_facts, cluster_facts, pods):
    running = {info["host"].rstrip("/"): info["podIP"] for info in pods.values()
               if info["status"] == "Running"}
    others = {ip: pod for ip, pod in running.items() if ip != node.private_ip}
    reached = facts.pings("pod_pings")
    unreachable = [name for name, ok in reached.items() if not ok]
    if node.private_ip not in running:
        found = "no pod of its own runs (see test_a_pod_runs_on_the_node)"
    elif unreachable:
        found = "unreachable: " + ", ".join(
            name + dropped_there(cluster_facts, name, "pod_pings") for name in unreachable)
    else:
        found = f"{len(reached)} pinged"
    expect(node.private_ip in running and not unreachable and len(reached) == len(others),
           node.name, "its pod reaches the pods on every other node (flannel's UDP backend)",
           expected=f"{len(others)} pods reached: " + ", ".join(sorted(others.values())),
           found=found,
           evidence={"pod pings": facts.section("pod_pings"), **_evidence(facts, master_facts)})
