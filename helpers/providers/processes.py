"""Processes a provider started, found again by pid and checked by command line,
so that a recycled pid is never signalled."""
from __future__ import annotations

import os
from pathlib import Path


def alive(pid: int | None, marker: str) -> bool:
    """True when `pid` runs (not a zombie) and its command line contains `marker`."""
    if not pid:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(
            errors="replace")
    except (OSError, IndexError):
        return False
    return state != "Z" and marker in cmdline


def read_pid(path: Path) -> int | None:
    """The pid a pid file holds; None when there is none (yet) or it is garbled."""
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def read_text(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def kill(pid: int | None, marker: str, sig: int) -> None:
    if pid is not None and alive(pid, marker):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def _stats():
    """(pid, fields after the command name) of every process; a vanished one is skipped."""
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                yield int(proc.name), (proc / "stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue


def children(pid: int) -> list[int]:
    """The live processes whose parent is `pid`."""
    return [child for child, fields in _stats() if int(fields[1]) == pid and fields[0] != "Z"]


def session_members(session: int) -> list[int]:
    """The live processes of a session (the one a process we started leads)."""
    return [member for member, fields in _stats()
            if int(fields[3]) == session and fields[0] != "Z"]
