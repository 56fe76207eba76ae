"""The `qemu` provider: the guide's three CoreOS nodes as Flatcar VMs under QEMU on this host.

Design, and why:
- Image: a Flatcar QEMU image by URL + sha256, downloaded once into `cache_dir` and
  verified (helpers/providers/qemu_image.py), or a local `image_path`. Each node boots
  from its own qcow2 copy-on-write overlay in `work_dir/<prefix>-<node>/disk.qcow2`; the
  base is never written. Flatcar boots from its own disk (SeaBIOS, or `firmware`);
  with `kernel` (+ `initrd`, `kernel_append`) QEMU boots that kernel directly, which is
  how the e2e test boots its small Debian image (tests/e2e/qemu_image.py).
- Identity: generated per run and per node, never baked into the image: the run's SSH
  key for `ssh.user` (`run_dir/id_ed25519`), a fresh ed25519 host key per node (its
  public line goes to `Node.host_keys`, so SSH verifies it: never trust-on-first-use),
  the hostname, /etc/environment (COREOS_PUBLIC_IPV4 / COREOS_PRIVATE_IPV4), /etc/hosts,
  systemd-networkd files that put the addresses on the NICs by MAC, and etcd:
  `etcd-member.service` (Flatcar's unit name) enabled with a drop-in of `ETCD_*`
  variables: members on the private addresses, clients on 2379 and the guide's 4001,
  the v2 API on. The provider always renders this as an Ignition 3.3 config
  (`<node dir>/config.ign`; with `bootstrap.mode: cloud-config` it is the full
  userdata.ignition() config, the guide's units included, plus the above).
- Delivery (`qemu.config_delivery`):
  `ignition` (Flatcar): the config file as `-fw_cfg name=opt/org.flatcar-linux/config`,
  where Flatcar's Ignition looks for it on QEMU.
  `fw_cfg-files` (images without Ignition, e.g. the e2e Debian image): the SAME config
  translated to a tar (files; users' sshAuthorizedKeys as ~/.ssh/authorized_keys;
  units, drop-ins, and `enabled` as .wants symlinks; see ignition_to_tar) passed as
  `-fw_cfg name=opt/k8sconf/config.tar`, which the image unpacks in its initramfs.
- Acceleration (`qemu.accel`): `auto` uses KVM only when it really works: /dev/kvm
  must be usable AND a test boot under `-accel kvm` (the kernel, or the image itself,
  `-snapshot`) must print a boot marker on its serial console within
  `kvm_probe_timeout` s (nested KVM can hang right after the kernel is decompressed).
  The verdict is cached per run in `run_dir/kvm-probe.json`. Otherwise TCG
  (`-accel tcg,tb-size=<tcg_tb_size_mb>`; QEMU's default code cache doubles the memory
  per VM), with a warning saying how much slower that is. Under TCG etcd gets a longer
  heartbeat and election timeout: an emulated guest on a busy host stalls for longer
  than etcd's default 1 s election timeout.
- Networks: node N (from 1) gets
  * "public": its OWN user-mode network (`-netdev user,restrict=on`): the guest is
    `public_network`.N (default the guide's 192.168.2.N; QEMU's gateway and DNS are
    moved to .254/.253 out of the nodes' way), and the host reaches it only through
    `hostfwd=tcp:127.0.0.1:<ssh_base_port+N>-<public ip>:22`. So Node.public_ip is the
    guest's address on its own user-mode network (what COREOS_PUBLIC_IPV4 says and
    what the node's own services bind); Node.ssh_host is 127.0.0.1 and Node.ssh_port the
    forwarded port. Nodes cannot reach each other's public addresses (each user-mode
    network is private to its VM) and, with restrict=on, guests reach nothing outside.
  * "private": one L2 segment shared by the cluster's VMs, a QEMU socket netdev on
    multicast `private_mcast_group:private_mcast_port` with `localaddr=127.0.0.1`, so
    the frames never leave loopback; fixed MACs 52:54:00:00:02:NN; addresses from
    `private_network` (default the guide's 10.120.0.N). Two clusters on this host need
    different `private_mcast_port`s (QEMU cannot notice a shared group).
- Processes: `qemu-system-x86_64 -daemonize -pidfile <node dir>/qemu.pid`: QEMU returns
  once the VM runs, or fails with its error (e.g. a forwarded port in use), and the VM
  outlives this process (xdist workers and `--reuse-cluster` attach to it). A QMP
  socket `<node dir>/qmp.sock` answers qmp_command() (status, or `system_reset` for a
  guest that stopped answering, by hand). Each
  VM's serial console goes to `run_dir/<node>.console.log`; a node that does not come
  up fails create with a one-line ProviderError naming that file and quoting its tail.
- Teardown: everything lives in `work_dir/<prefix>-*` dirs marked with a `prefix` file.
  destroy() ends each VM by the pid in its pid file (SIGTERM, SIGKILL after 10 s), only
  when that process's command line names the node dir (no recycled pids), then removes
  the dir: overlay, pid file, socket, configs, keys. create() does the same first for
  leftovers of a killed run, and on any exception (Ctrl-C included) destroys what it
  made before re-raising.
"""
from __future__ import annotations

