"""The `local` provider: the guide's CoreOS cluster as systemd-nspawn nodes on this host.

Each node is a Debian bookworm tree (see :mod:`helpers.providers.local_rootfs`) booted
by systemd-nspawn with real systemd, sshd, etcd and Docker, on the guide's two
networks (public 192.168.2.N on `eth0`, private 10.120.0.N on `eth1`, see
:mod:`helpers.providers.netns`). SSH goes from the host to each node's public address.

Design, and why:
- Root filesystem: an overlay per node (lower = the cached tree, upper/work in
  `work_dir/<prefix>-<name>/`), so nodes never share writable state and a node costs
  only what it writes. /var/lib/docker is a bind of a plain directory beside it, so
  that any storage driver works (overlay2 cannot nest on an overlay; vfs can).
- Per-node files are written through the mounted overlay before boot: hostname, hosts,
  /etc/environment (COREOS_PUBLIC_IPV4, COREOS_PRIVATE_IPV4), machine id, the run's
  authorized key for `core`, the node's own ed25519 host key (its public line goes to
  `Node.host_keys`, so SSH verifies it) and /etc/default/etcd (members on the private
  addresses, client URLs on 2379 and the guide's 4001, the v2 API enabled).
- Cgroups: each node runs in its own cgroup in every hierarchy
  (helpers/providers/local_cgroups.py), so a node's memory is its cgroup's memory.
- Supervisor: a detached bash loop per node restarts nspawn on `systemctl reboot`
  inside and powers the node off on SIGTERM (helpers/providers/local_nspawn.py).
  Console output goes to `<run_dir>/<name>.console.log`.
- Busybox for Docker: no image registry is reachable, so the tree ships a static
  busybox tarball and `/usr/local/bin/k8sconf-import-busybox [timeout]`, which waits
  for dockerd and imports it as image `busybox` (idempotent). The suite calls it once
  dockerd runs (the guide's docker.service only exists after the bootstrap); images
  live in /var/lib/docker and so survive reboots.
- Cleanup is by name: everything created carries the prefix (namespaces, links,
  node dirs, cgroups), so `destroy(None)` and the next `create()` remove what a killed
  run left behind. Only processes whose pid file and command line prove them ours
  are signalled.
"""
from __future__ import annotations

import ipaddress
import logging
import os
import shlex
import shutil
import signal
import subprocess
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from helpers.inventory import Inventory
from helpers.inventory_sections import LocalSettings
from helpers.providers import netns
from helpers.providers.base import Cluster, Node, ProviderError, ProviderUnavailable
from helpers.providers.local_cgroups import make_cgroups, recorded_cgroups
from helpers.providers.local_node_files import authorize, install_host_key, write
from helpers.providers.local_nspawn import (
    NSPAWN_RUNTIME,
    SUPERVISOR_NAME,
    SUPERVISOR_SCRIPT,
    kill_node,
    kill_unit_processes,
    nspawn_lock_name,
    our_node_dirs,
    remove_empty_dirs,
    remove_node_dir,
    signal_node,
    wait_stopped,
)
from helpers.providers.local_rootfs import ensure_rootfs, rootfs_path
from helpers.providers.machines import MachineProvider, etcd_environment, hosts_file, wait_etcd
from helpers.providers.processes import alive, read_pid
from helpers.waiting import poll

log = logging.getLogger(__name__)

STOP_TIMEOUT = 20          # seconds a node gets to power off before it is killed
REQUIRED_TOOLS = {"systemd-nspawn": "systemd-container", "mmdebstrap": "mmdebstrap",
                  "ip": "iproute2", "ssh-keygen": "openssh-client", "setsid": "util-linux"}



@dataclass(frozen=True)
class NodePlan:
    """Where one node lives on the host; derived from the inventory alone."""

    index: int
    name: str
    role: str
    public_ip: str
    private_ip: str
    machine: str        # nspawn machine name and network namespace: <prefix>-<name>
    dir: Path

    @property
    def root(self) -> Path:
        return self.dir / "root"


