"""Beyond the guide: the cluster runs work.

Through the API server, with the guide's own `kubecfg`, one pod per node (the master is
a minion too). All of them ask for the same hostPort, so the scheduler's PodFitsPorts rule
must place each on a different minion. Once every pod is Running, each pod's container
pings every other node's pod across flannel. The answers become facts sections, so the
checks (suites/test_workload.py) only read them:

- master `pods`: the API's answer for each pod; `kubecfg_pods`: `kubecfg list pods`;
  `pods_created`: what `kubecfg create` answered;
- every node `pod_pings`: from its pod's network namespace, as facts.ping_script.

The pods are deleted afterwards (`remove`), so a kept cluster does not keep them.
"""
from __future__ import annotations

import json
import secrets
import shlex
from concurrent.futures import ThreadPoolExecutor

from helpers import spec
from helpers.facts import PROBE_IMAGE, ping_script
from helpers.probes import Probe
from helpers.providers.base import Cluster
from helpers.waiting import poll

POD_PREFIX = "k8sconf-pod-"
CONTAINER = "ping"
HOST_PORT = 28207          # shared by every pod: one pod per minion
CONTAINER_PORT = 7
RUN_SECONDS = 600          # the pod's own bound: an interrupted run's pods end by themselves
DEADLINE = 45              # the kubelets sync every 10 s; pods run within ~15 s here


def deadline_for(timeout: float) -> float:
    """DEADLINE, or three quarters of ssh.command_timeout when that is raised (a slow
    platform: under an emulated CPU a pod's containers start in about a minute)."""
    return max(DEADLINE, 0.75 * timeout)
POLL = 3
# what run() hands over as facts sections (the checks declare these, as any probe)
PODS = Probe("pods", master_only=True, rereadable=False)
KUBECFG_PODS = Probe("kubecfg_pods", master_only=True, rereadable=False)
PODS_CREATED = Probe("pods_created", master_only=True, rereadable=False)
POD_PINGS = Probe("pod_pings", rereadable=False)


def pod_names(cluster: Cluster, token: str) -> list[str]:
    """Names of this run's own: the v0.7 API server caches a pod's status by its name, so a
    pod that reused an earlier run's name would read as Running from that earlier pod."""
    return [f"{POD_PREFIX}{token}-{i}" for i in range(1, len(cluster.nodes) + 1)]


def manifest(name: str) -> dict:
    """A v1beta1 pod, as the v0.7 `kubecfg -c FILE create pods` takes it."""
    return {"id": name, "kind": "Pod", "apiVersion": "v1beta1",
            "labels": {"k8sconf": "workload"},
            "desiredState": {"manifest": {
                "version": "v1beta1", "id": name,
                "containers": [{"name": CONTAINER, "image": PROBE_IMAGE,
                                "command": ["sleep", str(RUN_SECONDS)],
                                "ports": [{"containerPort": CONTAINER_PORT,
                                           "hostPort": HOST_PORT}]}]}}}


def _api(guide: dict) -> str:
    return f"http://{guide['apiserver_address']}:{guide['apiserver_port']}"


def _kubecfg(guide: dict) -> str:
    return f"{spec.BIN_DIR}/kubecfg -h {_api(guide)}"


def _delete_ours(guide: dict) -> str:
    """Delete every pod of ours, an earlier run's too: their names come from the API
    server's registry in etcd, since the API's own pod list fails (500) while a pod is
    bound to a minion it cannot reach. A pod left behind keeps the shared hostPort, and
    the scheduler then finds no fit for the new ones."""
    registry = f"{guide['etcd_endpoint']}/v2/keys/registry/pods/default"
    return (f"for p in $(curl -s -m 5 {registry} | grep -o '/registry/pods/default/"
            f"{POD_PREFIX}[a-z0-9-]*' | sed 's|.*/||'); do "
            f"{_kubecfg(guide)} delete pods/$p >/dev/null 2>&1; done")


def create_command(names: list[str], guide: dict) -> str:
    lines = [_delete_ours(guide)]
    for name in names:
        body = shlex.quote(json.dumps(manifest(name)))
        lines.append(f"printf '%s' {body} > /tmp/{name}.json && "
                     f"{_kubecfg(guide)} -c /tmp/{name}.json create pods 2>&1 | tail -n 3; "
                     f"rm -f /tmp/{name}.json")
    return "\n".join(lines)


POD_MARK = "@@pod "


