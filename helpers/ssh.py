"""SSH to the nodes on paramiko: one persistent connection per node, every call bounded.

Host keys are verified against what the provider vouches for (``Node.host_keys``)
or a known_hosts file; ``accept-new`` trusts a first key only when the inventory
asks for it, and records what it accepted. The same connection is offered as a
testinfra host, so testinfra modules and our own checks share one transport.

The module is long because it is one job: the Connection class and the host-key policy,
errors, timeouts and waits it alone uses; split, each part would only make sense beside
the others.
"""
from __future__ import annotations

import base64
import io
import logging
import shlex
import socket
import tarfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import paramiko
from testinfra.backend.paramiko import ParamikoBackend
from testinfra.host import Host

from helpers import interrupts
from helpers.providers.base import Node
from helpers.waiting import poll

log = logging.getLogger(__name__)
# paramiko's transport thread logs every failed handshake (a node rebooting, or removed by
# the teardown) as ERROR lines with its traceback, and raises the same error to connect(),
# which reports it as one SSHError. With no handler of its own, Python's last-resort
# handler printed those lines on the terminal whenever pytest had none installed (its
# teardown after Ctrl-C); they still reach any handler a run installs (pytest's captured log).
logging.getLogger("paramiko").addHandler(logging.NullHandler())

BOOT_ID = "/proc/sys/kernel/random/boot_id"


def _brief(command: str, limit: int = 200) -> str:
    """A command as a message quotes it: its first line, at most `limit` characters."""
    first = command.strip().splitlines()[0] if command.strip() else ""
    return first if len(first) <= limit and first == command.strip() else first[:limit] + " ..."


class SSHError(Exception):
    """Reaching or talking to a node failed; str() names the node."""


class CommandTimeout(SSHError):
    pass


class HostKeyRejected(SSHError):
    pass


@dataclass
class Result:
    node: str
    command: str
    rc: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def ok(self) -> bool:
        return self.rc == 0

    def __str__(self) -> str:
        out = (self.stdout + self.stderr).strip()
        return f"{self.node}: `{_brief(self.command)}` exited {self.rc}" + (f": {out[-500:]}" if out else "")


def _key_from_line(line: str) -> paramiko.PKey:
    kind, blob = line.split()[:2]
    return paramiko.PKey.from_type_string(kind, base64.b64decode(blob))


class _VerifyPolicy(paramiko.MissingHostKeyPolicy):
    """Refuse any key we were not told about, or accept-and-record a first one."""

    def __init__(self, node: str, accept_new: bool, record: Path | None,
                 accepted: list[str] | None = None):
        self.node, self.accept_new, self.record = node, accept_new, record
        self.accepted: list[str] = [] if accepted is None else accepted

    def missing_host_key(self, client, hostname, key):
        line = f"{key.get_name()} {key.get_base64()}"
        if not self.accept_new:
            raise HostKeyRejected(f"{self.node}: host key {key.get_name()} "
                                  f"SHA256:{_fingerprint(key)} of {hostname} is not known "
                                  "(host_key_policy is 'verify')")
        self.accepted.append(line)
        client.get_host_keys().add(hostname, key.get_name(), key)
        if self.record:
            with self.record.open("a") as fh:
                fh.write(f"{hostname} {line}\n")
        log.warning("%s: accepted new host key %s SHA256:%s", self.node, key.get_name(),
                    _fingerprint(key))


_CHUNK = 1 << 16


def _text(data: str | bytes) -> str:
    return data.decode(errors="surrogateescape") if isinstance(data, bytes) else data


class _Overrun(Exception):
    """A command's deadline passed (internal; surfaces as CommandTimeout)."""


def _signal(channel: paramiko.Channel, name: str) -> None:
    """Ask sshd to signal the command's process group (RFC 4254 6.9); best effort.

    OpenSSH honours this for non-forced sessions (killpg as the login user), so a
    command that overran does not keep running on the node; a `sudo` command's
    root-owned children may be out of the login user's reach.
    """
    try:
        if channel.closed or not channel.active:
            return
        message = paramiko.Message()
        message.add_byte(paramiko.common.cMSG_CHANNEL_REQUEST)
        message.add_int(channel.remote_chanid)
        message.add_string("signal")
        message.add_boolean(False)
        message.add_string(name)
        # paramiko has no public call for a "signal" request; its stubs omit this one
        channel.transport._send_user_message(message)  # type: ignore[union-attr]
    except Exception as exc:  # noqa: BLE001 - never mask the timeout itself
        log.debug("signal %s failed: %s", name, exc)


