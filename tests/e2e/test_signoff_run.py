"""The sign-off on a real cluster with the guide's real binaries (issue 16's "done when"):
a full run ends PASS with a bundle that verify-bundle accepts; `-k kubelet` ends PARTIAL;
an expired waiver stops the run with one line; compare names a planted fault, and only
it, as new; a waiver for that fault turns the run into "PASS with 1 waiver"; and a
failure gone on the second reading of its node is reported as transient.

One cluster of its own (prefix k8ssign, 192.168.61.0/24 and 10.161.0.0/24), kept between
the runs and destroyed at the end by the last run, and by the fixture in any case."""
from __future__ import annotations

import json
import re
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from helpers import lifecycle
from helpers.inventory import ROOT, load
from helpers.providers import Cluster
from helpers.providers.local import LocalProvider
from tests.e2e.suite_runs import SuiteRun, inventory_file, leftovers

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.xdist_group("signoff-run")]
PREFIX = "k8ssign"
FAULT = "test_unit_is_enabled_for_multi_user[coreos-2-proxy]"
KEEP = ("--reuse-cluster", "--no-bootstrap", "--keep-cluster")


class Runs:
    def __init__(self, work: Path):
        self.work = work
        self.reports = work / "reports"
        self.inventory = inventory_file(work, PREFIX, 61)
        self.count = 0

    def run(self, *args: str, timeout: float = 900) -> tuple[int, str]:
        self.count += 1
        run = SuiteRun(self.inventory, self.reports, "-q", "-p", "no:randomly", *args)
        code = run.wait(timeout)
        (self.work / f"run{self.count}.log").write_text(run.output)
        return code, run.output

    def verdict(self, output: str) -> str:
        found = re.findall(r"^# Conformance sign-off: (.*)$", output, re.M)
        assert found, output[-3000:]
        return found[-1]

    def bundle(self, output: str) -> Path:
        found = re.findall(r"^sealed sign-off bundle: (\S+)", output, re.M)
        assert found, output[-3000:]
        return Path(found[-1])

    def sh(self, node: str, command: str) -> str:
        state = json.loads((self.reports / "cluster" / "state.json").read_text())
        cluster = Cluster.from_json(json.dumps(state["cluster"]))
        connection = lifecycle.connect_all(cluster, load(self.inventory))[node]
        try:
            return connection.run(command, sudo=True, timeout=60, check=True).stdout
        finally:
            connection.close()

    def destroy(self) -> None:
        state_file = self.reports / "cluster" / "state.json"
        cluster = None
        if state_file.exists():
            state = json.loads(state_file.read_text())
            if state.get("cluster"):
                cluster = Cluster.from_json(json.dumps(state["cluster"]))
        LocalProvider(load(self.inventory), self.reports / "cluster", "cleanup").destroy(cluster)


def script(name: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(ROOT / "scripts" / name), *args], capture_output=True,
                          text=True, timeout=120, cwd=ROOT)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    work = tmp_path_factory.mktemp("signoff")
    runs = Runs(work)
    try:
        yield runs
    finally:
        runs.destroy()
        assert leftovers(PREFIX) == []


@pytest.fixture(scope="module")
def healthy(runs) -> Path:
    code, output = runs.run("--keep-cluster")
    assert code == 0 and runs.verdict(output) == "PASS", output[-3000:]
    return runs.bundle(output)


def test_a_full_run_passes_with_a_bundle_that_verifies(runs, healthy):
    result = script("verify-bundle", str(healthy))
    assert result.returncode == 0 and result.stdout.startswith("OK: "), result.stdout + result.stderr
    names = subprocess.run(["tar", "-tzf", str(healthy)], capture_output=True, text=True).stdout
    for name in ("summary.md", "summary.json", "junit.xml", "facts.json", "provenance.json",
                 "SHA256SUMS", "allure-results/"):
        assert f"/{name}" in names, name
    assert "id_ed25519" not in names


def test_a_narrowed_run_is_partial(runs, healthy):
    code, output = runs.run("-k", "kubelet", *KEEP)
    total = len(ET.parse(runs.reports / "junit.xml").getroot().findall(".//testcase"))
    assert code == 0 and total > 20
    verdict = runs.verdict(output)
    whole = re.match(r"PARTIAL \((\d+) of (\d+) checks\)$", verdict)
    assert whole and int(whole.group(1)) == total and int(whole.group(2)) > total, verdict


