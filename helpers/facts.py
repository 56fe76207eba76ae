"""Everything the checks need from the nodes, gathered once per run in three rounds.

What is gathered is what the selected checks declared (helpers/probes.py: a `Plan`): the
suites declare their own probes, helpers/node_facts.py the ones its parsers read. This
module writes the script, runs the rounds and hands the answers to the xdist workers.

1. facts: each node runs one script that prints labelled sections (and starts the
   data plane's probe container); every section is bounded by `timeout`, so one stuck
   tool cannot hang the rest;
2. pings: from each probe container's network namespace, every other node's probe;
3. the probe containers are ended (Docker removes them: --rm).
Rounds 2 and 3 run only when a selected check reads the pings.

Each round runs on every node at once: a round takes the slowest node's time, as long
as the nodes have the CPU (a container start is most of a node's cost). The checks
assert on the parsed sections and attach the raw text of the ones they used as
evidence; the controller writes the result to a JSON file that xdist workers read, so
`-n N` costs the nodes no more than a serial run.
"""
from __future__ import annotations

import json
import secrets
import shlex
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from helpers import probes
from helpers.node_facts import (
    DOCKER_VERSION,
    PROBE_CONTAINER,
    VERSIONS,
    FactsError,
    NodeFacts,
    as_int,
)
from helpers.paths import ROOT
from helpers.probes import HTTP_TIMEOUT, Http, Plan
from helpers.providers.base import Cluster, Node

SUITES = ROOT / "suites"

MARK = "@@k8sconf-section "
PER_SECTION_TIMEOUT = 20  # generous: a loaded 2-core CI machine is slow, not broken
PROBE_IMAGE = "busybox"
# --rm and a bounded sleep: a probe that an interrupted run could not remove goes by itself
PROBE_LIFETIME = 300
PING_WAIT = 2      # seconds a ping waits for its answer; the pings run concurrently
ALWAYS = (VERSIONS, DOCKER_VERSION)   # the report's environment: gathered on every run


def full_plan() -> Plan:
    """Every probe of every suite: what a run of the whole suite gathers."""
    modules = probes.load(SUITES.glob("test_*.py"))
    return probes.plan({module: () for module in modules}, ALWAYS)


def section_commands(node: Node, cluster: Cluster, guide: dict,
                     plan: Plan | None = None) -> dict[str, str]:
    """Each section's command as the facts script runs it (the data plane's aside), for
    the plan's probes (every suite's by default)."""
    return (plan or full_plan()).sections(node, cluster, guide)


def rereadable(node: Node, cluster: Cluster, guide: dict, plan: Plan) -> tuple[str, ...]:
    """The sections one round trip can read again: all but those the data plane's rounds
    fill in (see FORWARD_RULES)."""
    return tuple(name for name in plan.sections(node, cluster, guide)
                 if (probe := plan.probe_of(name)) is not None and probe.rereadable)