def list_command(names: list[str], guide: dict) -> str:
    """Each pod on its own: v0.7 answers 500 for the whole list (and for `kubecfg list
    pods`) as soon as one pod is bound to a minion it cannot reach, which would fail every
    node's check for one node's fault."""
    gets = "; ".join(f"echo '{POD_MARK}{name}'; curl -s -m 5 '{_api(guide)}/api/v1beta1/pods/"
                     f"{name}'; echo" for name in names)
    return f"{gets}; echo '@@kubecfg'; {_kubecfg(guide)} list pods 2>&1"


def parse_pods(text: str) -> dict[str, dict]:
    """{pod id: {status, host, podIP}} from the API's answers, one per pod; a pod whose
    answer is no pod (an error Status, nothing) is left out."""
    found = {}
    for block in text.split(POD_MARK)[1:]:
        name, _, body = block.partition("\n")
        try:
            pod = json.loads(body)
            state = pod.get("currentState") or {}
            if pod.get("id") == name.strip():
                found[pod["id"]] = {key: state.get(key) or "" for key in ("status", "host", "podIP")}
        except (ValueError, AttributeError, KeyError, TypeError):
            continue
    return found


def unanswered(text: str) -> dict[str, str]:
    """{pod id: the API's answer} for the pods it did not answer with a pod."""
    answers = {}
    for block in text.split(POD_MARK)[1:]:
        name, _, body = block.partition("\n")
        answers[name.strip()] = body.strip()
    return {name: body for name, body in answers.items() if name not in parse_pods(text)}


def all_running(pods: dict[str, dict], names: list[str]) -> bool:
    return all(pods.get(n, {}).get("status") == "Running" and pods[n]["podIP"] for n in names)


def container_pid_command(pod: str, wait: int = 20) -> str:
    """The pid of the pod's container on this node (its namespace is the pod's), waiting up
    to `wait` seconds for the kubelet to have started it."""
    find = f"docker ps -q --filter 'name=k8s_{CONTAINER}\\.[0-9a-f]*_{pod}\\.' | head -n 1"
    return (f"for i in $(seq {wait}); do c=$({find}); [ -n \"$c\" ] && break; sleep 1; done; "
            f"docker inspect -f '{{{{.State.Pid}}}}' \"$c\"")


def run(cluster: Cluster, connections, guide: dict, timeout: float,
        deadline: float = DEADLINE) -> dict[str, dict[str, str]]:
    """Create the pods, wait for them, ping between them; {node: {section: text}}."""
    master = cluster.master
    names = pod_names(cluster, secrets.token_hex(2))
    found: dict[str, dict[str, str]] = {n.name: {} for n in cluster.nodes}
    created = connections[master.name].run(create_command(names, guide), sudo=True,
                                           timeout=timeout, label="kubecfg create pods")
    found[master.name]["pods_created"] = created.stdout + created.stderr
    api, table = "", ""
    pods: dict[str, dict] = {}

    def running() -> bool:
        nonlocal api, table, pods
        answer = connections[master.name].run(list_command(names, guide), sudo=True,
                                              timeout=timeout, label="the pods").stdout
        api, _, table = answer.partition("@@kubecfg\n")
        pods = parse_pods(api)
        return all_running(pods, names)
    poll(running, timeout=deadline, interval=POLL)   # what it saw last is reported either way
    found[master.name].update(pods=api, kubecfg_pods=table)
    by_host = {info["host"].rstrip("/"): (name, info["podIP"]) for name, info in pods.items()
               if info["status"] == "Running" and info["podIP"]}
    mine = {n.name: by_host[n.private_ip] for n in cluster.nodes if n.private_ip in by_host}

    def pings(node):
        pod, _ = mine[node.name]
        others = {other: ip for other, (_, ip) in mine.items() if other != node.name}
        command = (f"pid=$({container_pid_command(pod)}) && "
                   + ping_script("$pid", others))
        try:
            result = connections[node.name].run(command, sudo=True, timeout=timeout,
                                                label="the pod pings")
            found[node.name]["pod_pings"] = result.stdout + result.stderr
        except Exception as exc:  # noqa: BLE001 - the node's own check says so
            found[node.name]["pod_pings"] = str(exc)

    with ThreadPoolExecutor(max_workers=max(1, len(mine))) as pool:
        list(pool.map(pings, [n for n in cluster.nodes if n.name in mine]))
    return found


def remove(cluster: Cluster, connections, guide: dict, timeout: float) -> None:
    connections[cluster.master.name].run(_delete_ours(guide), sudo=True, timeout=timeout,
                                         label="kubecfg delete pods")
