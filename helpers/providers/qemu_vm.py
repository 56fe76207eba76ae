"""One QEMU VM of the qemu provider: its plan (addresses, MACs, files in its node dir),
its command line, its QMP monitor and its serial console, and finding the node dirs
a run left behind. helpers/providers/qemu.py has the design these follow.

- Networks: node N (from 1) gets
  * "public": one L2 segment shared by the cluster's VMs, as a droplet's public network
    is: a QEMU socket netdev on multicast `public_mcast_group:private_mcast_port` with
    `localaddr=127.0.0.1`, so the frames never leave loopback; fixed MACs
    52:54:00:00:01:NN; the guest is `public_network`.N (default the guide's 192.168.2.N),
    so nodes reach each other's public addresses, as the guide's checks from the master
    do (the kubelets on 10250).
  * "private": the same, on `private_mcast_group` (MACs 52:54:00:00:02:NN; default the
    guide's 10.120.0.N). Two clusters on this host need different `private_mcast_port`s
    (QEMU cannot notice a shared group).
  * "management": its OWN user-mode network (`-netdev user`, QEMU's 10.0.2.0/24, the
    guest at 10.0.2.15 by DHCP; MACs 52:54:00:00:03:NN): the host reaches the VM only
    through `hostfwd=tcp:127.0.0.1:<ssh_base_port+N>-10.0.2.15:22`, so Node.ssh_host is
    127.0.0.1 and Node.ssh_port the forwarded port; with `restrict_network` (restrict=on)
    the guest reaches nothing outside, else this is its way out.
"""
from __future__ import annotations

import json
import os
import re
import socket
from dataclasses import dataclass
from pathlib import Path

from helpers.inventory_sections import QEMU_MANAGEMENT_NETWORK, QemuSettings
from helpers.providers.base import ProviderError
from helpers.providers.processes import read_text

QEMU = "qemu-system-x86_64"
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Z0-9]|[\x00-\x08\x0b-\x1f\x7f]")


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
    def management_mac(self) -> str:
        return f"52:54:00:00:03:{self.index:02x}"

    @property
    def disk(self) -> Path:
        return self.dir / "disk.qcow2"

    @property
    def pid_file(self) -> Path:
        return self.dir / "qemu.pid"

    @property
    def qmp(self) -> Path:
        return self.dir / "qmp.sock"


MANAGEMENT_GUEST = str(QEMU_MANAGEMENT_NETWORK[15])    # QEMU's first DHCP address


def qemu_command(plan: VMPlan, settings: QemuSettings, accel: str, base_format: str,
                 config_arg: str) -> list[str]:
    """The full command line of one VM (daemonized; see the module doc)."""
    restrict = "on" if settings.restrict_network else "off"
    port = settings.private_mcast_port
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
        "-netdev", (f"socket,id=public,mcast={settings.public_mcast_group}:{port},"
                    "localaddr=127.0.0.1"),
        "-device", f"virtio-net-pci,netdev=public,mac={plan.public_mac},addr=0x3",
        "-netdev", (f"socket,id=private,mcast={settings.private_mcast_group}:{port},"
                    "localaddr=127.0.0.1"),
        "-device", f"virtio-net-pci,netdev=private,mac={plan.private_mac},addr=0x4",
        "-device", "virtio-rng-pci,addr=0x5",
        "-netdev", (f"user,id=management,net={QEMU_MANAGEMENT_NETWORK},"
                    f"dhcpstart={MANAGEMENT_GUEST},ipv6=off,restrict={restrict},"
                    f"hostfwd=tcp:127.0.0.1:{plan.ssh_port}-{MANAGEMENT_GUEST}:22"),
        "-device", f"virtio-net-pci,netdev=management,mac={plan.management_mac},addr=0x6",
        "-qmp", f"unix:{plan.qmp},server=on,wait=off",
        "-fw_cfg", config_arg,
    ]
    return cmd


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


def read_tail(path: Path, size: int) -> str:
    """The last `size` bytes of a file that may still be written, as text ("" if none)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - size))
            return fh.read().decode(errors="replace")
    except OSError:
        return ""


def clean(text: str) -> str:
    """A serial console's text without its terminal escapes and control characters."""
    return ANSI.sub("", text.replace("\r", ""))


def console_tail(console: Path, lines: int = 4, limit: int = 300) -> str:
    """`console <path> ends: <last lines joined by ' | '>`, one line, for error messages."""
    text = [line.strip() for line in clean(read_tail(console, 8192)).split("\n")]
    text = [line for line in text if line]
    if not text:
        return f"console {console} is empty"
    tail = " | ".join(text[-lines:])
    return f"console {console} ends: {tail[-limit:]}"
