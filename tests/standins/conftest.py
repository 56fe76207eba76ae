"""Fixtures for the stand-in binaries' tests: a real etcd 3.4 (v2 API enabled) on free
loopback ports, and stand-in processes that are always stopped by pid.

Everything talks to 127.0.0.1 only. Flannel is always given a fake route command
(STANDIN_FLANNEL_IP_CMD) so the tests never change this machine's routing table.
"""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import types
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
STANDINS = ROOT / "node" / "standins"
BINARIES = ("flannel", "kube-apiserver", "kube-controller-manager", "kube-scheduler",
            "kube-proxy", "kubelet", "kubecfg")
ETCD_BIN = shutil.which("etcd") or "/usr/bin/etcd"
POLL = "0.2"  # STANDIN_POLL_SECONDS given to every stand-in
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate, timeout=10.0, interval=0.05, what="condition"):
    """Poll predicate until it returns something truthy; return it, or fail after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("timed out after %.1fs waiting for %s" % (timeout, what))
        time.sleep(interval)


def http(method, url, body=None, timeout=5.0):
    """(status, text) of an HTTP call; (None, reason) if the server cannot be reached."""
    if body is None or isinstance(body, str):
        data = body.encode() if body is not None else None  # a str body is sent as is
    else:
        data = json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with OPENER.open(req, timeout=timeout) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except OSError as e:
        return None, str(e)


def clean_env(**extra):
    env = {k: v for k, v in os.environ.items()
           if not k.lower().endswith("_proxy") and not k.startswith(("STANDIN_", "ETCD"))
           and k != "KUBERNETES_MASTER"}
    env.update({k: str(v) for k, v in extra.items()})
    return env


class Etcd:
    def __init__(self, url):
        self.url = url

    def call(self, method, key, params=None, form=None):
        url = self.url + "/v2/keys" + urllib.parse.quote(key)
        if params:
            url += "?" + urllib.parse.urlencode(params)
        data = urllib.parse.urlencode(form).encode() if form is not None else None
        req = urllib.request.Request(url, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/x-www-form-urlencoded")
        try:
            with OPENER.open(req, timeout=5) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    def get(self, key):
        """The etcd node at key (dict), or None."""
        status, body = self.call("GET", key)
        return body["node"] if status == 200 else None

    def children(self, key):
        node = self.get(key)
        return {n["key"].rsplit("/", 1)[-1]: n for n in (node or {}).get("nodes", [])}

    def set(self, key, value, **params):
        status, body = self.call("PUT", key, params, {"value": value})
        assert status in (200, 201), body
        return body["node"]

    def delete(self, key, recursive=False):
        return self.call("DELETE", key, {"recursive": "true"} if recursive else None)[0]


@pytest.fixture(scope="session")
def etcd(tmp_path_factory):
    if not os.path.exists(ETCD_BIN):
        pytest.fail("etcd not installed: run scripts/install (apt-get install etcd-server etcd-client)")
    data = tmp_path_factory.mktemp("etcd")
    client, peer = free_port(), free_port()
    c_url, p_url = "http://127.0.0.1:%d" % client, "http://127.0.0.1:%d" % peer
    with open(data / "etcd.log", "wb") as logf:
        proc = subprocess.Popen(
            [ETCD_BIN, "--enable-v2", "--name", "default", "--data-dir", str(data / "data"),
             "--listen-client-urls", c_url, "--advertise-client-urls", c_url,
             "--listen-peer-urls", p_url, "--initial-advertise-peer-urls", p_url,
             "--initial-cluster", "default=" + p_url],
            stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT, env=clean_env())
    try:
        wait_until(lambda: proc.poll() is not None or http("GET", c_url + "/v2/keys/")[0] == 200,
                   timeout=20, what="etcd to answer")
        assert proc.poll() is None, (data / "etcd.log").read_text()[-3000:]
        yield Etcd(c_url)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


class StandIn:
    """A stand-in running as a subprocess; stderr and stdout go to files."""

    def __init__(self, name, args, env, workdir):
        self.name = name
        tag = "%s-%s" % (name, uuid.uuid4().hex[:6])
        self.log_path = workdir / (tag + ".log")
        self.ip_log = workdir / (tag + ".ip-calls")
        env = clean_env(**{"STANDIN_POLL_SECONDS": POLL, "FAKE_IP_LOG": self.ip_log,
                           "STANDIN_FLANNEL_IP_CMD": workdir / "fake-ip",
                           # never touch this machine's firewall: the fake logs the call
                           "STANDIN_FLANNEL_IPTABLES_CMD": workdir / "fake-ip", **env})
        with open(self.log_path, "wb") as logf:
            self.proc = subprocess.Popen([str(STANDINS / name), *args], env=env,
                                         stdin=subprocess.DEVNULL, stdout=logf, stderr=logf)

    @property
    def pid(self):
        return self.proc.pid

    def alive(self):
        return self.proc.poll() is None

    def log(self):
        return self.log_path.read_text(errors="replace")

    def ip_calls(self):
        return self.ip_log.read_text().splitlines() if self.ip_log.exists() else []

    def count(self, pattern):
        return len(re.findall(pattern, self.log()))

    def wait_log(self, pattern, timeout=10.0, count=1):
        """Wait until the log matches the regex pattern count times; fail early if it exits."""
        def seen():
            if self.count(pattern) >= count:
                return True
            assert self.alive(), "%s exited with %s before logging %r:\n%s" % (
                self.name, self.proc.returncode, pattern, self.log())
            return False
        try:
            wait_until(seen, timeout, what="%s to log %r" % (self.name, pattern))
        except AssertionError as e:
            raise AssertionError("%s\n--- %s log ---\n%s" % (e, self.name, self.log())) from None

    def stop(self, sig=signal.SIGTERM, timeout=5.0):
        """Send sig to the process (by pid) and return its exit code; kill it on timeout."""
        if self.alive():
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            raise AssertionError(
                "%s ignored signal %s:\n%s" % (self.name, sig, self.log())) from None


@pytest.fixture
def workdir(tmp_path):
    fake = tmp_path / "fake-ip"
    # logs every call; an iptables -C (check) finds no rule, as on a fresh node
    fake.write_text('#!/bin/sh\necho "$*" >> "$FAKE_IP_LOG"\n[ "$1" != "-C" ]\n')
    fake.chmod(0o755)
    return tmp_path


@pytest.fixture
def spawn(workdir):
    """spawn(name, *args, **env) -> StandIn; every process is stopped at teardown."""
    started = []

    def start(name, *args, **env):
        proc = StandIn(name, args, env, workdir)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.alive():
            proc.proc.kill()
            proc.proc.wait(5)


def run(name, *args, timeout=10, **env):
    """Run a stand-in to completion; CompletedProcess with text stdout/stderr."""
    return subprocess.run([str(STANDINS / name), *args], capture_output=True, text=True,
                          timeout=timeout, env=clean_env(**{"STANDIN_POLL_SECONDS": POLL, **env}))


class ApiServer:
    def __init__(self, proc, port):
        self.proc = proc
        self.port = port
        self.url = "http://127.0.0.1:%d" % port

    def call(self, method, path, body=None):
        status, text = http(method, self.url + path, body)
        try:
            return status, json.loads(text)
        except ValueError:
            return status, text


def start_apiserver(spawn, etcd_url, port=None):
    port = port or free_port()
    proc = spawn("kube-apiserver", "-address=127.0.0.1", "-port=%d" % port,
                 "-etcd_servers=" + etcd_url, "-portal_net=10.100.0.0/16", "-logtostderr=true")
    api = ApiServer(proc, port)
    wait_until(lambda: not proc.alive() or http("GET", api.url + "/healthz")[0] is not None,
               timeout=10, what="kube-apiserver to listen")
    assert proc.alive(), proc.log()
    return api


@pytest.fixture
def apiserver(etcd, spawn):
    """A kube-apiserver stand-in on a free port, with an empty /registry/minions."""
    etcd.delete("/registry/minions", recursive=True)
    return start_apiserver(spawn, etcd.url)


@pytest.fixture
def prefix():
    """A fresh etcd prefix for flannel, so tests do not see each other's leases."""
    return "/t-%s/network" % uuid.uuid4().hex[:8]


@pytest.fixture
def tools():
    """Helpers for the test modules (they cannot import this conftest reliably)."""
    return types.SimpleNamespace(run=run, http=http, wait_until=wait_until,
                                 free_port=free_port, start_apiserver=start_apiserver,
                                 STANDINS=STANDINS, BINARIES=BINARIES)