def section_bound(timeout: float) -> int:
    """Each section's bound: PER_SECTION_TIMEOUT, or a third of the whole script's bound
    (ssh.command_timeout) when that is longer: a platform slow enough to need a raised
    command timeout (an emulated CPU starts a container in tens of seconds) needs longer
    sections too."""
    return max(PER_SECTION_TIMEOUT, int(timeout // 3))


def _http_block(fetches: dict[str, Http], bound: int) -> str:
    """One curl for every HTTP section (a curl process costs a node more CPU than the
    request), all requests at once where curl has --parallel (7.66+), so a node whose
    services do not answer costs one HTTP_TIMEOUT, not one per request. Each answer is
    printed as its own section, in the shape Http describes."""
    names = list(fetches)
    args = " ".join(f"-o $d/{i} {shlex.quote(fetches[name].url)}" for i, name in enumerate(names))
    lines = ["d=$(mktemp -d)",
             "P=$(curl --parallel --parallel-immediate -V >/dev/null 2>&1 && "
             "echo '--parallel --parallel-immediate')",
             f"timeout -s KILL {bound} curl $P -s -m {HTTP_TIMEOUT} "
             f"-w '%{{http_code}} %{{filename_effective}}\\n' {args} >$d/codes 2>/dev/null"]
    for i, name in enumerate(names):
        lines.append(f"echo '{MARK}{name}'; c=$(sed -n \"s|^\\([0-9]*\\) $d/{i}\\$|\\1|p\" "
                     f"$d/codes); cat $d/{i} 2>/dev/null; printf '\\n%s\\n' \"${{c:-000}}\"; "
                     f"[ \"${{c:-000}}\" != 000 ]; printf '{MARK}rc %s\\n' $?")
    lines.append("rm -rf $d")
    return "\n".join(lines)


def _probe_start(probe: str) -> str:
    """Start the long-lived probe container; print its eth0 link and address as netlink
    shows them inside its network namespace (no second container, no `docker exec`), its
    pid, and the MAC address Docker gave it. /sys/class/net would show the node's own
    eth0 there: sysfs follows the namespace it was mounted in, not the caller's. The MAC
    is what proves the link read is the container's."""
    return (f"docker run -d --rm --name {probe} {PROBE_IMAGE} sleep {PROBE_LIFETIME} "
            f">/dev/null && set -- $(docker inspect -f '{{{{.State.Pid}}}} "
            f"{{{{.NetworkSettings.MacAddress}}}}' {probe}) && "
            "nsenter -n -t $1 ip -o link show eth0 && nsenter -n -t $1 ip -4 -o addr show eth0 "
            "&& echo \"pid $1\" && echo \"mac $2\"")


def _section(name: str, command: str, bound: int) -> str:
    # the newline before the rc mark ends output that has none (curl's status code);
    # SIGKILL at the deadline: a docker client forwards SIGTERM and keeps printing
    # into the next section
    return (f"echo '{MARK}{name}'; timeout -s KILL {bound} sh -c "
            f"{shlex.quote(command)} 2>&1; printf '\\n{MARK}rc %s\\n' $?")


def _in_background(sections: dict[str, str], foreground: list[str], bound: int) -> list[str]:
    """Sections that mostly wait (a container start) run while the others do; their
    output is printed, as sections, once the others are done."""
    start = ["b=$(mktemp -d)"] + [
        f"(timeout -s KILL {bound} sh -c {shlex.quote(command)} >$b/{i} 2>&1; "
        f"echo $? >$b/{i}.rc) &" for i, command in enumerate(sections.values())]
    collect = ["wait"] + [
        f"echo '{MARK}{name}'; cat $b/{i}; printf '\\n{MARK}rc %s\\n' \"$(cat $b/{i}.rc)\""
        for i, name in enumerate(sections)] + ["rm -rf $b"]
    return start + foreground + collect


def script(node: Node, cluster: Cluster, guide: dict, plan: Plan, probe: str | None = None,
           only: tuple[str, ...] = (), bound: int = PER_SECTION_TIMEOUT) -> str:
    """The facts script for the plan's probes; `probe`: the data plane's container to
    start; `only`: just these sections (a re-read of a few answers); `bound`: seconds
    each section may take."""
    parts, fetches, background = [], {}, {}
    sections = plan.sections(node, cluster, guide)
    if probe and PROBE_CONTAINER in plan:
        background[str(PROBE_CONTAINER)] = _probe_start(probe)
    for name, command in sections.items():
        if only and name not in only:
            continue
        if isinstance(command, Http):
            fetches[name] = command
        else:
            parts.append(_section(name, command, bound))
    if fetches:
        parts.append(_http_block(fetches, bound))
    if background and (not only or PROBE_CONTAINER in only):
        parts = _in_background(background, parts, bound)
    return "\n".join(parts)


def split_sections(output: str) -> tuple[dict[str, str], dict[str, int]]:
    texts: dict[str, str] = {}
    codes: dict[str, int] = {}
    name: str | None = None
    lines: list[str] = []
    for line in output.splitlines():
        if line.startswith(MARK):
            label = line[len(MARK):]
            if label.startswith("rc "):
                if name is not None:
                    if lines and lines[-1] == "":
                        lines.pop()  # the newline the script added before the mark
                    texts[name] = "\n".join(lines)
                    codes[name] = as_int(label[3:], -1)
                name, lines = None, []
            else:
                name, lines = label, []
        elif name is not None:
            lines.append(line)
    return texts, codes


# -- gathering ---------------------------------------------------------------------------
Gathered = dict[str, "NodeFacts | FactsError"]


def gather(connection, node: Node, cluster: Cluster, guide: dict, timeout: float, plan: Plan,
           probe: str | None = None, only: tuple[str, ...] = ()) -> NodeFacts:
    """One node's facts in one round trip; an unreadable node raises FactsError."""
    from helpers.ssh import SSHError
    try:
        result = connection.run(script(node, cluster, guide, plan, probe, only,
                                       section_bound(timeout)), sudo=True,
                                timeout=timeout, label="the facts script")
    except SSHError as exc:
        raise FactsError(str(exc)) from None
    texts, codes = split_sections(result.stdout)
    if not texts:   # sudo refused, no shell...: nothing the checks could read
        raise FactsError(f"{node.name}: the facts script answered no section "
                         f"(exit {result.rc}): {(result.stderr or result.stdout)[:200]!r}")
    return NodeFacts(node, texts, codes)


FORWARD_COUNTER = "iptables -w -L FORWARD -v -n -x 2>/dev/null | head -n 1"


def ping_script(pid: str, targets: dict[str, str]) -> str:
    """From the probe container's network namespace, ping every target at once; one line
    each: `<node> <ip> ok|FAILED`. The node's own ping in the container's namespace
    takes the container's path (its eth0, docker0, the flannel routes) and costs the node
    far less than a `docker exec`."""
    pings = " ".join(f"(ping -c 1 -W {PING_WAIT} {ip} >/dev/null 2>&1 && echo {name} {ip} ok "
                     f"|| echo {name} {ip} FAILED) &" for name, ip in targets.items())
    # the node's FORWARD chain, before and after: what its policy dropped meanwhile
    return (f"echo \"forward-before $({FORWARD_COUNTER})\"; "
            f"nsenter -n -t {pid} sh -c {shlex.quote(pings + ' wait')}; "
            f"echo \"forward-after $({FORWARD_COUNTER})\"")


def gather_cluster(cluster: Cluster, connections, guide: dict, timeout: float, plan: Plan,
                   only: tuple[str, ...] = ()) -> Gathered:
    """Every node's facts, its pings to every other node's container, in three rounds
    (facts + probe start, pings, probe removal), each on all nodes at once; the last two
    only when the plan has the data plane's probe container. `only`: just these sections
    in the first round (the benchmark's baseline reads the rest itself)."""
    probe = f"k8sconf-probe-{secrets.token_hex(3)}" if PROBE_CONTAINER in plan else None
    nodes = {n.name: n for n in cluster.nodes}

    def each(action, names):
        with ThreadPoolExecutor(max_workers=max(1, len(names))) as pool:
            return dict(zip(names, pool.map(action, names), strict=True))

    def facts_of(name):
        try:
            return gather(connections[name], nodes[name], cluster, guide, timeout, plan, probe,
                          only)
        except FactsError as exc:
            return exc
        except Exception as exc:  # noqa: BLE001 - one unreadable node fails its checks only
            return FactsError(f"{name}: {type(exc).__name__}: {exc}")

    found: Gathered = each(facts_of, list(nodes))
    readable = {n: f for n, f in found.items() if isinstance(f, NodeFacts)}
    containers = {n: f for n, f in readable.items() if f.probe_address() and f.probe_pid()}
    targets = {n: f.probe_address() for n, f in containers.items()}

    def pings(name):
        others = {o: ip for o, ip in targets.items() if o != name}
        try:
            result = connections[name].run(ping_script(containers[name].probe_pid(), others),
                                           sudo=True, timeout=timeout, label="the pings")
            containers[name].set("pings", result.stdout + result.stderr, result.rc)
        except Exception as exc:  # noqa: BLE001 - the node's own data-plane check says so
            containers[name].set("pings", str(exc), -1)

    def remove(name):
        # its init, by pid; --rm has Docker remove the container (and dockerd does that
        # work while the checks run, instead of before). The FORWARD counter read here,
        # after every node's pings, closes the window opened by the facts round: the
        # pings a node's policy drops are the other nodes', sent while it ran its own.
        try:
            result = connections[name].run(
                f"(kill -KILL {containers[name].probe_pid()} || docker rm -f {probe}) "
                f">/dev/null 2>&1; {FORWARD_COUNTER}", sudo=True, timeout=timeout)
            containers[name].set("forward_after", result.stdout, result.rc)
        except Exception:  # noqa: BLE001 - its bounded sleep ends it anyway
            pass

    each(pings, list(containers))
    each(remove, list(containers))
    return found


def save(found: Gathered, path: Path) -> None:
    data = {name: {"error": str(f)} if isinstance(f, Exception) else {"text": f.text, "rc": f.rc}
            for name, f in found.items()}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    tmp.replace(path)


def load(path: Path, cluster: Cluster) -> Gathered:
    data = json.loads(path.read_text())
    return {node.name: (FactsError(data[node.name]["error"]) if "error" in data[node.name]
                        else NodeFacts(node, data[node.name]["text"], data[node.name]["rc"]))
            for node in cluster.nodes if node.name in data}
