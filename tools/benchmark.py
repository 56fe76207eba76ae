"""Benchmark of the conformance run on local clusters of several sizes (issue 11).

    bash scripts/benchmark                      # 3, 6 and 12 nodes
    python3 -m tools.benchmark --sizes 3      # one size, without the setup script

For each size, on a cluster of its own (prefix `k8sbench`, 192.168.42.0/24 and
10.142.0.0/24, so it never meets a conformance run's cluster), it:

1. creates and bootstraps the cluster through `ClusterLifecycle` (up = the provider's
   create step with a cached rootfs; bootstrap = the guide's install);
2. times the verification's SSH work in-process, as the controller does it before the
   checks (`facts.gather_cluster`: facts + probe start, pings, probe removal, each
   round on every node at once), and counts SSH commands per node;
3. times `pytest suites --reuse-cluster --no-bootstrap`, serial and `-n 3` (the whole
   verification: gathering plus every check), with this module loaded as a plugin
   (PYTEST_PLUGINS) to count the SSH commands of every process, xdist workers included;
4. times the same `pytest suites` run again, serial, with `tools/per_assertion.py` as its
   baseline: the same checks, but each fact fetched by its own testinfra call when a
   check asks for it (testinfra's way) instead of the one batched script; the ratio of
   the two serial runs is what the batching saves on identical assertions;
5. destroys the cluster.

It prints two tables and the targets, and writes `reports/benchmark.json`
($K8SCONF_REPORTS respected); its clusters' state and the pytest runs' reports go to
`reports/benchmark/`.

The pure part (counting, formatting, targets) is tested in tests/test_benchmark.py;
nothing here imports `helpers.paths` at module level, since `main` must relocate the
reports before anything reads them.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shlex
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PREFIX = "k8sbench"
PUBLIC_NETWORK = "192.168.42.0/24"
PRIVATE_NETWORK = "10.142.0.0/24"
SIZES = (3, 6, 12)
XDIST_WORKERS = 3
COUNTS_ENV = "K8SCONF_BENCH_COUNTS"   # set: the plugin below counts SSH commands to there
PLUGIN = "tools.benchmark"
BASELINE_PLUGIN = "tools.per_assertion"
SUBPROCESS_TIMEOUT = 900

# The targets of issue 11, on this 2-core machine.
TARGET_VERIFY_SECONDS = 5.0
TARGET_SPEEDUP = 5.0
TARGET_ROUND_TRIPS = 5
TARGET_SCALING = 2.0


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


# -- as a pytest plugin in the suite's subprocesses (PYTEST_PLUGINS=tools.benchmark) --
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


# -- pure helpers: pytest's summary line, the table, the targets --------------------------
_OUTCOME = re.compile(r"(\d+) (passed|failed|errors?|skipped|xfailed|xpassed|deselected)")
_SESSION = re.compile(r" in (\d+(?:\.\d+)?)s")


def parse_pytest_summary(output: str) -> dict:
    """{"passed": n, ..., "session_s": x} from pytest's last summary line."""
    for line in reversed(output.splitlines()):
        if (session := _SESSION.search(line)) and _OUTCOME.search(line):
            found: dict[str, float] = {kind.rstrip("s") if kind.startswith("error") else kind: int(n)
                     for n, kind in _OUTCOME.findall(line)}
            found["session_s"] = float(session.group(1))
            return found
    return {}


def ratio(numerator, denominator):
    if not numerator or not denominator:
        return None
    return round(numerator / denominator, 2)