def test_an_expired_waiver_stops_the_run_in_one_line(runs, healthy):
    waivers = runs.work / "expired.yaml"
    waivers.write_text("waivers:\n- check: test_kubelet_is_healthy[coreos-2]\n  reason: old\n"
                       "  owner: alice\n  link: https://tracker.example/1\n"
                       "  expires: 2020-01-01\n")
    code, output = runs.run("--waivers", str(waivers), *KEEP)
    errors = [line for line in output.splitlines() if line.startswith("ERROR")]
    assert code == 4 and errors == [
        f"ERROR: waivers {waivers}: waivers.0 (test_kubelet_is_healthy[coreos-2]): expired on "
        "2020-01-01 (owner alice): renew or remove it"], output[-2000:]
    assert "Traceback" not in output


def test_compare_names_the_planted_fault_and_a_waiver_accepts_it(runs, healthy):
    runs.sh("coreos-2", "systemctl disable proxy.service")
    try:
        code, output = runs.run(*KEEP)
        assert code == 1 and runs.verdict(output) == "FAIL"
        faulty = runs.bundle(output)
        markdown = runs.work / "compare.md"
        result = script("compare", str(healthy), str(faulty), "--markdown", str(markdown))
        assert result.returncode == 1, result.stdout + result.stderr
        block = result.stdout.split("new failures: ", 1)[1].split("\nfixed: ", 1)[0]
        count, *lines = block.splitlines()
        assert count == "1" and lines[0].strip().startswith(f"{FAULT}: coreos-2: "), block
        assert "new failure**" in markdown.read_text()

        waivers = runs.work / "waivers.yaml"
        waivers.write_text(f"waivers:\n- check: {FAULT}\n  scope: {{node: coreos-2}}\n"
                           "  reason: proxy.service disabled on purpose for NET-3\n"
                           "  owner: release-team\n  link: https://tracker.example/NET-3\n"
                           "  expires: 2099-12-31\n")
        code, output = runs.run("--waivers", str(waivers), *KEEP)
        assert code == 0 and runs.verdict(output) == "PASS with 1 waiver", output[-3000:]
        summary = json.loads((runs.reports / "summary.json").read_text())
        assert list(summary["waivers"]["applied"].values()) == [FAULT]
        junit = ET.parse(runs.reports / "junit.xml").getroot()
        case = next(c for c in junit.iter("testcase") if c.get("name") == FAULT)
        skipped = case.find("skipped")
        assert skipped is not None, ET.tostring(case)
        assert skipped.get("message", "").startswith("waived: proxy.service disabled")
    finally:
        runs.sh("coreos-2", "systemctl enable proxy.service")


def test_a_failure_gone_on_the_second_reading_is_transient(runs, healthy):
    """proxy.service is down while the facts are gathered and up again before the checks
    judge it: its check fails on the first reading, passes on the second, and is reported
    as transient (flaky in Allure), not hidden; a plain run stays persistent."""
    runs.sh("coreos-2", "systemctl stop proxy.service")
    run = SuiteRun(runs.inventory, runs.reports, "-q", "-p", "no:randomly", *KEEP)
    try:
        run.wait_for(lambda: run.saw("gather facts for the checks"), "the facts", 600)
    finally:
        runs.sh("coreos-2", "systemctl start proxy.service")
    assert run.wait(600) == 0, run.output[-3000:]
    summary = json.loads((runs.reports / "summary.json").read_text())
    name = "suites/test_units.py::test_unit_is_active[coreos-2-proxy]"
    assert summary["transient"] == {name: "coreos-2: proxy.service is active"}
    assert summary["verdict"] == "PASS" and "## Transient failures" in run.output
    flaky = [json.loads(p.read_text()) for p in (runs.reports / "allure-results").glob("*-result.json")]
    flaky = [r["name"] for r in flaky if (r.get("statusDetails") or {}).get("flaky")]
    assert flaky == ["test_unit_is_active[coreos-2-proxy]"]


def test_the_cluster_is_green_again_then_destroyed(runs, healthy):
    code, output = runs.run("--reuse-cluster", "--no-bootstrap")   # no --keep-cluster
    assert code == 0 and runs.verdict(output) == "PASS", output[-3000:]
