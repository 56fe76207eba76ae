"""Running the conformance suite as a user would (a pytest subprocess) on a local cluster
of its own: its own prefix and networks, its own reports directory."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import yaml

from helpers.inventory import ROOT


def inventory_file(tmp: Path, prefix: str, octet: int, **overrides) -> Path:
    """local.yaml with its own prefix and 192.168.<octet>.0/24 + 10.<100+octet>.0.0/24:
    the guide's real binaries (built from source, cached) and local.yaml's deviations."""
    data = yaml.safe_load((ROOT / "inventories" / "local.yaml").read_text())
    data["local"] = {**data.get("local", {}), "prefix": prefix,
                     "public_network": f"192.168.{octet}.0/24",
                     "private_network": f"10.{100 + octet}.0.0/24"}
    for key, value in overrides.items():
        data[key] = {**data.get(key, {}), **value} if isinstance(value, dict) else value
    path = tmp / f"{prefix}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _default_sigint() -> None:
    """Ctrl-C as at a terminal: a background job (CI's shell, an xdist worker) may have
    inherited SIGINT ignored, and Python then installs no handler for it."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class SuiteRun:
    """A `pytest suites` subprocess whose output is followed line by line."""

    def __init__(self, inventory: Path, reports: Path, *args: str, env: dict | None = None):
        self.reports = reports
        command = [sys.executable, "-m", "pytest", "suites", "--inventory", str(inventory),
                   "--require-real",   # a missing source fails, never a quiet stand-in run
                   "--alluredir", str(reports / "allure-results"),
                   "--junitxml", str(reports / "junit.xml"), *args]
        environment = {**os.environ, "K8SCONF_REPORTS": str(reports), "PYTHONUNBUFFERED": "1",
                       **(env or {})}
        self.lines: list[str] = []
        self.check_log: Path | None = None   # tests/e2e/slow_checks.py's, when a test sets one
        self.process = subprocess.Popen(command, cwd=ROOT, env=environment, text=True,
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, start_new_session=True,
                                        preexec_fn=_default_sigint)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        assert self.process.stdout is not None  # a pipe
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for(self, predicate, what: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if self.process.poll() is not None:
                raise AssertionError(f"the run ended before {what}:\n{self.output[-3000:]}")
            if time.monotonic() > deadline:
                self.kill()
                raise AssertionError(f"no {what} within {timeout:g} s:\n{self.output[-3000:]}")
            time.sleep(0.1)

    def saw(self, text: str) -> bool:
        return any(text in line for line in self.lines)

    def signal(self, sig: int) -> None:
        self.process.send_signal(sig)

    def wait(self, timeout: float = 300) -> int:
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise
        self._reader.join(5)
        return code

    def kill(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, 9)
            self.process.wait(10)


def leftovers(prefix: str) -> list[str]:
    """Anything of a local cluster with this prefix still on the machine."""
    found = []
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    found += [f"netns {line.split()[0]}" for line in netns.splitlines() if prefix in line]
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    found += [f"link {line.split(':')[1].strip()}" for line in links.splitlines() if prefix in line]
    found += [f"mount {line.split()[1]}" for line in Path("/proc/mounts").read_text().splitlines()
              if prefix in line]
    found += [f"process {pid}: {cmdline[:80]}" for pid, cmdline in command_lines().items()
              if "systemd-nspawn" in cmdline and prefix in cmdline]
    return found


def command_lines() -> dict[str, str]:
    """{pid: command line} of every process on the machine still there to be read."""
    found = {}
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                found[proc.name] = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
    return found
