"""The pytest plugin: options, the inventory, the cluster's lifecycle, and fixtures.

A conformance run is one whose paths lie under suites/. Only then is a cluster
made; our own tests (tests/) load the plugin for its options and nothing else.
"""
from __future__ import annotations

import json
from pathlib import Path

import allure
import filelock
import pytest

from helpers import bundle, lifecycle, node_facts, probes, reporting, spec, trace
from helpers import facts as facts_mod
from helpers import inventory as inventory_mod
from helpers import waivers as waivers_mod
from helpers.checks import CheckFailed
from helpers.facts_cache import FactsCache
from helpers.interrupts import Interrupted
from helpers.paths import REPORTS
from helpers.providers import Cluster, ProviderUnavailable, provider_class
from helpers.summary import SUMMARY, SignOff

SUITES = inventory_mod.ROOT / "suites"
STATE_KEY = "k8sconf_state_file"
FACTS_KEY = "k8sconf_facts_file"


# The options (--inventory, --reports-dir, ...) are helpers/entry.py's: the entry point that
# registers this module, so that pytest knows them before it reads the command line.


def _suite_args(config) -> list[tuple[Path, str]]:
    """(path, check name or "") of each argument under suites/."""
    found = []
    for arg in config.args:
        where, _, name = arg.partition("::")
        path = Path(where)
        path = (path if path.is_absolute() else Path(config.invocation_params.dir) / path).resolve()
        if path == SUITES or SUITES in path.parents:
            found.append((path, name.partition("::")[0].partition("[")[0]))
    return found


def _is_conformance_run(config) -> bool:
    return bool(_suite_args(config))


def _plan(config) -> probes.Plan:
    """The probes the selected suite files and checks declare (`suites/x.py::test_y`
    selects one check; -k and -m select nothing here: the controller of an xdist run
    gathers before any process collects)."""
    names: dict[Path, set[str]] = {}   # "" for every check of the file
    for path, name in _suite_args(config):
        for file in (sorted(path.rglob("test_*.py")) if path.is_dir() else [path]):
            names.setdefault(file, set()).add(name)
    files = [file for file in names if file.is_file()]
    selection = {module: () if "" in names[file] else tuple(sorted(names[file]))
                 for file, module in zip(files, probes.load(files), strict=True)}
    return probes.plan(selection, facts_mod.ALWAYS)


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config):
    """--dry-run ends here, before any plugin is configured: no reports, no cluster."""
    if config.option.dry_run:
        from helpers import dryrun
        return dryrun.run(config)
    return None


def pytest_configure(config):
    config.addinivalue_line("markers", "role(name): run this check only on nodes of that role")
    config.addinivalue_line("markers", "verifies(*ids): the docs/guide.md statements a check "
                                       "verifies (helpers/trace.py)")
    if config.option.help or config.option.version:
        return
    if not _is_conformance_run(config):
        return
    try:
        path = inventory_mod.resolve_path(config.option.inventory,
                                          Path(config.invocation_params.dir))
        inventory = inventory_mod.load(path)
        waivers = _waivers(config)
        plan = _plan(config)
    except (inventory_mod.InventoryError, waivers_mod.WaiverError, probes.ProbeError) as exc:
        raise pytest.UsageError(str(exc)) from None
    if waivers:
        roles = {n.name: n.role for n in inventory.node_specs()}
        config.pluginmanager.register(
            waivers_mod.WaiverHook(waivers, roles, inventory.provider), "k8sconf-waivers")
    config.pluginmanager.register(ConformanceRun(config, path, inventory, plan, waivers),
                                  "k8sconf-run")


def _waivers(config) -> list:
    """--waivers FILE, checked before anything is created (also under --collect-only)."""
    value = config.getoption("waivers", default=None)
    if not value:
        return []
    path = Path(value)
    path = path if path.is_absolute() else Path(config.invocation_params.dir) / path
    return waivers_mod.load(path)


