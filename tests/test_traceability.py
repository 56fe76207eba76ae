"""Every check names the guide statements it verifies (docs/guide.md's ids), and the
traceability table names the statements that no check covers."""
import ast

import pytest

from helpers import trace
from helpers.inventory import ROOT


def declared() -> dict[str, list[str]]:
    """{check function: the ids of its @verifies(...)} read from suites/ without importing."""
    found: dict[str, list[str]] = {}
    for path in sorted((ROOT / "suites").glob("test_*.py")):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_"):
                found[node.name] = [ast.literal_eval(arg) for d in node.decorator_list
                                    if isinstance(d, ast.Call) and getattr(d.func, "id", "") == "verifies"
                                    for arg in d.args]
    return found


def test_every_check_names_the_statements_it_verifies():
    checks = declared()
    assert len(checks) >= 40
    assert [name for name, ids in checks.items() if not ids] == []
    known = trace.statements()
    unknown = {name: [i for i in ids if i not in known] for name, ids in checks.items()}
    assert {name: ids for name, ids in unknown.items() if ids} == {}


def test_the_statements_are_read_from_our_guide():
    known = trace.statements()
    assert len(known) >= 60 and "G-SHOW-7" in known and "G-DEFECT-1" in known
    assert "127.0.0.1:8080" in known["G-SHOW-7"]


def test_an_unknown_statement_is_refused():
    with pytest.raises(ValueError, match="G-NOPE-1"):
        trace.verifies("G-NOPE-1")
    with pytest.raises(ValueError, match="no id given"):
        trace.verifies()


def test_the_table_names_what_no_check_covers():
    covered: dict[str, list[str]] = {}
    for name, ids in declared().items():
        for sid in ids:
            covered.setdefault(sid, []).append(name)
    text = trace.markdown(covered)
    uncovered = text.split("## Statements no check of this run covers", 1)[1]
    assert "G-SHOW-7" not in uncovered and "G-UNIT-9" in uncovered   # descriptions: not checked
    assert "| G-SHOW-7 |" in text and "`test_api_server_answers_on_loopback`" in text
    assert "**none**" in text
    nothing = trace.markdown({})
    assert f"({len(trace.statements())})" in nothing