def _fmt(value, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _get(row, *path):
    for key in path:
        if isinstance(row, dict):
            row = row.get(key)
        elif isinstance(row, list) and isinstance(key, int) and -len(row) <= key < len(row):
            row = row[key]
        else:
            return None
    return row


TIMES = (
    # header, path in a size's result, digits
    ("nodes", ("nodes",), 0),
    ("up s", ("up_s",), 1),
    ("bootstrap s", ("bootstrap_s",), 1),
    ("verify s", ("verify", "wall_s"), 2),
    ("min", ("verify", "wall_s_min"), 2),
    ("CPU floor s", ("verify", "cpu_floor_s"), 2),
    ("pytest s", ("pytest_serial", "wall_s"), 1),
    (f"pytest -n{XDIST_WORKERS} s", ("pytest_xdist", "wall_s"), 1),
    ("baseline s", ("baseline", "wall_s"), 1),
    ("ratio", ("speedup",), 1),
    ("load", ("loadavg_start", 0), 1),
)
COUNTS = (
    ("nodes", ("nodes",), 0),
    ("RT/node verify", ("verify", "round_trips_max"), 0),
    ("pytest", ("pytest_serial", "round_trips_max"), 0),
    (f"-n{XDIST_WORKERS}", ("pytest_xdist", "round_trips_max"), 0),
    ("baseline", ("baseline", "round_trips_max"), 0),
    ("node CPU s verify", ("verify", "node_cpu_s"), 1),
    ("pytest", ("pytest_serial", "node_cpu_s"), 1),
    (f"-n{XDIST_WORKERS}", ("pytest_xdist", "node_cpu_s"), 1),
    ("baseline", ("baseline", "node_cpu_s"), 1),
    ("client CPU s pytest", ("pytest_serial", "client_cpu_s"), 1),
    (f"-n{XDIST_WORKERS}", ("pytest_xdist", "client_cpu_s"), 1),
)


def format_table(sizes: list[dict], columns=TIMES) -> str:
    """A fixed-width table: one row per cluster size."""
    header = [c[0] for c in columns]
    rows = [[_fmt(_get(size, *path), digits) for _, path, digits in columns] for size in sizes]
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows, strict=True)]
    lines = ["  ".join(cell.rjust(w) for cell, w in zip(line, widths, strict=True))
             for line in [header, ["-" * w for w in widths], *rows]]
    return "\n".join(lines)


def evaluate_targets(sizes: list[dict]) -> list[dict]:
    """Issue 11's targets against the measured sizes; `met` is None when not measured."""
    by_nodes = {s["nodes"]: s for s in sizes}
    three, twelve = by_nodes.get(3), by_nodes.get(12)
    targets = []

    def add(name, value, limit, met):
        targets.append({"target": name, "value": value, "limit": limit,
                        "met": None if value is None else met})

    verify3 = _get(three, "verify", "wall_s") if three else None
    add("verify 3 nodes in-process < 5 s", verify3, TARGET_VERIFY_SECONDS,
        verify3 is not None and verify3 < TARGET_VERIFY_SECONDS)
    speedup3 = _get(three, "speedup") if three else None
    add("3 nodes: >= 5x faster than per-assertion testinfra calls (same checks)", speedup3, TARGET_SPEEDUP,
        speedup3 is not None and speedup3 >= TARGET_SPEEDUP)
    path: tuple[str, ...]
    for label, path in (("in-process", ("verify",)), ("pytest serial", ("pytest_serial",)),
                        (f"pytest -n {XDIST_WORKERS}", ("pytest_xdist",))):
        worst = max((_get(s, *path, "round_trips_max") or 0 for s in sizes), default=None)
        measured = any(_get(s, *path, "round_trips_max") is not None for s in sizes)
        add(f"<= 5 round trips per node ({label})", worst if measured else None,
            TARGET_ROUND_TRIPS, measured and worst is not None and worst <= TARGET_ROUND_TRIPS)
    for label, path in (("in-process", ("verify", "wall_s")),
                        ("pytest serial", ("pytest_serial", "wall_s")),
                        (f"pytest -n {XDIST_WORKERS}", ("pytest_xdist", "wall_s"))):
        growth = ratio(_get(twelve, *path), _get(three, *path)) if three and twelve else None
        add(f"12 nodes / 3 nodes wall < 2 ({label})", growth, TARGET_SCALING,
            growth is not None and growth < TARGET_SCALING)
    floors = (ratio(_get(twelve, "verify", "cpu_floor_s"), _get(three, "verify", "cpu_floor_s"))
              if three and twelve else None)
    # not a target: why the one above can be missed where the nodes share this machine
    targets.append({"target": "for comparison: 12 / 3 nodes of the nodes' CPU floor "
                              "(node CPU seconds / cores)", "value": floors, "limit": None,
                    "met": "info" if floors is not None else None})
    return targets


def format_targets(targets: list[dict]) -> str:
    marks = {True: "MET", False: "MISSED", None: "not measured", "info": "info"}
    return "\n".join(f"  {marks[t['met']]:>12}  {t['target']}: {_fmt(t['value'], 2)}"
                     for t in targets)


