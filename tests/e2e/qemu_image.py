"""The qemu provider's TEST image: a small Debian bookworm VM image, built here.

No Flatcar image can be downloaded on this machine, so the e2e test of the `qemu`
provider boots this instead. It is a stand-in for Flatcar that speaks the same
interfaces the provider relies on, and nothing more:

- direct kernel boot: the image's own kernel and a small initrd (initramfs-tools with
  `MODULES=list`: virtio_pci virtio_blk virtio_net ext4 qemu_fw_cfg) are copied out
  beside the disk, for `qemu.kernel` / `qemu.initrd`; root is `/dev/vda`;
- first-boot configuration like Ignition, applied in the initramfs before the real
  root starts: `scripts/local-bottom/k8sconf-config` loads `qemu_fw_cfg`, and if
  `opt/k8sconf/config.tar` is present (the provider's `config_delivery: fw_cfg-files`,
  a tar made from the node's Ignition config) unpacks it into the root with the root's
  own tar, so owner names resolve against the image's /etc/passwd. First boot only
  (stamp `/etc/k8sconf/applied`), as Ignition;
- systemd-networkd, with a catch-all DHCP network like Flatcar's `zz-default.network`;
  the provider's per-MAC static networks (10-k8sconf-*.network) take precedence;
- user `core` with passwordless sudo, sshd with ONLY an ed25519 host key and no key
  in the image: sshd cannot start unless the configuration delivered the node's key;
- etcd (Debian's etcd-server 3.4) behind Flatcar's unit name `etcd-member.service`,
  configured only through `ETCD_*` environment variables of drop-ins, as on Flatcar;
  Debian's own etcd.service is masked (a first boot would otherwise apply presets);
- curl and ping for the checks, an empty /etc/machine-id (each VM makes its own);
- kept small and quick to boot under emulation: kernel modules for hardware a VM lacks
  and those QEMU's pc machine would make udev load to no use are removed, and units a
  test VM does not need (logind, the modprobe@ units, apt timers, ...) are masked.

Built with mmdebstrap (minbase), `mkfs.ext4 -d` into a 2 GB sparse raw file and
converted to a qcow2 base; cached under `<cache_dir>/test-image-<recipe hash>/`.

`ensure_image(cache_dir, docker=True)` builds the variant the whole suite runs on
(tests/e2e/test_qemu_suite.py), in `test-image-docker-<hash>/` on a 4 GB disk: it
adds Docker 20.10 (its own units disabled: the guide's bootstrap writes docker.service),
etcdctl, iptables and bridge-utils, and, as no registry is reachable from the VMs, a
registry mirror on the VM's own 127.0.0.1:5000 (tests/droplet_registry.py, run by
`k8sconf-registry.service`, serving the static busybox) named in
/etc/docker/daemon.json, so the provider's `docker pull busybox` works unchanged.
"""
from __future__ import annotations

import fcntl
import hashlib
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from helpers.providers.local_rootfs import BUSYBOX_TAR, busybox_tar_hook, core_user_hook
from tests import droplet_registry

