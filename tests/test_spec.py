"""helpers/spec.py against the guide's own unit files in tests/data/guide (docs/guide.md).

Everything read here lies in the repository: tests/data/guide/units/ holds the seven
units exactly as the guide prints them, tests/data/guide/topology.json its example
cluster. Rendering a unit from the spec with the guide's own values (the defaults, the
topology's private IPs as machines, no deviations) must give a file equivalent to the
guide's: the same directives, with After/Wants/Requires compared as sets and command
lines compared once continuations are joined and whitespace is normalized.
"""
import json
import re
from pathlib import Path

import pytest

from helpers import spec
from helpers.bootstrap.units import render

DATA = Path(__file__).resolve().parent / "data" / "guide"
UNIT_DIR = DATA / "units"
TOPOLOGY = json.loads((DATA / "topology.json").read_text())
MACHINES = [node["private_ipv4"] for node in TOPOLOGY["nodes"]]

# G-LOST-1: the translation stripped the IPs from the controller manager's list and
# left their separators; the guide's file keeps that text as printed.
MACHINES_FLAG = "-machines="
STRIPPED_MACHINES = ",".join("" for _ in MACHINES)

# The directives the guide's files use, and so the ones the comparison covers.
COMPARED = {
    ("Unit", "Description"), ("Unit", "After"), ("Unit", "Wants"), ("Unit", "Requires"),
    ("Service", "EnvironmentFile"), ("Service", "ExecStartPre"), ("Service", "ExecStart"),
    ("Service", "ExecStartPost"), ("Service", "Restart"), ("Service", "RestartSec"),
    ("Install", "WantedBy"),
}
AS_SETS = frozenset(spec.DEPENDENCY_DIRECTIVES)   # After, Wants, Requires

GUIDE_DOCKER_LINE = "/usr/bin/docker -d -s=btrfs -H fd:// --bip=${FLANNEL_SUBNET} --mtu=${FLANNEL_MTU}"


def guide_text(unit: spec.Unit) -> str:
    return (UNIT_DIR / unit.name).read_text()


def guide_values() -> dict:
    """The guide's own values: defaults, its topology as machines, no deviations."""
    return spec.render_values({}, machines=MACHINES, deviations=None)


def parse_unit(text: str) -> dict[tuple[str, str], list[str]]:
    """{(section, directive): values in file order}. Backslash continuations are joined
    and runs of whitespace become one space, as systemd reads them."""
    directives: dict[tuple[str, str], list[str]] = {}
    section = None
    for raw in re.sub(r"\\\n", " ", text).splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        header = re.fullmatch(r"\[(\w+)\]", line)
        if header:
            section = header.group(1)
            continue
        key, sep, value = line.partition("=")
        if not sep or section is None:
            raise ValueError(f"not a unit file line: {raw!r}")
        directives.setdefault((section, key.strip()), []).append(" ".join(value.split()))
    return directives


def _machines_as_placeholder(directives: dict, expected: str, side: str,
                             problems: list[str]) -> dict:
    """Swap the value of -machines= on ExecStart for a placeholder, after checking that it
    is `expected` (the inventory's list for our rendering, the stripped text for the guide)."""
    lines = []
    for line in directives.get(("Service", "ExecStart"), []):
        words = []
        for word in line.split(" "):
            if word.startswith(MACHINES_FLAG):
                value = word.removeprefix(MACHINES_FLAG)
                if value != expected:
                    problems.append(f"{side}: {MACHINES_FLAG}{value}, expected "
                                    f"{MACHINES_FLAG}{expected}")
                word = MACHINES_FLAG + "<machines>"
            words.append(word)
        lines.append(" ".join(words))
    if lines:
        directives = {**directives, ("Service", "ExecStart"): lines}
    return directives


def unit_differences(ours: str, guides: str, machines: list[str] = MACHINES) -> list[str]:
    """How our unit file and the guide's disagree, one message per difference; [] when
    they are equivalent. The -machines= list is the one value compared against its
    placeholder: ours must be `machines`, the guide's the stripped `,,` (G-LOST-1)."""
    problems: list[str] = []
    a = _machines_as_placeholder(parse_unit(ours), ",".join(machines), "ours", problems)
    b = _machines_as_placeholder(parse_unit(guides), STRIPPED_MACHINES, "guide", problems)
    for section, key in sorted(a.keys() | b.keys()):
        mine, theirs = a.get((section, key), []), b.get((section, key), [])
        same = set(mine) == set(theirs) if key in AS_SETS else mine == theirs
        if not same:
            problems.append(f"[{section}] {key}: ours {mine} vs the guide's {theirs}")
    return problems


