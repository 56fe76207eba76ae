"""A record of timed steps: shown as progress while they run, reported afterwards."""
from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable


@dataclass
class Step:
    name: str
    node: str = ""
    start: float = 0.0
    stop: float = 0.0
    status: str = "passed"
    message: str = ""
    attachments: dict[str, str] = field(default_factory=dict)

    @property
    def seconds(self) -> float:
        return self.stop - self.start

    def attach(self, name: str, text: str) -> None:
        self.attachments[name] = text


class StepLog:
    """Steps in order; `progress` is told of each as it ends (step, node, seconds)."""

    def __init__(self, progress: Callable[[Step], None] | None = None):
        self.steps: list[Step] = []
        self.progress = progress or (lambda step: None)

    @contextmanager
    def step(self, name: str, node: str = ""):
        current = Step(name, node, start=time.time())
        self.steps.append(current)
        try:
            yield current
        except BaseException as exc:
            current.status = "failed" if isinstance(exc, Exception) else "broken"
            current.message = str(exc) or type(exc).__name__
            raise
        finally:
            current.stop = time.time()
            self.progress(current)

    def as_dicts(self) -> list[dict]:
        return [vars(s) | {"seconds": round(s.seconds, 3)} for s in self.steps]
