"""Everything the checks need from the nodes, gathered once per run in three rounds.

What is gathered is what the selected checks declared (helpers/probes.py: a `Plan`): the
suites declare their own probes; this module declares the ones its parsers read, and
marks each parser with them (`@reads`).

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

import builtins
import json
import re
import secrets
import shlex
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from helpers import probes, spec
from helpers.paths import ROOT
from helpers.probes import HTTP_TIMEOUT, Http, Plan, Probe, reads
from helpers.providers.base import Cluster, Node

SUITES = ROOT / "suites"

MARK = "@@k8sconf-section "
PER_SECTION_TIMEOUT = 20  # generous: a loaded 2-core CI machine is slow, not broken
PROBE_IMAGE = "busybox"
# --rm and a bounded sleep: a probe that an interrupted run could not remove goes by itself
PROBE_LIFETIME = 300
PING_WAIT = 2      # seconds a ping waits for its answer; the pings run concurrently
SHOW_PROPERTIES = ("Id,LoadState,ActiveState,SubState,UnitFileState,FragmentPath,After,Wants,"
                   "Requires,Restart,RestartUSec,ExecStart,InactiveExitTimestampMonotonic,"
                   "InactiveEnterTimestampMonotonic,ActiveEnterTimestampMonotonic,NRestarts,"
                   "ExecMainPID,ExecStartPre,ExecStartPost,EnvironmentFiles")


# the master's OS, kernel and etcd for the report's environment (Docker's: docker_version)
VERSIONS_COMMAND = (
    "(. /etc/os-release; echo \"os=$PRETTY_NAME\"); echo \"kernel=$(uname -r)\"; "
    "echo \"etcd=$( { etcd --version || etcd2 --version || etcd -version; } 2>/dev/null "
    "| head -n 1 | sed 's/^etcd[^0-9]*//')\""
)


class FactsError(Exception):
    """A node's answer could not be read; the check that needed it fails with this."""


# -- the probes this module's parsers read (the suites declare the rest beside their checks)
_UNITS = " ".join(u.name for u in spec.UNITS) + " etcd.service"
SHOW = Probe("show", f"systemctl show {_UNITS} -p {SHOW_PROPERTIES}")
UNIT_FILES = Probe("unit_files", f"cd {spec.UNIT_DIR} && for u in {_UNITS}; do [ -f $u ] && "
                                 "{ echo \"### $u\"; cat $u; }; done")
JOURNAL = Probe("journal", f"for u in {_UNITS}; do echo \"### $u\"; "
                           "journalctl -b -u $u -n 12 --no-pager -o short-monotonic; done")
WANTS = Probe("wants", f"ls {spec.UNIT_DIR}/{spec.WANTED_BY}.wants/")
FAILED = Probe("failed", "systemctl list-units --failed --plain --no-legend --no-pager")
# systemd's own words on each exit of a unit's main process, and each restart
UNIT_EXITS = Probe("unit_exits", "journalctl -b _PID=1 -o cat --no-pager | grep -E "
                   "'[.]service: (Main process exited|Scheduled restart job)' | tail -n 40")
IP_ADDR = Probe("ip_addr", "ip -j addr")
LISTEN = Probe("listen", "ss -Hltunp")
PROCESS_UNITS = Probe("process_units", "ps -e -o pid=,unit=")
# read again alone, the counter that opens the pings' window would close it on itself and
# turn every drop into a transient failure
FORWARD_RULES = Probe("forward_rules", "iptables -w -S FORWARD; iptables -w -L FORWARD -v -n "
                      "-x | head -n 1", rereadable=False)
BINARIES = Probe("binaries", f"cd {spec.BIN_DIR} && sha256sum *")
# `<name> <first line of its -version>` per binary present: what runs on this node
BINARY_VERSIONS = Probe(
    "binary_versions", f"cd {spec.BIN_DIR} && for b in {' '.join(spec.VERSIONED_BINARIES)}; "
    "do [ -x $b ] && echo \"$b $(timeout 5 ./$b -version 2>&1 | head -n 1)\"; done; true")
