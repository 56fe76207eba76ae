"""The fault catalogue, as data: for each fault, how to apply it to a bootstrapped local
cluster, how to undo it, and exactly which conformance checks must then fail on which
node (test ids as the JUnit report names them, e.g.
``test_unit_dependencies_match_the_guide[coreos-2-kubelet-Wants]``).

tests/e2e/test_fault_catalogue.py applies each fault, runs the whole conformance suite
against the cluster, and asserts that exactly these checks fail (each message starting
with its node's name) and nothing else does; then it restores and verifies the node.
Faults whose scopes (the nodes whose checks they may fail) are disjoint share a suite
run (``plan_rounds``): every failing check is then attributed by its node to exactly one
fault of the run.

Ground rules of every fault here:
- apply and restore act over SSH (``Lab.sh``, always with sudo) or, for the hung node,
  from the host inside the node's own network namespace; never beyond the cluster.
- a unit that must be restarted is restarted *with every unit ordered after it*
  (``Lab.restart_chain``) in one systemd transaction, so the start order since boot
  stays the guide's and only the intended checks fail (the control
  ``control-docker-restarted-alone`` shows why).
- ``restore`` returns the node to the state ``snapshot`` took before ``apply``; the
  test compares the two.
- a ``control`` is no fault: a routine operation after which no check may fail.

Long because the catalogue is one table, about fifty faults with what each must fail;
how they act is tests/e2e/fault_actions.py, the machinery tests/e2e/fault_lab.py.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from helpers import spec

from .fault_actions import (
    append_byte,
    binary_wrapper,
    commands,
    crashed_once,
    docker_socket_pinned,
    drop_in,
    edit_unit_file,
    etcd_advertises,
    etcd_only_as_etcd_member,
    exec_start,
    failed_oneshot,
    forward_accept_removed,
    forward_drop,
    hung_ssh,
    kubelet_started_before_docker,
    master_unit_on_minion,
    minion_unregistered,
    move_file,
    network_config_changed,
    pause_image_unlabelled,
    replace_in_unit_file,
    restart_alone,
    rewrite_subnet_env,
    second_api_on_minion,
    stop_unit,
    unit_enabled,
    unit_path,
    unused_subnet,
    version_wrapper,
)
from .fault_lab import API_PIN, BACKUP, MASTER, MINION_A, MINION_B, NODES, Lab

# -- the catalogue ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Fault:
    name: str
    what: str
    apply: Callable[[Lab], None]
    restore: Callable[[Lab], None]
    expected: tuple[str, ...] = ()
    touches: tuple[str, ...] = ()       # nodes it changes: snapshotted and compared
    all_checks_of: str | None = None    # every check of this node must fail, except:
    except_: tuple[str, ...] = ()
    during: Callable | None = None      # called with (lab, suite process) while it runs
    inventory: dict = field(default_factory=dict)   # overrides for the suite's inventory
    slow: bool = False                  # a registration check waits its DEADLINE
    control: bool = False               # no fault: a routine operation, nothing may fail
    note: str = ""
    # check -> a text its failure message must contain (what the fault is known by)
    message: dict = field(default_factory=dict)

    @property
    def alone(self) -> bool:
        """Needs a suite run of its own (own inventory, or acts during the run)."""
        return bool(self.during or self.inventory)

    def scope(self) -> set[str]:
        """The nodes whose checks this fault may fail: failures there are its own."""
        nodes = set(self.touches) | {node for check in self.expected
                                     if (node := node_of(check)) is not None}
        if self.all_checks_of:
            nodes.add(self.all_checks_of)
        return nodes


def node_of(check: str) -> str | None:
    """The node a check id is about: the first node name in its parameters."""
    params = check.partition("[")[2].removesuffix("]")
    return next((n for n in NODES if params == n or params.startswith(n + "-")), None)


def plan_rounds(faults: list[Fault], one_by_one: bool = False) -> list[list[Fault]]:
    """Group faults into suite runs: faults whose scopes (nodes) are disjoint share a run,
    so that every failing check is attributed to exactly one fault by its node. Slow
    faults (a run that waits out the workload's or the registration's deadline) are
    placed first, so that they share runs with each other rather than slow down many."""
    rounds: list[list[Fault]] = []
    for fault in sorted(faults, key=lambda f: not f.slow):
        for batch in ([] if one_by_one or fault.alone else rounds):
            if not any(f.alone for f in batch) and all(
                    not (f.scope() & fault.scope()) for f in batch):
                batch.append(fault)
                break
        else:
            rounds.append([fault])
    return rounds


def t(check: str, *params: str) -> str:
    return f"{check}[{'-'.join(params)}]"


def unit_check(check: str, node: str, unit: str, *more: str) -> str:
    return t(check, node, unit.removesuffix(".service"), *more)


# A kubelet the master cannot reach: the v0.7 API server's minion registry checks each
# kubelet's health and leaves that minion out of its lists, so the scheduler binds no pod
# there (and the registration checks wait out their deadline).
KUBELET_UNREACHABLE = ("the API leaves the minion out of its list (its kubelet health "
                       "check fails): no pod is bound there")


def workload_fails(*nodes: str) -> tuple[str, ...]:
    return tuple(t(c, n) for n in nodes for c in ("test_a_pod_runs_on_the_node",
                                                  "test_pod_reaches_the_pods_on_other_nodes"))


WORKLOAD_EVERYWHERE = workload_fails(*NODES)


def _faults() -> list[Fault]:
    M, A, B = MASTER, MINION_A, MINION_B
    faults = []

    def add(name, what, actions, expected=(), touches=(), **kw):
        apply, restore = actions[:2]
        if len(actions) > 2:
            kw["during"] = actions[2]
        faults.append(Fault(name, what, apply, restore, tuple(expected), tuple(touches), **kw))

    # -- unit files: dependencies, restart policy, install location ---------------------
    add("kubelet-without-wants-etcd", "kubelet.service lost Wants=etcd.service",
        edit_unit_file(A, "kubelet.service", "Wants=etcd.service", None),
        [unit_check("test_unit_dependencies_match_the_guide", A, "kubelet", "Wants")], [A])
    add("docker-without-requires-flannel", "docker.service lost Requires=flannel.service",
        edit_unit_file(B, "docker.service", "Requires=flannel.service", None),
        [unit_check("test_unit_dependencies_match_the_guide", B, "docker", "Requires")], [B])
    add("flannel-without-after-etcd", "flannel.service lost After=etcd.service",
        edit_unit_file(M, "flannel.service", "After=etcd.service", None),
        [unit_check("test_unit_dependencies_match_the_guide", M, "flannel", "After")], [M])
    add("restart-removed", "scheduler.service drop-in Restart=no",
        drop_in(B, "scheduler.service", "Restart=no", restart=False),
        [unit_check("test_unit_restarts_on_failure_after_5s", B, "scheduler")], [B])
    add("restartsec-changed", "proxy.service drop-in RestartSec=10",
        drop_in(A, "proxy.service", "RestartSec=10", restart=False),
        [unit_check("test_unit_restarts_on_failure_after_5s", A, "proxy")], [A])
    add("docker-reads-another-environment-file", "docker.service drop-in: EnvironmentFile= "
        "a file other than subnet.env, and no docker0 teardown before it starts",
        drop_in(B, spec.DOCKER, "EnvironmentFile=\nEnvironmentFile=/run/flannel/docker.env\n"
                "ExecStartPre=", restart=False),
        [unit_check("test_unit_wraps_its_command_as_the_guide_writes", B, "docker")], [B])
    add("unit-crashed-and-restarted", "proxy.service's main process killed: systemd "
        "restarted it and it is active again",
        crashed_once(A, "proxy.service"),
        [unit_check("test_unit_has_not_restarted_since_it_started", A, "proxy")], [A],
        message={unit_check("test_unit_has_not_restarted_since_it_started", A, "proxy"):
                 "status=9/KILL"})
    add("etcd-advertises-the-public-address", "etcd on a minion restarted with its client "
        "URLs on the public address",
        etcd_advertises(B, "public"),
        [t("test_etcd_member_talks_over_the_private_address", B)], [B])
    add("etcd-only-as-etcd-member", "etcd on a minion runs as etcd-member.service, as on "
        "Flatcar, and etcd.service is gone",
        etcd_only_as_etcd_member(A),
        [t("test_etcd_runs_as_the_unit_the_guides_units_name", A)], [A])
    add("unit-not-enabled", "proxy.service disabled",
        unit_enabled(A, "proxy.service", False),
        [unit_check("test_unit_is_enabled_for_multi_user", A, "proxy")], [A])
    add("unit-file-outside-etc", "scheduler.service moved to /usr/lib/systemd/system",
        move_file(A, unit_path("scheduler.service"), "/usr/lib/systemd/system/scheduler.service",
                  reload=True),
        [unit_check("test_unit_file_is_in_etc_systemd_system", A, "scheduler")], [A])
    add("master-only-unit-on-minion", "controller-manager.service installed on a minion",
        master_unit_on_minion(B, "controller-manager.service"),
        [t("test_master_only_units_absent_on_minion", B)], [B])
    add("failed-unit", "a oneshot unit that failed",
        failed_oneshot(A), [t("test_no_failed_units", A)], [A])
    add("start-order-violation", "kubelet started while docker was down, docker after it",
        kubelet_started_before_docker(B),
        [t("test_start_order_since_boot_respects_after", B)], [B])

    # -- units running -----------------------------------------------------------------------
    add("kubelet-stopped", "kubelet.service stopped",
        stop_unit(B, "kubelet.service"),
        [unit_check("test_unit_is_active", B, "kubelet"),
         t("test_kubelet_listens_on_the_private_ip", B), t("test_kubelet_is_healthy", B),
         t("test_kubelet_reachable_from_the_master", B),
         t("test_kubelet_is_reachable_only_on_the_private_address", B),
         t("test_kubecfg_lists_every_node", M), t("test_api_lists_every_node", M),
         *workload_fails(B)], [B], slow=True,
        note=KUBELET_UNREACHABLE)
    add("docker-daemon-down", "docker.service stopped (docker-api-pin.service with it)",
        stop_unit(A, spec.DOCKER),
        [unit_check("test_unit_is_active", A, "docker"), t("test_docker_daemon_answers", A),
         t("test_docker_applies_the_flannel_mtu", A),
         t("test_container_reaches_every_other_node", A),
         t("test_forward_chain_passes_container_traffic", A),
         t("test_a_pod_runs_on_the_node", A), t("test_pod_reaches_the_pods_on_other_nodes", A)],
        [A], slow=True, note="the v0.7 kubelet's /healthz does not look at Docker: it stays ok")
    add("flannel-stopped", "flannel.service stopped (docker's Requires= stops docker too)",
        stop_unit(A, spec.FLANNEL),
        [unit_check("test_unit_is_active", A, "flannel"),
         unit_check("test_unit_is_active", A, "docker"), t("test_docker_daemon_answers", A),
         t("test_docker_applies_the_flannel_mtu", A),
         t("test_container_reaches_every_other_node", A),
         t("test_forward_chain_passes_container_traffic", A),
         t("test_a_pod_runs_on_the_node", A), t("test_pod_reaches_the_pods_on_other_nodes", A)],
        [A], slow=True)
    add("docker-api-pin-stopped", "docker-api-pin.service stopped on a minion (deviation "
        "kubelet_docker_api): the kubelet cannot reach Docker",
        commands(B, f"systemctl stop {API_PIN}", f"systemctl start {API_PIN}"),
        [t("test_a_pod_runs_on_the_node", B), t("test_pod_reaches_the_pods_on_other_nodes", B)],
        [B], slow=True, message={t("test_a_pod_runs_on_the_node", B): "docker-api-pin.sock"},
        note="the message quotes the kubelet's error: dial unix /run/docker-api-pin.sock")
    # the v0.7 kubelet reads its pods from the node's own etcd: no pod runs there either
    add("etcd-member-down", "etcd stopped on a minion (flannel and docker left running)",
        stop_unit(B, "etcd.service", ignore_dependencies=True),
        [t("test_etcd_runs_as_the_unit_the_guides_units_name", B),
         t("test_etcd_is_healthy_with_every_member", B), t("test_network_config_equals_the_spec", B),
         t("test_subnet_lies_in_the_network_stored_in_etcd", B),
         t("test_etcd_lease_names_the_private_ip", B),
         t("test_etcd_member_talks_over_the_private_address", B), *workload_fails(B)], [B],
        slow=True)

    # -- flannel and docker ----------------------------------------------------------------
    add("subnet-env-removed", "/run/flannel/subnet.env removed",
        move_file(B, spec.SUBNET_ENV, f"{BACKUP}/subnet.env"),
        [t("test_subnet_env_exists_and_parses", B), t("test_docker0_carries_the_flannel_subnet", B),
         t("test_docker_applies_the_flannel_mtu", B),
         t("test_subnet_lies_in_the_network_stored_in_etcd", B),
         t("test_subnet_is_unique_across_nodes", B), t("test_etcd_lease_names_the_private_ip", B),
         t("test_mtu_is_a_sane_integer", B)], [B])
    add("flannel-mtu-insane", "subnet.env says FLANNEL_MTU=100",
        rewrite_subnet_env(A, lambda lab, env: {**env, "FLANNEL_MTU": "100"}, False),
        [t("test_mtu_is_a_sane_integer", A), t("test_docker_applies_the_flannel_mtu", A)], [A])
    add("docker-bip-not-from-flannel", "docker.service drop-in: a fixed --bip outside the lease",
        drop_in(A, spec.DOCKER, lambda lab: exec_start(lab, A, spec.DOCKER,
                                                       bip=unused_subnet(lab)), restart=True),
        [t("test_docker0_carries_the_flannel_subnet", A),
         unit_check("test_unit_runs_the_guide_command", A, "docker"),
         t("test_container_reaches_every_other_node", M),
         t("test_container_reaches_every_other_node", B),
         t("test_pod_reaches_the_pods_on_other_nodes", M),
         t("test_pod_reaches_the_pods_on_other_nodes", B)], [A],
        note="the node's own containers still reach out (docker masquerades its bridge "
             "subnet), but no other node can reach them")
    add("docker-mtu-mismatch", "docker.service drop-in: --mtu=1400",
        drop_in(B, spec.DOCKER, lambda lab: exec_start(lab, B, spec.DOCKER, mtu="1400"),
                restart=True),
        [t("test_docker_applies_the_flannel_mtu", B),
         unit_check("test_unit_runs_the_guide_command", B, "docker")], [B])
    # Docker's MASQUERADE of the node's containers (-s <its docker0 subnet> ! -o docker0)
    # still carries their pings across flannel under the node's real lease: the data plane
    # checks pass, the subnet and lease checks say what is wrong
    add("subnet-shared-with-master", "a minion's subnet.env holds the master's subnet, "
        "docker restarted with it",
        rewrite_subnet_env(B, lambda lab, env: {
            **env, "FLANNEL_SUBNET": lab.subnet_env(M)["FLANNEL_SUBNET"]}, True),
        [t("test_subnet_is_unique_across_nodes", M), t("test_subnet_is_unique_across_nodes", B),
         t("test_etcd_lease_names_the_private_ip", B)], [B])
    add("network-config-changed", "etcd's /coreos.com/network/config set to 10.200.0.0/16",
        network_config_changed(),
        [t(c, n) for c in ("test_network_config_equals_the_spec",
                           "test_subnet_lies_in_the_network_stored_in_etcd") for n in NODES],
        [M])
    add("dataplane-cut", "iptables -I FORWARD -s 10.100.0.0/16 -j DROP on a minion",
        forward_drop(B), [t(c, n) for c in ("test_container_reaches_every_other_node",
                                            "test_pod_reaches_the_pods_on_other_nodes")
                          for n in NODES], [B],
        note="an explicit DROP rule, not the policy: the FORWARD policy counter stays 0")
    add("forward-accept-removed", "the docker_forward_accept deviation undone on a minion: "
        "its two FORWARD ACCEPT rules for 10.100.0.0/16 deleted (policy DROP left alone)",
        forward_accept_removed(B),
        [t(c, n) for c in ("test_container_reaches_every_other_node",
                           "test_pod_reaches_the_pods_on_other_nodes") for n in (M, A)]
        + [t("test_forward_chain_passes_container_traffic", B)], [B],
        message={t("test_forward_chain_passes_container_traffic", B): "policy DROP dropped"},
        note="traffic into the node's containers is dropped by the policy; their own "
             "pings out still get answers (Docker accepts RELATED,ESTABLISHED to docker0)")
    add("docker-unit-in-1x-syntax", "docker.service rewritten to the guide's Docker 1.x line "
        "(daemon-reload; the running daemon is left alone)",
        drop_in(M, spec.DOCKER, "ExecStart=\nExecStart=/usr/bin/docker -d -s=btrfs -H fd:// "
                                "--bip=${FLANNEL_SUBNET} --mtu=${FLANNEL_MTU}", restart=False),
        [t("test_docker_unit_uses_current_docker_syntax", M),
         unit_check("test_unit_runs_the_guide_command", M, "docker")], [M])

    # -- API server, kubelet, registration ------------------------------------------------
    add("apiserver-on-all-interfaces", "apiserver drop-in: -address=0.0.0.0",
        drop_in(M, spec.APISERVER, lambda lab: exec_start(lab, M, spec.APISERVER,
                                                          address="0.0.0.0"), restart=True),
        [t("test_api_server_is_reachable_only_on_loopback", M),
         unit_check("test_unit_runs_the_guide_command", M, "apiserver")], [M],
        message={t("test_api_server_is_reachable_only_on_loopback", M): "*:8080"})
    # the insecure-port advisory must still xfail here: it reads -port, not the socket
    add("apiserver-down", "apiserver.service stopped",
        stop_unit(M, spec.APISERVER),
        [unit_check("test_unit_is_active", M, "apiserver"),
         t("test_api_server_answers_on_loopback", M), t("test_kubecfg_lists_every_node", M),
         t("test_api_lists_every_node", M),
         t("test_api_server_is_reachable_only_on_loopback", M), *WORKLOAD_EVERYWHERE],
        [M], slow=True)
    add("kubelet-on-public-address", "kubelet drop-in: -address=${COREOS_PUBLIC_IPV4}",
        drop_in(A, "kubelet.service", lambda lab: exec_start(
            lab, A, "kubelet.service", address="${COREOS_PUBLIC_IPV4}"), restart=True),
        [t("test_kubelet_listens_on_the_private_ip", A), t("test_kubelet_is_healthy", A),
         t("test_kubelet_reachable_from_the_master", A),
         t("test_kubelet_is_reachable_only_on_the_private_address", A),
         unit_check("test_unit_runs_the_guide_command", A, "kubelet"),
         t("test_kubecfg_lists_every_node", M), t("test_api_lists_every_node", M),
         *workload_fails(A)], [A], slow=True,
        message={t("test_kubelet_is_reachable_only_on_the_private_address", A):
                 "reachable from the public"}, note=KUBELET_UNREACHABLE)
    add("minion-not-registered", "controller-manager stopped, a minion DELETEd via the API",
        minion_unregistered(),
        [unit_check("test_unit_is_active", M, "controller-manager"),
         t("test_kubecfg_lists_every_node", M), t("test_api_lists_every_node", M),
         t("test_a_pod_runs_on_the_node", B), t("test_pod_reaches_the_pods_on_other_nodes", B)],
        [M, B], slow=True, note="the scheduler no longer knows the minion: its pod stays "
                               "unassigned (one hostPort per minion)")
    add("kubecfg-table-broken", "kubecfg prints a wrong table header",
        binary_wrapper(M, "kubecfg", 'case " $* " in *" list minions "*) "{real}" "$@" | '
                                     'sed "1s/.*/MINION/"; exit;; esac\nexec "{real}" "$@"\n'),
        [t("test_kubecfg_lists_every_node", M), t("test_binaries_identical_on_every_node", M)],
        [M], slow=True)
    add("kubecfg-version-other", "a kubecfg wrapper whose -version prints another release",
        version_wrapper(M, "kubecfg", "Kubernetes v0.6.2"),
        [t("test_kubecfg_version_answers", M), t("test_binaries_identical_on_every_node", M)], [M],
        message={t("test_kubecfg_version_answers", M): "Kubernetes v0.6.2"})

    # -- binaries ---------------------------------------------------------------------------
    add("binary-missing-on-minion", "/opt/bin/kube-proxy missing on a minion",
        move_file(A, f"{spec.BIN_DIR}/kube-proxy", f"{BACKUP}/kube-proxy"),
        [t("test_opt_bin_holds_what_the_role_needs", A)], [A])
    add("binary-differs-on-minion", "one byte appended to /opt/bin/kubelet on a minion",
        append_byte(B, "kubelet"), [t("test_binaries_identical_on_every_node", B)], [B])
    add("environment-names-another-address",
        "/etc/environment on a minion gives the master's private address as its own",
        commands(B, f"mkdir -p {BACKUP} && cp -a {spec.NODE_ENVIRONMENT} "
                    f"{BACKUP}/environment.real && sed -i 's/^COREOS_PRIVATE_IPV4=.*/COREOS_PRIVATE_IPV4=10.0.0.99/' "
                    f"{spec.NODE_ENVIRONMENT}",
                 f"cp -a {BACKUP}/environment.real {spec.NODE_ENVIRONMENT} && "
                 f"rm -f {BACKUP}/environment.real"),
        [t("test_etc_environment_names_the_nodes_own_addresses", B)], [B],
        message={t("test_etc_environment_names_the_nodes_own_addresses", B):
                 "COREOS_PRIVATE_IPV4=10.0.0.99"})
    add("proxy-version-other", "/opt/bin/kube-proxy on a minion reports another release",
        version_wrapper(A, "kube-proxy", "Kubernetes v0.6.2"),
        [t("test_binaries_report_the_shipped_version", A),
         t("test_binaries_identical_on_every_node", A)], [A],
        message={t("test_binaries_report_the_shipped_version", A): "kube-proxy: Kubernetes v0.6.2"})
    add("binary-differs-on-master", "one byte appended to /opt/bin/kube-scheduler on the master",
        append_byte(M, "kube-scheduler"), [t("test_binaries_identical_on_every_node", M)], [M])

    # -- advisories "fixed": the strict expected failure turns into a FAIL --------------------
    add("advisory-portal-net-fixed", "apiserver drop-in: -portal_net=10.200.0.0/16",
        drop_in(M, spec.APISERVER, lambda lab: exec_start(lab, M, spec.APISERVER,
                                                          portal_net="10.200.0.0/16"),
                restart=True),
        [t("test_portal_net_is_apart_from_the_flannel_network", M),
         unit_check("test_unit_runs_the_guide_command", M, "apiserver")], [M])
    add("advisory-minion-api-reachable", "an API server answers on a minion's 127.0.0.1:8080",
        second_api_on_minion(A), [t("test_scheduler_on_minion_reaches_the_api", A)], [A])
    add("advisory-etcd-v3-write", "flannel.service writes its config with `etcdctl put` (v3)",
        replace_in_unit_file(M, spec.FLANNEL, "ETCDCTL_API=2 /usr/bin/etcdctl set",
                             "ETCDCTL_API=3 /usr/bin/etcdctl put"),
        [t("test_flannel_config_written_without_the_etcd_v2_api", M),
         unit_check("test_unit_wraps_its_command_as_the_guide_writes", M, "flannel")], [M])

    add("advisory-insecure-port-fixed", "apiserver drop-in: -port=0 (no insecure port, the "
        "CIS fix; the guide's API on 127.0.0.1:8080 is gone with it, and so is the "
        "ExecStartPost loop that waits for it)",
        drop_in(M, spec.APISERVER, lambda lab: "ExecStartPost=\n" + exec_start(
            lab, M, spec.APISERVER, port="0"), restart=True),
        [t("test_api_server_serves_no_insecure_port", M),
         t("test_api_server_answers_on_loopback", M), t("test_kubecfg_lists_every_node", M),
         t("test_api_lists_every_node", M),
         unit_check("test_unit_runs_the_guide_command", M, "apiserver"),
         unit_check("test_unit_wraps_its_command_as_the_guide_writes", M, "apiserver"),
         *WORKLOAD_EVERYWHERE],
        [M], slow=True)
    add("advisory-read-only-port-fixed", "apiserver drop-in: -read_only_port=0 (no "
        "unauthenticated read-only API on the public address)",
        drop_in(M, spec.APISERVER, lambda lab: exec_start(lab, M, spec.APISERVER)
                + " -read_only_port=0", restart=True),
        [t("test_api_server_read_only_port_is_not_exposed", M),
         unit_check("test_unit_runs_the_guide_command", M, "apiserver")], [M])

    # -- the declared deviations' advisories "fixed" where a fix exists ---------------------
    add("advisory-forward-policy-accept", "iptables -P FORWARD ACCEPT on a minion (as Docker "
        "1.x left it)",
        commands(A, "iptables -w -P FORWARD ACCEPT", "iptables -w -P FORWARD DROP"),
        [t("test_guide_docker_forwards_flannel_traffic", A)], [A])
    add("advisory-pause-image-pulled", f"{spec.PAUSE_IMAGE} without our preload label (as "
        "the kubelet's pull would leave it)", pause_image_unlabelled(B),
        [t("test_pause_image_is_dockers_own", B)], [B])
    add("advisory-docker-socket-pinned", "Docker's own socket serves unversioned requests as "
        "API v1.15 (a docker-api-pin in front of it)", docker_socket_pinned(M),
        [t("test_docker_accepts_the_kubelets_start_request", M)], [M])

    # -- a control, no fault: routine operations after which every check still passes ---
    add("control-docker-restarted-alone", "no fault: `systemctl restart docker.service` "
        "alone, as an operator would", restart_alone(A, spec.DOCKER), (), [A], control=True,
        note="the start-order check once took this for a violation (it compared with the "
             "dependency's last activation); it now must not fail")

    # -- issue 10: a node that stops answering SSH mid-run ------------------------------------
    add("hung-node", "a minion stops answering SSH once the suite has connected",
        hung_ssh(B), (), [B], all_checks_of=B,
        except_=(t("test_kubelet_reachable_from_the_master", B),),
        inventory={"ssh": {"connect_timeout": 5, "command_timeout": 10}},
        note="only the master's view of the node's kubelet still passes")
    return faults


FAULTS: list[Fault] = _faults()
BY_NAME = {f.name: f for f in FAULTS}
assert len(BY_NAME) == len(FAULTS), "fault names must be unique"
