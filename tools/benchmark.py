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
   verification: gathering plus every check), with tools/bench_counts.py loaded as a
   plugin (PYTEST_PLUGINS) to count the SSH commands of every process, xdist workers
   included;
4. times the same `pytest suites` run again, serial, with `tools/per_assertion.py` as its
   baseline: the same checks, but each fact fetched by its own testinfra call when a
   check asks for it (testinfra's way) instead of the one batched script; the ratio of
   the two serial runs is what the batching saves on identical assertions;
5. destroys the cluster.

It prints two tables and the targets, and writes `reports/benchmark.json`
($K8SCONF_REPORTS respected); its clusters' state and the pytest runs' reports go to
`reports/benchmark/`.

The pure parts, counting (tools/bench_counts.py) and the tables and targets
(tools/bench_table.py), are tested in tests/test_benchmark.py;
nothing here imports `helpers.paths` at module level, since `main` must relocate the
reports before anything reads them.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

from tools.bench_counts import (
    COUNTS_ENV,
    PLUGIN,
    kinds_total,
    per_node,
    read_counts,
)
from tools.bench_table import (
    COUNTS,
    TIMES,
    XDIST_WORKERS,
    evaluate_targets,
    format_table,
    format_targets,
    parse_pytest_summary,
    ratio,
    summarize_runs,
)

ROOT = Path(__file__).resolve().parent.parent
PREFIX = "k8sbench"
PUBLIC_NETWORK = "192.168.42.0/24"
PRIVATE_NETWORK = "10.142.0.0/24"
SIZES = (3, 6, 12)
BASELINE_PLUGIN = "tools.per_assertion"
SUBPROCESS_TIMEOUT = 900


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
