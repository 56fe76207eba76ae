"""Static hosts that answer the preflight script with canned output, with no SSH at all.

In-process tests monkeypatch `helpers.providers.static.open_connection` with
`fake_open(answers)`. A pytest subprocess loads this module as a plugin
(`-p tests.support.static_hosts`) with $K8SCONF_FAKE_HOSTS naming a JSON file of
{node name: {"stdout": text} or {"error": SSH error message}}; a node missing from it
is an error too, so nothing here ever reaches a real address.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from helpers import ssh
from helpers.inventory import NodeSpec
from helpers.providers import static, static_preflight
from helpers.providers.base import Node

FAKE_HOSTS_ENV = "K8SCONF_FAKE_HOSTS"
READY_UNITS = {"docker.service": "loaded", "etcd.service": "loaded",
               "etcd-member.service": "not-found"}


def members(nodes: list[NodeSpec]) -> list[dict]:
    return [{"id": f"{i:016x}", "name": n.name, "peerURLs": [f"http://{n.private_ip}:2380"],
             "clientURLs": [f"http://{n.private_ip}:2379", f"http://{n.private_ip}:4001"]}
            for i, n in enumerate(nodes, start=1)]


def environment(node: NodeSpec) -> str:
    return f"COREOS_PUBLIC_IPV4={node.public_ip}\nCOREOS_PRIVATE_IPV4={node.private_ip}\n"


def answer(node: NodeSpec, nodes: list[NodeSpec], *, env: str | None = "",
           docker: str = "/usr/bin/docker", curl: str = "/usr/bin/curl",
           units: dict[str, str] | None = None, etcd: dict[int, str] | None = None) -> str:
    """What the script prints on a host where the guide can start; each keyword changes one
    item: env=None (no /etc/environment), docker="" (not on PATH), units={unit: LoadState
    or (LoadState, Id)}, etcd={port: body}."""
    body = json.dumps({"members": members(nodes)})
    lines = _env_lines(node, env)
    lines += [f"path docker {docker}", f"path curl {curl}"]
    for unit, state in {**READY_UNITS, **(units or {})}.items():
        load, unit_id = state if isinstance(state, tuple) else (state, unit)
        lines += [f"unit {unit} Id={unit_id}", f"unit {unit} LoadState={load}"]
    ports = {4001: body, 2379: body} if etcd is None else etcd
    lines += [f"etcd {port} {ports.get(port, '')}" for port in static_preflight.ETCD_PORTS]
    return "\n".join(lines) + "\n"


def _env_lines(node: NodeSpec, env: str | None) -> list[str]:
    if env is None:
        return ["env-missing"]
    text = environment(node) if env == "" else env
    return ["env-present", *(f"env {line}" for line in text.splitlines())]


class FakeConnection:
    """Answers the preflight script, and nothing else; remembers every call."""

    def __init__(self, node: Node, stdout: str, rc: int = 0):
        self.node, self.stdout, self.rc = node, stdout, rc
        self.calls: list[tuple[str, float | None]] = []
        self.closed = False

    def run(self, command: str, *, timeout: float | None = None, **_) -> ssh.Result:
        self.calls.append((command, timeout))
        assert timeout is not None, "every remote call has a timeout"
        assert command == static_preflight.script(), command
        return ssh.Result(self.node.name, command, self.rc, self.stdout, "", 0.01)

    def close(self) -> None:
        self.closed = True


def fake_open(answers: dict[str, str | Exception], opened: list | None = None):
    """An open_connection that answers from {node name: script output, or what to raise}."""
    def open_connection(node: Node, settings) -> FakeConnection:
        reply = answers.get(node.name, ssh.SSHError(f"{node.name}: not a fake host"))
        if isinstance(reply, Exception):
            raise reply
        connection = FakeConnection(node, reply)
        if opened is not None:
            opened.append(connection)
        return connection
    return open_connection


def write_answers(path: Path, answers: dict[str, str]) -> Path:
    """For a subprocess: {name: stdout}, or {name: "error: message"} for an SSH error."""
    path.write_text(json.dumps({
        name: {"error": text.removeprefix("error: ")} if text.startswith("error: ")
        else {"stdout": text} for name, text in answers.items()}))
    return path


def _from_file(path: str) -> dict[str, str | Exception]:
    data = json.loads(Path(path).read_text())
    return {name: ssh.SSHError(f"{name}: {reply['error']}") if "error" in reply
            else reply["stdout"] for name, reply in data.items()}


# loaded as a plugin: patched at import, before pytest_cmdline_main runs the dry run
if os.environ.get(FAKE_HOSTS_ENV):
    static.open_connection = fake_open(_from_file(os.environ[FAKE_HOSTS_ENV]))
