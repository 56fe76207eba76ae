"""The report's browser check itself (tests/support/report_browser.py): a real Allure
Report 3 made by scripts/report from two results of our own, rendered by Debian's Chromium
through chromium-driver. It reads the counters the page shows, and fails, saying so, on
a report whose page cannot show them (tests/e2e/test_report.py uses it on real runs)."""
from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from helpers.inventory import ROOT
from helpers.providers.processes import session_members
from tests.support import report_browser

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    """An Allure report of one passed and one failed result."""
    reports = tmp_path_factory.mktemp("report-browser")
    results = reports / "allure-results"
    results.mkdir()
    for name, status in (("test_one", "passed"), ("test_two", "failed")):
        result_id = str(uuid.uuid4())
        (results / f"{result_id}-result.json").write_text(json.dumps({
            "uuid": result_id, "historyId": name, "name": name, "status": status,
            "fullName": f"suites.test_x.{name}", "start": 1, "stop": 2, "labels": [],
            "statusDetails": {"message": "expected 1, found 2"} if status == "failed" else {}}))
    made = subprocess.run(["bash", "scripts/report", "--reports-dir", str(reports)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert made.returncode == 0, made.stderr[-2000:]
    return reports / "allure-report"


def test_the_browser_reads_the_counts_the_page_shows_and_leaves_nothing(report):
    with report_browser.serve(report) as url, report_browser.Browser() as browser:
        counts = report_browser.report_counts(browser, url)
        pid = browser.pid
    assert counts["total"] == 2 and counts["passed"] == 1 and counts["failed"] == 1, counts
    assert browser.returncode() is not None and session_members(pid) == []


def test_the_browser_check_fails_on_a_report_that_cannot_show_its_counts(report, tmp_path):
    broken = tmp_path / "broken-report"
    shutil.copytree(report, broken)
    shutil.rmtree(broken / "widgets")     # the overview's data: its counters never render
    with report_browser.serve(broken) as url, report_browser.Browser() as browser:
        with pytest.raises(report_browser.BrowserError,
                           match="did not show \"the report's status counters\" within 5 s"):
            report_browser.report_counts(browser, url, timeout=5)