RECIPE_VERSION = 1
SUITE = "bookworm"
MIRRORS = (
    "deb http://deb.debian.org/debian bookworm main",
    "deb http://deb.debian.org/debian-security bookworm-security main",
)
PACKAGES = (
    "systemd", "systemd-sysv", "udev", "dbus", "openssh-server", "iproute2", "kmod",
    "linux-image-amd64", "initramfs-tools", "sudo", "etcd-server", "curl",
    "iputils-ping",
)
INITRD_MODULES = ("virtio_pci", "virtio_blk", "virtio_net", "ext4", "qemu_fw_cfg")
FW_CFG_NAME = "opt/k8sconf/config.tar"      # must match helpers.providers.qemu
DISK_SIZE = "2G"
# Kernel module trees a small VM never loads (about 200 MB of the image).
PRUNED_MODULES = ("drivers/gpu", "drivers/net/wireless", "drivers/media", "drivers/infiniband",
                  "drivers/staging", "drivers/scsi", "drivers/usb", "drivers/bluetooth",
                  "drivers/net/ethernet", "drivers/iio", "drivers/hid", "drivers/input/touchscreen",
                  "drivers/isdn", "drivers/mmc", "drivers/mtd", "drivers/nfc", "drivers/thunderbolt",
                  "drivers/hwmon", "drivers/edac", "sound", "net/wireless", "net/mac80211",
                  "net/bluetooth", "fs/ocfs2", "fs/gfs2", "fs/xfs", "fs/btrfs", "fs/nfs",
                  "fs/nfsd", "fs/ceph", "fs/smb", "fs/f2fs", "drivers/ata",
                  # what udev would load for QEMU's pc machine and CPU, to no use here:
                  # every module load costs a signature check, slow under emulation
                  "arch/x86/kvm", "drivers/crypto/ccp", "drivers/block/floppy.ko",
                  "drivers/input/misc/pcspkr.ko", "drivers/i2c/busses/i2c-piix4.ko",
                  "drivers/input/mouse", "drivers/input/serio/serio_raw.ko",
                  "drivers/input/evdev.ko", "drivers/input/joydev.ko")
# Units a test VM does not need; each costs seconds of emulated CPU at boot.
MASKED = ("etcd.service", "getty@tty1.service", "apt-daily.timer", "apt-daily-upgrade.timer",
          "e2scrub_all.timer", "e2scrub_reap.service", "fstrim.timer", "man-db.timer",
          "dpkg-db-backup.timer", "systemd-logind.service", "systemd-network-generator.service",
          "modprobe@drm.service", "modprobe@efi_pstore.service", "modprobe@fuse.service",
          "modprobe@loop.service", "modprobe@dm_mod.service")

_ETCD_MEMBER = """[Unit]
Description=etcd (k8sconf test image: Debian's etcd behind Flatcar's unit name)
Wants=network-online.target
After=network-online.target

[Service]
Type=notify
User=etcd
Environment=ETCD_DATA_DIR=/var/lib/etcd/default
ExecStart=/usr/bin/etcd
Restart=on-failure
RestartSec=5
LimitNOFILE=40000

[Install]
WantedBy=multi-user.target
"""

_DEFAULT_NETWORK = """# Like Flatcar's zz-default.network: DHCP on any NIC nothing else configures.
[Match]
Name=en* eth*

[Network]
DHCP=yes
"""

# initramfs-tools local-bottom script: the root is mounted (rw) at ${rootmnt}.
_INITRAMFS_SCRIPT = f"""#!/bin/sh
PREREQ=""
prereqs() {{ echo "$PREREQ"; }}
case "$1" in prereqs) prereqs; exit 0;; esac
blob=/sys/firmware/qemu_fw_cfg/by_name/{FW_CFG_NAME}/raw
stamp="${{rootmnt}}/etc/k8sconf/applied"
[ -e "$stamp" ] && exit 0
modprobe qemu_fw_cfg 2>/dev/null
if [ ! -r "$blob" ]; then
  echo "k8sconf: no {FW_CFG_NAME} in fw_cfg; booting unconfigured"
  exit 0
fi
if chroot "${{rootmnt}}" /usr/bin/tar -x -p -f - -C / < "$blob"; then
  mkdir -p "${{rootmnt}}/etc/k8sconf" && echo applied > "$stamp"
  echo "k8sconf: configuration from fw_cfg applied"
else
  echo "k8sconf: unpacking {FW_CFG_NAME} FAILED"
fi
"""

