"""The inventory: which cluster to test and how to reach it, validated with pydantic.

Every error becomes :class:`InventoryError`, one line naming the file, the field
path and what was expected; the pytest plugin turns it into a usage error. Each
section's model is in helpers/inventory_sections.py, the field types that take only
plain values in helpers/inventory_types.py; here is the whole inventory, the checks
that span sections, and loading.
"""
from __future__ import annotations

import ipaddress
import os
import re
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ValidationError, model_validator
from pydantic_core import ErrorDetails

from helpers import spec
from helpers.inventory_sections import (
    Artifacts,
    Bootstrap,
    Deviations,
    DigitalOceanSettings,
    GuideVars,
    LocalSettings,
    NodeSpec,
    QemuSettings,
    SSHSettings,
)
from helpers.inventory_types import CONTROL, Strict, shown

ROOT = Path(__file__).resolve().parent.parent
INVENTORY_DIR = ROOT / "inventories"
DEFAULT_INVENTORY = INVENTORY_DIR / "local.yaml"
ENV_VAR = "K8SCONF_INVENTORY"
SCHEMA_PATH = INVENTORY_DIR / "schema.json"


class InventoryError(Exception):
    """A bad inventory; str() is the one line shown to the user."""

class Inventory(Strict):
    provider: Literal["local", "qemu", "digitalocean", "static"]
    nodes: list[NodeSpec] | None = None
    ssh: SSHSettings = SSHSettings()
    artifacts: Artifacts | None = None
    bootstrap: Bootstrap = Bootstrap()
    deviations: Deviations = Deviations()
    guide: GuideVars = GuideVars()
    local: LocalSettings | None = None
    qemu: QemuSettings | None = None
    digitalocean: DigitalOceanSettings | None = None

    @model_validator(mode="after")
    def _consistent(self):
        settings = {"local": self.local, "qemu": self.qemu,
                    "digitalocean": self.digitalocean}
        for name, value in settings.items():
            if value is not None and name != self.provider:
                raise ValueError(f"section '{name}' given but provider is '{self.provider}'")
        if self.provider == "local" and self.local is None:
            object.__setattr__(self, "local", LocalSettings())
        if self.provider in ("qemu", "digitalocean") and settings[self.provider] is None:
            raise ValueError(f"section '{self.provider}' is required for provider '{self.provider}'")
        if self.provider == "static":
            self._check_static_nodes()
        if self.nodes:
            self._check_nodes()
        if self.bootstrap.enabled and self.artifacts is None:
            raise ValueError("'artifacts' is required when bootstrap is enabled")
        self._check_ignored()
        self._check_provider_fit()
        self._check_networks()
        self._check_flannel_subnets()
        return self

    # -- what a provider ignores ------------------------------------------------------
    def _check_ignored(self):
        """A field the provider does not use is refused: it would be silently ignored."""
        ssh_set = self.ssh.model_fields_set
        if self.provider in ("local", "qemu"):
            if "key" in ssh_set and self.ssh.key is not None:
                raise ValueError(f"ssh.key: ignored by provider '{self.provider}', which "
                                 "generates a key per run; remove it")
            if "port" in ssh_set:
                where = ("22 on each node's own address" if self.provider == "local"
                         else "a forward from qemu.ssh_base_port + N")
                raise ValueError(f"ssh.port: ignored by provider '{self.provider}' (SSH goes "
                                 f"to {where}); remove it")
        if self.provider == "digitalocean" and self.nodes:
            for i, node in enumerate(self.nodes):
                for attr in ("public_ip", "private_ip"):
                    if getattr(node, attr) is not None:
                        raise ValueError(f"nodes.{i}.{attr}: ignored by provider "
                                         "'digitalocean' (a droplet's addresses come from "
                                         "DigitalOcean); remove it")
        if self.provider == "local" and self.bootstrap.mode == "cloud-config":
            raise ValueError("bootstrap.mode: 'cloud-config' is ignored by provider 'local' "
                             "(its nodes take no user data; the SSH bootstrap installs the "
                             "guide); use 'ssh'")
        settings = self._settings()
        if self.nodes and settings is not None and "count" in settings.model_fields_set:
            raise ValueError(f"{self.provider}.count: ignored when 'nodes' is given (the "
                             "nodes list is the cluster); remove one")

    def _check_provider_fit(self):
        if self.provider == "local" and self.ssh.user != "core":
            raise ValueError(f"ssh.user: provider 'local' logs in as 'core' (the node image "
                             f"has that user only), not {shown(self.ssh.user)}")
        if self.provider == "digitalocean" and self.ssh.key is None:
            raise ValueError("ssh.key: required for provider 'digitalocean' (the private key "
                             f"whose public half logs in as {self.ssh.user})")
        if self.provider == "qemu" and self.qemu is not None:
            count = len(self.node_specs())
            if self.qemu.ssh_base_port + count > 65535:
                raise ValueError(f"qemu.ssh_base_port: {self.qemu.ssh_base_port} + {count} "
                                 "nodes passes port 65535")

    def _settings(self):
        return {"local": self.local, "qemu": self.qemu}.get(self.provider)

    # -- networks ---------------------------------------------------------------------
    def _check_networks(self):
        guide = self.guide
        for name in ("flannel_network", "portal_net"):
            problem = _special(getattr(guide, name))
            if problem:
                raise ValueError(f"guide.{name}: {getattr(guide, name)} is {problem}")
        # portal_net may overlap flannel_network: the guide's own values do (an advisory)
        settings = self._settings()
        if settings is not None:
            self._check_node_networks(settings)
        for i, node in enumerate(self.nodes or ()):
            for attr in ("public_ip", "private_ip"):
                address = getattr(node, attr)
                for name in ("flannel_network", "portal_net"):
                    if address is not None and address in getattr(guide, name):
                        raise ValueError(f"nodes.{i}.{attr}: {address} lies in "
                                         f"guide.{name} {getattr(guide, name)}")

    def _check_node_networks(self, settings):
        section = self.provider
        nets = {f"{section}.public_network": settings.public_network,
                f"{section}.private_network": settings.private_network}
        for name, net in nets.items():
            problem = _special(net) or (None if _rfc1918(net) else
                                        "not a private range (RFC 1918: 10.0.0.0/8, "
                                        "172.16.0.0/12 or 192.168.0.0/16)")
            if problem:
                raise ValueError(f"{name}: {net} is {problem}")
        (pub_name, pub), (priv_name, priv) = nets.items()
        if pub.overlaps(priv):
            raise ValueError(f"{pub_name} {pub} and {priv_name} {priv} overlap")
        for name, net in nets.items():
            for guide_name in ("flannel_network", "portal_net"):
                other = getattr(self.guide, guide_name)
                if net.overlaps(other):
                    raise ValueError(f"{name}: {net} overlaps guide.{guide_name} {other}")
        self._check_node_addresses(settings, nets)

    def _check_node_addresses(self, settings, nets):
        """Each node's address as the provider derives it (node N: .N) is a usable host
        address of its network: not the network, broadcast or the host's own."""
        (pub_name, pub), (priv_name, priv) = nets.items()
        if self.provider == "local":
            reserved = {pub_name: {pub.broadcast_address - 1},
                        priv_name: {priv.broadcast_address - 1}}
            owner = "the host's own address on the bridge"
        else:   # qemu: both segments hold the VMs only
            reserved = {pub_name: set(), priv_name: set()}
            owner = ""
        for index, node in enumerate(self.node_specs(), start=1):
            for attr, (name, net) in zip(("public_ip", "private_ip"), nets.items(), strict=True):
                given = getattr(node, attr)
                if given is None:
                    if index >= net.num_addresses - 1 or net[index] in reserved[name]:
                        taken = f", and {owner} is taken" if reserved[name] else ""
                        raise ValueError(f"{name}: {net} is too small for "
                                         f"{len(self.node_specs())} nodes (node N is .N"
                                         f"{taken})")
                    continue
                where = f"nodes.{index - 1}.{attr}: {given}"
                if given not in net:
                    if self.provider == "local":
                        continue    # the local provider says so when it plans the nodes
                    raise ValueError(f"{where} is not in {name} {net}")
                if given in (net.network_address, net.broadcast_address):
                    raise ValueError(f"{where} is the network or broadcast address of {net}")
                if given in reserved[name]:
                    raise ValueError(f"{where} is {owner}")

    # -- flannel ----------------------------------------------------------------------
    def _check_flannel_subnets(self):
        network, length = self.guide.flannel_network, self.guide.flannel_subnet_len
        if length <= network.prefixlen:
            raise ValueError(f"guide.flannel_subnet_len: /{length} is not inside "
                             f"guide.flannel_network {network} (it must be longer than "
                             f"/{network.prefixlen})")
        nodes = len(self.node_specs())
        # flannel 0.2.0 leaves the network's first subnet unused (subnet/config.go)
        subnets = 2 ** (length - network.prefixlen) - 1
        if subnets < nodes:
            raise ValueError(f"guide.flannel_subnet_len: {network} holds {subnets} /{length} "
                             f"subnet{'s' if subnets != 1 else ''} for hosts (flannel skips "
                             f"the first), fewer than the {nodes} nodes")
        if not any("SubnetLen" in line for line in spec.unit(spec.FLANNEL).exec_start_pre):
            # the guide writes only Network: flannel 0.2.0 then picks the length itself
            chosen = 24 if network.prefixlen < 24 else network.prefixlen + 1
            if length != chosen:
                raise ValueError(f"guide.flannel_subnet_len: /{length}, but the guide's "
                                 f"network config names no SubnetLen, so flannel 0.2.0 gives "
                                 f"each host a /{chosen} of {network}")

    def _check_static_nodes(self):
        if not self.nodes:
            raise ValueError("provider 'static' needs 'nodes'")
        for i, node in enumerate(self.nodes):
            if node.public_ip is None or node.private_ip is None:
                raise ValueError(f"nodes.{i}: provider 'static' needs public_ip and private_ip")

    def _check_nodes(self):
        assert self.nodes is not None  # called only when there are nodes
        names = [n.name for n in self.nodes]
        if len(set(names)) != len(names):
            raise ValueError("nodes: names must be unique")
        if [n.role for n in self.nodes].count("master") != 1:
            raise ValueError("nodes: exactly one node must have role 'master'")
        for attr in ("public_ip", "private_ip"):
            ips = [getattr(n, attr) for n in self.nodes if getattr(n, attr)]
            if len(set(ips)) != len(ips):
                raise ValueError(f"nodes: {attr} values must be unique")

    def node_specs(self) -> list[NodeSpec]:
        """The nodes this run tests, known before any cluster exists (for collection)."""
        if self.nodes:
            return list(self.nodes)
        settings = {"local": self.local, "qemu": self.qemu}.get(self.provider)
        count = settings.count if settings is not None else 3
        return [NodeSpec(name=f"coreos-{i}", role="master" if i == 1 else "minion")
                for i in range(1, count + 1)]