import base64
import io
import ipaddress
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import tarfile
import time
import urllib.parse
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

from helpers.bootstrap import userdata
from helpers.bootstrap.ignition import MachineConfig
from helpers.inventory import Inventory, QemuSettings
from helpers.providers.base import Cluster, Node, ProviderError, ProviderUnavailable
from helpers.providers.machines import MachineProvider, hosts_file, keygen, public_line, wait_etcd
from helpers.providers.processes import alive, kill, read_pid, read_text
from helpers.providers.qemu_image import create_overlay, ensure_image, image_format
from helpers.waiting import poll

log = logging.getLogger(__name__)

QEMU = "qemu-system-x86_64"
REQUIRED_TOOLS = {QEMU: "qemu-system-x86", "qemu-img": "qemu-utils",
                  "ssh-keygen": "openssh-client"}
FLATCAR_FW_CFG = "opt/org.flatcar-linux/config"
FILES_FW_CFG = "opt/k8sconf/config.tar"
ETCD_UNIT = "etcd-member.service"
ETCD_DROPIN = "20-k8sconf-etcd.conf"
STOP_TIMEOUT = 10            # seconds a VM gets after SIGTERM before SIGKILL
KVM_DEVICE = Path("/dev/kvm")
# Any of these on the serial console means the kernel got well past decompression.
BOOT_MARKERS = re.compile(r"Run /init as init process|Freeing unused kernel|Kernel panic|"
                          r"VFS: Unable to mount root|Welcome to ")
TCG_SLOWDOWN = ("emulating the CPU is typically 10x or more slower than KVM: measured on 2 "
                "shared cores, a VM boot costs ~45 CPU-seconds, three VMs need 1-2 minutes "
                "to answer SSH with etcd healthy and a reboot 30-70 s, where KVM takes seconds")
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Z0-9]|[\x00-\x08\x0b-\x1f\x7f]")


# -- acceleration ----------------------------------------------------------------------

@dataclass(frozen=True)
class Verdict:
    accel: str          # "kvm" or "tcg"
    reason: str
    probed: bool = False


def kvm_verdict(settings: QemuSettings, run_dir: Path, boot: Callable[[float], tuple[bool, str]],
                device: Path = KVM_DEVICE) -> Verdict:
    """Which accelerator to use. `boot(timeout)` runs the KVM test boot and returns
    (a boot marker was seen, what was seen); it only runs for `auto` with a usable
    device, once per run (the verdict is cached in run_dir/kvm-probe.json)."""
    if settings.accel == "tcg":
        return Verdict("tcg", "qemu.accel is 'tcg'")
    if settings.accel == "kvm":
        return Verdict("kvm", "qemu.accel is 'kvm'")
    if not device.exists():
        return Verdict("tcg", f"{device} does not exist")
    if not os.access(device, os.R_OK | os.W_OK):
        return Verdict("tcg", f"{device} is not readable and writable for this user")
    cache = run_dir / "kvm-probe.json"
    try:
        cached = json.loads(cache.read_text())
        return Verdict(cached["accel"], cached["reason"] + " (cached for this run)")
    except (OSError, ValueError, KeyError):
        pass
    started = time.monotonic()
    ok, seen = boot(settings.kvm_probe_timeout)
    took = time.monotonic() - started
    if ok:
        verdict = Verdict("kvm", f"a KVM test boot reached '{seen}' in {took:.1f} s", True)
    else:
        verdict = Verdict("tcg", f"a KVM test boot failed: {seen}", True)
    run_dir.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps({"accel": verdict.accel, "reason": verdict.reason}))
    return verdict


