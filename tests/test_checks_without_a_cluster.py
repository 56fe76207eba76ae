"""The checks of /etc/environment, of the binaries' versions, of the commands around a
unit's ExecStart, of restarts since a unit started and of etcd's member URLs, and the
negative checks, whether etcd runs as the unit the guide's units name, and a
unit dependency met through an alias, fed facts by hand: each passes on what a healthy node shows, and fails,
naming what it found, on a wrong value and on a probe that did not run (fail closed)."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from helpers import spec
from helpers.checks import CheckFailed
from helpers.inventory import parse
from helpers.node_facts import NodeFacts
from helpers.providers.base import Cluster, Node
from suites import test_binaries, test_environment, test_etcd, test_units

NODE = Node(name="coreos-2", role="minion", public_ip="192.168.2.12",
            private_ip="10.120.0.12", ssh_host="192.168.2.12")
DIGEST = "ab" * 32
HEALTHY_VERSIONS = ("flannel 0.2.0\nkube-scheduler Kubernetes v0.7.0\n"
                    "kube-proxy Kubernetes v0.7.0\nkubelet Kubernetes v0.7.0")
SUMS = "\n".join(f"{DIGEST}  {b}" for b in ("flannel", "kube-scheduler", "kube-proxy", "kubelet"))
STATE = {"binaries": {"binaries": {"flannel": {"version": "0.2.0"},
                                   "kube-proxy": {"version": "Kubernetes v0.7.0"},
                                   "kubelet": {"version": "(not asked)"}}}}


def facts(**sections: tuple[str, int]) -> NodeFacts:
    return NodeFacts(NODE, {k: v[0] for k, v in sections.items()},
                     {k: v[1] for k, v in sections.items()})


def environment(text: str, rc: int = 0) -> NodeFacts:
    return facts(environment=(text, rc))


def test_environment_with_the_nodes_own_addresses_passes():
    test_environment.test_etc_environment_names_the_nodes_own_addresses(NODE, environment(
        "COREOS_PUBLIC_IPV4=192.168.2.12\nCOREOS_PRIVATE_IPV4=10.120.0.12\n"))


@pytest.mark.parametrize("text, rc, found", [
    ("COREOS_PUBLIC_IPV4=192.168.2.12\nCOREOS_PRIVATE_IPV4=10.0.0.99", 0,
     "COREOS_PRIVATE_IPV4=10.0.0.99"),
    ("COREOS_PUBLIC_IPV4=192.168.2.12", 0, r"COREOS_PRIVATE_IPV4=\(absent\)"),
    ("cat: /etc/environment: No such file or directory", 1, "could not be read"),
    ("", -1, "could not be read"),                       # the section never ran
], ids=["another-address", "absent", "unreadable", "not-gathered"])
def test_environment_fails_closed(text, rc, found):
    with pytest.raises(CheckFailed, match=found) as failed:
        test_environment.test_etc_environment_names_the_nodes_own_addresses(
            NODE, environment(text, rc))
    assert NODE.name in str(failed.value)


def versions(text: str, rc: int = 0) -> NodeFacts:
    return facts(binaries=(SUMS, 0), binary_versions=(text, rc))


def test_the_shipped_versions_pass():
    test_binaries.test_binaries_report_the_shipped_version(NODE, versions(HEALTHY_VERSIONS),
                                                           STATE)


@pytest.mark.parametrize("text, rc, found", [
    (HEALTHY_VERSIONS.replace("kube-proxy Kubernetes v0.7.0", "kube-proxy Kubernetes v0.6.2"),
     0, "kube-proxy: Kubernetes v0.6.2"),
    (HEALTHY_VERSIONS.replace("flannel 0.2.0", "flannel 0.1.0-standin (stand-in)"), 0,
     "flannel: 0.1.0-standin"),
    (HEALTHY_VERSIONS.replace("kubelet Kubernetes v0.7.0\n", "").rsplit("\n", 1)[0], 0,
     "kubelet: \\(no answer\\)"),
    ("", -1, "kubelet: \\(no answer\\)"),               # the section never ran
], ids=["other-release", "stand-in", "no-answer", "not-gathered"])
def test_a_version_other_than_shipped_fails(text, rc, found):
    with pytest.raises(CheckFailed, match=found):
        test_binaries.test_binaries_report_the_shipped_version(NODE, versions(text, rc), STATE)


def test_a_version_probe_that_did_not_run_fails_even_with_no_binary_to_ask():
    with pytest.raises(CheckFailed, match="did not run|no binary"):
        test_binaries.test_binaries_report_the_shipped_version(
            NODE, facts(binaries=("", 0), binary_versions=("", -1)), STATE)


# What `systemctl show flannel.service` printed on a real node (flannel v0.2.0, the embedded
# cluster's deviations), trimmed to the lines the check reads.
FLANNEL_SHOWN = (
    "Id=flannel.service\n"
    "ExecStartPre={ path=/bin/bash ; argv[]=/bin/bash -c until ETCDCTL_API=2 /usr/bin/etcdctl "
    "set /coreos.com/network/config '{\"Network\": \"10.100.0.0/16\"}'; do echo \"waiting for "
    "etcd to become available...\"; sleep 5; done ; ignore_errors=yes ; start_time=[Thu "
    "2026-12-03 20:12:19 UTC] ; stop_time=[Thu 2026-12-03 20:12:19 UTC] ; pid=73 ; "
    "code=exited ; status=0 }\n"
    "ExecStartPost={ path=/bin/bash ; argv[]=/bin/bash -c until [ -e /run/flannel/subnet.env "
    "]; do echo \"waiting for write.\"; sleep 3; done ; ignore_errors=yes ; start_time=[Thu "
    "2026-12-03 20:12:19 UTC] ; stop_time=[Thu 2026-12-03 20:12:22 UTC] ; pid=82 ; "
    "code=exited ; status=0 }\n"
    "EnvironmentFiles=/etc/environment (ignore_errors=no)\n")
LOCAL = Path(__file__).parent.parent / "inventories" / "local.yaml"


def wrapped(shown: str) -> None:
    inventory = parse(yaml.safe_load(LOCAL.read_text()), str(LOCAL))
    cluster = Cluster("local", [NODE], "core", "/nonexistent/key")
    test_units.test_unit_wraps_its_command_as_the_guide_writes(
        NODE, spec.FLANNEL, facts(show=(shown, 0)), inventory, cluster)


def test_flannels_wrapping_as_a_real_node_shows_it_passes():
    wrapped(FLANNEL_SHOWN)


@pytest.mark.parametrize("change, found", [
    (("/etc/environment (ignore_errors=no)", "/etc/other (ignore_errors=no)"),
     "EnvironmentFiles: /etc/other"),
    (("ignore_errors=yes ; start_time=[Thu 2026-12-03 20:12:19 UTC] ; stop_time=[Thu "
      "2026-12-03 20:12:19 UTC]", "ignore_errors=no ; start_time=[Thu 2026-12-03 20:12:19 "
      "UTC] ; stop_time=[Thu 2026-12-03 20:12:19 UTC]"), r"ExecStartPre: .*ignore_errors=no"),
    (("sleep 3", "sleep 30"), "ExecStartPost: .*sleep 30"),
    (("Id=flannel.service\n", ""), r"found: +EnvironmentFiles: \(none\)"),
], ids=["another-file", "pre-may-not-fail", "post-changed", "not-gathered"])
def test_flannels_wrapping_changed_fails(change, found):
    with pytest.raises(CheckFailed, match=found):
        wrapped(FLANNEL_SHOWN.replace(*change))


# systemd 252's words (`journalctl -b _PID=1 -o cat`) after `systemctl kill -s KILL` of a
# kube-proxy with Restart=on-failure, and its counter in `systemctl show`
PROXY_CRASHED = ("proxy.service: Main process exited, code=killed, status=9/KILL\n"
                 "proxy.service: Scheduled restart job, restart counter is at 1.")


def restarted(restarts: str | None, exits: str = "", rc: int = 0) -> None:
    shown = "Id=proxy.service\nActiveState=active\n" + (
        f"NRestarts={restarts}\n" if restarts is not None else "")
    test_units.test_unit_has_not_restarted_since_it_started(
        NODE, "proxy.service", facts(show=(shown, rc), unit_exits=(exits, 0)))


def test_a_unit_that_never_restarted_passes():
    restarted("0")


@pytest.mark.parametrize("restarts, exits, rc, found", [
    ("1", PROXY_CRASHED, 0, r"NRestarts=1, last exit: Main process exited, code=killed, "
                            r"status=9/KILL"),
    ("3", "", 0, "NRestarts=3, last exit: none in the journal"),
    (None, "", 0, r"NRestarts=\(not reported\)"),
    (None, "", 124, r"NRestarts=\(not reported\)"),
], ids=["killed-once", "journal-rotated", "old-systemd", "show-timed-out"])
def test_a_restarted_unit_or_an_unread_counter_fails(restarts, exits, rc, found):
    with pytest.raises(CheckFailed, match=found):
        restarted(restarts, exits, rc)


# etcd 3.4's answers on coreos-2 of a local cluster (`/v2/stats/self` cut to what is read)
ETCD_SELF = '{"name":"coreos-2","id":"5c19cd7a9afba20","state":"StateFollower"}\n200'
ETCD_MEMBERS = (
    '{"members":[{"id":"5c19cd7a9afba20","name":"coreos-2","peerURLs":'
    '["http://10.120.0.12:2380"],"clientURLs":["http://10.120.0.12:2379",'
    '"http://10.120.0.12:4001"]},{"id":"f804fae81e0aa28e","name":"coreos-1","peerURLs":'
    '["http://10.120.0.11:2380"],"clientURLs":["http://192.168.2.11:2379"]}]}\n200')


def member(self_answer: str = ETCD_SELF, members: str = ETCD_MEMBERS) -> None:
    from suites import test_etcd
    test_etcd.test_etcd_member_talks_over_the_private_address(
        NODE, facts(etcd_self=(self_answer, 0), etcd_members=(members, 0)))


def test_a_member_on_its_private_address_passes_whatever_the_others_advertise():
    member()


@pytest.mark.parametrize("change, self_answer, found", [
    (("http://10.120.0.12:2379", "http://192.168.2.12:2379"), ETCD_SELF,
     "clientURLs http://192.168.2.12:2379"),
    (("http://10.120.0.12:2380", "http://127.0.0.1:2380"), ETCD_SELF,
     "peerURLs http://127.0.0.1:2380"),
    (('"clientURLs":["http://10.120.0.12:2379","http://10.120.0.12:4001"]', '"clientURLs":[]'),
     ETCD_SELF, "no clientURLs"),
    (("", ""), "\n000", "no member of this node's etcd"),
    (("5c19cd7a9afba20", "0123"), ETCD_SELF, "no member of this node's etcd"),
], ids=["client-on-public", "peer-on-loopback", "no-client-urls", "self-unanswered",
        "not-a-member"])
def test_a_member_elsewhere_or_unread_fails(change, self_answer, found):
    with pytest.raises(CheckFailed, match=found):
        member(self_answer, ETCD_MEMBERS.replace(*change))


# -- negative checks fail closed: a probe that did not answer is never "nothing wrong" ----

def minion_show(**stamps: int) -> str:
    """`systemctl show` of a minion's units, started in the guide's order: flannel at 1 s,
    docker at 2 s, the rest at 3 s (or at the times given, in microseconds)."""
    order = {"flannel": 1, "docker": 2}
    blocks = []
    for unit in (u.name for u in spec.units_for(spec.MINION)):
        short = unit.removesuffix(".service")
        at = stamps.get(short, order.get(short, 3) * 10**6)
        blocks.append(f"Id={unit}\nLoadState=loaded\nInactiveExitTimestampMonotonic={at}\n"
                      f"InactiveEnterTimestampMonotonic=0\nActiveEnterTimestampMonotonic={at + 1}\n")
    blocks += [f"Id={u.name}\nLoadState=not-found\n" for u in spec.UNITS
               if not u.runs_on(spec.MINION)]
    return "\n".join(blocks)


def test_a_minion_started_in_order_passes_the_order_and_absence_checks():
    test_units.test_start_order_since_boot_respects_after(NODE, facts(show=(minion_show(), 0)))
    test_units.test_master_only_units_absent_on_minion(NODE, facts(show=(minion_show(), 0)))


@pytest.mark.parametrize("check, found", [
    (test_units.test_start_order_since_boot_respects_after, "no start time reported for"),
    (test_units.test_master_only_units_absent_on_minion, r"LoadState=not reported"),
], ids=["start-order", "master-only-absent"])
def test_unit_checks_fail_when_systemctl_show_did_not_answer(check, found):
    with pytest.raises(CheckFailed, match=found):
        check(NODE, facts(show=("", 124)))


def test_a_unit_started_before_its_dependency_fails():
    with pytest.raises(CheckFailed, match="docker started at 0.00s while flannel.service was not active"):
        test_units.test_start_order_since_boot_respects_after(
            NODE, facts(show=(minion_show(docker=500), 0)))


def test_no_failed_units_passes_on_an_empty_answer_and_fails_on_none():
    test_units.test_no_failed_units(NODE, facts(failed=("", 0)))
    with pytest.raises(CheckFailed, match=r"did not answer \(rc 124\)"):
        test_units.test_no_failed_units(NODE, facts(failed=("", 124)))
    with pytest.raises(CheckFailed, match="flannel.service"):
        test_units.test_no_failed_units(
            NODE, facts(failed=("flannel.service loaded failed failed flannel", 0)))


def test_binaries_identical_fails_when_no_checksum_was_read():
    state = {"bootstrap": {"checksums": {"flannel": DIGEST}}}
    test_binaries.test_binaries_identical_on_every_node(
        NODE, facts(binaries=(SUMS, 0)), None, None, state)
    with pytest.raises(CheckFailed, match="no checksum read"):
        test_binaries.test_binaries_identical_on_every_node(
            NODE, facts(binaries=("", 1)), None, None, state)


# -- etcd as the unit the guide's units name ------------------------------------------------
DEBIAN_ETCD = ("Id=etcd.service\nNames=etcd.service\nLoadState=loaded\nActiveState=active\n\n"
               "Id=etcd-member.service\nNames=etcd-member.service\nLoadState=not-found\n"
               "ActiveState=inactive")
# `systemctl show etcd.service etcd-member.service` where etcd.service is a symlink to
# Flatcar's unit: both blocks are the one unit
FLATCAR_ALIASED = "\n\n".join(["Id=etcd-member.service\nNames=etcd-member.service etcd.service\n"
                                "LoadState=loaded\nActiveState=active"] * 2)
FLATCAR_BARE = ("Id=etcd.service\nNames=etcd.service\nLoadState=not-found\nActiveState=inactive"
                "\n\nId=etcd-member.service\nNames=etcd-member.service\nLoadState=loaded\n"
                "ActiveState=active")


@pytest.mark.parametrize("show", [DEBIAN_ETCD, FLATCAR_ALIASED], ids=["etcd.service", "alias"])
def test_etcd_as_the_guides_unit_or_an_alias_of_it_passes(show):
    test_etcd.test_etcd_runs_as_the_unit_the_guides_units_name(NODE, facts(show=(show, 0)))


@pytest.mark.parametrize("show, found", [
    (FLATCAR_BARE, r"etcd runs as etcd-member.service \(Flatcar's name.*Requires=etcd.service "
                   r"cannot be met"),
    (DEBIAN_ETCD.replace("ActiveState=active", "ActiveState=failed", 1),
     "etcd.service: ActiveState=failed"),
    ("", r"no etcd.service \(LoadState=\?\) and no etcd-member.service"),   # never ran
], ids=["only-etcd-member", "failed", "not-gathered"])
def test_etcd_under_another_name_or_down_fails_naming_the_cause(show, found):
    with pytest.raises(CheckFailed, match=found) as failed:
        test_etcd.test_etcd_runs_as_the_unit_the_guides_units_name(NODE, facts(show=(show, 0)))
    assert str(failed.value).startswith(f"{NODE.name}: ")


# systemd lists a dependency under the unit's Id: with etcd.service an alias of
# etcd-member.service, flannel's Requires=etcd.service shows as etcd-member.service
def flannel_requires(etcd_blocks: str) -> NodeFacts:
    flannel = "Id=flannel.service\nNames=flannel.service\nRequires=etcd-member.service sysinit.target"
    return facts(show=(f"{flannel}\n\n{etcd_blocks}", 0))


def test_a_dependency_met_through_an_alias_passes():
    test_units.test_unit_dependencies_match_the_guide(
        NODE, spec.FLANNEL, "Requires", flannel_requires(FLATCAR_ALIASED))


def test_a_dependency_on_a_unit_of_another_name_fails():
    with pytest.raises(CheckFailed, match=r"missing etcd.service \(effective: "
                                          r"etcd-member.service sysinit.target\)"):
        test_units.test_unit_dependencies_match_the_guide(
            NODE, spec.FLANNEL, "Requires", flannel_requires(FLATCAR_BARE))
