"""The cached node root filesystem of the `local` provider (a Debian bookworm tree).

Built once with mmdebstrap and reused read-only as the lower layer of every node's
overlay. The cache key is a hash of the package list and RECIPE_VERSION: bump the
version whenever the customize hook changes, so that old trees are not reused.

What the tree holds beyond the packages (the hook below):
- user `core` (groups sudo, docker, as on CoreOS) with passwordless sudo;
- sshd enabled with only an ed25519 host key, which each node gets its own of;
  the package's generated host keys are removed so that no two nodes share one;
- etcd.service enabled: it reads /etc/default/etcd, written per node;
- docker.service, docker.socket and containerd.service disabled, not masked: the
  guide's bootstrap writes its own docker.service later, and its `-H fd://` needs a
  socket unit that the bootstrap may enable (a running dockerd starts its own
  containerd when none runs);
- units that cannot work in a container masked (see MASKED);
- /var/lib/k8sconf/busybox.tar (static busybox plus its applet links) and
  /usr/local/bin/k8sconf-import-busybox, which imports it as the Docker image
  `busybox` once dockerd answers: no image registry is reachable here;
- k8sconf-cgroup-rw.service: systemd-nspawn mounts the cgroup v1 controller
  hierarchies read-only (each rooted at the node's own cgroup, through a cgroup
  namespace); Docker must create cgroups in them, so this early oneshot remounts
  them writable. Binding the host's /sys/fs/cgroup instead would let the three
  nodes' systemd instances share (and fight over) the host's root cgroups;
- an empty /etc/machine-id (each node gets its own) and no /opt/bin (the guide
  creates it).
"""
from __future__ import annotations

import fcntl
import hashlib
import os
import subprocess
import sys
from pathlib import Path

from helpers.providers.base import ProviderError
from helpers.providers.netns import safe_rmtree

RECIPE_VERSION = 2
SUITE = "bookworm"
MIRRORS = (
    "deb http://deb.debian.org/debian bookworm main",
    "deb http://deb.debian.org/debian bookworm-updates main",
    "deb http://deb.debian.org/debian-security bookworm-security main",
)
PACKAGES = (
    "systemd", "systemd-sysv", "dbus", "openssh-server",
    "openssh-client", "iproute2", "curl", "ca-certificates", "docker.io", "etcd-server",
    "etcd-client", "python3", "iptables", "bridge-utils", "sudo", "busybox-static",
    "procps", "iputils-ping",
)
# Units that fail or make no sense inside systemd-nspawn (no real consoles, no
# hardware clock), and those that would change the HOST's kernel: a node runs with
# all capabilities, so sysctl, binfmt and module loading would reach the host.
MASKED = (
    "console-getty.service", "getty@tty1.service", "systemd-timesyncd.service",
    "apt-daily.timer", "apt-daily-upgrade.timer", "e2scrub_all.timer", "fstrim.timer",
    "systemd-sysctl.service", "systemd-binfmt.service", "proc-sys-fs-binfmt_misc.automount",
    "proc-sys-fs-binfmt_misc.mount", "systemd-modules-load.service",
)
DISABLED = ("docker.service", "docker.socket", "containerd.service")
BUSYBOX_TAR = "/var/lib/k8sconf/busybox.tar"
IMPORT_HELPER = "/usr/local/bin/k8sconf-import-busybox"
CGROUP_RW_UNIT = "k8sconf-cgroup-rw.service"

_CGROUP_RW = """[Unit]
Description=Make the cgroup controllers writable for Docker (nspawn mounts them read-only)
DefaultDependencies=no
Before=sysinit.target
ConditionVirtualization=container

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/sh -c 'for d in /sys/fs/cgroup/*/; do mountpoint -q "$$d" && mount -o remount,bind,rw "$$d"; done; true'

[Install]
WantedBy=sysinit.target
"""

_IMPORT_SCRIPT = f"""#!/bin/sh
# Import the shipped static busybox as the Docker image `busybox` (idempotent).
# Waits up to ${{1:-60}} seconds for dockerd to answer: no registry is reachable here.
set -e
deadline=$(( $(date +%s) + ${{1:-60}} ))
until docker version >/dev/null 2>&1; do
  [ "$(date +%s)" -lt "$deadline" ] || {{ echo "dockerd does not answer" >&2; exit 1; }}
  sleep 1
done
docker image inspect busybox >/dev/null 2>&1 || docker import {BUSYBOX_TAR} busybox >/dev/null
echo busybox
"""

