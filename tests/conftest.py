"""Our own tests leave nothing running: every process started while they run carries a
token in its environment (inherited by daemons and new sessions too), and the session
ends with a check that no process but pytest's own still carries it."""
from __future__ import annotations

import os
import secrets
import time
from pathlib import Path

import pytest

TOKEN_VAR = "K8SCONF_TEST_SESSION"
GRACE = 10   # seconds a process being ended gets before it counts as left behind


def _carriers(token: str) -> dict[int, str]:
    """{pid: command line} of every process whose environment holds the token, but ours."""
    mine = {os.getpid(), os.getppid()}
    found = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) in mine:
            continue
        try:
            if f"{TOKEN_VAR}={token}".encode() not in (proc / "environ").read_bytes():
                continue
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
            stat = (proc / "stat").read_text()
        except OSError:
            continue
        if ") Z" in stat or not cmdline:   # a zombie waits for its parent, it runs nothing
            continue
        found[int(proc.name)] = cmdline[:160]
    return found


def pytest_addoption(parser):
    parser.addoption("--qemu-suite", action="store_true",
                     help="also run the whole suite on three QEMU VMs (marker qemu_suite; "
                          "tens of minutes under software emulation)")


def pytest_collection_modifyitems(config, items):
    """qemu_suite is opt-in: without --qemu-suite its tests are deselected (and counted
    so), never skipped as if something were missing."""
    if config.getoption("--qemu-suite"):
        return
    left_out = [item for item in items if item.get_closest_marker("qemu_suite")]
    if left_out:
        config.hook.pytest_deselected(items=left_out)
        items[:] = [item for item in items if not item.get_closest_marker("qemu_suite")]


def pytest_configure(config):
    # the controller sets it; xdist workers and everything below inherit it
    os.environ.setdefault(TOKEN_VAR, secrets.token_hex(8))


def pytest_sessionfinish(session, exitstatus):
    """In the process that started the run (xdist's workers have all ended by then)."""
    if hasattr(session.config, "workerinput"):
        return
    token = os.environ[TOKEN_VAR]
    deadline = time.monotonic() + GRACE
    left = _carriers(token)
    while left and time.monotonic() < deadline:
        time.sleep(0.5)
        left = _carriers(token)
    if not left:
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    lines = ["processes our tests started are still running (a fixture finalizer must end "
             "them):"] + [f"  {pid} {cmd}" for pid, cmd in sorted(left.items())]
    if reporter:
        for line in lines:
            reporter.write_line(line, red=True)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED
