"""helpers/spec.py against the guide: GUIDE-SPEC.md's unit table and the source's unit files."""
import os
import re
from pathlib import Path

import pytest

from helpers import spec
from helpers.bootstrap.units import render

# shared/ lies beside the checkout (in CI too); K8SCONF_GUIDE_DIR points elsewhere.
GUIDE = Path(os.environ.get("K8SCONF_GUIDE_DIR",
                            Path(__file__).resolve().parents[2] / "shared" / "guide"))
SPEC_MD = GUIDE / "GUIDE-SPEC.md"
SOURCE = GUIDE / "000_032054a88891eadc.txt"

TOPOLOGY_IPS = ["10.120.0.1", "10.120.0.2", "10.120.0.3"]


def table_rows() -> dict[str, dict]:
    rows = {}
    for line in SPEC_MD.read_text().splitlines():
        match = re.match(r"\| (\S+) \((master|all)\) \| (.*?) \| (.*?) \| (.*?) \| (.*) \|$", line)
        if not match:
            continue
        name, roles, after, wants, requires, notable = match.groups()
        deps = lambda cell: tuple(f"{d.strip()}.service" for d in cell.split(",")
                                  if d.strip() not in ("–", "-", ""))
        rows[f"{name}.service"] = {"roles": roles, "after": deps(after), "wants": deps(wants),
                                   "requires": deps(requires), "notable": notable}
    return rows


def test_the_table_has_the_seven_units():
    assert set(table_rows()) == {u.name for u in spec.UNITS}
    assert len(spec.UNITS) == 7


@pytest.mark.parametrize("unit", spec.UNITS, ids=lambda u: u.short)
def test_unit_matches_the_table(unit):
    row = table_rows()[unit.name]
    assert unit.after == row["after"]
    assert unit.wants == row["wants"]
    assert unit.requires == row["requires"]
    assert unit.roles == (spec.MASTER_ONLY if row["roles"] == "master" else spec.EVERY_ROLE)
    assert (unit.restart, unit.restart_sec, unit.wanted_by) == ("on-failure", 5, "multi-user.target")
    line = unit.exec_start.line(spec.render_values({}, machines=TOPOLOGY_IPS))
    for word in line.split():
        flag = word.split("=")[0]
        assert flag.split("/")[-1] in row["notable"], f"{word} not in GUIDE-SPEC.md for {unit.name}"


def test_every_unit_restart_line_is_stated():
    text = SPEC_MD.read_text()
    assert "every unit: `Restart=on-failure`, `RestartSec=5`, `[Install] WantedBy=multi-user.target`" in text


def source_units() -> dict[str, str]:
    """The last (complete) version of each unit file the source shows, continuations joined."""
    text = SOURCE.read_text()
    blocks = re.findall(r"(\[Unit\]\n(?:(?!\[Unit\]).)*?\[Install\]\nWantedBy=multi-user.target)", text, re.S)
    units = {}
    for block in blocks:
        joined = re.sub(r" \\\n", " ", block)
        description = re.search(r"Description=(.*)", joined).group(1)
        units[description] = joined
    return units


def directive_lines(text: str) -> list[str]:
    return sorted(l.strip() for l in text.splitlines() if "=" in l and not l.startswith("#"))


@pytest.mark.parametrize("unit", spec.UNITS, ids=lambda u: u.short)
def test_rendered_unit_equals_the_source_file(unit):
    """With the guide's own values, our rendering is the source's file, line for line,
    except the text the translation lost (the -machines list)."""
    values = spec.render_values({}, machines=TOPOLOGY_IPS)
    ours = directive_lines(render(unit, values))
    theirs = directive_lines(source_units()[unit.description])
    if unit.name == "controller-manager.service":
        theirs = [l.replace("-machines=,,", "-machines=" + ",".join(TOPOLOGY_IPS)) for l in theirs]
    assert ours == theirs