def probe_boot_command(settings: QemuSettings, base: Path | None, base_format: str | None,
                       console: Path) -> list[str]:
    """A throw-away KVM boot: the kernel alone (it panics at once for want of a root,
    which proves it ran) or the image with -snapshot (nothing written to it)."""
    cmd = [QEMU, "-nodefaults", "-display", "none", "-no-reboot", "-accel", "kvm",
           "-cpu", "host", "-m", "256", "-serial", f"file:{console}"]
    if settings.kernel:
        cmd += ["-kernel", str(settings.kernel),
                "-append", "console=ttyS0 panic=-1 root=/dev/k8sconf-kvm-probe"]
    else:
        cmd += ["-drive", f"file={base},if=virtio,format={base_format},snapshot=on"]
        if settings.firmware:
            cmd += ["-bios", str(settings.firmware)]
    return cmd


def run_probe(cmd: list[str], console: Path, timeout: float) -> tuple[bool, str]:
    """Run the test boot for at most `timeout` s, watching its console for a marker."""
    console.unlink(missing_ok=True)
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)

    def outcome() -> tuple[bool, str] | None:
        exited = proc.poll() is not None    # read the console after this: no race
        if found := BOOT_MARKERS.search(_read_tail(console, 1 << 16)):
            return True, found.group(0)
        if exited:
            assert proc.stderr is not None  # a pipe
            err = " ".join(proc.stderr.read().decode(errors="replace").split())[:200]
            return False, f"QEMU exited with status {proc.returncode}: {err or 'no message'}"
        return None
    try:
        if seen := poll(outcome, timeout=timeout, interval=0.2):
            return seen
        text = " ".join(_clean(_read_tail(console, 400)).split())
        if not text:
            return False, f"nothing on its console within {timeout:g} s"
        return False, f"no boot marker within {timeout:g} s, its console ends: {text[-120:]!r}"
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()


# -- planning -------------------------------------------------------------------------

@dataclass(frozen=True)
class VMPlan:
    index: int
    name: str
    role: str
    public_ip: str
    private_ip: str
    ssh_port: int
    dir: Path
    console: Path

    @property
    def public_mac(self) -> str:
        return f"52:54:00:00:01:{self.index:02x}"

    @property
    def private_mac(self) -> str:
        return f"52:54:00:00:02:{self.index:02x}"

    @property
    def disk(self) -> Path:
        return self.dir / "disk.qcow2"

    @property
    def pid_file(self) -> Path:
        return self.dir / "qemu.pid"

    @property
    def qmp(self) -> Path:
        return self.dir / "qmp.sock"


def user_net_addresses(network: ipaddress.IPv4Network) -> tuple[str, str]:
    """QEMU's own addresses on a node's user-mode network: gateway .254, DNS .253."""
    return str(network.broadcast_address - 1), str(network.broadcast_address - 2)


def qemu_command(plan: VMPlan, settings: QemuSettings, accel: str, base_format: str,
                 config_arg: str) -> list[str]:
    """The full command line of one VM (daemonized; see the module doc)."""
    net = settings.public_network
    gateway, dns = user_net_addresses(net)
    restrict = "on" if settings.restrict_network else "off"
    cmd = [QEMU, "-name", f"{settings.prefix}-{plan.name}", "-nodefaults", "-display", "none",
           "-daemonize", "-pidfile", str(plan.pid_file), "-machine", "pc",
           "-m", str(settings.memory_mb), "-smp", str(settings.cpus)]
    if accel == "kvm":
        cmd += ["-accel", "kvm", "-cpu", "host"]
    else:
        cmd += ["-accel", f"tcg,tb-size={settings.tcg_tb_size_mb}"]
    if settings.firmware:
        cmd += ["-bios", str(settings.firmware)]
    if settings.kernel:
        cmd += ["-kernel", str(settings.kernel), "-append", settings.kernel_append]
        if settings.initrd:
            cmd += ["-initrd", str(settings.initrd)]
    cmd += [
        "-drive", f"file={plan.disk},if=none,id=disk0,format=qcow2",
        "-device", "virtio-blk-pci,drive=disk0,addr=0x2",
        "-chardev", f"file,id=console0,path={plan.console},append=on",
        "-serial", "chardev:console0",
        "-netdev", (f"user,id=public,net={net},host={gateway},dns={dns},"
                    f"dhcpstart={plan.public_ip},ipv6=off,restrict={restrict},"
                    f"hostfwd=tcp:127.0.0.1:{plan.ssh_port}-{plan.public_ip}:22"),
        "-device", f"virtio-net-pci,netdev=public,mac={plan.public_mac},addr=0x3",
        "-netdev", (f"socket,id=private,mcast={settings.private_mcast_group}:"
                    f"{settings.private_mcast_port},localaddr=127.0.0.1"),
        "-device", f"virtio-net-pci,netdev=private,mac={plan.private_mac},addr=0x4",
        "-device", "virtio-rng-pci,addr=0x5",
        "-qmp", f"unix:{plan.qmp},server=on,wait=off",
        "-fw_cfg", config_arg,
    ]
    return cmd


