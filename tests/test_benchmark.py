"""tools/benchmark.py's own logic, without a cluster: counting SSH round trips (against a
loopback sshd, tests/sshd.py), pytest's summary line, the tables, the targets and the JSON."""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from helpers.ssh import Connection
from tests.sshd import sshd  # noqa: F401  (a fixture)
from tools import bench_counts, bench_table, benchmark


def size(nodes, verify, baseline=None, serial=None, xdist=None, trips=3):
    row = {"nodes": nodes, "up_s": 2.5, "bootstrap_s": 15.0, "loadavg_start": [0.5, 0.4, 0.3],
           "verify": {"wall_s": verify, "round_trips_max": trips, "node_cpu_s": 4.0 * nodes,
                      "cpu_floor_s": 2.0 * nodes}}
    if baseline is not None:
        row["baseline"] = {"wall_s": baseline, "round_trips_max": 160}
        row["speedup"] = bench_table.ratio(baseline, verify)
    if serial is not None:
        row["pytest_serial"] = {"wall_s": serial, "round_trips_max": trips + 1}
    if xdist is not None:
        row["pytest_xdist"] = {"wall_s": xdist, "round_trips_max": 3 * trips}
    return row


# -- what a command is for ------------------------------------------------------------
@pytest.mark.parametrize("command,kind", [
    ("echo '@@k8sconf-section boot_id'; timeout 10 sh -c 'cat x'", "facts"),
    ("docker run -d --rm --name p busybox sleep 600 >/dev/null && docker inspect p",
     "probe start"),
    ("docker exec p ping -c 1 -W 2 10.1.2.3 >/dev/null 2>&1 && echo a ok", "ping"),
    ("docker rm -f k8sconf-probe-abc", "probe remove"),
    ("ip route", "ip route"),
    (b"systemctl show -p After --value etcd.service", "systemctl show"),
    (b"sudo /bin/sh -c 'sha256sum /opt/bin/kubelet'", "sha256sum"),
    ("(. /etc/os-release; echo os=$PRETTY_NAME)", "node versions"),
    ("", "(empty)"),
])
def test_command_kind(command, kind):
    assert bench_counts.command_kind(command) == kind


# -- counting -----------------------------------------------------------------------------
class FakeConnection:
    def __init__(self, name):
        self.node = SimpleNamespace(name=name)
        self.ran = []

    def _execute(self, command, *, timeout, sudo=False, stdin=None):
        self.ran.append(command)
        return 0, b"", b""

    def connect(self):
        return self


def test_counter_counts_per_node_and_kind_and_uninstalls():
    original = FakeConnection.__dict__["_execute"]
    counter = bench_counts.CommandCounter().install(FakeConnection)
    try:
        a, b = FakeConnection("coreos-1"), FakeConnection("coreos-2")
        a.connect()
        a._execute("docker rm -f x", timeout=1)
        a._execute("ip route", timeout=1)
        b._execute(b"ping -c 1 x", timeout=1, sudo=True)
    finally:
        counter.uninstall()
    assert FakeConnection.__dict__["_execute"] is original
    assert a.ran == ["docker rm -f x", "ip route"]           # still executed
    assert counter.as_dict() == {
        "commands": {"coreos-1": {"ip route": 1, "probe remove": 1}, "coreos-2": {"ping": 1}},
        "connects": {"coreos-1": 1}}
    assert bench_counts.per_node(counter.as_dict()) == {"coreos-1": 2, "coreos-2": 1}
    FakeConnection("coreos-3")._execute("true", timeout=1)
    assert "coreos-3" not in bench_counts.per_node(counter.as_dict())   # uninstalled


def test_counter_matches_commands_run_over_real_ssh_and_testinfra(sshd, tmp_path):  # noqa: F811
    (tmp_path / "f").write_text("x")
    counter = bench_counts.CommandCounter().install()
    try:
        connection = Connection(sshd.node("coreos-1"), sshd.user, sshd.client_key,
                                connect_timeout=5, command_timeout=20)
        connection.run("true")
        connection.run("echo '@@k8sconf-section boot_id'")
        host = connection.testinfra_host()
        assert host.file(str(tmp_path / "f")).exists
        assert host.run("echo hi").stdout == "hi\n"
        connection.close()
    finally:
        counter.uninstall()
    counted = counter.as_dict()
    assert bench_counts.per_node(counted) == {"coreos-1": connection.commands_run}
    assert connection.commands_run >= 4
    assert counted["commands"]["coreos-1"]["facts"] == 1
    assert counted["connects"] == {"coreos-1": 1}
    assert Connection._execute.__name__ == "_execute"    # the class is as it was


