"""`pytest --dry-run`: the inventory validated, the provider's preflight run, and for
DigitalOcean the inventory checked against the API (helpers/providers/do_preflight.py);
then what a run would create is printed, and nothing is created.

Problems end the run as any bad inventory does: exit code 4, one line each, no traceback.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from helpers import inventory as inventory_mod
from helpers import paths
from helpers.inventory import Inventory
from helpers.providers import ProviderError, provider_class

DRY_RUN_ID = "dry-run"


def run(config) -> int:
    """The whole --dry-run: raises pytest.UsageError (exit 4) listing every problem."""
    try:
        path = inventory_mod.resolve_path(config.option.inventory,
                                          Path(config.invocation_params.dir))
        inventory = inventory_mod.load(path)
    except inventory_mod.InventoryError as exc:
        raise pytest.UsageError(str(exc)) from None
    found = problems(inventory)
    if found:
        raise pytest.UsageError("\n".join(
            [f"dry run of {path}: {len(found)} problem(s), nothing created", *found]))
    terminal = config.pluginmanager.get_plugin("terminalreporter")
    write = terminal.write_line if terminal is not None else print
    for line in [f"dry run of {path}: no problems found", *plan(inventory),
                 "nothing was created (dry run)"]:
        write(line)
    return 0


def problems(inventory: Inventory) -> list[str]:
    try:
        provider = provider_class(inventory.provider)(inventory, paths.REPORTS, DRY_RUN_ID)
        provider.preflight()
    except ProviderError as exc:   # a static host check lists its problems, one each
        return list(getattr(exc, "problems", None) or [str(exc)])
    if inventory.provider != "digitalocean":
        return []
    from helpers.providers import do_preflight
    from helpers.providers.digitalocean import DigitalOceanProvider
    assert isinstance(provider, DigitalOceanProvider)
    try:
        return do_preflight.check(inventory, provider.api)
    finally:
        provider.api.close()


def plan(inventory: Inventory) -> list[str]:
    """What a run with this inventory would create, then install."""
    nodes = ", ".join(f"{n.name} ({n.role})" for n in inventory.node_specs())
    lines = [f"would {_what(inventory)}: {nodes}"]
    artifacts = inventory.artifacts
    if inventory.bootstrap.enabled and artifacts is not None:
        source = ("built from source" if artifacts.build else
                  f"from {artifacts.dir}" if artifacts.dir else f"from {artifacts.url}")
        lines.append(f"would install the guide ({inventory.bootstrap.mode}), its binaries "
                     f"{source}{' (stand-ins)' if artifacts.standins else ''}")
    declared = inventory.deviations.declared()
    lines.append("deviations from the guide: "
                 + (", ".join(f"{k}={v}" for k, v in declared.items()) or "none"))
    return lines


def _what(inventory: Inventory) -> str:
    count = len(inventory.node_specs())
    if inventory.provider == "local" and inventory.local is not None:
        s = inventory.local
        return (f"create {count} systemd-nspawn nodes on this machine (public "
                f"{s.public_network}, private {s.private_network})")
    if inventory.provider == "qemu" and inventory.qemu is not None:
        q = inventory.qemu
        return (f"boot {count} QEMU VMs ({q.memory_mb} MB, accel {q.accel}) from "
                f"{q.image_url or q.image_path}")
    if inventory.provider == "digitalocean" and inventory.digitalocean is not None:
        d = inventory.digitalocean
        return (f"create {count} droplets ({d.size} in {d.region}, image {d.image}, "
                f"{d.user_data} user_data) and destroy them at the end")
    return f"attach to {count} hosts over SSH as {inventory.ssh.user}, creating nothing"
