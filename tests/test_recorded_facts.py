"""The check logic, proven in seconds without a cluster or root: the facts that live runs on
the guide's real binaries gathered (the fault catalogue's healthy cluster and each round
of its faults, tests/data/recorded/) are judged again by the suites as they are now, and
must give exactly the verdicts those live runs gave.

The live catalogue (tests/e2e/test_fault_catalogue.py) is the proof that the recordings
are true: it replays each of its runs the same way and compares with the recording."""
from __future__ import annotations

import ast
import json

import pytest

from tests.support import recordings

NAMES = recordings.names()


def test_there_are_recordings_of_a_healthy_run_and_of_faults():
    assert recordings.HEALTHY in NAMES and len(NAMES) >= 10, NAMES


@pytest.mark.parametrize("name", NAMES)
def test_a_recording_is_judged_as_its_live_run_was(name, tmp_path):
    wanted = recordings.recorded_verdicts(recordings.RECORDED, name)
    found = recordings.replay(recordings.materialize(recordings.RECORDED, name, tmp_path))
    assert recordings.differences(wanted, found) == []


def test_a_changed_answer_changes_the_verdict(tmp_path):
    """The replay judges the facts, not the recorded verdicts: an emptied subnet.env on one
    node fails that node's subnet.env check and no other node's."""
    here = recordings.materialize(recordings.RECORDED, recordings.HEALTHY, tmp_path)
    facts = json.loads((here / "facts.json").read_text())
    facts["coreos-2"]["text"]["subnet_env"] = ""
    (here / "facts.json").write_text(json.dumps(facts))
    found = recordings.replay(here)
    failing = sorted(c for c, v in found.items() if v == "failed" and "subnet_env" in c)
    assert failing == ["test_subnet_env_exists_and_parses[coreos-2]"]


def _check_functions() -> set[str]:
    return {node.name for path in (recordings.ROOT / "suites").glob("test_*.py")
            for node in ast.parse(path.read_text()).body
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_")}


def _outcomes(verdicts: dict[str, str], check: str) -> set[str]:
    """The outcomes of every parametrization of one check function."""
    return {v for name, v in verdicts.items() if name.partition("[")[0] == check}


def test_every_check_is_recorded_healthy_and_failing():
    """Healthy: as a healthy cluster has it (passed; an advisory, its strict expected
    failure). Failing: failed in the recording of at least one round of faults."""
    verdicts = {n: recordings.recorded_verdicts(recordings.RECORDED, n) for n in NAMES}
    healthy = verdicts.pop(recordings.HEALTHY)
    not_healthy = [c for c in sorted(_check_functions())
                   if not _outcomes(healthy, c) or not _outcomes(healthy, c) <= {"passed", "xfailed"}]
    never_failing = [c for c in sorted(_check_functions())
                     if not any("failed" in _outcomes(v, c) for v in verdicts.values())]
    assert (not_healthy, never_failing) == ([], [])
