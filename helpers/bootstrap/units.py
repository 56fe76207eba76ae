"""Unit files rendered from the spec, one node at a time, in the guide's layout."""
from __future__ import annotations

import shlex
from dataclasses import replace

from helpers import spec
from helpers.inventory import Inventory


def node_values(inventory: Inventory, machines: list[str], private_ip: str) -> dict:
    """The spec's placeholders filled for one node; deviations override the guide."""
    return spec.render_values(inventory.guide.values(), machines=machines,
                              private_ip=private_ip,
                              deviations=inventory.deviations.declared())


def with_deviations(unit: spec.Unit, values: dict) -> spec.Unit:
    """The unit as the bootstrap writes it: the guide's, plus what a declared deviation
    adds to it (the string deviations already sit in `values`)."""
    if unit.name == spec.DOCKER and values.get("docker_forward_accept"):
        return replace(unit, exec_start_post=unit.exec_start_post + (spec.FORWARD_ACCEPT,))
    if unit.name == "kubelet.service" and values.get("kubelet_docker_api"):
        return replace(unit, environment=unit.environment + (
            f"DOCKER_HOST=unix://{spec.DOCKER_API_PIN_SOCKET}",))
    return unit


def deviation_units(values: dict) -> tuple[spec.Unit, ...]:
    """Units of our own that declared deviations need on every node."""
    return (spec.DOCKER_API_PIN,) if values.get("kubelet_docker_api") else ()


def render(unit: spec.Unit, values: dict) -> str:
    unit = with_deviations(unit, values)
    lines = ["[Unit]", f"Description={unit.description.format(**values)}"]
    lines += [f"Requires={dep}" for dep in unit.requires]
    lines += [f"After={dep}" for dep in unit.after]
    lines += [f"Wants={dep}" for dep in unit.wants]
    lines += [f"Before={dep}" for dep in unit.before]
    lines += ["", "[Service]"]
    lines += [f"EnvironmentFile={path}" for path in unit.environment_files]
    lines += [f"Environment={pair}" for pair in unit.environment]
    lines += [f"ExecStartPre={pre.format(**values)}" for pre in unit.exec_start_pre]
    lines += [f"ExecStart={unit.exec_start.line(values)}"]
    lines += [f"ExecStartPost={post.format(**values)}" for post in unit.exec_start_post]
    lines += [f"Restart={unit.restart}", f"RestartSec={unit.restart_sec}"]
    lines += ["", "[Install]", f"WantedBy={unit.wanted_by}", ""]
    return "\n".join(lines)


def render_for_role(role: str, values: dict) -> dict[str, str]:
    """{unit name: file text} for every unit the guide puts on a node of this role, and
    the units of our own that declared deviations need."""
    units = spec.units_for(role) + deviation_units(values)
    return {unit.name: render(unit, values) for unit in units}


def deviations_from_guide(inventory: Inventory) -> dict[str, tuple[str, str]]:
    """{name: (what the guide writes or assumes, what is applied)} for the report."""
    declared = inventory.deviations.declared()
    values = node_values(inventory, [], "")
    return {name: (spec.GUIDE_DOCKER.get(name) or spec.GUIDE_ASSUMES.get(name, ""),
                   _applied(name, value, values)) for name, value in declared.items()}


def _applied(name: str, value, values: dict) -> str:
    if name == "docker_forward_accept":
        return "docker.service ExecStartPost=" + spec.FORWARD_ACCEPT.format(**values)
    if name == "kubelet_docker_api":
        return (f"docker-api-pin.service serves API v{value} on "
                f"{spec.DOCKER_API_PIN_SOCKET}; kubelet.service "
                f"Environment=DOCKER_HOST=unix://{spec.DOCKER_API_PIN_SOCKET}")
    if name == "pause_image":
        return (f"{spec.PAUSE_IMAGE} imported on every node from v0.7.0's build/pause "
                f"(label {spec.PRELOAD_LABEL})")
    return str(value)


# the lines the guide writes around ExecStart=, as `systemctl show` reports them
AROUND_EXEC_START = ("EnvironmentFiles", "ExecStartPre", "ExecStartPost")


def as_systemd_shows(unit: spec.Unit, values: dict) -> dict[str, list[str]]:
    """{property: entries} for AROUND_EXEC_START, in the form systemd's effective values
    take: each command's words unquoted (systemd parses the line as a shell would) with
    whether a leading "-" lets it fail, each file with whether it may be missing."""
    unit = with_deviations(unit, values)

    def command(template: str) -> str:
        line = template.format(**values)
        return f"{' '.join(shlex.split(line.lstrip('-')))} (ignore_errors=" \
               f"{'yes' if line.startswith('-') else 'no'})"

    return {"EnvironmentFiles": [f"{p.lstrip('-')} (ignore_errors="
                                 f"{'yes' if p.startswith('-') else 'no'})"
                                 for p in unit.environment_files],
            "ExecStartPre": [command(t) for t in unit.exec_start_pre],
            "ExecStartPost": [command(t) for t in unit.exec_start_post]}
