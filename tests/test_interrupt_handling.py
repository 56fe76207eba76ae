"""Ctrl-C and SIGTERM in-process (helpers/interrupts.py): the one line, a second signal
that does not break the clean-up off, the threads that wait on nodes giving up, and the
build broken off with nothing left: no process of its step, no cache entry. The sweep
over real runs is tests/e2e/test_interrupt_sweep.py."""
from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest

from helpers import interrupts
from helpers.bootstrap import build
from helpers.bootstrap.steps import StepLog
from helpers.providers.base import Node
from helpers.ssh import SSHError, wait_for_ssh


class Said:
    """What the handler wrote (to a file of its own: pytest's capture owns fd 2)."""

    def __init__(self, path: Path):
        self.path = path

    def lines(self) -> list[str]:
        return self.path.read_text().splitlines()


@pytest.fixture
def said(tmp_path):
    return Said(tmp_path / "said")


@pytest.fixture
def handler(said):
    """Our handler, installed for one test (pytest's own main thread), then removed."""
    out = os.open(said.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    installed = interrupts.Interrupts(lambda: "destroying the local cluster", out=out)
    previous = {s: signal.signal(s, signal.default_int_handler) for s in installed.SIGNALS}
    installed.install()
    yield installed
    installed.uninstall()
    os.close(out)
    for sig, handler in previous.items():
        signal.signal(sig, handler)
    interrupts.STOPPED.clear()


def signal_soon(sig: int, after: float = 0.3) -> threading.Timer:
    timer = threading.Timer(after, os.kill, (os.getpid(), sig))
    timer.start()
    return timer


def wait_for_signal(seconds: float = 5) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(0.01)


def test_the_first_signal_says_what_is_cleaned_up_and_unwinds(handler, said):
    signal_soon(signal.SIGTERM)
    with pytest.raises(interrupts.Interrupted, match="SIGTERM"):
        wait_for_signal()
    assert said.lines() == ["k8sconf: interrupted (SIGTERM): destroying the local cluster"]
    assert interrupts.stopped()


def test_a_second_signal_does_not_break_the_clean_up_off(handler, said):
    signal_soon(signal.SIGINT)
    with pytest.raises(interrupts.Interrupted):
        wait_for_signal()
    signal_soon(signal.SIGTERM, 0.05)
    wait_for_signal(0.5)            # the clean-up: no second KeyboardInterrupt
    assert len(said.lines()) == 1


def test_a_signal_in_the_final_teardown_lets_it_finish(handler, said):
    finished = False
    with handler.shield(final=True):
        signal_soon(signal.SIGINT, 0.05)
        wait_for_signal(0.5)
        finished = True
    assert finished and handler.received == "SIGINT"
    assert said.lines() == ["k8sconf: interrupted (SIGINT): destroying the local cluster"]


def test_a_signal_while_nodes_are_removed_is_raised_after(handler):
    removed = False
    with pytest.raises(interrupts.Interrupted):
        with handler.shield():
            signal_soon(signal.SIGTERM, 0.05)
            wait_for_signal(0.5)
            removed = True
    assert removed


def test_an_ignored_sigint_stays_ignored():
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        installed = interrupts.Interrupts(lambda: "x")
        installed.install()
        assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
        installed.uninstall()
    finally:
        signal.signal(signal.SIGINT, previous)


def test_a_thread_waiting_for_ssh_gives_up_once_interrupted(tmp_path):
    """A node that never answers (a closed port on loopback): the wait ends within a
    second of the interrupt, not at its deadline."""
    node = Node("coreos-9", "master", "127.0.0.1", "10.0.0.9", "127.0.0.1", ssh_port=9)
    outcome = []

    def wait():
        try:
            wait_for_ssh(node, "core", tmp_path / "no-key", 120, connect_timeout=0.5)
        except SSHError as exc:
            outcome.append(str(exc))
    waiter = threading.Thread(target=wait)
    waiter.start()
    time.sleep(0.5)
    interrupts.STOPPED.set()
    try:
        waiter.join(3)
        assert not waiter.is_alive(), "the wait went on after the interrupt"
        assert outcome and "interrupted" in outcome[0]
    finally:
        interrupts.STOPPED.clear()


@pytest.fixture
def marker(request) -> str:
    """A sleep nobody else runs, not even this module's other tests on the other xdist
    worker (one shared value let one test see the other's live step): how a step's
    processes are found. Fixed width, so that none is a prefix of another."""
    return f"31.{os.getpid():07d}{len(request.node.name):03d}"


def processes_with(marker: str) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if marker in (proc / "cmdline").read_bytes().decode(errors="replace"):
                    found.append(int(proc.name))
            except OSError:
                continue
    return found


def test_an_interrupted_build_leaves_no_process_and_no_cache_entry(tmp_path, monkeypatch,
                                                                   handler, said, marker):
    """A slow fake step (a shell with a child, as `go` has its compilers) is broken off:
    the whole step is ended, and neither the entry nor its work or log directory stays."""
    def unpack(source, tarball, gopath, logs, log):
        tree = gopath / "src" / source.import_path
        tree.mkdir(parents=True)
        return tree

    def slow_step(tree, gopath, out, env, logs, log):
        (out / "half-written").write_bytes(b"\x7fELF")
        build._run("go build kubernetes", ["sh", "-c", f"sleep {marker} & sleep {marker}"],
                   logs, log)
    monkeypatch.setattr(build, "_unpack", unpack)
    monkeypatch.setattr(build, "_go_build_kubernetes", slow_step)
    root = tmp_path / "build"
    root.mkdir()
    signal_soon(signal.SIGTERM, 0.5)
    with pytest.raises(interrupts.Interrupted):
        build._build(root, {s.name: (tmp_path / s.tarball, "x") for s in build.SOURCES},
                     StepLog())
    assert sorted(p.name for p in root.iterdir()) == []
    assert build.cached(tmp_path) is None
    assert processes_with(f"sleep {marker}") == []
    assert len(said.lines()) == 1


def test_a_step_that_overran_is_ended_with_its_children(tmp_path, monkeypatch, marker):
    monkeypatch.setattr(build, "STEP_TIMEOUT", 0.5)
    with pytest.raises(build.BuildError, match="did not finish within 0.5 s"):
        build._run("go build example", ["sh", "-c", f"sleep {marker} & sleep {marker}"],
                   tmp_path, StepLog())
    assert processes_with(f"sleep {marker}") == []



def test_without_the_handler_ctrl_c_is_ignored_while_nodes_are_removed():
    """The benchmark drives the lifecycle without our handler: its teardown is kept whole
    as before (SIGINT ignored for the block)."""
    idle = interrupts.Interrupts(lambda: "x")
    with idle.shield():
        assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
    assert signal.getsignal(signal.SIGINT) != signal.SIG_IGN
