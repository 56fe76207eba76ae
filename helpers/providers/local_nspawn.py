"""A local node's processes and files on the host: the supervisor that keeps its
systemd-nspawn running, and stopping, killing and removing the node.

A detached bash loop per node (pid in `supervisor.pid`) restarts nspawn when it exits
133 (`systemctl reboot` inside) and exits with any other status. SIGTERM to it stops
the loop and forwards SIGTERM to nspawn, which powers the node off. Only processes
whose pid file and command line prove them ours are signalled.
"""
from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
from pathlib import Path

from helpers.providers import netns
from helpers.providers.base import ProviderError
from helpers.providers.local_cgroups import (
    cgroup_pids,
    cgroup_tree,
    recorded_cgroups,
    remove_cgroups,
)
from helpers.providers.processes import alive, kill, read_pid, read_text
from helpers.waiting import poll

log = logging.getLogger(__name__)

SUPERVISOR_NAME = "k8sconf-node-supervisor"    # $0 of the supervisor: how we recognise it
NSPAWN_RUNTIME = Path("/run/systemd/nspawn")

# Restart nspawn while it exits 133 (reboot); stop on anything else or on SIGTERM.
SUPERVISOR_SCRIPT = r"""
dir=$1; shift
echo $$ > "$dir/supervisor.pid"
while read -r cg; do echo $$ > "$cg/cgroup.procs" || echo "supervisor: cannot join $cg"; done < "$dir/cgroups"
stop=0; child=
trap 'stop=1; [ -z "$child" ] || kill -TERM "$child" 2>/dev/null' TERM INT HUP
while [ "$stop" = 0 ]; do
  "$@" </dev/null &
  child=$!
  echo "$child" > "$dir/nspawn.pid"
  [ "$stop" = 0 ] || kill -TERM "$child"
  while kill -0 "$child" 2>/dev/null; do wait "$child"; done
  wait "$child"; rc=$?
  echo "supervisor: systemd-nspawn exited $rc"
  [ "$rc" = 133 ] || exit "$rc"
done
"""



def our_node_dirs(prefix: str, work_dir: Path) -> list[Path]:
    if not work_dir.is_dir():
        return []
    return sorted(d for d in work_dir.glob(f"{prefix}-*")
                  if d.is_dir() and read_text(d / "prefix") == prefix)


def signal_node(node_dir: Path, sig: int) -> None:
    """SIGTERM the supervisor (it forwards to nspawn, which powers the node off)."""
    supervisor = read_pid(node_dir / "supervisor.pid")
    if alive(supervisor, SUPERVISOR_NAME):
        kill(supervisor, SUPERVISOR_NAME, sig)
    else:
        kill(read_pid(node_dir / "nspawn.pid"), "systemd-nspawn", sig)


def kill_unit_processes(node_dir: Path, unit: str) -> None:
    """SIGKILL one unit's processes in a node that is about to be destroyed.

    Used for etcd: stopped gracefully, the last leader of a cluster whose other members
    are stopping at the same moment waits ~7 s for a leadership transfer that cannot
    succeed. Its data is discarded with the node, so there is nothing to protect.
    """
    for cg in recorded_cgroups(node_dir):
        for unit_dir in (d for d in cgroup_tree(cg) if d.name == unit):
            for pid in cgroup_pids([unit_dir]):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass


def node_running(node_dir: Path) -> bool:
    return (alive(read_pid(node_dir / "supervisor.pid"), SUPERVISOR_NAME)
            or alive(read_pid(node_dir / "nspawn.pid"), "systemd-nspawn")
            or bool(cgroup_pids(recorded_cgroups(node_dir))))


def wait_stopped(dirs: list[Path], timeout: float) -> None:
    poll(lambda: not any(node_running(d) for d in dirs), timeout=timeout, interval=0.2)


def kill_node(node_dir: Path) -> None:
    """SIGKILL whatever of the node still runs: supervisor, nspawn, and every process in
    the node's cgroups (killing nspawn alone leaves the container running)."""
    if not node_running(node_dir):
        return
    log.warning("local provider: %s did not power off in time; killing it", node_dir.name)
    kill(read_pid(node_dir / "supervisor.pid"), SUPERVISOR_NAME, signal.SIGKILL)
    kill(read_pid(node_dir / "nspawn.pid"), "systemd-nspawn", signal.SIGKILL)
    cgroups = recorded_cgroups(node_dir)
    def all_killed() -> bool:
        pids = cgroup_pids(cgroups)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return not pids
    poll(all_killed, timeout=10, interval=0.1)


def remove_node_dir(node_dir: Path) -> None:
    root = node_dir / "root"
    if netns.is_mountpoint(root):
        proc = subprocess.run(["umount", str(root)], capture_output=True, text=True)
        if proc.returncode != 0:
            raise ProviderError(f"local provider: cannot unmount {root}: {proc.stderr.strip()}")
    remove_cgroups(recorded_cgroups(node_dir))
    # nspawn cannot clean its runtime files under a /run that is not tmpfs, nor after a kill.
    machine = node_dir.name
    shutil.rmtree(NSPAWN_RUNTIME / "propagate" / machine, ignore_errors=True)
    lock = read_text(node_dir / "nspawn-lock")
    if lock:
        (NSPAWN_RUNTIME / "locks" / lock).unlink(missing_ok=True)
    netns.safe_rmtree(node_dir)


def nspawn_lock_name(root: Path) -> str:
    st = os.stat(root)
    return f"inode-{st.st_dev}:{st.st_ino}"


def remove_empty_dirs(paths: list[Path]) -> None:
    for path in paths:
        try:
            path.rmdir()
        except OSError:
            pass