# -- the node's configuration ----------------------------------------------------------

def _network_file(mac: str, address: str, prefixlen: int, gateway: str | None = None,
                  dns: str | None = None) -> str:
    # IPv4 only, as the guide: no link-local or router-advertised IPv6 to wait for
    lines = ["# written by k8s-coreos-conformance (qemu provider)", "[Match]",
             f"MACAddress={mac}", "", "[Network]", f"Address={address}/{prefixlen}",
             "LinkLocalAddressing=no", "IPv6AcceptRA=no"]
    if gateway:
        lines.append(f"Gateway={gateway}")
    if dns:
        lines.append(f"DNS={dns}")
    return "\n".join(lines) + "\n"


def etcd_environment(plan: VMPlan, plans: list[VMPlan], token: str, slow: bool) -> dict[str, str]:
    members = ",".join(f"{p.name}=http://{p.private_ip}:2380" for p in plans)
    ip_ = plan.private_ip
    env = {
        "ETCD_NAME": plan.name,
        "ETCD_ENABLE_V2": "true",   # the guide's flannel and kubernetes speak the v2 API
        "ETCD_LISTEN_CLIENT_URLS": "http://0.0.0.0:2379,http://0.0.0.0:4001",
        "ETCD_ADVERTISE_CLIENT_URLS": f"http://{ip_}:2379,http://{ip_}:4001",
        "ETCD_LISTEN_PEER_URLS": f"http://{ip_}:2380",
        "ETCD_INITIAL_ADVERTISE_PEER_URLS": f"http://{ip_}:2380",
        "ETCD_INITIAL_CLUSTER": members,
        "ETCD_INITIAL_CLUSTER_STATE": "new",
        "ETCD_INITIAL_CLUSTER_TOKEN": token,
    }
    if slow:    # emulated guests on a shared host stall for seconds at a time
        env.update(ETCD_HEARTBEAT_INTERVAL="500", ETCD_ELECTION_TIMEOUT="5000")
    return env


def _etcd_dropin(env: dict[str, str]) -> str:
    lines = ["# written by k8s-coreos-conformance (qemu provider)", "[Unit]",
             "Wants=network-online.target", "After=network-online.target", "", "[Service]"]
    lines += [f'Environment="{k}={v}"' for k, v in env.items()]
    return "\n".join(lines) + "\n"


def node_ignition(inventory: Inventory, settings: QemuSettings, plan: VMPlan,
                  plans: list[VMPlan], ssh_key_line: str, host_key: tuple[str, str],
                  etcd_token: str, slow: bool) -> dict:
    """The node's Ignition 3.3 config as a dict (see the module doc for what it holds)."""
    identity = userdata.NodeIdentity(plan.name, plan.role, plan.public_ip, plan.private_ip,
                                     host_key[0], host_key[1])
    machines = [p.private_ip for p in plans]
    boot = inventory.bootstrap
    if boot.enabled and boot.mode == "cloud-config":   # the node installs the guide itself
        base = userdata.node_config(inventory, identity, machines, [ssh_key_line])
        userdata._bounded(base.ignition(), identity)   # refused over 64 KiB, as before
    else:
        base = MachineConfig(inventory.ssh.user, [ssh_key_line], userdata._files(identity))
    gateway, dns = user_net_addresses(settings.public_network)
    extra_files = [
        ("/etc/hosts", hosts_file(plans), 0o644),
        ("/etc/systemd/network/10-k8sconf-public.network",
         _network_file(plan.public_mac, plan.public_ip, settings.public_network.prefixlen,
                       gateway, dns), 0o644),
        ("/etc/systemd/network/10-k8sconf-private.network",
         _network_file(plan.private_mac, plan.private_ip, settings.private_network.prefixlen),
         0o644),
    ]
    etcd = _etcd_dropin(etcd_environment(plan, plans, etcd_token, slow))
    return replace(base, files=[*base.files, *extra_files],
                   units=[*base.units, (ETCD_UNIT, None)],
                   dropins=[*base.dropins, (ETCD_UNIT, ETCD_DROPIN, etcd)]).ignition_dict()


