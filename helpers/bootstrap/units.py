"""Unit files rendered from the spec, one node at a time, in the guide's layout."""
from __future__ import annotations

from helpers import spec
from helpers.inventory import Inventory


def node_values(inventory: Inventory, machines: list[str], private_ip: str) -> dict:
    """The spec's placeholders filled for one node; deviations override the guide."""
    return spec.render_values(inventory.guide.values(), machines=machines,
                              private_ip=private_ip,
                              deviations=inventory.deviations.declared())


def render(unit: spec.Unit, values: dict) -> str:
    lines = ["[Unit]", f"Description={unit.description}"]
    lines += [f"Requires={dep}" for dep in unit.requires]
    lines += [f"After={dep}" for dep in unit.after]
    lines += [f"Wants={dep}" for dep in unit.wants]
    lines += ["", "[Service]"]
    lines += [f"EnvironmentFile={path}" for path in unit.environment_files]
    lines += [f"ExecStartPre={pre.format(**values)}" for pre in unit.exec_start_pre]
    lines += [f"ExecStart={unit.exec_start.line(values)}"]
    lines += [f"ExecStartPost={post.format(**values)}" for post in unit.exec_start_post]
    lines += [f"Restart={unit.restart}", f"RestartSec={unit.restart_sec}"]
    lines += ["", "[Install]", f"WantedBy={unit.wanted_by}", ""]
    return "\n".join(lines)


def render_for_role(role: str, values: dict) -> dict[str, str]:
    """{unit name: file text} for every unit the guide puts on a node of this role."""
    return {unit.name: render(unit, values) for unit in spec.units_for(role)}


def deviations_from_guide(inventory: Inventory) -> dict[str, tuple[str, str]]:
    """{name: (guide's value, applied value)} for the report."""
    declared = inventory.deviations.declared()
    return {name: (spec.GUIDE_DOCKER.get(name, ""), value) for name, value in declared.items()}
