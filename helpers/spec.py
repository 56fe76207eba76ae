"""The guide as data: the one place that states what the install must look like.

Both the bootstrap (which renders unit files from it) and the conformance checks
(which compare a node against it) read this module; no other module repeats these
facts. docs/guide.md restates the tutorial in our words; tests/data/guide/ holds its
seven unit files as printed, and tests/test_spec.py compares this module against them.

Values that depend on the inventory (ports, networks, the machines list) are
written as ``{placeholders}`` and filled by :func:`render_values`. ``${VARS}`` are
left for systemd to expand from the unit's EnvironmentFile, as in the guide.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

MASTER = "master"
MINION = "minion"
ROLES = (MASTER, MINION)
EVERY_ROLE = frozenset(ROLES)
MASTER_ONLY = frozenset({MASTER})

GUIDE_URL = (
    "https://www.digitalocean.com/community/tutorials/"
    "how-to-install-and-configure-kubernetes-on-top-of-a-coreos-cluster"
)

KUBERNETES_VERSION = "Kubernetes v0.7.0"   # what the guide's binaries print for -version
FLANNEL_VERSION = "0.2.0"
BIN_DIR = "/opt/bin"
UNIT_DIR = "/etc/systemd/system"
SUBNET_ENV = "/run/flannel/subnet.env"
NODE_ENVIRONMENT = "/etc/environment"
NETWORK_CONFIG_KEY = "/coreos.com/network/config"
SUBNETS_KEY = "/coreos.com/network/subnets"
MINIONS_KEY = "/registry/minions"
WANTED_BY = "multi-user.target"
RESTART = "on-failure"
RESTART_SEC = 5

# The guide's own values; an inventory may override each (see helpers.inventory.GuideVars).
DEFAULTS: dict[str, Any] = {
    "flannel_network": "10.100.0.0/16",
    "flannel_subnet_len": 24,
    "portal_net": "10.100.0.0/16",
    "apiserver_address": "127.0.0.1",
    "apiserver_port": 8080,
    "kubelet_port": 10250,
    "etcd_endpoint": "http://127.0.0.1:4001",
    "etcd_client_ports": (4001, 2379),
}

# What `ls` showed in the guide's release directory (install step 3).
RELEASE_BINARIES = (
    "e2e", "integration", "kube-apiserver", "kube-controller-manager", "kube-proxy",
    "kube-scheduler", "kubecfg", "kubectl", "kubelet", "kubernetes",
)
# What each role needs in /opt/bin. The guide ships everything everywhere, but
# says minions strictly need the scheduler, proxy, kubelet and flannel (docker is
# the OS's own). kubecfg is how the guide verifies, on the master.
# The binaries whose -version the suite reads on every node: the guide's own programs
# (kubecfg's answer is the guide's own check, test_kubecfg_version_answers).
VERSIONED_BINARIES = ("flannel", "kube-apiserver", "kube-controller-manager",
                      "kube-scheduler", "kube-proxy", "kubelet")
REQUIRED_BINARIES = {
    MASTER: ("flannel", "kube-apiserver", "kube-controller-manager", "kube-scheduler",
             "kube-proxy", "kubelet", "kubecfg"),
    MINION: ("flannel", "kube-scheduler", "kube-proxy", "kubelet"),
}


@dataclass(frozen=True)
class Command:
    """An ExecStart line: the binary and its flags in the guide's order."""

    binary: str
    flags: tuple[str, ...] = ()

    def line(self, values: dict) -> str:
        words = (self.binary, *self.flags)
        return " ".join(w.format(**values) for w in words)


DEPENDENCY_DIRECTIVES = ("After", "Wants", "Requires")