def _decode_source(source: str) -> bytes:
    if not source.startswith("data:"):
        raise ProviderError(f"qemu: fw_cfg-files delivery can only carry data: URLs, "
                            f"not {source[:60]}")
    meta, _, data = source[5:].partition(",")
    if meta.endswith(";base64"):
        return base64.b64decode(data)
    return urllib.parse.unquote_to_bytes(data)


def _wanted_by(contents: str | None) -> str:
    for line in (contents or "").splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "WantedBy" and value.split():
            return value.split()[0]
    return "multi-user.target"


def ignition_to_tar(config: dict) -> bytes:
    """The Ignition config as a tar to unpack at / (config_delivery fw_cfg-files).

    Carried: storage.files (data: URLs, mode, root-owned), passwd.users[].sshAuthorizedKeys
    (~/.ssh/authorized_keys, owned by the user's NAME so the image's own passwd gives the
    uid), systemd.units (contents to /etc/systemd/system, dropins to <unit>.d/, enabled
    as a .wants symlink for the [Install] WantedBy target, default multi-user.target,
    mask as a /dev/null link). Anything else in the config is refused, not dropped.
    """
    unsupported = sorted(set(config.get("storage", {})) - {"files"}) + \
        sorted(set(config) - {"ignition", "passwd", "storage", "systemd"})
    if unsupported:
        raise ProviderError(f"qemu: fw_cfg-files delivery cannot carry Ignition "
                            f"{', '.join(unsupported)}")
    buffer = io.BytesIO()
    now = int(time.time())

    def add(name: str, data: bytes | None = None, mode: int = 0o644, owner: str = "root",
            kind: bytes = tarfile.REGTYPE, target: str = "") -> None:
        info = tarfile.TarInfo(name.lstrip("/"))
        info.mode, info.mtime, info.type = mode, now, kind
        info.uname = info.gname = owner
        info.linkname = target
        info.size = len(data) if data is not None else 0
        tar.addfile(info, io.BytesIO(data) if data is not None else None)

    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for entry in config.get("storage", {}).get("files", []):
            add(entry["path"], _decode_source(entry["contents"]["source"]),
                entry.get("mode", 0o644))
        for user in config.get("passwd", {}).get("users", []):
            keys = user.get("sshAuthorizedKeys") or []
            if not keys:
                continue
            home = "/root" if user["name"] == "root" else f"/home/{user['name']}"
            add(f"{home}/.ssh", mode=0o700, owner=user["name"], kind=tarfile.DIRTYPE)
            add(f"{home}/.ssh/authorized_keys", ("\n".join(keys) + "\n").encode(), 0o600,
                owner=user["name"])
        for unit in config.get("systemd", {}).get("units", []):
            name = unit["name"]
            if unit.get("contents") is not None:
                add(f"/etc/systemd/system/{name}", unit["contents"].encode())
            for dropin in unit.get("dropins", []):
                add(f"/etc/systemd/system/{name}.d/{dropin['name']}", dropin["contents"].encode())
            if unit.get("mask"):
                add(f"/etc/systemd/system/{name}", kind=tarfile.SYMTYPE, target="/dev/null")
            elif unit.get("enabled"):
                source = (f"/etc/systemd/system/{name}" if unit.get("contents") is not None
                          else f"/usr/lib/systemd/system/{name}")
                add(f"/etc/systemd/system/{_wanted_by(unit.get('contents'))}.wants/{name}",
                    kind=tarfile.SYMTYPE, target=source)
    return buffer.getvalue()