class LocalProvider(MachineProvider):
    # no registry here: the rootfs ships a static busybox to `docker import`
    probe_image_command = "k8sconf-import-busybox 60"
    name = "local"

    def __init__(self, inventory: Inventory, run_dir: Path, run_id: str):
        super().__init__(inventory, run_dir, run_id)
        self.settings: LocalSettings = inventory.local or LocalSettings()
        self.prefix = self.settings.prefix

    # -- the four verbs -----------------------------------------------------------------
    def preflight(self) -> None:
        if os.geteuid() != 0:
            raise ProviderUnavailable("local provider: needs root (it runs systemd-nspawn, "
                                      "ip netns and mount); run the suite as root")
        missing = [tool for tool in REQUIRED_TOOLS if shutil.which(tool) is None]
        if missing:
            packages = sorted({REQUIRED_TOOLS[t] for t in missing})
            raise ProviderUnavailable(f"local provider: {', '.join(missing)} not found: "
                                      f"apt-get install {' '.join(packages)}")
        if self.inventory.ssh.user != "core":
            raise ProviderError("local provider: the node image has user 'core' only; "
                                f"ssh.user is '{self.inventory.ssh.user}'")

    def _make(self, plans: list[NodePlan]) -> Cluster:
        netns.check_no_collision(list(self._networks()), set(netns.bridge_names(self.prefix)))
        cached = rootfs_path(self.settings.cache_dir).is_dir()
        rootfs = ensure_rootfs(self.settings.cache_dir)
        t_ready = time.monotonic()
        key = self._run_key()
        self._build_network(plans)
        host_keys = {p.name: self._prepare_node(p, rootfs, plans, key) for p in plans}
        for plan in plans:
            self._start_node(plan)
        cluster = self._cluster(plans, host_keys, key)
        self._wait_ready(cluster, t_ready + self.settings.boot_timeout)
        cluster.state["rootfs_built"] = not cached
        cluster.state["boot_seconds"] = round(time.monotonic() - t_ready, 1)
        return cluster

    def attach(self, cluster: Cluster) -> Cluster:
        for name, info in cluster.state.get("nodes", {}).items():
            if not alive(read_pid(Path(info["dir"]) / "supervisor.pid"), SUPERVISOR_NAME):
                raise ProviderError(f"local provider: node {name} of the recorded cluster "
                                    "is not running (its supervisor is gone)")
        return cluster

    def reboot(self, cluster: Cluster, node: Node, timeout: float) -> None:
        from helpers.ssh import SSHError, wait_for_reboot, wait_for_ssh
        deadline = time.monotonic() + timeout
        conn = wait_for_ssh(node, cluster.ssh_user, cluster.ssh_key, min(30, timeout))
        old_boot_id = conn.boot_id()
        try:
            conn.run("systemctl reboot", sudo=True, timeout=15)
        except SSHError:
            pass    # the connection may drop before the command returns
        finally:
            conn.close()
        try:
            wait_for_reboot(node, cluster.ssh_user, cluster.ssh_key, old_boot_id,
                            max(1.0, deadline - time.monotonic())).close()
        except SSHError as exc:
            log_file = Path(cluster.state.get("run_dir", self.run_dir)) / f"{node.name}.console.log"
            raise ProviderError(f"local provider: {exc} (console: {log_file})") from None

    # -- measuring ----------------------------------------------------------------------
    @staticmethod
    def memory(cluster: Cluster, node: Node) -> dict[str, int]:
        """Bytes the node uses now, from its memory cgroup: rss, cache and usage."""
        node_dir = Path(cluster.state["nodes"][node.name]["dir"])
        for cg in recorded_cgroups(node_dir):
            stat = cg / "memory.stat"
            if stat.exists():
                values = dict(line.split() for line in stat.read_text().splitlines())
                return {"rss": int(values["total_rss"]), "cache": int(values["total_cache"]),
                        "usage": int((cg / "memory.usage_in_bytes").read_text())}
            if (cg / "memory.current").exists():   # cgroup v2
                return {"usage": int((cg / "memory.current").read_text())}
        raise ProviderError(f"local provider: no memory cgroup found for {node.name}")

    # -- planning -----------------------------------------------------------------------
    def _networks(self) -> tuple[ipaddress.IPv4Network, ipaddress.IPv4Network]:
        return self.settings.public_network, self.settings.private_network

    def _plans(self) -> list[NodePlan]:
        public, private = self._networks()
        if public.overlaps(private):
            raise ProviderError(f"local provider: public_network {public} and private_network "
                                f"{private} overlap")
        plans = []
        for index, spec in enumerate(self.inventory.node_specs(), start=1):
            pub = spec.public_ip or public[index]
            priv = spec.private_ip or private[index]
            for ip_, net in ((pub, public), (priv, private)):
                if ip_ not in net or ip_ in (net.network_address, net.broadcast_address,
                                             _host_ip(net)):
                    raise ProviderError(f"local provider: node {spec.name} address {ip_} is not "
                                        f"a usable node address of {net}")
            machine = f"{self.prefix}-{spec.name}"
            plans.append(NodePlan(index, spec.name, spec.role, str(pub), str(priv), machine,
                                  self.settings.work_dir / machine))
        return plans

    def _cluster(self, plans: list[NodePlan], host_keys: dict[str, str], key: Path) -> Cluster:
        nodes = [Node(p.name, p.role, p.public_ip, p.private_ip, ssh_host=p.public_ip,
                      ssh_port=22, host_keys=(host_keys[p.name],)) for p in plans]
        state = {"prefix": self.prefix, "work_dir": str(self.settings.work_dir),
                 "run_dir": str(self.run_dir),
                 "bridges": list(netns.bridge_names(self.prefix)),
                 "nodes": {p.name: {"dir": str(p.dir), "machine": p.machine,
                                    "supervisor_pid": read_pid(p.dir / "supervisor.pid")}
                           for p in plans}}
        return Cluster(self.name, nodes, ssh_user=self.inventory.ssh.user, ssh_key=str(key),
                       state=state)

    # -- network ------------------------------------------------------------------------
    def _build_network(self, plans: list[NodePlan]) -> None:
        self._build_bridges()
        for plan in plans:
            self._attach_node(plan, netns.bridge_names(self.prefix), self.prefix)

    def _build_bridges(self) -> None:
        pub_bridge, priv_bridge = netns.bridge_names(self.prefix)
        public, private = self._networks()
        netns.add_bridge(pub_bridge, f"{_host_ip(public)}/{public.prefixlen}")
        netns.add_bridge(priv_bridge, f"{_host_ip(private)}/{private.prefixlen}")

    def _attach_node(self, plan: NodePlan, bridges: tuple[str, str], link_prefix: str) -> None:
        """The node's namespace, with eth0 on the public and eth1 on the private bridge;
        its host ends are named by `link_prefix` (a simulated droplet's own)."""
        public, private = self._networks()
        pub_end, priv_end = netns.veth_names(link_prefix, plan.index)
        netns.add_namespace(plan.machine)
        netns.add_veth(pub_end, bridges[0], plan.machine, "eth0",
                       f"{plan.public_ip}/{public.prefixlen}")
        netns.add_veth(priv_end, bridges[1], plan.machine, "eth1",
                       f"{plan.private_ip}/{private.prefixlen}")

    # -- node files ---------------------------------------------------------------------
    def _prepare_node(self, plan: NodePlan, rootfs: Path, plans: list[NodePlan],
                      run_key: Path) -> str:
        """Mount the node's overlay and write its own files; returns its host key line."""
        for sub in ("upper", "work", "root", "docker"):
            (plan.dir / sub).mkdir(parents=True, exist_ok=True)
        (plan.dir / "prefix").write_text(self.prefix)   # marks the dir as ours for cleanup
        _run(["mount", "-t", "overlay", "overlay", "-o",
              f"lowerdir={rootfs},upperdir={plan.dir / 'upper'},workdir={plan.dir / 'work'}",
              str(plan.root)])
        self._write_identity(plan, plans)
        authorize(plan.root, "core", run_key.with_suffix(".pub").read_text())
        return install_host_key(plan.dir, plan.root, plan.name)

    def _write_identity(self, plan: NodePlan, plans: list[NodePlan]) -> None:
        root = plan.root
        write(root / "etc/hostname", f"{plan.name}\n")
        write(root / "etc/hosts", hosts_file(plans))
        write(root / "etc/environment", f"COREOS_PUBLIC_IPV4={plan.public_ip}\n"
                                         f"COREOS_PRIVATE_IPV4={plan.private_ip}\n")
        write(root / "etc/machine-id", uuid.uuid4().hex + "\n")
        write(root / "etc/default/etcd", self._etcd_config(plan, plans))

    def _etcd_config(self, plan: NodePlan, plans: list[NodePlan]) -> str:
        env = etcd_environment((plan.name, plan.private_ip),
                               [(p.name, p.private_ip) for p in plans],
                               f"{self.prefix}-{self.run_id}")
        return "\n".join(["# Written by the local provider of k8s-coreos-conformance for this node.",
                          "ETCD_DATA_DIR=/var/lib/etcd/default",
                          *(f"{key}={value}" for key, value in env.items()), ""])

    # -- running nodes ------------------------------------------------------------------
    def _start_node(self, plan: NodePlan) -> None:
        cgroups = make_cgroups(plan.machine)
        (plan.dir / "cgroups").write_text("".join(f"{cg}\n" for cg in cgroups))
        (plan.dir / "nspawn-lock").write_text(nspawn_lock_name(plan.root))
        log_path = self._console(plan.name)
        env = {**os.environ, "SYSTEMD_NSPAWN_API_VFS_WRITABLE": "network"}
        with open(log_path, "ab") as console:
            # setsid -f: the supervisor is detached from us (own session, reparented),
            # so it outlives this call; destroy() ends it through supervisor.pid.
            subprocess.run(["setsid", "-f", "bash", "-c", SUPERVISOR_SCRIPT, SUPERVISOR_NAME,
                            str(plan.dir), *self._nspawn_command(plan)],
                           stdin=subprocess.DEVNULL, stdout=console, stderr=subprocess.STDOUT,
                           env=env, check=True)
        if poll(lambda: read_pid(plan.dir / "supervisor.pid"), timeout=10, interval=0.05) is None:
            raise ProviderError(f"local provider: supervisor of {plan.name} did not start "
                                f"(see {log_path})")

    def _nspawn_command(self, plan: NodePlan) -> list[str]:
        # --register=no/--keep-unit: the host runs no systemd/machined. Capabilities,
        # the keyring syscalls and /dev/net/tun are what Docker and flannel need
        # inside; SYSTEMD_NSPAWN_API_VFS_WRITABLE=network (env) lets dockerd set
        # its per-namespace sysctls while the rest of /proc/sys stays read-only.
        return ["systemd-nspawn", "-D", str(plan.root), "-M", plan.machine, "--boot",
                "--register=no", "--keep-unit", "--link-journal=no",
                f"--network-namespace-path={netns.NETNS_DIR / plan.machine}",
                "--capability=all", "--system-call-filter=add_key keyctl request_key",
                "--bind=/dev/net/tun", f"--bind={plan.dir / 'docker'}:/var/lib/docker"]

    def _wait_ready(self, cluster: Cluster, deadline: float) -> None:
        for node in cluster.nodes:
            netns.confirm_route(node.ssh_host, netns.bridge_names(self.prefix)[0])
        stop = threading.Event()    # lets a failure or Ctrl-C end the other waits at once
        pool = ThreadPoolExecutor(len(cluster.nodes))
        try:
            for future in [pool.submit(self._wait_node, cluster, n, deadline, stop)
                           for n in cluster.nodes]:
                future.result()
        finally:
            stop.set()
            pool.shutdown(wait=True, cancel_futures=True)

    def _wait_node(self, cluster: Cluster, node: Node, deadline: float,
                   stop: threading.Event) -> None:
        """SSH answers, and this node's etcd is healthy and sees every member."""
        node_dir = Path(cluster.state["nodes"][node.name]["dir"])
        conn = _connect_when_up(cluster, node, node_dir, deadline, stop, self._console(node.name))
        try:
            wait_etcd(conn, len(cluster.nodes), deadline, "local provider", interval=0.5,
                      stop=stop)
        finally:
            conn.close()

    def _console(self, name: str) -> Path:
        return self.run_dir / f"{name}.console.log"

    # -- teardown -----------------------------------------------------------------------
    def _teardown(self, prefix: str, work_dir: Path) -> None:
        """Remove every trace of nodes named by `prefix`; idempotent, never raises on
        something already gone."""
        dirs = our_node_dirs(prefix, work_dir)
        started = time.monotonic()
        for d in dirs:
            kill_unit_processes(d, "etcd.service")
        for d in dirs:
            signal_node(d, signal.SIGTERM)
        wait_stopped(dirs, STOP_TIMEOUT)
        if dirs:
            log.info("local provider: %d nodes powered off in %.1f s", len(dirs),
                     time.monotonic() - started)
        for d in dirs:
            kill_node(d)
        errors = []
        for d in dirs:
            try:
                remove_node_dir(d)
            except ProviderError as exc:   # go on: the rest must still be removed
                errors.append(str(exc))
        netns.remove_all(prefix)
        remove_empty_dirs([NSPAWN_RUNTIME / "propagate", NSPAWN_RUNTIME / "locks",
                            NSPAWN_RUNTIME, work_dir])
        if errors:
            raise ProviderError("; ".join(errors))


