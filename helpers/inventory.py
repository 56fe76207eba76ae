"""The inventory: which cluster to test and how to reach it, validated with pydantic.

Every error becomes :class:`InventoryError`, one line naming the file, the field
path and what was expected; the pytest plugin turns it into a usage error.
"""
from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import (BaseModel, ConfigDict, Field, ValidationError,
                      model_validator)

from helpers import spec

ROOT = Path(__file__).resolve().parent.parent
INVENTORY_DIR = ROOT / "inventories"
DEFAULT_INVENTORY = INVENTORY_DIR / "local.yaml"
ENV_VAR = "K8SCONF_INVENTORY"
SCHEMA_PATH = INVENTORY_DIR / "schema.json"

IPv4 = Annotated[ipaddress.IPv4Address, Field(description="an IPv4 address")]
Network = Annotated[ipaddress.IPv4Network, Field(description="an IPv4 network in CIDR form")]
Port = Annotated[int, Field(ge=1, le=65535)]
Name = Annotated[str, Field(pattern=r"^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$",
                            description="a lower-case host name")]


class InventoryError(Exception):
    """A bad inventory; str() is the one line shown to the user."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NodeSpec(Strict):
    name: Name
    role: Literal["master", "minion"]
    public_ip: IPv4 | None = None
    private_ip: IPv4 | None = None


class SSHSettings(Strict):
    user: str = "core"
    key: Path | None = Field(None, description="private key; local and qemu generate one per run")
    port: Port = 22
    host_key_policy: Literal["verify", "accept-new"] = "verify"
    known_hosts: Path | None = None
    connect_timeout: float = Field(10, gt=0, le=600)
    command_timeout: float = Field(60, gt=0, le=3600)


class Artifacts(Strict):
    """Where the bootstrap takes /opt/bin from: the guide's binaries built from source
    (`build: true`), a directory, or a tarball URL with sha256."""

    build: bool = Field(False, description="build flannel v0.2.0 and Kubernetes v0.7.0 from "
                        "source as the guide does (sources: $K8SCONF_SOURCES or upstream)")
    dir: Path | None = None
    url: str | None = Field(None, pattern=r"^(https?|file)://\S+$")
    sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$")
    standins: bool = Field(False, description="the binaries are this project's stand-ins")

    @model_validator(mode="after")
    def _one_source(self):
        if [self.build, self.dir is not None, self.url is not None].count(True) != 1:
            raise ValueError("exactly one of 'build: true', 'dir' or 'url' is required")
        if self.url and not self.sha256:
            raise ValueError("'sha256' is required with 'url'")
        if self.standins and self.dir is None:
            raise ValueError("'standins: true' goes with 'dir' (this project's stand-ins)")
        return self


class Bootstrap(Strict):
    enabled: bool = True
    mode: Literal["ssh", "cloud-config"] = "ssh"
    ship: Literal["all", "required"] = "all"
    settle_timeout: float = Field(120, gt=0, le=3600)
    reboot: bool = True


class Deviations(Strict):
    """Where the node OS cannot run the guide's 2014 lines, named here and reported."""

    docker_command: str | None = Field(None, description="guide: /usr/bin/docker -d")
    docker_storage_flag: str | None = Field(None, description="guide: -s=btrfs")
    docker_host: str | None = Field(None, description="guide: fd://")
    etcdctl_env: str | None = Field(None, description="guide: none; etcd 3.4 needs 'ETCDCTL_API=2 '")
    docker_forward_accept: bool = Field(
        False, description="guide: no FORWARD rules. Docker >= 1.13 sets the FORWARD policy "
        "to DROP and flannel 0.2.0 adds no rules: docker.service then ACCEPTs the flannel "
        "network in FORWARD (ExecStartPost)")
    kubelet_docker_api: str | None = Field(
        None, pattern=r"^1\.[0-9]{1,2}$",
        description="guide: the kubelet's unversioned Docker API requests, with which Docker "
        ">= 17.x (API 1.24+) refuses to start containers; docker-api-pin.service serves the "
        "kubelet this API version (1.15: Docker 1.3's)")
    pause_image: Literal["preload"] | None = Field(
        None, description="guide: kubernetes/pause:latest pulled from Docker Hub; preload: "
        "imported on every node from v0.7.0's own build/pause (no registry reachable)")

    def declared(self) -> dict:
        return {k: v for k, v in self.model_dump().items() if v not in (None, False)}


