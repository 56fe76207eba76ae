"""The binaries for /opt/bin: a local directory, or a tarball URL checked against its sha256."""
from __future__ import annotations

import hashlib
import shutil
import tarfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from helpers import spec
from helpers.inventory import Artifacts

DOWNLOAD_TIMEOUT = 120


class ArtifactError(Exception):
    pass


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class BinarySet:
    """What the bootstrap ships: {name: local path}, with each file's sha256."""

    files: dict[str, Path]
    checksums: dict[str, str]
    standins: bool

    def for_role(self, role: str, ship: str) -> dict[str, Path]:
        if ship == "all":
            return dict(self.files)
        return {n: p for n, p in self.files.items() if n in spec.REQUIRED_BINARIES[role]}

    def missing_for(self, role: str) -> list[str]:
        return [n for n in spec.REQUIRED_BINARIES[role] if n not in self.files]


def _from_dir(directory: Path) -> dict[str, Path]:
    if not directory.is_dir():
        raise ArtifactError(f"artifacts.dir {directory}: not a directory")
    return {p.name: p for p in sorted(directory.iterdir())
            if p.is_file() and not p.name.startswith((".", "_")) and p.suffix != ".py"}


def _download(url: str, sha256: str, cache: Path) -> Path:
    cache.mkdir(parents=True, exist_ok=True)
    target = cache / f"{sha256}.tar.gz"
    if target.exists() and sha256_of(target) == sha256:
        return target
    partial = target.with_suffix(".part")
    try:
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT) as response, \
                open(partial, "wb") as out:
            shutil.copyfileobj(response, out)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise ArtifactError(f"artifacts.url {url}: download failed: {exc}") from None
    found = sha256_of(partial)
    if found != sha256:
        partial.unlink()
        raise ArtifactError(f"artifacts.url {url}: sha256 is {found}, expected {sha256}")
    partial.rename(target)
    return target


def _extract(tarball: Path, into: Path) -> Path:
    into.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(tarball) as tar:
            tar.extractall(into, filter="data")
    except (tarfile.TarError, OSError) as exc:
        raise ArtifactError(f"artifacts: cannot unpack {tarball.name}: {exc}") from None
    # release tarballs often wrap the binaries in one top-level folder
    entries = [p for p in into.iterdir()]
    return entries[0] if len(entries) == 1 and entries[0].is_dir() else into


def resolve(artifacts: Artifacts, cache: Path) -> BinarySet:
    if artifacts.dir is not None:
        files = _from_dir(artifacts.dir)
    else:
        tarball = _download(artifacts.url, artifacts.sha256, cache / "downloads")
        files = _from_dir(_extract(tarball, cache / "unpacked" / artifacts.sha256))
    if not files:
        raise ArtifactError("artifacts: no binaries found")
    binaries = BinarySet(files, {n: sha256_of(p) for n, p in files.items()}, artifacts.standins)
    missing = binaries.missing_for(spec.MASTER)
    if missing:
        raise ArtifactError(f"artifacts: missing {', '.join(missing)} (the guide's master needs "
                            f"{', '.join(spec.REQUIRED_BINARIES[spec.MASTER])})")
    return binaries
