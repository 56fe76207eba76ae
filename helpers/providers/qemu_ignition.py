"""What each qemu VM is told at first boot: its Ignition 3.3 config, and the same config
as a tar for images without Ignition.

- Identity: generated per run and per node, never baked into the image: the run's SSH
  key for `ssh.user`, a fresh ed25519 host key per node, the hostname,
  /etc/environment (COREOS_PUBLIC_IPV4 / COREOS_PRIVATE_IPV4), /etc/hosts,
  systemd-networkd files that put the addresses on the NICs by MAC, and etcd:
  `etcd-member.service` (Flatcar's unit name), with `etcd.service` an alias of it for the
  guide's units, enabled with a drop-in of `ETCD_*`
  variables: members on the private addresses, clients on 2379 and the guide's 4001,
  the v2 API on. With `bootstrap.mode: cloud-config` it is the full userdata.ignition()
  config, the guide's units included, plus the above. Under TCG etcd gets a longer
  heartbeat and election timeout: an emulated guest on a busy host stalls for longer
  than etcd's default 1 s election timeout.
- Delivery (`qemu.config_delivery`):
  `ignition` (Flatcar): the config file as `-fw_cfg name=opt/org.flatcar-linux/config`,
  where Flatcar's Ignition looks for it on QEMU.
  `fw_cfg-files` (images without Ignition, e.g. the e2e Debian image): the SAME config
  translated to a tar (files; users' sshAuthorizedKeys as ~/.ssh/authorized_keys;
  units, drop-ins, and `enabled` as .wants symlinks; see ignition_to_tar) passed as
  `-fw_cfg name=opt/k8sconf/config.tar`, which the image unpacks in its initramfs.
"""
from __future__ import annotations

import base64
import io
import tarfile
import time
import urllib.parse
from dataclasses import replace

from helpers import spec
from helpers.bootstrap import userdata
from helpers.bootstrap.ignition import MachineConfig
from helpers.inventory import Inventory
from helpers.inventory_sections import QemuSettings
from helpers.providers.base import ProviderError
from helpers.providers.machines import ETCD_DROPIN, etcd_dropin, etcd_environment, hosts_file
from helpers.providers.qemu_vm import VMPlan

FLATCAR_FW_CFG = "opt/org.flatcar-linux/config"
FILES_FW_CFG = "opt/k8sconf/config.tar"
ETCD_UNIT = spec.FLATCAR_ETCD
# the guide's units Require and order themselves After= etcd.service: on Flatcar, an alias
# (a symlinked unit file) makes that name Flatcar's etcd-member.service
ETCD_ALIAS = (f"{spec.UNIT_DIR}/{spec.ETCD}", f"/usr/lib/systemd/system/{spec.FLATCAR_ETCD}")


def _network_file(mac: str, address: str, prefixlen: int) -> str:
    # IPv4 only, as the guide: no link-local or router-advertised IPv6 to wait for
    lines = ["# written by k8s-coreos-conformance (qemu provider)", "[Match]",
             f"MACAddress={mac}", "", "[Network]", f"Address={address}/{prefixlen}",
             "LinkLocalAddressing=no", "IPv6AcceptRA=no"]
    return "\n".join(lines) + "\n"


def _management_network_file(mac: str) -> str:
    """QEMU's user-mode network gives the address (10.0.2.15), its gateway and DNS."""
    return "\n".join(["# written by k8s-coreos-conformance (qemu provider): the SSH "
                      "port forward's network", "[Match]", f"MACAddress={mac}", "",
                      "[Network]", "DHCP=ipv4", "LinkLocalAddressing=no", "IPv6AcceptRA=no",
                      ""])


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
    extra_files = [
        ("/etc/hosts", hosts_file(plans), 0o644),
        ("/etc/systemd/network/10-k8sconf-public.network",
         _network_file(plan.public_mac, plan.public_ip, settings.public_network.prefixlen),
         0o644),
        ("/etc/systemd/network/10-k8sconf-management.network",
         _management_network_file(plan.management_mac), 0o644),
        ("/etc/systemd/network/10-k8sconf-private.network",
         _network_file(plan.private_mac, plan.private_ip, settings.private_network.prefixlen),
         0o644),
    ]
    env = etcd_environment((plan.name, plan.private_ip), [(p.name, p.private_ip) for p in plans],
                           etcd_token, slow=slow)
    etcd = etcd_dropin(env, "qemu provider")
    return replace(base, files=[*base.files, *extra_files],
                   units=[*base.units, (ETCD_UNIT, None)],
                   dropins=[*base.dropins, (ETCD_UNIT, ETCD_DROPIN, etcd)],
                   links=[ETCD_ALIAS]).ignition_dict()


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

    Carried: storage.files (data: URLs, mode, root-owned), storage.links (symlinks),
    passwd.users[].sshAuthorizedKeys
    (~/.ssh/authorized_keys, owned by the user's NAME so the image's own passwd gives the
    uid), systemd.units (contents to /etc/systemd/system, dropins to <unit>.d/, enabled
    as a .wants symlink for the [Install] WantedBy target, default multi-user.target,
    mask as a /dev/null link). Anything else in the config is refused, not dropped.
    """
    unsupported = sorted(set(config.get("storage", {})) - {"files", "links"}) + \
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
        for link in config.get("storage", {}).get("links", []):
            add(link["path"], kind=tarfile.SYMTYPE, target=link["target"])
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