def _fingerprint(key: paramiko.PKey) -> str:
    import hashlib
    return base64.b64encode(hashlib.sha256(key.asbytes()).digest()).decode().rstrip("=")


class Connection:
    """A persistent SSH session to one node; thread-safe for sequential commands."""

    def __init__(self, node: Node, user: str, key_path: str | Path, *, policy: str = "verify",
                 known_hosts: Path | None = None, accepted_log: Path | None = None,
                 connect_timeout: float = 10, command_timeout: float = 60):
        self.node, self.user, self.key_path = node, user, str(key_path)
        self.policy, self.known_hosts, self.accepted_log = policy, known_hosts, accepted_log
        self.connect_timeout, self.command_timeout = connect_timeout, command_timeout
        self.commands_run = 0
        self._client: paramiko.SSHClient | None = None
        self._accepted: list[str] = []  # keys accept-new trusted: pinned for reconnects
        self._lock = threading.Lock()

    # -- connecting -----------------------------------------------------------------
    def _host_id(self) -> str:
        host = self.node.ssh_host
        return host if self.node.ssh_port == 22 else f"[{host}]:{self.node.ssh_port}"

    def _new_client(self) -> paramiko.SSHClient:
        client = paramiko.SSHClient()
        if self.known_hosts and Path(self.known_hosts).exists():
            client.load_host_keys(str(self.known_hosts))
        for line in (*self.node.host_keys, *self._accepted):
            key = _key_from_line(line)
            client.get_host_keys().add(self._host_id(), key.get_name(), key)
        client.set_missing_host_key_policy(
            _VerifyPolicy(self.node.name, self.policy == "accept-new", self.accepted_log,
                          self._accepted))
        return client

    def connect(self) -> "Connection":
        self.close()  # a reconnect must not leak the old transport (and its thread)
        if interrupts.stopped():   # the nodes are being removed: no new connection
            raise SSHError(f"{self.node.name}: not connecting: the run was interrupted")
        client = self._new_client()
        try:
            client.connect(self.node.ssh_host, port=self.node.ssh_port, username=self.user,
                           key_filename=self.key_path, timeout=self.connect_timeout,
                           banner_timeout=self.connect_timeout,
                           auth_timeout=self.connect_timeout, allow_agent=False,
                           look_for_keys=False)
        except HostKeyRejected:
            client.close()
            raise
        except paramiko.BadHostKeyException as exc:
            client.close()
            raise HostKeyRejected(
                f"{self.node.name}: host key mismatch for {self.node.ssh_host}: expected "
                f"SHA256:{_fingerprint(exc.expected_key)}, got SHA256:{_fingerprint(exc.key)}"
            ) from None
        except paramiko.AuthenticationException as exc:
            client.close()
            raise SSHError(f"{self.node.name}: authentication as {self.user} failed: {exc}") from None
        except (OSError, paramiko.SSHException, EOFError) as exc:
            client.close()
            raise SSHError(f"{self.node.name}: cannot connect to {self.node.ssh_host}:"
                           f"{self.node.ssh_port}: {exc or type(exc).__name__}") from None
        transport = client.get_transport()
        assert transport is not None  # connected
        transport.set_keepalive(5)
        try:  # one small packet per request: do not let Nagle add 40 ms to every command
            if isinstance(transport.sock, socket.socket):
                transport.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except (OSError, AttributeError):
            pass
        self._client = client
        return self

    @property
    def client(self) -> paramiko.SSHClient:
        transport = self._client.get_transport() if self._client else None
        if transport is None or not transport.is_active():
            self.connect()
        assert self._client is not None  # connect() set it, or raised
        return self._client

    def close(self) -> None:
        if self._client:
            self._client.close()
            self._client = None

    # -- running ----------------------------------------------------------------------
    def run(self, command: str, *, timeout: float | None = None, sudo: bool = False,
            stdin: bytes | None = None, check: bool = False, label: str | None = None
            ) -> Result:
        """Run one command; an overrun raises CommandTimeout naming node and command (or
        `label`, for a script too long to quote in a message)."""
        timeout = timeout or self.command_timeout
        started = time.monotonic()
        rc, out, err = self._execute(command, timeout=timeout, sudo=sudo, stdin=stdin,
                                     label=label)
        result = Result(self.node.name, command, rc, out.decode(errors="replace"),
                        err.decode(errors="replace"), time.monotonic() - started)
        if check and not result.ok:
            raise SSHError(str(result))
        return result

    def _open_session(self) -> paramiko.Channel:
        """A new channel; a transport that died (even silently) is replaced once.

        Nothing has run yet when opening fails, so reconnecting and retrying is safe.
        """
        for attempt in (1, 2):
            try:
                transport = self.client.get_transport()
                if transport is None:   # closed under us: as dead as a broken one
                    raise paramiko.SSHException("the connection has no transport")
                return transport.open_session(timeout=self.connect_timeout)
            except (paramiko.SSHException, OSError, EOFError) as exc:
                self.close()
                if attempt == 2:
                    raise SSHError(f"{self.node.name}: cannot open a session: "
                                   f"{exc or type(exc).__name__}") from None
                log.info("%s: session failed (%s); reconnecting", self.node.name, exc)
        raise AssertionError("unreachable: the second attempt returns or raises")

    def _execute(self, command: str | bytes, *, timeout: float, sudo: bool = False,
                 stdin: bytes | None = None, label: str | None = None
                 ) -> tuple[int, bytes, bytes]:
        """Run command; returns (rc, raw stdout, raw stderr). Bounded by timeout."""
        wire: str | bytes
        if isinstance(command, bytes):  # as testinfra encoded it; sent verbatim
            wire, command = command, command.decode(errors="replace")
        else:
            wire = command
        what = label or f"`{_brief(command)}`"
        if sudo:
            wire = b"sudo -n sh -c " + shlex.quote(_text(wire)).encode(errors="surrogateescape")
        deadline = time.monotonic() + timeout
        with self._lock:
            self.commands_run += 1
            channel = self._open_session()
            # exec_command waits for the server's reply without a timeout of its own:
            # closing the channel at the deadline releases it
            fired = threading.Event()

            def expire():
                fired.set()
                channel.close()
            watchdog = threading.Timer(max(0.0, deadline - time.monotonic()) + 0.5, expire)
            watchdog.daemon = True
            watchdog.start()
            try:
                outcome = self._exchange(channel, wire, stdin, deadline)
                if fired.is_set():  # the channel was closed under a late exchange
                    raise _Overrun()
                return outcome
            except _Overrun:
                _signal(channel, "KILL")  # best effort: do not leave the command running
                raise CommandTimeout(f"{self.node.name}: {what} did not finish within "
                                     f"{timeout:g} s") from None
            except (paramiko.SSHException, OSError, EOFError) as exc:
                self.close()
                if fired.is_set() or time.monotonic() >= deadline:
                    raise CommandTimeout(f"{self.node.name}: {what} did not finish "
                                         f"within {timeout:g} s") from None
                raise SSHError(f"{self.node.name}: {what} failed: the connection broke "
                               f"({exc or type(exc).__name__})") from None
            finally:
                watchdog.cancel()
                channel.close()

    @staticmethod
    def _exchange(channel, wire, stdin, deadline):
        """Feed stdin and drain stdout/stderr together: neither side can stall the other."""
        channel.settimeout(max(0.1, deadline - time.monotonic()))
        channel.exec_command(wire)
        channel.settimeout(1.0)  # only reached when a ready check said it will not block
        pending = memoryview(stdin) if stdin is not None else None
        out, err = bytearray(), bytearray()
        pause = 0.0005
        while True:
            if time.monotonic() >= deadline:
                raise _Overrun()
            busy = False
            if pending is not None and channel.send_ready():
                sent = 0
                if len(pending) and not channel.closed:
                    try:
                        sent = channel.send(pending[:_CHUNK])
                    except OSError:  # the command is gone and did not read it all
                        sent = 0
                if sent:
                    pending, busy = pending[sent:], True
                else:
                    pending = memoryview(b"")
                if not len(pending):
                    if not channel.closed:
                        channel.shutdown_write()
                    pending = None
            if channel.recv_ready():
                out += channel.recv(_CHUNK)
                busy = True
            if channel.recv_stderr_ready():
                err += channel.recv_stderr(_CHUNK)
                busy = True
            if busy:
                pause = 0.0005
                continue
            if ((channel.eof_received or channel.closed) and channel.exit_status_ready()
                    and not channel.recv_ready() and not channel.recv_stderr_ready()):
                break
            time.sleep(pause)
            pause = min(pause * 2, 0.05)
        return channel.recv_exit_status(), bytes(out), bytes(err)

    def sudo(self, command: str, **kwargs) -> Result:
        return self.run(command, sudo=True, **kwargs)

    def put(self, data: bytes, remote_path: str, *, mode: int = 0o644, sudo: bool = True,
            timeout: float | None = None) -> Result:
        """Write bytes to a remote file atomically (temp + rename).

        The temp file is created under umask 077, so a key is never readable by others
        while it is being written; parents are created with the normal umask.
        """
        tmp = f"{shlex.quote(remote_path + '.k8sconf-tmp')}.$$"
        command = (f"mkdir -p {shlex.quote(str(Path(remote_path).parent))} && umask 077 && "
                   f"cat > {tmp} && chmod {mode:o} {tmp} && "
                   f"mv -f {tmp} {shlex.quote(remote_path)} || {{ rm -f {tmp}; exit 1; }}")
        return self.run(command, sudo=sudo, stdin=data, check=True, timeout=timeout)

    def send_tar(self, tar_bytes: bytes, remote_dir: str, *, timeout: float | None = None) -> Result:
        """The guide's `tar -czf - . | ssh node "sudo mkdir -p DIR; cd DIR; sudo tar xzf -"`."""
        quoted = shlex.quote(remote_dir)
        return self.run(f"mkdir -p {quoted} && cd {quoted} && tar xzf -", sudo=True,
                        stdin=tar_bytes, check=True, timeout=timeout)

    def boot_id(self, timeout: float | None = None) -> str:
        return self.run(f"cat {BOOT_ID}", check=True, timeout=timeout).stdout.strip()

    def testinfra_host(self) -> Host:
        backend = _ConnectionBackend(self)
        host = Host(backend)
        backend.set_host(host)
        return host


