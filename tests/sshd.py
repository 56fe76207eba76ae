"""A throwaway OpenSSH sshd on a free loopback port, for tests of the SSH layer.

    from tests.sshd import running_sshd, sshd   # `sshd` is a module-scoped fixture

    with running_sshd(tmp_dir) as server:
        node = server.node()                     # a Node with the right host key
        Connection(node, server.user, server.client_key, ...)

The server runs ``/usr/sbin/sshd -D -e -f <generated config>`` with a generated
ed25519 host key, an authorized_keys file holding a generated client key, and
its log (``-e``) in ``<tmp>/sshd.log``. It accepts the current user only, by key.
Stopping kills sshd and whatever it spawned (session processes, commands
left running) by pid, never by name.
"""
from __future__ import annotations

import contextlib
import getpass
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from helpers.providers.base import Node

SSHD = "/usr/sbin/sshd"
SSH_KEYGEN = shutil.which("ssh-keygen") or "/usr/bin/ssh-keygen"
START_TIMEOUT = 10.0


class SSHDUnavailable(RuntimeError):
    pass


@dataclass
class SSHServer:
    host: str
    port: int
    user: str
    client_key: Path          # private key that may log in
    client_pubkey_line: str
    host_key_line: str        # "ssh-ed25519 AAAA..." as in Node.host_keys
    directory: Path
    process: subprocess.Popen

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def log_path(self) -> Path:
        return self.directory / "sshd.log"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def logins(self) -> int:
        """How many SSH connections sshd has authenticated so far."""
        return self.log().count("Accepted publickey for ")

    def known_hosts_line(self) -> str:
        return f"[{self.host}]:{self.port} {self.host_key_line}"

    def node(self, name: str = "node-1", host_keys: tuple[str, ...] | None = None,
             port: int | None = None) -> Node:
        return Node(name=name, role="master", public_ip=self.host, private_ip=self.host,
                    ssh_host=self.host, ssh_port=self.port if port is None else port,
                    host_keys=(self.host_key_line,) if host_keys is None else tuple(host_keys))

    def descendants(self) -> list[int]:
        return _descendants(self.pid)

    def commands(self, cmdline: str) -> list[int]:
        """Pids of processes under sshd whose command line is exactly cmdline."""
        found = []
        for pid in self.descendants():
            try:
                args = Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").split(b"\0")
            except OSError:
                continue
            if b" ".join(args).decode(errors="replace") == cmdline:
                found.append(pid)
        return found

    def kill_leftovers(self) -> None:
        """Kill commands sessions left running (say, after a timeout). Call it before
        the client disconnects: a command outlives its session, and is then no longer
        under sshd for stop() to find."""
        for pid in reversed(self.descendants()):
            try:
                if Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"sshd"):
                    continue
                os.kill(pid, signal.SIGKILL)
            except (OSError, ProcessLookupError):
                continue


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def keygen(path: Path, comment: str) -> str:
    """Make an ed25519 key pair at path (no passphrase); returns the public key line."""
    subprocess.run([SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
                   check=True, stdin=subprocess.DEVNULL, capture_output=True, timeout=20)
    kind, blob = path.with_name(path.name + ".pub").read_text().split()[:2]
    return f"{kind} {blob}"


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    return children


def _descendants(pid: int) -> list[int]:
    children, found, todo = _children_map(), [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _wait_for_banner(host: str, port: int, process: subprocess.Popen, deadline: float) -> bool:
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        try:
            with socket.create_connection((host, port), timeout=1) as sock:
                sock.settimeout(1)
                if sock.recv(64).startswith(b"SSH-2.0-"):
                    return True
        except OSError:
            pass
        time.sleep(0.05)
    return False


def _config(directory: Path, host: str, port: int, user: str) -> str:
    lines = [
        f"Port {port}",
        f"ListenAddress {host}",
        f"HostKey {directory / 'host_ed25519'}",
        f"AuthorizedKeysFile {directory / 'authorized_keys'}",
        f"PidFile {directory / 'sshd.pid'}",
        "StrictModes no",
        "UsePAM no",
        "PermitRootLogin prohibit-password",
        "PubkeyAuthentication yes",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        f"AllowUsers {user}",
        "LogLevel INFO",
        "MaxStartups 100",
        "MaxSessions 100",
        "ClientAliveInterval 0",
        "UseDNS no",
        "Subsystem sftp internal-sftp",
        # Debian's bash sources ~/.bashrc for ssh commands when SHLVL < 2; an
        # interactive user's rc (pyenv, conda...) would add ~0.2 s to every command
        "SetEnv SHLVL=1",
    ]
    return "\n".join(lines) + "\n"


def stop(process: subprocess.Popen, timeout: float = 5.0) -> None:
    """Stop sshd and everything it spawned, by pid."""
    pids = _descendants(process.pid)
    if process.poll() is None:
        process.terminate()
    for pid in reversed(pids):  # session processes outlive the listener otherwise
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=timeout)


@contextlib.contextmanager
def running_sshd(directory: Path, host: str = "127.0.0.1"):
    """Start sshd in directory (created if need be); yields an SSHServer."""
    if not os.access(SSHD, os.X_OK):
        raise SSHDUnavailable(f"{SSHD} is missing: apt-get install -y openssh-server")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege separation dir
    user = getpass.getuser()
    host_key_line = keygen(directory / "host_ed25519", "test-sshd-host")
    client_key = directory / "client_ed25519"
    client_line = keygen(client_key, "test-sshd-client")
    (directory / "authorized_keys").write_text(client_line + "\n")

    last_error = ""
    for _attempt in range(5):  # a free port can be taken between probe and bind
        port = free_port(host)
        config = directory / "sshd_config"
        config.write_text(_config(directory, host, port, user))
        log_path = directory / "sshd.log"
        with log_path.open("ab") as log:
            process = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)],
                                       stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                       start_new_session=True)
        if _wait_for_banner(host, port, process, time.monotonic() + START_TIMEOUT):
            break
        stop(process)
        last_error = log_path.read_text(errors="replace")[-2000:]
    else:
        raise SSHDUnavailable(f"sshd did not start on {host}: {last_error}")

    server = SSHServer(host=host, port=port, user=user, client_key=client_key,
                       client_pubkey_line=client_line, host_key_line=host_key_line,
                       directory=directory, process=process)
    try:
        yield server
    finally:
        stop(process)


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    """A running sshd for the module's tests (see SSHServer)."""
    with running_sshd(tmp_path_factory.mktemp("sshd")) as server:
        yield server
