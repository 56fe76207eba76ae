"""The run's facts as the checks read them: gathered once by the controller into a file
(helpers/lifecycle.py), loaded on first use by each process, and read again from a node
only for a failing check's second reading or an answer that may still change."""
from __future__ import annotations

from pathlib import Path

import pytest

from helpers import facts as facts_mod
from helpers import node_facts, probes
from helpers.providers import Cluster


class FactsCache:
    """Each node's facts, as the controller gathered them once for the run (the file
    lifecycle.FACTS_FILE), read on first use. `live`: a node can be read again (a
    recording cannot: tests/support/replay.py)."""

    live = True

    def __init__(self, cluster: Cluster, connections, inventory, path: Path,
                 plan: probes.Plan | None = None):
        self.cluster, self.connections, self.inventory = cluster, connections, inventory
        self.path = path
        self.plan = plan or facts_mod.full_plan()
        self._facts: facts_mod.Gathered | None = None
        self._reread: set[str] = set()

    def _all(self) -> facts_mod.Gathered:
        if self._facts is None:
            if not self.path.exists():   # the set-up ended before it gathered them
                pytest.fail(f"no facts were gathered ({self.path} is missing)", pytrace=False)
            self._facts = facts_mod.load(self.path, self.cluster)
        return self._facts

    def refresh(self, name: str, sections: tuple[str, ...]) -> None:
        """Read these sections of one node again (an answer that may still change)."""
        current = self.of(name)
        try:
            fresh = facts_mod.gather(self.connections[name], current.node, self.cluster,
                                     self.inventory.guide.values(),
                                     self.inventory.ssh.command_timeout, self.plan,
                                     only=sections)
        except node_facts.FactsError as exc:
            self._all()[name] = exc
            return
        for section in sections:
            current.set(section, fresh.section(section), fresh.rc.get(section, -1))

    def reread(self, name: str) -> bool:
        """A second reading of a node whose check failed: once per node and process, so a
        run whose checks pass costs nothing more, and one that fails one round trip per
        failing node. False when the node was already read again, or cannot be."""
        if name in self._reread:
            return False
        self._reread.add(name)
        node = self.of(name).node
        self.refresh(name, facts_mod.rereadable(node, self.cluster, self.inventory.guide.values(),
                                                self.plan))
        return isinstance(self._all().get(name), node_facts.NodeFacts)

    def readable(self) -> dict[str, node_facts.NodeFacts]:
        """The nodes that answered: an unreadable node's own checks report it, it must not
        fail another node's check."""
        return {name: found for name, found in self._all().items()
                if isinstance(found, node_facts.NodeFacts)}

    def of(self, name: str) -> node_facts.NodeFacts:
        found = self._all().get(name)
        if not isinstance(found, node_facts.NodeFacts):
            reason = str(found).removeprefix(f"{name}: ") if found else "not gathered"
            pytest.fail(f"{name}: facts could not be gathered: {reason}", pytrace=False)
        return found
