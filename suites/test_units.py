"""The seven systemd units (GUIDE-SPEC.md, "Units"): present, enabled, active, and wired
as the guide writes them, read from systemd's effective values, not only the file text."""
import pytest

from helpers import spec
from helpers.checks import expect, guide_section, unit_evidence
from helpers.node_facts import (
    FAILED,
    SHOW,
    UNIT_EXITS,
    WANTS,
    start_order_violations,
    systemd_entries,
)
from helpers.probes import reads
from helpers.trace import verifies

pytestmark = guide_section("Systemd units", "critical")

@verifies("G-INST-5", "G-STEP-7", "G-STEP-8", "G-SHOW-2")
def test_unit_file_is_in_etc_systemd_system(node, unit, facts):
    props = facts.unit(unit)
    expect(props.get("FragmentPath") == f"{spec.UNIT_DIR}/{unit}", node.name,
           f"{unit} is installed in {spec.UNIT_DIR}",
           expected=f"{spec.UNIT_DIR}/{unit} (LoadState=loaded)",
           found=f"{props.get('FragmentPath') or 'no unit file'} "
                 f"(LoadState={props.get('LoadState', '?')})",
           evidence=unit_evidence(facts, unit))


@verifies("G-STEP-9", "G-SHOW-2")
@reads(WANTS)
def test_unit_is_enabled_for_multi_user(node, unit, facts):
    state = facts.unit(unit).get("UnitFileState", "")
    linked = unit in facts.wanted_by_multi_user()
    expect(state == "enabled" and linked, node.name, f"{unit} is enabled",
           expected=f"UnitFileState=enabled, linked in {spec.WANTED_BY}.wants",
           found=f"UnitFileState={state or '?'}, linked={linked}",
           evidence={"multi-user.target.wants": facts.section("wants")})


@verifies("G-STEP-10", "G-SHOW-3")
def test_unit_is_active(node, unit, facts):
    props = facts.unit(unit)
    expect(props.get("ActiveState") == "active", node.name, f"{unit} is active",
           expected="ActiveState=active (running)",
           found=f"ActiveState={props.get('ActiveState', '?')} ({props.get('SubState', '?')})",
           evidence=unit_evidence(facts, unit))


@verifies("G-UNIT-1", "G-UNIT-2", "G-UNIT-3", "G-UNIT-4", "G-UNIT-5", "G-UNIT-6", "G-UNIT-7", "G-UNIT-10")
def test_unit_dependencies_match_the_guide(node, unit, directive, facts):
    """One test per directive the guide writes for the unit (the plugin parametrizes
    `directive` from the spec): a directive the guide leaves out is not a check."""
    wanted = set(getattr(spec.unit(unit), directive.lower()))
    listed = facts.unit(unit).get(directive, "").split()
    effective = set().union(*(facts.names(name) for name in listed))
    expect(wanted <= effective, node.name, f"{unit} {directive}= as the guide writes it",
           expected=f"{directive} includes {', '.join(sorted(wanted)) or '(nothing required)'}",
           found=f"missing {', '.join(sorted(wanted - effective))} "
                 f"(effective: {' '.join(sorted(listed)) or 'none'})",
           evidence=unit_evidence(facts, unit))


@verifies("G-UNIT-8")
def test_unit_restarts_on_failure_after_5s(node, unit, facts):
    props = facts.unit(unit)
    expected = (spec.RESTART, f"{spec.RESTART_SEC}s")
    found = (props.get("Restart"), props.get("RestartUSec"))
    expect(found == expected, node.name, f"{unit} restart policy",
           expected=f"Restart={expected[0]}, RestartSec={expected[1]}",
           found=f"Restart={found[0]}, RestartSec={found[1]}",
           evidence=unit_evidence(facts, unit))


@verifies("G-UNIT-8", "G-STEP-10", "G-SHOW-3")
@reads(UNIT_EXITS)
def test_unit_has_not_restarted_since_it_started(node, unit, facts):
    """Restart=on-failure hides a crash: the unit is active again 5 s later. systemd counts
    its automatic restarts since the unit was last started on purpose (the boot, or an
    operator's `systemctl restart`)."""
    restarts = facts.unit(unit).get("NRestarts", "")
    last = facts.last_exit(unit)
    expect(restarts == "0", node.name, f"{unit} has not crashed and restarted",
           expected="NRestarts=0",
           found=f"NRestarts={restarts or '(not reported)'}, last exit: "
                 f"{last or 'none in the journal since boot'}",
           evidence={"systemd on the unit's exits": "\n".join(
               line for line in facts.section("unit_exits").splitlines()
               if line.startswith(f"{unit}: ")) or "(none since boot)",
               f"journalctl -b -u {unit}": facts.journal(unit)})


