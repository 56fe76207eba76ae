"""The one way this project waits for something: `poll`, on tenacity.

Every wait is bounded. A probe answers truthy when what it waits for is there; it raises
an exception of `retry_on` when it cannot tell yet (the node does not answer yet), and
any other exception (or one of `give_up_on`) when waiting longer is pointless (the
process exited, the host key is wrong): that one ends the wait at once. At the deadline
the last answer is returned (falsy), or the last `retry_on` exception raised, so that
the caller's message can say what was seen last.
"""
from __future__ import annotations

import time
from typing import Callable, TypeVar

import tenacity

T = TypeVar("T")


def poll(probe: Callable[[], T], *, timeout: float, interval: float,
         retry_on: tuple[type[BaseException], ...] = (),
         give_up_on: tuple[type[BaseException], ...] = (),
         max_interval: float | None = None,
         sleep: Callable[[float], object] = time.sleep) -> T:
    """probe() every `interval` s until it returns a truthy value (returned) or `timeout`
    s have passed since the first call (which always happens). With `max_interval`, the
    pause doubles after each try up to it. No pause passes the deadline. `sleep` may be
    an Event's wait, so that setting it cuts a pause short."""
    deadline = time.monotonic() + timeout
    backoff = tenacity.wait_exponential(multiplier=interval, max=max_interval or interval)

    def pause(state: tenacity.RetryCallState) -> float:
        return max(0.0, min(backoff(state), deadline - time.monotonic()))

    def pause_for(seconds: float) -> None:
        sleep(seconds)

    def retried(exc: BaseException) -> bool:
        return isinstance(exc, retry_on) and not isinstance(exc, give_up_on)

    retrying = tenacity.Retrying(
        stop=tenacity.stop_after_delay(timeout),
        wait=pause,
        retry=tenacity.retry_if_exception(retried) | tenacity.retry_if_result(lambda v: not v),
        # at the deadline: the last answer, or the last exception, as it was
        retry_error_callback=lambda state: state.outcome.result() if state.outcome else None,
        sleep=pause_for)
    return retrying(probe)