def summarize_runs(runs: list[dict]) -> dict:
    """The median run's figures (by wall time) and the spread, from repeated runs."""
    ordered = sorted(runs, key=lambda r: r["wall_s"])
    median = ordered[len(ordered) // 2]
    return {**median, "wall_s_runs": [round(r["wall_s"], 3) for r in runs],
            "wall_s_min": round(ordered[0]["wall_s"], 3),
            "wall_s_median": round(statistics.median(r["wall_s"] for r in runs), 3)}


# -- measuring: CPU of the nodes and of this process -------------------------------------
def _cpu_usage_files(cluster) -> list[Path]:
    """Per node: cgroup v1 `cpuacct.usage` (ns) if there is one, else v2 `cpu.stat`."""
    files = []
    for info in cluster.state.get("nodes", {}).values():
        try:
            cgroups = [Path(line) for line in
                       (Path(info.get("dir", "/nonexistent")) / "cgroups").read_text().split()]
        except OSError:
            continue
        candidates = [cg / "cpuacct.usage" for cg in cgroups] + [cg / "cpu.stat" for cg in cgroups]
        files += [f for f in candidates if f.exists()][:1]
    return files


def node_cpu_seconds(cluster) -> float | None:
    """CPU seconds all nodes' cgroups have used so far (None where unreadable)."""
    total, found = 0.0, False
    for path in _cpu_usage_files(cluster):
        try:
            text = path.read_text()
        except OSError:
            continue
        if path.name == "cpuacct.usage":
            total += int(text) / 1e9
        else:
            fields = dict(line.split(None, 1) for line in text.splitlines() if " " in line)
            if "usage_usec" not in fields:
                continue
            total += int(fields["usage_usec"]) / 1e6
        found = True
    return total if found else None


class Meter:
    """Wall, this process's CPU, its children's CPU and the nodes' CPU over a block."""

    def __init__(self, cluster=None):
        self.cluster = cluster

    def __enter__(self):
        loads = loadavg()
        self.load = loads[0] if loads else None
        self.wall = time.monotonic()
        self.cpu = time.process_time()
        self.children = _children_cpu()
        self.nodes = node_cpu_seconds(self.cluster) if self.cluster else None
        return self

    def __exit__(self, *exc):
        self.wall_s = time.monotonic() - self.wall
        self.client_cpu_s = time.process_time() - self.cpu + _children_cpu() - self.children
        nodes = node_cpu_seconds(self.cluster) if self.cluster else None
        self.node_cpu_s = nodes - self.nodes if nodes is not None and self.nodes is not None \
            else None
        return False

    def as_dict(self) -> dict:
        return {"wall_s": round(self.wall_s, 3), "client_cpu_s": round(self.client_cpu_s, 2),
                "node_cpu_s": None if self.node_cpu_s is None else round(self.node_cpu_s, 2),
                "cpu_floor_s": cpu_floor(self.node_cpu_s), "load_1min": self.load}


def cpu_floor(node_cpu_s: float | None) -> float | None:
    """The least wall time the nodes' CPU work can take on this machine's cores: the local
    nodes share them, so a round that keeps every node busy cannot end sooner."""
    return None if node_cpu_s is None else round(node_cpu_s / (os.cpu_count() or 1), 2)


def _children_cpu() -> float:
    import resource
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def loadavg() -> list[float]:
    try:
        return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return []


# -- verification, in-process: what the controller does before the checks ---------------
def verify_current(cluster, inventory) -> dict:
    """The run's SSH work, as lifecycle._gather_facts does it, on fresh connections:
    facts.gather_cluster's three rounds (facts + probe start, pings, probe removal),
    each on every node at once. The checks then only read what it gathered."""
    from helpers import facts as facts_mod
    from helpers import lifecycle
    connections = lifecycle.connect_all(cluster, inventory)
    try:
        with Meter(cluster) as total:
            found = facts_mod.gather_cluster(cluster, connections, inventory.guide.values(),
                                             inventory.ssh.command_timeout,
                                             facts_mod.full_plan())
        trips = {n: c.commands_run for n, c in connections.items()}
    finally:
        for connection in connections.values():
            connection.close()
    errors = [f"{n}: {f}" for n, f in found.items() if isinstance(f, Exception)]
    errors += [f"{n} -> {other}" for n, f in found.items() if not isinstance(f, Exception)
               for other, reached in f.pings().items() if not reached]
    return {**total.as_dict(), "round_trips": trips, "round_trips_max": max(trips.values()),
            "errors": errors}


def section_profile(cluster, inventory, node) -> dict[str, int]:
    """Milliseconds each facts section takes on `node`, run one after the other, alone."""
    from helpers import facts as facts_mod
    from helpers import lifecycle
    sections = facts_mod.section_commands(node, cluster, inventory.guide.values())
    script = "\n".join(
        f"s=$(date +%s%N); timeout {facts_mod.PER_SECTION_TIMEOUT} sh -c {shlex.quote(cmd)} "
        f">/dev/null 2>&1; echo \"$(( ($(date +%s%N) - s) / 1000000 )) {name}\""
        for name, cmd in sections.items())
    connection = lifecycle.connect_all(cluster, inventory)[node.name]
    try:
        out = connection.run(script, sudo=True, timeout=300).stdout
    finally:
        connection.close()
    timings = {}
    for line in out.splitlines():
        ms, _, name = line.partition(" ")
        if ms.isdigit():
            timings[name] = int(ms)
    return dict(sorted(timings.items(), key=lambda kv: -kv[1]))


# -- the suite as a subprocess, on the kept cluster ------------------------------------
def run_suite(inventory_path: Path, work: Path, label: str, *args: str, cluster=None) -> dict:
    """`pytest suites --reuse-cluster --no-bootstrap --keep-cluster`, counted and timed."""
    counts = work / "counts" / label
    if counts.exists():
        for old in counts.glob("*.json"):
            old.unlink()
    log = work / f"pytest-{label}.log"
    command = [sys.executable, "-m", "pytest", "suites", "--inventory", str(inventory_path),
               "--reuse-cluster", "--no-bootstrap", "--keep-cluster", "-q",
               "--alluredir", str(work / "allure-results"),
               "--junitxml", str(work / "junit.xml"), *args]
    plugins = ",".join(p for p in (os.environ.get("PYTEST_PLUGINS"), PLUGIN) if p)
    env = {**os.environ, "K8SCONF_REPORTS": str(work), COUNTS_ENV: str(counts),
           "PYTEST_PLUGINS": plugins, "PYTHONUNBUFFERED": "1"}
    with log.open("w") as out, Meter(cluster) as meter:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   start_new_session=True)
        try:
            code = process.wait(SUBPROCESS_TIMEOUT)
        except BaseException:
            _stop(process)
            raise
    output = log.read_text()
    result = {**meter.as_dict(), "exit_code": code, "command": " ".join(command[2:]),
              "outcomes": parse_pytest_summary(output), "log": str(log)}
    if label.startswith("collect"):
        return result
    counted = read_counts(counts)
    trips = per_node(counted)
    result.update({"round_trips": trips, "round_trips_max": max(trips.values(), default=None),
                   "connects": counted["connects"], "by_kind": kinds_total(counted),
                   "processes": counted["processes"]})
    return result


