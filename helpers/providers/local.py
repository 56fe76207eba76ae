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
- Cgroups: each node runs in its own cgroup (a child of ours) in every hierarchy;
  nspawn then gives the node a cgroup namespace rooted there. Without this all nodes'
  systemd instances would take the same cgroups. Docker's cgroups land inside the
  node's, so a node's memory is its cgroup's memory.
- Supervisor: a detached bash loop per node (pid in `supervisor.pid`) restarts nspawn
  when it exits 133 (`systemctl reboot` inside) and exits with any other status.
  SIGTERM to it stops the loop and forwards SIGTERM to nspawn, which powers the node
  off. Console output goes to `<run_dir>/<name>.console.log`.
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

import contextlib
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
from helpers.providers.local_rootfs import ensure_rootfs, rootfs_path
from helpers.providers.machines import MachineProvider, hosts_file, keygen, public_line, wait_etcd
from helpers.providers.processes import alive, kill, read_pid, read_text
from helpers.waiting import poll

log = logging.getLogger(__name__)

SUPERVISOR_NAME = "k8sconf-node-supervisor"    # $0 of the supervisor: how we recognise it
STOP_TIMEOUT = 20          # seconds a node gets to power off before it is killed
NSPAWN_RUNTIME = Path("/run/systemd/nspawn")
REQUIRED_TOOLS = {"systemd-nspawn": "systemd-container", "mmdebstrap": "mmdebstrap",
                  "ip": "iproute2", "ssh-keygen": "openssh-client", "setsid": "util-linux"}

