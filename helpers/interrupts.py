"""Ctrl-C and SIGTERM on a conformance run: one line saying what is being cleaned up, then
the run unwinds to its teardown, which no further signal stops half-way.

Why each piece:
- The line goes straight to a copy of fd 2 taken when the handler is installed: the
  handler may run while the main thread is inside a write to a buffered stream (a second
  write there raises), and while a check runs pytest has fd 2 redirected to its capture.
- Only the first signal raises KeyboardInterrupt. A second one (a second Ctrl-C, SIGTERM
  after SIGINT) while `finally` blocks and the teardown run would raise out of pytest's
  own clean-up, with a traceback, and stop the teardown half-way.
- `STOPPED` tells threads that wait on nodes (reboots, SSH connection attempts) to give
  up: they would go on connecting to nodes the teardown is removing, and the interpreter
  waits for a thread pool's threads before it exits.
- A SIGINT ignored when the run started (a shell's background job) stays ignored.
"""
from __future__ import annotations

import os
import signal
import threading
from contextlib import contextmanager
from typing import Any, Callable

STOPPED = threading.Event()   # set by the first signal; threads waiting on nodes give up


class Interrupted(KeyboardInterrupt):
    """Raised by the first SIGINT or SIGTERM; str() is the signal's name."""


def stopped() -> bool:
    return STOPPED.is_set()


def pause(seconds: float) -> bool:
    """Sleep, or return early (True) once the run is interrupted."""
    return STOPPED.wait(seconds)


class Interrupts:
    """The controller's SIGINT and SIGTERM handler; `cleaning_up()` says, at the moment of
    the signal, what the run is about to clean up (one phrase)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, cleaning_up: Callable[[], str], prefix: str = "k8sconf",
                 out: int | None = None, mid_line: Callable[[], bool] = lambda: False):
        self.cleaning_up, self.prefix, self.mid_line = cleaning_up, prefix, mid_line
        self._out = out   # where the line goes (default: fd 2 as it is when installed)
        self.received: str | None = None
        self._shielded = 0
        self._previous: dict[int, Any] = {}   # the handlers ours replaced
        self._stderr: int | None = None

    def install(self) -> None:
        STOPPED.clear()
        self._stderr = os.dup(2 if self._out is None else self._out)
        for sig in self.SIGNALS:
            current = signal.getsignal(sig)
            if sig == signal.SIGINT and current == signal.SIG_IGN:
                continue
            self._previous[sig] = signal.signal(sig, self._on_signal)

    def uninstall(self) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous.clear()
        if self._stderr is not None:
            os.close(self._stderr)
            self._stderr = None

    def _on_signal(self, signum, frame) -> None:
        if self.received is not None:
            return   # the clean-up the first signal started goes on to its end
        self.received = signal.Signals(signum).name
        STOPPED.set()
        try:
            what = self.cleaning_up()
            start = "\n" if self.mid_line() else ""   # after a row of progress dots
        except Exception:  # noqa: BLE001 - the line must not fail the handler
            what, start = "cleaning up", ""
        line = f"{start}{self.prefix}: interrupted ({self.received}): {what}\n".encode()
        os.write(2 if self._stderr is None else self._stderr, line)
        if not self._shielded:
            raise Interrupted(self.received)

    @contextmanager
    def shield(self, *, final: bool = False):
        """A block (removing nodes) that a signal does not break off. A signal that came
        during it is raised at its end, unless it is the final teardown. Not installed
        (the benchmark drives the lifecycle itself), Ctrl-C is ignored during the block."""
        if not self._previous and threading.current_thread() is threading.main_thread():
            ignored = signal.signal(signal.SIGINT, signal.SIG_IGN)
            try:
                yield
            finally:
                signal.signal(signal.SIGINT, ignored)
            return
        before = self.received
        self._shielded += 1
        try:
            yield
        finally:
            self._shielded -= 1
        if not final and not self._shielded and before is None and self.received:
            raise Interrupted(self.received)
