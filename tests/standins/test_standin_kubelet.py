"""kubelet stand-in: HTTP on address:port, /healthz follows Docker's /_ping."""
import json
import shutil
import socketserver
import tempfile
import threading
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest


class FakeDocker:
    """A unix-socket HTTP server answering GET /_ping like dockerd (or wrongly, if asked)."""

    def __init__(self, path, answer=(200, b"OK")):
        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def address_string(self):
                return "unix"

            def do_GET(self):
                code, body = answer if self.path == "/_ping" else (404, b"page not found")
                self.send_response(code)
                self.send_header("Content-Type", "text/plain; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
            daemon_threads = True

        self.server = Server(str(path), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def sockdir():
    path = Path(tempfile.mkdtemp(prefix="kl", dir="/tmp"))  # short: unix socket paths are <108 bytes
    yield path
    shutil.rmtree(path, ignore_errors=True)


def start_kubelet(spawn, tools, etcd_url, socket_path):
    port = tools.free_port()
    proc = spawn("kubelet", "-address=127.0.0.1", "-port=%d" % port, "-hostname_override=10.120.0.1",
                 "-etcd_servers=" + etcd_url, "-logtostderr=true", STANDIN_DOCKER_SOCKET=socket_path)
    url = "http://127.0.0.1:%d" % port
    tools.wait_until(lambda: not proc.alive() or tools.http("GET", url + "/")[0] == 200,
                     timeout=10, what="kubelet to listen")
    assert proc.alive(), proc.log()
    return proc, url


def test_healthz_follows_docker(tools, etcd, spawn, sockdir):
    sock = sockdir / "docker.sock"
    docker = FakeDocker(sock)
    try:
        proc, url = start_kubelet(spawn, tools, etcd.url, sock)
        assert tools.http("GET", url + "/healthz") == (200, "ok")
    finally:
        docker.close()
    sock.unlink()
    status, text = tools.http("GET", url + "/healthz")
    assert status == 500 and text.startswith("docker unreachable: %s" % sock), text
    status, text = tools.http("GET", url + "/")
    assert status == 200 and json.loads(text)["hostname"] == "10.120.0.1"
    status, text = tools.http("GET", url + "/spec")
    assert status == 200 and json.loads(text)["num_cores"] >= 1
    assert tools.http("GET", url + "/nope")[0] == 404
    proc.wait_log(r"Connected to etcd at " + etcd.url)
    proc.wait_log(r"GET /healthz: 500")
    assert proc.stop() == 0


def test_healthz_500_without_docker(tools, etcd, spawn, sockdir):
    proc, url = start_kubelet(spawn, tools, etcd.url, sockdir / "missing.sock")
    status, text = tools.http("GET", url + "/healthz")
    assert status == 500 and "docker unreachable" in text
    assert proc.stop() == 0


def test_healthz_500_when_docker_answers_wrongly(tools, etcd, spawn, sockdir):
    sock = sockdir / "docker.sock"
    docker = FakeDocker(sock, answer=(500, b"daemon is sick"))
    try:
        proc, url = start_kubelet(spawn, tools, etcd.url, sock)
        status, text = tools.http("GET", url + "/healthz")
    finally:
        docker.close()
    assert status == 500 and "unexpected answer to /_ping" in text, text
    assert proc.stop() == 0


def test_kubelet_logs_unreachable_etcd_and_keeps_serving(tools, spawn, sockdir):
    dead = "http://127.0.0.1:%d" % tools.free_port()
    proc, url = start_kubelet(spawn, tools, dead, sockdir / "missing.sock")
    proc.wait_log(r"Failed to contact etcd: %s" % dead, count=2)
    assert tools.http("GET", url + "/")[0] == 200
    assert proc.stop() == 0