# -- the provider ------------------------------------------------------------------------

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
                                f"({_console_tail(console)})")
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
                                f"({_console_tail(console)})") from None

    # -- planning -----------------------------------------------------------------------
    def _plans(self) -> list[VMPlan]:
        s = self.settings
        gateway, dns = user_net_addresses(s.public_network)
        plans = []
        for index, spec in enumerate(self.inventory.node_specs(), start=1):
            pub = spec.public_ip or s.public_network[index]
            priv = spec.private_ip or s.private_network[index]
            for ip_, net, reserved in ((pub, s.public_network, {gateway, dns}),
                                       (priv, s.private_network, set())):
                if ip_ not in net or ip_ in (net.network_address, net.broadcast_address) \
                        or str(ip_) in reserved:
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
                                f"({_console_tail(plan.console)})")
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
                              context=lambda plan=plan: _console_tail(plan.console))
            finally:
                conn.close()

    def _wait_ssh(self, cluster: Cluster, node: Node, plan: VMPlan, deadline: float):
        from helpers.ssh import Connection, HostKeyRejected, SSHError
        started, last = time.monotonic(), "no attempt"

        def connected():
            nonlocal last
            if not alive(read_pid(plan.pid_file), str(plan.dir)):
                raise ProviderError(f"qemu: {node.name}: QEMU exited while booting "
                                    f"({_console_tail(plan.console)})")
            remaining = deadline - time.monotonic()
            try:
                return Connection(node, cluster.ssh_user, cluster.ssh_key, policy="verify",
                                  connect_timeout=max(1.0, min(10.0, remaining))).connect()
            except HostKeyRejected as exc:
                raise ProviderError(f"qemu: {_one_line(exc)}: the VM did not take its host key "
                                    f"from the config ({_console_tail(plan.console)})") from None
            except SSHError as exc:
                last = _one_line(exc)
                return None
        conn = poll(connected, timeout=deadline - time.monotonic(), interval=1)
        if conn is None:
            raise ProviderError(f"qemu: {node.name} did not answer SSH on 127.0.0.1:"
                                f"{plan.ssh_port} within boot_timeout "
                                f"{self.settings.boot_timeout:g} s ({last}; "
                                f"{_console_tail(plan.console)})")
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


# -- helpers ----------------------------------------------------------------------------------

def find_leftovers(prefix: str, work_dir: Path) -> list[Path]:
    """Node dirs of `prefix` in work_dir (created by create(), marked with a prefix file)."""
    if not work_dir.is_dir():
        return []
    return sorted(d for d in work_dir.glob(f"{prefix}-*")
                  if d.is_dir() and read_text(d / "prefix") == prefix)


def qmp_command(sock_path: Path, command: str, timeout: float = 10) -> dict:
    """One QMP command on a VM's monitor socket; returns QEMU's answer."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(str(sock_path))
            stream = sock.makefile("rwb")
            json.loads(stream.readline())   # the greeting
            for execute in ("qmp_capabilities", command):
                stream.write(json.dumps({"execute": execute}).encode() + b"\n")
                stream.flush()
                while True:     # skip asynchronous events
                    answer = json.loads(stream.readline())
                    if "event" not in answer:
                        break
                if "error" in answer:
                    raise ProviderError(f"qemu: QMP {execute}: {answer['error'].get('desc')}")
            return answer
        except (OSError, ValueError) as exc:
            raise ProviderError(f"qemu: QMP {command} on {sock_path} failed: {exc}") from None


def _mem_available_mb() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) // 1024
    except (OSError, ValueError):
        pass
    return None


def _read_tail(path: Path, size: int) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - size))
            return fh.read().decode(errors="replace")
    except OSError:
        return ""


def _clean(text: str) -> str:
    return ANSI.sub("", text.replace("\r", ""))


def _console_tail(console: Path, lines: int = 4, limit: int = 300) -> str:
    """`console <path> ends: <last lines joined by ' | '>`, one line, for error messages."""
    text = [line.strip() for line in _clean(_read_tail(console, 8192)).split("\n")]
    text = [line for line in text if line]
    if not text:
        return f"console {console} is empty"
    tail = " | ".join(text[-lines:])
    return f"console {console} ends: {tail[-limit:]}"


def _one_line(value) -> str:
    return " ".join(str(value).split())
