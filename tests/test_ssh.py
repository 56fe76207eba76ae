"""helpers/ssh.py against a real OpenSSH sshd on a loopback port (tests/sshd.py)."""
from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import shutil
import signal
import socket
import time
from pathlib import Path

import paramiko
import pytest

from helpers import ssh
from helpers.ssh import CommandTimeout, Connection, HostKeyRejected, SSHError, make_tar
from tests.sshd import free_port, keygen, sshd  # noqa: F401  (sshd is a fixture)


def connection(server, node=None, **kwargs) -> Connection:
    kwargs.setdefault("connect_timeout", 5)
    kwargs.setdefault("command_timeout", 20)
    return Connection(node or server.node(), server.user, server.client_key, **kwargs)


@pytest.fixture
def conn(sshd):  # noqa: F811
    c = connection(sshd).connect()
    yield c
    sshd.kill_leftovers()
    c.close()


@pytest.fixture
def other_key_line(tmp_path) -> str:
    return keygen(tmp_path / "other_ed25519", "not-the-host")


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def wait_until(predicate, timeout: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


# -- running commands ---------------------------------------------------------------------
def test_key_auth_and_run_returns_rc_stdout_stderr(sshd, conn):  # noqa: F811
    result = conn.run("echo out; echo err >&2; printf 'no newline'")
    assert result.rc == 0 and result.ok
    assert result.stdout == "out\nno newline"
    assert result.stderr == "err\n"
    assert result.node == "node-1" and result.command.startswith("echo out")
    assert 0 < result.seconds < 5
    assert f"Accepted publickey for {sshd.user} from 127.0.0.1" in sshd.log()


def test_nonzero_rc_is_reported_not_raised_unless_check(conn):
    result = conn.run("echo oops >&2; exit 7")
    assert result.rc == 7 and not result.ok
    assert result.stderr == "oops\n"
    with pytest.raises(SSHError) as info:
        conn.run("echo broken >&2; exit 3", check=True)
    message = str(info.value)
    assert "node-1" in message and "echo broken >&2; exit 3" in message
    assert "3" in message and "broken" in message


def test_overrun_raises_command_timeout_and_connection_survives(sshd, conn):  # noqa: F811
    transport = conn.client.get_transport()
    started = time.monotonic()
    with pytest.raises(CommandTimeout) as info:
        conn.run("sleep 30", timeout=1)
    elapsed = time.monotonic() - started
    assert 0.9 < elapsed < 2.0, elapsed
    assert "node-1" in str(info.value) and "sleep 30" in str(info.value)
    assert isinstance(info.value, SSHError)
    # still usable, on the same transport
    assert conn.run("echo still here").stdout == "still here\n"
    assert conn.client.get_transport() is transport

    # the overrunning command is not left behind: sshd is asked to signal it. OpenSSH
    # honours that for ordinary users; for a root login (no privilege separation, as
    # here when the suite runs as root) it refuses, and says so in its log
    if sshd.user == "root":
        assert wait_until(lambda: "session_signal_req" in sshd.log(), 3), \
            "no signal request reached sshd"
    else:
        assert wait_until(lambda: not sshd.commands("sleep 30"), 3), \
            "remote `sleep 30` still running"


def test_a_chatty_command_still_times_out(conn):
    started = time.monotonic()
    with pytest.raises(CommandTimeout):
        conn.run("while :; do echo tick; echo tock >&2; sleep 0.005; done", timeout=1)
    assert time.monotonic() - started < 2.0
    assert conn.run("echo ok").stdout == "ok\n"


def test_default_command_timeout_applies(sshd):  # noqa: F811
    c = connection(sshd, command_timeout=1).connect()
    try:
        started = time.monotonic()
        with pytest.raises(CommandTimeout):
            c.run("sleep 30")
        assert time.monotonic() - started < 2.0
    finally:
        sshd.kill_leftovers()
        c.close()


# -- host keys ------------------------------------------------------------------------------
def test_host_key_verified_from_node_host_keys(sshd):  # noqa: F811
    c = connection(sshd, sshd.node(host_keys=(sshd.host_key_line,)), policy="verify").connect()
    try:
        transport = c.client.get_transport()
        assert transport is not None
        server_key = transport.get_remote_server_key()
        assert f"{server_key.get_name()} {server_key.get_base64()}" == sshd.host_key_line
    finally:
        c.close()


def test_wrong_host_key_is_rejected_as_mismatch(sshd, other_key_line, tmp_path):  # noqa: F811
    accepted = tmp_path / "accepted"
    for policy in ("verify", "accept-new"):  # a vouched-for key is never overridden
        c = connection(sshd, sshd.node(host_keys=(other_key_line,)), policy=policy,
                       accepted_log=accepted)
        with pytest.raises(HostKeyRejected, match="mismatch") as info:
            c.connect()
        assert "node-1" in str(info.value)
    assert not accepted.exists() or accepted.read_text() == ""


def test_host_key_of_another_type_is_a_mismatch_too(sshd):  # noqa: F811
    ecdsa = paramiko.ECDSAKey.generate()
    node = sshd.node(host_keys=(f"{ecdsa.get_name()} {ecdsa.get_base64()}",))
    with pytest.raises(HostKeyRejected, match="mismatch"):
        connection(sshd, node, policy="accept-new").connect()


def test_unknown_host_key_with_verify_is_rejected(sshd, tmp_path):  # noqa: F811
    accepted = tmp_path / "accepted"
    c = connection(sshd, sshd.node(host_keys=()), policy="verify", accepted_log=accepted)
    with pytest.raises(HostKeyRejected) as info:
        c.connect()
    assert "node-1" in str(info.value) and "not known" in str(info.value)
    assert not accepted.exists()


def test_accept_new_accepts_and_records_the_key(sshd, tmp_path):  # noqa: F811
    accepted = tmp_path / "accepted"
    c = connection(sshd, sshd.node(host_keys=()), policy="accept-new", accepted_log=accepted)
    c.connect()
    try:
        assert c.run("echo ok").stdout == "ok\n"
        assert accepted.read_text().splitlines() == [sshd.known_hosts_line()]
        # the key is pinned for this connection: a reconnect neither re-accepts nor re-records
        transport = c.client.get_transport()
        assert transport is not None
        transport.close()
        assert c.run("echo again").stdout == "again\n"
        assert accepted.read_text().splitlines() == [sshd.known_hosts_line()]
    finally:
        c.close()
    # what was recorded is a usable known_hosts file
    c2 = connection(sshd, sshd.node(host_keys=()), policy="verify", known_hosts=accepted)
    c2.connect().close()


def test_known_hosts_file(sshd, tmp_path, other_key_line):  # noqa: F811
    known = tmp_path / "known_hosts"
    known.write_text(f"# comment\n{sshd.known_hosts_line()}\n")
    c = connection(sshd, sshd.node(host_keys=()), policy="verify", known_hosts=known).connect()
    assert c.run("true").ok
    c.close()
    known.write_text(f"[{sshd.host}]:{sshd.port} {other_key_line}\n")
    with pytest.raises(HostKeyRejected, match="mismatch"):
        connection(sshd, sshd.node(host_keys=()), policy="verify", known_hosts=known).connect()
    # a file that does not exist yet is no error: the key is simply unknown
    with pytest.raises(HostKeyRejected, match="not known"):
        connection(sshd, sshd.node(host_keys=()), known_hosts=tmp_path / "missing").connect()


# -- sudo, files, streams -------------------------------------------------------------------
def test_sudo_runs_via_sudo_n_sh_c(sshd, conn):  # noqa: F811
    assert shutil.which("sudo"), "sudo is not installed (apt-get install -y sudo)"
    plain = conn.run('echo "sudo_user=${SUDO_USER:-none}"', check=True)
    assert plain.stdout == "sudo_user=none\n"
    via = conn.run('echo "sudo_user=${SUDO_USER:-none} uid=$(id -u)"', sudo=True, check=True)
    assert via.stdout == f"sudo_user={sshd.user} uid=0\n"
    assert via.command == 'echo "sudo_user=${SUDO_USER:-none} uid=$(id -u)"'  # not the wire form
    # quoting survives the extra shell: quotes, $, ;, and a pipeline
    tricky = """printf '%s|' "a b" '$HOME' 'it'"'"'s'; echo x | tr x y"""
    assert conn.sudo(tricky, check=True).stdout == conn.run(tricky).stdout == "a b|$HOME|it's|y\n"
    # sudo sees stdin too
    assert conn.sudo("cat", stdin=b"via sudo").stdout == "via sudo"


def test_put_writes_file_with_mode_atomically(conn, tmp_path):
    target = tmp_path / "etc dir" / "sub" / "secret.key"
    conn.put(b"first\n", str(target), mode=0o600)
    assert target.read_bytes() == b"first\n"
    assert (target.stat().st_mode & 0o777) == 0o600
    # replacing goes through rename: a hard link to the old file keeps the old content
    os.link(target, tmp_path / "old-link")
    conn.put(b"second\n", str(target), mode=0o644, sudo=False)
    assert target.read_bytes() == b"second\n"
    assert (target.stat().st_mode & 0o777) == 0o644
    assert (tmp_path / "old-link").read_bytes() == b"first\n"
    assert sorted(p.name for p in target.parent.iterdir()) == ["secret.key"]  # no temp left
    blob = os.urandom(300_000)
    conn.put(blob, str(target), mode=0o755)
    assert target.read_bytes() == blob and (target.stat().st_mode & 0o777) == 0o755


def test_put_failure_raises_naming_node(conn, tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(SSHError) as info:
        conn.put(b"y", str(tmp_path / "file" / "below"), sudo=False)
    assert "node-1" in str(info.value)


def test_send_tar_streams_several_files(conn, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    files = {
        "a.txt": b"alpha\n",
        "ssl/ca.pem": b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
        "bin/kubelet": os.urandom(5 * 1024 * 1024),
        "empty": b"",
    }
    local = {}
    for i, (name, data) in enumerate(files.items()):
        path = src / f"f{i}"
        path.write_bytes(data)
        local[name] = path
    (src / "f2").chmod(0o755)
    tar = make_tar(local)
    remote = tmp_path / "dest" / "kubernetes"
    conn.send_tar(tar, str(remote), timeout=20)
    listing = conn.run(f"cd {remote} && sha256sum a.txt ssl/ca.pem bin/kubelet empty",
                       check=True).stdout
    remote_sums = {name: digest for digest, name in (line.split() for line in listing.splitlines())}
    assert remote_sums == {name: sha256(data) for name, data in files.items()}
    assert os.access(remote / "bin/kubelet", os.X_OK)


def test_stdin_of_several_mb_round_trips(conn):
    binary = os.urandom(3 * 1024 * 1024)
    assert conn.run("sha256sum", stdin=binary, timeout=10).stdout.split()[0] == sha256(binary)
    # 8 MB through `cat`: more than both SSH windows hold, so stdin must be fed while
    # stdout is drained, or the two sides wait for each other until the timeout
    text = base64.b64encode(os.urandom(6 * 1024 * 1024)).decode()
    started = time.monotonic()
    result = conn.run("cat", stdin=text.encode(), timeout=10)
    assert result.rc == 0 and len(result.stdout) == len(text) and result.stdout == text
    assert time.monotonic() - started < 5
    assert conn.run("cat", stdin=b"").stdout == ""


def test_stdin_a_command_does_not_read_is_no_error(conn):
    started = time.monotonic()
    result = conn.run("exit 0", stdin=os.urandom(4 * 1024 * 1024), timeout=10)
    assert result.rc == 0
    assert time.monotonic() - started < 5
    assert conn.run("echo ok").stdout == "ok\n"


def test_large_stdout_and_stderr_are_collected_promptly(conn):
    started = time.monotonic()
    result = conn.run("head -c 4000000 /dev/zero | tr '\\0' e >&2; "
                      "head -c 3000000 /dev/zero | tr '\\0' o; echo done >&2", timeout=15)
    assert time.monotonic() - started < 4
    assert result.stderr == "e" * 4_000_000 + "done\n"
    assert result.stdout == "o" * 3_000_000


# -- the connection itself ------------------------------------------------------------------
def test_one_persistent_connection_serves_many_commands(sshd, conn):  # noqa: F811
    transport = conn.client.get_transport()
    logins, ran = sshd.logins(), conn.commands_run
    started = time.monotonic()
    for i in range(25):
        assert conn.run(f"echo {i}").stdout == f"{i}\n"
    assert conn.boot_id()
    assert time.monotonic() - started < 3  # ~5 ms each here; no per-command handshake
    assert conn.commands_run == ran + 26
    assert conn.client.get_transport() is transport
    assert sshd.logins() == logins  # sshd saw no new connection
    # small request packets go out at once (no Nagle delay, ~40 ms per command otherwise)
    assert transport.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)


def test_reconnects_after_the_transport_dies(sshd, conn):  # noqa: F811
    logins = sshd.logins()
    first = conn.client.get_transport()
    first.close()
    assert conn.run("echo back").stdout == "back\n"
    second = conn.client.get_transport()
    assert second is not first and second.is_active()
    assert sshd.logins() == logins + 1

    # the server side dies under us (node rebooted, sshd restarted): next command reconnects
    before = set(sshd.descendants())
    for pid in before:
        os.kill(pid, signal.SIGKILL)
    assert wait_until(lambda: not (set(sshd.descendants()) & before), 3)
    assert conn.run("echo again").stdout == "again\n"
    assert conn.client.get_transport() is not second
    assert sshd.logins() == logins + 2


def test_reconnects_when_the_transport_hangs_silently(sshd):  # noqa: F811
    """The peer stops answering without closing TCP (a node that froze or was reset)."""
    before = set(sshd.descendants())
    c = connection(sshd, connect_timeout=1).connect()
    stopped = []
    try:
        hung = c.client.get_transport()
        assert hung is not None
        assert wait_until(lambda: set(sshd.descendants()) - before, 2)
        stopped = sorted(set(sshd.descendants()) - before)
        for pid in stopped:
            os.kill(pid, signal.SIGSTOP)
        assert hung.is_active()  # paramiko cannot tell
        started = time.monotonic()
        assert c.run("echo fresh", timeout=5).stdout == "fresh\n"
        assert time.monotonic() - started < 3
        assert c.client.get_transport() is not hung
    finally:
        for pid in stopped:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        c.close()


def test_testinfra_host_rides_on_the_connection(sshd, conn, tmp_path):  # noqa: F811
    present = tmp_path / "present"
    binary = bytes(range(256)) * 4
    present.write_bytes(binary)
    logins = sshd.logins()
    host = conn.testinfra_host()
    assert host.file(str(present)).exists
    assert host.file(str(present)).is_file
    assert not host.file(str(tmp_path / "absent")).exists
    assert host.file(str(present)).content == binary  # bytes survive untouched
    result = host.run("echo hi; echo there >&2; exit 3")
    assert (result.rc, result.stdout, result.stderr) == (3, "hi\n", "there\n")
    assert host.check_output("echo %s", "a b") == "a b"
    with pytest.raises(AssertionError):
        host.check_output("exit 1")
    assert sshd.logins() == logins  # no second SSH connection for testinfra


# -- waiting --------------------------------------------------------------------------------
def test_wait_for_ssh_connects_when_listening(sshd):  # noqa: F811
    c = ssh.wait_for_ssh(sshd.node(), sshd.user, sshd.client_key, timeout=5, connect_timeout=2)
    try:
        assert c.run("echo up").stdout == "up\n"
    finally:
        c.close()


def test_wait_for_ssh_times_out_naming_the_node(sshd):  # noqa: F811
    node = sshd.node(name="ghost-node", port=free_port())
    started = time.monotonic()
    with pytest.raises(SSHError) as info:
        ssh.wait_for_ssh(node, sshd.user, sshd.client_key, timeout=2, connect_timeout=5)
    elapsed = time.monotonic() - started
    assert 1.5 < elapsed < 3.0, elapsed
    assert "ghost-node" in str(info.value)
    assert not isinstance(info.value, HostKeyRejected)


def test_wait_for_ssh_does_not_retry_host_key_rejection(sshd, other_key_line):  # noqa: F811
    started = time.monotonic()
    with pytest.raises(HostKeyRejected):
        ssh.wait_for_ssh(sshd.node(host_keys=(other_key_line,)), sshd.user, sshd.client_key,
                         timeout=10, connect_timeout=2)
    assert time.monotonic() - started < 2


def test_wait_for_reboot_returns_once_boot_id_changes(sshd, monkeypatch):  # noqa: F811
    ids = iter(["old-boot", "new-boot"])
    calls = []

    def fake_boot_id(self, timeout=None):
        calls.append(self)
        return next(ids)
    monkeypatch.setattr(Connection, "boot_id", fake_boot_id)
    started = time.monotonic()
    c = ssh.wait_for_reboot(sshd.node(), sshd.user, sshd.client_key, "old-boot", timeout=8,
                            connect_timeout=2)
    try:
        assert len(calls) == 2 and calls[-1] is c
        assert time.monotonic() - started < 4
        assert c.run("echo rebooted").stdout == "rebooted\n"
        assert calls[0]._client is None  # the stale connection was closed
    finally:
        c.close()


def test_wait_for_reboot_times_out_when_boot_id_stays(sshd, monkeypatch):  # noqa: F811
    monkeypatch.setattr(Connection, "boot_id", lambda self, timeout=None: "same-boot")
    started = time.monotonic()
    with pytest.raises(SSHError) as info:
        ssh.wait_for_reboot(sshd.node(name="stuck-node"), sshd.user, sshd.client_key,
                            "same-boot", timeout=2, connect_timeout=2)
    assert 1.5 < time.monotonic() - started < 3.5
    assert "stuck-node" in str(info.value)


def test_real_boot_id(conn):
    assert conn.boot_id() == Path(ssh.BOOT_ID).read_text().strip()
