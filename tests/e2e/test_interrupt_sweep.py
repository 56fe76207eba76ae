"""Ctrl-C and SIGTERM swept across a whole conformance run (issue 20): the build, cluster
creation, the SSH connection attempts while nodes boot, the install with its reboots,
the workload and facts, the checks, and the teardown, each at several offsets.

At every point the run prints exactly one line saying it was interrupted and what it
cleans up, no traceback and no thread's exception, exits non-zero, and leaves nothing:
no node, namespace, link or mount of its prefix, no process of its own session, no
build process, no cache entry of a build it broke off.

Cost. Each point is a run of its own that ends at its interrupt, so the points are
where runs are short: the first seconds of a fresh run (build, creation, boot, the first
SSH sessions); the later phases on one bootstrapped cluster kept between runs
(--keep-cluster, then --reuse-cluster), whose interrupted runs keep it; a unit file
changed on the master makes a reused run's install write it again and reboot every node,
so the reboots are reached in seconds. The last point's run destroys the cluster and is
interrupted in its teardown.
"""
from __future__ import annotations

import json
import re
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from helpers import lifecycle
from helpers.bootstrap import build
from helpers.bootstrap.steps import StepLog
from helpers.providers.base import Cluster
from helpers.providers.processes import session_members
from helpers.ssh import SSHError, wait_for_ssh
from tests.e2e.slow_checks import checks_started
from tests.e2e.suite_runs import SuiteRun, command_lines, inventory_file, leftovers

pytestmark = [pytest.mark.e2e, pytest.mark.slow,
              pytest.mark.xdist_group("tests.e2e.test_interrupts")]
PREFIX, OCTET = "k8sint", 32       # test_interrupts.py's: the same xdist group, never at once
STARTED = "k8sconf: local cluster from"
INT, TERM = signal.SIGINT, signal.SIGTERM
INTERRUPTED = re.compile(r"\binterrupted\b", re.IGNORECASE)   # not in a tmp_path's name
# what shows the thread or the interpreter printed an exception of its own
EXCEPTION_TEXT = re.compile(r"Traceback|Exception in thread|Exception ignored|"
                            r"paramiko|SSHException|Error reading SSH protocol banner")


@dataclass(frozen=True)
class Point:
    """Interrupt `offset` seconds after the first output line containing `after` (or
    once `checks` checks have started), with `sig`; `then`: a second signal a second on."""
    name: str
    after: str
    offset: float
    sig: signal.Signals
    checks: int = 0
    then: signal.Signals | None = None

    def __str__(self) -> str:
        return self.name


def interrupt(run: SuiteRun, point: Point, timeout: float = 300) -> int:
    """Signal the run at its point, wait for its exit code, and kill what is left of it
    (a run that failed the test must not outlive it)."""
    try:
        if point.checks:
            log = run.check_log
            run.wait_for(lambda: checks_started(log) >= point.checks,
                         f"{point.checks} checks started", timeout)
        else:
            run.wait_for(lambda: run.saw(point.after), repr(point.after), timeout)
        deadline = time.monotonic() + point.offset
        while time.monotonic() < deadline and run.process.poll() is None:
            time.sleep(0.02)
        assert run.process.poll() is None, f"the run ended before {point}:\n{run.output[-2000:]}"
        run.signal(point.sig)
        if point.then:
            time.sleep(1)
            if run.process.poll() is None:
                run.signal(point.then)
        return run.wait(180)
    finally:
        run.kill()


def assert_quiet(run: SuiteRun, code: int, point: Point, cleaning: str) -> None:
    output = run.output
    said = [line for line in output.splitlines() if INTERRUPTED.search(line)]
    assert len(said) == 1, f"{point}: expected one 'interrupted' line, found {said}:\n" \
                           f"{output[-3000:]}"
    assert said[0].startswith(f"k8sconf: interrupted ({point.sig.name}): {cleaning}"), said
    found = EXCEPTION_TEXT.search(output)
    assert found is None, f"{point}: {found.group(0)!r} in the output:\n{output[-4000:]}"
    assert code != 0, f"{point}: exit {code}"
    alive = session_members(run.process.pid)
    assert alive == [], f"{point}: processes of the run still alive: {alive}"


def suite_run(tmp_path: Path, reports: Path, *args: str, env: dict | None = None) -> SuiteRun:
    log = tmp_path / "checks-started"
    log.unlink(missing_ok=True)   # each run counts its own checks (the kept cluster's share a dir)
    run = SuiteRun(inventory_file(tmp_path, PREFIX, OCTET), reports, "-p", "tests.e2e.slow_checks",
                   *args, env={"K8SCONF_CHECK_LOG": str(log), **(env or {})})
    run.check_log = log
    return run


