"""The benchmark's count of SSH commands (round trips) per node and per kind: a counter
around helpers.ssh, loaded as a pytest plugin in the suite's subprocesses
(PYTEST_PLUGINS=tools.bench_counts, with $K8SCONF_BENCH_COUNTS naming where each process
writes its counts), and the merge of those files (tools/benchmark.py reads them)."""
from __future__ import annotations

import json
import os
import threading
from collections import Counter
from pathlib import Path

import pytest

COUNTS_ENV = "K8SCONF_BENCH_COUNTS"   # set: this plugin counts SSH commands to there
PLUGIN = "tools.bench_counts"


# -- counting SSH commands (round trips) ----------------------------------------------
def command_kind(command) -> str:
    """A short label for what a command is for, to break round trips down."""
    text = command.decode(errors="replace") if isinstance(command, bytes) else str(command)
    if "@@k8sconf-section " in text:
        return "facts"
    for needle, kind in (("docker run -d", "probe start"), ("ping -c", "ping"),
                         ("docker rm -f", "probe remove"), ("docker run --rm", "probe run"),
                         ("systemctl show", "systemctl show"), ("curl ", "curl")):
        if needle in text:
            return kind
    if text.strip() == "ip route":
        return "ip route"
    if "os-release" in text:
        return "node versions"
    words = text.replace("sudo /bin/sh -c", "").split()
    return words[0].strip("'\"") if words else "(empty)"


class CommandCounter:
    """Counts every SSH command (and connect) that `helpers.ssh.Connection` makes.

    It wraps the class's `_execute` and `connect`, which every command goes through,
    testinfra's too; `Connection`'s own API is unchanged.
    """

    def __init__(self):
        self.commands: Counter = Counter()   # (node, kind) -> n
        self.connects: Counter = Counter()   # node -> n
        self._lock = threading.Lock()
        self._installed = None

    def install(self, cls=None) -> "CommandCounter":
        if cls is None:
            from helpers.ssh import Connection as cls
        execute, connect = cls.__dict__["_execute"], cls.__dict__["connect"]
        counter = self

        def counted_execute(conn, command, **kwargs):
            counter.record(conn.node.name, command)
            return execute(conn, command, **kwargs)

        def counted_connect(conn, *args, **kwargs):
            with counter._lock:
                counter.connects[conn.node.name] += 1
            return connect(conn, *args, **kwargs)

        cls._execute, cls.connect = counted_execute, counted_connect
        self._installed = (cls, execute, connect)
        return self

    def uninstall(self) -> None:
        if self._installed:
            cls, execute, connect = self._installed
            cls._execute, cls.connect = execute, connect
            self._installed = None

    def record(self, node: str, command) -> None:
        with self._lock:
            self.commands[(node, command_kind(command))] += 1

    def as_dict(self) -> dict:
        commands: dict[str, dict[str, int]] = {}
        for (node, kind), n in sorted(self.commands.items()):
            commands.setdefault(node, {})[kind] = n
        return {"commands": commands, "connects": dict(sorted(self.connects.items()))}


def merge_counts(parts: list[dict]) -> dict:
    """Sum several processes' `CommandCounter.as_dict()`s."""
    commands: dict[str, Counter] = {}
    connects: Counter = Counter()
    for part in parts:
        for node, kinds in part.get("commands", {}).items():
            commands.setdefault(node, Counter()).update(kinds)
        connects.update(part.get("connects", {}))
    return {"commands": {n: dict(sorted(k.items())) for n, k in sorted(commands.items())},
            "connects": dict(sorted(connects.items()))}


def per_node(counts: dict) -> dict[str, int]:
    """Round trips per node: every command sent to it."""
    return {node: sum(kinds.values()) for node, kinds in counts.get("commands", {}).items()}


def kinds_total(counts: dict) -> dict[str, int]:
    total: Counter = Counter()
    for kinds in counts.get("commands", {}).values():
        total.update(kinds)
    return dict(total.most_common())


# -- as a pytest plugin in the suite's subprocesses (PYTEST_PLUGINS=tools.bench_counts)
_plugin_counter: CommandCounter | None = None


def pytest_configure(config):
    global _plugin_counter
    if os.environ.get(COUNTS_ENV) and _plugin_counter is None:
        _plugin_counter = CommandCounter().install()


def _dump_counts(config) -> None:
    if _plugin_counter is None:
        return
    target = Path(os.environ[COUNTS_ENV])
    target.mkdir(parents=True, exist_ok=True)
    worker = getattr(config, "workerinput", {}).get("workerid", "controller")
    path = target / f"{worker}-{os.getpid()}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(_plugin_counter.as_dict()))
    tmp.replace(path)


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session, exitstatus):
    # session fixtures are torn down by now; an xdist worker may be ended soon after
    # it reports the end of its session, so write before it does
    _dump_counts(session.config)


def pytest_unconfigure(config):
    global _plugin_counter
    _dump_counts(config)    # again: anything after sessionfinish counts too
    if _plugin_counter is not None:
        _plugin_counter.uninstall()
        _plugin_counter = None


def read_counts(directory: Path) -> dict:
    parts = [json.loads(p.read_text()) for p in sorted(directory.glob("*.json"))]
    merged = merge_counts(parts)
    merged["processes"] = len(parts)
    return merged
