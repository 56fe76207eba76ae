"""The HTML report end to end (issue 7): the conformance suite runs twice as a user runs
it (a pytest subprocess, on a local cluster of its own: prefix k8srep, 192.168.22.0/24
and 10.122.0.0/24, reports in a scratch $K8SCONF_REPORTS), first with --keep-cluster,
then with --reuse-cluster; scripts/report makes the Allure report after each run.

Each report is then looked at as a reader would: served by `python3 -m http.server` on
loopback and rendered by headless Chromium (tests/support/report_browser.py, Selenium). It must show that
run's counts as JUnit has them, the set-up case with its steps, the categories, the node
versions, and from the second run on the history. A fake DigitalOcean token in the runs'
environment and the run's own private key must appear in no report file.
"""
from __future__ import annotations

import base64
import dataclasses
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from helpers import inventory as inventory_mod
from helpers.inventory import ROOT
from helpers.providers.local import LocalProvider
from helpers.providers.processes import session_members
from tests.e2e.suite_runs import SuiteRun, inventory_file, leftovers
from tests.support import report_browser

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.xdist_group(__name__)]
PREFIX = "k8srep"
OCTET = 22                     # 192.168.22.0/24 and 10.122.0.0/24
SUITE_TIMEOUT = 600            # one suite run (about 40 s when the rootfs is cached)
REPORT_TIMEOUT = 360           # scripts/report (about 3 s)
SETUP_NAME = "Cluster set-up: provisioning and the guide's install"
ADVISORIES = "Advisories (known defects of the guide)"
TOKEN = "dop_v1_" + secrets.token_hex(32)
SCRATCH = Path(tempfile.gettempdir()) / "k8sconf-report-e2e"   # reports/ and screenshots


@dataclasses.dataclass
class Run:
    number: int
    code: int
    output: str
    junit: dict[str, int]
    summary: str
    results: dict           # the set-up case as written to allure-results
    history_lines: int
    counts: dict[str, int]  # what the report's overview shows
    seconds: dict[str, float]
    page: dict = dataclasses.field(default_factory=dict)


# -- helpers ---------------------------------------------------------------------------------
def junit_counts(path: Path) -> dict[str, int]:
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
    counts = {key: sum(int(s.get(key, 0)) for s in suites)
              for key in ("tests", "failures", "errors", "skipped")}
    counts["passed"] = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    assert counts["tests"] == len(root.findall(".//testcase")), "JUnit totals disagree with its cases"
    return counts


def summary_totals(text: str) -> dict[str, int]:
    line = next(line for line in text.splitlines() if line.startswith("- totals: "))
    return {outcome: int(number) for number, outcome in
            re.findall(r"(\d+) (\w+)", line.removeprefix("- totals: "))}


def setup_result(results_dir: Path) -> dict:
    found = [json.loads(p.read_text()) for p in results_dir.glob("*-result.json")
             if '"setup.bootstrap"' in p.read_text()]
    assert len(found) == 1, f"{len(found)} set-up cases in {results_dir}"
    return found[0]


def finish(run: SuiteRun, timeout: float) -> int:
    """Waits for the suite; an overrun gets SIGTERM (the suite tears its cluster down on
    it), then SIGKILL, and fails the test."""
    try:
        return run.process.wait(timeout)
    except subprocess.TimeoutExpired:
        run.signal(signal.SIGTERM)
        try:
            run.process.wait(120)
        except subprocess.TimeoutExpired:
            run.kill()
        raise AssertionError(
            f"the suite did not finish within {timeout} s:\n{run.output[-3000:]}") from None
    finally:
        run._reader.join(10)


def make_report(env: dict) -> subprocess.CompletedProcess:
    done = subprocess.run(["bash", "scripts/report"], cwd=ROOT, env=env, text=True,
                          capture_output=True, timeout=REPORT_TIMEOUT)
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def look(report_dir: Path, run: Run, screenshot: Path | None) -> None:
    """Renders the report in Chromium and records what it shows in run.counts/page."""
    ids = report_browser.report_result_ids(report_dir)
    setup_ids = [i for i, r in ids.items() if r["fullName"] == "setup.bootstrap"]
    started = time.monotonic()
    with report_browser.serve(report_dir) as url, report_browser.Browser() as browser:
        run.counts = report_browser.report_counts(browser, url)
        if screenshot:
            browser.screenshot(screenshot)
        run.page["metadata"] = report_browser.report_metadata(browser, url)
        if run.junit["skipped"]:
            run.page["categories"] = report_browser.report_categories(browser, url, [ADVISORIES])
        run.page["trend"] = report_browser.report_trend(
            browser, url, screenshot=screenshot and screenshot.with_name("report-trend.png"))
        run.page["setup_ids"] = setup_ids
        if len(setup_ids) == 1:
            run.page["setup"] = report_browser.report_test_case(
                browser, url, setup_ids[0], SETUP_NAME,
                screenshot=screenshot and screenshot.with_name("report-setup.png"))
        run.page["browser_pid"], run.page["profile"] = browser.pid, browser.profile
    run.page["browser_exit"] = browser.returncode()
    run.seconds["browser"] = round(time.monotonic() - started, 1)