# mmdebstrap --customize-hook, on the host, with the finished tree in $1.
_CUSTOMIZE = f"""set -eu
root="$1"
{core_user_hook("sudo")}cat > "$root/usr/lib/systemd/system/etcd-member.service" <<'EOF'
{_ETCD_MEMBER}EOF
cat > "$root/etc/systemd/network/zz-default.network" <<'EOF'
{_DEFAULT_NETWORK}EOF
chroot "$root" systemctl enable systemd-networkd.service ssh.service
chroot "$root" systemctl mask {' '.join(MASKED)}
sed -i 's/^MODULES=.*/MODULES=list/' "$root/etc/initramfs-tools/initramfs.conf"
printf '%s\\n' {' '.join(INITRD_MODULES)} >> "$root/etc/initramfs-tools/modules"
cat > "$root/etc/initramfs-tools/scripts/local-bottom/k8sconf-config" <<'EOF'
{_INITRAMFS_SCRIPT}EOF
chmod 0755 "$root/etc/initramfs-tools/scripts/local-bottom/k8sconf-config"
for d in {' '.join(PRUNED_MODULES)}; do rm -rf "$root"/usr/lib/modules/*/kernel/$d; done
for k in "$root"/usr/lib/modules/*; do chroot "$root" depmod "$(basename "$k")"; done
chroot "$root" update-initramfs -u -k all
printf '/dev/vda / ext4 defaults 0 1\\n' > "$root/etc/fstab"
echo localhost > "$root/etc/hostname"
rm -rf "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/locale/* \\
  "$root"/var/cache/apt/* "$root"/var/lib/apt/lists/*
: > "$root/etc/machine-id"
"""


DOCKER_PACKAGES = ("docker.io", "iptables", "bridge-utils", "etcd-client", "busybox-static",
                   "python3")
DOCKER_DISK_SIZE = "4G"
REGISTRY_SCRIPT = "/usr/local/lib/k8sconf/registry.py"
_REGISTRY_UNIT = f"""[Unit]
Description=k8sconf test image: a registry mirror serving busybox on 127.0.0.1:5000
Before=docker.service

[Service]
ExecStart=/usr/bin/python3 {REGISTRY_SCRIPT} {BUSYBOX_TAR} 127.0.0.1
Restart=on-failure

[Install]
WantedBy=multi-user.target
"""
_DOCKER_CUSTOMIZE = f"""{busybox_tar_hook()}mkdir -p "$root/usr/local/lib/k8sconf" "$root/etc/docker"
cat > "$root{REGISTRY_SCRIPT}" <<'K8SCONF_EOF'
{Path(droplet_registry.__file__).read_text()}K8SCONF_EOF
printf '%s' '{droplet_registry.daemon_json("127.0.0.1")}' > "$root/etc/docker/daemon.json"
cat > "$root/etc/systemd/system/k8sconf-registry.service" <<'EOF'
{_REGISTRY_UNIT}EOF
chroot "$root" systemctl disable docker.service docker.socket containerd.service
chroot "$root" systemctl enable k8sconf-registry.service
"""


@dataclass(frozen=True)
class TestImage:
    base: Path        # qcow2, never written: VMs get overlays on it
    kernel: Path
    initrd: Path
    built: bool       # False when it came from the cache
    seconds: float


def _recipe(docker: bool) -> tuple[tuple[str, ...], str, str]:
    """(packages, customize hook, disk size) of the plain image or the Docker variant."""
    if not docker:
        return PACKAGES, _CUSTOMIZE, DISK_SIZE
    # the Docker lines run before the common hook, whose clean-up ends the recipe
    return PACKAGES + DOCKER_PACKAGES, _CUSTOMIZE.replace(
        "sed -i 's/^MODULES=", _DOCKER_CUSTOMIZE + "sed -i 's/^MODULES=", 1), DOCKER_DISK_SIZE


def recipe_hash(docker: bool = False) -> str:
    packages, customize, disk = _recipe(docker)
    text = "\n".join([str(RECIPE_VERSION), SUITE, *MIRRORS, *sorted(packages), customize, disk])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def image_dir(cache_dir: Path, docker: bool = False) -> Path:
    return cache_dir / f"test-image-{'docker-' if docker else ''}{recipe_hash(docker)}"