def _stop(process: subprocess.Popen) -> None:
    """Our own child (its own session): SIGTERM, then SIGKILL, by its process group id."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(20)
    except (subprocess.TimeoutExpired, ProcessLookupError):
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait(10)


# -- one cluster size --------------------------------------------------------------------
def write_inventory(work: Path, count: int) -> Path:
    import yaml
    data = yaml.safe_load((ROOT / "inventories" / "local.yaml").read_text())
    data["local"] = {"count": count, "prefix": PREFIX, "public_network": PUBLIC_NETWORK,
                     "private_network": PRIVATE_NETWORK}
    path = work / f"{PREFIX}-{count}.yaml"   # local.yaml's artifacts: the real binaries
    path.write_text(yaml.safe_dump(data))
    return path


def bench_size(count: int, work: Path, options, say, result: dict) -> dict:
    """Everything for one cluster size, filled into `result` as it is measured (so an
    interrupted or failed size still reports what it got)."""
    from helpers import inventory as inventory_mod
    from helpers import lifecycle
    if lifecycle.STATE_FILE.resolve() != (work / "cluster" / "state.json").resolve():
        raise RuntimeError(f"the lifecycle's state is {lifecycle.STATE_FILE}, not under {work}")
    inventory_path = write_inventory(work, count)
    inventory = inventory_mod.load(inventory_path)
    if lifecycle.STATE_FILE.exists():   # ours (reports/benchmark): create() clears leftovers
        lifecycle.STATE_FILE.unlink()
    result.update({"nodes": count, "loadavg_start": loadavg()})
    run = lifecycle.ClusterLifecycle(
        inventory, inventory_path, keep=False, reuse=False, bootstrap=True,
        progress=lambda step: options.verbose and say(
            f"    {step.seconds:5.1f}s {step.name} {step.node}".rstrip()))
    try:
        say(f"{count} nodes: create + bootstrap ...")
        with Meter() as setup:
            state = run.setup()
        if state.get("error"):
            raise RuntimeError(f"setup failed: {state['error']}")
        cluster, provider = run.cluster, run.provider
        assert cluster is not None and provider is not None  # setup() made them
        steps = state["steps"]
        result["up_s"] = round(sum(s["seconds"] for s in steps if s["name"].startswith("create")), 2)
        result["bootstrap_s"] = round(state["bootstrap"]["seconds"], 2)
        result["setup_wall_s"] = round(setup.wall_s, 2)
        result["bootstrap_steps_s"] = _slowest_steps(steps)
        say(f"{count} nodes: up {result['up_s']:.1f} s, bootstrap {result['bootstrap_s']:.1f} s")

        with Meter(cluster) as idle:
            time.sleep(2)
        result["idle_node_cpu_per_s"] = None if idle.node_cpu_s is None else \
            round(idle.node_cpu_s / idle.wall_s, 3)

        runs = []
        for i in range(options.repeat):
            runs.append(verify_current(cluster, inventory))
            say(f"{count} nodes: verify in-process #{i + 1}: {runs[-1]['wall_s']:.2f} s, "
                f"{runs[-1]['round_trips_max']} round trips/node"
                + (f", errors: {runs[-1]['errors']}" if runs[-1]["errors"] else ""))
        result["verify"] = summarize_runs(runs)

        result["section_profile_ms"] = {
            "master": section_profile(cluster, inventory, cluster.master)}
        if cluster.minions:
            result["section_profile_ms"]["minion"] = section_profile(
                cluster, inventory, cluster.minions[0])

        if not options.no_pytest:
            for label, args in (("serial", ()), ("xdist", ("-n", str(XDIST_WORKERS)))):
                say(f"{count} nodes: pytest suites --reuse-cluster --no-bootstrap "
                    f"{' '.join(args)} ...")
                found = run_suite(inventory_path, work, f"{count}-{label}", *args,
                                  cluster=cluster)
                result[f"pytest_{label}"] = found
                say(f"{count} nodes: pytest {label}: {found['wall_s']:.1f} s wall "
                    f"(session {found['outcomes'].get('session_s', '?')} s), "
                    f"{found['outcomes']}, {found['round_trips_max']} round trips/node")
            if count == options.sizes[0]:
                found = run_suite(inventory_path, work, "collect", "--collect-only")
                result["pytest_collect_only"] = found
                say(f"{count} nodes: pytest --collect-only: {found['wall_s']:.1f} s")

        if not options.no_baseline:
            say(f"{count} nodes: baseline: the same checks, one testinfra call per fact asked ...")
            found = run_suite(inventory_path, work, f"{count}-baseline", "-p", BASELINE_PLUGIN,
                              cluster=cluster)
            result["baseline"] = found
            serial = result.get("pytest_serial", {}).get("wall_s")
            result["speedup"] = ratio(found["wall_s"], serial)
            say(f"{count} nodes: baseline {found['wall_s']:.1f} s wall, {found['outcomes']}, "
                f"{found['round_trips_max']} round trips/node max; ratio to pytest serial "
                f"{result['speedup']}x")
        from helpers.providers.local import LocalProvider  # the one that measures memory
        try:
            assert isinstance(provider, LocalProvider), provider.name
            result["memory_mib_per_node"] = round(statistics.mean(
                provider.memory(cluster, n)["usage"] for n in cluster.nodes) / 2**20, 1)
        except Exception:  # noqa: BLE001 - a figure we can do without
            result["memory_mib_per_node"] = None
    finally:
        with Meter() as destroy:
            run.teardown()
        result["destroy_s"] = round(destroy.wall_s, 2)
        say(f"{count} nodes: destroyed in {destroy.wall_s:.1f} s")
    return result


def _slowest_steps(steps: list[dict]) -> dict[str, float]:
    """Each step's longest duration over the nodes, slowest first."""
    longest: dict[str, float] = {}
    for step in steps:
        longest[step["name"]] = max(longest.get(step["name"], 0.0), step["seconds"])
    return dict(sorted(((k, round(v, 2)) for k, v in longest.items()), key=lambda kv: -kv[1]))


