"""Fixtures of the end-to-end tests: one real `local` cluster per module, always destroyed.

The cluster uses its own prefix (not the default `k8sconf`), so that these tests never
remove a conformance run's cluster as "leftovers"; the networks stay the guide's, so
a conformance cluster up at the same time makes create() refuse with a collision.
Measured figures (create, reboot, destroy, memory) are shown at the end of the run.
"""
from __future__ import annotations

import contextlib
import os
import time

import pytest

from helpers.inventory import parse
from helpers.providers.base import ProviderUnavailable
from helpers.providers.local import LocalProvider
from helpers.providers.local_rootfs import rootfs_path

E2E_PREFIX = "k8se2e"
MEASURED: dict[str, str] = {}


@pytest.fixture(scope="session")
def local_inventory():
    return parse({"provider": "local", "bootstrap": {"enabled": False},
                  "local": {"prefix": E2E_PREFIX}})


@pytest.fixture(scope="session")
def measured() -> dict[str, str]:
    """Figures to show in the terminal summary (test modules import no conftest)."""
    return MEASURED


@pytest.fixture(scope="module")
def local_provider(tmp_path_factory, local_inventory):
    run_dir = tmp_path_factory.mktemp("local-cluster")
    provider = LocalProvider(local_inventory, run_dir, f"e2e{os.getpid()}")
    try:
        provider.preflight()
    except ProviderUnavailable as exc:  # a missing tool is a failure here, not a skip
        pytest.fail(f"{exc} (scripts/install installs it)", pytrace=False)
    return provider


@pytest.fixture(scope="module")
def local_cluster(local_provider, request):
    started = time.monotonic()
    with _uncaptured_if_building(local_provider, request.config):
        cluster = local_provider.create()
    how = "building the rootfs" if cluster.state["rootfs_built"] else "rootfs cached"
    MEASURED[f"create ({how}), to SSH + healthy etcd on all nodes"] = \
        f"{time.monotonic() - started:.1f} s"
    try:
        yield cluster
    finally:
        started = time.monotonic()
        local_provider.destroy(cluster)
        MEASURED.setdefault("destroy", f"{time.monotonic() - started:.1f} s")


@pytest.fixture(scope="module")
def connections(local_cluster):
    from helpers.ssh import Connection
    conns = {n.name: Connection(n, local_cluster.ssh_user, local_cluster.ssh_key,
                                command_timeout=60).connect()
             for n in local_cluster.nodes}
    yield conns
    for conn in conns.values():
        conn.close()


def _uncaptured_if_building(provider: LocalProvider, config):
    """Let the first rootfs build (about a minute) show mmdebstrap's progress live."""
    capman = config.pluginmanager.getplugin("capturemanager")
    if capman is None or rootfs_path(provider.settings.cache_dir).is_dir():
        return contextlib.nullcontext()
    return capman.global_and_fixture_disabled()


def pytest_terminal_summary(terminalreporter):
    if MEASURED:
        terminalreporter.write_sep("-", "local cluster measurements")
        for what, value in MEASURED.items():
            terminalreporter.write_line(f"{what}: {value}")
