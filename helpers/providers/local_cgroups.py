"""A local node's cgroups: each node runs in its own cgroup (a child of ours) in every
hierarchy; nspawn then gives the node a cgroup namespace rooted there. Without this all
nodes' systemd instances would take the same cgroups. Docker's cgroups land inside the
node's, so a node's memory is its cgroup's memory.
"""
from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

from helpers.waiting import poll

log = logging.getLogger(__name__)


def hierarchies() -> list[tuple[Path, str]]:
    """(mount point, our cgroup path in it) for every mounted cgroup hierarchy."""
    ours = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        ours[controllers] = path
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        sep = fields.index("-")
        fstype, mount_point, options = fields[sep + 1], fields[4], fields[sep + 3]
        if fstype == "cgroup2" and "" in ours:
            found.append((Path(mount_point), ours[""]))
        elif fstype == "cgroup":
            opts = set(options.split(","))
            for controllers, path in ours.items():
                if controllers and set(controllers.split(",")) <= opts:
                    found.append((Path(mount_point), path))
                    break
    return found


def make_cgroups(machine: str) -> list[Path]:
    """The node's own cgroup, a child of ours, in every hierarchy (cpuset seeded)."""
    made = []
    for mount_point, ours in hierarchies():
        parent = mount_point / ours.lstrip("/")
        cg = parent / machine
        cg.mkdir(exist_ok=True)
        for name in ("cpuset.cpus", "cpuset.mems"):   # an empty cpuset admits no task
            if (cg / name).exists() and not (cg / name).read_text().strip():
                (cg / name).write_text((parent / name).read_text())
        made.append(cg)
    return made


def recorded_cgroups(node_dir: Path) -> list[Path]:
    try:
        return [Path(p) for p in (node_dir / "cgroups").read_text().split()]
    except OSError:
        return []


def cgroup_tree(cg: Path) -> list[Path]:
    """`cg` and every cgroup below it, deepest first. The tree changes while we walk it
    (the node's systemd removes cgroups of stopped units); os.walk skips what vanished."""
    dirs = [Path(top) for top, _, _ in os.walk(cg)]
    return sorted(dirs, key=lambda p: -len(p.parts))


def cgroup_pids(cgroups: list[Path]) -> set[int]:
    pids: set[int] = set()
    for cg in cgroups:
        for d in cgroup_tree(cg):
            try:
                pids.update(int(p) for p in (d / "cgroup.procs").read_text().split())
            except OSError:
                pass
    return pids


def remove_cgroups(cgroups: list[Path]) -> None:
    # Children first; a cgroup can only go once its processes have exited, which the
    # kernel finishes a little after the kill, hence the short retry.
    for cg in cgroups:
        for d in cgroup_tree(cg):
            rmdir_retry(d)


def rmdir_retry(path: Path, timeout: float = 2) -> None:
    def removed() -> bool:
        with contextlib.suppress(FileNotFoundError):
            path.rmdir()
        return True
    try:
        poll(removed, timeout=timeout, interval=0.1, retry_on=(OSError,))
    except OSError:
        log.warning("local provider: could not remove cgroup %s", path)