def destroy_leftovers(inventory: Path, scratch: Path) -> None:
    if leftovers(PREFIX):
        inv = inventory_mod.load(inventory)
        LocalProvider(inv, scratch / "cleanup", "cleanup").destroy(None)


def private_key_fragments(key_file: Path) -> list[bytes]:
    """The base64 body of an OpenSSH/PEM private key, whole and line by line."""
    lines = [line.strip() for line in key_file.read_text().splitlines()
             if line.strip() and not line.startswith("-----")]
    body = "".join(lines)
    base64.b64decode(body)  # it is the body
    return [body.encode()] + [line.encode() for line in lines if len(line) >= 32]


# -- the two runs ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def scratch() -> Path:
    """A fixed directory, emptied at the start, so the reports and screenshots stay to be
    looked at after the run (pytest's own basetemp is rotated away by later sessions);
    one run of this module at a time, as the cluster prefix is fixed anyway."""
    path = SCRATCH
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


@pytest.fixture(scope="module")
def run_key_fragments() -> dict[str, list[bytes]]:
    """Filled after the first run with pieces of the run's own private key (the local
    provider generates one per run and removes it at teardown; inventories may not name
    one for it), to look for in every report file afterwards."""
    return {}


@pytest.fixture(scope="module")
def reports(scratch) -> Path:
    return scratch / "reports"


@pytest.fixture(scope="module")
def runs(scratch, run_key_fragments, reports) -> list[Run]:
    inventory = inventory_file(scratch, PREFIX, OCTET)
    env = {**os.environ, "K8SCONF_REPORTS": str(reports), "DIGITALOCEAN_TOKEN": TOKEN}
    done: list[Run] = []
    try:
        for number, mode in ((1, "--keep-cluster"), (2, "--reuse-cluster")):
            started = time.monotonic()
            suite = SuiteRun(inventory, reports, "-n", "3", "-p", "no:cacheprovider", mode,
                             env={"DIGITALOCEAN_TOKEN": TOKEN})
            code = finish(suite, SUITE_TIMEOUT)
            suite_seconds = time.monotonic() - started
            # 0: all passed, 1: some checks failed (the report must show that too); any
            # other code is a run that did not complete (interrupted, usage, internal error)
            assert code in (0, 1), f"suite run {number} ({mode}) exited {code}:\n{suite.output[-4000:]}"
            key = reports / "cluster" / "id_ed25519"
            if key.exists() and not run_key_fragments:
                run_key_fragments["the run's private key"] = private_key_fragments(key)
            started = time.monotonic()
            make_report(env)
            run = Run(number, code, suite.output, junit_counts(reports / "junit.xml"),
                      (reports / "summary.md").read_text(),
                      setup_result(reports / "allure-results"),
                      len((reports / "history.jsonl").read_text().splitlines()), {},
                      {"suite": round(suite_seconds, 1),
                       "report": round(time.monotonic() - started, 1)})
            # the report directory is replaced by the next run's: look at it now
            look(reports / "allure-report", run, reports / "report.png" if number == 2 else None)
            done.append(run)
    finally:
        destroy_leftovers(inventory, scratch)
    for run in done:
        print(f"\nrun {run.number}: {run.junit} in {run.seconds['suite']} s, report "
              f"{run.seconds['report']} s, browser {run.seconds['browser']} s")
    print(f"screenshots: {reports / 'report.png'} (and report-setup.png, report-trend.png)")
    return done


# -- what the reports show -------------------------------------------------------------------
@pytest.mark.parametrize("number", [1, 2])
def test_the_report_shows_this_runs_counts_as_junit_has_them(runs, number):
    run = runs[number - 1]
    junit, shown = run.junit, run.counts
    setup = run.results["status"]
    # the report holds the checks plus the set-up case; JUnit only the checks
    assert shown["total"] == junit["tests"] + 1, (shown, junit)
    assert shown["passed"] == junit["passed"] + (setup == "passed"), (shown, junit)
    assert shown["failed"] + shown["broken"] == junit["failures"] + junit["errors"] + (
        setup in ("failed", "broken")), (shown, junit)
    assert shown["skipped"] == junit["skipped"], (shown, junit)   # xfail is skipped in both
    assert shown["unknown"] == 0, shown
    assert junit["tests"] > 100 and junit["skipped"] >= 1, junit  # the suite really ran


