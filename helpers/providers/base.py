"""What every platform offers the suite: create (or attach), nodes, reboot, destroy.

A cluster is a value (:class:`Cluster`) that tests receive; it serialises to the
run's state file so that xdist workers and `--reuse-cluster` can attach to it.
"""
from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from pathlib import Path

from helpers.inventory import Inventory


class ProviderError(Exception):
    """Provisioning failed; str() is one line naming what and why."""


class ProviderUnavailable(ProviderError):
    """A tool or privilege the provider needs is missing; says how to get it."""


@dataclass(frozen=True)
class Node:
    name: str
    role: str                      # spec.MASTER or spec.MINION
    public_ip: str
    private_ip: str
    ssh_host: str                  # where SSH connects (public IP, or 127.0.0.1 for qemu)
    ssh_port: int = 22
    host_keys: tuple[str, ...] = ()  # "ssh-ed25519 AAAA..." lines the provider vouches for

    @property
    def is_master(self) -> bool:
        return self.role == "master"


@dataclass
class Cluster:
    provider: str
    nodes: list[Node]
    ssh_user: str = "core"
    ssh_key: str = ""              # path of the private key (never its content)
    state: dict = field(default_factory=dict)  # what the provider needs to re-attach/destroy

    @property
    def master(self) -> Node:
        return next(n for n in self.nodes if n.is_master)

    @property
    def minions(self) -> list[Node]:
        return [n for n in self.nodes if not n.is_master]

    def node(self, name: str) -> Node:
        return next(n for n in self.nodes if n.name == name)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> "Cluster":
        data = json.loads(text)
        data["nodes"] = [Node(**{**n, "host_keys": tuple(n["host_keys"])}) for n in data["nodes"]]
        return cls(**data)


class Provider(ABC):
    """One platform. Subclasses set `name` and implement the four verbs."""

    name: str = ""

    def __init__(self, inventory: Inventory, run_dir: Path, run_id: str):
        self.inventory = inventory
        self.run_dir = run_dir     # per-run scratch space (keys, logs), under reports/
        self.run_id = run_id
        # whether a bootstrap follows create(); the lifecycle also heeds --no-bootstrap
        self.bootstraps = inventory.bootstrap.enabled

    def preflight(self) -> None:
        """Raise ProviderUnavailable when this machine lacks what the provider needs."""
        return None  # optional, not abstract: a provider that needs nothing keeps this

    @abstractmethod
    def create(self) -> Cluster:
        """Bring up the nodes the inventory describes, ready for SSH."""

    def attach(self, cluster: Cluster) -> Cluster:
        """Take over a cluster that an earlier run (or the controller) created."""
        return cluster

    @abstractmethod
    def reboot(self, cluster: Cluster, node: Node, timeout: float) -> None:
        """Reboot one node and return once it answers SSH with a new boot id."""

    @abstractmethod
    def destroy(self, cluster: Cluster | None) -> None:
        """Remove everything create made; safe to call twice or after a partial create."""

    # How a node gets the small image the checks run probe containers from; a node
    # with registry access pulls it, the local cluster imports one it ships.
    probe_image_command: str = "docker image inspect busybox >/dev/null 2>&1 || docker pull busybox"
