"""Recorded facts of real runs, kept as test data (tests/data/recorded/), and their replay.

The fault catalogue (tests/e2e/test_fault_catalogue.py) captures what each of its live
runs gathered, on the guide's real binaries: the healthy cluster, and each round of
faults. A recording is small because a round keeps only what differs from the healthy
one:

    healthy/    inventory.yaml, state.json, facts.json, verdicts.json
    <faults>/   facts.json    the sections (per node) whose answer differs from healthy's
                state.json    the keys of the run's state that differ
                inventory.yaml  only when the round ran with its own
                verdicts.json {check: outcome} as the live run's JUnit report gave them,
                              where they differ from healthy's (all of them for healthy)

`materialize` rebuilds a round's whole state and facts; `replay` judges them with
`pytest suites -p tests.support.replay` and returns the verdicts.
"""
from __future__ import annotations

import copy
import difflib
import json
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RECORDED = ROOT / "tests" / "data" / "recorded"
HEALTHY = "healthy"
# what differs in every run and no check reads: left out, so a diff shows the fault
VOLATILE_STATE = ("run_id", "started", "finished", "timings", "steps", "log")
# sections no verdict reads (a failing check's evidence only) that differ in every run: a
# round keeps the healthy run's, and its replayed evidence shows that one
EVIDENCE_ONLY = ("journal",)


def verdicts(junit: Path) -> dict[str, str]:
    """{check name as JUnit gives it: passed, failed, error, xfailed or skipped}."""
    found = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        outcome = "passed"
        for child in case:
            if child.tag in ("failure", "error"):
                outcome = "failed" if child.tag == "failure" else "error"
            elif child.tag == "skipped":
                outcome = "xfailed" if child.get("type") == "pytest.xfail" else "skipped"
        found[case.get("name", "")] = outcome
    return dict(sorted(found.items()))


def unlike_the_embedded_cluster(junit: Path) -> dict[str, tuple[str | None, str | None]]:
    """{check: (its verdict in `junit`, the embedded cluster's)} where they differ; the
    embedded cluster's are its healthy live run's on the real binaries, as recorded."""
    found = verdicts(junit)
    embedded = _read(RECORDED / HEALTHY / "verdicts.json")
    return {name: (found.get(name), embedded.get(name)) for name in sorted({*found, *embedded})
            if found.get(name) != embedded.get(name)}


def _read(path: Path):
    return json.loads(path.read_text())


def _write(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")


def facts_diff(healthy: dict, facts: dict) -> dict:
    """Per node, the sections whose answer differs from the healthy run's (but those in
    EVIDENCE_ONLY): the changed lines of its text (`lines`, see text_diff) and its rc; a
    section gone is None, and a node that could not be read keeps its whole entry."""
    diff: dict = {}
    for name, entry in facts.items():
        base = healthy.get(name, {})
        if "error" in entry or "error" in base:
            if entry != base:
                diff[name] = entry
            continue
        sections = {}
        for s in sorted((set(entry["text"]) | set(base.get("text", {}))) - set(EVIDENCE_ONLY)):
            text, old = entry["text"].get(s), base["text"].get(s)
            if (text, entry["rc"].get(s)) == (old, base["rc"].get(s)):
                continue
            sections[s] = {"rc": entry["rc"].get(s), "text": text} if text is None or old is None \
                else {"rc": entry["rc"].get(s), "lines": text_diff(old, text)}
        if sections:
            diff[name] = sections
    return diff


def text_diff(old: str, new: str) -> list[dict]:
    """The changed runs of lines, first to last: at line `at` of the old text, `drop`
    lines are replaced by `put`. Readable, and a fraction of the section's size."""
    a, b = old.split("\n"), new.split("\n")
    return [{"at": i1, "drop": i2 - i1, "put": b[j1:j2]}
            for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False)
            .get_opcodes() if tag != "equal"]


def apply_text_diff(old: str, changes: list[dict]) -> str:
    lines = old.split("\n")
    for change in reversed(changes):
        lines[change["at"]:change["at"] + change["drop"]] = change["put"]
    return "\n".join(lines)


