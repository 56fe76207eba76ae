"""The files a local node gets of its own, written through its mounted overlay before it
boots: its host key and the run's authorized key (the provider writes the rest of its
identity with write()).
"""
from __future__ import annotations

import os
from pathlib import Path

from helpers.providers.base import ProviderError
from helpers.providers.machines import keygen, public_line


def write(path: Path, text: str, mode: int = 0o644) -> None:
    """A file of the node's tree, written through its mounted overlay."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_symlink():     # never follow a link of the node's tree out to the host
        path.unlink()
    path.write_text(text)
    os.chmod(path, mode)


def install_host_key(node_dir: Path, root: Path, name: str) -> str:
    """A fresh ed25519 host key for the node (kept beside it); returns the public line
    that `Node.host_keys` carries, so that SSH verifies this very key."""
    key = node_dir / "ssh_host_ed25519_key"
    keygen(key, f"root@{name}", "local provider")
    write(root / "etc/ssh/ssh_host_ed25519_key", key.read_text(), mode=0o600)
    write(root / "etc/ssh/ssh_host_ed25519_key.pub", key.with_suffix(".pub").read_text())
    return public_line(key)


def authorize(root: Path, user: str, public_key: str) -> None:
    uid, gid = user_ids(root, user)
    ssh_dir = root / "home" / user / ".ssh"
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    write(ssh_dir / "authorized_keys", public_key, mode=0o600)
    for path in (ssh_dir, ssh_dir / "authorized_keys"):
        os.chown(path, uid, gid)


def user_ids(root: Path, user: str) -> tuple[int, int]:
    for line in (root / "etc/passwd").read_text().splitlines():
        fields = line.split(":")
        if fields[0] == user:
            return int(fields[2]), int(fields[3])
    raise ProviderError(f"local provider: user {user} missing from the node image")