# --- the data itself -------------------------------------------------------------------

def test_the_guide_has_the_seven_unit_files():
    assert len(spec.UNITS) == 7
    assert sorted(p.name for p in UNIT_DIR.iterdir()) == sorted(u.name for u in spec.UNITS)


def test_the_topology_is_the_guides():
    """G-TOPO-1/2: three nodes, coreos-1 the master, private IPs 10.120.0.1-3."""
    nodes = TOPOLOGY["nodes"]
    assert [n["hostname"] for n in nodes] == ["coreos-1", "coreos-2", "coreos-3"]
    assert MACHINES == ["10.120.0.1", "10.120.0.2", "10.120.0.3"]
    assert [n["role"] for n in nodes] == [spec.MASTER, spec.MINION, spec.MINION]
    placed = TOPOLOGY["units"]["master_only"] + TOPOLOGY["units"]["every_node"]
    assert sorted(placed) == sorted(u.name for u in spec.UNITS)


@pytest.mark.parametrize("unit", spec.UNITS, ids=lambda u: u.short)
def test_the_guides_file_is_complete(unit):
    """G-UNIT-13: the last, complete version of each unit: all three sections, in order,
    and only directives the comparison covers."""
    text = guide_text(unit)
    assert re.findall(r"^\[(\w+)\]$", text, re.M) == ["Unit", "Service", "Install"]
    assert text.endswith("\n[Install]\nWantedBy=multi-user.target\n")
    assert set(parse_unit(text)) <= COMPARED


def test_the_guides_files_are_kept_as_printed():
    """Continuations and the stripped machine list stay as the guide prints them."""
    continued = {u.name for u in spec.UNITS if " \\\n" in guide_text(u)}
    assert continued == {"apiserver.service", "controller-manager.service", "kubelet.service"}
    manager = guide_text(spec.unit("controller-manager"))
    assert "\n-machines=,,\n" in manager and STRIPPED_MACHINES == ",,"
    docker = parse_unit(guide_text(spec.unit("docker")))
    assert docker[("Service", "ExecStart")] == [GUIDE_DOCKER_LINE]
    assert all("ETCDCTL_API" not in guide_text(u) for u in spec.UNITS)


def test_every_guide_unit_restarts_on_failure():
    """G-UNIT-8: Restart=on-failure, RestartSec=5, WantedBy=multi-user.target everywhere."""
    for unit in spec.UNITS:
        directives = parse_unit(guide_text(unit))
        assert directives[("Service", "Restart")] == ["on-failure"], unit.name
        assert directives[("Service", "RestartSec")] == ["5"], unit.name
        assert directives[("Install", "WantedBy")] == ["multi-user.target"], unit.name


# --- helpers/spec.py against the data --------------------------------------------------

@pytest.mark.parametrize("unit", spec.UNITS, ids=lambda u: u.short)
def test_unit_roles_match_the_guide(unit):
    """G-STEP-7/8: two units on the master only, five on every node."""
    if unit.name in TOPOLOGY["units"]["master_only"]:
        assert unit.roles == spec.MASTER_ONLY
    else:
        assert unit.name in TOPOLOGY["units"]["every_node"]
        assert unit.roles == spec.EVERY_ROLE


@pytest.mark.parametrize("unit", spec.UNITS, ids=lambda u: u.short)
def test_spec_fields_match_the_guides_file(unit):
    """The spec's own fields, before any rendering, say what the guide's file says."""
    directives = parse_unit(guide_text(unit))
    assert directives[("Unit", "Description")] == [unit.description]
    for directive in spec.DEPENDENCY_DIRECTIVES:
        ours = unit.dependencies(directive)
        assert len(set(ours)) == len(ours), f"{directive}= repeats a unit"
        assert set(ours) == set(directives.get(("Unit", directive), [])), directive
    assert list(unit.environment_files) == directives.get(("Service", "EnvironmentFile"), [])
    assert len(unit.exec_start_pre) == len(directives.get(("Service", "ExecStartPre"), []))
    assert len(unit.exec_start_post) == len(directives.get(("Service", "ExecStartPost"), []))
    assert (unit.restart, unit.restart_sec, unit.wanted_by) == ("on-failure", 5, "multi-user.target")
    assert [unit.restart] == directives[("Service", "Restart")]
    assert [str(unit.restart_sec)] == directives[("Service", "RestartSec")]
    assert [unit.wanted_by] == directives[("Install", "WantedBy")]