RFC1918 = tuple(ipaddress.IPv4Network(n) for n in ("10.0.0.0/8", "172.16.0.0/12",
                                                 "192.168.0.0/16"))
SPECIAL = (("0.0.0.0/8", "'this network' (0.0.0.0/8)"), ("127.0.0.0/8", "loopback (127.0.0.0/8)"),
           ("169.254.0.0/16", "link-local (169.254.0.0/16)"),
           ("224.0.0.0/4", "multicast (224.0.0.0/4)"), ("240.0.0.0/4", "reserved (240.0.0.0/4)"))


def _special(network: ipaddress.IPv4Network) -> str | None:
    """What a network that no node network may touch is, if it touches one."""
    for net, what in SPECIAL:
        if network.overlaps(ipaddress.IPv4Network(net)):
            return f"{what}" if network.subnet_of(ipaddress.IPv4Network(net)) \
                else f"overlapping {what}"
    return None


def _rfc1918(network: ipaddress.IPv4Network) -> bool:
    return any(network.subnet_of(r) for r in RFC1918)


def resolve_path(value: str | os.PathLike | None, cwd: Path | None = None) -> Path:
    """A path relative to the working directory, or a bare name in inventories/."""
    if not value:
        value = os.environ.get(ENV_VAR) or DEFAULT_INVENTORY
    path = Path(value)
    candidates = [path if path.is_absolute() else (cwd or Path.cwd()) / path]
    if len(path.parts) == 1:
        candidates += [INVENTORY_DIR / path, INVENTORY_DIR / f"{path}.yaml"]
    for candidate in candidates:
        if candidate.is_file():
            return candidate.resolve()
    raise InventoryError(f"inventory {value}: file not found (looked in the working "
                         f"directory and {INVENTORY_DIR})")