def test_merge_counts_of_several_processes():
    controller = {"commands": {"coreos-1": {"node versions": 1}}, "connects": {"coreos-1": 1}}
    gw0 = {"commands": {"coreos-1": {"facts": 1, "ping": 1}, "coreos-2": {"facts": 1}},
           "connects": {"coreos-1": 1, "coreos-2": 1}}
    gw1 = {"commands": {"coreos-1": {"facts": 1}, "coreos-2": {"facts": 1, "ping": 1}},
           "connects": {"coreos-1": 1, "coreos-2": 1}}
    merged = bench_counts.merge_counts([controller, gw0, gw1])
    assert bench_counts.per_node(merged) == {"coreos-1": 4, "coreos-2": 3}
    assert merged["connects"] == {"coreos-1": 3, "coreos-2": 2}
    assert bench_counts.kinds_total(merged) == {"facts": 4, "ping": 2, "node versions": 1}


def test_plugin_writes_counts_per_process_and_restores_connection(tmp_path, monkeypatch):
    monkeypatch.setenv(bench_counts.COUNTS_ENV, str(tmp_path / "counts"))
    original = Connection.__dict__["_execute"]
    config = SimpleNamespace(workerinput={"workerid": "gw1"})
    bench_counts.pytest_configure(config)
    try:
        assert Connection.__dict__["_execute"] is not original
        counter = bench_counts._plugin_counter
        assert counter is not None
        counter.record("coreos-2", "docker rm -f p")
        bench_counts.pytest_sessionfinish(SimpleNamespace(config=config), 0)
        counter.record("coreos-2", "ip route")   # after sessionfinish
    finally:
        bench_counts.pytest_unconfigure(config)
    assert Connection.__dict__["_execute"] is original
    assert bench_counts._plugin_counter is None
    files = list((tmp_path / "counts").glob("*.json"))
    assert [f.name.split("-")[0] for f in files] == ["gw1"]
    found = bench_counts.read_counts(tmp_path / "counts")
    assert found["commands"] == {"coreos-2": {"ip route": 1, "probe remove": 1}}
    assert found["processes"] == 1


def test_plugin_does_nothing_without_the_variable(monkeypatch):
    monkeypatch.delenv(bench_counts.COUNTS_ENV, raising=False)
    original = Connection.__dict__["_execute"]
    bench_counts.pytest_configure(SimpleNamespace())
    assert Connection.__dict__["_execute"] is original
    bench_counts.pytest_unconfigure(SimpleNamespace())


# -- pytest's output ------------------------------------------------------------------------
def test_parse_pytest_summary():
    output = "....\nsome line in 3s\n============ 202 passed, 5 xfailed in 71.63s (0:01:11) ======"
    assert bench_table.parse_pytest_summary(output) == {"passed": 202, "xfailed": 5,
                                                      "session_s": 71.63}
    assert bench_table.parse_pytest_summary("1 failed, 2 errors in 3.2s") == {
        "failed": 1, "error": 2, "session_s": 3.2}
    assert bench_table.parse_pytest_summary("210 tests collected in 0.91s") == {}
    assert bench_table.parse_pytest_summary("no summary") == {}


def test_summarize_runs_reports_the_median_run_and_the_spread():
    runs = [{"wall_s": 3.0, "round_trips_max": 4}, {"wall_s": 2.0, "round_trips_max": 4},
            {"wall_s": 9.0, "round_trips_max": 5}]
    summary = bench_table.summarize_runs(runs)
    assert summary["wall_s"] == 3.0 and summary["wall_s_min"] == 2.0
    assert summary["wall_s_runs"] == [3.0, 2.0, 9.0]


# -- table, targets, JSON -------------------------------------------------------------------
def test_table_has_a_row_per_size_and_dashes_for_what_was_not_measured():
    text = bench_table.format_table([size(3, 2.5, baseline=20.0), size(12, 6.0)])
    lines = text.splitlines()
    assert len(lines) == 4
    assert lines[0].split()[:4] == ["nodes", "up", "s", "bootstrap"]
    assert len({len(line) for line in lines}) == 1            # aligned columns
    three, twelve = lines[2].split(), lines[3].split()
    assert three[:4] == ["3", "2.5", "15.0", "2.50"]
    assert "8.0" in three                                       # 20.0 / 2.5
    assert twelve[0] == "12" and "-" in twelve                  # no baseline, no pytest
    counts = bench_table.format_table([size(3, 2.0, trips=4)], bench_table.COUNTS).splitlines()
    assert counts[2].split()[:2] == ["3", "4"]