def test_the_guides_values_carry_no_deviation():
    values = guide_values()
    assert {k: values[k] for k in spec.GUIDE_DOCKER} == spec.GUIDE_DOCKER
    assert {k: values[k] for k in spec.DEFAULTS} == spec.DEFAULTS
    assert values["machines"] == "10.120.0.1,10.120.0.2,10.120.0.3"
    docker = parse_unit(render(spec.unit("docker"), values))
    assert docker[("Service", "ExecStart")] == [GUIDE_DOCKER_LINE]
    assert all("ETCDCTL_API" not in render(u, values) for u in spec.UNITS)


@pytest.mark.parametrize("unit", spec.UNITS, ids=lambda u: u.short)
def test_rendered_unit_is_equivalent_to_the_guides_file(unit):
    """With the guide's own values, our rendering is the guide's file; the machines list
    is the rendered inventory list against the guide's stripped `,,`."""
    assert unit_differences(render(unit, guide_values()), guide_text(unit)) == []


# --- the comparison can fail -----------------------------------------------------------

MUTATIONS = {
    # id: (unit, old text, new text, what the report must name)
    "drop-after": ("apiserver", "After=docker.service\n", "", "After"),
    "extra-wants": ("scheduler", "Wants=apiserver.service\n",
                    "Wants=apiserver.service\nWants=flannel.service\n", "Wants"),
    "requires-becomes-wants": ("flannel", "Requires=etcd.service", "Wants=etcd.service", "Requires"),
    "description": ("proxy", "Kubernetes proxy server", "Kubernetes Proxy Server", "Description"),
    "drop-environment-file": ("kubelet", "EnvironmentFile=/etc/environment\n", "", "EnvironmentFile"),
    "drop-exec-start-pre": ("docker", "ExecStartPre=-/usr/sbin/brctl delbr docker0\n", "",
                            "ExecStartPre"),
    "exec-start-post": ("flannel", "sleep 3", "sleep 4", "ExecStartPost"),
    "flag-value": ("kubelet", "-port=10250", "-port=10251", "ExecStart"),
    "lost-continuation": ("apiserver", "-port=8080 \\\n", "-port=8080\n", "ExecStart"),
    "restart": ("scheduler", "Restart=on-failure", "Restart=always", "Restart"),
    "restart-sec": ("proxy", "RestartSec=5", "RestartSec=10", "RestartSec"),
    "wanted-by": ("docker", "WantedBy=multi-user.target", "WantedBy=default.target", "WantedBy"),
    "machines-filled-in": ("controller-manager", "-machines=,,",
                           "-machines=10.120.0.1,10.120.0.2,10.120.0.3", "guide: -machines="),
}


@pytest.mark.parametrize("name", MUTATIONS)
def test_the_comparison_reports_an_altered_guide_file(name):
    short, old, new, named = MUTATIONS[name]
    unit = spec.unit(short)
    ours, original = render(unit, guide_values()), guide_text(unit)
    altered = original.replace(old, new, 1)
    assert altered != original, "the mutation changed nothing"
    assert unit_differences(ours, original) == []
    problems = unit_differences(ours, altered)
    assert problems and any(named in p for p in problems), problems


def test_the_comparison_reports_a_deviating_rendering():
    """A deviation (or a different machine list) on our side shows as a difference too."""
    deviating = spec.render_values({}, machines=MACHINES,
                                   deviations={"docker_command": "/usr/bin/dockerd"})
    problems = unit_differences(render(spec.unit("docker"), deviating),
                                guide_text(spec.unit("docker")))
    assert any("ExecStart" in p for p in problems), problems
    manager = spec.unit("controller-manager")
    two = spec.render_values({}, machines=MACHINES[:2])
    problems = unit_differences(render(manager, two), guide_text(manager))
    assert any(p.startswith("ours: -machines=") for p in problems), problems
