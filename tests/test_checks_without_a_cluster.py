"""The checks of /etc/environment, of the binaries' versions and of the commands around
a unit's ExecStart, fed facts by hand: each passes on what a healthy node shows, and
fails, naming what it found, on a wrong value and on a probe that did not run (fail
closed)."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from helpers import spec
from helpers.checks import CheckFailed
from helpers.facts import NodeFacts
from helpers.inventory import parse
from helpers.providers.base import Cluster, Node
from suites import test_binaries, test_environment, test_units

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
