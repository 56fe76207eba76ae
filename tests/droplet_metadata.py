"""A droplet's metadata service (169.254.169.254:80) inside the droplet's own network
namespace, answering the shape DigitalOcean's does: /metadata/v1.json, and the path
tree under /metadata/v1/ (hostname, user-data, interfaces/<kind>/0/ipv4/address, ...).

    python3 -m tests.droplet_metadata METADATA.json     # run by `ip netns exec NS`

The address exists only on the namespace's loopback: the host never holds it, and
callers confirm the route (`ip -n NS route get`) before the first connection.
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from helpers.providers import netns

METADATA_IP = "169.254.169.254"


def metadata(droplet_id: int, hostname: str, user_data: str | None, public_ip: str,
             private_ip: str, region: str = "nyc3") -> dict:
    def interface(kind: str, address: str, index: int) -> dict:
        return {"ipv4": {"ip_address": address, "netmask": "255.255.255.0",
                         "gateway": address.rsplit(".", 1)[0] + ".1"},
                "mac": f"02:00:00:00:{index:02x}:{droplet_id % 256:02x}", "type": kind}
    return {"droplet_id": droplet_id, "hostname": hostname, "user_data": user_data,
            "vendor_data": "", "public_keys": [], "region": region,
            "interfaces": {"public": [interface("public", public_ip, 0)],
                           "private": [interface("private", private_ip, 1)]},
            "floating_ip": {"ipv4": {"active": False}}, "dns": {"nameservers": []},
            "features": {"dhcp_enabled": False}}


def lookup(data: dict, path: str) -> str | None:
    """What GET /metadata/v1/<path> answers: a leaf as text, a node as its keys."""
    if path in ("", "/"):
        return "\n".join(k.replace("_", "-") for k in data) + "\n"
    node: object = data
    for part in [p for p in path.strip("/").split("/") if p]:
        if isinstance(node, dict):
            # the path tree names an interface's `ip_address` just `address`
            node = node.get(part, node.get(part.replace("-", "_"), node.get(f"ip_{part}")))
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return None
        if node is None:
            return None
    if isinstance(node, dict):
        return "\n".join(f"{k}/" if isinstance(v, (dict, list)) else k
                         for k, v in node.items()) + "\n"
    if isinstance(node, list):
        return "\n".join(f"{i}/" for i in range(len(node))) + "\n"
    return str(node)


class _Handler(BaseHTTPRequestHandler):
    data: dict

    def log_message(self, *args) -> None:
        pass

    def do_GET(self):  # noqa: N802
        path = self.path.split("?")[0]
        body: str | None = None
        if path == "/metadata/v1.json":
            body = json.dumps(self.data)
        elif path.startswith("/metadata/v1/") or path == "/metadata/v1":
            body = lookup(self.data, path[len("/metadata/v1"):])
        raw = (body if body is not None else "not found\n").encode()
        self.send_response(200 if body is not None else 404)
        self.send_header("content-length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)


def start_in_namespace(ns: str, data: dict, directory: Path) -> subprocess.Popen:
    """The service for namespace `ns`, its data in `directory`; waits until it listens."""
    netns.ip("addr", "add", f"{METADATA_IP}/32", "dev", "lo", ns=ns)
    confirm_inside(ns)
    directory.mkdir(parents=True, exist_ok=True)
    source = directory / "metadata.json"
    source.write_text(json.dumps(data))
    source.chmod(0o600)   # user_data carries the run's host private key
    return start_service(ns, "tests.droplet_metadata", [str(source)],
                         f"http://{METADATA_IP}/metadata/v1/hostname", directory / "metadata.log",
                         "metadata service")


def start_service(ns: str, module: str, args: list[str], url: str, log: Path,
                  what: str) -> subprocess.Popen:
    """`python3 -m module args` inside namespace `ns`, its stderr in `log`; returns once
    `url` answers there (within 10 s), else ends it and says why."""
    process = subprocess.Popen(
        ["ip", "netns", "exec", ns, sys.executable, "-m", module, *args],
        cwd=Path(__file__).resolve().parents[1], stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL, stderr=open(log, "ab"), start_new_session=True)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and process.poll() is None:
        probe = subprocess.run(["ip", "netns", "exec", ns, "curl", "-fsS", "--max-time", "1",
                                url], capture_output=True)
        if probe.returncode == 0:
            return process
        time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"{what} in {ns} did not answer: {log.read_text()[-300:]}")


def confirm_inside(ns: str) -> None:
    """169.254.169.254 must route to the namespace's own loopback, nowhere else."""
    routes = json.loads(netns.ip("-j", "route", "get", METADATA_IP, ns=ns).stdout or "[]")
    dev = routes[0].get("dev") if routes else None
    if dev != "lo":
        raise RuntimeError(f"{METADATA_IP} routes via {dev or 'nothing'} in {ns}, not its "
                           "loopback; refusing to connect")


def serve(source: Path) -> None:
    class Handler(_Handler):
        data = json.loads(source.read_text())
    ThreadingHTTPServer((METADATA_IP, 80), Handler).serve_forever()


if __name__ == "__main__":
    serve(Path(sys.argv[1]))