@pytest.fixture
def cost(measured):
    """Each point's wall time, in the e2e figures shown at the end of the run."""
    def record(point: Point, started: float) -> None:
        measured[f"interrupt point {point}"] = f"{time.monotonic() - started:.1f} s"
    return record


# -- fresh runs: the build, creation, nodes booting, the first SSH sessions, the copy --------
FRESH = [
    Point("start-SIGINT", STARTED, 0.0, INT),
    Point("create-0.4-SIGTERM", STARTED, 0.4, TERM),
    Point("create-0.8-SIGINT", STARTED, 0.8, INT),
    Point("boot-1.2-SIGTERM", STARTED, 1.2, TERM),
    Point("boot-ssh-1.6-SIGINT", STARTED, 1.6, INT),
    Point("boot-ssh-2.0-SIGTERM", STARTED, 2.0, TERM),
    Point("etcd-wait-2.5-SIGINT", STARTED, 2.5, INT),
    Point("first-ssh-SIGTERM", "create local cluster", 0.0, TERM),
    Point("survey-SIGINT", "render units", 0.1, INT),
    Point("copy-SIGTERM", "survey", 1.0, TERM),
    Point("copy-late-SIGINT", "survey", 8.0, INT),
]


@pytest.fixture(scope="module")
def binaries_built():
    """The fresh points time their signals from the run's first line, and so assume the
    guide's binaries are cached: on a new machine the first build (half a minute, more
    while another worker builds and holds the cache's lock) would put every one of them
    in the build, which BUILD's points sweep with a cache of their own."""
    try:
        build.ensure(lifecycle.CACHE_DIR, StepLog())
    except build.SourcesUnavailable as exc:   # a missing source is a failure, never a skip
        pytest.fail(f"{exc} (CI sets {build.SOURCES_ENV} in .ci/run)", pytrace=False)


@pytest.mark.parametrize("point", FRESH, ids=str)
def test_a_fresh_run_interrupted(tmp_path, point, cost, binaries_built):
    started = time.monotonic()
    run = suite_run(tmp_path, tmp_path / "reports")
    code = interrupt(run, point)
    cost(point, started)
    created = point.after != STARTED or point.offset > 0
    assert_quiet(run, code, point, "destroying the local cluster" if created else "")
    assert leftovers(PREFIX) == [], f"{point}: {leftovers(PREFIX)}"


BUILD = [Point("build-sources-SIGTERM", STARTED, 1.5, TERM),
         Point("build-go-SIGINT", STARTED, 12.0, INT)]


@pytest.mark.parametrize("point", BUILD, ids=str)
def test_a_run_interrupted_while_it_builds(tmp_path, point, cost):
    """An empty cache of its own ($K8SCONF_CACHE): the run builds the guide's binaries
    before it creates anything; broken off, no build process runs on and no entry or
    half of one is in the cache."""
    cache = tmp_path / "cache"
    started = time.monotonic()
    run = suite_run(tmp_path, tmp_path / "reports", env={"K8SCONF_CACHE": str(cache)})
    code = interrupt(run, point)
    cost(point, started)
    assert_quiet(run, code, point, "nothing was created yet; the build stops")
    # go's own compile cache stays: content-addressed, each entry written whole by go
    entries = [p.name for p in (cache / "build").iterdir()
               if p.name not in (".lock", "gocache")] if (cache / "build").exists() else []
    assert entries == [], f"{point}: left in the build cache: {entries}"
    assert processes_mentioning(str(cache)) == []
    assert leftovers(PREFIX) == []


def processes_mentioning(text: str) -> list[str]:
    return [f"{pid}: {cmdline[:120]}" for pid, cmdline in command_lines().items()
            if text in cmdline]


# -- one kept cluster: facts, workload, checks, reboots, and at last its teardown -----------
KEPT = "keeping the local cluster (--keep-cluster)"


class KeptCluster:
    def __init__(self, tmp: Path):
        self.tmp, self.reports = tmp, tmp / "reports"

    def run(self, *args: str, slow_checks: bool = False) -> SuiteRun:
        # checks slowed down only where a point falls among them: 208 slowed checks add 52 s
        return suite_run(self.tmp, self.reports, *args,
                         env={"K8SCONF_SLOW_CHECK": "0.25" if slow_checks else "0"})

    def cluster(self) -> Cluster:
        state = json.loads((self.reports / "cluster" / "state.json").read_text())
        assert state.get("cluster"), "the kept cluster is no longer recorded"
        return Cluster.from_json(json.dumps(state["cluster"]))

    def wait_until_up(self) -> None:
        """Every node answers SSH (a node an interrupt caught rebooting comes back)."""
        cluster = self.cluster()
        for node in cluster.nodes:
            try:
                wait_for_ssh(node, cluster.ssh_user, cluster.ssh_key, 90).close()
            except SSHError as exc:
                pytest.fail(f"the kept cluster did not come back: {exc}")

    def change_a_unit(self) -> None:
        """A unit file on the master that is not what the install writes: a reused run
        writes it again, and reboots every node."""
        cluster = self.cluster()
        root = Path(cluster.state["nodes"][cluster.master.name]["dir"]) / "root"
        unit = root / "etc/systemd/system/flannel.service"
        unit.write_text(unit.read_text() + "\n# changed by the interrupt sweep\n")