@dataclass(frozen=True)
class Unit:
    name: str
    description: str
    roles: frozenset
    exec_start: Command
    after: tuple[str, ...] = ()
    wants: tuple[str, ...] = ()
    requires: tuple[str, ...] = ()
    environment_files: tuple[str, ...] = ()
    exec_start_pre: tuple[str, ...] = ()
    exec_start_post: tuple[str, ...] = ()
    restart: str = RESTART
    restart_sec: int = RESTART_SEC
    wanted_by: str = WANTED_BY
    # Which binary in /opt/bin this unit runs, if any (docker is the OS's).
    provides_binary: str | None = None
    listens: tuple[str, ...] = field(default=())  # "address:port" templates
    before: tuple[str, ...] = ()   # only our deviation units order themselves Before=
    environment: tuple[str, ...] = ()

    @property
    def short(self) -> str:
        return self.name.removesuffix(".service")

    def runs_on(self, role: str) -> bool:
        return role in self.roles

    def dependencies(self, directive: str) -> tuple[str, ...]:
        """The units named by one of DEPENDENCY_DIRECTIVES ("After", "Wants", "Requires")."""
        return getattr(self, directive.lower())


ETCD = "etcd.service"
# what Flatcar calls its etcd; no unit of the guide names it
FLATCAR_ETCD = "etcd-member.service"
DOCKER = "docker.service"
FLANNEL = "flannel.service"
APISERVER = "apiserver.service"

_APISERVER_WAIT = (
    '-/bin/bash -c "until /usr/bin/curl http://{apiserver_address}:{apiserver_port}; '
    'do echo \\"waiting for API server to come online...\\"; sleep 3; done"'
)
_FLANNEL_CONFIG = (
    '-/bin/bash -c "until {etcdctl_env}/usr/bin/etcdctl set ' + NETWORK_CONFIG_KEY +
    " '{{\\\"Network\\\": \\\"{flannel_network}\\\"}}'; "
    'do echo \\"waiting for etcd to become available...\\"; sleep 5; done"'
)
_FLANNEL_WAIT = (
    '-/bin/bash -c "until [ -e ' + SUBNET_ENV + ' ]; '
    'do echo \\"waiting for write.\\"; sleep 3; done"'
)

