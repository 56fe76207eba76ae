"""One cluster per run: created (or re-attached) and bootstrapped by the controller,
attached to by xdist workers through the state file, destroyed by the controller.

The state file (reports/cluster/state.json) is the only channel between them: it
holds the cluster, and any provisioning or bootstrap error that the checks must
report instead of running.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from helpers import facts as facts_mod
from helpers import node_facts, workload
from helpers.bootstrap import artifacts as artifacts_mod
from helpers.bootstrap.artifacts import ArtifactError
from helpers.bootstrap.build import BuildError, SourcesUnavailable
from helpers.bootstrap.install import Bootstrap, BootstrapError
from helpers.bootstrap.steps import StepLog
from helpers.interrupts import Interrupts
from helpers.inventory import Inventory
from helpers.paths import REPORTS
from helpers.probes import Plan
from helpers.providers import Cluster, Provider, ProviderError, ProviderUnavailable, provider_class
from helpers.ssh import Connection, SSHError

CLUSTER_DIR = REPORTS / "cluster"
STATE_FILE = CLUSTER_DIR / "state.json"
FACTS_FILE = CLUSTER_DIR / "facts.json"   # every node's facts, gathered once per run
CACHE_DIR = Path(os.environ.get("K8SCONF_CACHE", "/var/cache/k8s-coreos-conformance"))

FALLBACK_NOTE = ("running this project's stand-ins instead: NOT A RELEASE VERDICT "
                 "(--require-real refuses to)")
INFRASTRUCTURE_ERRORS = (ProviderError, SSHError, ArtifactError, BootstrapError, OSError)


# One command on the master; each line `key=value`, `unknown` when a tool is missing.
VERSION_KEYS = {"os": "node_os", "kernel": "node_kernel", "docker": "docker_version",
                "etcd": "etcd_version"}


def parse_versions(text: str) -> dict[str, str]:
    found = {}
    for line in text.splitlines():
        key, _, value = line.partition("=")
        if key in VERSION_KEYS:
            found[VERSION_KEYS[key]] = value.strip() or "unknown"
    return {name: found.get(name, "unknown") for name in VERSION_KEYS.values()}


class SetupFailed(Exception):
    """What the checks report when there is no usable cluster."""


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(2)


def read_state(path: Path = STATE_FILE) -> dict:
    return json.loads(path.read_text())


def write_state(state: dict, path: Path = STATE_FILE) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2, default=str))
    tmp.replace(path)


def connect_all(cluster: Cluster, inventory: Inventory, accepted_log: Path | None = None
                ) -> dict[str, Connection]:
    """A lazy connection per node (connecting happens on first command)."""
    ssh = inventory.ssh
    return {node.name: Connection(node, cluster.ssh_user, cluster.ssh_key,
                                  policy=ssh.host_key_policy, known_hosts=ssh.known_hosts,
                                  accepted_log=accepted_log,
                                  connect_timeout=ssh.connect_timeout,
                                  command_timeout=ssh.command_timeout)
            for node in cluster.nodes}


class ClusterLifecycle:
    """Create → bootstrap → (checks) → destroy, as the controller drives it."""

    def __init__(self, inventory: Inventory, inventory_path: Path, *, keep: bool,
                 reuse: bool, bootstrap: bool, progress=None, require_real: bool = False,
                 plan: Plan | None = None):
        self.inventory, self.inventory_path = inventory, inventory_path
        # what the selected checks read: all of it, unless a run says otherwise
        self.plan = plan or facts_mod.full_plan()
        self.keep, self.reuse, self.do_bootstrap = keep, reuse, bootstrap
        self.require_real = require_real
        self.progress = progress or (lambda step: None)
        self.provider: Provider | None = None
        self.cluster: Cluster | None = None
        self.steps = StepLog(self._step_ended)
        self.destroyed = False
        self.phase = "starting"
        self.interrupts = Interrupts(self.cleaning_up)

    # -- signals: SIGINT and SIGTERM end the run alike, so teardown always runs ----------
    def trap_signals(self, mid_line=lambda: False) -> None:
        """`mid_line`: whether the terminal's cursor is after text (progress dots)."""
        self.interrupts.mid_line = mid_line
        self.interrupts.install()

    def restore_signals(self) -> None:
        if self.interrupts.received is None:   # else: a late signal must not raise at exit
            self.interrupts.uninstall()

    def cleaning_up(self) -> str:
        """What an interrupt now leaves to the clean-up, in one phrase."""
        if self.phase == "teardown":
            return "the cluster is being destroyed; waiting for that to finish"
        if self.phase == "done" or self.provider is None:
            built = "; the build stops (nothing half-built is cached)" \
                if self.phase == "build" else ""
            return ("nothing is left to clean up" if self.phase == "done"
                    else "nothing was created yet") + built
        if self.keep:
            return f"keeping the {self.inventory.provider} cluster (--keep-cluster)"
        return f"destroying the {self.inventory.provider} cluster"

    # -- set up ------------------------------------------------------------------------
    def setup(self) -> dict:
        """Returns the state written for the checks; raises only ProviderUnavailable."""
        run_id = new_run_id()
        state: dict[str, Any] = {"run_id": run_id, "inventory": str(self.inventory_path),
                 "provider": self.inventory.provider, "kept": self.keep}
        cls = provider_class(self.inventory.provider)
        previous = self._previous_state()
        if self.reuse and previous:
            # the cluster keeps the id it was made with (DigitalOcean tags, names); this
            # run's own id names its sign-off bundle
            run_id = previous.get("cluster_run_id") or previous.get("run_id", run_id)
        state["cluster_run_id"] = run_id
        provider = cls(self.inventory, CLUSTER_DIR, run_id)
        provider.bootstraps = self.do_bootstrap
        provider.preflight()
        self.phase = "build"
        binaries = self._binaries() if self.do_bootstrap else None
        self.phase = "create"
        if binaries is not None:
            state["binaries"] = binaries.summary()
        elif previous and previous.get("binaries"):   # --no-bootstrap: what the last one shipped
            state["binaries"] = previous["binaries"]
        self.provider = provider  # from here on, teardown has something to undo
        # one connection per node serves the bootstrap and then the facts
        with ExitStack() as connected:
            try:
                self.cluster = self._create_or_attach(previous)
                state["cluster"] = json.loads(self.cluster.to_json())
                write_state(state)
                connections = connect_all(self.cluster, self.inventory,
                                          CLUSTER_DIR / "accepted_host_keys")
                for connection in connections.values():
                    connected.callback(connection.close)
                if binaries is not None:
                    state["bootstrap"] = self._bootstrap(connections, binaries)
            except INFRASTRUCTURE_ERRORS as exc:
                state["error"] = f"{type(exc).__name__}: {exc}"
            if self.cluster and not state.get("error"):
                standins = (state.get("binaries") or {}).get("standins", False)
                wanted = workload.PODS in self.plan
                state["workload"] = ("not run: the stand-ins start no containers" if standins
                                     else "ran" if wanted else
                                     "not run: no selected check reads its pods")
                found = self._gather_facts(connections, with_workload=wanted and not standins)
                state["node_os"] = self._node_versions(found)
                state["node_versions"] = {name: self._versions_of(f) for name, f in found.items()
                                          if isinstance(f, node_facts.NodeFacts)}
                state["unreadable"] = sorted(n for n, f in found.items()
                                             if not isinstance(f, node_facts.NodeFacts))
        state["steps"] = self.steps.as_dicts()
        write_state(state)
        return state

    def _previous_state(self) -> dict | None:
        if not STATE_FILE.exists():
            if self.reuse:
                raise ProviderUnavailable(f"--reuse-cluster: no kept cluster ({STATE_FILE} "
                                          "does not exist; run once with --keep-cluster)")
            return None
        try:
            previous = read_state()
        except ValueError:
            return None
        if not self.reuse and previous.get("kept") and previous.get("cluster"):
            raise ProviderUnavailable(
                f"a cluster kept by --keep-cluster is recorded in {STATE_FILE}: pass "
                "--reuse-cluster to test it again (it is destroyed at the end unless "
                "--keep-cluster is given again)")
        return previous

    def _create_or_attach(self, previous: dict | None) -> Cluster:
        assert self.provider is not None  # setup() made it
        if self.reuse:
            if not previous or not previous.get("cluster"):   # unreadable, or destroyed
                raise ProviderUnavailable(f"--reuse-cluster: {STATE_FILE} records no kept "
                                          "cluster; run once with --keep-cluster")
            with self.steps.step("attach to kept cluster"):
                return self.provider.attach(Cluster.from_json(json.dumps(previous["cluster"])))
        if previous and previous.get("cluster"):
            with self.steps.step("remove leftovers of an earlier run"):
                self._destroy_quietly(Cluster.from_json(json.dumps(previous["cluster"])))
        self._fresh_cluster_dir()
        with self.steps.step(f"create {self.inventory.provider} cluster"):
            try:
                return self.provider.create()
            except BaseException:
                self._destroy_quietly(None)
                raise

    @staticmethod
    def _fresh_cluster_dir() -> None:
        if CLUSTER_DIR.exists():
            shutil.rmtree(CLUSTER_DIR)
        CLUSTER_DIR.mkdir(parents=True)
        CLUSTER_DIR.chmod(0o700)

    def _binaries(self) -> artifacts_mod.BinarySet:
        """What /opt/bin gets, settled before anything is created: the real binaries, or
        (said in one line, and never with --require-real) the stand-ins."""
        if self.inventory.artifacts is None:
            raise ProviderUnavailable("inventory: 'artifacts' is required to bootstrap")
        try:
            return artifacts_mod.resolve(self.inventory.artifacts, CACHE_DIR, self.steps)
        except SourcesUnavailable as exc:
            if self.require_real:
                raise ProviderUnavailable(f"--require-real: the real binaries cannot be "
                                          f"had: {exc}") from None
            self.progress_line(f"the real binaries cannot be had: {exc}; {FALLBACK_NOTE}")
            return artifacts_mod.standins(str(exc))
        except (BuildError, ArtifactError) as exc:
            raise ProviderUnavailable(str(exc)) from None

    def _bootstrap(self, connections: dict[str, Connection],
                   binaries: artifacts_mod.BinarySet) -> dict:
        assert self.cluster is not None and self.provider is not None  # setup() made them
        install = Bootstrap(self.inventory, self.cluster, self.provider, connections,
                            self.steps, binaries)
        result = install.run()
        result["units"] = install.rendered
        return result

    def _gather_facts(self, connections: dict[str, Connection], with_workload: bool
                      ) -> facts_mod.Gathered:
        """What every check asserts on, gathered once for the whole run (and every xdist
        worker): a node that cannot be read fails its own checks, not the run. The pods
        run first, so that the facts (journals, `docker ps -a`) show what they did."""
        assert self.cluster is not None  # setup() made it
        FACTS_FILE.unlink(missing_ok=True)
        guide, timeout = self.inventory.guide.values(), self.inventory.ssh.command_timeout
        work: dict[str, dict[str, str]] = {}
        if with_workload:
            with self.steps.step("beyond the guide: a pod on every node, pinging the others"):
                try:
                    work = workload.run(self.cluster, connections, guide, timeout,
                                        workload.deadline_for(timeout))
                except SSHError as exc:   # the workload checks report it
                    work = {self.cluster.master.name: {"pods_created": f"not run: {exc}"}}
        rounds = "3 rounds" if node_facts.PROBE_CONTAINER in self.plan else "1 round"
        with self.steps.step(f"gather facts for the checks ({len(self.plan.probes)} probes, "
                             f"{rounds}, all nodes at once)"):
            found = facts_mod.gather_cluster(self.cluster, connections, guide, timeout,
                                             self.plan)
            for name, sections in work.items():
                if isinstance(answers := found.get(name), node_facts.NodeFacts):
                    for section, text in sections.items():
                        answers.set(section, text, 0)
            facts_mod.save(found, FACTS_FILE)
        if work:
            try:
                workload.remove(self.cluster, connections, guide, timeout)
            except SSHError:
                pass   # the pods' own sleep ends them
        return found

    def _node_versions(self, found: facts_mod.Gathered) -> dict[str, str]:
        """OS, kernel, Docker and etcd of the master, for the report's environment; never
        fails the run (what cannot be read is 'unknown')."""
        assert self.cluster is not None  # setup() made it
        master = self.cluster.master
        versions = {"versions_from": master.name}
        facts = found.get(master.name)
        if not isinstance(facts, node_facts.NodeFacts):
            return versions | {"versions_error": str(facts)}
        return versions | self._versions_of(facts)

    @staticmethod
    def _versions_of(facts: node_facts.NodeFacts) -> dict[str, str]:
        return parse_versions(facts.section("versions") + "\ndocker="
                              + facts.section("docker_version").strip())

    # -- tear down -----------------------------------------------------------------------
    def teardown(self) -> None:
        if self.destroyed or self.provider is None:
            self.phase = "done"
            return
        self.destroyed = True
        if self.keep:
            self.phase = "done"
            return
        self.phase = "teardown"
        with self.interrupts.shield(final=True):
            self._destroy_quietly(self.cluster)
            self._forget_run_key()
            if STATE_FILE.exists():
                state = read_state()
                state.pop("cluster", None)
                state["destroyed"] = True
                write_state(state)
            self.phase = "done"

    def _forget_run_key(self) -> None:
        """A key generated for this run opens nothing any more: it does not stay in reports/."""
        key = Path(self.cluster.ssh_key) if self.cluster and self.cluster.ssh_key else None
        if key and CLUSTER_DIR in key.parents:
            for path in (key, key.with_name(key.name + ".pub")):
                path.unlink(missing_ok=True)

    def _destroy_quietly(self, cluster: Cluster | None) -> None:
        # A signal must not stop removing nodes half-way (it is raised after, if at all).
        assert self.provider is not None  # callers check it
        with self.interrupts.shield():
            try:
                self.provider.destroy(cluster)
            except Exception as exc:  # teardown reports, it does not mask the run's result
                self.progress_line(f"teardown failed: {exc}")

    def _step_ended(self, step) -> None:
        # steps an interrupt broke off (threads still finishing theirs) are in the state
        # file; on the terminal the one interrupt line says what happened
        if self.interrupts.received is None:
            self.progress(step)

    def progress_line(self, text: str) -> None:
        from helpers.bootstrap.steps import Step
        self.progress(Step(text))