def test_targets_met_and_missed():
    sizes = [size(3, 4.0, baseline=30.0, serial=8.0, xdist=9.0, trips=4),
             size(6, 5.0, serial=10.0, xdist=10.0, trips=5),
             size(12, 9.0, serial=20.0, xdist=15.0, trips=5)]
    targets = {t["target"]: t for t in bench_table.evaluate_targets(sizes)}
    assert targets["verify 3 nodes in-process < 5 s"]["met"] is True
    assert targets["3 nodes: >= 5x faster than per-assertion testinfra calls (same checks)"]["value"] == 7.5
    assert targets["<= 5 round trips per node (in-process)"]["met"] is True
    assert targets["<= 5 round trips per node (pytest serial)"]["value"] == 6
    assert targets["<= 5 round trips per node (pytest serial)"]["met"] is False
    assert targets["<= 5 round trips per node (pytest -n 3)"]["value"] == 15
    assert targets["12 nodes / 3 nodes wall < 2 (in-process)"]["value"] == 2.25
    assert targets["12 nodes / 3 nodes wall < 2 (in-process)"]["met"] is False
    assert targets["12 nodes / 3 nodes wall < 2 (pytest -n 3)"]["met"] is True
    floor = "for comparison: 12 / 3 nodes of the nodes' CPU floor (node CPU seconds / cores)"
    assert targets[floor]["value"] == 4.0 and targets[floor]["met"] == "info"
    text = bench_table.format_targets(list(targets.values()))
    assert "MISSED" in text and "MET" in text and "info" in text


def test_cpu_floor_divides_the_nodes_cpu_by_this_machines_cores(monkeypatch):
    monkeypatch.setattr(benchmark.os, "cpu_count", lambda: 4)
    assert benchmark.cpu_floor(10.0) == 2.5
    assert benchmark.cpu_floor(None) is None


def test_targets_not_measured_are_none():
    targets = bench_table.evaluate_targets([size(6, 5.0)])
    assert {t["target"]: t["met"] for t in targets}["verify 3 nodes in-process < 5 s"] is None
    assert all(t["met"] is None for t in targets if "12 nodes" in t["target"])
    assert "not measured" in bench_table.format_targets(targets)


def test_report_writes_json_with_targets(tmp_path):
    payload = {"sizes": [size(3, 3.0, baseline=30.0)], "cpus": 2}
    text = benchmark.report(payload, tmp_path)
    written = json.loads((tmp_path / "benchmark.json").read_text())
    assert written["sizes"][0]["speedup"] == 10.0
    assert {t["target"] for t in written["targets"]} >= {"verify 3 nodes in-process < 5 s"}
    assert str(tmp_path / "benchmark.json") in text and "ratio" in text


def test_main_writes_reports_benchmark_json_under_k8sconf_reports(tmp_path, monkeypatch,
                                                                   capsys):
    import helpers.paths
    monkeypatch.setenv("K8SCONF_REPORTS", str(tmp_path))
    monkeypatch.setattr(helpers.paths, "REPORTS", tmp_path / "benchmark")
    seen = []

    def fake_size(count, work, options, say, result):
        seen.append((count, work, options.repeat))
        result.update(size(count, 1.0 * count, baseline=10.0 * count))
        say(f"{count} nodes measured")
        return result
    monkeypatch.setattr(benchmark, "bench_size", fake_size)
    assert benchmark.main(["--sizes", "3,12", "--repeat", "1"]) == 0
    assert seen == [(3, tmp_path / "benchmark", 1), (12, tmp_path / "benchmark", 1)]
    written = json.loads((tmp_path / "benchmark.json").read_text())
    assert [s["nodes"] for s in written["sizes"]] == [3, 12]
    assert written["prefix"] == "k8sbench"
    out = capsys.readouterr().out
    assert "12 nodes measured" in out and "targets:" in out


def test_main_keeps_what_a_failed_size_measured(tmp_path, monkeypatch, capsys):
    import helpers.paths
    monkeypatch.setenv("K8SCONF_REPORTS", str(tmp_path))
    monkeypatch.setattr(helpers.paths, "REPORTS", tmp_path / "benchmark")

    def failing(count, work, options, say, result):
        result["up_s"] = 2.0
        raise RuntimeError("setup failed: boom")
    monkeypatch.setattr(benchmark, "bench_size", failing)
    assert benchmark.main(["--sizes", "3"]) == 1
    written = json.loads((tmp_path / "benchmark.json").read_text())
    assert written["sizes"] == [{"nodes": 3, "up_s": 2.0}]
    assert "boom" in written["error"]


def test_main_refuses_reports_it_cannot_relocate(tmp_path, monkeypatch):
    import helpers.paths
    monkeypatch.setenv("K8SCONF_REPORTS", str(tmp_path))
    monkeypatch.setattr(helpers.paths, "REPORTS", Path("/elsewhere"))
    with pytest.raises(SystemExit, match="relocate"):
        benchmark.main(["--sizes", "3"])


def test_sizes_are_validated():
    assert benchmark.parse_args(["--sizes", "3, 6"]).sizes == [3, 6]
    with pytest.raises(SystemExit):
        benchmark.parse_args(["--sizes", "0"])
    with pytest.raises(SystemExit):
        benchmark.parse_args(["--sizes", "17"])
