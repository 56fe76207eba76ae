"""Interrupted runs (issue 10): Ctrl-C or SIGTERM while the cluster is being made, while
the guide's install runs, and while the checks run, and a killed xdist worker. Afterwards
nothing of the cluster is left, the exit code is non-zero, and the report holds what ran."""
import json
import os
import signal
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from helpers.providers.processes import children
from tests.e2e.slow_checks import checks_started
from tests.e2e.suite_runs import SuiteRun, inventory_file, leftovers

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.xdist_group(__name__)]
PREFIX = "k8sint"
PHASES = {
    # each: what shows that the phase is under way
    "provisioning": lambda run: bool(leftovers(PREFIX)),
    "bootstrap": lambda run: run.saw("create local cluster"),
    # the checks are slowed down (slow_checks) and log as they start: some have run
    "checks": lambda run: checks_started(run.check_log) >= 10,
}


class SlowRun(SuiteRun):
    check_log: Path   # where its checks log as they start


def slow_run(tmp_path, *args: str) -> SlowRun:
    """A run whose checks take a quarter second each (tests/e2e/slow_checks.py)."""
    log = tmp_path / "checks-started"
    run = SlowRun(inventory_file(tmp_path, PREFIX, 32), tmp_path / "reports",
                   "-p", "tests.e2e.slow_checks", *args, env={"K8SCONF_CHECK_LOG": str(log)})
    run.check_log = log
    return run


def junit_cases(path: Path) -> int:
    return len(ET.parse(path).getroot().findall(".//testcase")) if path.exists() else 0


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("phase", list(PHASES))
def test_interrupted_run_leaves_no_cluster(tmp_path, phase, sig):
    reports = tmp_path / "reports"
    run = slow_run(tmp_path)
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


def test_killed_xdist_worker_fails_the_run_and_leaves_no_cluster(tmp_path):
    reports = tmp_path / "reports"
    run = slow_run(tmp_path, "-n", "2")
    try:
        run.wait_for(lambda: checks_started(run.check_log) >= 10, "the checks", timeout=180)
        os.kill(children(run.process.pid)[0], signal.SIGKILL)  # a worker: a child of our pytest
        code = run.wait(240)
    finally:
        run.kill()
    assert code != 0
    assert "crashed" in run.output or "worker" in run.output.lower()
    assert leftovers(PREFIX) == []
    assert junit_cases(reports / "junit.xml") > 0
