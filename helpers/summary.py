"""The sign-off: a verdict that cannot mislead, pass/fail per area and per node, the
advisories, the waivers and the durations, printed at the end of the run and written to
reports/summary.md and reports/summary.json.

The verdict is exactly one of:
- PASS (or "PASS with N waivers"): the whole suite ran against the whole cluster with the
  guide's real binaries, nothing failed, and every advisory stayed expected;
- FAIL: a check failed or errored, or an advisory passed unexpectedly;
- PARTIAL (n of N checks): the run was narrowed by -k, -m, paths, --deselect or --lf;
- NOT A RELEASE VERDICT (reason): the stand-ins ran, or a node could not be read.

It counts the same reports the JUnit file is written from (one per test, in the
controller under xdist), so the two always agree.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

from helpers import trace
from helpers.paths import REPORTS

SUMMARY = REPORTS / "summary.md"
SUMMARY_JSON = REPORTS / "summary.json"
OUTCOMES = ("passed", "failed", "error", "skipped", "xfailed", "xpassed", "waived")
SUITES = Path(__file__).resolve().parent.parent / "suites"
WAIVED = "waived"   # the user property a waived failure carries


def outcome_of(report) -> str | None:
    """One outcome per test, as JUnit counts it; None for phases that add nothing."""
    if report.when == "call":
        if hasattr(report, "wasxfail"):
            if report.skipped and WAIVED in dict(report.user_properties):
                return "waived"
            return "xfailed" if report.skipped else "xpassed"
        return report.outcome
    if report.failed:
        return "error"
    if report.skipped and report.when == "setup":
        return "xfailed" if hasattr(report, "wasxfail") else "skipped"
    return None


def _first_line(report) -> str:
    """The check's own claim (`node: what`), not pytest's file:line."""
    crash = getattr(report.longrepr, "reprcrash", None)
    text = crash.message if crash else report.longreprtext
    lines = [line for line in text.splitlines() if line.strip()]
    first = lines[0] if lines else ""
    return first.removeprefix("helpers.checks.CheckFailed: ").removeprefix("Failed: ")


def selection_of(config) -> str:
    """How the run was narrowed to part of the suite ('' for the whole suite)."""
    if config is None:
        return ""
    option = config.option
    ways = []
    if getattr(option, "keyword", ""):
        ways.append(f"-k {option.keyword}")
    if getattr(option, "markexpr", ""):
        ways.append(f"-m {option.markexpr}")
    if getattr(option, "deselect", None):
        ways.append("--deselect")
    if getattr(option, "lf", False) or getattr(option, "last_failed", False):
        ways.append("--lf")
    for arg in config.args:
        path = Path(arg.split("::")[0])
        path = path if path.is_absolute() else Path(config.invocation_params.dir) / path
        if "::" in arg or path.resolve() != SUITES:
            ways.append(f"path {arg}")
    return ", ".join(ways)


def whole_suite_count(inventory: Path | None) -> int | None:
    """How many checks the whole suite has for this inventory (a collection, nothing run)."""
    with tempfile.TemporaryDirectory() as scratch:
        command = [sys.executable, "-m", "pytest", "--collect-only", "-q", str(SUITES),
                   "-p", "no:cacheprovider"] + (["--inventory", str(inventory)] if inventory else [])
        try:
            out = subprocess.run(command, capture_output=True, text=True, timeout=120,
                                 cwd=SUITES.parent, stdin=subprocess.DEVNULL,
                                 env={**os.environ, "K8SCONF_REPORTS": scratch}).stdout
        except (OSError, subprocess.TimeoutExpired):
            return None
    found = re.search(r"^(\d+) tests? collected", out, re.M)
    return int(found.group(1)) if found else None


class SignOff:
    def __init__(self, config=None, inventory_path: Path | None = None, waivers=()):
        self.started = time.time()
        self.config, self.inventory_path = config, inventory_path
        self.waivers = list(waivers)
        # nodeid -> outcome, area, node, message
        self.results: dict[str, tuple[str, str, str, str]] = {}
        self.waived: dict[str, str] = {}   # nodeid -> the waiver's check
        self.covered: dict[str, list[str]] = {}   # guide statement -> checks of this run
        # failures judged again on a second reading of their node (plugin.pytest_pyfunc_call)
        self.transient: dict[str, str] = {}   # passed then: nodeid -> the first failure
        self.persistent: set[str] = set()
        self._total: int | None = None

    def pytest_runtest_logreport(self, report):
        outcome = outcome_of(report)
        if outcome is None:
            return
        props = dict(report.user_properties)
        previous = self.results.get(report.nodeid)
        if previous and previous[0] in ("failed", "error") and outcome == "error":
            return  # a teardown error after a failure: JUnit keeps one testcase too
        message = getattr(report, "wasxfail", "") or (_first_line(report) if report.failed else "")
        self.results[report.nodeid] = (outcome, props.get("area", "other"),
                                       props.get("node", "cluster"), message)
        if outcome == "waived":
            self.waived[report.nodeid] = props[WAIVED]
        failure = props.get("failure", "")
        if failure.startswith("transient"):
            self.transient[report.nodeid] = failure.removeprefix("transient: ")
        elif failure == "persistent":
            self.persistent.add(report.nodeid)
        for statement in props.get("verifies", "").split():
            self.covered.setdefault(statement, []).append(report.nodeid.split("::")[-1])

    def counts(self) -> Counter:
        return Counter(outcome for outcome, *_ in self.results.values())

    def total(self) -> int | None:
        if self._total is None:
            self._total = whole_suite_count(self.inventory_path)
        return self._total

    def not_release_reasons(self, state: dict) -> list[str]:
        reasons = []
        if (state.get("binaries") or {}).get("standins"):
            reasons.append("this project's stand-ins ran, not the guide's binaries")
        unreadable = state.get("unreadable") or []
        if unreadable:
            reasons.append(f"{', '.join(unreadable)} could not be read")
        return reasons

    def verdict(self, state: dict | None = None) -> str:
        state = state or {}
        counts = self.counts()
        if not self.results:
            return "NO RESULT (nothing ran)"
        reasons = self.not_release_reasons(state)
        bad = counts["failed"] + counts["error"] + counts["xpassed"]
        if reasons:
            if bad:
                reasons.append(f"{bad} check{'s' if bad != 1 else ''} failed")
            return f"NOT A RELEASE VERDICT ({'; '.join(reasons)})"
        if bad:
            return "FAIL"
        if selection_of(self.config):
            return f"PARTIAL ({len(self.results)} of {self.total() or '?'} checks)"
        waived = counts["waived"]
        return f"PASS with {waived} waiver{'s' if waived != 1 else ''}" if waived else "PASS"

    def unexpected_passes(self) -> list[str]:
        """Advisories that passed: the guide's defect no longer shows on this install."""
        found = []
        for nodeid, (outcome, _, _, message) in self.results.items():
            if outcome == "xpassed":
                advisory = re.search(r"advisory ([\w-]+)", message)
                found.append(f"{nodeid.split('::')[-1]}"
                             + (f" (advisory {advisory.group(1)})" if advisory else ""))
        return found

    def unmatched_waivers(self) -> list:
        used = set(self.waived.values())
        return [w for w in self.waivers if w.check not in used]

    def as_json(self, state: dict) -> dict:
        return {
            "verdict": self.verdict(state), "run_id": state.get("run_id"),
            "inventory": state.get("inventory"), "provider": state.get("provider"),
            "selection": selection_of(self.config) or None,
            "counts": {o: self.counts()[o] for o in OUTCOMES},
            "checks": {nodeid: {"outcome": o, "area": area, "node": node, "message": msg}
                       for nodeid, (o, area, node, msg) in sorted(self.results.items())},
            "waivers": {"applied": self.waived,
                        "unmatched": [w.check for w in self.unmatched_waivers()]},
            "unexpected_passes": self.unexpected_passes(),
            "transient": self.transient, "persistent": sorted(self.persistent),
            "binaries": state.get("binaries") or {},
            "deviations": (state.get("bootstrap") or {}).get("deviations") or {},
            "node_versions": state.get("node_versions") or {},
            "durations": {"setup_s": round(self._setup_seconds(state), 1),
                          "run_s": round(time.time() - self.started, 1)},
        }

    def markdown(self, state: dict) -> str:
        counts = self.counts()
        lines = [f"# Conformance sign-off: {self.verdict(state)}", "",
                 f"- inventory: `{state.get('inventory', '?')}` (provider {state.get('provider', '?')}),"
                 f" run {state.get('run_id', '?')}",
                 *binaries_lines(state.get("binaries") or {}),
                 *deviation_lines((state.get("bootstrap") or {}).get("deviations") or {}),
                 "- totals: " + ", ".join(f"{counts[o]} {o}" for o in OUTCOMES), ""]
        if selection_of(self.config):
            lines += [f"- narrowed by: {selection_of(self.config)}", ""]
        lines += self._table("Area", 1) + [""] + self._table("Node", 2) + [""]
        advisories = [(nodeid, msg) for nodeid, (o, _, _, msg) in self.results.items() if o == "xfailed"]
        lines += ["## Advisories (known defects of the guide)", ""]
        lines += [f"- `{nodeid.split('::')[-1]}`: {msg}" for nodeid, msg in advisories] or ["- none"]
        unexpected = self.unexpected_passes()
        if unexpected:
            lines += ["", "Advisories that passed unexpectedly (the guide's defect no longer "
                          "shows: review and update the suite):"]
            lines += [f"- {name}" for name in unexpected]
        if self.waivers:
            lines += ["", "## Waivers", ""]
            lines += [f"- `{nodeid.split('::')[-1]}` waived: {self.results[nodeid][3]}"
                      for nodeid in self.waived] or ["- no failure was waived"]
            lines += [f"- waiver `{w.check}` matched nothing ({w.owner}, until {w.expires})"
                      for w in self.unmatched_waivers()]
        failures = [(nodeid, msg + (" (persistent: failed again on a second reading)"
                                    if nodeid in self.persistent else ""))
                    for nodeid, (o, _, _, msg) in self.results.items() if o in ("failed", "error")]
        if failures:
            lines += ["", "## Failures", ""] + self._grouped(failures)
        if self.transient:
            lines += ["", "## Transient failures (passed on a second reading of the node)", ""]
            lines += [f"- `{nodeid.split('::')[-1]}`: first reading: {msg}"
                      for nodeid, msg in self.transient.items()]
        lines += ["", "## Durations", ""] + self._durations(state)
        return "\n".join(lines) + "\n"
    @staticmethod
    def _grouped(failures: list[tuple[str, str]]) -> list[str]:
        """One line per distinct message, so a broken set-up is one line, not hundreds."""
        by_message: dict[str, list[str]] = defaultdict(list)
        for nodeid, message in failures:
            by_message[message].append(nodeid.split("@")[0])
        lines = []
        for message, nodeids in by_message.items():
            if len(nodeids) == 1:
                lines.append(f"- `{nodeids[0]}`: {message}")
            else:
                lines.append(f"- {len(nodeids)} checks: {message} (first: `{nodeids[0]}`)")
        return lines

    def _table(self, title: str, column: int) -> list[str]:
        by_key: dict[str, Counter] = defaultdict(Counter)
        for values in self.results.values():
            by_key[values[column]][values[0]] += 1
        rows = [f"| {title} | passed | failed | errors | advisories | waived | verdict |",
                "|---|---|---|---|---|---|---|"]
        for key in sorted(by_key):
            c = by_key[key]
            bad = c["failed"] + c["error"] + c["xpassed"]
            rows.append(f"| {key} | {c['passed']} | {c['failed'] + c['xpassed']} | {c['error']} | "
                        f"{c['xfailed']} | {c['waived']} | {'FAIL' if bad else 'pass'} |")
        return rows

    @staticmethod
    def _setup_seconds(state: dict) -> float:
        steps = state.get("steps") or []
        setup = sum(s.get("seconds", 0) for s in steps if not s.get("node"))
        return setup + sum(max((s.get("seconds", 0) for s in steps if s["name"] == name),
                               default=0)
                           for name in {s["name"] for s in steps if s.get("node")})

    def _durations(self, state: dict) -> list[str]:
        return [f"- set-up (provisioning and bootstrap): {self._setup_seconds(state):.1f} s",
                f"- whole run: {time.time() - self.started:.1f} s"]

    def write(self, state: dict, path: Path = SUMMARY) -> str:
        """summary.md (returned) and summary.json beside it."""
        from helpers.reporting import redact
        text = redact(self.markdown(state))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        path.with_suffix(".json").write_text(
            redact(json.dumps(self.as_json(state), indent=2, default=str)) + "\n")
        path.with_name("traceability.md").write_text(trace.markdown(self.covered))
        return text