UNITS: tuple[Unit, ...] = (
    Unit(
        name=APISERVER,
        description="Kubernetes API Server",
        roles=MASTER_ONLY,
        after=(ETCD, DOCKER),
        wants=(ETCD, DOCKER),
        exec_start=Command("/opt/bin/kube-apiserver", (
            "-address={apiserver_address}",
            "-port={apiserver_port}",
            "-etcd_servers={etcd_endpoint}",
            "-portal_net={portal_net}",
            "-logtostderr=true",
        )),
        exec_start_post=(_APISERVER_WAIT,),
        provides_binary="kube-apiserver",
        listens=("{apiserver_address}:{apiserver_port}",),
    ),
    Unit(
        name="controller-manager.service",
        description="Kubernetes Controller Manager",
        roles=MASTER_ONLY,
        after=(ETCD, DOCKER, APISERVER),
        wants=(ETCD, DOCKER, APISERVER),
        exec_start=Command("/opt/bin/kube-controller-manager", (
            "-master=http://{apiserver_address}:{apiserver_port}",
            "-machines={machines}",
        )),
        provides_binary="kube-controller-manager",
    ),
    Unit(
        name="scheduler.service",
        description="Kubernetes Scheduler",
        roles=EVERY_ROLE,
        after=(ETCD, DOCKER, APISERVER),
        wants=(ETCD, DOCKER, APISERVER),
        exec_start=Command("/opt/bin/kube-scheduler", (
            "-master={apiserver_address}:{apiserver_port}",
        )),
        provides_binary="kube-scheduler",
    ),
    Unit(
        name=FLANNEL,
        description="Flannel network fabric for CoreOS",
        roles=EVERY_ROLE,
        after=(ETCD,),
        requires=(ETCD,),
        environment_files=(NODE_ENVIRONMENT,),
        exec_start_pre=(_FLANNEL_CONFIG,),
        exec_start=Command("/opt/bin/flannel", ("-iface=${{COREOS_PRIVATE_IPV4}}",)),
        exec_start_post=(_FLANNEL_WAIT,),
        provides_binary="flannel",
    ),
    Unit(
        name=DOCKER,
        description="Docker container engine configured to run with flannel",
        roles=EVERY_ROLE,
        after=(FLANNEL,),
        requires=(FLANNEL,),
        environment_files=(SUBNET_ENV,),
        exec_start_pre=(
            "-/usr/bin/ip link set dev docker0 down",
            "-/usr/sbin/brctl delbr docker0",
        ),
        exec_start=Command("{docker_command}", (
            "{docker_storage_flag}",
            "-H {docker_host}",
            "--bip=${{FLANNEL_SUBNET}}",
            "--mtu=${{FLANNEL_MTU}}",
        )),
    ),
    Unit(
        name="proxy.service",
        description="Kubernetes proxy server",
        roles=EVERY_ROLE,
        after=(ETCD, DOCKER),
        wants=(ETCD, DOCKER),
        exec_start=Command("/opt/bin/kube-proxy", (
            "-etcd_servers={etcd_endpoint}",
            "-logtostderr=true",
        )),
        provides_binary="kube-proxy",
    ),
    Unit(
        name="kubelet.service",
        description="Kubernetes Kubelet",
        roles=EVERY_ROLE,
        after=(ETCD, DOCKER),
        wants=(ETCD, DOCKER),
        environment_files=(NODE_ENVIRONMENT,),
        exec_start=Command("/opt/bin/kubelet", (
            "-address=${{COREOS_PRIVATE_IPV4}}",
            "-port={kubelet_port}",
            "-hostname_override=${{COREOS_PRIVATE_IPV4}}",
            "-etcd_servers={etcd_endpoint}",
            "-logtostderr=true",
        )),
        provides_binary="kubelet",
        listens=("{private_ip}:{kubelet_port}",),
    ),
)

UNITS_BY_NAME = {u.name: u for u in UNITS}


def units_for(role: str) -> tuple[Unit, ...]:
    return tuple(u for u in UNITS if u.runs_on(role))


def unit(name: str) -> Unit:
    return UNITS_BY_NAME[name if name.endswith(".service") else name + ".service"]


# The guide's Docker line, kept so that a deviation can be reported against it.
GUIDE_DOCKER = {
    "docker_command": "/usr/bin/docker -d",
    "docker_storage_flag": "-s=btrfs",
    "docker_host": "fd://",
    "etcdctl_env": "",
}

# -- declared deviations: where the guide's 2014 install cannot work on today's OS ---------
# Each is applied only when the inventory declares it, and listed in the report; what
# the guide writes or assumes instead is GUIDE_ASSUMES (for the report's "guide" column).
DEVIATION_DIR = "/opt/k8sconf"   # our programs for the deviations: never in /opt/bin
DOCKER_SOCKET = "/var/run/docker.sock"
DOCKER_API_PIN_SOCKET = "/run/docker-api-pin.sock"
PAUSE_IMAGE = "kubernetes/pause:latest"      # the v0.7 kubelet's -network_container_image
PRELOAD_LABEL = "k8sconf.preload"            # marks the pause image as our preload
GUIDE_ASSUMES = {
    "docker_forward_accept": "no FORWARD rules (Docker 1.x left the FORWARD policy ACCEPT)",
    "kubelet_docker_api": f"the kubelet's unversioned Docker API requests on {DOCKER_SOCKET}",
    "pause_image": f"{PAUSE_IMAGE} pulled from Docker Hub by the kubelet",
}
FORWARD_ACCEPT = (
    # $$: systemd would expand $d itself
    '/bin/sh -c "for d in -s -d; do iptables -w -C FORWARD $$d {flannel_network} -j ACCEPT '
    '2>/dev/null || iptables -w -I FORWARD $$d {flannel_network} -j ACCEPT; done"'
)
DOCKER_API_PIN = Unit(
    name="docker-api-pin.service",
    description="Docker API v{kubelet_docker_api} for the v0.7 kubelet (a declared deviation "
                "of k8s-coreos-conformance, not the guide's)",
    roles=EVERY_ROLE,
    after=(DOCKER,),
    requires=(DOCKER,),
    before=("kubelet.service",),
    exec_start=Command(f"{DEVIATION_DIR}/docker-api-pin", (
        f"-listen {DOCKER_API_PIN_SOCKET}", f"-docker {DOCKER_SOCKET}",
        "-api-version {kubelet_docker_api}")),
)


