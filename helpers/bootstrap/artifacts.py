"""The binaries for /opt/bin: the guide's own, built from source (helpers.bootstrap.build);
a local directory; or a tarball URL checked against its sha256."""
from __future__ import annotations

import shutil
import tarfile
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from helpers import spec
from helpers.bootstrap import build as build_mod
from helpers.bootstrap.steps import StepLog
from helpers.inventory import ROOT
from helpers.inventory_sections import Artifacts

DOWNLOAD_TIMEOUT = 120
STANDINS_DIR = ROOT / "node" / "standins"
# the stand-ins' -version says so; a real binary never does
STANDIN_MARK = "(stand-in"


class ArtifactError(Exception):
    pass


sha256_of = build_mod.file_sha256


@dataclass
class BinarySet:
    """What the bootstrap ships: {name: local path}, with each file's sha256 and version.

    `node_programs`: what the declared deviations run on the nodes (not the guide's;
    they go to spec.DEVIATION_DIR, never to /opt/bin). `origin` says where the binaries
    came from, `fallback` why the stand-ins run instead of the real binaries."""

    files: dict[str, Path]
    checksums: dict[str, str]
    standins: bool
    versions: dict[str, str] = field(default_factory=dict)
    node_programs: dict[str, Path] = field(default_factory=dict)
    origin: str = ""
    build: dict | None = None
    fallback: str = ""

    def for_role(self, role: str, ship: str) -> dict[str, Path]:
        if ship == "all":
            return dict(self.files)
        return {n: p for n, p in self.files.items() if n in spec.REQUIRED_BINARIES[role]}

    def missing_for(self, role: str) -> list[str]:
        return [n for n in spec.REQUIRED_BINARIES[role] if n not in self.files]

    def summary(self) -> dict:
        """For the run's state, the summary and the report's environment."""
        return {"standins": self.standins, "origin": self.origin, "fallback": self.fallback,
                "binaries": {n: {"sha256": self.checksums[n],
                                 "version": self.versions.get(n, "")} for n in self.files},
                "patches": (self.build or {}).get("patches", []),
                "sources": (self.build or {}).get("sources", {}),
                "go": (self.build or {}).get("go", "")}


def shipped_version(binary: str, state: dict) -> str:
    """What `binary -version` must print on the nodes: what it said of itself where it was
    built or unpacked (the run's state, as summary() wrote it), or, when this run shipped
    nothing or the binary gave no answer there, the guide's release."""
    said = (((state.get("binaries") or {}).get("binaries") or {}).get(binary) or {}).get(
        "version", "")
    if said and not said.startswith("("):      # "(not asked)", "(no answer ...)"
        return said
    return spec.FLANNEL_VERSION if binary == "flannel" else spec.KUBERNETES_VERSION


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


def resolve(artifacts: Artifacts, cache: Path, log: StepLog | None = None) -> BinarySet:
    """The binary set; raises build.SourcesUnavailable when `build: true` can neither find
    its sources nor a cached build, ArtifactError or build.BuildError otherwise."""
    log = log or StepLog()
    if artifacts.build:
        built = build_mod.ensure(cache, log)
        record = built.record
        files = _from_dir(built.opt_bin)
        programs = {p.name: p for p in sorted(built.node_programs.iterdir())}
        binaries = BinarySet(files, {n: i["sha256"] for n, i in record["binaries"].items()},
                             False, {n: i["version"] for n, i in record["binaries"].items()},
                             programs, f"built from source here (build {record['key']})",
                             record)
    else:
        if artifacts.dir is not None:
            files, origin = _from_dir(artifacts.dir), f"artifacts.dir {artifacts.dir}"
        else:
            # the inventory requires url and sha256 when there is no dir
            assert artifacts.url is not None and artifacts.sha256 is not None
            tarball = _download(artifacts.url, artifacts.sha256, cache / "downloads")
            files = _from_dir(_extract(tarball, cache / "unpacked" / artifacts.sha256))
            origin = f"artifacts.url {artifacts.url}"
        binaries = BinarySet(files, {n: sha256_of(p) for n, p in files.items()},
                             artifacts.standins, {n: build_mod.version_of(p)
                                                  for n, p in files.items()}, origin=origin)
    if not binaries.files:
        raise ArtifactError("artifacts: no binaries found")
    missing = binaries.missing_for(spec.MASTER)
    if missing:
        raise ArtifactError(f"artifacts: missing {', '.join(missing)} (the guide's master needs "
                            f"{', '.join(spec.REQUIRED_BINARIES[spec.MASTER])})")
    if not binaries.standins and any(STANDIN_MARK in v for v in binaries.versions.values()):
        raise ArtifactError(f"{binaries.origin}: these are this project's stand-ins (their "
                            "-version says so): mark them 'standins: true'")
    return binaries


def standins(reason: str) -> BinarySet:
    """This project's stand-ins, when the real binaries cannot be had (`reason`)."""
    binaries = resolve(Artifacts(dir=STANDINS_DIR, standins=True), Path("/nonexistent"))
    binaries.fallback = reason
    return binaries
