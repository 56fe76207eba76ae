"""How a check fails: expected vs found, on which node, with the evidence attached.

The evidence goes to the Allure report as attachments and, shortened, into the
assertion message so that the terminal shows it too.
"""
from __future__ import annotations

import re

import pytest

from helpers.node_facts import FactsError, NodeFacts
from helpers.reporting import attach, redact

EVIDENCE_LINES = 25
LINE_CHARS = 300
# what differs between two reports of the same event: the journal's monotonic stamp, glog's
# `I1203 07:21:59.325810    108 ` prefix, a pid in brackets
_STAMPS = re.compile(r"^\[\s*[0-9.]+\]\s+|\b[IWEF]\d{4} [0-9:.]+\s+\d+ |\[\d+\]")


class CheckFailed(AssertionError):
    pass


def condense(text: str) -> str:
    """Evidence a person can read: each event once (its last time, with how often it came),
    the last EVIDENCE_LINES of them, each line cut at LINE_CHARS. The report's attachment
    keeps the full text."""
    last: dict[str, tuple[int, str]] = {}
    seen: dict[str, int] = {}
    lines = text.strip().splitlines()
    for index, line in enumerate(lines):
        key = _STAMPS.sub("", line).strip()
        seen[key] = seen.get(key, 0) + 1
        last[key] = (index, line)
    kept = [(line if seen[key] == 1 else f"{line}  (x{seen[key]})")
            for key, (_, line) in sorted(last.items(), key=lambda item: item[1][0])]
    dropped = len(kept) - EVIDENCE_LINES
    kept = ([f"(... {dropped} earlier lines: see the report's attachment)"] if dropped > 0
            else []) + kept[-EVIDENCE_LINES:]
    cut = [line if len(line) <= LINE_CHARS else line[:LINE_CHARS] + " ..." for line in kept]
    return "\n".join(("    " + line) for line in cut) or "    (empty)"


def expect(ok: bool, node: str, what: str, *, expected, found, evidence: dict | None = None):
    """Fail, naming node, claim, expected and found, unless `ok`."""
    if ok:
        return
    evidence = evidence or {}
    for name, text in evidence.items():
        attach(f"{node}: {name}", text)
    lines = [f"{node}: {what}", f"  expected: {expected}", f"  found:    {found}"]
    for name, text in evidence.items():
        lines += [f"  evidence ({name}):", condense(text)]
    raise CheckFailed(redact("\n".join(lines)))


def unit_evidence(facts: NodeFacts, unit: str) -> dict:
    """The unit file and its journal since boot: what proves a unit check."""
    return {f"{unit} file": facts.unit_file(unit) or "(no such file)",
            f"journalctl -b -u {unit}": facts.journal(unit)}


def dropped_there(cluster_facts, name: str, section: str) -> str:
    """What the receiving node's FORWARD policy dropped while the pings ran, if anything:
    a ping that fails is usually dropped where it arrives."""
    other = cluster_facts.readable().get(name)
    policy, dropped = other.dropped_during_pings(section) if other else ("", -1)
    return f"; there, FORWARD policy {policy} dropped {dropped} packets" if dropped > 0 else ""


def readable(function, *args):
    """Call a facts parser; a garbled node answer fails the check instead of erroring."""
    try:
        return function(*args)
    except FactsError as exc:
        pytest.fail(str(exc), pytrace=False)


def guide_section(feature: str, severity: str, story: str = "") -> list:
    """Allure labels that place a suite in the guide: epic, feature, severity, link."""
    import allure

    from helpers import spec
    marks = [allure.epic("Kubernetes on CoreOS (the guide)"), allure.feature(feature),
             allure.severity(severity), allure.link(spec.GUIDE_URL, name="the guide")]
    if story:
        marks.append(allure.story(story))
    return marks