# Restart nspawn while it exits 133 (reboot); stop on anything else or on SIGTERM.
_SUPERVISOR = r"""
dir=$1; shift
echo $$ > "$dir/supervisor.pid"
while read -r cg; do echo $$ > "$cg/cgroup.procs" || echo "supervisor: cannot join $cg"; done < "$dir/cgroups"
stop=0; child=
trap 'stop=1; [ -z "$child" ] || kill -TERM "$child" 2>/dev/null' TERM INT HUP
while [ "$stop" = 0 ]; do
  "$@" </dev/null &
  child=$!
  echo "$child" > "$dir/nspawn.pid"
  [ "$stop" = 0 ] || kill -TERM "$child"
  while kill -0 "$child" 2>/dev/null; do wait "$child"; done
  wait "$child"; rc=$?
  echo "supervisor: systemd-nspawn exited $rc"
  [ "$rc" = 133 ] || exit "$rc"
done
"""


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
        for cg in _recorded_cgroups(node_dir):
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
        pub_bridge, priv_bridge = netns.bridge_names(self.prefix)
        public, private = self._networks()
        netns.add_bridge(pub_bridge, f"{_host_ip(public)}/{public.prefixlen}")
        netns.add_bridge(priv_bridge, f"{_host_ip(private)}/{private.prefixlen}")
        for p in plans:
            pub_end, priv_end = netns.veth_names(self.prefix, p.index)
            netns.add_namespace(p.machine)
            netns.add_veth(pub_end, pub_bridge, p.machine, "eth0", f"{p.public_ip}/{public.prefixlen}")
            netns.add_veth(priv_end, priv_bridge, p.machine, "eth1",
                           f"{p.private_ip}/{private.prefixlen}")

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
        _authorize(plan.root, "core", run_key.with_suffix(".pub").read_text())
        return _install_host_key(plan)

    def _write_identity(self, plan: NodePlan, plans: list[NodePlan]) -> None:
        root = plan.root
        _write(root / "etc/hostname", f"{plan.name}\n")
        _write(root / "etc/hosts", hosts_file(plans))
        _write(root / "etc/environment", f"COREOS_PUBLIC_IPV4={plan.public_ip}\n"
                                         f"COREOS_PRIVATE_IPV4={plan.private_ip}\n")
        _write(root / "etc/machine-id", uuid.uuid4().hex + "\n")
        _write(root / "etc/default/etcd", self._etcd_config(plan, plans))

    def _etcd_config(self, plan: NodePlan, plans: list[NodePlan]) -> str:
        members = ",".join(f"{p.name}=http://{p.private_ip}:2380" for p in plans)
        ip_ = plan.private_ip
        return "\n".join([
            "# Written by the local provider of k8s-coreos-conformance for this node.",
            f"ETCD_NAME={plan.name}",
            "ETCD_DATA_DIR=/var/lib/etcd/default",
            "ETCD_ENABLE_V2=true",    # the guide's flannel and kubernetes speak the v2 API
            "ETCD_LISTEN_CLIENT_URLS=http://0.0.0.0:2379,http://0.0.0.0:4001",
            f"ETCD_ADVERTISE_CLIENT_URLS=http://{ip_}:2379,http://{ip_}:4001",
            f"ETCD_LISTEN_PEER_URLS=http://{ip_}:2380",
            f"ETCD_INITIAL_ADVERTISE_PEER_URLS=http://{ip_}:2380",
            f"ETCD_INITIAL_CLUSTER={members}",
            "ETCD_INITIAL_CLUSTER_STATE=new",
            f"ETCD_INITIAL_CLUSTER_TOKEN={self.prefix}-{self.run_id}",
            ""])

    # -- running nodes ------------------------------------------------------------------
    def _start_node(self, plan: NodePlan) -> None:
        cgroups = _make_cgroups(plan.machine)
        (plan.dir / "cgroups").write_text("".join(f"{cg}\n" for cg in cgroups))
        (plan.dir / "nspawn-lock").write_text(_nspawn_lock_name(plan.root))
        log_path = self._console(plan.name)
        env = {**os.environ, "SYSTEMD_NSPAWN_API_VFS_WRITABLE": "network"}
        with open(log_path, "ab") as console:
            # setsid -f: the supervisor is detached from us (own session, reparented),
            # so it outlives this call; destroy() ends it through supervisor.pid.
            subprocess.run(["setsid", "-f", "bash", "-c", _SUPERVISOR, SUPERVISOR_NAME,
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
        dirs = _our_node_dirs(prefix, work_dir)
        started = time.monotonic()
        for d in dirs:
            _kill_unit_processes(d, "etcd.service")
        for d in dirs:
            _signal_node(d, signal.SIGTERM)
        _wait_stopped(dirs, STOP_TIMEOUT)
        if dirs:
            log.info("local provider: %d nodes powered off in %.1f s", len(dirs),
                     time.monotonic() - started)
        for d in dirs:
            _kill_node(d)
        errors = []
        for d in dirs:
            try:
                _remove_node_dir(d)
            except ProviderError as exc:   # go on: the rest must still be removed
                errors.append(str(exc))
        netns.remove_all(prefix)
        _remove_empty_dirs([NSPAWN_RUNTIME / "propagate", NSPAWN_RUNTIME / "locks",
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


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_symlink():     # never follow a link of the node's tree out to the host
        path.unlink()
    path.write_text(text)
    os.chmod(path, mode)


def _install_host_key(plan: NodePlan) -> str:
    """A fresh ed25519 host key for the node (kept beside it); returns the public line
    that `Node.host_keys` carries, so that SSH verifies this very key."""
    key = plan.dir / "ssh_host_ed25519_key"
    keygen(key, f"root@{plan.name}", "local provider")
    _write(plan.root / "etc/ssh/ssh_host_ed25519_key", key.read_text(), mode=0o600)
    _write(plan.root / "etc/ssh/ssh_host_ed25519_key.pub", key.with_suffix(".pub").read_text())
    return public_line(key)


def _authorize(root: Path, user: str, public_key: str) -> None:
    uid, gid = _user_ids(root, user)
    ssh_dir = root / "home" / user / ".ssh"
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    _write(ssh_dir / "authorized_keys", public_key, mode=0o600)
    for path in (ssh_dir, ssh_dir / "authorized_keys"):
        os.chown(path, uid, gid)


def _user_ids(root: Path, user: str) -> tuple[int, int]:
    for line in (root / "etc/passwd").read_text().splitlines():
        fields = line.split(":")
        if fields[0] == user:
            return int(fields[2]), int(fields[3])
    raise ProviderError(f"local provider: user {user} missing from the node image")


def _host_ip(network: ipaddress.IPv4Network) -> ipaddress.IPv4Address:
    """The host's own address on a node network: the last usable one (.254 in a /24)."""
    return network.broadcast_address - 1


# -- cgroups ----------------------------------------------------------------------------

def _hierarchies() -> list[tuple[Path, str]]:
    """(mount point, our cgroup path in it) for every mounted cgroup hierarchy."""
    ours = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        ours[controllers] = path
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        sep = fields.index("-")
        fstype, mount_point, options = fields[sep + 1], fields[4], fields[sep + 3]
        if fstype == "cgroup2" and "" in ours:
            found.append((Path(mount_point), ours[""]))
        elif fstype == "cgroup":
            opts = set(options.split(","))
            for controllers, path in ours.items():
                if controllers and set(controllers.split(",")) <= opts:
                    found.append((Path(mount_point), path))
                    break
    return found


def _make_cgroups(machine: str) -> list[Path]:
    """The node's own cgroup, a child of ours, in every hierarchy (cpuset seeded)."""
    made = []
    for mount_point, ours in _hierarchies():
        parent = mount_point / ours.lstrip("/")
        cg = parent / machine
        cg.mkdir(exist_ok=True)
        for name in ("cpuset.cpus", "cpuset.mems"):   # an empty cpuset admits no task
            if (cg / name).exists() and not (cg / name).read_text().strip():
                (cg / name).write_text((parent / name).read_text())
        made.append(cg)
    return made


def _recorded_cgroups(node_dir: Path) -> list[Path]:
    try:
        return [Path(p) for p in (node_dir / "cgroups").read_text().split()]
    except OSError:
        return []


def _cgroup_tree(cg: Path) -> list[Path]:
    """`cg` and every cgroup below it, deepest first. The tree changes while we walk it
    (the node's systemd removes cgroups of stopped units); os.walk skips what vanished."""
    dirs = [Path(top) for top, _, _ in os.walk(cg)]
    return sorted(dirs, key=lambda p: -len(p.parts))


def _cgroup_pids(cgroups: list[Path]) -> set[int]:
    pids: set[int] = set()
    for cg in cgroups:
        for d in _cgroup_tree(cg):
            try:
                pids.update(int(p) for p in (d / "cgroup.procs").read_text().split())
            except OSError:
                pass
    return pids


def _remove_cgroups(cgroups: list[Path]) -> None:
    # Children first; a cgroup can only go once its processes have exited, which the
    # kernel finishes a little after the kill, hence the short retry.
    for cg in cgroups:
        for d in _cgroup_tree(cg):
            _rmdir_retry(d)


def _rmdir_retry(path: Path, timeout: float = 2) -> None:
    def removed() -> bool:
        with contextlib.suppress(FileNotFoundError):
            path.rmdir()
        return True
    try:
        poll(removed, timeout=timeout, interval=0.1, retry_on=(OSError,))
    except OSError:
        log.warning("local provider: could not remove cgroup %s", path)


# -- stopping and removing nodes ------------------------------------------------------

def _our_node_dirs(prefix: str, work_dir: Path) -> list[Path]:
    if not work_dir.is_dir():
        return []
    return sorted(d for d in work_dir.glob(f"{prefix}-*")
                  if d.is_dir() and read_text(d / "prefix") == prefix)


def _signal_node(node_dir: Path, sig: int) -> None:
    """SIGTERM the supervisor (it forwards to nspawn, which powers the node off)."""
    supervisor = read_pid(node_dir / "supervisor.pid")
    if alive(supervisor, SUPERVISOR_NAME):
        kill(supervisor, SUPERVISOR_NAME, sig)
    else:
        kill(read_pid(node_dir / "nspawn.pid"), "systemd-nspawn", sig)


def _kill_unit_processes(node_dir: Path, unit: str) -> None:
    """SIGKILL one unit's processes in a node that is about to be destroyed.

    Used for etcd: stopped gracefully, the last leader of a cluster whose other members
    are stopping at the same moment waits ~7 s for a leadership transfer that cannot
    succeed. Its data is discarded with the node, so there is nothing to protect.
    """
    for cg in _recorded_cgroups(node_dir):
        for unit_dir in (d for d in _cgroup_tree(cg) if d.name == unit):
            for pid in _cgroup_pids([unit_dir]):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass


def _node_running(node_dir: Path) -> bool:
    return (alive(read_pid(node_dir / "supervisor.pid"), SUPERVISOR_NAME)
            or alive(read_pid(node_dir / "nspawn.pid"), "systemd-nspawn")
            or bool(_cgroup_pids(_recorded_cgroups(node_dir))))


def _wait_stopped(dirs: list[Path], timeout: float) -> None:
    poll(lambda: not any(_node_running(d) for d in dirs), timeout=timeout, interval=0.2)


def _kill_node(node_dir: Path) -> None:
    """SIGKILL whatever of the node still runs: supervisor, nspawn, and every process in
    the node's cgroups (killing nspawn alone leaves the container running)."""
    if not _node_running(node_dir):
        return
    log.warning("local provider: %s did not power off in time; killing it", node_dir.name)
    kill(read_pid(node_dir / "supervisor.pid"), SUPERVISOR_NAME, signal.SIGKILL)
    kill(read_pid(node_dir / "nspawn.pid"), "systemd-nspawn", signal.SIGKILL)
    cgroups = _recorded_cgroups(node_dir)
    def all_killed() -> bool:
        pids = _cgroup_pids(cgroups)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return not pids
    poll(all_killed, timeout=10, interval=0.1)


def _remove_node_dir(node_dir: Path) -> None:
    root = node_dir / "root"
    if netns.is_mountpoint(root):
        proc = subprocess.run(["umount", str(root)], capture_output=True, text=True)
        if proc.returncode != 0:
            raise ProviderError(f"local provider: cannot unmount {root}: {proc.stderr.strip()}")
    _remove_cgroups(_recorded_cgroups(node_dir))
    # nspawn cannot clean its runtime files under a /run that is not tmpfs, nor after a kill.
    machine = node_dir.name
    shutil.rmtree(NSPAWN_RUNTIME / "propagate" / machine, ignore_errors=True)
    lock = read_text(node_dir / "nspawn-lock")
    if lock:
        (NSPAWN_RUNTIME / "locks" / lock).unlink(missing_ok=True)
    netns.safe_rmtree(node_dir)


def _nspawn_lock_name(root: Path) -> str:
    st = os.stat(root)
    return f"inode-{st.st_dev}:{st.st_ino}"


def _remove_empty_dirs(paths: list[Path]) -> None:
    for path in paths:
        try:
            path.rmdir()
        except OSError:
            pass
