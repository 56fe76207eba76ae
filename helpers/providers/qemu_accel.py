"""Which accelerator the qemu provider's VMs get: KVM only when it really works, else TCG.

`qemu.accel` `auto` uses KVM only when /dev/kvm is usable AND a test boot under
`-accel kvm` (the kernel, or the image itself, `-snapshot`) prints a boot marker on its
serial console within `kvm_probe_timeout` s (nested KVM can hang right after the kernel
is decompressed). The verdict is cached per run in `run_dir/kvm-probe.json`. Otherwise
TCG (`-accel tcg,tb-size=<tcg_tb_size_mb>`; QEMU's default code cache doubles the
memory per VM), with a warning saying how much slower that is.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from helpers.inventory_sections import QemuSettings
from helpers.providers.qemu_vm import QEMU, clean, read_tail
from helpers.waiting import poll

KVM_DEVICE = Path("/dev/kvm")
# Any of these on the serial console means the kernel got well past decompression.
BOOT_MARKERS = re.compile(r"Run /init as init process|Freeing unused kernel|Kernel panic|"
                          r"VFS: Unable to mount root|Welcome to ")
TCG_SLOWDOWN = ("emulating the CPU is typically 10x or more slower than KVM: measured on 2 "
                "shared cores, a VM boot costs ~45 CPU-seconds, three VMs need 1-2 minutes "
                "to answer SSH with etcd healthy and a reboot 30-70 s, where KVM takes seconds")


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
        if found := BOOT_MARKERS.search(read_tail(console, 1 << 16)):
            return True, found.group(0)
        if exited:
            assert proc.stderr is not None  # a pipe
            err = " ".join(proc.stderr.read().decode(errors="replace").split())[:200]
            return False, f"QEMU exited with status {proc.returncode}: {err or 'no message'}"
        return None
    try:
        if seen := poll(outcome, timeout=timeout, interval=0.2):
            return seen
        text = " ".join(clean(read_tail(console, 400)).split())
        if not text:
            return False, f"nothing on its console within {timeout:g} s"
        return False, f"no boot marker within {timeout:g} s, its console ends: {text[-120:]!r}"
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()

