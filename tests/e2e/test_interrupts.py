"""Interrupted runs (issue 10): Ctrl-C or SIGTERM while the cluster is being made, while
the guide's install runs, and while the checks run, and a killed xdist worker. Afterwards
nothing of the cluster is left, the exit code is non-zero, and the report holds what ran."""
import json
import os
import signal
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.e2e.suite_runs import SuiteRun, inventory_file, leftovers

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
PREFIX = "k8sint"
PHASES = {
    # each: what shows that the phase is under way
    "provisioning": lambda run: bool(leftovers(PREFIX)),
    "bootstrap": lambda run: run.saw("create local cluster"),
    # a module's progress line ends when the next module starts: some checks have run
    "checks": lambda run: run.saw("suites/test_apiserver.py"),
}


def junit_cases(path: Path) -> int:
    return len(ET.parse(path).getroot().findall(".//testcase")) if path.exists() else 0


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("phase", list(PHASES))
def test_interrupted_run_leaves_no_cluster(tmp_path, phase, sig):
    reports = tmp_path / "reports"
    run = SuiteRun(inventory_file(tmp_path, PREFIX, 32), reports)
    try:
        run.wait_for(lambda: PHASES[phase](run), f"the {phase} phase", timeout=180)
        run.signal(sig)
        code = run.wait(180)
    finally:
        run.kill()
    assert code != 0, run.output[-2000:]
    assert leftovers(PREFIX) == [], run.output[-2000:]
    assert "Traceback" not in run.output, run.output[-4000:]
    state = json.loads((reports / "cluster" / "state.json").read_text()) \
        if (reports / "cluster" / "state.json").exists() else {}
    assert "cluster" not in state or not state["cluster"]
    if phase == "checks":
        assert junit_cases(reports / "junit.xml") > 0, "the report lost the checks that ran"
        assert list((reports / "allure-results").glob("*-result.json"))


def _children(pid: int) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                stat = (proc / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(proc.name))
    return found


def test_killed_xdist_worker_fails_the_run_and_leaves_no_cluster(tmp_path):
    reports = tmp_path / "reports"
    run = SuiteRun(inventory_file(tmp_path, PREFIX, 32), reports, "-n", "2")
    try:
        run.wait_for(lambda: run.saw("probe image for the checks") and len(_children(run.process.pid)) >= 2,
                     "the workers", timeout=180)
        time.sleep(4)
        os.kill(_children(run.process.pid)[0], signal.SIGKILL)  # a worker: a child of our pytest
        code = run.wait(240)
    finally:
        run.kill()
    assert code != 0
    assert "crashed" in run.output or "worker" in run.output.lower()
    assert leftovers(PREFIX) == []
    assert junit_cases(reports / "junit.xml") > 0
