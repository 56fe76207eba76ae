"""The sign-off summary: a verdict, pass/fail per area and per node, the advisories, and
the durations, printed at the end of the run and written to reports/summary.md.

It counts the same reports the JUnit file is written from (one per test, in the
controller under xdist), so the two always agree.
"""
from __future__ import annotations

import time
from collections import Counter, defaultdict
from pathlib import Path

from helpers.paths import REPORTS

SUMMARY = REPORTS / "summary.md"
OUTCOMES = ("passed", "failed", "error", "skipped", "xfailed", "xpassed")


def outcome_of(report) -> str | None:
    """One outcome per test, as JUnit counts it; None for phases that add nothing."""
    if report.when == "call":
        if hasattr(report, "wasxfail"):
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


class SignOff:
    def __init__(self):
        self.started = time.time()
        self.results: dict[str, tuple[str, str, str, str]] = {}  # nodeid -> outcome, area, node, msg

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

    def counts(self) -> Counter:
        return Counter(outcome for outcome, *_ in self.results.values())

    def verdict(self, state: dict | None = None) -> str:
        counts = self.counts()
        if not self.results:
            return "NO RESULT (nothing ran)"
        if counts["failed"] or counts["error"] or counts["xpassed"]:
            return "FAIL"
        binaries = (state or {}).get("binaries") or {}
        if binaries.get("standins"):
            return "NOT A RELEASE VERDICT (this project's stand-ins ran, not the guide's binaries)"
        return "PASS"

    def markdown(self, state: dict) -> str:
        counts = self.counts()
        lines = [f"# Conformance sign-off: {self.verdict(state)}", "",
                 f"- inventory: `{state.get('inventory', '?')}` (provider {state.get('provider', '?')}),"
                 f" run {state.get('run_id', '?')}",
                 *binaries_lines(state.get("binaries") or {}),
                 *deviation_lines((state.get("bootstrap") or {}).get("deviations") or {}),
                 "- totals: " + ", ".join(f"{counts[o]} {o}" for o in OUTCOMES), ""]
        lines += self._table("Area", 1) + [""] + self._table("Node", 2) + [""]
        advisories = [(nodeid, msg) for nodeid, (o, _, _, msg) in self.results.items() if o == "xfailed"]
        fixed = [nodeid for nodeid, (o, *_) in self.results.items() if o == "xpassed"]
        lines += ["## Advisories (known defects of the guide)", ""]
        lines += [f"- `{nodeid.split('::')[-1]}`: {msg}" for nodeid, msg in advisories] or ["- none"]
        if fixed:
            lines += ["", "Advisories that no longer apply (the install changed):"]
            lines += [f"- `{nodeid}`" for nodeid in fixed]
        failures = [(nodeid, msg) for nodeid, (o, _, _, msg) in self.results.items()
                    if o in ("failed", "error")]
        if failures:
            lines += ["", "## Failures", ""] + self._grouped(failures)
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
        rows = [f"| {title} | passed | failed | errors | advisories | verdict |",
                "|---|---|---|---|---|---|"]
        for key in sorted(by_key):
            c = by_key[key]
            bad = c["failed"] + c["error"] + c["xpassed"]
            rows.append(f"| {key} | {c['passed']} | {c['failed'] + c['xpassed']} | {c['error']} | "
                        f"{c['xfailed']} | {'FAIL' if bad else 'pass'} |")
        return rows

    def _durations(self, state: dict) -> list[str]:
        steps = state.get("steps") or []
        setup = sum(s.get("seconds", 0) for s in steps if not s.get("node"))
        setup += sum(max((s.get("seconds", 0) for s in steps if s["name"] == name), default=0)
                     for name in {s["name"] for s in steps if s.get("node")})
        total = time.time() - self.started
        return [f"- set-up (provisioning and bootstrap): {setup:.1f} s",
                f"- whole run: {total:.1f} s"]

    def write(self, state: dict, path: Path = SUMMARY) -> str:
        text = self.markdown(state)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
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