def test_summary_totals_match_junit(runs):
    for run in runs:
        totals, junit = summary_totals(run.summary), run.junit
        assert sum(totals.values()) == junit["tests"], (totals, junit)
        assert totals["passed"] + totals["xpassed"] == junit["passed"], (totals, junit)
        assert totals["failed"] == junit["failures"], (totals, junit)
        assert totals["error"] == junit["errors"], (totals, junit)
        assert totals["skipped"] + totals["xfailed"] == junit["skipped"], (totals, junit)


@pytest.mark.parametrize("number", [1, 2])
def test_the_setup_case_is_in_the_report_with_its_steps(runs, number):
    run = runs[number - 1]
    assert len(run.page["setup_ids"]) == 1, run.page["setup_ids"]
    text = run.page["setup"]["text"]
    assert SETUP_NAME in text
    assert run.results["status"].capitalize() in text            # e.g. "Passed"
    steps = [step["name"] for step in run.results["steps"]]
    # the guide's install (a reused cluster is installed again; its units need no reboot)
    for expected in ("write unit files", "systemctl enable", "units settle",
                     "gather facts for the checks"):
        assert any(name.startswith(expected) for name in steps), (expected, steps)
    assert steps[0] == ("create local cluster" if number == 1 else "attach to kept cluster")
    if number == 1:
        assert any(name.startswith("reboot") for name in steps), steps
    missing = [name for name in steps if name not in text]
    assert not missing, f"steps not shown: {missing}"
    attachments = [a["name"] for a in run.results["attachments"]]
    assert attachments and all(name in text for name in attachments), attachments


def test_the_history_carries_forward(runs):
    first, second = runs
    assert (first.history_lines, second.history_lines) == (1, 2)
    # first report: every test is new; second: the history knows them all
    assert first.counts["new"] == first.counts["total"], first.counts
    assert second.counts["new"] == 0, second.counts
    # the trend chart: none without history; then one bar per earlier report and "Latest"
    assert first.page["trend"]["labels"] == [], first.page["trend"]
    assert "no history" in first.page["trend"]["text"].lower(), first.page["trend"]
    labels = second.page["trend"]["labels"]
    assert len(labels) == 2 and labels[-1] == "Latest", second.page["trend"]
    # the set-up case's own history lists the first run
    assert second.page["setup"]["history_counter"] == 1
    assert second.page["setup"]["history_items"] == 1


def test_the_report_shows_categories_and_node_versions(runs):
    run = runs[-1]
    assert ADVISORIES in run.page["categories"]
    metadata = run.page["metadata"]
    for key in ("node_os", "node_kernel", "docker_version", "etcd_version"):
        assert metadata.get(key, "unknown") != "unknown", (key, metadata)
    assert metadata["provider"] == "local"
    assert re.match(r"\d+\.\d+", metadata["etcd_version"]), metadata
    assert re.match(r"\d+\.\d+", metadata["docker_version"]), metadata


def test_screenshot_saved(runs, reports):
    shot = reports / "report.png"
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000


# -- secrets and leftovers -------------------------------------------------------------------
def test_no_report_file_holds_the_token_or_a_private_key(runs, reports, run_key_fragments):
    run_key = reports / "cluster" / "id_ed25519"   # the run's own key (see the module doc)
    assert run_key_fragments, "the first run left no key of its own to look for"
    needles = {"DIGITALOCEAN_TOKEN": [TOKEN.encode()], **run_key_fragments}
    files = [p for p in reports.rglob("*") if p.is_file() and p != run_key]
    names = {p.relative_to(reports).parts[0] for p in files}
    assert {"allure-results", "allure-report", "junit.xml", "summary.md", "history.jsonl",
            "cluster"} <= names, names
    assert any(p.name == "state.json" for p in files)
    found = []
    for path in files:
        data = path.read_bytes()
        for what, fragments in needles.items():
            if any(fragment in data for fragment in fragments):
                found.append(f"{path.relative_to(reports)}: {what}")
        if b"PRIVATE KEY-----" in data:
            found.append(f"{path.relative_to(reports)}: a PEM private key")
    assert not found, found
    for run in runs:
        assert TOKEN not in run.output


def _processes() -> list[tuple[int, bytes]]:
    """(pid, command line) of every process."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                found.append((int(proc.name), (proc / "cmdline").read_bytes()))
            except OSError:
                continue
    return found


def test_nothing_is_left_running(runs, scratch):
    assert leftovers(PREFIX) == []
    processes = _processes()
    for run in runs:
        assert run.page["browser_exit"] is not None
        assert not Path(run.page["profile"]).exists()
        # Chromium ran in a session of its own: nothing of that session is left
        assert session_members(run.page["browser_pid"]) == [], "chromium left"
        assert [pid for pid, cmd in processes if run.page["profile"].encode() in cmd] == []
    servers = [pid for pid, cmd in processes
               if b"http.server" in cmd and str(scratch).encode() in cmd]
    assert servers == [], "http.server left"