def core_user_hook(groups: str) -> str:
    """Customize-hook lines (the tree in $root): CoreOS's user `core` with passwordless
    sudo and no password, and an sshd that takes keys only and the ed25519 host key the
    provider installs."""
    return f"""chroot "$root" useradd --create-home --shell /bin/bash --groups {groups} core
chroot "$root" usermod --password '*' core
echo 'core ALL=(ALL) NOPASSWD:ALL' > "$root/etc/sudoers.d/core"
chmod 0440 "$root/etc/sudoers.d/core"
rm -f "$root"/etc/ssh/ssh_host_*
printf 'HostKey /etc/ssh/ssh_host_ed25519_key\\nPasswordAuthentication no\\nUseDNS no\\n' \\
  > "$root/etc/ssh/sshd_config.d/k8sconf.conf"
"""


def busybox_tar_hook() -> str:
    """Customize-hook lines: BUSYBOX_TAR, the tree's static busybox and its applet links,
    a tarball that `docker import` (or a registry layer) makes an image of."""
    return f"""mkdir -p "$root/var/lib/k8sconf" "$root/tmp/bb/bin"
cp "$root/bin/busybox" "$root/tmp/bb/bin/busybox"
for applet in $(chroot "$root" /bin/busybox --list); do
  [ "$applet" = busybox ] || ln -s busybox "$root/tmp/bb/bin/$applet"
done
tar -C "$root/tmp/bb" -cf "$root{BUSYBOX_TAR}" .
rm -rf "$root/tmp/bb"
"""


# Runs on the host with the finished tree in $1 (mmdebstrap --customize-hook).
_CUSTOMIZE = f"""set -eu
root="$1"
{core_user_hook("sudo,docker")}cat > "$root/etc/systemd/system/{CGROUP_RW_UNIT}" <<'EOF'
{_CGROUP_RW}EOF
chroot "$root" systemctl enable ssh.service etcd.service {CGROUP_RW_UNIT}
chroot "$root" systemctl disable {' '.join(DISABLED)}
chroot "$root" systemctl mask {' '.join(MASKED)}
: > "$root/etc/machine-id"
rm -rf "$root/opt/bin"
{busybox_tar_hook()}cat > "$root{IMPORT_HELPER}" <<'EOF'
{_IMPORT_SCRIPT}EOF
chmod 0755 "$root{IMPORT_HELPER}"
"""


def cache_key() -> str:
    text = f"{RECIPE_VERSION}\n{SUITE}\n" + "\n".join(sorted(PACKAGES))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def rootfs_path(cache_dir: Path) -> Path:
    return cache_dir / f"rootfs-{cache_key()}"


def ensure_rootfs(cache_dir: Path) -> Path:
    """The cached tree, built first if missing. Safe against concurrent callers."""
    final = rootfs_path(cache_dir)
    if final.is_dir():
        return final
    cache_dir.mkdir(parents=True, exist_ok=True)
    with open(cache_dir / "rootfs.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)   # a second builder waits, then finds it made
        if not final.is_dir():
            _build(final)
            _prune_old(final)
    return final


def _prune_old(keep: Path) -> None:
    """Drop trees of older recipes (~600 MB each) unless a node still mounts one."""
    mounts = Path("/proc/self/mountinfo").read_text()
    for old in keep.parent.glob("rootfs-*"):
        if old != keep and old.is_dir() and f"lowerdir={old}" not in mounts:
            safe_rmtree(old)


def _build(final: Path) -> None:
    # Build beside the final name and rename at the end: a killed build leaves only
    # a temp dir (removed by the next build), never a half tree under the final name.
    for stale in final.parent.glob(".rootfs-*.tmp"):
        safe_rmtree(stale)
    tmp = final.parent / f".{final.name}.tmp"
    print(f"local provider: building node rootfs {final} with mmdebstrap "
          f"(first run only, about a minute)", file=sys.stderr, flush=True)
    cmd = ["mmdebstrap", "--variant=minbase", "--mode=root",
           "--include=" + ",".join(PACKAGES),
           "--customize-hook=" + _CUSTOMIZE, SUITE, str(tmp), *MIRRORS]
    try:
        proc = subprocess.run(cmd, stdin=subprocess.DEVNULL)
        if proc.returncode != 0:
            raise ProviderError(f"mmdebstrap failed with status {proc.returncode} "
                                f"building {final} (its output is above)")
        os.rename(tmp, final)
    finally:
        safe_rmtree(tmp)   # a killed mmdebstrap may leave /proc, /sys, /dev mounted in it


if __name__ == "__main__":   # build or show the cache by hand: python3 -m helpers.providers.local_rootfs DIR
    print(ensure_rootfs(Path(sys.argv[1])))
