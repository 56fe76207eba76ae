"""The `qemu` provider: the guide's three CoreOS nodes as Flatcar VMs under QEMU on this host.

Design, and why:
- Image: a Flatcar QEMU image by URL + sha256, downloaded once into `cache_dir` and
  verified (helpers/providers/qemu_image.py), or a local `image_path`. Each node boots
  from its own qcow2 copy-on-write overlay in `work_dir/<prefix>-<node>/disk.qcow2`; the
  base is never written. Flatcar boots from its own disk (SeaBIOS, or `firmware`);
  with `kernel` (+ `initrd`, `kernel_append`) QEMU boots that kernel directly, which is
  how the e2e test boots its small Debian image (tests/e2e/qemu_image.py).
- Identity and delivery: each node's Ignition 3.3 config (`<node dir>/config.ign`)
  carries the run's SSH key, a fresh host key per node (its public line goes to
  `Node.host_keys`, so SSH verifies it: never trust-on-first-use), addresses and etcd;
  it reaches the VM by fw_cfg (helpers/providers/qemu_ignition.py).
- Acceleration (`qemu.accel`): KVM only when a test boot shows it works, else TCG with
  a warning (helpers/providers/qemu_accel.py).
- Networks: node N (from 1) is on a "public" and a "private" segment shared by the
  cluster's VMs (the guide's two networks), and on a user-mode network of its own
  through which the host's SSH port forward reaches it (helpers/providers/qemu_vm.py
  says how and why).
- Processes: `qemu-system-x86_64 -daemonize -pidfile <node dir>/qemu.pid`: QEMU returns
  once the VM runs, or fails with its error (e.g. a forwarded port in use), and the VM
  outlives this process (xdist workers and `--reuse-cluster` attach to it). A QMP
  socket `<node dir>/qmp.sock` answers qmp_command() (status, or `system_reset` for a
  guest that stopped answering, by hand). Each
  VM's serial console goes to `run_dir/<node>.console.log`; a node that does not come
  up fails create with a one-line ProviderError naming that file and quoting its tail.
  The command line, QMP and the console are helpers/providers/qemu_vm.py.
- Teardown: everything lives in `work_dir/<prefix>-*` dirs marked with a `prefix` file.
  destroy() ends each VM by the pid in its pid file (SIGTERM, SIGKILL after 10 s), only
  when that process's command line names the node dir (no recycled pids), then removes
  the dir: overlay, pid file, socket, configs, keys. create() does the same first for
  leftovers of a killed run, and on any exception (Ctrl-C included) destroys what it
  made before re-raising.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from helpers.inventory import Inventory
from helpers.inventory_sections import QemuSettings
from helpers.providers.base import Cluster, Node, ProviderError, ProviderUnavailable
from helpers.providers.machines import MachineProvider, keygen, public_line, wait_etcd
from helpers.providers.processes import alive, kill, read_pid
from helpers.providers.qemu_accel import (
    KVM_DEVICE,
    TCG_SLOWDOWN,
    Verdict,
    kvm_verdict,
    probe_boot_command,
    run_probe,
)
from helpers.providers.qemu_ignition import (
    FILES_FW_CFG,
    FLATCAR_FW_CFG,
    ignition_to_tar,
    node_ignition,
)
from helpers.providers.qemu_image import create_overlay, ensure_image, image_format
from helpers.providers.qemu_vm import (
    QEMU,
    VMPlan,
    console_tail,
    find_leftovers,
    qemu_command,
)
from helpers.waiting import poll

log = logging.getLogger(__name__)

REQUIRED_TOOLS = {QEMU: "qemu-system-x86", "qemu-img": "qemu-utils",
                  "ssh-keygen": "openssh-client"}
STOP_TIMEOUT = 10            # seconds a VM gets after SIGTERM before SIGKILL


class QemuProvider(MachineProvider):
    name = "qemu"

    def __init__(self, inventory: Inventory, run_dir: Path, run_id: str):
        super().__init__(inventory, run_dir, run_id)
        if inventory.qemu is None:
            raise ProviderUnavailable("qemu: the inventory has no 'qemu' section")
        self.settings: QemuSettings = inventory.qemu
        self.prefix = self.settings.prefix
        self.verdict: Verdict | None = None   # decided in create(), before any VM starts

    # -- the four verbs -------------------------------------------------------------------
    def preflight(self) -> None:
        missing = [tool for tool in REQUIRED_TOOLS if shutil.which(tool) is None]
        if missing:
            packages = sorted({REQUIRED_TOOLS[t] for t in missing})
            raise ProviderUnavailable(f"qemu: {', '.join(missing)} not found: "
                                      f"apt-get install {' '.join(packages)}")
        s = self.settings
        for what in ("image_path", "kernel", "initrd", "firmware"):
            path = getattr(s, what)
            if path is not None and not Path(path).is_file():
                raise ProviderUnavailable(f"qemu: {what} {path} is not a file")
        if s.accel == "kvm" and not os.access(KVM_DEVICE, os.R_OK | os.W_OK):
            raise ProviderUnavailable(f"qemu: accel is 'kvm' but {KVM_DEVICE} is missing or "
                                      "not usable; set qemu.accel to 'auto' or 'tcg'")
        boot = self.inventory.bootstrap
        if boot.enabled and boot.mode == "cloud-config" and s.restrict_network:
            raise ProviderUnavailable(
                "qemu: bootstrap mode 'cloud-config' makes the nodes download the artifacts, "
                "but qemu.restrict_network keeps guests off every network; set it to false "
                "or use bootstrap mode 'ssh'")

    def _make(self, plans: list[VMPlan]) -> Cluster:
        self._check_ports(plans)
        self._check_memory(len(plans))
        base, base_format, downloaded = self._base_image()
        self.verdict = self._accel(base, base_format)
        key_line = public_line(self._run_key())
        token = f"{self.prefix}-{self.run_id}"
        host_keys = {plan.name: self._prepare_node(plan, plans, base, base_format, key_line, token)
                     for plan in plans}
        t_start = time.monotonic()
        for plan in plans:
            self._start_vm(plan, base_format)
        cluster = self._cluster(plans, host_keys)
        self._wait_ready(cluster, plans, t_start + self.settings.boot_timeout)
        cluster.state.update(image_downloaded=downloaded,
                             boot_seconds=round(time.monotonic() - t_start, 1))
        log.info("qemu: %d VMs ready (%s) %.1f s after start", len(plans), self.verdict.accel,
                 time.monotonic() - t_start)
        return cluster

    def attach(self, cluster: Cluster) -> Cluster:
        for name, info in cluster.state.get("nodes", {}).items():
            node_dir = Path(info["dir"])
            if not alive(read_pid(node_dir / "qemu.pid"), str(node_dir)):
                raise ProviderError(f"qemu: VM {name} of the recorded cluster is not running "
                                    f"(no QEMU process for {node_dir})")
        return cluster

    def reboot(self, cluster: Cluster, node: Node, timeout: float) -> None:
        """`systemctl reboot` in the guest (same QEMU process), then SSH with a new boot id.

        Like static.reboot_over_ssh, but the reboot is queued with --no-block under a
        long command timeout: an emulated guest on a busy host can take more than that
        helper's 15 s to run sudo and systemctl, and a command killed at its timeout
        never reboots."""
        from helpers import ssh
        info = cluster.state["nodes"][node.name]
        node_dir, console = Path(info["dir"]), Path(info["console"])
        if not alive(read_pid(node_dir / "qemu.pid"), str(node_dir)):
            raise ProviderError(f"qemu: cannot reboot {node.name}: its QEMU process is gone "
                                f"({console_tail(console)})")
        settings = self.inventory.ssh
        options = dict(policy=settings.host_key_policy, known_hosts=settings.known_hosts,
                       connect_timeout=settings.connect_timeout)
        deadline = time.monotonic() + timeout
        try:
            conn = ssh.wait_for_ssh(node, cluster.ssh_user, cluster.ssh_key, timeout, **options)
            try:
                old = conn.boot_id(timeout=max(1.0, min(60.0, deadline - time.monotonic())))
                try:   # returns once the job is queued; a dropped session is the reboot
                    conn.run("systemctl reboot --no-block", sudo=True,
                             timeout=max(1.0, min(90.0, deadline - time.monotonic())))
                except ssh.CommandTimeout:
                    raise
                except ssh.SSHError:
                    pass
            finally:
                conn.close()
            ssh.wait_for_reboot(node, cluster.ssh_user, cluster.ssh_key, old,
                                max(1.0, deadline - time.monotonic()), **options).close()
        except ssh.SSHError as exc:
            raise ProviderError(f"qemu: reboot of {node.name}: {_one_line(exc)} "
                                f"({console_tail(console)})") from None

    # -- planning -----------------------------------------------------------------------
    def _plans(self) -> list[VMPlan]:
        s = self.settings
        plans = []
        for index, spec in enumerate(self.inventory.node_specs(), start=1):
            pub = spec.public_ip or s.public_network[index]
            priv = spec.private_ip or s.private_network[index]
            for ip_, net in ((pub, s.public_network), (priv, s.private_network)):
                if ip_ not in net or ip_ in (net.network_address, net.broadcast_address):
                    raise ProviderError(f"qemu: node {spec.name} address {ip_} is not a usable "
                                        f"node address of {net}")
            port = s.ssh_base_port + index
            if port > 65535:
                raise ProviderError(f"qemu: ssh_base_port {s.ssh_base_port} leaves no port "
                                    f"for node {index}")
            plans.append(VMPlan(index, spec.name, spec.role, str(pub), str(priv), port,
                                s.work_dir / f"{self.prefix}-{spec.name}",
                                self.run_dir / f"{spec.name}.console.log"))
        return plans

    @staticmethod
    def _check_ports(plans: list[VMPlan]) -> None:
        for plan in plans:
            with socket.socket() as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    sock.bind(("127.0.0.1", plan.ssh_port))
                except OSError as exc:
                    raise ProviderError(
                        f"qemu: port 127.0.0.1:{plan.ssh_port} for {plan.name}'s SSH forward "
                        f"is taken ({exc.strerror}); choose another qemu.ssh_base_port") from None

    def _check_memory(self, count: int) -> None:
        need = count * (self.settings.memory_mb + 256)   # QEMU's own use beside the guest's
        available = _mem_available_mb()
        if available is not None and available < need:
            raise ProviderError(f"qemu: {count} VMs of {self.settings.memory_mb} MiB need "
                                f"about {need} MiB, but only {available} MiB are available")

    # -- image and accelerator ------------------------------------------------------------
    def _base_image(self) -> tuple[Path, str, bool]:
        s = self.settings
        if s.image_path:
            return Path(s.image_path), image_format(Path(s.image_path)), False
        # the inventory requires image_url and image_sha256 when there is no image_path
        assert s.image_url is not None and s.image_sha256 is not None
        path, downloaded = ensure_image(s.image_url, s.image_sha256, s.cache_dir)
        return path, image_format(path), downloaded

    def _accel(self, base: Path, base_format: str) -> Verdict:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        console = self.run_dir / "kvm-probe.console.log"
        cmd = probe_boot_command(self.settings, base, base_format, console)
        verdict = kvm_verdict(self.settings, self.run_dir,
                              lambda timeout: run_probe(cmd, console, timeout))
        if verdict.accel == "tcg" and self.settings.accel == "auto":
            log.warning("qemu: KVM is not usable (%s); using software emulation (TCG) "
                        "instead: %s", verdict.reason, TCG_SLOWDOWN)
        else:
            log.info("qemu: accelerator %s (%s)", verdict.accel, verdict.reason)
        return verdict

    # -- keys and per-node files -----------------------------------------------------------
    def _prepare_node(self, plan: VMPlan, plans: list[VMPlan], base: Path, base_format: str,
                      key_line: str, token: str) -> str:
        """Overlay, host key and config in the node dir; returns the host key's public line."""
        plan.dir.mkdir(parents=True, exist_ok=True)
        plan.dir.chmod(0o700)                        # the configs hold the host private key
        (plan.dir / "prefix").write_text(self.prefix)  # marks the dir as ours for cleanup
        create_overlay(base, base_format, plan.disk)
        host_key = plan.dir / "ssh_host_ed25519_key"
        keygen(host_key, f"root@{plan.name}", "qemu")
        public = public_line(host_key)
        config = node_ignition(self.inventory, self.settings, plan, plans, key_line,
                               (host_key.read_text(), public), token,
                               slow=self.verdict is not None and self.verdict.accel == "tcg")
        ignition = plan.dir / "config.ign"
        ignition.write_text(json.dumps(config, separators=(",", ":")))
        if self.settings.config_delivery == "fw_cfg-files":
            (plan.dir / "config.tar").write_bytes(ignition_to_tar(config))
        plan.console.parent.mkdir(parents=True, exist_ok=True)
        return public

    def _config_arg(self, plan: VMPlan) -> str:
        if self.settings.config_delivery == "fw_cfg-files":
            return f"name={FILES_FW_CFG},file={plan.dir / 'config.tar'}"
        return f"name={FLATCAR_FW_CFG},file={plan.dir / 'config.ign'}"

    # -- running VMs ------------------------------------------------------------------------
    def _start_vm(self, plan: VMPlan, base_format: str) -> None:
        assert self.verdict is not None
        cmd = qemu_command(plan, self.settings, self.verdict.accel, base_format,
                           self._config_arg(plan))
        (plan.dir / "qemu.cmdline").write_text(" ".join(cmd) + "\n")
        errors = plan.dir / "qemu.stderr"
        with open(errors, "wb") as err:
            try:
                proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=err, stderr=err,
                                      timeout=120)
            except subprocess.TimeoutExpired:
                raise ProviderError(f"qemu: QEMU for {plan.name} did not daemonize within "
                                    "120 s") from None
        if proc.returncode != 0:
            message = " ".join(errors.read_text(errors="replace").split())[:300]
            raise ProviderError(f"qemu: QEMU for {plan.name} failed to start (status "
                                f"{proc.returncode}): {message or 'no message'}")
        pid = read_pid(plan.pid_file)
        if not alive(pid, str(plan.dir)):
            raise ProviderError(f"qemu: QEMU for {plan.name} exited right after starting "
                                f"({console_tail(plan.console)})")
        log.info("qemu: started %s (pid %s, ssh 127.0.0.1:%d)", plan.name, pid, plan.ssh_port)

    def _cluster(self, plans: list[VMPlan], host_keys: dict[str, str]) -> Cluster:
        assert self.verdict is not None
        nodes = [Node(p.name, p.role, p.public_ip, p.private_ip, ssh_host="127.0.0.1",
                      ssh_port=p.ssh_port, host_keys=(host_keys[p.name],)) for p in plans]
        state = {"prefix": self.prefix, "work_dir": str(self.settings.work_dir),
                 "run_dir": str(self.run_dir), "accel": self.verdict.accel,
                 "accel_reason": self.verdict.reason,
                 "nodes": {p.name: {"dir": str(p.dir), "pid": read_pid(p.pid_file),
                                    "console": str(p.console), "ssh_port": p.ssh_port}
                           for p in plans}}
        return Cluster(self.name, nodes, ssh_user=self.inventory.ssh.user,
                       ssh_key=str(self.run_dir / "id_ed25519"), state=state)

    def _wait_ready(self, cluster: Cluster, plans: list[VMPlan], deadline: float) -> None:
        """Every VM answers SSH with its own host key (and etcd is healthy with every
        member); sequential with one deadline, in the main thread (Ctrl-C interrupts)."""
        by_name = {p.name: p for p in plans}
        for node in cluster.nodes:
            plan = by_name[node.name]
            conn = self._wait_ssh(cluster, node, plan, deadline)
            try:
                if self.settings.wait_for_etcd:
                    wait_etcd(conn, len(plans), deadline, "qemu", interval=1,
                              context=lambda plan=plan: console_tail(plan.console))
            finally:
                conn.close()

    def _wait_ssh(self, cluster: Cluster, node: Node, plan: VMPlan, deadline: float):
        from helpers.ssh import Connection, HostKeyRejected, SSHError
        started, last = time.monotonic(), "no attempt"

        def connected():
            nonlocal last
            if not alive(read_pid(plan.pid_file), str(plan.dir)):
                raise ProviderError(f"qemu: {node.name}: QEMU exited while booting "
                                    f"({console_tail(plan.console)})")
            remaining = deadline - time.monotonic()
            try:
                return Connection(node, cluster.ssh_user, cluster.ssh_key, policy="verify",
                                  connect_timeout=max(1.0, min(10.0, remaining))).connect()
            except HostKeyRejected as exc:
                raise ProviderError(f"qemu: {_one_line(exc)}: the VM did not take its host key "
                                    f"from the config ({console_tail(plan.console)})") from None
            except SSHError as exc:
                last = _one_line(exc)
                return None
        conn = poll(connected, timeout=deadline - time.monotonic(), interval=1)
        if conn is None:
            raise ProviderError(f"qemu: {node.name} did not answer SSH on 127.0.0.1:"
                                f"{plan.ssh_port} within boot_timeout "
                                f"{self.settings.boot_timeout:g} s ({last}; "
                                f"{console_tail(plan.console)})")
        log.info("qemu: %s answers SSH (%.1f s)", node.name, time.monotonic() - started)
        return conn

    # -- teardown -------------------------------------------------------------------------
    def _teardown(self, prefix: str, work_dir: Path) -> None:
        """End every VM of `prefix` by its pid and remove its dir; idempotent."""
        dirs = find_leftovers(prefix, work_dir)
        if not dirs:
            return
        for d in dirs:
            kill(read_pid(d / "qemu.pid"), str(d), signal.SIGTERM)
        poll(lambda: not any(alive(read_pid(d / "qemu.pid"), str(d)) for d in dirs),
             timeout=STOP_TIMEOUT, interval=0.1)
        for d in dirs:
            pid = read_pid(d / "qemu.pid")
            if alive(pid, str(d)):
                log.warning("qemu: %s did not stop on SIGTERM; killing it", d.name)
                kill(pid, str(d), signal.SIGKILL)
        poll(lambda: not any(alive(read_pid(d / "qemu.pid"), str(d)) for d in dirs),
             timeout=10, interval=0.1)
        if running := [d for d in dirs if alive(read_pid(d / "qemu.pid"), str(d))]:
            raise ProviderError(f"qemu: could not end QEMU of {', '.join(d.name for d in running)}")
        for d in dirs:
            shutil.rmtree(d, ignore_errors=True)
        left = [d.name for d in dirs if d.exists()]
        try:
            work_dir.rmdir()
        except OSError:
            pass
        if left:
            raise ProviderError(f"qemu: could not remove {', '.join(left)} in {work_dir}")
        log.info("qemu: removed %d VM(s) of prefix %s", len(dirs), prefix)


def _mem_available_mb() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) // 1024
    except (OSError, ValueError):
        pass
    return None


def _one_line(value) -> str:
    return " ".join(str(value).split())