def binaries_lines(binaries: dict) -> list[str]:
    """Which binaries ran: where from, each one's version and sha256, the patches."""
    if not binaries:
        return ["- binaries: not shipped by this run (--no-bootstrap): whatever /opt/bin holds"]
    kind = ("this project's STAND-INS (not a release verdict)" if binaries.get("standins")
            else "the guide's real binaries")
    lines = [f"- binaries: {kind}, {binaries.get('origin', '?')}"]
    if binaries.get("fallback"):
        lines.append(f"  - fell back to the stand-ins: {binaries['fallback']}")
    for name, info in sorted((binaries.get("binaries") or {}).items()):
        lines.append(f"  - `{name}` {info.get('version') or '?'}, sha256 "
                     f"`{info.get('sha256', '?')}`")
    for name, source in sorted((binaries.get("sources") or {}).items()):
        lines.append(f"  - source {name} {source.get('version')}: tree sha256 "
                     f"`{source.get('tree_sha256')}` from {source.get('from')}")
    if binaries.get("go"):
        lines.append(f"  - built with {binaries['go']}")
    lines += [f"  - patch `{patch}`" for patch in binaries.get("patches") or []]
    return lines


def deviation_lines(deviations: dict) -> list[str]:
    """The declared deviations from the guide, as the report lists them."""
    if not deviations:
        return ["- deviations from the guide: none"]
    lines = ["- deviations from the guide (declared in the inventory, applied by the bootstrap):"]
    for name, (guide, applied) in sorted(deviations.items()):
        lines.append(f"  - `{name}`: guide {guide!r}; applied {applied!r}")
    return lines