class GuideVars(Strict):
    flannel_network: Network = ipaddress.IPv4Network(spec.DEFAULTS["flannel_network"])
    flannel_subnet_len: int = Field(spec.DEFAULTS["flannel_subnet_len"], ge=8, le=30)
    portal_net: Network = ipaddress.IPv4Network(spec.DEFAULTS["portal_net"])
    apiserver_address: IPv4 = ipaddress.IPv4Address(spec.DEFAULTS["apiserver_address"])
    apiserver_port: Port = spec.DEFAULTS["apiserver_port"]
    kubelet_port: Port = spec.DEFAULTS["kubelet_port"]
    etcd_endpoint: str = Field(spec.DEFAULTS["etcd_endpoint"], pattern=r"^https?://[^\s/]+$")

    def values(self) -> dict:
        return {k: str(v) if not isinstance(v, int) else v
                for k, v in self.model_dump().items()}


class LocalSettings(Strict):
    count: int = Field(3, ge=1, le=16)
    prefix: Name = "k8sconf"
    public_network: Network = ipaddress.IPv4Network("192.168.2.0/24")
    private_network: Network = ipaddress.IPv4Network("10.120.0.0/24")
    cache_dir: Path = Path("/var/cache/k8s-coreos-conformance")
    work_dir: Path = Path("/var/lib/k8s-coreos-conformance")
    boot_timeout: float = Field(120, gt=0, le=1800)


class QemuSettings(Strict):
    """VMs under QEMU on this host (see helpers/providers/qemu.py for the design).

    The image is a Flatcar QEMU image (image_url + image_sha256, downloaded once into
    cache_dir) or a local file (image_path); kernel/initrd make QEMU boot that kernel
    directly instead of the disk's own boot loader. Every node gets a copy-on-write
    overlay in work_dir; the base image is never written.
    """

    image_url: str | None = Field(None, pattern=r"^(https?|file)://\S+$",
                                  description="a Flatcar QEMU image (.img, or .bz2/.gz/.xz)")
    image_sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$",
                                     description="sha256 of the file at image_url")
    image_path: Path | None = None
    kernel: Path | None = Field(None, description="direct kernel boot (the e2e Debian image)")
    initrd: Path | None = None
    kernel_append: str = Field("root=/dev/vda rw console=ttyS0",
                               description="kernel command line with 'kernel'")
    firmware: Path | None = Field(None, description="-bios file (e.g. OVMF for UEFI images); "
                                                    "default SeaBIOS")
    config_delivery: Literal["ignition", "fw_cfg-files"] = Field(
        "ignition", description="ignition: the Ignition config as fw_cfg "
        "opt/org.flatcar-linux/config (Flatcar); fw_cfg-files: the same config as a tar "
        "of files in fw_cfg opt/k8sconf/config.tar (images without Ignition)")
    count: int = Field(3, ge=1, le=8)
    memory_mb: int = Field(1024, ge=256, le=16384)
    cpus: int = Field(1, ge=1, le=16)
    accel: Literal["auto", "kvm", "tcg"] = "auto"
    kvm_probe_timeout: float = Field(15, gt=0, le=300,
                                     description="seconds a KVM test boot may take (auto)")
    tcg_tb_size_mb: int = Field(128, ge=16, le=2048,
                                description="TCG code cache; QEMU's default doubles memory")
    prefix: Name = "k8sconf"
    ssh_base_port: Port = Field(22220, description="node N: 127.0.0.1:<base+N> -> guest :22")
    public_network: Network = Field(
        ipaddress.IPv4Network("192.168.2.0/24"),
        description="each VM's own user-mode network; node N is .N (the guide's public IPs); "
                    "reachable from the host only through the SSH port forward")
    private_network: Network = ipaddress.IPv4Network("10.120.0.0/24")
    private_mcast_group: IPv4 = Field(ipaddress.IPv4Address("230.0.0.1"),
                                      description="multicast group of the private segment")
    private_mcast_port: Port = Field(22219, description="one port per cluster on this host")
    restrict_network: bool = Field(True, description="user-mode networking restrict=on: guests "
                                   "reach nothing outside (Flatcar's etcd-member and a "
                                   "cloud-config bootstrap need it off)")
    wait_for_etcd: bool = Field(True, description="create() waits for etcd healthy with all "
                                "members on every node")
    boot_timeout: float = Field(300, gt=0, le=3600)
    cache_dir: Path = Path("/var/cache/k8s-coreos-conformance/qemu")
    work_dir: Path = Field(Path("/var/lib/k8s-coreos-conformance/qemu"),
                           description="overlays, pid files, sockets, per-node configs")

    @model_validator(mode="after")
    def _one_image(self):
        if (self.image_url is None) == (self.image_path is None):
            raise ValueError("exactly one of 'image_url' or 'image_path' is required")
        if self.image_url and not self.image_sha256:
            raise ValueError("'image_sha256' is required with 'image_url'")
        if self.initrd and not self.kernel:
            raise ValueError("'initrd' needs 'kernel'")
        if not self.private_mcast_group.is_multicast:
            raise ValueError(f"private_mcast_group {self.private_mcast_group} is not a "
                             "multicast address (224.0.0.0/4)")
        if self.public_network.overlaps(self.private_network):
            raise ValueError("public_network and private_network overlap")
        return self

    def anchored(self, fix) -> "QemuSettings":
        """Relative paths made relative to the inventory file (see _anchor_paths)."""
        names = ("image_path", "kernel", "initrd", "firmware", "cache_dir", "work_dir")
        return self.model_copy(update={n: fix(getattr(self, n)) for n in names})


