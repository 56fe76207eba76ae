"""Everything the checks need from a node, gathered in one SSH round trip.

The node runs one script that prints labelled sections; the checks assert on the
parsed sections and attach the raw text of the ones they used as evidence. Every
section's command is bounded by `timeout`, so one stuck tool cannot hang the rest.
"""
from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field

from helpers import spec
from helpers.providers.base import Cluster, Node

MARK = "@@k8sconf-section "
PER_SECTION_TIMEOUT = 20  # generous: a loaded 2-core CI machine is slow, not broken
PROBE_IMAGE = "busybox"
SHOW_PROPERTIES = ("Id,LoadState,ActiveState,SubState,UnitFileState,FragmentPath,After,Wants,"
                   "Requires,Restart,RestartUSec,ExecStart,InactiveExitTimestampMonotonic,"
                   "ActiveEnterTimestampMonotonic,NRestarts")


class FactsError(Exception):
    """A node's answer could not be read; the check that needed it fails with this."""


def _curl(url: str) -> str:
    # body, then the status code on its own line ("000" when nothing answered)
    return f"curl -s -m 5 -w '\\n%{{http_code}}' {shlex.quote(url)}"


def _sections(node: Node, cluster: Cluster, guide: dict) -> dict[str, str]:
    units = " ".join(u.name for u in spec.UNITS) + " etcd.service"
    etcd = guide["etcd_endpoint"]
    api = f"http://{guide['apiserver_address']}:{guide['apiserver_port']}"
    port = guide["apiserver_port"]
    kubelet = guide["kubelet_port"]
    sections = {
        "boot_id": "cat /proc/sys/kernel/random/boot_id",
        "environment": f"cat {spec.NODE_ENVIRONMENT}",
        "unit_files": f"cd {spec.UNIT_DIR} && for u in {units}; do [ -f $u ] && "
                      "{ echo \"### $u\"; cat $u; }; done",
        "show": f"systemctl show {units} -p {SHOW_PROPERTIES}",
        "wants": f"ls {spec.UNIT_DIR}/{spec.WANTED_BY}.wants/",
        "failed": "systemctl list-units --failed --plain --no-legend --no-pager",
        "journal": f"for u in {units}; do echo \"### $u\"; "
                   "journalctl -b -u $u -n 12 --no-pager -o short-monotonic; done",
        "subnet_env": f"cat {spec.SUBNET_ENV}",
        "ip_addr": "ip -j addr",
        "listen": "ss -Hltnp",
        "docker_version": "docker version --format '{{.Server.Version}}'",
        "docker_network": "docker network inspect bridge",
        "probe_container": f"docker run --rm {PROBE_IMAGE} sh -c "
                           "'cat /sys/class/net/eth0/mtu; ip -4 -o addr show eth0'",
        "binaries": f"cd {spec.BIN_DIR} && sha256sum *",
        "etcd_config": _curl(f"{etcd}/v2/keys{spec.NETWORK_CONFIG_KEY}"),
        "etcd_subnets": _curl(f"{etcd}/v2/keys{spec.SUBNETS_KEY}?recursive=true"),
        "etcd_health": _curl(f"{etcd}/health"),
        "etcd_members": _curl(f"{etcd}/v2/members"),
        "kubelet_health": _curl(f"http://{node.private_ip}:{kubelet}/healthz"),
        "local_api": _curl(f"{api}/healthz"),
    }
    if node.is_master:
        sections.update({
            "api_minions": _curl(f"{api}/api/v1beta1/minions"),
            "kubecfg_minions": f"{spec.BIN_DIR}/kubecfg -h {api} list minions",
            "kubecfg_version": f"{spec.BIN_DIR}/kubecfg -version",
            "api_on_public": _curl(f"http://{node.public_ip}:{port}/healthz"),
            "api_on_private": _curl(f"http://{node.private_ip}:{port}/healthz"),
        })
        for other in cluster.nodes:
            sections[f"kubelet_from_master {other.name}"] = _curl(
                f"http://{other.private_ip}:{kubelet}/healthz")
            sections[f"kubelet_public {other.name}"] = _curl(
                f"http://{other.public_ip}:{kubelet}/healthz")
    return sections


def script(node: Node, cluster: Cluster, guide: dict) -> str:
    parts = []
    for name, command in _sections(node, cluster, guide).items():
        # the newline before the rc mark ends output that has none (curl's status code);
        # SIGKILL at the deadline: a docker client forwards SIGTERM and keeps printing
        # into the next section
        parts.append(f"echo '{MARK}{name}'; timeout -s KILL {PER_SECTION_TIMEOUT} sh -c "
                     f"{shlex.quote(command)} 2>&1; printf '\\n{MARK}rc %s\\n' $?")
    return "\n".join(parts)


def as_int(text: str, default):
    """An ASCII decimal, or `default`: str.isdigit() also accepts '²', which int() refuses."""
    text = text.strip()
    return int(text) if re.fullmatch(r"[0-9]+", text) else default


def split_sections(output: str) -> tuple[dict[str, str], dict[str, int]]:
    texts, codes, name, lines = {}, {}, None, []
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
    """`systemctl show A B ...` output: {unit Id: {property: value}}."""
    units, current = {}, {}
    for line in text.splitlines() + [""]:
        if not line.strip():
            if current.get("Id"):
                units[current["Id"]] = current
            current = {}
            continue
        key, _, value = line.partition("=")
        current[key] = value
    return units


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

    def ok(self, name: str) -> bool:
        return self.rc.get(name, -1) == 0

    # -- systemd -------------------------------------------------------------------
    def units(self) -> dict[str, dict[str, str]]:
        return parse_show(self.section("show"))

    def unit(self, name: str) -> dict[str, str]:
        return self.units().get(name, {})

    def unit_file(self, name: str) -> str:
        return _subsection(self.section("unit_files"), name)

    def journal(self, name: str) -> str:
        return _subsection(self.section("journal"), name)

    def wanted_by_multi_user(self) -> set[str]:
        return set(self.section("wants").split())

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

    def addresses(self, ifname: str) -> list[str]:
        links = self.json("ip_addr")
        if not isinstance(links, list):
            raise FactsError(f"{self.node.name}: `ip -j addr` did not answer a list")
        return [f"{a.get('local')}/{a.get('prefixlen')}"
                for link in links if isinstance(link, dict) and link.get("ifname") == ifname
                for a in link.get("addr_info", []) if a.get("family") == "inet"]

    def listening(self) -> set[str]:
        sockets = set()
        for line in self.section("listen").splitlines():
            fields = line.split()
            if len(fields) >= 4:
                sockets.add(fields[3])
        return sockets

    def http(self, name: str) -> HttpAnswer:
        body, _, status = self.section(name).rpartition("\n")
        if not self.section(name):
            return HttpAnswer(0, "")
        if as_int(status, None) is None:
            body, status = self.section(name), "0"
        return HttpAnswer(int(status), body)

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


def gather(connection, node: Node, cluster: Cluster, guide: dict, timeout: float) -> NodeFacts:
    result = connection.run(script(node, cluster, guide), sudo=True, timeout=timeout)
    texts, codes = split_sections(result.stdout)
    return NodeFacts(node, texts, codes)