def _field_path(loc: tuple) -> str:
    # pydantic reports union branches and validators in loc; keep only the user's path.
    parts = [str(p) for p in loc if not (isinstance(p, str) and ("[" in p or p.startswith("function-")))]
    return ".".join(parts) or "(top level)"


def _describe(error: ErrorDetails) -> str:
    msg = error["msg"].removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        return "unknown field"
    if error["type"] == "missing":
        return "required field is missing"
    return msg


def one_line(text: str) -> str:
    """The message as one line: control characters (from the user's input) escaped."""
    return CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode(), text)


def parse(data, source: str = "<inventory>") -> Inventory:
    if not isinstance(data, dict):
        raise InventoryError(one_line(f"inventory {source}: expected a YAML mapping at the "
                                      f"top level, found {type(data).__name__}"))
    try:
        return Inventory.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
        first = errors[0]
        more = len(errors) - 1
        suffix = f" (and {more} more error{'s' if more > 1 else ''})" if more else ""
        path, message = _field_path(first["loc"]), _describe(first)
        # a whole-inventory check names its own field ("ssh.key: ignored by ...")
        where = "" if path == "(top level)" and FIELD_FIRST.match(message) else f"{path}: "
        raise InventoryError(one_line(f"inventory {source}: {where}{message}{suffix}")) from None
    except RecursionError:
        raise InventoryError(one_line(f"inventory {source}: nested too deeply")) from None


