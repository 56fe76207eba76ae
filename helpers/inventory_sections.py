"""The sections of an inventory, one model each: nodes, ssh, artifacts, bootstrap,
deviations, the guide's variables, and each provider's settings. What needs more than
one section to check is in helpers/inventory.py.
"""
from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, model_validator

from helpers import spec
from helpers.inventory_types import (
    URL,
    UUID,
    AbsolutePath,
    CommandLine,
    DockerHost,
    DOKey,
    DOSlug,
    DOTag,
    EtcdctlEnv,
    EtcdEndpoint,
    IPv4,
    KernelAppend,
    Name,
    Network,
    Port,
    SafePath,
    StorageFlag,
    Strict,
    UserName,
    plain,
)


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


# Each qemu VM's own user-mode network (QEMU's default), for the SSH port forward only
QEMU_MANAGEMENT_NETWORK = ipaddress.IPv4Network("10.0.2.0/24")


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
        description="the public segment the VMs share; node N is .N (the guide's public IPs); "
                    "the host reaches a VM only through its SSH port forward")
    private_network: Network = ipaddress.IPv4Network("10.120.0.0/24")
    public_mcast_group: IPv4 = Field(ipaddress.IPv4Address("230.0.0.2"),
                                     description="multicast group of the public segment")
    private_mcast_group: IPv4 = Field(ipaddress.IPv4Address("230.0.0.1"),
                                      description="multicast group of the private segment")
    private_mcast_port: Port = Field(22219, description="one port per cluster on this host "
                                     "(both segments' groups use it)")
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
        for name in ("public_mcast_group", "private_mcast_group"):
            if not getattr(self, name).is_multicast:
                raise ValueError(f"{name} {getattr(self, name)} is not a multicast address "
                                 "(224.0.0.0/4)")
        if self.public_mcast_group == self.private_mcast_group:
            raise ValueError(f"public_mcast_group and private_mcast_group are both "
                             f"{self.private_mcast_group}: the two segments would be one")
        for name in ("public_network", "private_network"):
            if getattr(self, name).overlaps(QEMU_MANAGEMENT_NETWORK):
                raise ValueError(f"{name} {getattr(self, name)} overlaps "
                                 f"{QEMU_MANAGEMENT_NETWORK}, each VM's own management network "
                                 "(QEMU user-mode: the SSH port forward)")
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

