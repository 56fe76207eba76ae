"""What a check reads from the nodes, declared beside the check (as goss declares a check
next to what it needs).

A suite module declares each fact it needs as a `Probe`: the section's name, what the
facts script runs for it (a shell command, or one `Http` GET), and on which nodes. Its
checks name what they read with `@reads(...)`. helpers/node_facts.py
declares the few probes its own parsers read (`systemctl show`, `ss`, the probe
container...), and marks each parser with the probes it reads. Nothing else lists
section names: a new fact and its check are one file's change.

Before anything is created, `plan()` imports the selected suite files (the controller of
an xdist run collects nothing itself, and gathers the facts before any worker starts),
refuses a check that reads a section it did not declare (`audit()`, from the check's
source), and returns the probes the selected checks need, and only those.
"""
from __future__ import annotations

import ast
import importlib.util
import inspect
import shlex
import sys
import textwrap
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from helpers.providers.base import Cluster, Node

HTTP_TIMEOUT = 5   # seconds per request; the requests of a node run at once
# the NodeFacts methods that take a section's name: what a check reads through them is
# the name it passes, which it must declare
BY_NAME = ("section", "http", "env_file", "json", "ok", "pings", "dropped_during_pings")
READS = "k8sconf_reads"


class ProbeError(Exception):
    """A check reads what it did not declare, or two probes share a name."""


class Http(str):
    """A section that is one HTTP GET: its text is the body, then the status code on
    its own line ("000" when nothing answered). The facts script fetches all of a node's
    with one curl process; as a command of its own, it is this."""

    url: str

    def __new__(cls, url: str):
        self = super().__new__(cls, f"curl -s -m {HTTP_TIMEOUT} -w '\\n%{{http_code}}' "
                                    f"{shlex.quote(url)}")
        self.url = url
        return self


@dataclass(frozen=True)
class Target:
    """Where a probe runs, and what its command may need to know."""

    node: Node
    cluster: Cluster
    guide: dict
    other: Node | None = None   # an `each_node` probe's node of the cluster

    @property
    def etcd(self) -> str:
        return self.guide["etcd_endpoint"]

    @property
    def api(self) -> str:
        return f"http://{self.guide['apiserver_address']}:{self.guide['apiserver_port']}"


Command = str | Callable[[Target], str]


class Probe(str):
    """A section's name (a str: `facts.section(SUBNET_ENV)` reads it), and how to gather it.

    `command`: a shell command, an `Http`, or a function of the `Target` giving either;
    None for a section another round fills in (the pings, the workload's pods).
    `master_only`: run on the master alone. `each_node`: one section per node of the
    cluster, named `<probe> <node>`. `rereadable`: a failing check's second reading may
    read it again.
    `needs`: probes that must be gathered for this one to be (the pings need the probe
    container)."""

    command: Command | None
    master_only: bool
    each_node: bool
    rereadable: bool
    needs: tuple["Probe", ...]

    def __new__(cls, name: str, command: Command | None = None, *, master_only=False,
                each_node=False, rereadable=True, needs=()):
        self = super().__new__(cls, name)
        self.command, self.master_only, self.each_node = command, master_only, each_node
        self.rereadable, self.needs = rereadable, tuple(needs)
        return self

    def sections(self, node: Node, cluster: Cluster, guide: dict) -> dict[str, str]:
        """{section name: command} for this node: nothing where the probe does not run."""
        if self.command is None or (self.master_only and not node.is_master):
            return {}
        if self.each_node:
            return {f"{self} {other.name}": self._render(Target(node, cluster, guide, other))
                    for other in cluster.nodes}
        return {str(self): self._render(Target(node, cluster, guide))}

    def _render(self, target: Target) -> str:
        command = self.command
        return command(target) if callable(command) else command  # type: ignore[return-value]

    def __repr__(self) -> str:
        return f"Probe({str(self)!r})"


def reads(*probes: Probe):
    """Declare what a check (or a parser, or a helper checks call) reads. A parser's or a
    helper's declaration counts for every check that calls it."""
    def mark(function):
        setattr(function, READS, tuple(getattr(function, READS, ())) + probes)
        return function
    return mark


def declared(function) -> tuple[Probe, ...]:
    return tuple(getattr(function, READS, ()))


# -- the selected suites -------------------------------------------------------------------
def load(paths: Iterable[Path]) -> list[ModuleType]:
    """The suite files, imported under names of their own (pytest imports them again, as
    it always does, under its names: their top level only declares)."""
    modules = []
    for path in sorted(set(paths)):
        spec = importlib.util.spec_from_file_location(f"k8sconf_probes.{path.stem}", path)
        assert spec and spec.loader  # a .py file
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module   # what dataclasses and pickling look names up in
        spec.loader.exec_module(module)
        modules.append(module)
    return modules


def checks_of(module: ModuleType, names: Iterable[str] = ()) -> dict[str, Callable]:
    """The module's test functions; `names`: just these (a node id's `::name`)."""
    wanted = set(names)
    return {name: fn for name, fn in vars(module).items()
            if name.startswith("test_") and inspect.isfunction(fn)
            and fn.__module__ == module.__name__ and (not wanted or name in wanted)}


