"""The suite as users run it, on a local cluster of its own: green on a healthy install,
the cluster made once under xdist, the same verdicts serially and in parallel, an
idempotent second bootstrap, --keep-cluster / --reuse-cluster / --no-bootstrap, and
nothing left behind."""
import time
import xml.etree.ElementTree as ET

import pytest

from tests.e2e.suite_runs import SuiteRun, inventory_file, leftovers

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.xdist_group(__name__)]
PREFIX = "k8srun"
TIMES: dict[str, float] = {}


def verdicts(junit) -> dict[str, str]:
    found = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        name = case.get("name", "").split("@")[0]
        outcome = "passed"
        for child in case:
            if child.tag in ("failure", "error"):
                outcome = child.tag
            elif child.tag == "skipped":
                outcome = "xfailed" if child.get("type") == "pytest.xfail" else "skipped"
        found[f"{case.get('classname')}::{name}"] = outcome
    return found


def run_suite(tmp_path, name, *args):
    reports = tmp_path / "reports"  # one for all runs: --reuse-cluster reads its state file
    started = time.monotonic()
    run = SuiteRun(inventory_file(tmp_path, PREFIX, 52), reports, *args)
    try:
        code = run.wait(600)
    finally:
        run.kill()
    TIMES[name] = time.monotonic() - started
    return code, run, verdicts(reports / "junit.xml") if (reports / "junit.xml").exists() else {}


@pytest.fixture(scope="module")
def tmp(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("runs")
    yield tmp
    # whatever happened above, the cluster goes
    if leftovers(PREFIX):
        run_suite(tmp, "cleanup", "--reuse-cluster", "--no-bootstrap", "-k", "nothing")


def test_parallel_run_is_green_and_makes_one_cluster(tmp):
    code, run, results = run_suite(tmp, "parallel", "-n", "3", "--keep-cluster")
    assert code == 0, run.output[-4000:]
    assert sum("create local cluster" in line for line in run.lines) == 1
    # 190 checks on three nodes: 185 pass, 5 advisories xfail
    assert len(results) >= 190 and set(results.values()) == {"passed", "xfailed"}
    assert "Conformance sign-off: PASS" in run.output
    (tmp / "parallel.verdicts").write_text(repr(sorted(results.items())))


def test_second_bootstrap_changes_nothing_and_serial_verdicts_match(tmp):
    code, run, results = run_suite(tmp, "serial", "--reuse-cluster", "--keep-cluster")
    assert code == 0, run.output[-4000:]
    assert run.saw("attach to kept cluster") and not run.saw("create local cluster")
    changed = [line for line in run.lines if "reboot" in line or "copy binaries" in line
               or "ship /opt/bin" in line]
    assert changed == [], "an installed cluster was changed:\n" + "\n".join(changed)
    assert repr(sorted(results.items())) == (tmp / "parallel.verdicts").read_text()


def test_no_bootstrap_only_checks_then_destroys(tmp):
    code, run, results = run_suite(tmp, "checks-only", "--reuse-cluster", "--no-bootstrap")
    assert code == 0, run.output[-4000:]
    assert not run.saw("survey") and not run.saw("units settle")
    assert set(results.values()) == {"passed", "xfailed"}
    assert run.saw("destroying the cluster")
    assert leftovers(PREFIX) == []
    print("\nmeasured: " + ", ".join(f"{k} {v:.1f} s" for k, v in TIMES.items()))
