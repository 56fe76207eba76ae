"""The inventory: which cluster to test and how to reach it, validated with pydantic.

Every error becomes :class:`InventoryError`, one line naming the file, the field
path and what was expected; the pytest plugin turns it into a usage error.
"""
from __future__ import annotations

import ipaddress
import os
import re
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    ValidationError,
    model_validator,
)
from pydantic_core import ErrorDetails, core_schema

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

# -- plain values -------------------------------------------------------------------------
# Free text that ends up in unit files, shell commands or command lines must be a plain
# value of its kind: a control character (a newline above all) would add a directive
# line to a unit, and quotes or `;` would end a shell word.
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _shown(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class plain:
    """A str's metadata: it must match `pattern` whole; the error says `what` it must be.
    Metadata rather than a type made by a call, so that `Annotated[str, plain(...)]` is a
    type to mypy too."""

    def __init__(self, pattern: str, what: str):
        self.pattern, self.what, self.regex = pattern, what, re.compile(pattern)

    def check(self, value: str) -> str:
        if CONTROL.search(value):
            raise ValueError(f"control character in {_shown(value)}: must be {self.what}")
        if not self.regex.fullmatch(value):
            raise ValueError(f"must be {self.what}, not {_shown(value)}")
        return value

    def __get_pydantic_core_schema__(self, source: type, handler: GetCoreSchemaHandler):
        return core_schema.no_info_after_validator_function(self.check, handler(source))

    def __get_pydantic_json_schema__(self, schema, handler: GetJsonSchemaHandler) -> dict:
        return {**handler(schema), "pattern": f"^(?:{self.pattern})$"}


PATH_PATTERN = r"^[A-Za-z0-9._+@~/-]+$"
PATH_WHAT = "a plain path (letters, digits and . _ + @ ~ / -)"


def _path_text(value):
    if isinstance(value, str):
        if CONTROL.search(value):
            raise ValueError(f"control character in {_shown(value)}: must be {PATH_WHAT}")
        if not re.fullmatch(PATH_PATTERN, value):
            raise ValueError(f"must be {PATH_WHAT}, not {_shown(value)}")
    return value


SafePath = Annotated[Path, BeforeValidator(_path_text),
                     Field(json_schema_extra={"pattern": PATH_PATTERN})]


def _absolute(value: Path) -> Path:
    if not value.is_absolute():
        raise ValueError(f"must be an absolute path, not {_shown(str(value))}")
    return value


AbsolutePath = Annotated[SafePath, AfterValidator(_absolute)]

UserName = Annotated[str, plain(r"[a-z_][a-z0-9_-]{0,31}",
                 "a user name (lower-case letters, digits, _ and -, from a letter or _)")]
URL = Annotated[str, plain(r"(https?|file)://[A-Za-z0-9._~:/?#\[\]@!&()*+,;=%-]+",
            "an http(s) or file URL (no spaces, quotes, $ or backslashes)")]
CommandLine = Annotated[str, plain(r"/[A-Za-z0-9._+/-]+( [A-Za-z0-9-][A-Za-z0-9._=:/+-]*)*",
                    "a command: an absolute path, then plain words (e.g. /usr/sbin/dockerd)")]
StorageFlag = Annotated[str, plain(r"((-s|--storage-driver)[= ][a-z0-9][a-z0-9_-]*)?",
                    "a storage driver flag (-s=btrfs, -s vfs, --storage-driver=overlay2) or ''")]
DockerHost = Annotated[str, plain(r"fd://[A-Za-z0-9._-]*|unix:///[A-Za-z0-9._/-]+|tcp://[A-Za-z0-9.-]+:[0-9]{1,5}",
                   "a Docker host URL (fd://, unix:///path or tcp://host:port)")]
EtcdctlEnv = Annotated[str, plain(r"(ETCDCTL_API=[1-9] )?",
                   "'ETCDCTL_API=N ' (with its trailing space) or ''")]
EtcdEndpoint = Annotated[str, plain(r"https?://([A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(:[0-9]{1,5})?",
                     "an etcd client URL (http://host:port)")]
KernelAppend = Annotated[str, plain(r"[A-Za-z0-9._=:/,+@-]+( [A-Za-z0-9._=:/,+@-]+)*",
                     "a kernel command line (words of letters, digits and . _ = : / , + @ -)")]
DOSlug = Annotated[str, plain(r"[a-z0-9][a-z0-9._-]*", "a DigitalOcean slug (lower-case letters, digits, . _ -)")]
DOKey = Annotated[str, plain(r"([0-9a-f]{2}:){15}[0-9a-f]{2}|[0-9]+",
              "an SSH key fingerprint (aa:bb:...:ff) or id")]
DOTag = Annotated[str, plain(r"[A-Za-z0-9_:-]{1,255}", "a DigitalOcean tag (letters, digits, _ : -)")]
UUID = Annotated[str, plain(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", "a VPC UUID")]


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
    user: UserName = "core"
    key: SafePath | None = Field(None, description="private key (static, digitalocean); local "
                                 "and qemu generate one per run and refuse this")
    port: Port = Field(22, description="static, digitalocean; local and qemu choose the port")
    host_key_policy: Literal["verify", "accept-new"] = "verify"
    known_hosts: SafePath | None = None
    connect_timeout: float = Field(10, gt=0, le=600)
    command_timeout: float = Field(60, gt=0, le=3600)


class Artifacts(Strict):
    """Where the bootstrap takes /opt/bin from: the guide's binaries built from source
    (`build: true`), a directory, or a tarball URL with sha256."""

    build: bool = Field(False, description="build flannel v0.2.0 and Kubernetes v0.7.0 from "
                        "source as the guide does (sources: $K8SCONF_SOURCES or upstream)")
    dir: SafePath | None = None
    url: URL | None = None
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

    docker_command: CommandLine | None = Field(None, description="guide: /usr/bin/docker -d")
    docker_storage_flag: StorageFlag | None = Field(None, description="guide: -s=btrfs")
    docker_host: DockerHost | None = Field(None, description="guide: fd://")
    etcdctl_env: EtcdctlEnv | None = Field(None, description="guide: none; etcd 3.4 needs "
                                           "'ETCDCTL_API=2 '")
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


ETCD_PORTS = (*spec.DEFAULTS["etcd_client_ports"], 2380)


class GuideVars(Strict):
    flannel_network: Network = ipaddress.IPv4Network(spec.DEFAULTS["flannel_network"])
    flannel_subnet_len: int = Field(spec.DEFAULTS["flannel_subnet_len"], ge=8, le=30)
    portal_net: Network = ipaddress.IPv4Network(spec.DEFAULTS["portal_net"])
    apiserver_address: IPv4 = ipaddress.IPv4Address(spec.DEFAULTS["apiserver_address"])
    apiserver_port: Port = spec.DEFAULTS["apiserver_port"]
    kubelet_port: Port = spec.DEFAULTS["kubelet_port"]
    etcd_endpoint: EtcdEndpoint = spec.DEFAULTS["etcd_endpoint"]

    @model_validator(mode="after")
    def _ports_apart(self):
        if self.apiserver_port == self.kubelet_port:
            raise ValueError(f"apiserver_port and kubelet_port are both {self.kubelet_port}")
        for name in ("apiserver_port", "kubelet_port"):
            port = getattr(self, name)
            if port in ETCD_PORTS:
                raise ValueError(f"{name}: {port} is etcd's (client ports 2379 and 4001, "
                                 "peer port 2380)")
            if port == 22:
                raise ValueError(f"{name}: 22 is sshd's")
        return self

    def values(self) -> dict:
        return {k: str(v) if not isinstance(v, int) else v
                for k, v in self.model_dump().items()}


class LocalSettings(Strict):
    count: int = Field(3, ge=1, le=16)
    prefix: Name = "k8sconf"
    public_network: Network = ipaddress.IPv4Network("192.168.2.0/24")
    private_network: Network = ipaddress.IPv4Network("10.120.0.0/24")
    cache_dir: AbsolutePath = Path("/var/cache/k8s-coreos-conformance")
    work_dir: AbsolutePath = Path("/var/lib/k8s-coreos-conformance")
    boot_timeout: float = Field(120, gt=0, le=1800)


class QemuSettings(Strict):
    """VMs under QEMU on this host (see helpers/providers/qemu.py for the design).

    The image is a Flatcar QEMU image (image_url + image_sha256, downloaded once into
    cache_dir) or a local file (image_path); kernel/initrd make QEMU boot that kernel
    directly instead of the disk's own boot loader. Every node gets a copy-on-write
    overlay in work_dir; the base image is never written.
    """

    image_url: URL | None = Field(None, description="a Flatcar QEMU image (.img, or .bz2/.gz/.xz)")
    image_sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$",
                                     description="sha256 of the file at image_url")
    image_path: SafePath | None = None
    kernel: SafePath | None = Field(None, description="direct kernel boot (the e2e Debian image)")
    initrd: SafePath | None = None
    kernel_append: KernelAppend = Field("root=/dev/vda rw console=ttyS0",
                                        description="kernel command line with 'kernel'")
    firmware: SafePath | None = Field(None, description="-bios file (e.g. OVMF for UEFI images); "
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
    cache_dir: SafePath = Path("/var/cache/k8s-coreos-conformance/qemu")
    work_dir: SafePath = Field(Path("/var/lib/k8s-coreos-conformance/qemu"),
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
        return self

    def anchored(self, fix) -> "QemuSettings":
        """Relative paths made relative to the inventory file (see _anchor_paths)."""
        names = ("image_path", "kernel", "initrd", "firmware", "cache_dir", "work_dir")
        return self.model_copy(update={n: fix(getattr(self, n)) for n in names})


class DigitalOceanSettings(Strict):
    region: str = Field("nyc3", pattern=r"^[a-z]{3}[0-9]$")
    size: DOSlug = "s-1vcpu-2gb"
    image: DOSlug | Annotated[int, Field(ge=1)] = Field(
        ..., description="a slug, or a custom image id (Flatcar/Fedora CoreOS)")
    ssh_keys: list[DOKey | Annotated[int, Field(ge=1)]] = Field(..., min_length=1)
    vpc_uuid: UUID | None = None
    tags: list[DOTag] = []
    user_data: Literal["ignition", "cloud-config"] = "ignition"
    api_url: Annotated[str, plain(r"https?://[A-Za-z0-9._~:/?#\[\]@!&()*+,;=%-]+",
                   "an http(s) URL (no spaces, quotes, $ or backslashes)")] = \
        "https://api.digitalocean.com"
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
                             f"has that user only), not {_shown(self.ssh.user)}")
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
        address of its network: not the network, broadcast or host's/QEMU's own."""
        (pub_name, pub), (priv_name, priv) = nets.items()
        if self.provider == "local":
            reserved = {pub_name: {pub.broadcast_address - 1},
                        priv_name: {priv.broadcast_address - 1}}
            owner = "the host's own address on the bridge"
        else:
            reserved = {pub_name: {pub.broadcast_address - 1, pub.broadcast_address - 2},
                        priv_name: set()}
            owner = "QEMU's gateway or DNS"
        for index, node in enumerate(self.node_specs(), start=1):
            for attr, (name, net) in zip(("public_ip", "private_ip"), nets.items(), strict=True):
                given = getattr(node, attr)
                if given is None:
                    if index >= net.num_addresses - 1 or net[index] in reserved[name]:
                        raise ValueError(f"{name}: {net} is too small for "
                                         f"{len(self.node_specs())} nodes (node N is .N, "
                                         f"and {owner} is taken)")
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
