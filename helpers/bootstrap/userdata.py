"""The guide's own next step: nodes that install themselves at boot.

The same spec and unit rendering as the SSH bootstrap, carried as Flatcar Ignition
(spec 3.3) JSON or as legacy CoreOS cloud-config (both rendered by ignition.py), with a
oneshot unit that fetches /opt/bin from the artifacts URL and checks its sha256 before
anything needs it.
"""
from __future__ import annotations

from dataclasses import dataclass

from helpers import spec
from helpers.bootstrap import units as units_mod
from helpers.bootstrap.ignition import VERSION, MachineConfig
from helpers.inventory import Inventory

IGNITION_VERSION = VERSION
MAX_USER_DATA = 64 * 1024  # DigitalOcean's limit
FETCH_UNIT = "opt-bin.service"
METADATA_ENV_UNIT = "coreos-environment.service"
NEEDS_OPT_BIN = {u.name for u in spec.UNITS if u.provides_binary}


class UserDataError(Exception):
    pass


@dataclass(frozen=True)
class NodeIdentity:
    """What one node is told at boot. IPs may be unknown (cloud): then metadata supplies them."""

    name: str
    role: str
    public_ip: str | None = None
    private_ip: str | None = None
    host_key_private: str | None = None  # OpenSSH ed25519 private key, so the suite can verify
    host_key_public: str | None = None


def _fetch_unit(inventory: Inventory) -> str:
    art = inventory.artifacts
    if art is None or art.url is None:
        raise UserDataError("cloud-config bootstrap needs artifacts.url (with sha256): nodes "
                            "download /opt/bin themselves")
    script = (f"set -e; curl -fsSL --retry 5 --max-time 300 -o /tmp/opt-bin.tgz '{art.url}'; "
              f"echo '{art.sha256}  /tmp/opt-bin.tgz' | sha256sum -c -; mkdir -p {spec.BIN_DIR}; "
              f"tar xzf /tmp/opt-bin.tgz -C {spec.BIN_DIR}; rm -f /tmp/opt-bin.tgz")
    return "\n".join([
        "[Unit]", "Description=Fetch the Kubernetes and flannel binaries into /opt/bin",
        "Wants=network-online.target", "After=network-online.target",
        f"ConditionPathExists=!{spec.BIN_DIR}/kubelet", "",
        "[Service]", "Type=oneshot", "RemainAfterExit=yes",
        # `%` starts a systemd specifier; a URL may hold one
        f"ExecStart=/bin/sh -c \"{script.replace('%', '%%')}\"", "",
        "[Install]", f"WantedBy={spec.WANTED_BY}", ""])


def _metadata_environment_unit() -> str:
    # Flatcar on DigitalOcean: coreos-metadata knows the droplet's addresses at boot.
    # `$$` is systemd's escape for a literal `$`.
    script = (". /run/metadata/flatcar; "
              "echo COREOS_PUBLIC_IPV4=$${COREOS_DIGITALOCEAN_IPV4_PUBLIC_0} > /etc/environment; "
              "echo COREOS_PRIVATE_IPV4=$${COREOS_DIGITALOCEAN_IPV4_PRIVATE_0} >> /etc/environment")
    return "\n".join([
        "[Unit]", "Description=Write /etc/environment as CoreOS did",
        "Requires=coreos-metadata.service", "After=coreos-metadata.service",
        "Before=flannel.service kubelet.service", "",
        "[Service]", "Type=oneshot", "RemainAfterExit=yes",
        f'ExecStart=/bin/sh -c "{script}"', "",
        "[Install]", f"WantedBy={spec.WANTED_BY}", ""])


def _with_fetch_dependency(name: str, text: str) -> str:
    """Units that run an /opt/bin binary wait for the download."""
    if name not in NEEDS_OPT_BIN:
        return text
    return text.replace("[Unit]\n", f"[Unit]\nRequires={FETCH_UNIT}\nAfter={FETCH_UNIT}\n", 1)


def node_units(inventory: Inventory, node: NodeIdentity, machines: list[str]) -> dict[str, str]:
    values = units_mod.node_values(inventory, machines, node.private_ip or "")
    units = {name: _with_fetch_dependency(name, text)
             for name, text in units_mod.render_for_role(node.role, values).items()}
    units[FETCH_UNIT] = _fetch_unit(inventory)
    if node.private_ip is None:
        units[METADATA_ENV_UNIT] = _metadata_environment_unit()
    return units


def _environment(node: NodeIdentity) -> str | None:
    if node.private_ip is None:
        return None
    return f"COREOS_PUBLIC_IPV4={node.public_ip or ''}\nCOREOS_PRIVATE_IPV4={node.private_ip}\n"


def _files(node: NodeIdentity) -> list[tuple[str, str, int]]:
    files = [("/etc/hostname", node.name + "\n", 0o644)]
    environment = _environment(node)
    if environment:
        files.append((spec.NODE_ENVIRONMENT, environment, 0o644))
    if node.host_key_private:
        files.append(("/etc/ssh/ssh_host_ed25519_key", node.host_key_private, 0o600))
    if node.host_key_public:
        files.append(("/etc/ssh/ssh_host_ed25519_key.pub", node.host_key_public + "\n", 0o644))
    return files


def node_config(inventory: Inventory, node: NodeIdentity, machines: list[str],
                ssh_keys: list[str]) -> MachineConfig:
    return MachineConfig(inventory.ssh.user, ssh_keys, _files(node),
                         list(node_units(inventory, node, machines).items()), hostname=node.name)


def ignition(inventory: Inventory, node: NodeIdentity, machines: list[str],
             ssh_keys: list[str]) -> str:
    return _bounded(node_config(inventory, node, machines, ssh_keys).ignition(), node)


def cloud_config(inventory: Inventory, node: NodeIdentity, machines: list[str],
                 ssh_keys: list[str]) -> str:
    return _bounded(node_config(inventory, node, machines, ssh_keys).cloud_config(), node)


def _bounded(text: str, node: NodeIdentity) -> str:
    size = len(text.encode())
    if size > MAX_USER_DATA:
        raise UserDataError(f"{node.name}: user_data is {size} bytes, more than the "
                            f"{MAX_USER_DATA} bytes DigitalOcean accepts")
    return text


def render(inventory: Inventory, node: NodeIdentity, machines: list[str],
           ssh_keys: list[str], kind: str = "ignition") -> str:
    render_kind = {"ignition": ignition, "cloud-config": cloud_config}[kind]
    return render_kind(inventory, node, machines, ssh_keys)
