"""The one way this project waits for something: `poll`, on tenacity.

Every wait is bounded. A probe answers truthy when what it waits for is there; it raises
an exception of `retry_on` when it cannot tell yet (the node does not answer), and any
other exception when waiting longer is pointless (the process exited): that one ends
the wait at once. At the deadline the last answer is returned (falsy), or the last
`retry_on` exception raised, so that the caller's message can say what was seen last.
"""
from __future__ import annotations

import time
from typing import Callable, TypeVar

import tenacity

T = TypeVar("T")


def poll(probe: Callable[[], T], *, timeout: float, interval: float,
         retry_on: tuple[type[BaseException], ...] = ()) -> T:
    """probe() every `interval` s until it returns a truthy value (returned) or `timeout`
    s have passed since the first call. The pause before a try never passes the deadline."""
    deadline = time.monotonic() + timeout

    def pause(state: tenacity.RetryCallState) -> float:
        return max(0.0, min(interval, deadline - time.monotonic()))

    retrying = tenacity.Retrying(
        stop=tenacity.stop_after_delay(timeout),
        wait=pause,
        retry=(tenacity.retry_if_exception_type(retry_on)
               | tenacity.retry_if_result(lambda value: not value)),
        # at the deadline: the last answer, or the last exception, as it was
        retry_error_callback=lambda state: state.outcome.result() if state.outcome else None)
    return retrying(probe)
