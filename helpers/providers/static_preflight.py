"""What the `static` provider asks of a host before the bootstrap: the guide's starting
point. One short script per host answers in tagged lines; this module writes the script
and reads its answer into one line per problem, naming the host and the field, with
what was expected and what was found.

The guide starts from CoreOS hosts that already run a three-member etcd cluster on their
private addresses, with /etc/environment (COREOS_PUBLIC_IPV4, COREOS_PRIVATE_IPV4) and
Docker. Its units name `etcd.service`; Flatcar calls its etcd `etcd-member.service`.
"""
from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from helpers import spec
from helpers.inventory import NodeSpec

UNITS = (spec.DOCKER, spec.ETCD, spec.FLATCAR_ETCD)
ETCD_HOST = urlsplit(spec.DEFAULTS["etcd_endpoint"]).hostname
ETCD_PORTS: tuple[int, ...] = tuple(spec.DEFAULTS["etcd_client_ports"])
ENV_KEYS = ("COREOS_PUBLIC_IPV4", "COREOS_PRIVATE_IPV4")
SCRIPT_TIMEOUT = 30   # two curls of at most 5 s each, and a few quick reads


def members_url(port: int) -> str:
    return f"http://{ETCD_HOST}:{port}/v2/members"


def script() -> str:
    """The one command a host runs: POSIX sh, no root, every line tagged."""
    env = shlex.quote(spec.NODE_ENVIRONMENT)
    return "\n".join([
        f"if [ -r {env} ]; then echo env-present; sed 's/^/env /' {env}; "
        f"elif [ -e {env} ]; then echo env-unreadable; else echo env-missing; fi",
        'echo "path docker $(command -v docker)"',
        'echo "path curl $(command -v curl)"',
        f"for u in {' '.join(UNITS)}; do systemctl show -p LoadState -p Id \"$u\" "
        "2>/dev/null | sed \"s/^/unit $u /\"; done",
        *(f'echo "etcd {port} $(curl -s -m 5 {members_url(port)} 2>/dev/null | tr -d \'\\n\')"'
          for port in ETCD_PORTS),
    ])


@dataclass
class Answer:
    """The script's output, read; `env` is None when the file is missing or unreadable."""

    env: dict[str, str] | None = None
    env_state: str = "missing"
    paths: dict[str, str] = field(default_factory=dict)
    units: dict[str, dict[str, str]] = field(default_factory=dict)
    etcd: dict[int, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> "Answer":
        answer = cls()
        for line in text.splitlines():
            tag, _, rest = line.partition(" ")
            answer._read(tag, rest)
        return answer

    def _read(self, tag: str, rest: str) -> None:
        if tag == "env-present":
            self.env = {}
        elif tag == "env" and self.env is not None:
            key, value = _assignment(rest)
            if key:
                self.env[key] = value
        elif tag in ("env-missing", "env-unreadable"):
            self.env_state = tag.removeprefix("env-")
        elif tag == "path":
            name, _, where = rest.partition(" ")
            self.paths[name] = where.strip()
        elif tag == "unit":
            unit, _, prop = rest.partition(" ")
            key, _, value = prop.partition("=")
            self.units.setdefault(unit, {})[key] = value.strip()
        elif tag == "etcd":
            port, _, body = rest.partition(" ")
            self.etcd[int(port)] = body.strip()

    def loaded(self, unit: str) -> bool:
        return self.units.get(unit, {}).get("LoadState") == "loaded"


def _assignment(line: str) -> tuple[str, str]:
    """KEY=VALUE as systemd's EnvironmentFile reads it (quotes stripped); ("", "") else."""
    line = line.strip()
    if not line or line.startswith(("#", ";")) or "=" not in line:
        return "", ""
    key, _, value = line.removeprefix("export ").partition("=")
    return key.strip(), value.strip().strip("'\"")


def problems(node: NodeSpec, answer: Answer, nodes: list[NodeSpec]) -> list[str]:
    """What this host lacks, one line each, without the host's name (the caller adds it)."""
    return [*_environment(node, answer), *_docker(answer), *_etcd_unit(answer),
            *_etcd(answer, nodes)]


def _environment(node: NodeSpec, answer: Answer) -> list[str]:
    where = spec.NODE_ENVIRONMENT
    if answer.env is None:
        found = "it unreadable" if answer.env_state == "unreadable" else "no such file"
        return [f"{where}: expected the file with {' and '.join(ENV_KEYS)}, found {found}"]
    expected = dict(zip(ENV_KEYS, (str(node.public_ip), str(node.private_ip)), strict=True))
    return [f"{where}: {key} expected {value}, found {answer.env.get(key) or 'nothing'}"
            for key, value in expected.items() if answer.env.get(key) != value]


def _docker(answer: Answer) -> list[str]:
    if answer.paths.get("docker") or answer.loaded(spec.DOCKER):
        return []
    return [f"docker: expected `docker` on PATH or a {spec.DOCKER} unit file, found neither"]


def _etcd_unit(answer: Answer) -> list[str]:
    if answer.loaded(spec.ETCD):   # the unit, or an alias of it (its Id is then the target)
        return []
    if answer.loaded(spec.FLATCAR_ETCD):
        return [f"{spec.ETCD}: expected the unit or an alias of it, found only {spec.FLATCAR_ETCD} "
                f"(Flatcar's name, which the guide's units do not name): add an alias "
                f"(ln -s /usr/lib/systemd/system/{spec.FLATCAR_ETCD} "
                f"{spec.UNIT_DIR}/{spec.ETCD}) or drop-ins that point the guide's units at "
                f"{spec.FLATCAR_ETCD}"]
    return [f"{spec.ETCD}: expected the unit or an alias of it, found neither it nor "
            f"{spec.FLATCAR_ETCD}"]


def _etcd(answer: Answer, nodes: list[NodeSpec]) -> list[str]:
    if not answer.paths.get("curl"):
        return ["etcd: not checked: expected curl on PATH (the guide's apiserver.service "
                "runs it too), found none"]
    answered = {port: body for port, body in answer.etcd.items() if body}
    for body in answered.values():
        members = _members(body)
        if members is not None:
            return _member_problems(members, nodes)
    if answered:
        port, body = next(iter(answered.items()))
        return [f"etcd: expected the v2 API at {members_url(port)}, found {body[:100]!r}"]
    return [f"etcd: expected the v2 API at {' or '.join(map(members_url, ETCD_PORTS))}, "
            "found no answer"]


def _members(body: str) -> list[dict] | None:
    try:
        members = json.loads(body).get("members")
    except (ValueError, AttributeError):
        return None
    return members if isinstance(members, list) else None


def _member_problems(members: list[dict], nodes: list[NodeSpec]) -> list[str]:
    found = []
    if len(members) != len(nodes):
        names = ", ".join(str(m.get("name") or m.get("id")) for m in members) or "none"
        found.append(f"etcd members: expected {len(nodes)} (one per inventory node), "
                     f"found {len(members)} ({names})")
    urls = [str(u) for m in members for u in m.get("clientURLs") or ()]
    hosts = {urlsplit(u).hostname for u in urls}
    missing = [str(n.private_ip) for n in nodes if str(n.private_ip) not in hosts]
    if missing:
        found.append(f"etcd client URLs: expected one on each private address, found none "
                     f"on {', '.join(missing)} (the members advertise "
                     f"{', '.join(urls) or 'none'})")
    return found
