"""One node's answers, read: `NodeFacts` and its parsers (units, sockets, addresses, the
probe container's answers, HTTP answers), and the probes those parsers read.

Each parser is marked with the probes it reads (`@reads`), so a check that calls it needs
no declaration of its own for them (helpers/probes.py). helpers/facts.py gathers the
sections; this module only reads them.
"""
from __future__ import annotations

import builtins
import json
import re
from dataclasses import dataclass, field

from helpers import spec
from helpers.probes import Http, Probe, reads
from helpers.providers.base import Node

SHOW_PROPERTIES = ("Id,LoadState,ActiveState,SubState,UnitFileState,FragmentPath,After,Wants,"
                   "Requires,Restart,RestartUSec,ExecStart,InactiveExitTimestampMonotonic,"
                   "InactiveEnterTimestampMonotonic,ActiveEnterTimestampMonotonic,NRestarts,"
                   "ExecMainPID,ExecStartPre,ExecStartPost,EnvironmentFiles,Names")


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
# Flatcar's etcd too: whether etcd.service is it, under an alias, or missing
SHOW = Probe("show", f"systemctl show {_UNITS} {spec.FLATCAR_ETCD} -p {SHOW_PROPERTIES}")
UNIT_FILES = Probe("unit_files", f"cd {spec.UNIT_DIR} && for u in {_UNITS}; do [ -f $u ] && "
                                 "{ echo \"### $u\"; cat $u; }; done")
JOURNAL = Probe("journal", f"for u in {_UNITS}; do echo \"### $u\"; "
                           "journalctl -b -u $u -n 12 --no-pager -o short-monotonic; done")
WANTS = Probe("wants", f"ls {spec.UNIT_DIR}/{spec.WANTED_BY}.wants/")
FAILED = Probe("failed", "systemctl list-units --failed --plain --no-legend --no-pager")
# systemd's own words on each exit of a unit's main process, and each restart
UNIT_EXITS = Probe("unit_exits", "journalctl -b _PID=1 -o cat --no-pager | grep -E "
                   "'[.]service: (Main process exited|Scheduled restart job)' | tail -n 40")
# a netlink dump that interfaces changed under (a pod's veth coming or going) is marked
# "Dump was interrupted and may be inconsistent": asked again, up to 5 times, for a whole one
IP_ADDR = Probe("ip_addr", "n=0; until out=$(ip -j addr 2>&1) && "
                "! printf '%s' \"$out\" | grep -q '^Dump was interrupted'; do "
                "n=$((n + 1)); [ $n -ge 5 ] && break; sleep 0.2; done; printf '%s\\n' \"$out\"")
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


def as_int(text: str, default):
    """An ASCII decimal, or `default`: str.isdigit() also accepts '²', which int() refuses."""
    text = text.strip()
    return int(text) if re.fullmatch(r"[0-9]+", text) else default


def parse_show(text: str) -> dict[str, dict[str, str]]:
    """`systemctl show A B ...` output: {unit name: {property: value}}, under its Id and
    under each alias in its Names (asked for `etcd.service`, systemd answers with the unit
    it is an alias of: Id=etcd-member.service). A property systemd prints once per entry
    (ExecStartPre=, EnvironmentFiles=) keeps every entry, one a line."""
    units: dict[str, dict[str, str]] = {}
    current: dict[str, str] = {}
    for line in text.splitlines() + [""]:
        if not line.strip():
            for name in [current.get("Id", "")] + current.get("Names", "").split():
                if name:
                    units.setdefault(name, current)
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

    @reads(SHOW)
    def names(self, name: str) -> builtins.set[str]:
        """Every name of the unit: systemd lists a dependency under the unit's Id, so a
        Requires=etcd.service shows as etcd-member.service when that is its alias."""
        return {name, *self.unit(name).get("Names", "").split()}

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
