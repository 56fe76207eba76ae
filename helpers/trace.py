"""Traceability: which guide statement each check verifies, and which no check covers.

The statements are docs/guide.md's, each with a stable id (`G-SHOW-7`). A check names the
ones it verifies with `@verifies(...)`; the plugin carries them to the report (a
`guide` label per statement in Allure) and the sign-off writes traceability.md: every
statement, the checks of this run that cover it, and the statements no check covers.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

GUIDE_DOC = Path(__file__).resolve().parent.parent / "docs" / "guide.md"
MARK = "verifies"
_ROW = re.compile(r"^\| (G-[A-Z]+-\d+) \|(.*)\|\s*$")


def statements() -> dict[str, str]:
    """{id: the statement, in our words} from docs/guide.md's tables."""
    found = {}
    for line in GUIDE_DOC.read_text().splitlines():
        row = _ROW.match(line)
        if row:
            cells = [c.strip() for c in row.group(2).split("|")]
            found[row.group(1)] = " | ".join(c for c in cells if c)
    return found


def verifies(*ids: str):
    """The guide statements a check verifies; an unknown id is an error at import."""
    unknown = [i for i in ids if i not in statements()]
    if unknown or not ids:
        raise ValueError(f"verifies({', '.join(ids)}): not in {GUIDE_DOC.name}: "
                         f"{', '.join(unknown) or 'no id given'}")
    return pytest.mark.verifies(*ids)


def ids_of(item) -> tuple[str, ...]:
    return tuple(i for mark in item.iter_markers(MARK) for i in mark.args)


def markdown(covered: dict[str, list[str]]) -> str:
    """{statement id: check names}: the table, then the statements nothing covers."""
    known = statements()
    lines = ["# Traceability: the guide's statements and the checks that verify them", "",
             f"Statements from `docs/guide.md`; checks of this run. {len(known)} statements, "
             f"{sum(1 for i in known if covered.get(i))} covered.", "",
             "| statement | the guide says | checks |", "|---|---|---|"]
    for sid, text in known.items():
        checks = sorted(set(covered.get(sid, [])))
        shown = ", ".join(f"`{c}`" for c in checks[:4]) + (f" and {len(checks) - 4} more"
                                                            if len(checks) > 4 else "")
        lines.append(f"| {sid} | {text[:120]}{'...' if len(text) > 120 else ''} | "
                     f"{shown or '**none**'} |")
    uncovered = [sid for sid in known if not covered.get(sid)]
    lines += ["", f"## Statements no check of this run covers ({len(uncovered)})", ""]
    lines += [f"- {sid}: {known[sid][:160]}" for sid in uncovered] or ["- none"]
    return "\n".join(lines) + "\n"