def _declaring_helpers(module: ModuleType) -> dict[str, Callable]:
    """The module's own functions that declare their reads: held to them as checks are."""
    return {name: fn for name, fn in vars(module).items()
            if inspect.isfunction(fn) and fn.__module__ == module.__name__ and declared(fn)
            and not name.startswith("test_")}


@dataclass
class Plan:
    """The probes a run gathers, by section name."""

    probes: dict[str, Probe]

    def sections(self, node: Node, cluster: Cluster, guide: dict) -> dict[str, str]:
        found: dict[str, str] = {}
        for probe in self.probes.values():
            found.update(probe.sections(node, cluster, guide))
        return found

    def probe_of(self, section: str) -> Probe | None:
        return self.probes.get(section) or self.probes.get(section.partition(" ")[0])

    def __contains__(self, name: object) -> bool:
        return name in self.probes


def plan(selection: dict[ModuleType, tuple[str, ...]], always: Iterable[Probe] = ()) -> Plan:
    """What the selected checks need ({module: check names, () for all}), after
    refusing any check that reads what it did not declare."""
    problems, needed = [], list(always)
    for module, names in selection.items():
        checks = checks_of(module, names)
        for name, function in (checks | _declaring_helpers(module)).items():
            probes, undeclared = audit(function)
            problems += [f"{Path(module.__file__ or '?').name}::{name} reads `{section}`, "
                         f"which it does not declare: add it to its @reads(...)"
                         for section in undeclared]
            if name in checks:   # a helper's reads come with the checks that call it
                needed += probes
    if problems:
        raise ProbeError(problems[0] if len(problems) == 1 else
                         f"{problems[0]} (and {len(problems) - 1} more)")
    return Plan(dict(sorted(_closure(needed).items())))


def _closure(probes: list[Probe]) -> dict[str, Probe]:
    found: dict[str, Probe] = {}
    while probes:
        probe = probes.pop()
        if str(probe) in found:
            if found[str(probe)] is not probe and found[str(probe)].command != probe.command:
                raise ProbeError(f"two probes are named `{probe}`: give one another name")
            continue
        found[str(probe)] = probe
        probes += probe.needs
    return found


# -- what a check's source reads -----------------------------------------------------------
def audit(check: Callable) -> tuple[list[Probe], list[str]]:
    """(every probe the check needs, the sections it reads by name without declaring
    them). It reads what its body, and the functions of its module and of helpers/ that
    it calls, pass to a by-name accessor (`facts.section("subnet_env")`); a parser or a
    helper that declares its reads (`reads`) brings those instead."""
    mine = set(map(str, declared(check)))
    needed, undeclared = list(declared(check)), []
    for section, via in _reads_in(check, check.__module__, set()):
        if via is not None:
            needed += declared(via)
        elif section not in mine:
            undeclared.append(section)
    return needed, sorted(set(undeclared))


def _reads_in(function, suite: str, seen: set) -> list[tuple[str, Callable | None]]:
    """(a section read by name, None), or ("", a declaring callee), for each read."""
    if function in seen:
        return []
    seen.add(function)
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(function)))
    except (OSError, TypeError, SyntaxError):
        return []
    names = getattr(function, "__globals__", {})
    found: list[tuple[str, Callable | None]] = []
    for call in (n for n in ast.walk(tree) if isinstance(n, ast.Call)):
        callee = _callee(call.func, names)
        module = getattr(callee, "__module__", None) or ""
        if callee is not None and declared(callee):
            found.append(("", callee))
        elif callee is not None and (module == suite or module.startswith("helpers.")):
            found += _reads_in(callee, suite, seen)
        elif isinstance(call.func, ast.Attribute) and call.func.attr in BY_NAME and call.args:
            if (section := _section_name(call.args[0], names)) is not None:
                found.append((section, None))
        # an accessor handed on with its name: `readable(facts.json, "docker_network")`
        for handed, name in zip(call.args, call.args[1:], strict=False):
            if isinstance(handed, ast.Attribute) and handed.attr in BY_NAME:
                if (section := _section_name(name, names)) is not None:
                    found.append((section, None))
    return found


def _callee(func: ast.expr, names: dict):
    """The function a call names: a module-level name, a module's function
    (`exposure.table`), or else a NodeFacts method by its name (`facts.units`)."""
    if isinstance(func, ast.Name):
        value = names.get(func.id)
        return value if callable(value) else None
    if not isinstance(func, ast.Attribute) or func.attr in BY_NAME:
        return None
    owner = names.get(func.value.id) if isinstance(func.value, ast.Name) else None
    if isinstance(owner, ModuleType):
        value = getattr(owner, func.attr, None)
        return value if callable(value) else None
    from helpers.node_facts import NodeFacts
    return getattr(NodeFacts, func.attr, None)


def _section_name(arg: ast.expr, names: dict) -> str | None:
    """The section an accessor's first argument names: a literal, a module-level Probe,
    or an f-string's fixed start (`f"kubelet_from_master {node.name}"`). A name computed
    otherwise cannot be judged from the source; the probe it reads must then come from a
    declaring helper."""
    if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
        return arg.value
    if isinstance(arg, ast.Name) and isinstance(names.get(arg.id), Probe):
        return str(names[arg.id])
    if isinstance(arg, ast.JoinedStr) and arg.values and isinstance(arg.values[0], ast.Constant):
        return str(arg.values[0].value).split(" ")[0] or None
    return None
