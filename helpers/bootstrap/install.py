"""The guide's install (GUIDE-SPEC.md, "Install steps"), performed over SSH.

Idempotent: a survey of each node (one command) decides what differs; a node that
already matches is left alone, and nothing is rebooted when nothing changed.
"""
from __future__ import annotations

import base64
import hashlib
import shlex
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from helpers import spec
from helpers.bootstrap import artifacts as artifacts_mod
from helpers.bootstrap import units as units_mod
from helpers.bootstrap.steps import StepLog
from helpers.inventory import Inventory
from helpers.providers.base import Cluster, Node, Provider
from helpers.ssh import Connection, SSHError, make_tar
from helpers.waiting import poll

SECTION = "@@k8sconf@@"


class BootstrapError(Exception):
    pass


@dataclass
class NodeState:
    """What a node holds now, from one survey command."""

    binaries: dict[str, str] = field(default_factory=dict)    # name -> sha256
    programs: dict[str, str] = field(default_factory=dict)    # spec.DEVIATION_DIR: name -> sha256
    unit_files: dict[str, str] = field(default_factory=dict)  # unit -> sha256
    enabled: dict[str, str] = field(default_factory=dict)
    active: dict[str, str] = field(default_factory=dict)


def _survey_command(unit_names: list[str]) -> str:
    names = " ".join(unit_names)
    return "; ".join([
        f"cd {spec.BIN_DIR} 2>/dev/null && sha256sum * 2>/dev/null",
        f"echo {SECTION}",
        f"cd {spec.UNIT_DIR} && sha256sum {names} 2>/dev/null",
        f"echo {SECTION}",
        f"for u in {names}; do echo $u $(systemctl is-enabled $u 2>/dev/null || true); done",
        f"echo {SECTION}",
        f"for u in {names}; do echo $u $(systemctl is-active $u 2>/dev/null || true); done",
        f"echo {SECTION}",
        f"cd {spec.DEVIATION_DIR} 2>/dev/null && sha256sum * 2>/dev/null",
    ])


def _parse_sums(text: str) -> dict[str, str]:
    pairs = (line.split(None, 1) for line in text.splitlines() if line.strip())
    return {Path(name.strip().lstrip("*")).name: digest for digest, name in pairs}


