"""Looking at the generated Allure report the way a reader does: served over HTTP on
loopback and rendered by Debian's headless Chromium, driven by Selenium through Debian's
chromium-driver (scripts/install installs both; Selenium Manager downloads nothing, since
both paths are given).

Every process here is started by us and ended by its pid; every wait is bounded.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

from selenium import webdriver
from selenium.common.exceptions import JavascriptException, TimeoutException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.support.wait import WebDriverWait

from helpers.providers.processes import session_members
from helpers.waiting import poll

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"      # Debian's chromium-driver, built with chromium
# Required for every Chromium we start: no sandbox (root), no network beyond loopback.
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-proxy-server",
                  "--hide-scrollbars")
STATUSES = ("passed", "failed", "broken", "skipped", "unknown")


class BrowserError(Exception):
    pass


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _stop(proc: subprocess.Popen, grace: float = 10) -> None:
    """End a process we started: SIGTERM, then SIGKILL, by its pid only."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(grace)


_direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via a proxy


@contextlib.contextmanager
def serve(directory: Path, timeout: float = 15):
    """`python3 -m http.server` on 127.0.0.1 for directory; yields its base URL."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "http.server", "--bind", "127.0.0.1",
                             "--directory", str(directory), str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/"

    def answers() -> bool:
        if proc.poll() is not None:
            raise BrowserError(f"http.server for {directory} exited (rc {proc.returncode})")
        with _direct.open(url, timeout=2) as answer:
            return answer.status == 200

    try:
        try:
            poll(answers, timeout=timeout, interval=0.1, retry_on=(OSError,))
        except OSError:
            raise BrowserError(f"http.server for {directory} did not answer on {url}") from None
        yield url
    finally:
        _stop(proc)


class Browser:
    """Headless Chromium with one page, through chromium-driver (WebDriver on loopback)."""

    def __init__(self, *, width: int = 1440, height: int = 1000, timeout: float = 30):
        for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
            if not Path(path).exists():
                raise BrowserError(f"{path} not found: apt-get install {package} "
                                   "(scripts/install does)")
        self.timeout = timeout
        self.profile = tempfile.mkdtemp(prefix="k8sconf-chromium-")
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={self.profile}",
                     f"--window-size={width},{height}"):
            options.add_argument(flag)
        # chromium-driver and the Chromium it starts in a session of their own: close()
        # can then find whatever of it outlives quit() (zygote, crashpad handler)
        self.service = Service(CHROMEDRIVER, popen_kw={"start_new_session": True})
        try:
            self.driver = webdriver.Chrome(options=options, service=self.service)
        except WebDriverException as exc:
            self._end_session()
            raise BrowserError(f"chromium-driver did not start Chromium: {exc.msg}") from None
        self.driver.set_page_load_timeout(timeout)
        self.driver.set_script_timeout(timeout)

    @property
    def pid(self) -> int:
        """chromium-driver's pid: its session holds the Chromium it drives."""
        assert self.service.process is not None
        return self.service.process.pid

    def returncode(self) -> int | None:
        """chromium-driver's exit status, None while it runs."""
        assert self.service.process is not None
        return self.service.process.poll()

    # -- the page -------------------------------------------------------------------------
    def evaluate(self, expression: str):
        """The value of a JS expression in the page (a promise is awaited)."""
        return self.driver.execute_script(f"return ({expression});")

    def wait_for(self, expression: str, timeout: float = 20, what: str = ""):
        """Polls a JS expression until it is truthy; returns its value."""
        errors: list[str] = []

        def shown(_driver):
            try:
                return self.evaluate(expression)
            except JavascriptException as exc:  # the page is not there yet
                errors[:] = [exc.msg or type(exc).__name__]
                return None
        try:
            return WebDriverWait(self.driver, timeout, poll_frequency=0.2).until(shown)
        except TimeoutException:
            raise BrowserError(f"the page did not show {what or expression!r} within "
                               f"{timeout:.0f} s" + (f" (last error: {errors[0]})" if errors
                                                     else "")) from None

    def goto(self, url: str, timeout: float = 20) -> None:
        """Navigates and waits until the document has loaded (a hash change included)."""
        self.driver.get(url)
        self.wait_for(f"location.href === {json.dumps(url)} && document.readyState === 'complete'"
                      " && document.body !== null", timeout, f"{url} loaded")

    def text(self) -> str:
        return self.evaluate("document.body ? document.body.innerText : ''") or ""

    def screenshot(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(self.driver.get_screenshot_as_png())
        return path

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.driver.quit()
        self._end_session()

    def _end_session(self) -> None:
        process = self.service.process
        if process is not None:
            _stop(process)
            # what of the session outlives chromium-driver: wait a little, then end it by pid
            poll(lambda: not session_members(process.pid), timeout=10, interval=0.1)
            for pid in session_members(process.pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self) -> "Browser":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# -- what the awesome report shows -----------------------------------------------------------
# Selectors are the report's own data-testid attributes (Allure Report 3.18 awesome).
COUNTERS = ("total", "new", *STATUSES, "flaky", "retries")

_COUNTS_JS = """(() => {
  const counts = {};
  for (const item of document.querySelectorAll('[data-testid^="metadata-item-"]')) {
    const key = item.getAttribute('data-testid').slice('metadata-item-'.length);
    const value = item.querySelector('[data-testid="metadata-value"]');
    if (value && /^\\s*\\d+\\s*$/.test(value.innerText)) counts[key] = parseInt(value.innerText, 10);
  }
  return counts.total === undefined ? null : counts;
})()"""

_METADATA_JS = """(async () => {
  const more = [...document.querySelectorAll('button')].find(b => b.innerText.trim() === 'Show more');
  if (more) { more.click(); await new Promise(r => setTimeout(r, 300)); }
  const items = {};
  for (const item of document.querySelectorAll('[data-testid="metadata-item"]')) {
    const key = item.querySelector('[data-testid="metadata-item-key"]');
    const value = item.querySelector('[data-testid="metadata-item-value"]');
    if (key && value) items[key.innerText.trim()] = value.innerText.trim();
  }
  return Object.keys(items).length ? items : null;
})()"""

_TREND_JS = """(() => {
  const title = [...document.querySelectorAll('span')].find(e => e.textContent.trim() === 'Status dynamics');
  const card = title && title.closest('[data-drop-shadow]');
  if (!card) return null;
  const labels = [...card.querySelectorAll('svg text')]
    .filter(t => (t.getAttribute('transform') || '').includes('rotate(45)'))
    .map(t => t.textContent.trim());
  const text = card.innerText.replace('Status dynamics', '').trim();
  return labels.length || /no history/i.test(text) ? {labels, text} : null;
})()"""


def _counter(testid: str) -> str:
    return (f"(() => {{ const c = document.querySelector('[data-testid=\"{testid}\"] "
            f"[data-testid=\"counter\"]'); return c ? parseInt(c.innerText, 10) : 0; }})()")


def report_counts(browser: Browser, url: str, timeout: float = 30) -> dict[str, int]:
    """The overview's counters (0 for a status the report shows no counter for): total,
    new (tests the history has not seen), passed, failed, broken, skipped, unknown, ..."""
    browser.goto(url)
    counts = browser.wait_for(_COUNTS_JS, timeout, "the report's status counters")
    return {key: counts.get(key, 0) for key in COUNTERS}


def report_metadata(browser: Browser, url: str, timeout: float = 30) -> dict[str, str]:
    """The overview's Metadata (environment.properties), all of it ("Show more")."""
    browser.goto(url)
    browser.wait_for(_COUNTS_JS, timeout, "the report's overview")
    return browser.wait_for(_METADATA_JS, timeout, "the report's metadata")


def report_categories(browser: Browser, url: str, expected: list[str],
                      timeout: float = 30) -> str:
    """The Categories tab's text, once every expected category name shows."""
    browser.goto(url + "#categories")
    names = json.dumps(expected)
    browser.wait_for(f"{names}.every(n => document.body.innerText.includes(n))", timeout,
                     f"the categories {expected}")
    return browser.text()


def report_trend(browser: Browser, url: str, timeout: float = 30,
                 screenshot: Path | None = None) -> dict:
    """The Graphs page's "Status dynamics" chart: `labels`, its x-axis (one per report in
    the history, then "Latest" for this one; none without history), and its `text`
    ("No history information available" without history)."""
    browser.goto(url + "#charts")
    trend = browser.wait_for(_TREND_JS, timeout, "the Status dynamics chart")
    if screenshot:
        browser.screenshot(screenshot)
    return trend


def report_test_case(browser: Browser, url: str, result_id: str, name: str,
                     timeout: float = 30, screenshot: Path | None = None) -> dict:
    """One test result's page: its text (title, status, steps, attachments), the History
    tab's counter and the history entries listed there."""
    browser.goto(f"{url}#{result_id}")
    title = json.dumps(name)
    browser.wait_for("(() => { const t = document.querySelector('[data-testid=\"test-result-info-title\"]');"
                     f" return t && t.innerText.includes({title}); }})()", timeout, name)
    found = {"text": browser.text(), "history_counter": browser.evaluate(
        _counter("test-result-tab-history"))}
    if screenshot:
        browser.screenshot(screenshot)
    browser.goto(f"{url}#{result_id}/history")
    items = "document.querySelectorAll('[data-testid=\"test-result-history-item\"]').length"
    if found["history_counter"]:
        browser.wait_for(f"{items} > 0", timeout, "the history entries")
    found["history_items"] = browser.evaluate(items)
    return found


def report_result_ids(report_dir: Path) -> dict[str, dict]:
    """The report's own index of results (data/test-results/<id>.json): id -> summary."""
    found = {}
    for path in (report_dir / "data" / "test-results").glob("*.json"):
        data = json.loads(path.read_text())
        found[data["id"]] = {"name": data.get("name"), "fullName": data.get("fullName"),
                             "status": data.get("status")}
    return found