def ensure_image(cache_dir: Path, docker: bool = False) -> TestImage:
    """The cached image, built first when missing; safe against concurrent callers."""
    started = time.monotonic()
    final = image_dir(cache_dir, docker)
    built = False
    if not (final / "base.qcow2").is_file():
        cache_dir.mkdir(parents=True, exist_ok=True)
        with open(cache_dir / "test-image.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not (final / "base.qcow2").is_file():
                _build(final, docker)
                built = True
                _prune_old(final, docker)
    return TestImage(final / "base.qcow2", final / "vmlinuz", final / "initrd.img", built,
                     time.monotonic() - started)


def _run(cmd: list[str], what: str) -> None:
    proc = subprocess.run(cmd, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise RuntimeError(f"qemu test image: {what} failed with status {proc.returncode} "
                           "(its output is above)")


def _build(final: Path, docker: bool) -> None:
    # Everything happens in a temp dir beside the final one, renamed at the end: a
    # killed build leaves no half image under the final name.
    tmp = final.parent / f".{final.name}.tmp"
    _remove_tree(tmp)
    tmp.mkdir(parents=True)
    tree = tmp / "rootfs"
    print(f"qemu test image: building {final} with mmdebstrap (first run only, "
          "about a minute)", file=sys.stderr, flush=True)
    packages, customize, disk = _recipe(docker)
    try:
        _run(["mmdebstrap", "--variant=minbase", "--mode=root", "--include=" + ",".join(packages),
              "--customize-hook=" + customize, SUITE, str(tree), *MIRRORS], "mmdebstrap")
        kernels = sorted((tree / "boot").glob("vmlinuz-*"))
        initrds = sorted((tree / "boot").glob("initrd.img-*"))
        if len(kernels) != 1 or len(initrds) != 1:
            raise RuntimeError(f"qemu test image: expected one kernel and one initrd in "
                               f"{tree / 'boot'}, found {kernels + initrds}")
        shutil.copy2(kernels[0], tmp / "vmlinuz")
        shutil.copy2(initrds[0], tmp / "initrd.img")
        raw = tmp / "disk.raw"
        _run(["mkfs.ext4", "-q", "-F", "-L", "root", "-d", str(tree), str(raw), disk],
             "mkfs.ext4 -d")
        _remove_tree(tree)
        _run(["qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", str(raw),
              str(tmp / "base.qcow2")], "qemu-img convert")
        raw.unlink()
        tmp.rename(final)
    finally:
        _remove_tree(tmp)


def _remove_tree(path: Path) -> None:
    """rm -rf that never follows a mount out of the tree (a killed mmdebstrap may leave
    /proc, /sys or /dev mounted in it)."""
    if not path.exists():
        return
    mounts = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    for mount in sorted((m for m in mounts if m.startswith(str(path) + "/")), reverse=True):
        subprocess.run(["umount", "-l", mount], capture_output=True)
    subprocess.run(["rm", "-rf", "--one-file-system", str(path)], check=False)


def _prune_old(keep: Path, docker: bool) -> None:
    """Older builds of the same variant (a plain image's name is its 16-digit hash)."""
    pattern = "test-image-docker-*" if docker else "test-image-" + "?" * 16
    for old in keep.parent.glob(pattern):
        if old != keep and old.is_dir():
            _remove_tree(old)


if __name__ == "__main__":   # by hand: python3 -m tests.e2e.qemu_image [--docker] [CACHE_DIR]
    args = [a for a in sys.argv[1:] if a != "--docker"]
    image = ensure_image(Path(args[0] if args else "/var/cache/k8s-coreos-conformance/qemu"),
                         docker="--docker" in sys.argv[1:])
    print(f"{image.base} {image.kernel} {image.initrd} ({image.seconds:.1f} s)")
