"""The nightly workflow's inventory: inventories/do.yaml with the repository's image and
the SSH key's fingerprint filled in, so that switching the workflow on needs no edit.

    python tools/nightly_inventory.py IMAGE FINGERPRINT SOURCE TARGET

The result is validated like any inventory: a bad value is one line, exit code 4.
"""
from __future__ import annotations

import sys
from pathlib import Path

import yaml

from helpers import inventory as inventory_mod


def main(argv: list[str]) -> int:
    if len(argv) != 4:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    image, fingerprint, source, target = argv
    data = yaml.safe_load(Path(source).read_text())
    data["digitalocean"].update(image=int(image) if image.isdigit() else image,
                                ssh_keys=[fingerprint])
    try:
        inventory_mod.parse(data, source=f"{source} with DIGITALOCEAN_IMAGE and the SSH key")
    except inventory_mod.InventoryError as exc:
        print(exc, file=sys.stderr)
        return 4
    # beside the source: the inventory's relative paths stay as they were
    Path(target).write_text(yaml.safe_dump(data, sort_keys=False))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
