"""helpers/waiting.poll: the one bounded wait everything uses."""
import threading
import time

import pytest

from helpers.waiting import poll


def test_poll_returns_the_first_truthy_answer():
    answers = iter([None, 0, "", "here", "later"])
    assert poll(lambda: next(answers), timeout=5, interval=0.01) == "here"


def test_poll_returns_the_last_falsy_answer_at_the_deadline_and_keeps_to_it():
    started = time.monotonic()
    assert poll(lambda: [], timeout=0.3, interval=0.1) == []
    assert 0.3 <= time.monotonic() - started < 0.6


def test_poll_retries_retry_on_and_raises_the_last_one_at_the_deadline():
    calls = []

    def probe():
        calls.append(1)
        raise ConnectionError(f"attempt {len(calls)}")
    with pytest.raises(ConnectionError, match=r"attempt (\d+)") as raised:
        poll(probe, timeout=0.3, interval=0.05, retry_on=(OSError,))
    assert str(raised.value) == f"attempt {len(calls)}" and len(calls) > 2


def test_poll_ends_at_once_on_another_exception_or_one_to_give_up_on():
    calls = []

    def probe(exc):
        calls.append(exc)
        raise exc
    with pytest.raises(ValueError):
        poll(lambda: probe(ValueError("fatal")), timeout=5, interval=0.01, retry_on=(OSError,))
    with pytest.raises(FileNotFoundError):
        poll(lambda: probe(FileNotFoundError("final")), timeout=5, interval=0.01,
             retry_on=(OSError,), give_up_on=(FileNotFoundError,))
    assert len(calls) == 2


def test_poll_always_tries_once_even_with_no_time_left():
    assert poll(lambda: "yes", timeout=-1, interval=1) == "yes"


def test_poll_doubles_its_pause_up_to_max_interval():
    pauses: list[float] = []
    poll(lambda: len(pauses) >= 5, timeout=60, interval=0.5, max_interval=3,
         sleep=pauses.append)
    assert pauses == [0.5, 1.0, 2.0, 3.0, 3.0]


def test_an_event_as_sleep_cuts_the_pause_short():
    stop = threading.Event()
    threading.Timer(0.1, stop.set).start()
    started = time.monotonic()
    poll(lambda: stop.is_set(), timeout=10, interval=5, sleep=stop.wait)
    assert time.monotonic() - started < 1