class DigitalOceanSettings(Strict):
    region: str = Field("nyc3", pattern=r"^[a-z]{3}[0-9]$")
    size: str = "s-1vcpu-2gb"
    image: str | int = Field(..., description="a slug, or a custom image id (Flatcar/Fedora CoreOS)")
    ssh_keys: list[str | int] = Field(..., min_length=1)
    vpc_uuid: str | None = None
    tags: list[str] = []
    user_data: Literal["ignition", "cloud-config"] = "ignition"
    api_url: str = Field("https://api.digitalocean.com", pattern=r"^https?://\S+$")
    active_timeout: float = Field(600, gt=0, le=3600)

    @model_validator(mode="before")
    @classmethod
    def _no_token(cls, data):
        if isinstance(data, dict) and any("token" in str(k).lower() for k in data):
            raise ValueError("a token does not belong in the inventory; "
                             "set the DIGITALOCEAN_TOKEN environment variable")
        return data


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
        return self

    def _check_static_nodes(self):
        if not self.nodes:
            raise ValueError("provider 'static' needs 'nodes'")
        for i, node in enumerate(self.nodes):
            if node.public_ip is None or node.private_ip is None:
                raise ValueError(f"nodes.{i}: provider 'static' needs public_ip and private_ip")

    def _check_nodes(self):
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
        count = {"local": self.local, "qemu": self.qemu}.get(self.provider)
        count = count.count if count is not None else 3
        return [NodeSpec(name=f"coreos-{i}", role="master" if i == 1 else "minion")
                for i in range(1, count + 1)]


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


def _describe(error: dict) -> str:
    msg = error["msg"].removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        return "unknown field"
    if error["type"] == "missing":
        return "required field is missing"
    return msg


def parse(data, source: str = "<inventory>") -> Inventory:
    if not isinstance(data, dict):
        raise InventoryError(f"inventory {source}: expected a YAML mapping at the top level, "
                             f"found {type(data).__name__}")
    try:
        return Inventory.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        more = len(exc.errors()) - 1
        suffix = f" (and {more} more error{'s' if more > 1 else ''})" if more else ""
        raise InventoryError(f"inventory {source}: {_field_path(first['loc'])}: "
                             f"{_describe(first)}{suffix}") from None


def load(path: Path) -> Inventory:
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise InventoryError(f"inventory {path}: not valid YAML{where}: "
                             f"{getattr(exc, 'problem', exc)}") from None
    except OSError as exc:
        raise InventoryError(f"inventory {path}: cannot read: {exc.strerror}") from None
    inventory = parse(data, str(path))
    return _anchor_paths(inventory, path.parent)


def _anchor_paths(inventory: Inventory, base: Path) -> Inventory:
    """Relative paths in an inventory are relative to the inventory file."""
    def fix(p):
        if p is None:
            return None
        p = p.expanduser()
        return p if p.is_absolute() else (base / p).resolve()
    updates = {}
    if inventory.artifacts and inventory.artifacts.dir:
        updates["artifacts"] = inventory.artifacts.model_copy(update={"dir": fix(inventory.artifacts.dir)})
    ssh = inventory.ssh.model_copy(update={"key": fix(inventory.ssh.key),
                                           "known_hosts": fix(inventory.ssh.known_hosts)})
    updates["ssh"] = ssh
    if inventory.qemu:
        updates["qemu"] = inventory.qemu.anchored(fix)
    return inventory.model_copy(update=updates)


def json_schema() -> dict:
    schema = Inventory.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "k8s-coreos-conformance inventory"
    return schema


if __name__ == "__main__":
    import json
    import sys
    if sys.argv[1:] != ["--schema"]:
        sys.exit("usage: python3 -m helpers.inventory --schema")
    SCHEMA_PATH.write_text(json.dumps(json_schema(), indent=2) + "\n")
    print(f"wrote {SCHEMA_PATH}")
