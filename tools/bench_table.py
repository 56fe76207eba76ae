"""The benchmark's pure part (tools/benchmark.py): pytest's summary line read, the tables
of figures, and the targets of issue 11 judged. No cluster, no SSH: tests/test_benchmark.py
exercises it with made-up figures."""
from __future__ import annotations

import re
import statistics

XDIST_WORKERS = 3          # the -n of the benchmark's parallel run
# The targets of issue 11, on this 2-core machine.
TARGET_VERIFY_SECONDS = 5.0
TARGET_SPEEDUP = 5.0
TARGET_ROUND_TRIPS = 5
TARGET_SCALING = 2.0


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