# the data plane's: gather_cluster starts the container and fills in the rest itself
PROBE_CONTAINER = Probe("probe_container", rereadable=False)
FORWARD_AFTER = Probe("forward_after", rereadable=False)
PINGS = Probe("pings", rereadable=False, needs=(PROBE_CONTAINER, FORWARD_RULES, FORWARD_AFTER))
# several suites read these
SUBNET_ENV = Probe("subnet_env", f"cat {spec.SUBNET_ENV}")
ETCD_CONFIG = Probe("etcd_config",
                    lambda at: Http(f"{at.etcd}/v2/keys{spec.NETWORK_CONFIG_KEY}"))
LOCAL_API = Probe("local_api", lambda at: Http(f"{at.api}/healthz"))
# the report's environment: gathered on every run
VERSIONS = Probe("versions", VERSIONS_COMMAND)
DOCKER_VERSION = Probe("docker_version", "docker version --format '{{.Server.Version}}'")
ALWAYS = (VERSIONS, DOCKER_VERSION)


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


def _http_block(fetches: dict[str, Http]) -> str:
    """One curl for every HTTP section (a curl process costs a node more CPU than the
    request), all requests at once where curl has --parallel (7.66+), so a node whose
    services do not answer costs one HTTP_TIMEOUT, not one per request. Each answer is
    printed as its own section, in the shape Http describes."""
    names = list(fetches)
    args = " ".join(f"-o $d/{i} {shlex.quote(fetches[name].url)}" for i, name in enumerate(names))
    lines = ["d=$(mktemp -d)",
             "P=$(curl --parallel --parallel-immediate -V >/dev/null 2>&1 && "
             "echo '--parallel --parallel-immediate')",
             f"timeout -s KILL {PER_SECTION_TIMEOUT} curl $P -s -m {HTTP_TIMEOUT} "
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


def _section(name: str, command: str) -> str:
    # the newline before the rc mark ends output that has none (curl's status code);
    # SIGKILL at the deadline: a docker client forwards SIGTERM and keeps printing
    # into the next section
    return (f"echo '{MARK}{name}'; timeout -s KILL {PER_SECTION_TIMEOUT} sh -c "
            f"{shlex.quote(command)} 2>&1; printf '\\n{MARK}rc %s\\n' $?")


def _in_background(sections: dict[str, str], foreground: list[str]) -> list[str]:
    """Sections that mostly wait (a container start) run while the others do; their
    output is printed, as sections, once the others are done."""
    start = ["b=$(mktemp -d)"] + [
        f"(timeout -s KILL {PER_SECTION_TIMEOUT} sh -c {shlex.quote(command)} >$b/{i} 2>&1; "
        f"echo $? >$b/{i}.rc) &" for i, command in enumerate(sections.values())]
    collect = ["wait"] + [
        f"echo '{MARK}{name}'; cat $b/{i}; printf '\\n{MARK}rc %s\\n' \"$(cat $b/{i}.rc)\""
        for i, name in enumerate(sections)] + ["rm -rf $b"]
    return start + foreground + collect


def script(node: Node, cluster: Cluster, guide: dict, plan: Plan, probe: str | None = None,
           only: tuple[str, ...] = ()) -> str:
    """The facts script for the plan's probes; `probe`: the data plane's container to
    start; `only`: just these sections (a re-read of a few answers)."""
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
            parts.append(_section(name, command))
    if fetches:
        parts.append(_http_block(fetches))
    if background and (not only or PROBE_CONTAINER in only):
        parts = _in_background(background, parts)
    return "\n".join(parts)


def as_int(text: str, default):
    """An ASCII decimal, or `default`: str.isdigit() also accepts '²', which int() refuses."""
    text = text.strip()
    return int(text) if re.fullmatch(r"[0-9]+", text) else default


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


def parse_show(text: str) -> dict[str, dict[str, str]]:
    """`systemctl show A B ...` output: {unit Id: {property: value}}. A property systemd
    prints once per entry (ExecStartPre=, EnvironmentFiles=) keeps every entry, one a line."""
    units: dict[str, dict[str, str]] = {}
    current: dict[str, str] = {}
    for line in text.splitlines() + [""]:
        if not line.strip():
            if current.get("Id"):
                units[current["Id"]] = current
            current = {}
            continue
        key, _, value = line.partition("=")
        current[key] = f"{current[key]}\n{value}" if key in current else value
    return units


def start_order_violations(role: str, units: dict[str, dict[str, str]]) -> list[str]:
    """The guide's After= ordering, judged from the monotonic timestamps since boot: a
    unit violates it when it began starting while a dependency was down, i.e. after the
    dependency last went inactive and before it next became active. A dependency that an
    operator restarts later on its own went inactive after the unit had started: no
    violation."""
    def at(props: dict, name: str) -> int:
        return as_int(props.get(f"{name}TimestampMonotonic", ""), 0)

    found = []
    for unit in spec.units_for(role):
        started = at(units.get(unit.name, {}), "InactiveExit")
        for dep in unit.after:
            theirs = units.get(dep, {})
            down, up = at(theirs, "InactiveEnter"), at(theirs, "ActiveEnter")
            if started and down < started < up:
                found.append(f"{unit.short} started at {started / 1e6:.2f}s while {dep} was "
                             f"not active (active only at {up / 1e6:.2f}s)")
    return found


@dataclass(frozen=True)
class Socket:
    proto: str          # tcp or udp
    local: str          # address:port as ss prints it (`*:2379`, `[::]:22`)
    pids: tuple[str, ...]
    programs: tuple[str, ...]
    units: tuple[str, ...]

    @property
    def address(self) -> str:
        return self.local.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> str:
        return self.local.rpartition(":")[2]

    def describe(self) -> str:
        who = ",".join(self.programs) or "?"
        return f"{self.proto} {self.local} ({who}, {','.join(self.units) or '?'})"


@dataclass
class HttpAnswer:
    status: int
    body: str

    @property
    def answered(self) -> bool:
        return self.status != 0


@dataclass
class NodeFacts:
    node: Node
    text: dict[str, str]
    rc: dict[str, int] = field(default_factory=dict)

    def section(self, name: str) -> str:
        return self.text.get(name, "")

    def set(self, name: str, text: str, rc: int) -> None:
        self.text[name], self.rc[name] = text, rc

    def ok(self, name: str) -> bool:
        return self.rc.get(name, -1) == 0

    # -- systemd -------------------------------------------------------------------
    @reads(SHOW)
    def units(self) -> dict[str, dict[str, str]]:
        return parse_show(self.section("show"))

    @reads(SHOW)
    def unit(self, name: str) -> dict[str, str]:
        return self.units().get(name, {})

    @reads(UNIT_EXITS)
    def last_exit(self, name: str) -> str:
        """systemd's last "Main process exited, code=..., status=..." for the unit since
        boot ("" when its main process never exited)."""
        exits = [line.partition(": ")[2] for line in self.section("unit_exits").splitlines()
                 if line.startswith(f"{name}: Main process exited")]
        return exits[-1] if exits else ""

    @reads(UNIT_FILES)
    def unit_file(self, name: str) -> str:
        return _subsection(self.section("unit_files"), name)

    @reads(JOURNAL)
    def journal(self, name: str) -> str:
        return _subsection(self.section("journal"), name)

    # builtins.set: inside this class, `set` is NodeFacts.set
    @reads(WANTS)
    def wanted_by_multi_user(self) -> builtins.set[str]:
        return set(self.section("wants").split())

    @reads(FAILED)
    def failed_units(self) -> list[str]:
        return [line.split()[0] for line in self.section("failed").splitlines() if line.split()]

    # -- files and network -------------------------------------------------------------
    def env_file(self, name: str) -> dict[str, str]:
        pairs = {}
        for line in self.section(name).splitlines():
            line = line.strip()
            if line and not line.startswith("#") and "=" in line:
                key, _, value = line.partition("=")
                pairs[key.strip()] = value.strip().strip('"')
        return pairs

    def json(self, name: str):
        try:
            return json.loads(self.section(name))
        except ValueError:
            raise FactsError(f"{self.node.name}: `{name}` did not answer JSON: "
                             f"{self.section(name)[:200]!r}") from None

    @reads(IP_ADDR)
    def addresses(self, ifname: str) -> list[str]:
        links = self.json("ip_addr")
        if not isinstance(links, list):
            raise FactsError(f"{self.node.name}: `ip -j addr` did not answer a list")
        return [f"{a.get('local')}/{a.get('prefixlen')}"
                for link in links if isinstance(link, dict) and link.get("ifname") == ifname
                for a in link.get("addr_info", []) if a.get("family") == "inet"]

    @reads(LISTEN, PROCESS_UNITS)
    def sockets(self) -> list["Socket"]:
        """Every listening TCP and bound UDP socket (`ss -Hltunp`), with its processes'
        pids and, from `ps -o unit`, the systemd unit each pid runs in."""
        units = {}
        for line in self.section("process_units").splitlines():
            fields = line.split()
            if len(fields) == 2 and as_int(fields[0], None) is not None:
                units[fields[0]] = fields[1]
        found = []
        for line in self.section("listen").splitlines():
            fields = line.split()
            if len(fields) < 6 or fields[0] not in ("tcp", "udp"):
                continue
            pids = tuple(dict.fromkeys(re.findall(r"pid=(\d+)", line)))
            names = tuple(dict.fromkeys(re.findall(r'\("([^"]+)",pid=', line)))
            found.append(Socket(fields[0], fields[4], pids, names,
                                tuple(dict.fromkeys(units.get(p, "?") for p in pids))))
        return found

    @reads(IP_ADDR)
    def brief_addresses(self) -> str:
        """`ip -br addr` from `ip -j addr`: a line per interface, where the JSON is a
        kilobyte per interface."""
        try:
            links = json.loads(self.section("ip_addr"))
        except ValueError:
            return self.section("ip_addr")
        rows = []
        for link in links if isinstance(links, list) else []:
            if isinstance(link, dict):
                addrs = [f"{a.get('local')}/{a.get('prefixlen')}" for a in link.get("addr_info", [])
                         if a.get("family") == "inet"]
                rows.append(f"{link.get('ifname', '?'):14} {link.get('operstate', '?'):8} "
                            f"mtu {link.get('mtu', '?'):<6} {' '.join(addrs)}")
        return "\n".join(rows)

    @reads(LISTEN, PROCESS_UNITS)
    def listening(self) -> builtins.set[str]:
        """TCP addresses:ports something listens on."""
        return {s.local for s in self.sockets() if s.proto == "tcp"}

    @reads(LISTEN, PROCESS_UNITS)
    def listening_processes(self) -> dict[str, str]:
        """{listening TCP address:port: pid of its process}."""
        return {s.local: (s.pids[0] if s.pids else "") for s in self.sockets()
                if s.proto == "tcp"}

    @reads(LISTEN, PROCESS_UNITS)
    def sockets_of(self, unit: str) -> list["Socket"]:
        return [s for s in self.sockets() if unit in s.units]

    @reads(FORWARD_RULES)
    def forward_policy(self, text: str | None = None) -> tuple[str, int]:
        """(policy, packets it dropped) from `iptables -L FORWARD -v` 's first line."""
        found = re.search(r"Chain FORWARD \(policy (\w+) (\d+) packets",
                          self.section("forward_rules") if text is None else text)
        return (found.group(1), int(found.group(2))) if found else ("", -1)

    @reads(PROBE_CONTAINER)
    def probe_mtu(self) -> str:
        found = re.search(r"^\d+: eth0\S*: .*?\bmtu (\d+)", self.section("probe_container"), re.M)
        return found.group(1) if found and self.ok("probe_container") else ""

    @reads(PROBE_CONTAINER)
    def probe_macs(self) -> tuple[str, str]:
        """(MAC of the eth0 read in the netns, MAC Docker gave the container)."""
        text = self.section("probe_container")
        link = re.search(r"link/ether ([0-9a-f:]{17})", text)
        given = re.search(r"^mac ([0-9a-f:]{17})$", text, re.M)
        return (link.group(1) if link else "", given.group(1) if given else "")

    def http(self, name: str) -> HttpAnswer:
        body, _, status = self.section(name).rpartition("\n")
        if not self.section(name):
            return HttpAnswer(0, "")
        if as_int(status, None) is None:
            body, status = self.section(name), "0"
        return HttpAnswer(int(status), body)

    @reads(PROBE_CONTAINER)
    def probe_address(self) -> str:
        """The probe container's IPv4 (`ip -4 -o addr show eth0`: "... inet A.B.C.D/N")."""
        found = re.search(r"\binet (\d+\.\d+\.\d+\.\d+)/", self.section("probe_container"))
        return found.group(1) if found and self.ok("probe_container") else ""

    @reads(PROBE_CONTAINER)
    def probe_pid(self) -> str:
        found = re.search(r"^pid (\d+)$", self.section("probe_container"), re.M)
        return found.group(1) if found and self.ok("probe_container") else ""

    def dropped_during_pings(self, section: str = "pings") -> tuple[str, int]:
        """(FORWARD policy, packets it dropped while the pings ran), -1 if unread. For the
        probe containers' pings the window runs from the facts round to the round after
        every node's pings (see gather_cluster); a section's own before/after lines
        otherwise (the pods' pings)."""
        if section == "pings" and self.section("forward_after"):
            (policy, first), (_, last) = (self.forward_policy(),
                                          self.forward_policy(self.section("forward_after")))
            return (policy, last - first) if first >= 0 and last >= 0 else (policy, -1)
        text = self.section(section)
        before = re.search(r"^forward-before (.*)$", text, re.M)
        after = re.search(r"^forward-after (.*)$", text, re.M)
        if not (before and after):
            return "", -1
        (policy, first), (_, last) = (self.forward_policy(before.group(1)),
                                      self.forward_policy(after.group(1)))
        return (policy, last - first) if first >= 0 and last >= 0 else (policy, -1)

    def pings(self, section: str = "pings") -> dict[str, bool]:
        """{other node: reached} from the probe container's (or the pod's) pings."""
        reached = {}
        for line in self.section(section).splitlines():
            fields = line.split()
            if len(fields) == 3 and fields[2] in ("ok", "FAILED"):
                reached[fields[0]] = fields[2] == "ok"
        return reached

    @reads(BINARY_VERSIONS)
    def binary_versions(self) -> dict[str, str]:
        """{binary: the first line its -version printed on the node}."""
        found = {}
        for line in self.section("binary_versions").splitlines():
            name, _, version = line.partition(" ")
            if name in spec.VERSIONED_BINARIES:
                found[name] = version.strip()
        return found

    @reads(BINARIES)
    def checksums(self) -> dict[str, str]:
        sums = {}
        for line in self.section("binaries").splitlines():
            fields = line.split()
            if len(fields) == 2 and len(fields[0]) == 64:
                sums[fields[1].lstrip("*")] = fields[0]
        return sums


def _subsection(text: str, name: str) -> str:
    lines, inside = [], False
    for line in text.splitlines():
        if line.startswith("### "):
            inside = line[4:].strip() == name
            continue
        if inside:
            lines.append(line)
    return "\n".join(lines)


# -- gathering ---------------------------------------------------------------------------
Gathered = dict[str, "NodeFacts | FactsError"]


def gather(connection, node: Node, cluster: Cluster, guide: dict, timeout: float, plan: Plan,
           probe: str | None = None, only: tuple[str, ...] = ()) -> NodeFacts:
    """One node's facts in one round trip; an unreadable node raises FactsError."""
    from helpers.ssh import SSHError
    try:
        result = connection.run(script(node, cluster, guide, plan, probe, only), sudo=True,
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


def systemd_entries(value: str) -> list[str]:
    """One `systemctl show` property's entries, as units.as_systemd_shows writes them:
    `{ path=... ; argv[]=WORDS ; ignore_errors=yes ; ... }` -> `WORDS (ignore_errors=yes)`;
    EnvironmentFiles lines are already in that form."""
    entries = []
    for line in filter(None, value.splitlines()):
        if "argv[]=" in line:
            words, _, rest = line.partition("argv[]=")[2].partition(" ; ignore_errors=")
            line = f"{words} (ignore_errors={rest.partition(' ')[0]})"
        entries.append(line)
    return entries