# -- main --------------------------------------------------------------------------------
def parse_args(argv):
    parser = argparse.ArgumentParser(prog="scripts/benchmark", description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)),
                        help="node counts, comma-separated (default: 3,6,12)")
    parser.add_argument("--repeat", type=int, default=3,
                        help="in-process verifications per size; the median is reported")
    parser.add_argument("--no-pytest", action="store_true", help="skip the pytest subprocesses")
    parser.add_argument("--no-baseline", action="store_true", help="skip the per-assertion baseline run")
    parser.add_argument("--verbose", action="store_true", help="show every setup step")
    options = parser.parse_args(argv)
    options.sizes = [int(s) for s in options.sizes.split(",") if s.strip()]
    if not options.sizes or any(not 1 <= s <= 16 for s in options.sizes):
        parser.error("--sizes: node counts between 1 and 16")
    return options


def _sigterm(signum, frame):
    raise KeyboardInterrupt("SIGTERM")   # ends the run like Ctrl-C: the cluster is destroyed


def report(payload: dict, reports: Path) -> str:
    """Targets into the payload, the payload to reports/benchmark.json; the text to print."""
    payload["targets"] = evaluate_targets(payload["sizes"])
    out = reports / "benchmark.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(payload, indent=2, default=str))
    return "\n".join([
        "wall times (s): verify (the run's SSH work, in-process) is a median (min beside "
        "it); pytest = the whole suite as a subprocess; "
        "ratio = baseline / pytest serial (the same checks, one testinfra call per fact asked); load = 1-min load average at the start",
        format_table(payload["sizes"], TIMES), "",
        "SSH round trips per node (max over nodes); CPU seconds on the nodes and here",
        format_table(payload["sizes"], COUNTS), "",
        "targets:", format_targets(payload["targets"]), "",
        f"written to {out}"])


