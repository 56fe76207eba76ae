"""The one renderer of what a Flatcar/CoreOS machine is told at first boot.

Why it exists: the cloud-config bootstrap (userdata.py), the qemu provider and the
DigitalOcean provider all tell a node the same few things (a login user and its SSH keys,
files with a mode, systemd units, some with drop-ins), as Ignition 3.3 JSON or as its
legacy CoreOS cloud-config twin. Each used to build that shape itself; here it is built
once, so the three cannot drift apart.
"""
from __future__ import annotations

import json
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass

import yaml

VERSION = "3.3.0"

File = tuple[str, str, int]         # path, text, mode
Unit = tuple[str, str | None]       # name, contents (None: the image's own unit, enabled)
DropIn = tuple[str, str, str]       # unit name, drop-in name, contents


def data_url(text: str) -> str:
    return "data:," + urllib.parse.quote(text)


@dataclass(frozen=True)
class MachineConfig:
    user: str
    ssh_keys: Sequence[str]
    files: Sequence[File] = ()
    units: Sequence[Unit] = ()      # all enabled (cloud-config: also started)
    dropins: Sequence[DropIn] = ()  # each for a unit in `units`
    hostname: str | None = None     # cloud-config only: Ignition writes /etc/hostname as a file
    links: Sequence[tuple[str, str]] = ()   # (path, target) symlinks; Ignition only

    def __post_init__(self) -> None:
        unknown = {owner for owner, _, _ in self.dropins} - {name for name, _ in self.units}
        if unknown:
            raise ValueError(f"drop-ins for units not in the config: {sorted(unknown)}")

    def _dropins(self, unit: str) -> list[tuple[str, str]]:
        return [(name, text) for owner, name, text in self.dropins if owner == unit]

    def ignition_dict(self) -> dict:
        units = []
        for name, contents in self.units:
            unit: dict = {"name": name, "enabled": True}
            if contents is not None:
                unit["contents"] = contents
            if dropins := self._dropins(name):
                unit["dropins"] = [{"name": n, "contents": text} for n, text in dropins]
            units.append(unit)
        storage: dict = {"files": [{"path": path, "mode": mode, "overwrite": True,
                                    "contents": {"source": data_url(text)}}
                                   for path, text, mode in self.files]}
        if self.links:
            storage["links"] = [{"path": path, "target": target, "overwrite": True}
                                for path, target in self.links]
        return {
            "ignition": {"version": VERSION},
            "passwd": {"users": [{"name": self.user, "sshAuthorizedKeys": list(self.ssh_keys)}]},
            "storage": storage,
            "systemd": {"units": units},
        }

    def ignition(self) -> str:
        """Compact Ignition JSON."""
        return json.dumps(self.ignition_dict(), separators=(",", ":"))

    def cloud_config(self) -> str:
        """`#cloud-config` YAML; multi-line strings as literal blocks, as people write them."""
        if self.links:
            raise ValueError("cloud-config cannot make symlinks: use Ignition")
        config: dict = {"hostname": self.hostname} if self.hostname else {}
        config["ssh_authorized_keys"] = list(self.ssh_keys)
        if self.user != "core":     # CoreOS's own user needs no declaring
            config["users"] = [{"name": self.user, "ssh-authorized-keys": list(self.ssh_keys)}]
        config["write_files"] = [{"path": path, "permissions": f"0{mode:o}", "content": text}
                                 for path, text, mode in self.files]
        units = []
        for name, contents in self.units:
            unit: dict = {"name": name, "enable": True, "command": "start"}
            if contents is not None:
                unit["content"] = contents
            if dropins := self._dropins(name):
                unit["drop-ins"] = [{"name": n, "content": text} for n, text in dropins]
            units.append(unit)
        config["coreos"] = {"units": units}
        return "#cloud-config\n" + yaml.dump(config, Dumper=_LiteralDumper, sort_keys=False)


class _LiteralDumper(yaml.SafeDumper):
    pass


def _text(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_LiteralDumper.add_representer(str, _text)
