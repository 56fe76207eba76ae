"""The sealed sign-off bundle of a run, `reports/signoff-<run id>.tar.gz`: one artefact to
archive with a release.

It holds the summary (md and json), the JUnit report, the Allure results and the facts
the checks saw, and `provenance.json`: the suite's git commit and whether its tree was
dirty, the inventory (secrets removed) and its sha256, each binary's sha256 and version,
each node's OS, kernel, Docker and etcd versions, and the durations. `SHA256SUMS` covers
every other file. Every text file passes through reporting.redact on its way in, and the
run's SSH key is never among them.

    python3 -m helpers.bundle verify FILE     (bash scripts/verify-bundle FILE)
"""
from __future__ import annotations

import hashlib
import io
import json
import re
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import yaml

from helpers.reporting import redact

MANIFEST = "SHA256SUMS"
# keys whose values never leave the machine, wherever they appear in an inventory
SECRET_KEY = re.compile(r"token|secret|password|passphrase|private", re.I)


def bundle_path(reports: Path, run_id: str) -> Path:
    return reports / f"signoff-{run_id}.tar.gz"


def git_provenance(root: Path) -> dict:
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()
    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return {"commit": "unknown (not a git checkout, or git is not installed)",
                "dirty": None}
    return {"commit": commit, "dirty": dirty}


def without_secrets(data):
    if isinstance(data, dict):
        return {k: ("[REMOVED]" if SECRET_KEY.search(str(k)) else without_secrets(v))
                for k, v in data.items()}
    if isinstance(data, list):
        return [without_secrets(v) for v in data]
    return data


def provenance(state: dict, inventory_path: Path, root: Path) -> dict:
    raw = inventory_path.read_bytes() if inventory_path.is_file() else b""
    try:
        inventory = without_secrets(yaml.safe_load(raw) or {})
    except yaml.YAMLError:
        inventory = "(not readable YAML)"
    steps = state.get("steps") or []
    return {
        "suite": git_provenance(root),
        "run_id": state.get("run_id"), "written": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                 time.gmtime()),
        "inventory": {"path": str(inventory_path), "sha256": hashlib.sha256(raw).hexdigest(),
                      "content": inventory},
        "binaries": state.get("binaries") or {},
        "deviations": (state.get("bootstrap") or {}).get("deviations") or {},
        "nodes": state.get("node_versions") or {},
        "durations": {step["name"] + (f" [{step['node']}]" if step.get("node") else ""):
                      step.get("seconds") for step in steps},
    }


def _text_or_bytes(data: bytes) -> bytes:
    try:
        return redact(data.decode()).encode()
    except UnicodeDecodeError:
        return data


def write(reports: Path, state: dict, inventory_path: Path, root: Path,
          files: dict[str, Path]) -> Path:
    """Seal the run: {name in the bundle: file or directory} plus provenance.json."""
    run_id = state.get("run_id") or "unknown"
    top = f"signoff-{run_id}"
    members: dict[str, bytes] = {}
    for name, path in files.items():
        if path.is_dir():
            for item in sorted(p for p in path.rglob("*") if p.is_file()):
                members[f"{name}/{item.relative_to(path)}"] = _text_or_bytes(item.read_bytes())
        elif path.is_file():
            members[name] = _text_or_bytes(path.read_bytes())
    members["provenance.json"] = redact(json.dumps(
        provenance(state, inventory_path, root), indent=2, default=str)).encode()
    manifest = "".join(f"{hashlib.sha256(data).hexdigest()}  {name}\n"
                       for name, data in sorted(members.items()))
    members[MANIFEST] = manifest.encode()
    target = bundle_path(reports, run_id)
    partial = target.with_name(target.name + ".part")
    with tarfile.open(partial, "w:gz") as tar:
        for name, data in sorted(members.items()):
            info = tarfile.TarInfo(f"{top}/{name}")
            info.size, info.mtime, info.mode = len(data), int(time.time()), 0o644
            tar.addfile(info, io.BytesIO(data))
    partial.replace(target)
    return target


def read(path: Path) -> dict[str, bytes]:
    """{name below the top folder: content} of a bundle."""
    found = {}
    with tarfile.open(path, "r:gz") as tar:
        for member in tar:
            if member.isfile() and (handle := tar.extractfile(member)) is not None:
                found[member.name.partition("/")[2]] = handle.read()
    return found


def verify(path: Path) -> list[str]:
    """Problems with a bundle against its manifest (none: it is intact)."""
    try:
        members = read(path)
    except (OSError, tarfile.TarError, EOFError) as exc:
        return [f"{path}: not a readable bundle ({str(exc).splitlines()[0] if str(exc) else exc})"]
    if MANIFEST not in members:
        return [f"{path}: no {MANIFEST} in it"]
    listed = {}
    for line in members[MANIFEST].decode().splitlines():
        digest, _, name = line.partition("  ")
        listed[name] = digest
    problems = [f"{name}: listed in {MANIFEST} but missing" for name in listed
                if name not in members]
    problems += [f"{name}: sha256 {hashlib.sha256(members[name]).hexdigest()}, manifest says "
                 f"{digest}" for name, digest in listed.items()
                 if name in members and hashlib.sha256(members[name]).hexdigest() != digest]
    problems += [f"{name}: not in {MANIFEST}" for name in members
                 if name != MANIFEST and name not in listed]
    return problems


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] != "verify":
        print("usage: bash scripts/verify-bundle FILE", file=sys.stderr)
        return 2
    path = Path(argv[1])
    problems = verify(path)
    if problems:
        for problem in problems:
            print(f"BAD: {problem}")
        return 1
    count = len(read(path)) - 1
    print(f"OK: {path}: {count} files match {MANIFEST}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
