"""What the providers that make their own machines on this host share (local, qemu).

Both build a node's identity the same way before it boots: the run's SSH client key, a
host key per node whose public line `Node.host_keys` carries, an /etc/hosts naming every
node by its private address. Both then wait for the starting point the guide assumes:
etcd healthy with every member on the guide's client port. And both have the same create
lifecycle: a killed run's leftovers removed first, and what a failed create made removed
before its error goes on (Molecule's driver does the same: destroy, then create).

One `etcd_environment` serves all three: qemu and digitalocean carry it in one drop-in
(written at first boot; over SSH once the droplets have their private addresses), local
writes it as the node's /etc/default/etcd. The etcd the guide starts from is the same on
every provider.
"""
from __future__ import annotations

import logging
import subprocess
import threading
import time
from abc import abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from helpers.providers.base import Cluster, Provider, ProviderError
from helpers.waiting import poll

log = logging.getLogger(__name__)

ETCD_DROPIN = "20-k8sconf-etcd.conf"     # the drop-in's name, for every etcd unit we configure
ETCD_READY = ("curl -sf --max-time 3 http://127.0.0.1:4001/health && echo && "
              "curl -sf --max-time 3 http://127.0.0.1:4001/v2/members")


class Named(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def private_ip(self) -> str: ...


def keygen(path: Path, comment: str, who: str) -> None:
    """A new ed25519 key pair at path (a stale one is replaced)."""
    for stale in (path, path.with_suffix(".pub")):
        stale.unlink(missing_ok=True)
    proc = subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment,
                           "-f", str(path)], capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        raise ProviderError(f"{who}: ssh-keygen for {path} failed: "
                            f"{' '.join(proc.stderr.split())[:300]}")


def public_line(key: Path) -> str:
    """'ssh-ed25519 AAAA...': the public key without its comment."""
    return " ".join(key.with_suffix(".pub").read_text().split()[:2])


def hosts_file(nodes: Sequence[Named]) -> str:
    """/etc/hosts: every node by its private address, as the guide's nodes resolve peers."""
    lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
    lines += [f"{n.private_ip}\t{n.name}" for n in nodes]
    return "\n".join(lines) + "\n"


def etcd_environment(member: tuple[str, str], members: Sequence[tuple[str, str]], token: str,
                     *, slow: bool = False) -> dict[str, str]:
    """The ETCD_* variables of `member` (name, private IP) in a new cluster of `members`."""
    name, ip_ = member
    env = {
        "ETCD_NAME": name,
        "ETCD_ENABLE_V2": "true",   # the guide's flannel and kubernetes speak the v2 API
        "ETCD_LISTEN_CLIENT_URLS": "http://0.0.0.0:2379,http://0.0.0.0:4001",
        "ETCD_ADVERTISE_CLIENT_URLS": f"http://{ip_}:2379,http://{ip_}:4001",
        "ETCD_LISTEN_PEER_URLS": f"http://{ip_}:2380",
        "ETCD_INITIAL_ADVERTISE_PEER_URLS": f"http://{ip_}:2380",
        "ETCD_INITIAL_CLUSTER": ",".join(f"{n}=http://{ip}:2380" for n, ip in members),
        "ETCD_INITIAL_CLUSTER_STATE": "new",
        "ETCD_INITIAL_CLUSTER_TOKEN": token,
    }
    if slow:    # emulated guests on a shared host stall for seconds at a time
        env.update(ETCD_HEARTBEAT_INTERVAL="500", ETCD_ELECTION_TIMEOUT="5000")
    return env


def etcd_dropin(env: dict[str, str], writer: str) -> str:
    """A systemd drop-in giving the etcd unit `env`; `writer` names the provider."""
    lines = [f"# written by k8s-coreos-conformance ({writer})", "[Unit]",
             "Wants=network-online.target", "After=network-online.target", "", "[Service]"]
    lines += [f'Environment="{k}={v}"' for k, v in env.items()]
    return "\n".join(lines) + "\n"


def wait_etcd(conn, members: int, deadline: float, who: str, *, interval: float,
              stop: threading.Event | None = None, context=lambda: "") -> None:
    """Poll the guide's client port until this node's etcd is healthy and lists every
    member. `stop` ends the wait early (another node's wait failed, or Ctrl-C)."""
    from helpers.ssh import SSHError
    stop = stop or threading.Event()
    last = ""

    def healthy() -> bool:
        nonlocal last
        if stop.is_set():
            raise ProviderError(f"{who}: stopped waiting for etcd on {conn.node.name}")
        try:
            result = conn.run(ETCD_READY, timeout=15)
        except SSHError as exc:
            last = str(exc)
            return False
        last = (result.stdout + result.stderr).strip()
        return result.ok and '"health":"true"' in last and last.count('"clientURLs"') == members
    if not poll(healthy, timeout=deadline - time.monotonic(), interval=interval, sleep=stop.wait):
        extra = context()
        raise ProviderError(f"{who}: etcd on {conn.node.name} not healthy with {members} "
                            f"members in time (last answer: {' '.join(last.split())[-300:] or 'none'}"
                            f"{'; ' + extra if extra else ''})")
    log.info("%s: etcd on %s healthy with %d members", who, conn.node.name, members)


class MachineProvider(Provider):
    """A provider whose create makes machines here. Subclasses set `prefix` and
    `settings.work_dir` and implement planning, making and tearing down."""

    prefix: str
    settings: Any

    def create(self) -> Cluster:
        self.preflight()
        started = time.monotonic()
        try:
            self._teardown(self.prefix, self.settings.work_dir)   # a killed run's leftovers
            cluster = self._make(self._plans())
        except BaseException as exc:
            log.warning("%s: create failed (%s); removing what it made", self.name,
                        str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__)
            try:
                self._teardown(self.prefix, self.settings.work_dir)
            except Exception as cleanup:  # noqa: BLE001 - the create error is the one to raise
                log.error("%s: cleanup after a failed create failed: %s", self.name, cleanup)
            raise
        cluster.state["create_seconds"] = round(time.monotonic() - started, 1)
        log.info("%s: %d nodes ready in %.1f s", self.name, len(cluster.nodes),
                 time.monotonic() - started)
        return cluster

    def destroy(self, cluster: Cluster | None) -> None:
        state = cluster.state if cluster else {}
        self._teardown(state.get("prefix", self.prefix),
                       Path(state.get("work_dir", self.settings.work_dir)))

    def _run_key(self) -> Path:
        """The run's SSH client key (ed25519) in run_dir; reused if already made."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        key = self.run_dir / "id_ed25519"
        if not key.exists():
            keygen(key, f"k8sconf-run-{self.run_id}", self.name)
        return key

    @abstractmethod
    def _plans(self) -> list:
        """What each node will be: names, addresses, directories."""

    @abstractmethod
    def _make(self, plans: list) -> Cluster:
        """Make and boot the planned nodes; return once each is ready."""

    @abstractmethod
    def _teardown(self, prefix: str, work_dir: Path) -> None:
        """End and remove every node of `prefix`; idempotent."""