class _ConnectionBackend(ParamikoBackend):
    """testinfra's paramiko backend, riding on our connection and its timeouts."""

    def __init__(self, connection: Connection):
        node = connection.node
        super().__init__(f"{connection.user}@{node.ssh_host}:{node.ssh_port}")
        self.connection = connection

    @property
    def client(self):  # testinfra reads this; never let it build its own
        return self.connection.client

    def _exec_command(self, command: bytes):
        # raw bytes both ways: testinfra decodes itself, and File.content must stay binary
        return self.connection._execute(command, timeout=self.connection.command_timeout)


def make_tar(files: dict[str, Path]) -> bytes:
    """A gzip tar of {name in archive: local file}, as the guide's `tar -czf - .`."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, path in sorted(files.items()):
            info = tar.gettarinfo(str(path), arcname=name)
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            with open(path, "rb") as fh:
                tar.addfile(info, fh)
    return buffer.getvalue()


class _Stopped(Exception):
    """The run was interrupted while a wait paused: the nodes are about to go."""


def _pause_or_stop(seconds: float) -> None:
    if interrupts.pause(seconds):
        raise _Stopped


def wait_for_ssh(node: Node, user: str, key_path, timeout: float, **kwargs) -> Connection:
    """Connect as soon as the node answers; host-key refusals are final, not retried."""
    deadline = time.monotonic() + timeout
    connect_timeout = kwargs.pop("connect_timeout", 10)

    def connected() -> Connection:
        # no single attempt may outlive the deadline (a black-holed address hangs)
        attempt_timeout = max(0.5, min(connect_timeout, deadline - time.monotonic()))
        return Connection(node, user, key_path, connect_timeout=attempt_timeout,
                          **kwargs).connect()
    try:
        connection = poll(connected, timeout=timeout, interval=1.0, retry_on=(SSHError,),
                          give_up_on=(HostKeyRejected,), sleep=_pause_or_stop)
    except HostKeyRejected:
        raise
    except _Stopped:
        raise SSHError(f"{node.name}: stopped waiting for SSH: the run was interrupted") from None
    except SSHError as last:
        raise SSHError(f"{node.name}: no SSH within {timeout:g} s ({last})") from None
    connection.connect_timeout = connect_timeout
    return connection


def wait_for_reboot(node: Node, user: str, key_path, old_boot_id: str, timeout: float,
                    **kwargs) -> Connection:
    """Return a fresh connection once the node is back with a different boot id."""
    deadline = time.monotonic() + timeout

    def rebooted() -> Connection | None:
        connection = wait_for_ssh(node, user, key_path, deadline - time.monotonic(), **kwargs)
        try:
            if connection.boot_id(timeout=max(1.0, min(10.0, deadline - time.monotonic()))) \
                    != old_boot_id:
                return connection
        except SSHError:
            pass
        connection.close()
        return None
    try:
        connection = poll(rebooted, timeout=timeout, interval=1.0, sleep=_pause_or_stop)
    except _Stopped:
        raise SSHError(f"{node.name}: stopped waiting for the reboot: the run was "
                       "interrupted") from None
    if connection is None:
        raise SSHError(f"{node.name}: did not come back with a new boot id within {timeout:g} s")
    return connection
