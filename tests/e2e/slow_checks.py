"""A pytest plugin for our e2e tests (`-p tests.e2e.slow_checks`): every conformance check
takes K8SCONF_SLOW_CHECK seconds longer, as on a slow cluster, and its id is appended to
the file K8SCONF_CHECK_LOG as it starts. The checks of a healthy local cluster take two
seconds in all, too short a window to interrupt a run (or kill a worker) while they run."""
import os
import time

import pytest


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_call(item):
    log = os.environ.get("K8SCONF_CHECK_LOG")
    if log:
        with open(log, "a") as out:
            out.write(item.nodeid + "\n")
    time.sleep(float(os.environ.get("K8SCONF_SLOW_CHECK", "0.25")))


def checks_started(log) -> int:
    """How many checks have started, from the log the plugin writes."""
    try:
        with open(log) as text:
            return sum(1 for _ in text)
    except FileNotFoundError:
        return 0