# -- etcd -----------------------------------------------------------------------------

def _connect_when_up(cluster: Cluster, node: Node, node_dir: Path, deadline: float,
                     stop: threading.Event, console: Path):
    """An SSH connection (host key verified) once the node answers; fails fast when
    the node's supervisor has exited (nspawn refused to start, see the console)."""
    from helpers.ssh import Connection, HostKeyRejected, SSHError

    def connected():
        if stop.is_set():
            raise ProviderError(f"local provider: stopped waiting for {node.name}")
        try:
            return Connection(node, cluster.ssh_user, cluster.ssh_key, connect_timeout=5).connect()
        except HostKeyRejected:
            raise
        except SSHError:
            if not alive(read_pid(node_dir / "supervisor.pid"), SUPERVISOR_NAME):
                raise ProviderError(f"local provider: node {node.name} exited while booting "
                                    f"(console: {console})") from None
            raise
    try:
        return poll(connected, timeout=deadline - time.monotonic(), interval=0.5,
                    retry_on=(SSHError,), give_up_on=(HostKeyRejected,), sleep=stop.wait)
    except HostKeyRejected:
        raise
    except SSHError as exc:
        raise ProviderError(f"local provider: {exc} (console: {console})") from None


# -- small host helpers ---------------------------------------------------------------

def _run(cmd: list[str]) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise ProviderError(f"local provider: `{shlex.join(cmd)}` failed: {proc.stderr.strip()}")
    return proc.stdout


def _host_ip(network: ipaddress.IPv4Network) -> ipaddress.IPv4Address:
    """The host's own address on a node network: the last usable one (.254 in a /24)."""
    return network.broadcast_address - 1
