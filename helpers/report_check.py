"""Looking at the generated Allure report the way a reader does: served over HTTP on
loopback and rendered by headless Chromium, driven through the DevTools protocol over
a pipe (--remote-debugging-pipe: no WebDriver, no port, standard library only).

Every process here is started by us and ended by its pid; every wait is bounded.
"""
from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from helpers.providers.processes import session_members

CHROMIUM = "/usr/bin/chromium"
# Required for every Chromium we start: no sandbox (root), no network beyond loopback.
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync")
STATUSES = ("passed", "failed", "broken", "skipped", "unknown")


class BrowserError(Exception):
    pass


class PageScriptError(BrowserError):
    """A script evaluated in the page threw (e.g. while the page is still loading)."""


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
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with _direct.open(url, timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise BrowserError(
                        f"http.server for {directory} did not answer on {url}") from None
                time.sleep(0.1)
        yield url
    finally:
        _stop(proc)


class Browser:
    """Headless Chromium with one page, spoken to over the DevTools pipe (fds 3 and 4)."""

    def __init__(self, *, width: int = 1440, height: int = 1000, timeout: float = 30):
        if not Path(CHROMIUM).exists():
            raise BrowserError(f"{CHROMIUM} not found: apt-get install chromium")
        self.timeout = timeout
        self.profile = tempfile.mkdtemp(prefix="k8sconf-chromium-")
        to_chrome_r, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome_w = os.pipe()

        def child_fds():  # in the child: its ends of the pipes become fds 3 and 4
            a = fcntl.fcntl(to_chrome_r, fcntl.F_DUPFD, 10)
            b = fcntl.fcntl(from_chrome_w, fcntl.F_DUPFD, 10)
            os.dup2(a, 3)
            os.dup2(b, 4)

        self.proc = subprocess.Popen(
            [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={self.profile}",
             "--remote-debugging-pipe", "--no-proxy-server", f"--window-size={width},{height}",
             "--hide-scrollbars", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            preexec_fn=child_fds, pass_fds=(3, 4), start_new_session=True)
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._buffer = b""
        self._next_id = 0
        self.session = None
        try:
            target = self.call("Target.createTarget", url="about:blank")["targetId"]
            self.session = self.call("Target.attachToTarget", targetId=target,
                                     flatten=True)["sessionId"]
            self.call("Page.enable")
            self.call("Runtime.enable")
        except BaseException:
            self.close()
            raise

    # -- protocol -------------------------------------------------------------------------
    def call(self, method: str, timeout: float | None = None, **params):
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params}
        if self.session and not method.startswith(("Target.", "Browser.")):
            message["sessionId"] = self.session
        os.write(self._to_chrome, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            answer = self._read(deadline, method)
            if answer.get("id") == self._next_id:
                if "error" in answer:
                    raise BrowserError(f"{method}: {answer['error']}")
                return answer.get("result", {})

    def _read(self, deadline: float, waiting_for: str) -> dict:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BrowserError(f"Chromium did not answer {waiting_for} in time")
            ready, _, _ = select.select([self._from_chrome], [], [], left)
            if ready:
                chunk = os.read(self._from_chrome, 1 << 20)
                if not chunk:
                    raise BrowserError(f"Chromium exited (rc {self.proc.poll()}) "
                                       f"while waiting for {waiting_for}")
                self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(raw)

    # -- the page -------------------------------------------------------------------------
    def evaluate(self, expression: str):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True,
                           awaitPromise=True)
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            error = (details.get("exception") or {}).get("description") or details.get("text")
            raise PageScriptError(f"page script failed: {error}: {expression[:200]}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 20, what: str = ""):
        """Polls a JS expression until it is truthy; returns its value."""
        deadline = time.monotonic() + timeout
        error = None
        while True:
            try:
                value = self.evaluate(expression)
            except PageScriptError as exc:  # the page is not there yet
                value, error = None, exc
            if value:
                return value
            if time.monotonic() > deadline:
                raise BrowserError(f"the page did not show {what or expression!r} within "
                                   f"{timeout:.0f} s" + (f" (last error: {error})" if error else ""))
            time.sleep(0.2)

    def goto(self, url: str, timeout: float = 20) -> None:
        """Navigates and waits until the document has loaded (a hash change included)."""
        self.call("Page.navigate", url=url)
        self.wait_for(f"location.href === {json.dumps(url)} && document.readyState === 'complete'"
                      " && document.body !== null", timeout, f"{url} loaded")

    def text(self) -> str:
        return self.evaluate("document.body ? document.body.innerText : ''") or ""

    def screenshot(self, path: Path) -> Path:
        data = self.call("Page.captureScreenshot", format="png")["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return path

    def close(self) -> None:
        with contextlib.suppress(Exception):
            if self.proc.poll() is None:
                os.write(self._to_chrome, json.dumps(
                    {"id": 0, "method": "Browser.close", "params": {}}).encode() + b"\0")
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            _stop(self.proc)
        # Chromium's helpers (zygote, crashpad handler) outlive it briefly; they are in the
        # session we started it in: wait for them, then end any that stay, by pid.
        deadline = time.monotonic() + 10
        while session_members(self.proc.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        for pid in session_members(self.proc.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for fd in (self._to_chrome, self._from_chrome):
            with contextlib.suppress(OSError):
                os.close(fd)
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