def apply_diff(healthy: dict, diff: dict) -> dict:
    facts = copy.deepcopy(healthy)
    for name, change in diff.items():
        if "error" in change or "error" in facts.get(name, {}):
            facts[name] = change
            continue
        texts, rcs = facts[name]["text"], facts[name]["rc"]
        for section, answer in change.items():
            text = apply_text_diff(texts[section], answer["lines"]) if "lines" in answer \
                else answer["text"]
            for values, value in ((texts, text), (rcs, answer["rc"])):
                if value is None:
                    values.pop(section, None)
                else:
                    values[section] = value
    return facts


def state_diff(healthy: dict, state: dict) -> dict:
    return {k: v for k, v in state.items()
            if k not in VOLATILE_STATE and healthy.get(k) != v}


def save(dest: Path, name: str, run: Path, inventory: Path, junit: Path) -> None:
    """Write the recording `name` from a live run's reports/cluster (state.json, facts.json),
    its inventory and its JUnit report; a round's is kept as its differences from the
    healthy recording in `dest`."""
    here = dest / name
    shutil.rmtree(here, ignore_errors=True)
    state, facts = _read(run / "state.json"), _read(run / "facts.json")
    if name == HEALTHY:
        _write(here / "state.json", {k: v for k, v in state.items() if k not in VOLATILE_STATE})
        _write(here / "facts.json", facts)
        shutil.copy(inventory, here / "inventory.yaml")
    else:
        healthy = dest / HEALTHY
        _write(here / "state.json", state_diff(_read(healthy / "state.json"), state))
        _write(here / "facts.json", facts_diff(_read(healthy / "facts.json"), facts))
        if inventory.read_text() != (healthy / "inventory.yaml").read_text():
            shutil.copy(inventory, here / "inventory.yaml")
    found = verdicts(junit)
    if name != HEALTHY:   # a round keeps what its faults changed: what a reader looks for
        usual = recorded_verdicts(dest, HEALTHY)
        found = {c: v for c, v in found.items() if usual.get(c) != v} | \
                {c: "absent" for c in usual if c not in found}
    _write(here / "verdicts.json", found)


def recorded_verdicts(recorded: Path, name: str) -> dict[str, str]:
    """The recording's verdict on every check: a round's are healthy's, but where it
    differs."""
    found = _read(recorded / name / "verdicts.json")
    if name != HEALTHY:
        found = {**_read(recorded / HEALTHY / "verdicts.json"), **found}
    return dict(sorted((c, v) for c, v in found.items() if v != "absent"))


def materialize(recorded: Path, name: str, into: Path) -> Path:
    """The recording's whole state, facts and inventory in `into`, ready to replay."""
    healthy = recorded / HEALTHY
    state, facts = _read(healthy / "state.json"), _read(healthy / "facts.json")
    inventory = healthy / "inventory.yaml"
    if name != HEALTHY:
        state = {**state, **_read(recorded / name / "state.json")}
        facts = apply_diff(facts, _read(recorded / name / "facts.json"))
        if (recorded / name / "inventory.yaml").exists():
            inventory = recorded / name / "inventory.yaml"
    into.mkdir(parents=True, exist_ok=True)
    _write(into / "state.json", state)
    _write(into / "facts.json", facts)
    shutil.copy(inventory, into / "inventory.yaml")
    return into


def replay(recording: Path, timeout: float = 120) -> dict[str, str]:
    """Judge a materialized recording with the suites as they are now: its verdicts."""
    junit = recording / "replay.xml"
    env = {**os.environ, "K8SCONF_REPORTS": str(recording / "reports")}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "suites", "--inventory",
         str(recording / "inventory.yaml"), "-p", "tests.support.replay", "--replay",
         str(recording), "-p", "no:cacheprovider", "-p", "no:randomly", "-q",
         "--junitxml", str(junit)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout,
        stdin=subprocess.DEVNULL)
    if not junit.exists():
        raise RuntimeError(f"the replay of {recording} wrote no JUnit report (rc "
                           f"{proc.returncode}): {(proc.stdout + proc.stderr)[-2000:]}")
    return verdicts(junit)


def differences(wanted: dict[str, str], found: dict[str, str]) -> list[str]:
    return [f"{check}: {wanted.get(check, 'absent')} -> {found.get(check, 'absent')}"
            for check in sorted(set(wanted) | set(found))
            if wanted.get(check) != found.get(check)]


def names() -> list[str]:
    return sorted(p.name for p in RECORDED.iterdir() if (p / "verdicts.json").exists()) \
        if RECORDED.is_dir() else []
