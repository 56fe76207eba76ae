"""Judge recorded facts again, without a cluster: a pytest plugin (`-p tests.support.replay
--replay DIR`) that runs `pytest suites` on what a real run gathered.

DIR holds a recording (tests/support/recordings.py writes them): the run's state, its
inventory and every node's facts. The run then behaves as an xdist worker of that run
does: it makes no cluster and reads the state and facts files it is given. What a live
run would still ask the nodes (a second reading of a failing check's node, the minion
lists re-read until their deadline) answers "cannot be read again", so a check is judged
on the first reading alone, as the recording has it.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from helpers.facts_cache import FactsCache
from helpers.plugin import FACTS_KEY, STATE_KEY


def pytest_addoption(parser):
    parser.addoption("--replay", metavar="DIR", default=None,
                     help="judge the recording in DIR (state.json, facts.json) instead of "
                          "a cluster")


class RecordedFacts(FactsCache):
    live = False

    def refresh(self, name: str, sections: tuple[str, ...]) -> None:
        """Nothing to read again: the recording is all there is."""

    def reread(self, name: str) -> bool:
        return False


class Replay:
    """Registered after the suite's plugin, so its fixtures are the ones the checks get."""

    def __init__(self, config):
        self.config = config

    @pytest.fixture(scope="session")
    def connections(self):
        return {}   # nothing may be asked of the recorded nodes' addresses

    @pytest.fixture(scope="session")
    def cluster_facts(self, cluster, inventory) -> FactsCache:
        return RecordedFacts(cluster, {}, inventory,
                             Path(self.config.workerinput[FACTS_KEY]))


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config):
    """Before any plugin is configured: as the suite's xdist workers are, this run is given
    the state and facts files, and the suite's plugin then makes nothing."""
    if directory := config.getoption("replay"):
        config.workerinput = {STATE_KEY: str(Path(directory) / "state.json"),
                              FACTS_KEY: str(Path(directory) / "facts.json")}


@pytest.hookimpl(trylast=True)
def pytest_configure(config):
    if config.getoption("replay"):
        config.pluginmanager.register(Replay(config), "k8sconf-replay")
        _junit_as_a_controller_writes_it(config)


def _junit_as_a_controller_writes_it(config) -> None:
    """pytest's junitxml writes nothing on an xdist worker (it looks for `workerinput`);
    the replay's verdicts come from the very same writer the live run's came from."""
    from _pytest import junitxml
    if not config.option.xmlpath or junitxml.xml_key in config.stash:
        return
    workerinput = config.workerinput
    del config.workerinput
    try:
        junitxml.pytest_configure(config)
    finally:
        config.workerinput = workerinput
