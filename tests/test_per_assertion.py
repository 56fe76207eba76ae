"""tools/per_assertion.py, the benchmark's baseline, without a cluster: every ask of a fact
runs its command again, the data plane stays the controller's, and its fixture is the one
the checks receive even though the suite's plugin defines the same one."""
from __future__ import annotations

import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

from helpers.node_facts import NodeFacts
from helpers.probes import Http
from helpers.providers.base import Node
from tools.per_assertion import DATA_PLANE, PerAssertionFacts

ROOT = Path(__file__).resolve().parent.parent


class FakeHost:
    """testinfra's Host as far as the baseline uses it: run() under sudo()."""

    def __init__(self, answers: dict[str, tuple[str, int]]):
        self.answers, self.in_sudo = answers, False
        self.ran: list[str] = []

    @contextmanager
    def sudo(self):
        self.in_sudo = True
        yield
        self.in_sudo = False

    def run(self, command: str):
        assert self.in_sudo, "the facts script runs as root; so must its parts"
        self.ran.append(command)
        text, rc = next(a for needle, a in self.answers.items() if needle in command)
        return SimpleNamespace(stdout=text, rc=rc)


def facts(host, commands, text=None, rc=None):
    node = Node(name="coreos-1", role="master", public_ip="192.168.2.1",
                private_ip="10.120.0.1", ssh_host="192.168.2.1")
    gathered = NodeFacts(node, text or {}, rc or {})
    return PerAssertionFacts(gathered, host, commands)


def test_every_ask_runs_the_command_again():
    host = FakeHost({"cat /run/flannel/subnet.env": ("FLANNEL_SUBNET=10.100.5.1/24\n", 0)})
    found = facts(host, {"subnet_env": "cat /run/flannel/subnet.env"})
    assert found.ok("subnet_env")
    assert found.section("subnet_env") == "FLANNEL_SUBNET=10.100.5.1/24"
    assert found.env_file("subnet_env") == {"FLANNEL_SUBNET": "10.100.5.1/24"}
    assert len(host.ran) == 3
    assert all("timeout -s KILL" in command for command in host.ran)


def test_a_failed_command_reads_as_the_batched_script_has_it():
    host = FakeHost({"subnet.env": ("cat: /run/flannel/subnet.env: No such file\n", 1)})
    found = facts(host, {"subnet_env": "cat /run/flannel/subnet.env"})
    assert not found.ok("subnet_env")
    assert found.section("subnet_env") == "cat: /run/flannel/subnet.env: No such file"


def test_an_http_section_answers_by_its_status_code():
    url = "http://127.0.0.1:8080/healthz"
    up = facts(FakeHost({url: ("ok\n200", 0)}), {"local_api": Http(url)})
    down = facts(FakeHost({url: ("\n000", 7)}), {"local_api": Http(url)})
    assert up.ok("local_api") and up.http("local_api").status == 200
    assert not down.ok("local_api") and not down.http("local_api").answered


def test_the_data_plane_and_the_workload_come_from_the_controllers_rounds():
    host = FakeHost({})
    found = facts(host, {name: "false" for name in DATA_PLANE},
                  text={"probe_container": "pid 42", "pings": "coreos-2 10.100.7.2 ok",
                        "pods_created": "3"},
                  rc={"probe_container": 0, "pings": 0, "pods_created": 0})
    assert found.section("probe_container") == "pid 42" and found.ok("pings")
    assert found.section("pods_created") == "3"
    assert host.ran == []


SUITE_PLUGIN = '''
import pytest

class Run:   # like helpers.plugin.ConformanceRun: registered in pytest_configure
    @pytest.fixture(scope="session")
    def cluster_facts(self):
        return "the suite's own"

    @pytest.fixture(scope="session")
    def cluster(self):
        return None

    @pytest.fixture(scope="session")
    def connections(self):
        return {}

    @pytest.fixture(scope="session")
    def facts_plan(self):
        return None   # the cache then plans every suite's probes itself

    @pytest.fixture(scope="session")
    def inventory(self):
        return None

def pytest_configure(config):
    config.pluginmanager.register(Run(), "fake-k8sconf-run")
'''


def test_its_fixture_replaces_the_suites(tmp_path):
    (tmp_path / "suite_plugin.py").write_text(SUITE_PLUGIN)
    (tmp_path / "test_one.py").write_text(
        "from tools.per_assertion import PerAssertionCache\n"
        "def test_it(cluster_facts):\n"
        "    assert isinstance(cluster_facts, PerAssertionCache), cluster_facts\n")
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "suite_plugin",
         "-p", "tools.per_assertion", "test_one.py"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
        env={"PYTHONPATH": f"{tmp_path}:{ROOT}", "PATH": "/usr/bin:/bin",
             "K8SCONF_REPORTS": str(tmp_path / "reports")})
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "1 passed" in result.stdout