def _parse_pairs(text: str) -> dict[str, str]:
    pairs = (line.split(None, 1) for line in text.splitlines() if line.strip())
    return {p[0]: (p[1].strip() if len(p) > 1 else "") for p in pairs}


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class Bootstrap:
    def __init__(self, inventory: Inventory, cluster: Cluster, provider: Provider,
                 connections: dict[str, Connection], log: StepLog,
                 binaries: artifacts_mod.BinarySet):
        self.inventory, self.cluster, self.provider = inventory, cluster, provider
        self.connections, self.log, self.binaries = connections, log, binaries
        self.machines = [n.private_ip for n in cluster.nodes]
        self.rendered: dict[str, dict[str, str]] = {}
        self.changed: set[str] = set()

    # -- the steps, in the guide's order -------------------------------------------
    def run(self) -> dict:
        started = time.monotonic()
        with self.log.step("binaries for /opt/bin") as step:
            step.attach("origin", self.binaries.origin)
            step.attach("checksums and versions", "\n".join(
                f"{d}  {n}  {self.binaries.versions.get(n, '')}"
                for n, d in sorted(self.binaries.checksums.items())))
        self._render_units()
        states = self._each_node("survey", self._survey)
        self._ship_binaries(states)
        programs = self._deviation_programs()
        if programs:
            self._each_node("ship the deviations' programs",
                            lambda n: self._ship_programs(n, states[n.name], programs))
        self._each_node("write unit files", lambda n: self._write_units(n, states[n.name]))
        self._each_node("systemctl enable", lambda n: self._enable(n, states[n.name]))
        if self.changed or not self._all_active(states):
            self._restart_cluster()
        self._each_node("units settle", self._settle)
        self._each_node("probe image for the checks", self._probe_image)
        return {"changed_nodes": sorted(self.changed), "seconds": time.monotonic() - started,
                "deviations": units_mod.deviations_from_guide(self.inventory),
                "checksums": self.binaries.checksums, "standins": self.binaries.standins}

    def _each_node(self, name: str, action, nodes: list[Node] | None = None) -> dict:
        nodes = nodes if nodes is not None else self.cluster.nodes

        def one(node):
            with self.log.step(name, node.name):
                return action(node)
        pool = ThreadPoolExecutor(max_workers=max(1, len(nodes)))
        try:
            results = list(pool.map(one, nodes))
        finally:
            # on Ctrl-C, do not wait for a reboot's deadline: teardown ends those threads' nodes
            pool.shutdown(wait=False, cancel_futures=True)
        return {node.name: result for node, result in zip(nodes, results, strict=True)}

    def _render_units(self) -> None:
        with self.log.step("render units") as step:
            for node in self.cluster.nodes:
                values = units_mod.node_values(self.inventory, self.machines, node.private_ip)
                self.rendered[node.name] = units_mod.render_for_role(node.role, values)
            for name, text in self.rendered[self.cluster.master.name].items():
                step.attach(name, text)
            for name, (guide, applied) in units_mod.deviations_from_guide(self.inventory).items():
                step.attach(f"deviation {name}", f"guide: {guide!r}\napplied: {applied!r}")

    def _survey(self, node: Node) -> NodeState:
        names = list(self.rendered[node.name])
        out = self.connections[node.name].sudo(_survey_command(names)).stdout
        parts = (out.split(SECTION) + [""] * 5)[:5]
        return NodeState(_parse_sums(parts[0]), _parse_sums(parts[4]), _parse_sums(parts[1]),
                         _parse_pairs(parts[2]), _parse_pairs(parts[3]))

    # -- steps 1 and 4: /opt/bin on the first node, then the guide's tar stream -----
    def _wanted_binaries(self, node: Node) -> dict[str, Path]:
        return self.binaries.for_role(node.role, self.inventory.bootstrap.ship)

    def _binaries_current(self, node: Node, state: NodeState) -> bool:
        wanted = self._wanted_binaries(node)
        return all(state.binaries.get(n) == self.binaries.checksums[n] for n in wanted)

    def _ship_binaries(self, states: dict[str, NodeState]) -> None:
        first = self.cluster.master
        if not self._binaries_current(first, states[first.name]):
            with self.log.step("copy binaries to /opt/bin", first.name):
                tar = make_tar(self._wanted_binaries(first))
                self.connections[first.name].send_tar(tar, spec.BIN_DIR, timeout=300)
                self.changed.add(first.name)
        stale = [n for n in self.cluster.minions if not self._binaries_current(n, states[n.name])]
        if stale:
            self._each_node("ship /opt/bin from the first node", self._ship_from_first, stale)
            self.changed.update(n.name for n in stale)
        self._each_node("verify checksums", self._verify_checksums)

    def _ship_from_first(self, node: Node) -> None:
        names = " ".join(shlex.quote(n) for n in sorted(self._wanted_binaries(node)))
        tar = self.connections[self.cluster.master.name].run(
            f"cd {spec.BIN_DIR} && tar -czf - {names} | base64 -w0", timeout=300, check=True)
        self.connections[node.name].send_tar(base64.b64decode(tar.stdout), spec.BIN_DIR,
                                             timeout=300)

    def _verify_checksums(self, node: Node) -> None:
        found = self._survey(node).binaries
        wrong = [n for n in self._wanted_binaries(node)
                 if found.get(n) != self.binaries.checksums[n]]
        if wrong:
            raise BootstrapError(f"{node.name}: checksum mismatch in {spec.BIN_DIR} for "
                                 f"{', '.join(wrong)}")

    # -- not the guide's: the programs that declared deviations run ------------------------
    def _deviation_programs(self) -> dict[str, Path]:
        declared = self.inventory.deviations.declared()
        wanted = ((["docker-api-pin"] if "kubelet_docker_api" in declared else [])
                  + (["pause.tar"] if "pause_image" in declared else []))
        missing = [name for name in wanted if name not in self.binaries.node_programs]
        if missing:
            raise BootstrapError(f"deviations need {', '.join(missing)}, which only the "
                                 "source build makes (artifacts: build: true)")
        return {name: self.binaries.node_programs[name] for name in wanted}

    def _ship_programs(self, node: Node, state: NodeState, programs: dict[str, Path]) -> None:
        for name, path in programs.items():
            if state.programs.get(name) != artifacts_mod.sha256_of(path):
                self.connections[node.name].put(path.read_bytes(),
                                                f"{spec.DEVIATION_DIR}/{name}", mode=0o755)
                self.changed.add(node.name)

    # -- steps 5 and 6: unit files and systemctl enable ---------------------------------
    def _write_units(self, node: Node, state: NodeState) -> None:
        connection = self.connections[node.name]
        for name, text in self.rendered[node.name].items():
            if state.unit_files.get(name) != _sha(text):
                connection.put(text.encode(), f"{spec.UNIT_DIR}/{name}")
                self.changed.add(node.name)
        if node.name in self.changed:
            connection.sudo("systemctl daemon-reload", check=True)

    def _enable(self, node: Node, state: NodeState) -> None:
        names = [n for n in self.rendered[node.name] if state.enabled.get(n) != "enabled"]
        if names:
            self.connections[node.name].sudo(f"cd {spec.UNIT_DIR} && systemctl enable "
                                             + " ".join(names), check=True)
            self.changed.add(node.name)

    def _all_active(self, states: dict[str, NodeState]) -> bool:
        """Every unit this node should run is active (a minion has no apiserver)."""
        return all(states[node].active.get(unit) == "active"
                   for node, units in self.rendered.items() for unit in units)

    # -- step 7: reboot the master first, then the minions ------------------------------
    def _restart_cluster(self) -> None:
        timeout = self.inventory.bootstrap.settle_timeout
        if not self.inventory.bootstrap.reboot:
            self._each_node("systemctl restart", self._restart_units)
            return
        self._each_node("reboot (master first)", lambda n: self._reboot(n, timeout),
                        [self.cluster.master])
        if self.cluster.minions:
            self._each_node("reboot (minions)", lambda n: self._reboot(n, timeout),
                            self.cluster.minions)

    def _reboot(self, node: Node, timeout: float) -> None:
        self.connections[node.name].close()
        self.provider.reboot(self.cluster, node, timeout)

    def _restart_units(self, node: Node) -> None:
        names = " ".join(self.rendered[node.name])
        self.connections[node.name].sudo(f"systemctl restart {names}", check=True, timeout=180)

    def _probe_image(self, node: Node) -> None:
        """Not the guide's: the data-plane and MTU checks need a container image, and the
        kubelet its network container image when the deviation `pause_image` says so."""
        command = self.provider.probe_image_command
        if "pause_image" in self.inventory.deviations.declared():
            command += (f" && {{ docker image inspect {spec.PAUSE_IMAGE} >/dev/null 2>&1 || "
                        f"docker import -c 'CMD [\"/pause\"]' -c 'LABEL {spec.PRELOAD_LABEL}="
                        f"build/pause' {spec.DEVIATION_DIR}/pause.tar {spec.PAUSE_IMAGE}; }}")
        self.connections[node.name].sudo(command, check=True, timeout=120)

    # -- step 8: wait for every unit to be active, with a bound --------------------------
    def _settle(self, node: Node) -> None:
        names = list(self.rendered[node.name])
        active: dict[str, str] = {}

        def settled() -> bool:
            nonlocal active
            try:
                active = self._survey(node).active
            except SSHError:
                active = {}
            return all(active.get(n) == "active" for n in names)
        if not poll(settled, timeout=self.inventory.bootstrap.settle_timeout, interval=2):
            waiting = [n for n in names if active.get(n) != "active"]
            raise BootstrapError(
                f"{node.name}: units not active within "
                f"{self.inventory.bootstrap.settle_timeout:g} s: "
                + ", ".join(f"{n} ({active.get(n) or 'unknown'})" for n in waiting))