FIELD_FIRST = re.compile(r"^[a-z_]+(\.[a-z0-9_]+)*: ")


def load(path: Path) -> Inventory:
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise InventoryError(one_line(f"inventory {path}: not valid YAML{where}: "
                                      f"{getattr(exc, 'problem', None) or exc}")) from None
    except OSError as exc:
        raise InventoryError(one_line(f"inventory {path}: cannot read: {exc.strerror}")) from None
    except UnicodeDecodeError:
        raise InventoryError(one_line(f"inventory {path}: not UTF-8 text")) from None
    except RecursionError:
        raise InventoryError(one_line(f"inventory {path}: nested too deeply")) from None
    inventory = parse(data, str(path))
    return _anchor_paths(inventory, path.parent)


def _anchor_paths(inventory: Inventory, base: Path) -> Inventory:
    """Relative paths in an inventory are relative to the inventory file."""
    def fix(p):
        if p is None:
            return None
        p = p.expanduser()
        return p if p.is_absolute() else (base / p).resolve()
    updates: dict[str, BaseModel] = {}
    if inventory.artifacts and inventory.artifacts.dir:
        updates["artifacts"] = inventory.artifacts.model_copy(update={"dir": fix(inventory.artifacts.dir)})
    ssh = inventory.ssh.model_copy(update={"key": fix(inventory.ssh.key),
                                           "known_hosts": fix(inventory.ssh.known_hosts)})
    updates["ssh"] = ssh
    if inventory.qemu:
        updates["qemu"] = inventory.qemu.anchored(fix)
    return inventory.model_copy(update=updates)


def schema_of(model: type[BaseModel], what: str) -> dict:
    """A model's JSON Schema as we commit it (inventories/*.schema.json)."""
    schema = model.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = f"k8s-coreos-conformance {what}"
    return schema


def write_schema(module: str, path: Path, schema: dict, argv: list[str]) -> None:
    """`python3 -m <module> --schema`: write the committed schema file."""
    import json
    import sys
    if argv != ["--schema"]:
        sys.exit(f"usage: python3 -m {module} --schema")
    path.write_text(json.dumps(schema, indent=2) + "\n")
    print(f"wrote {path}")


def json_schema() -> dict:
    return schema_of(Inventory, "inventory")


if __name__ == "__main__":
    import sys
    write_schema("helpers.inventory", SCHEMA_PATH, json_schema(), sys.argv[1:])