@dataclass(frozen=True)
class Advisory:
    """A known defect of the guide: reported as an expected failure, never a crash."""

    id: str
    title: str
    explanation: str


ADVISORIES = (
    Advisory("portal-net-overlaps-flannel",
             "portal_net overlaps the flannel network",
             "-portal_net (the service IP range) must not overlap the flannel network; "
             "the guide uses 10.100.0.0/16 for both and wrongly calls portal_net "
             "flannel's range."),
    Advisory("minion-scheduler-unreachable",
             "schedulers on minions cannot reach the API server",
             "scheduler.service runs on every node with -master=127.0.0.1:8080, but the "
             "API server listens on the master's loopback only."),
    Advisory("insecure-api-port",
             "the API server serves an insecure port",
             "-port=8080 is the insecure, unauthenticated port; the CIS Kubernetes "
             "benchmark (kube-bench 1.2.x) fails any API server that serves it."),
    Advisory("docker-1x-syntax",
             "docker.service uses Docker 1.x syntax",
             "`docker -d -s=btrfs` is Docker 1.x; current Docker runs `dockerd` with a "
             "storage driver that fits the filesystem."),
    Advisory("api-read-only-port-exposed",
             "the API server's read-only port is open on the public address",
             "kube-apiserver v0.7 serves an unauthenticated read-only API on -read_only_port "
             "(default 7080) at -public_address_override (default: the first interface's "
             "address); the guide sets neither, so minions, pods and services can be read "
             "from the public network."),
    Advisory("docker-forward-policy-drop",
             "Docker's FORWARD policy drops flannel's traffic",
             "Docker >= 1.13 sets the iptables FORWARD policy to DROP and flannel 0.2.0 adds "
             "no FORWARD rules (later releases do): the guide's docker.service alone lets no "
             "container traffic in from flannel0 (deviation docker_forward_accept)."),
    Advisory("kubelet-unversioned-docker-api",
             "the v0.7 kubelet cannot start containers on today's Docker",
             "the kubelet sends unversioned Docker API requests, which Docker serves as its "
             "newest API; that refuses the body the kubelet sends to start a container "
             "(removed in API v1.24). Its requests under API v1.15 still work (deviation "
             "kubelet_docker_api)."),
    Advisory("pause-image-preloaded",
             "the kubelet's network container image is our preload",
             f"the v0.7 kubelet pulls {PAUSE_IMAGE} from Docker Hub for every pod; no "
             "registry is reachable from these nodes, so it is imported from v0.7.0's own "
             "build/pause (deviation pause_image)."),
    Advisory("etcd-v2-api",
             "flannel.service writes its config with the etcd v2 API",
             "`etcdctl set` is the etcd v2 API: it needs ETCDCTL_API=2 and etcd 3.4 "
             "started with --enable-v2; etcd 3.5+ removes v2."),
)


def render_values(variables: dict, *, machines: list[str], private_ip: str = "",
                  deviations: dict | None = None) -> dict:
    """Fill the placeholders of the spec for one node."""
    values = {**DEFAULTS, **GUIDE_DOCKER, **variables, **(deviations or {})}
    values["machines"] = ",".join(machines)
    values["private_ip"] = private_ip
    return values
