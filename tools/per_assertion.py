"""The benchmark's baseline, as a pytest plugin (`-p tools.per_assertion`): the suite's own
checks, unchanged, but each fact is fetched by its own testinfra call whenever a check
asks for it, which is how a testinfra suite works (`host.file(...)`, `host.run(...)` in
every assertion), instead of the one batched facts script per node.

Only the data plane is still gathered in the controller's rounds (the probe containers
and the pings between them need every node at once), and the pods of the workload check
are made as in any run. So the two runs differ in one thing, and the ratio of their times
is what the batching saves on identical assertions.
"""
from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from helpers import facts as facts_mod
from helpers import lifecycle, node_facts
from helpers.facts_cache import FactsCache
from helpers.plugin import FACTS_KEY

# what the controller still reads in its first round: the probe container, and the
# FORWARD counter that opens the window in which the pings' drops are counted
DATA_PLANE = (node_facts.PROBE_CONTAINER, node_facts.FORWARD_RULES)


class PerAssertionFacts(node_facts.NodeFacts):
    """One node's facts where every read of a section runs its command again."""

    def __init__(self, gathered: node_facts.NodeFacts, host, commands: dict[str, str]):
        super().__init__(gathered.node, dict(gathered.text), dict(gathered.rc))
        self.host, self.commands = host, commands

    def _fetch(self, name: str) -> None:
        command = self.commands.get(name)
        if command is None or name in DATA_PLANE:   # the rounds' own, or the workload's
            return
        bounded = (f"timeout -s KILL {facts_mod.PER_SECTION_TIMEOUT} sh -c "
                   f"{shlex.quote(command)} 2>&1")
        with self.host.sudo():
            result = self.host.run(bounded)
        # as the batched script has it: no trailing newline; an HTTP section's rc says
        # whether anything answered
        text = result.stdout.removesuffix("\n")
        rc = result.rc
        if isinstance(command, facts_mod.Http):
            rc = 0 if text.rpartition("\n")[2].strip() not in ("", "000") else 1
        self.set(name, text, rc)

    def section(self, name: str) -> str:
        self._fetch(name)
        return super().section(name)

    def ok(self, name: str) -> bool:
        self._fetch(name)
        return super().ok(name)


class PerAssertionCache(FactsCache):
    """The run's facts as every check sees them: re-read on each ask."""

    def _wrap(self, gathered: node_facts.NodeFacts) -> PerAssertionFacts:
        node = gathered.node
        host = self.connections[node.name].testinfra_host()
        commands = facts_mod.section_commands(node, self.cluster, self.inventory.guide.values(),
                                              self.plan)
        return PerAssertionFacts(gathered, host, commands)

    def of(self, name: str) -> node_facts.NodeFacts:
        return self._wrap(super().of(name))

    def readable(self) -> dict[str, node_facts.NodeFacts]:
        return {name: self._wrap(found) for name, found in super().readable().items()}


class Baseline:
    """Registered after the suite's plugin, so its fixture is the one the checks get."""

    def __init__(self, config):
        self.config = config

    @pytest.fixture(scope="session")
    def cluster_facts(self, cluster, connections, inventory, facts_plan) -> FactsCache:
        workerinput = getattr(self.config, "workerinput", None)
        path = Path(workerinput[FACTS_KEY]) if workerinput else lifecycle.FACTS_FILE
        # the run's own plan: the same facts the batched run gathers, planned once
        return PerAssertionCache(cluster, connections, inventory, path, facts_plan)


def _data_plane_only(gather_cluster):
    def gather(cluster, connections, guide, timeout, plan, only=()):
        return gather_cluster(cluster, connections, guide, timeout, plan, only=DATA_PLANE)
    return gather


_patch = pytest.MonkeyPatch()


@pytest.hookimpl(trylast=True)
def pytest_configure(config):
    # the controller's rounds gather the data plane only; this process is the
    # benchmark's own subprocess, so the patch reaches nothing else
    _patch.setattr(facts_mod, "gather_cluster", _data_plane_only(facts_mod.gather_cluster))
    config.pluginmanager.register(Baseline(config), "k8sconf-per-assertion")


def pytest_unconfigure(config):
    _patch.undo()
