"""The `static` provider's preflight: each host is where the guide starts (etcd members,
/etc/environment, Docker, etcd.service) before the bootstrap, one line per problem, exit 4
through the real entry. Hosts are fakes answering the script (tests/support/static_hosts.py),
or a closed loopback port; no root, no cluster."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from helpers import inventory as inv
from helpers import ssh
from helpers.providers import static
from helpers.providers.base import ProviderUnavailable
from tests.support import static_hosts
from tests.support.static_hosts import answer, members

EXAMPLE = yaml.safe_load((inv.INVENTORY_DIR / "static.example.yaml").read_text())
INVENTORY = inv.parse(EXAMPLE)
NODES = list(INVENTORY.nodes or ())
ONE, TWO, THREE = NODES
V4001, V2379 = "http://127.0.0.1:4001/v2/members", "http://127.0.0.1:2379/v2/members"


def ready(**changes) -> dict[str, str]:
    """Every host ready, but coreos-2 with `changes` (see static_hosts.answer)."""
    return {n.name: answer(n, NODES, **(changes if n is TWO else {})) for n in NODES}


def preflight(monkeypatch, answers, inventory=INVENTORY, opened=None) -> list[str]:
    monkeypatch.setattr(static, "open_connection", static_hosts.fake_open(answers, opened))
    try:
        static.StaticProvider(inventory, Path("/nonexistent"), "r1").preflight()
    except static.HostsNotReady as exc:
        assert str(exc).splitlines()[1:] == exc.problems
        return exc.problems
    return []


def test_ready_hosts_pass_with_one_bounded_script_each(monkeypatch):
    opened: list[static_hosts.FakeConnection] = []
    assert preflight(monkeypatch, ready(), opened=opened) == []
    assert sorted(c.node.name for c in opened) == ["coreos-1", "coreos-2", "coreos-3"]
    assert all(len(c.calls) == 1 and c.calls[0][1] and c.closed for c in opened)
    assert {c.node.ssh_host for c in opened} == {"192.0.2.11", "192.0.2.12", "192.0.2.13"}


HOST = "coreos-2 (192.0.2.12): "
ENV = "/etc/environment: "
MISSING = [
    ("no /etc/environment", dict(env=None),
     ENV + "expected the file with COREOS_PUBLIC_IPV4 and COREOS_PRIVATE_IPV4, found no such file"),
    ("no private address", dict(env="COREOS_PUBLIC_IPV4=192.0.2.12\n"),
     ENV + "COREOS_PRIVATE_IPV4 expected 10.120.0.2, found nothing"),
    ("wrong public address", dict(env="COREOS_PUBLIC_IPV4=192.0.2.99\nCOREOS_PRIVATE_IPV4=10.120.0.2"),
     ENV + "COREOS_PUBLIC_IPV4 expected 192.0.2.12, found 192.0.2.99"),
    ("no docker", dict(docker="", units={"docker.service": "not-found"}),
     "docker: expected `docker` on PATH or a docker.service unit file, found neither"),
    ("no etcd unit", dict(units={"etcd.service": "not-found"}),
     "etcd.service: expected the unit or an alias of it, found neither it nor "
     "etcd-member.service"),
    ("etcd silent", dict(etcd={}),
     f"etcd: expected the v2 API at {V4001} or {V2379}, found no answer"),
    ("etcd without v2", dict(etcd={4001: "404 page not found"}),
     f"etcd: expected the v2 API at {V4001}, found '404 page not found'"),
    ("four members", dict(etcd={4001: json.dumps({"members": members([*NODES, ONE])})}),
     "etcd members: expected 3 (one per inventory node), found 4 (coreos-1, coreos-2, "
     "coreos-3, coreos-1)"),
    ("clients on loopback", dict(etcd={2379: json.dumps({"members": [
        {**m, "clientURLs": ["http://127.0.0.1:2379"]} for m in members(NODES)]})}),
     "etcd client URLs: expected one on each private address, found none on 10.120.0.1, "
     "10.120.0.2, 10.120.0.3 (the members advertise http://127.0.0.1:2379, "
     "http://127.0.0.1:2379, http://127.0.0.1:2379)"),
    ("no curl", dict(curl=""),
     "etcd: not checked: expected curl on PATH (the guide's apiserver.service runs it too), "
     "found none"),
]


@pytest.mark.parametrize("changes, line", [m[1:] for m in MISSING], ids=[m[0] for m in MISSING])
def test_each_missing_item_is_its_own_line(monkeypatch, changes, line):
    assert preflight(monkeypatch, ready(**changes)) == [HOST + line]


def test_a_missing_member_also_names_its_private_address(monkeypatch):
    two = {4001: json.dumps({"members": members(NODES[:2])})}
    assert preflight(monkeypatch, ready(etcd=two)) == [
        HOST + "etcd members: expected 3 (one per inventory node), found 2 (coreos-1, coreos-2)",
        HOST + "etcd client URLs: expected one on each private address, found none on "
        "10.120.0.3 (the members advertise http://10.120.0.1:2379, http://10.120.0.1:4001, "
        "http://10.120.0.2:2379, http://10.120.0.2:4001)"]


@pytest.mark.parametrize("changes", [
    dict(docker="", units={"docker.service": "loaded"}),               # the unit, not on PATH
    dict(units={"docker.service": "not-found"}),                       # on PATH, no unit
    dict(etcd={2379: json.dumps({"members": members(NODES)})}),        # 2379 only
    dict(env='# written by hand\nCOREOS_PUBLIC_IPV4="192.0.2.12"\n\nCOREOS_PRIVATE_IPV4=10.120.0.2'),
    dict(units={"etcd.service": ("loaded", "etcd-member.service")}),   # an alias of Flatcar's
], ids=["docker unit", "docker on PATH", "etcd on 2379", "quoted env", "etcd alias"])
def test_what_the_guide_allows_passes(monkeypatch, changes):
    assert preflight(monkeypatch, ready(**changes)) == []


def test_flatcar_etcd_member_only_says_an_alias_or_drop_in_is_needed(monkeypatch):
    found = preflight(monkeypatch, ready(units={"etcd.service": "not-found",
                                                "etcd-member.service": "loaded"}))
    assert found == [HOST + "etcd.service: expected the unit or an alias of it, found only "
                     "etcd-member.service (Flatcar's name, which the guide's units do not "
                     "name): add an alias (ln -s /usr/lib/systemd/system/etcd-member.service "
                     "/etc/systemd/system/etcd.service) or drop-ins that point the guide's "
                     "units at etcd-member.service"]


def test_unreachable_and_timed_out_hosts_are_one_line_each(monkeypatch):
    answers: dict[str, str | Exception] = {
        **ready(), "coreos-3": ssh.SSHError("coreos-3: cannot connect to 192.0.2.13:22: "
                                            "[Errno 111] Connection refused")}
    found = preflight(monkeypatch, answers)
    assert found == ["coreos-3 (192.0.2.13): SSH: cannot connect to 192.0.2.13:22: "
                     "[Errno 111] Connection refused"]


def test_a_failing_script_is_one_line(monkeypatch):
    class Failing(static_hosts.FakeConnection):
        def __init__(self, node, stdout):
            super().__init__(node, "sh: syntax error", rc=2)
    monkeypatch.setattr(static_hosts, "FakeConnection", Failing)
    assert preflight(monkeypatch, ready())[0] == \
        "coreos-1 (192.0.2.11): SSH: the preflight script exited 2: sh: syntax error"


def test_every_host_and_item_together_in_one_error(monkeypatch):
    answers: dict[str, str | Exception] = {
        "coreos-1": answer(ONE, NODES, env=None, docker="", units={"docker.service": "x"}),
        "coreos-2": ssh.SSHError("coreos-2: authentication as core failed: nope"),
        "coreos-3": answer(THREE, NODES, etcd={})}
    monkeypatch.setattr(static, "open_connection", static_hosts.fake_open(answers))
    with pytest.raises(ProviderUnavailable) as raised:
        static.StaticProvider(INVENTORY, Path("/nonexistent"), "r1").preflight()
    lines = str(raised.value).splitlines()
    assert lines[0] == "static provider: 4 problem(s) with the hosts, nothing was changed:"
    assert [ln.split(":")[0] for ln in lines[1:]] == [
        "coreos-1 (192.0.2.11)", "coreos-1 (192.0.2.11)", "coreos-2 (192.0.2.12)",
        "coreos-3 (192.0.2.13)"]


def test_no_bootstrap_no_host_check(monkeypatch):
    """A run of the checks alone reports an unready host as failed checks, not exit 4."""
    monkeypatch.setattr(static, "open_connection", static_hosts.fake_open({}))
    quiet = inv.parse({**EXAMPLE, "bootstrap": {"enabled": False}})
    static.StaticProvider(quiet, Path("/nonexistent"), "r1").preflight()
    provider = static.StaticProvider(INVENTORY, Path("/nonexistent"), "r1")
    provider.bootstraps = False   # as the lifecycle sets it for --no-bootstrap
    provider.preflight()


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_real_refused_connection_names_the_host(tmp_path):
    """The real open_connection against a loopback port nobody listens on."""
    key = tmp_path / "id_ed25519"
    key.write_text("not used: the connection is refused first\n")
    inventory = inv.parse({**EXAMPLE, "nodes": [
        {"name": "coreos-1", "role": "master", "public_ip": "127.0.0.1", "private_ip": "10.120.0.1"}],
        "ssh": {"key": str(key), "port": closed_port(), "connect_timeout": 2}})
    with pytest.raises(static.HostsNotReady) as raised:
        static.StaticProvider(inventory, tmp_path, "r1").preflight()
    (line,) = raised.value.problems
    assert line.startswith(f"coreos-1 (127.0.0.1): SSH: cannot connect to 127.0.0.1:"
                           f"{inventory.ssh.port}: "), line


# -- through the real entry: pytest --dry-run, and a run of the suites -------------------------

def pytest_with_fake_hosts(tmp_path: Path, answers: dict[str, str], *args: str):
    data = {**EXAMPLE, "ssh": {**EXAMPLE["ssh"], "key": str(tmp_path / "absent-key")}}
    path = tmp_path / "static.yaml"
    path.write_text(yaml.safe_dump(data))
    fake = static_hosts.write_answers(tmp_path / "answers.json", answers)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTEST_ADDOPTS", "K8SCONF_REPORTS")}
    return subprocess.run(
        [sys.executable, "-m", "pytest", f"--inventory={path}", "-p", "tests.support.static_hosts",
         f"--reports-dir={tmp_path / 'reports'}", "-p", "no:cacheprovider", *args],
        cwd=inv.ROOT, env={**env, static_hosts.FAKE_HOSTS_ENV: str(fake)},
        capture_output=True, text=True, timeout=120)


BROKEN = {**ready(units={"etcd.service": "not-found", "etcd-member.service": "loaded"}),
          "coreos-1": answer(ONE, NODES, env="COREOS_PUBLIC_IPV4=192.0.2.11\n"),
          "coreos-3": "error: cannot connect to 192.0.2.13:22: timed out"}
BROKEN_LINES = [
    "coreos-1 (192.0.2.11): /etc/environment: COREOS_PRIVATE_IPV4 expected 10.120.0.1, "
    "found nothing",
    "coreos-2 (192.0.2.12): etcd.service: expected the unit or an alias of it, found only "
    "etcd-member.service",
    "coreos-3 (192.0.2.13): SSH: cannot connect to 192.0.2.13:22: timed out"]


def test_dry_run_exits_4_with_one_line_per_problem(tmp_path):
    result = pytest_with_fake_hosts(tmp_path, BROKEN, "--dry-run")
    output = result.stdout + result.stderr
    assert result.returncode == 4, output
    assert "Traceback" not in output
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert lines[0].startswith("ERROR: dry run of ") and "3 problem(s), nothing created" in lines[0]
    assert [ln[:len(want)] for ln, want in zip(lines[1:], BROKEN_LINES, strict=True)] == BROKEN_LINES
    assert not (tmp_path / "reports").exists()


@pytest.mark.slow
def test_a_run_of_the_suites_exits_4_before_building_or_creating(tmp_path):
    result = pytest_with_fake_hosts(tmp_path, BROKEN, str(inv.ROOT / "suites"), "-q")
    output = result.stdout + result.stderr
    assert result.returncode == 4, output[-3000:]
    assert "Traceback" not in output
    assert "ERROR: static provider: 3 problem(s) with the hosts, nothing was changed:" in output
    for line in BROKEN_LINES:
        assert line in output
    assert not (tmp_path / "reports" / "cluster").exists()
