"""helpers/facts.py without a cluster: the start-order rule, the probe and ping answers,
the sockets' owners, the JSON hand-over to xdist workers, and what a node that cannot
be read gives (against a loopback sshd, tests/sshd.py)."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from helpers import facts as facts_mod
from helpers import node_facts, spec
from helpers.probes import Plan, Probe
from helpers.providers.base import Cluster, Node
from helpers.ssh import Connection
from tests.sshd import sshd  # noqa: F401  (a fixture)

MASTER = Node("coreos-1", "master", "192.168.2.1", "10.120.0.1", "192.168.2.1")
MINION = Node("coreos-2", "minion", "192.168.2.2", "10.120.0.2", "192.168.2.2")
CLUSTER = Cluster("local", [MASTER, MINION], "core", "/nonexistent/key")
SECOND = 1_000_000


def show(**units: tuple[float, float, float]) -> dict[str, dict[str, str]]:
    """{unit: (started, last went inactive, became active)} in seconds -> parsed props."""
    return {f"{name}.service": {
        "InactiveExitTimestampMonotonic": str(int(started * SECOND)),
        "InactiveEnterTimestampMonotonic": str(int(down * SECOND)),
        "ActiveEnterTimestampMonotonic": str(int(up * SECOND))}
        for name, (started, down, up) in units.items()}


BOOT = dict(etcd=(1.0, 0, 1.2), flannel=(1.3, 0, 1.4), docker=(1.5, 0, 2.0),
            kubelet=(2.1, 0, 2.2), proxy=(2.1, 0, 2.2), scheduler=(2.1, 0, 2.2))


def test_the_guides_boot_order_has_no_violation():
    assert node_facts.start_order_violations(spec.MINION, show(**BOOT)) == []


def test_a_unit_started_before_its_dependency_was_active_is_a_violation():
    units = show(**{**BOOT, "docker": (1.35, 0, 1.6)})   # flannel active only at 1.4 s
    assert node_facts.start_order_violations(spec.MINION, units) == [
        "docker started at 1.35s while flannel.service was not active (active only at 1.40s)"]


def test_a_dependency_restarted_later_alone_is_no_violation():
    """`systemctl restart docker` at 100 s: kubelet (started at 2.1 s) ran against the
    earlier docker, which was active then. The rule before this one flagged it."""
    units = show(**{**BOOT, "docker": (100.0, 99.9, 100.5)})
    assert node_facts.start_order_violations(spec.MINION, units) == []


def test_a_unit_started_while_its_restarted_dependency_was_down_is_a_violation():
    units = show(**{**BOOT, "docker": (100.0, 99.9, 100.5), "kubelet": (100.2, 99.0, 100.3)})
    assert [v.split()[0] for v in node_facts.start_order_violations(spec.MINION, units)] == [
        "kubelet"]


def test_a_unit_that_never_started_or_a_dependency_never_active_is_left_to_other_checks():
    units = show(**{**BOOT, "flannel": (0, 0, 0)})
    units["docker.service"]["ActiveEnterTimestampMonotonic"] = "0"
    assert node_facts.start_order_violations(spec.MINION, units) == []


# -- answers ------------------------------------------------------------------------------
def facts(**sections: str) -> node_facts.NodeFacts:
    return node_facts.NodeFacts(MINION, dict(sections), {name: 0 for name in sections})


def test_probe_address_is_read_from_the_containers_eth0():
    found = facts(probe_container="1450\n7: eth0    inet 10.100.18.2/24 brd 10.100.18.255 "
                                  "scope global eth0\npid 4242")
    assert found.probe_address() == "10.100.18.2" and found.probe_pid() == "4242"
    assert facts(probe_container="Error: No such image: busybox").probe_address() == ""
    assert facts(probe_container="Error: No such image: busybox").probe_pid() == ""
    failed = facts(probe_container="1450\n7: eth0 inet 10.100.18.2/24")
    failed.rc["probe_container"] = 125
    assert failed.probe_address() == ""


def test_pings_are_read_per_node_and_garbage_is_ignored():
    found = facts(pings="coreos-1 10.100.1.2 ok\ncoreos-3 10.100.3.2 FAILED\nnoise\n"
                        "coreos-4 x maybe")
    assert found.pings() == {"coreos-1": True, "coreos-3": False}


def test_ping_script_pings_every_target_at_once_from_the_probes_namespace():
    script = facts_mod.ping_script("4242", {"coreos-1": "10.100.1.2", "coreos-3": "10.100.3.2"})
    assert "; nsenter -n -t 4242 sh -c " in script
    assert script.count("ping -c 1 -W 2") == 2 and script.count(") &") == 2
    assert "wait'; " in script
    # the FORWARD chain's counters are read around the pings, in the node's namespace
    assert script.startswith('echo "forward-before $(iptables -w -L FORWARD')
    assert script.endswith('head -n 1)"') and script.count("iptables") == 2


def test_forward_drops_during_the_pings_are_the_counter_difference():
    found = facts(pings="forward-before Chain FORWARD (policy DROP 8 packets, 672 bytes)\n"
                        "coreos-2 10.100.13.2 FAILED\n"
                        "forward-after Chain FORWARD (policy DROP 14 packets, 1176 bytes)")
    assert found.dropped_during_pings() == ("DROP", 6)
    assert facts(pings="coreos-2 10.100.13.2 ok").dropped_during_pings() == ("", -1)
    assert found.pings() == {"coreos-2": False}


def test_probe_mtu_and_macs_come_from_the_containers_namespace():
    found = facts(probe_container=(
        "8: eth0@if9: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1472 qdisc noqueue state UP mode "
        "DEFAULT group default \\    link/ether 02:42:0a:64:29:03 brd ff:ff:ff:ff:ff:ff\n"
        "8: eth0    inet 10.100.41.3/24 brd 10.100.41.255 scope global eth0\n"
        "pid 643\nmac 02:42:0a:64:29:03"))
    assert found.probe_mtu() == "1472" and found.probe_address() == "10.100.41.3"
    assert found.probe_macs() == ("02:42:0a:64:29:03", "02:42:0a:64:29:03")
    assert facts(probe_container="1500\n8: eth0 inet 10.100.41.3/24").probe_mtu() == ""


def test_sockets_name_their_process_and_unit():
    found = facts(listen=(
        'tcp LISTEN 0 4096 192.168.2.1:7080 0.0.0.0:* users:(("kube-apiserver",pid=103,fd=10))\n'
        'udp UNCONN 0 0 0.0.0.0:8285 0.0.0.0:* users:(("flannel",pid=81,fd=11),'
        '("flannel",pid=81,fd=8))\n'
        "tcp LISTEN 0 4096 *:2379 *:*"),
        process_units="    103 apiserver.service\n     81 flannel.service\n")
    sockets = {s.local: s for s in found.sockets()}
    assert sockets["192.168.2.1:7080"].units == ("apiserver.service",)
    assert sockets["0.0.0.0:8285"].proto == "udp" and sockets["0.0.0.0:8285"].pids == ("81",)
    assert sockets["*:2379"].units == () and sockets["*:2379"].address == "*"
    assert found.listening() == {"192.168.2.1:7080", "*:2379"}


def test_listening_processes_names_each_sockets_pid():
    found = facts(listen='tcp LISTEN 0 5 127.0.0.1:8080 0.0.0.0:* users:(("python3",pid=141,fd=3))\n'
                         "tcp LISTEN 0 4096 10.120.0.1:10250 0.0.0.0:*\nshort line")
    assert found.listening_processes() == {"127.0.0.1:8080": "141", "10.120.0.1:10250": ""}


def test_the_probe_section_is_in_the_script_only_with_a_probe_name():
    guide = {"etcd_endpoint": "http://127.0.0.1:4001", "apiserver_address": "127.0.0.1",
             "apiserver_port": 8080, "kubelet_port": 10250}
    plan = facts_mod.full_plan()
    assert "probe_container" not in facts_mod.script(MINION, CLUSTER, guide, plan)
    with_probe = facts_mod.script(MINION, CLUSTER, guide, plan, probe="k8sconf-probe-abc")
    assert f"sleep {facts_mod.PROBE_LIFETIME}" in with_probe and "nsenter -n -t" in with_probe
    only = facts_mod.script(MASTER, CLUSTER, guide, plan, only=("api_minions",))
    assert only.count(facts_mod.MARK) == 2 and "/api/v1beta1/minions" in only


# -- the hand-over to xdist workers -------------------------------------------------------------
def test_save_and_load_keep_sections_codes_and_errors(tmp_path):
    gathered: facts_mod.Gathered = {"coreos-1": node_facts.NodeFacts(MASTER, {"boot_id": "b"}, {"boot_id": 0}),
                "coreos-2": node_facts.FactsError("coreos-2: the facts script did not finish "
                                                 "within 10 s")}
    path = tmp_path / "facts.json"
    facts_mod.save(gathered, path)
    loaded = facts_mod.load(path, CLUSTER)
    master = loaded["coreos-1"]
    assert isinstance(master, node_facts.NodeFacts)
    assert master.text == {"boot_id": "b"} and master.rc == {"boot_id": 0}
    assert master.node == MASTER
    assert isinstance(loaded["coreos-2"], node_facts.FactsError)
    assert "did not finish within 10 s" in str(loaded["coreos-2"])


# -- a node that cannot be read -------------------------------------------------------------------
GUIDE = {"etcd_endpoint": "http://127.0.0.1:1", "apiserver_address": "127.0.0.1",
         "apiserver_port": 1, "kubelet_port": 1}


def test_a_hung_node_gives_a_short_timeout_message_not_the_script(sshd, monkeypatch):  # noqa: F811
    node = sshd.node()
    plan = Plan({"hangs": Probe("hangs", "sleep 30")})
    connection = Connection(node, sshd.user, sshd.client_key, connect_timeout=5,
                            command_timeout=20)
    try:
        with pytest.raises(node_facts.FactsError) as raised:
            facts_mod.gather(connection, node, Cluster("static", [node], sshd.user, str(sshd.client_key)),
                             GUIDE, timeout=1.5, plan=plan)
    finally:
        sshd.kill_leftovers()
        connection.close()
    assert str(raised.value) == f"{node.name}: the facts script did not finish within 1.5 s"


def test_a_node_that_answers_no_section_is_a_facts_error(sshd, monkeypatch):  # noqa: F811
    node = sshd.node()
    monkeypatch.setattr(facts_mod, "script", lambda *a, **k: "echo not a facts script; exit 3")
    connection = Connection(node, sshd.user, sshd.client_key, connect_timeout=5,
                            command_timeout=20)
    try:
        with pytest.raises(node_facts.FactsError, match=r"answered no section \(exit 3\)"):
            facts_mod.gather(connection, node, Cluster("static", [node], sshd.user, str(sshd.client_key)),
                             GUIDE, timeout=10, plan=facts_mod.full_plan())
    finally:
        connection.close()


def test_an_unexpected_error_reading_one_node_fails_that_node_only(monkeypatch):
    class Broken:
        def run(self, *args, **kwargs):
            raise OSError("network is unreachable")

    class Answering:
        def run(self, command, **kwargs):
            return SimpleNamespace(stdout=f"{facts_mod.MARK}boot_id\nb\n{facts_mod.MARK}rc 0\n",
                                   stderr="", rc=0)

    found = facts_mod.gather_cluster(CLUSTER, {"coreos-1": Answering(), "coreos-2": Broken()},
                                     GUIDE, timeout=5, plan=facts_mod.full_plan())
    master = found["coreos-1"]
    assert isinstance(master, node_facts.NodeFacts) and master.section("boot_id") == "b"
    assert isinstance(found["coreos-2"], node_facts.FactsError)
    assert str(found["coreos-2"]) == "coreos-2: OSError: network is unreachable"


def test_evidence_shows_each_event_once_and_stays_short():
    from helpers.checks import EVIDENCE_LINES, condense
    journal = "\n".join(
        [f"[  {i}.10] coreos-2 dockerd[{200 + i}]: failed to start daemon: no bridge"
         for i in range(7)] + ["[  9.00] coreos-2 systemd[1]: docker.service: Failed."])
    text = condense(journal)
    assert text.count("failed to start daemon") == 1 and "(x7)" in text
    assert text.splitlines()[-1].endswith("docker.service: Failed.")
    glog = "\n".join(f"E1203 07:52:{i:02d}.261775    2435 kubelet.go:906] Error syncing pod"
                     for i in range(40))
    assert condense(glog).strip().endswith("Error syncing pod  (x40)")
    many = condense("\n".join(f"line {i}" for i in range(100)))
    assert len(many.splitlines()) == EVIDENCE_LINES + 1 and "75 earlier lines" in many
    assert condense("x" * 5000).endswith(" ...") and len(condense("x" * 5000)) < 320
    assert condense("") == "    (empty)"


def test_brief_addresses_say_in_a_line_what_the_json_says_in_a_kilobyte():
    found = facts(ip_addr='[{"ifname":"docker0","operstate":"DOWN","mtu":1472,"addr_info":'
                          '[{"family":"inet","local":"10.100.3.1","prefixlen":24}]}]')
    assert found.brief_addresses().split() == ["docker0", "DOWN", "mtu", "1472", "10.100.3.1/24"]
    assert facts(ip_addr="not json").brief_addresses() == "not json"


def test_the_probe_pings_window_runs_from_the_facts_round_to_after_every_nodes_pings():
    """Other nodes' pings reach a node while it runs its own: its counter is read in the
    facts round and again after all pings (the probe removal round)."""
    found = facts(forward_rules="-P FORWARD DROP\nChain FORWARD (policy DROP 8 packets, 672 bytes)",
                  forward_after="Chain FORWARD (policy DROP 11 packets, 924 bytes)",
                  pings="forward-before Chain FORWARD (policy DROP 8 packets, 672 bytes)\n"
                        "coreos-1 10.100.1.2 ok\n"
                        "forward-after Chain FORWARD (policy DROP 8 packets, 672 bytes)")
    assert found.dropped_during_pings() == ("DROP", 3)
    # the pods' pings keep their own window
    assert found.dropped_during_pings("pod_pings") == ("", -1)


def test_a_second_reading_leaves_the_pings_window_alone():
    readable = facts_mod.rereadable(MINION, CLUSTER, GUIDE, facts_mod.full_plan())
    assert "forward_rules" not in readable and "probe_container" not in readable
    assert "show" in readable and "listen" in readable


def test_a_unit_is_found_under_its_aliases_too():
    """Asked for etcd.service where it is a symlink to etcd-member.service, systemd answers
    with the unit it aliases."""
    units = node_facts.parse_show("Id=etcd-member.service\nNames=etcd-member.service etcd.service\n"
                                  "LoadState=loaded\n\nId=docker.service\nLoadState=loaded")
    assert units["etcd.service"] is units["etcd-member.service"]
    assert units["docker.service"]["LoadState"] == "loaded"


def _run_ip_addr(tmp_path, interrupted: int) -> str:
    """The ip_addr probe's command, under a fake `ip` whose first `interrupted` dumps are
    marked interrupted, as iproute2 marks a dump that interfaces changed under."""
    import subprocess
    fake = tmp_path / "ip"
    fake.write_text(f"""#!/bin/sh
n=$(cat {tmp_path}/count 2>/dev/null || echo 0); echo $((n + 1)) > {tmp_path}/count
[ "$n" -lt {interrupted} ] && echo 'Dump was interrupted and may be inconsistent.' >&2
echo '[{{"ifname":"lo"}}]'
""")
    fake.chmod(0o755)
    command = node_facts.IP_ADDR.command
    assert isinstance(command, str)
    return subprocess.run(["sh", "-c", command], capture_output=True,
                          text=True, timeout=30, env={"PATH": f"{tmp_path}:/usr/bin:/bin"}).stdout


def test_an_interrupted_address_dump_is_asked_again(tmp_path):
    assert _run_ip_addr(tmp_path, interrupted=2) == '[{"ifname":"lo"}]\n'
    assert (tmp_path / "count").read_text().strip() == "3"


def test_a_dump_interrupted_every_time_fails_closed(tmp_path):
    text = _run_ip_addr(tmp_path, interrupted=99)
    assert text.startswith("Dump was interrupted")
    with pytest.raises(node_facts.FactsError, match="did not answer JSON"):
        node_facts.NodeFacts(MINION, {"ip_addr": text}, {"ip_addr": 0}).addresses("docker0")
