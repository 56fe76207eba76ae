"""helpers/probes.py: the facts a run gathers are the ones its selected checks declare, a
check that reads what it did not declare is refused before anything is made, and a new
fact with its check is one file."""
from __future__ import annotations

import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest

from helpers import facts as facts_mod
from helpers import node_facts, plugin, probes
from helpers.providers.base import Cluster, Node

MASTER = Node("coreos-1", "master", "192.168.2.1", "10.120.0.1", "192.168.2.1")
MINION = Node("coreos-2", "minion", "192.168.2.2", "10.120.0.2", "192.168.2.2")
CLUSTER = Cluster("local", [MASTER, MINION], "core", "/nonexistent/key")
GUIDE = {"etcd_endpoint": "http://127.0.0.1:4001", "apiserver_address": "10.120.0.1",
         "apiserver_port": 8080, "kubelet_port": 10250}


def selected(*args: str) -> probes.Plan:
    """The plan of a conformance run given these arguments (relative to the checkout)."""
    config = SimpleNamespace(args=list(args), invocation_params=SimpleNamespace(dir=plugin.SUITES.parent))
    return plugin._plan(config)


def suite(tmp_path: Path, source: str) -> Path:
    path = tmp_path / "test_new.py"
    path.write_text(textwrap.dedent(source))
    return path


def test_a_fact_no_selected_check_needs_is_not_gathered():
    plan = selected("suites/test_flannel.py")
    assert {"subnet_env", "etcd_config", "etcd_subnets", "journal"} <= set(plan.probes)
    for unread in ("kubecfg_minions", "probe_container", "pings", "docker_ps", "show"):
        assert unread not in plan
    script = facts_mod.script(MASTER, CLUSTER, GUIDE, plan, probe="k8sconf-probe-abc")
    assert "kubecfg" not in script and "docker run" not in script
    assert "/run/flannel/subnet.env" in script


def test_the_report_environment_is_always_gathered():
    assert {"versions", "docker_version"} <= set(selected("suites/test_flannel.py").probes)


def test_one_check_selected_by_its_id_gathers_what_it_declares():
    plan = selected("suites/test_registration.py::test_api_lists_every_node[coreos-1]")
    assert "api_minions" in plan and "kubecfg_minions" not in plan


def test_the_whole_suite_gathers_every_declared_probe():
    whole = selected("suites")
    assert set(whole.probes) == set(facts_mod.full_plan().probes)
    assert {"pings", "probe_container", "forward_after", "pods", "kubelet_from_master"} <= set(
        whole.probes)


def test_the_data_plane_round_runs_only_when_a_check_reads_the_pings():
    class Answering:
        def __init__(self):
            self.commands = []

        def run(self, command, **kwargs):
            self.commands.append(command)
            return SimpleNamespace(stdout=f"{facts_mod.MARK}subnet_env\nx\n{facts_mod.MARK}rc 0\n",
                                   stderr="", rc=0)

    connections = {"coreos-1": Answering(), "coreos-2": Answering()}
    facts_mod.gather_cluster(CLUSTER, connections, GUIDE, 5, selected("suites/test_flannel.py"))
    assert all(len(c.commands) == 1 and "docker run" not in c.commands[0]
               for c in connections.values())


def test_a_check_reading_an_undeclared_fact_is_refused_by_name(tmp_path):
    path = suite(tmp_path, """
        from helpers.node_facts import SUBNET_ENV
        from helpers.probes import reads

        @reads(SUBNET_ENV)
        def test_declared(node, facts):
            assert facts.section("subnet_env")

        def test_forgot(node, facts):
            assert facts.http("etcd_config").status == 200
        """)
    with pytest.raises(probes.ProbeError) as refused:
        probes.plan({module: () for module in probes.load([path])})
    assert str(refused.value) == ("test_new.py::test_forgot reads `etcd_config`, which it does "
                                  "not declare: add it to its @reads(...)")


def test_reads_through_a_module_helper_count_for_the_check_that_calls_it(tmp_path):
    path = suite(tmp_path, """
        def _mtu(facts):
            return facts.env_file("subnet_env").get("FLANNEL_MTU")

        def test_mtu(node, facts):
            assert _mtu(facts)
        """)
    with pytest.raises(probes.ProbeError, match="test_mtu reads `subnet_env`"):
        probes.plan({module: () for module in probes.load([path])})


def test_an_accessor_handed_on_with_its_name_is_a_read(tmp_path):
    path = suite(tmp_path, """
        from helpers.checks import readable

        def test_networks(node, facts):
            assert readable(facts.json, "docker_network")
        """)
    with pytest.raises(probes.ProbeError, match="reads `docker_network`"):
        probes.plan({module: () for module in probes.load([path])})


def test_a_parser_brings_the_probe_it_reads():
    path = Path(plugin.SUITES / "test_units.py")
    plan = probes.plan({module: ("test_unit_is_active",) for module in probes.load([path])})
    # facts.unit() parses `systemctl show`; unit_evidence() shows the file and the journal
    assert set(plan.probes) == {"show", "unit_files", "journal"}


def test_a_new_fact_and_its_check_are_one_file(tmp_path):
    path = suite(tmp_path, """
        from helpers.probes import Probe, reads

        UPTIME = Probe("uptime", "cat /proc/uptime")

        @reads(UPTIME)
        def test_the_node_has_been_up_a_while(node, facts):
            assert float(facts.section(UPTIME).split()[0]) > 1
        """)
    (module,) = probes.load([path])
    plan = probes.plan({module: ()})
    script = facts_mod.script(MINION, CLUSTER, GUIDE, plan)
    assert f"{facts_mod.MARK}uptime" in script and "cat /proc/uptime" in script
    texts, codes = facts_mod.split_sections(f"{facts_mod.MARK}uptime\n0.5 1.0\n"
                                            f"{facts_mod.MARK}rc 0\n")
    with pytest.raises(AssertionError):
        module.test_the_node_has_been_up_a_while(MINION, node_facts.NodeFacts(MINION, texts, codes))


def test_a_per_node_probe_runs_on_the_master_once_for_every_node():
    plan = selected("suites/test_kubelet.py::test_kubelet_reachable_from_the_master")
    on_master = plan.sections(MASTER, CLUSTER, GUIDE)
    assert {"kubelet_from_master coreos-1", "kubelet_from_master coreos-2"} <= set(on_master)
    assert "http://10.120.0.2:10250/healthz" in on_master["kubelet_from_master coreos-2"]
    assert not any(name.startswith("kubelet_from_master") for name in
                   plan.sections(MINION, CLUSTER, GUIDE))


def test_two_probes_of_one_name_are_refused(tmp_path):
    path = suite(tmp_path, """
        from helpers.probes import Probe, reads

        @reads(Probe("show", "systemctl status"))
        def test_other_show(node, facts):
            assert facts.section("show")
        """)
    modules = probes.load([path])
    with pytest.raises(probes.ProbeError, match="two probes are named `show`"):
        probes.plan({module: () for module in modules}, (node_facts.SHOW,))