@verifies("G-UNIT-1", "G-UNIT-2", "G-UNIT-3", "G-UNIT-4", "G-UNIT-5", "G-UNIT-6", "G-UNIT-7", "G-LOST-1")
def test_unit_runs_the_guide_command(node, unit, facts, inventory, cluster):
    from helpers.bootstrap.units import node_values
    values = node_values(inventory, [n.private_ip for n in cluster.nodes], node.private_ip)
    wanted = spec.unit(unit).exec_start.line(values)
    exec_start = facts.unit(unit).get("ExecStart", "")
    argv = exec_start.partition("argv[]=")[2].partition(" ;")[0].strip()
    expect(argv == wanted, node.name, f"{unit} ExecStart",
           expected=wanted, found=argv or "(no ExecStart)",
           evidence=unit_evidence(facts, unit))


@verifies("G-UNIT-1", "G-UNIT-2", "G-UNIT-3", "G-UNIT-4", "G-UNIT-5", "G-UNIT-6", "G-UNIT-7")
def test_unit_wraps_its_command_as_the_guide_writes(node, unit, facts, inventory, cluster):
    """EnvironmentFile=, ExecStartPre= and ExecStartPost= as systemd took them: flannel's
    network-config write and wait for subnet.env, docker's docker0 teardown and the
    environment it reads, the API server's wait (and what a declared deviation adds)."""
    from helpers.bootstrap.units import AROUND_EXEC_START, as_systemd_shows, node_values
    values = node_values(inventory, [n.private_ip for n in cluster.nodes], node.private_ip)
    wanted = as_systemd_shows(spec.unit(unit), values)
    props = facts.unit(unit)
    found = {name: systemd_entries(props.get(name, "")) for name in AROUND_EXEC_START}
    wrong = [name for name in AROUND_EXEC_START if found[name] != wanted[name]]
    expect(bool(props) and not wrong, node.name, f"{unit} {', '.join(AROUND_EXEC_START)}",
           expected="\n".join(f"{n}: {'; '.join(wanted[n]) or '(none)'}" for n in wrong or AROUND_EXEC_START),
           found="\n".join(f"{n}: {'; '.join(found[n]) or '(none)'}" for n in wrong),
           evidence=unit_evidence(facts, unit))


@verifies("G-STEP-10", "G-UNIT-11", "G-UNIT-12")
@reads(SHOW)
def test_start_order_since_boot_respects_after(node, facts):
    """No unit began starting while a unit it is ordered After= was down."""
    units = facts.units()
    unread = [u.name for u in spec.units_for(node.role)
              if not units.get(u.name, {}).get("InactiveExitTimestampMonotonic")]
    violations = start_order_violations(node.role, units)
    expect(not unread and not violations, node.name, "units start in the guide's dependency order",
           expected="etcd before flannel before docker; apiserver before controller-manager",
           found="; ".join(violations + ([f"no start time reported for {', '.join(unread)}"]
                                         if unread else [])),
           evidence={"systemctl show": facts.section("show")})


@verifies("G-STEP-7", "G-INST-4")
@pytest.mark.role(spec.MINION)
def test_master_only_units_absent_on_minion(node, facts):
    master_only = [u.name for u in spec.UNITS if not u.runs_on(spec.MINION)]
    states = {u: facts.unit(u).get("LoadState") for u in master_only}
    present = [u for u, state in states.items() if state != "not-found"]
    expect(not present, node.name, "master-only units are absent on a minion",
           expected="no " + ", ".join(master_only),
           found=", ".join(f"{u} (LoadState={states[u] or 'not reported'})" for u in present),
           evidence={u: facts.unit_file(u) for u in present})


@verifies("G-SHOW-3", "G-STEP-11")
@reads(FAILED)
def test_no_failed_units(node, facts):
    failed = facts.failed_units()
    expect(facts.ok("failed") and not failed, node.name, "no failed units", expected="none",
           found=", ".join(failed) or f"`systemctl --failed` did not answer "
                                      f"(rc {facts.rc.get('failed', 'none')})",
           evidence={"systemctl --failed": facts.section("failed")})
