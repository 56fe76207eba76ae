"""Who listens where: every listening socket of the guide's processes, judged by address.

Derived from what the node's sockets say (`ss -ltunp`, and `ps -o unit` for the unit of
each pid), never from the ports the guide names: a process that opens a port the guide
does not mention (kube-apiserver's read-only port, say) is seen too.
"""
from __future__ import annotations

import ipaddress
import re

from helpers import spec
from helpers.node_facts import NodeFacts, Socket

WILDCARDS = ("*", "0.0.0.0", "::")
READ_ONLY_PORT_DEFAULT = "7080"   # kube-apiserver v0.7's -read_only_port


def network_of(socket: Socket, node) -> str:
    """Where a socket can be reached from: loopback, private, public or every network."""
    address = socket.address.split("%")[0]
    if address in WILDCARDS:
        return "every network"
    if address == node.private_ip:
        return "private"
    if address == node.public_ip:
        return "public"
    try:
        if ipaddress.ip_address(address).is_loopback:
            return "loopback"
    except ValueError:
        pass
    return f"other ({address})"


def table(facts: NodeFacts) -> str:
    """Which process of which guide unit listens on which address and port."""
    guide_units = {u.name for u in spec.UNITS} | {"etcd.service"}
    rows = [f"{s.proto:4} {s.local:24} {','.join(s.programs):24} {','.join(s.units):28} "
            f"{network_of(s, facts.node)}"
            for s in facts.sockets() if guide_units & set(s.units)]
    return "\n".join(["proto address:port             process                  unit"
                      "                         reachable from", *rows]) if rows else "(none)"


def described(sockets: list[Socket], node) -> str:
    """`tcp 0.0.0.0:8080 (kube-apiserver, apiserver.service) reachable from every network`."""
    def where(s: Socket) -> str:
        network = network_of(s, node)
        return network if network == "every network" else f"the {network} network"
    return "; ".join(f"{s.describe()} reachable from {where(s)}" for s in sockets)


def exposed(facts: NodeFacts, unit: str, allowed: tuple[str, ...]) -> list[Socket]:
    """The unit's sockets reachable from a network outside `allowed`."""
    return [s for s in facts.sockets_of(unit) if network_of(s, facts.node) not in allowed]


def read_only_port(facts: NodeFacts) -> str:
    """kube-apiserver v0.7's -read_only_port (7080 unless its flags say otherwise)."""
    argv = facts.unit(spec.APISERVER).get("ExecStart", "")
    found = re.search(r"-read_only_port=(\d+)", argv)
    return found.group(1) if found else READ_ONLY_PORT_DEFAULT