class ConformanceRun:
    """Hooks and fixtures of one conformance run."""

    def __init__(self, config, inventory_path: Path, inventory, plan: probes.Plan, waivers=()):
        self.config, self.inv_path, self.inv = config, inventory_path, inventory
        self.plan = plan
        self.worker = hasattr(config, "workerinput")
        self.lifecycle: lifecycle.ClusterLifecycle | None = None
        self.session = None
        self.signoff = None
        self._reports_lock: filelock.BaseFileLock | None = None
        if not self.worker and not config.option.collectonly:
            self.signoff = SignOff(config, inventory_path, waivers)
            config.pluginmanager.register(self.signoff, "k8sconf-signoff")

    # -- controller: set up before the workers start, tear down after they end --------
    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionstart(self, session):
        if self.worker or self.config.option.collectonly:
            return
        self._lock_reports()
        reporting.prepare_results_dir(self.config)
        self.lifecycle = lifecycle.ClusterLifecycle(
            self.inv, self.inv_path,
            keep=self.config.option.keep_cluster, reuse=self.config.option.reuse_cluster,
            bootstrap=self.inv.bootstrap.enabled and not self.config.option.no_bootstrap,
            progress=self._progress, require_real=self.config.option.require_real,
            plan=self.plan)
        self.session = session
        self.lifecycle.trap_signals(self._mid_line)
        self._line(f"k8sconf: {self.inv.provider} cluster from {self.inv_path}")
        try:
            state = self.lifecycle.setup()
        except ProviderUnavailable as exc:  # nothing was made: one line, exit code 4
            raise pytest.UsageError(str(exc)) from None
        reporting.record_setup(self.config, self.inv, state)
        if state.get("error"):
            self._line(f"k8sconf: setup failed: {state['error']}")

    def _lock_reports(self) -> None:
        """Two runs writing one reports/ would clean and overwrite each other's state."""
        REPORTS.mkdir(parents=True, exist_ok=True)
        self._reports_lock = filelock.FileLock(REPORTS / ".run.lock")
        try:
            self._reports_lock.acquire(timeout=0)
        except filelock.Timeout:
            raise pytest.UsageError(f"another conformance run is using {REPORTS}; wait for "
                                    "it, or give --reports-dir to run a second one elsewhere"
                                    ) from None

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node):
        node.workerinput[STATE_KEY] = str(lifecycle.STATE_FILE)
        node.workerinput[FACTS_KEY] = str(lifecycle.FACTS_FILE)

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session, exitstatus):
        self._teardown()

    def pytest_unconfigure(self, config):
        self._teardown()

    def pytest_keyboard_interrupt(self, excinfo):
        """Our interrupt line said it all: pytest's own (a banner, and the handler's file and
        line as a traceback's last frame) would repeat it. Its reporter prints that at the
        end of the session, or at exit when the session never started."""
        reporter = self.config.pluginmanager.get_plugin("terminalreporter")
        if isinstance(excinfo.value, Interrupted) and hasattr(reporter,
                                                               "_report_keyboardinterrupt"):
            reporter._report_keyboardinterrupt = lambda: None

    def _teardown(self):
        run = self.lifecycle
        if run is None:
            pass
        elif run.provider and not run.destroyed:
            with run.interrupts.shield(final=True):
                if run.interrupts.received is None:   # else the interrupt line said it
                    self._line("k8sconf: keeping the cluster (--keep-cluster)" if run.keep
                               else "k8sconf: destroying the cluster")
                run.teardown()
        else:
            run.teardown()   # nothing to remove: the interrupt line now says so
        if run is not None:
            if run.interrupts.received and self.session is not None:
                self.session.exitstatus = pytest.ExitCode.INTERRUPTED
            run.restore_signals()
        if self._reports_lock is not None and self._reports_lock.is_locked:
            self._reports_lock.release()

    def _mid_line(self) -> bool:
        reporter = self.config.pluginmanager.get_plugin("terminalreporter")
        writer = getattr(reporter, "_tw", None)
        return bool(writer is not None and writer.width_of_current_line)

    def _line(self, text: str) -> None:
        reporter = self.config.pluginmanager.get_plugin("terminalreporter")
        if reporter:
            reporter.write_line(text)

    def _progress(self, step) -> None:
        where = f" [{step.node}]" if step.node else ""
        mark = "" if step.status == "passed" else f" {step.status.upper()}: {step.message}"
        self._line(f"  {step.seconds:6.1f}s  {step.name}{where}{mark}")

    # -- collection: one test per node (or per node and unit) ---------------------------
    def pytest_generate_tests(self, metafunc):
        if "node" not in metafunc.fixturenames:
            return
        roles = {m.args[0] for m in metafunc.definition.iter_markers("role")}
        nodes = [n for n in self.inv.node_specs() if not roles or n.role in roles]
        if "directive" in metafunc.fixturenames:
            # only what the guide writes: a directive it leaves out is no check
            triples = [(n.name, u.name, d) for n in nodes for u in spec.units_for(n.role)
                       for d in spec.DEPENDENCY_DIRECTIVES if u.dependencies(d)]
            metafunc.parametrize("node,unit,directive", triples, indirect=["node"],
                                 ids=[f"{n}-{u.removesuffix('.service')}-{d}"
                                      for n, u, d in triples])
        elif "unit" in metafunc.fixturenames:
            pairs = [(n.name, u.name) for n in nodes for u in spec.units_for(n.role)]
            metafunc.parametrize("node,unit", pairs, indirect=["node"],
                                 ids=[f"{n}-{u.removesuffix('.service')}" for n, u in pairs])
        else:
            metafunc.parametrize("node", [n.name for n in nodes], indirect=True,
                                 ids=[n.name for n in nodes])

    def pytest_collection_modifyitems(self, items):
        for item in items:
            callspec = getattr(item, "callspec", None)
            node = callspec.params.get("node") if callspec else None
            features = [m.args[0] for m in item.iter_markers("allure_label")
                        if m.kwargs.get("label_type") == "feature" and m.args]
            # user_properties travel with the report from xdist workers to the controller
            item.user_properties += [("node", node or "cluster"),
                                     ("area", features[0] if features else "other"),
                                     ("verifies", " ".join(trace.ids_of(item)))]
            for statement in trace.ids_of(item):
                item.add_marker(allure.label("guide", statement))

    # -- a failing check is judged again on a second reading of its node ----------------
    @pytest.hookimpl(hookwrapper=True)
    def pytest_pyfunc_call(self, pyfuncitem):
        outcome = yield
        excinfo = outcome.excinfo
        if self.config.option.collectonly or not excinfo or not issubclass(excinfo[0], CheckFailed):
            return
        if pyfuncitem.get_closest_marker("xfail"):   # an advisory fails by design
            return
        args = pyfuncitem.funcargs
        node, cache = args.get("node"), args.get("cluster_facts")
        if node is None or cache is None or "facts" not in args:
            return
        first = str(excinfo[1]).splitlines()[0]
        try:
            if not cache.reread(node.name):
                return
        except Exception:  # noqa: BLE001 - the first reading's failure stands as it is
            return
        names = pyfuncitem._fixtureinfo.argnames
        try:
            pyfuncitem.obj(**{name: args[name] for name in names})
        except CheckFailed as again:
            pyfuncitem.user_properties.append(("failure", "persistent"))
            outcome.force_exception(again)
            return
        except BaseException:  # noqa: BLE001 - anything else: the first failure stands
            return
        pyfuncitem.user_properties.append(("failure", f"transient: {first}"))
        allure.dynamic.tag("transient")
        outcome.force_result(True)

    def pytest_terminal_summary(self, terminalreporter):
        if self.signoff is None:
            return
        state = lifecycle.read_state() if lifecycle.STATE_FILE.exists() else {}
        reporting.mark_transient_flaky(reporting.results_dir(self.config))
        text = self.signoff.write(state)
        terminalreporter.section("conformance sign-off")
        for line in text.splitlines():
            terminalreporter.write_line(line)
        terminalreporter.write_line(f"(written to {SUMMARY}, {SUMMARY.with_suffix('.json')} and "
                                    f"{SUMMARY.with_name('traceability.md')})")
        if state.get("run_id"):
            sealed = self._seal(state)
            terminalreporter.write_line(f"sealed sign-off bundle: {sealed} "
                                        "(check it: bash scripts/verify-bundle FILE)")

    def _seal(self, state: dict) -> Path:
        option = self.config.option
        files = {"summary.md": SUMMARY, "summary.json": SUMMARY.with_suffix(".json"),
                 "traceability.md": SUMMARY.with_name("traceability.md"),
                 "facts.json": lifecycle.FACTS_FILE}
        if getattr(option, "xmlpath", None):
            files["junit.xml"] = Path(option.xmlpath)
        if results := reporting.results_dir(self.config):
            files["allure-results"] = results
        return bundle.write(REPORTS, state, self.inv_path, inventory_mod.ROOT, files)

    # -- fixtures ----------------------------------------------------------------------------
    @pytest.fixture(scope="session")
    def inventory(self):
        return self.inv

    @pytest.fixture(scope="session")
    def run_state(self) -> dict:
        path = Path(self.config.workerinput[STATE_KEY]) if self.worker else lifecycle.STATE_FILE
        state = lifecycle.read_state(path) if path.exists() else {}
        if not state.get("cluster"):
            pytest.fail(f"no cluster: {state.get('error', 'provisioning did not run')}",
                        pytrace=False)
        if state.get("error"):
            pytest.fail(f"setup failed: {state['error']}", pytrace=False)
        return state

    @pytest.fixture(scope="session")
    def cluster(self, run_state) -> Cluster:
        return Cluster.from_json(json.dumps(run_state["cluster"]))

    @pytest.fixture(scope="session")
    def provider(self, cluster, run_state):
        cls = provider_class(self.inv.provider)
        instance = cls(self.inv, lifecycle.CLUSTER_DIR,
                       run_state.get("cluster_run_id") or run_state["run_id"])
        instance.attach(cluster)
        return instance

    @pytest.fixture(scope="session")
    def connections(self, cluster):
        connections = lifecycle.connect_all(cluster, self.inv)
        yield connections
        for connection in connections.values():
            connection.close()

    @pytest.fixture(scope="session")
    def facts_plan(self) -> probes.Plan:
        """What this run gathers: the probes its selected checks declare."""
        return self.plan

    @pytest.fixture(scope="session")
    def cluster_facts(self, cluster, connections, facts_plan) -> "FactsCache":
        path = (Path(self.config.workerinput[FACTS_KEY]) if self.worker
                else lifecycle.FACTS_FILE)
        return FactsCache(cluster, connections, self.inv, path, facts_plan)

    @pytest.fixture
    def node(self, request, cluster):
        found = cluster.node(request.param)
        reporting.label_node(found)
        return found

    @pytest.fixture
    def facts(self, node, cluster_facts) -> node_facts.NodeFacts:
        return cluster_facts.of(node.name)

    @pytest.fixture
    def master_facts(self, cluster, cluster_facts) -> node_facts.NodeFacts:
        return cluster_facts.of(cluster.master.name)
