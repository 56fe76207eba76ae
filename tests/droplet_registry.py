"""The simulated cloud's Docker Hub: a read-only registry (the Docker Registry HTTP API
V2, pulls only) inside a droplet's own network namespace, at 169.254.169.254:5000, that
the droplet's Docker is told to use as its registry mirror (/etc/docker/daemon.json).

    python3 -m tests.droplet_registry BUSYBOX.tar [ADDRESS]   # run by `ip netns exec NS`

No registry is reachable from this machine, while a real droplet pulls `busybox` from
Docker Hub: this lets the digitalocean provider's own `docker pull busybox` run
unchanged on a simulated droplet. It serves one image, `library/busybox:latest`, made
from the node tree's static busybox tarball: a schema-2 manifest, its config and one
gzipped layer, each addressed by its sha256 digest as Docker checks them.

The qemu test image with Docker (tests/e2e/qemu_image.py) runs this same file as a
unit of its own, on the VM's 127.0.0.1: hence only the standard library at the top.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import subprocess
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

LINK_LOCAL = "169.254.169.254"     # where a droplet reaches its cloud's services
PORT = 5000
MIRROR = f"http://{LINK_LOCAL}:{PORT}"
MANIFEST_TYPE = "application/vnd.docker.distribution.manifest.v2+json"
CONFIG_TYPE = "application/vnd.docker.container.image.v1+json"
LAYER_TYPE = "application/vnd.docker.image.rootfs.diff.tar.gzip"


def daemon_json(address: str = LINK_LOCAL) -> str:
    """What the image's /etc/docker/daemon.json says (the mirror is plain HTTP)."""
    return json.dumps({"registry-mirrors": [f"http://{address}:{PORT}"],
                       "insecure-registries": [f"{address}:{PORT}"]}) + "\n"


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def image(layer_tar: bytes) -> tuple[bytes, dict[str, bytes]]:
    """(the manifest, {digest: blob}) of a one-layer image whose layer is `layer_tar`."""
    layer = gzip.compress(layer_tar, mtime=0)
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "config": {"Cmd": ["sh"]},
                         "rootfs": {"type": "layers", "diff_ids": [_digest(layer_tar)]},
                         "history": [{"created_by": "the node tree's busybox-static"}]}).encode()
    manifest = json.dumps({"schemaVersion": 2, "mediaType": MANIFEST_TYPE,
                           "config": {"mediaType": CONFIG_TYPE, "size": len(config),
                                      "digest": _digest(config)},
                           "layers": [{"mediaType": LAYER_TYPE, "size": len(layer),
                                       "digest": _digest(layer)}]}).encode()
    return manifest, {_digest(config): config, _digest(layer): layer}


class _Handler(BaseHTTPRequestHandler):
    manifest: bytes
    blobs: dict[str, bytes]

    def log_message(self, *args) -> None:
        pass

    def _found(self, path: str) -> tuple[bytes, str] | None:
        if path in ("/v2", "/v2/"):
            return b"{}", "application/json"
        if path in ("/v2/library/busybox/manifests/latest",
                    f"/v2/library/busybox/manifests/{_digest(self.manifest)}"):
            return self.manifest, MANIFEST_TYPE
        prefix = "/v2/library/busybox/blobs/"
        if path.startswith(prefix) and path[len(prefix):] in self.blobs:
            return self.blobs[path[len(prefix):]], "application/octet-stream"
        return None

    def _answer(self, with_body: bool) -> None:
        found = self._found(self.path.split("?")[0])
        body, kind = found or (json.dumps({"errors": [{"code": "NAME_UNKNOWN",
                                                       "message": "not here"}]}).encode(),
                               "application/json")
        self.send_response(200 if found else 404)
        self.send_header("content-type", kind)
        self.send_header("content-length", str(len(body)))
        self.send_header("docker-distribution-api-version", "registry/2.0")
        if found:
            self.send_header("docker-content-digest", _digest(body))
        self.end_headers()
        if with_body:
            self.wfile.write(body)

    def do_GET(self):  # noqa: N802
        self._answer(True)

    def do_HEAD(self):  # noqa: N802
        self._answer(False)


def start_in_namespace(ns: str, busybox_tar: Path, log: Path) -> subprocess.Popen:
    """The registry for namespace `ns` (whose loopback already holds METADATA_IP, see
    tests/droplet_metadata.py); waits until it answers."""
    from tests.droplet_metadata import confirm_inside, start_service
    confirm_inside(ns)
    return start_service(ns, "tests.droplet_registry", [str(busybox_tar)], f"{MIRROR}/v2/",
                         log, "registry")


def serve(busybox_tar: Path, address: str = LINK_LOCAL) -> None:
    manifest, blobs = image(busybox_tar.read_bytes())

    class Handler(_Handler):
        pass
    Handler.manifest, Handler.blobs = manifest, blobs
    ThreadingHTTPServer((address, PORT), Handler).serve_forever()


if __name__ == "__main__":
    serve(Path(sys.argv[1]), *sys.argv[2:3])