# at the first check: the workload's pods are removed by then (an interrupt while the facts
# are gathered leaves them, and the next run's workload waits for them to go)
KEPT_POINT = Point("checks-1-kept-SIGINT", "", 0.0, INT, checks=1)


@pytest.fixture(scope="module")
def kept(tmp_path_factory, measured):
    """A fresh run with --keep-cluster, interrupted at its first check: the one full
    install of the sweep (its own point)."""
    kept = KeptCluster(tmp_path_factory.mktemp("kept"))
    point = KEPT_POINT
    started = time.monotonic()
    run = kept.run("--keep-cluster", slow_checks=True)
    code = interrupt(run, point, timeout=400)
    measured[f"interrupt point {point}"] = f"{time.monotonic() - started:.1f} s"
    try:
        assert_quiet(run, code, point, KEPT)
        assert leftovers(PREFIX), "--keep-cluster: the interrupted run removed the cluster"
        yield kept
    finally:
        if leftovers(PREFIX):   # a point that failed before the last one destroyed it
            SuiteRun(inventory_file(kept.tmp, PREFIX, OCTET), kept.reports, "--reuse-cluster",
                     "--no-bootstrap", "-k", "no_such_check").wait(300)


REUSED = [
    # --no-bootstrap: attach, the (slowed) checks
    (Point("attach-SIGTERM", STARTED, 0.5, TERM), ("--no-bootstrap",), False),
    (Point("checks-5-SIGINT", "", 0.0, INT, checks=5), ("--no-bootstrap",), False),
    (Point("checks-60-SIGTERM", "", 0.0, TERM, checks=60), ("--no-bootstrap",), False),
    (Point("checks-xdist-SIGTERM", "", 0.0, TERM, checks=10), ("--no-bootstrap", "-n", "2"),
     False),
    # the install again, with a changed unit: the reboots
    (Point("rewrite-units-SIGTERM", "ship the deviations' programs", 0.3, TERM), (), True),
    (Point("reboot-master-SIGINT", "systemctl enable", 0.8, INT), (), True),
    (Point("reboot-minions-SIGTERM", "reboot (master first)", 0.8, TERM), (), True),
    (Point("reboot-minions-late-SIGINT", "reboot (master first)", 2.5, INT), (), True),
    (Point("units-settle-SIGTERM", "reboot (minions)", 0.2, TERM), (), True),
    # last: a pod an interrupt leaves is removed by the next run's workload, which waits
    (Point("workload-SIGINT", STARTED, 4.0, INT), ("--no-bootstrap",), False),
    (Point("facts-SIGTERM", "beyond the guide: a pod on every node", 0.5, TERM),
     ("--no-bootstrap",), False),
]


@pytest.mark.parametrize("point,args,change", REUSED, ids=[str(p) for p, _, _ in REUSED])
def test_a_kept_cluster_run_interrupted(kept, point, args, change, cost):
    kept.wait_until_up()
    if change:
        kept.change_a_unit()
    started = time.monotonic()
    run = kept.run("--reuse-cluster", "--keep-cluster", *args, slow_checks=bool(point.checks))
    code = interrupt(run, point)
    cost(point, started)
    assert_quiet(run, code, point, KEPT)
    assert leftovers(PREFIX), f"{point}: the kept cluster was removed"


TEARDOWN = Point("teardown-SIGINT-then-SIGTERM", "k8sconf: destroying the cluster", 1.0, INT,
                 then=TERM)


@pytest.mark.parametrize("point", [TEARDOWN], ids=str)
def test_the_teardown_interrupted_goes_on_to_its_end(kept, point, cost):
    """The last point: the kept cluster is destroyed by a run whose teardown is
    interrupted, twice."""
    kept.wait_until_up()
    started = time.monotonic()
    run = kept.run("--reuse-cluster", "--no-bootstrap")
    code = interrupt(run, point)
    cost(point, started)
    assert_quiet(run, code, point, "the cluster is being destroyed; waiting for that")
    assert leftovers(PREFIX) == [], f"{point}: {leftovers(PREFIX)}"


def test_the_sweep_has_twenty_points_of_both_signals():
    points = FRESH + BUILD + [p for p, _, _ in REUSED] + [TEARDOWN, KEPT_POINT]
    assert len(points) >= 20, [str(p) for p in points]
    assert {INT, TERM} <= {p.sig for p in points}