def main(argv=None) -> int:
    options = parse_args(sys.argv[1:] if argv is None else argv)
    reports = Path(os.environ.get("K8SCONF_REPORTS") or ROOT / "reports")
    work = reports / "benchmark"
    # The lifecycle's state and the suite's reports go under reports/benchmark, so a
    # conformance run's reports/cluster/state.json is never touched.
    if "helpers.paths" in sys.modules and \
            sys.modules["helpers.paths"].REPORTS.resolve() != work.resolve():
        raise SystemExit("tools.benchmark: helpers.paths was imported before main() "
                         "could relocate the reports; run it as `python3 -m tools.benchmark`")
    os.environ["K8SCONF_REPORTS"] = str(work)
    work.mkdir(parents=True, exist_ok=True)
    # paramiko logs a reset connection while a node reboots; the lifecycle retries it
    logging.getLogger("paramiko").setLevel(logging.CRITICAL)
    started = time.monotonic()

    def say(text: str) -> None:
        print(f"[{time.monotonic() - started:6.1f}s] {text}", flush=True)

    previous = signal.signal(signal.SIGTERM, _sigterm)
    payload = {"started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "cpus": os.cpu_count(),
               "loadavg_start": loadavg(), "prefix": PREFIX,
               "networks": [PUBLIC_NETWORK, PRIVATE_NETWORK],
               "repeat": options.repeat, "sizes": []}
    say(f"benchmark: sizes {options.sizes}, {os.cpu_count()} CPUs, load {loadavg()}; "
        f"work dir {work}")
    code = 0
    try:
        for count in options.sizes:
            payload["sizes"].append({"nodes": count})
            bench_size(count, work, options, say, payload["sizes"][-1])
    except KeyboardInterrupt:
        say("interrupted; the cluster has been destroyed")
        code = 130
    except Exception as exc:  # noqa: BLE001 - reported; the cluster is already destroyed
        say(f"failed: {type(exc).__name__}: {exc}")
        payload["error"] = f"{type(exc).__name__}: {exc}"
        code = 1
    finally:
        signal.signal(signal.SIGTERM, previous)
        state = work / "cluster" / "state.json"
        if state.exists():
            state.unlink()
        payload["seconds"] = round(time.monotonic() - started, 1)
        payload["loadavg_end"] = loadavg()
        print()
        print(report(payload, reports), flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
