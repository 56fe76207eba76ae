"""A fake DigitalOcean API on 127.0.0.1, for the `digitalocean` provider's tests.

    with FakeDigitalOcean(token="t0k", sshd_dir=tmp / "droplets", ssh_port=port) as fake:
        inventory api_url = fake.url
        fake.fail_next(429, 2, retry_after=1)    # the next 2 requests get 429
        fake.stick("coreos-2")                   # droplets whose name contains it stay 'new'
        fake.partial_create(2)                   # the next create makes only 2 droplets
        fake.etcd_never_healthy("coreos-2")      # that droplet's etcd never answers healthy

Only the endpoints the provider and the reaper call, with the API's payload shapes:
POST /v2/droplets (`names` or `name`), GET /v2/droplets (?tag_name, page, per_page;
`links.pages`, `meta.total`), GET/DELETE /v2/droplets/{id}, DELETE /v2/droplets?tag_name=,
GET /v2/account, and what `--dry-run` reads: GET /v2/regions, /v2/sizes (paged),
/v2/images/{id or slug}, /v2/account/keys/{id or fingerprint}, /v2/vpcs/{uuid}, answered
from `catalogue` (a region, sizes, a custom image, an SSH key and a VPC by default). A
`read_only` token is refused every write with 403, as DigitalOcean refuses one. Every request must carry `Authorization: Bearer <token>`; rate-limit
headers come with every answer. A droplet is `new` until it has been seen by
`active_after` GETs, then `active` with networks.v4 public 127.0.0.N (N >= 2) and
private 127.1.0.N.

With `sshd_dir` set, each droplet gets a real OpenSSH sshd on its 127.0.0.N at
`ssh_port`, configured from the user_data the provider sent (Ignition JSON or
cloud-config): the host key it injected and the authorized keys it listed, so the
provider's host-key verification is real. `force_command` makes sshd run that instead
of any command (the suites' checks then fail fast, touching nothing here). An sshd
stops (by pid) when its droplet is deleted and when the fake stops.

It is long because it is one fake of one API: every endpoint the provider, the reaper and
--dry-run call, with the pagination, errors and rate limits they must handle.

With `cloud` (a tests/simulated_cloud.py SimulatedCloud, see Cloud) the droplets are real nodes
instead: each boots from the user_data sent, applied by the real Ignition from its own
metadata service, and stays `new` until it runs; networks.v4 then holds its addresses
on the cloud's bridges. A droplet that failed to boot shows `off`. A deleted one stays
listed until its node is gone, so a destroy that waits for an empty list waits for that.

Each sshd answers the provider's etcd step (helpers/providers/do_etcd.py) as a Flatcar
droplet would, without running any of it here (the tests may run as root): the unit
search finds only etcd-member.service, the setup script is kept in the droplet's
`etcd-setup` file and succeeds, and once it has run the health check answers healthy
with every droplet of the same create as a member. Every other command runs as sent,
or as `force_command`.
"""
from __future__ import annotations

import contextlib
import getpass
import itertools
import json
import os
import shlex
import subprocess
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Protocol, Self

import yaml

from helpers.providers.do_etcd import FIND_UNITS
from helpers.providers.machines import ETCD_READY
from tests.sshd import SSHD, _wait_for_banner, stop


class Machine(Protocol):
    """A droplet a cloud boots (tests/simulated_cloud.py's Machine)."""
    @property
    def ready(self) -> threading.Event: ...

    @property
    def error(self) -> str: ...

    @property
    def public_ip(self) -> str: ...

    @property
    def private_ip(self) -> str: ...


class Cloud(Protocol):
    """What boots and removes the droplets (tests/simulated_cloud.py's SimulatedCloud)."""

    def launch(self, droplet_id: int, name: str, user_data: str | None) -> Machine: ...

    def delete(self, machine: Any) -> None: ...     # one this cloud launched

_ADDRESSES = itertools.count(2)   # 127.0.0.N across all fakes of a process: never reused
_IDS = itertools.count(3164444)
MAX_PER_PAGE = 200
FORBIDDEN = "You do not have access for the attempted action."
NOT_FOUND = "The resource you were accessing could not be found."


def default_catalogue() -> dict[str, list[dict]]:
    """What the account offers, in the shapes GET answers with (inventories/do.yaml fits)."""
    def region(slug, name, sizes):
        return {"slug": slug, "name": name, "sizes": sizes, "available": True,
                "features": ["backups", "ipv6", "metadata", "install_agent",
                             "storage", "image_transfer"]}

    def size(slug, memory, vcpus, disk, monthly, regions):
        return {"slug": slug, "memory": memory, "vcpus": vcpus, "disk": disk,
                "transfer": memory / 1024, "price_monthly": monthly,
                "price_hourly": round(monthly / 672, 5), "regions": regions,
                "available": True, "description": "Basic"}
    sizes = ["s-1vcpu-1gb", "s-1vcpu-2gb", "s-2vcpu-4gb"]
    return {
        "regions": [region("nyc3", "New York 3", sizes), region("ams3", "Amsterdam 3", sizes),
                    {**region("sfo1", "San Francisco 1", []), "available": False}],
        "sizes": [size("s-1vcpu-1gb", 1024, 1, 25, 6.0, ["nyc3", "ams3"]),
                  size("s-1vcpu-2gb", 2048, 1, 50, 12.0, ["nyc3", "ams3"]),
                  size("s-2vcpu-4gb", 4096, 2, 80, 24.0, ["ams3"])],
        "images": [{"id": 123456789, "name": "flatcar_production_digitalocean_image.bin.gz",
                    "distribution": "Unknown OS", "slug": None, "public": False,
                    "regions": ["nyc3"], "created_at": "2026-11-30T08:12:44Z",
                    "type": "custom", "min_disk_size": 15, "size_gigabytes": 2.04,
                    "description": "Flatcar Container Linux stable", "tags": [],
                    "status": "available", "error_message": ""},
                   {"id": 129211873, "name": "24.04 (LTS) x64", "distribution": "Ubuntu",
                    "slug": "ubuntu-24-04-x64", "public": True, "regions": ["nyc3", "ams3"],
                    "created_at": "2026-10-01T11:00:00Z", "type": "base",
                    "min_disk_size": 7, "size_gigabytes": 2.31, "description": "",
                    "tags": [], "status": "available", "error_message": ""}],
        "ssh_keys": [{"id": 512189, "name": "nightly",
                      "fingerprint": "aa:bb:cc:dd:ee:ff:00:11:22:33:44:55:66:77:88:99",
                      "public_key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeFakeFake ci"}],
        "vpcs": [{"id": "5a4981aa-9653-4bd1-bef5-d6bff52042e4", "name": "default-nyc3",
                  "description": "", "region": "nyc3", "ip_range": "10.116.0.0/20",
                  "default": True, "urn": "do:vpc:5a4981aa-9653-4bd1-bef5-d6bff52042e4",
                  "created_at": "2026-01-10T09:00:00Z"}],
    }


@dataclass
class Request:
    method: str
    path: str
    query: dict
    body: dict | None
    status: int = 0
    at: float = field(default_factory=time.monotonic)


@dataclass
class FakeDroplet:
    data: dict
    user_data: str | None
    polls_left: int
    octet: int
    sshd: subprocess.Popen | None = None
    sshd_error: str = ""
    machine: Machine | None = None      # with a simulated cloud: the droplet booting
    deleting: bool = False


def _iso(when: datetime) -> str:
    return when.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_user_data(text: str) -> dict:
    """{'user', 'authorized_keys', 'host_key_private', 'host_key_public'} from what was sent."""
    found: dict[str, Any] = {"user": None, "authorized_keys": [], "host_key_private": None,
             "host_key_public": None}
    files: dict[str, str] = {}
    if text.lstrip().startswith("{"):
        config = json.loads(text)
        users = (config.get("passwd") or {}).get("users") or []
        if users:
            found["user"] = users[0].get("name")
            found["authorized_keys"] = list(users[0].get("sshAuthorizedKeys") or [])
        for entry in (config.get("storage") or {}).get("files") or []:
            source = ((entry.get("contents") or {}).get("source") or "")
            if source.startswith("data:,"):
                files[entry["path"]] = urllib.parse.unquote(source[len("data:,"):])
    else:
        config = yaml.safe_load(text) or {}
        found["authorized_keys"] = list(config.get("ssh_authorized_keys") or [])
        for user in config.get("users") or []:
            found["user"] = user.get("name")
            found["authorized_keys"] += list(user.get("ssh-authorized-keys") or [])
        for entry in config.get("write_files") or []:
            files[entry["path"]] = entry.get("content", "")
    found["host_key_private"] = files.get("/etc/ssh/ssh_host_ed25519_key")
    public = files.get("/etc/ssh/ssh_host_ed25519_key.pub")
    found["host_key_public"] = " ".join(public.split()[:2]) if public else None
    return found


def _etcd_standin(directory: Path, force_command: str | None) -> str:
    """sshd's ForceCommand: the etcd step answered (see the module doc), the rest passed on."""
    return "\n".join([
        "#!/bin/sh",
        f"here={shlex.quote(str(directory))}",
        'cmd=$SSH_ORIGINAL_COMMAND',
        'if [ "$cmd" = "$(cat "$here/find-units")" ]; then',
        "    echo 'etcd-member.service /usr/lib/systemd/system/etcd-member.service'; exit 0; fi",
        'if [ "$cmd" = "$(cat "$here/etcd-ready")" ]; then',
        '    [ -e "$here/etcd-setup" ] && [ -e "$here/etcd-health" ] && exec cat "$here/etcd-health"',
        "    exit 7; fi",
        'case "$cmd" in "sudo -n sh -c "*20-k8sconf-etcd.conf*)',
        '    printf %s "$cmd" > "$here/etcd-setup"; exit 0;; esac',
        f"exec {force_command}" if force_command else 'exec /bin/sh -c "$cmd"', ""])


def _sshd_config(directory: Path, host: str, port: int, user: str,
                 force_command: str) -> str:
    lines = [
        f"Port {port}", f"ListenAddress {host}",
        f"HostKey {directory / 'ssh_host_ed25519_key'}",
        f"AuthorizedKeysFile {directory / 'authorized_keys'}",
        f"PidFile {directory / 'sshd.pid'}",
        "StrictModes no", "UsePAM no", "PermitRootLogin prohibit-password",
        "PubkeyAuthentication yes", "PasswordAuthentication no",
        "KbdInteractiveAuthentication no", f"AllowUsers {user}", "LogLevel INFO",
        "MaxStartups 100", "MaxSessions 100", "UseDNS no", "SetEnv SHLVL=1",
        f"ForceCommand {force_command}",
    ]
    return "\n".join(lines) + "\n"


class FakeDigitalOcean:
    def __init__(self, token: str, *, active_after: int = 2, sshd_dir: Path | None = None,
                 ssh_port: int = 22, force_command: str | None = None,
                 login_user: str | None = None, max_per_page: int = MAX_PER_PAGE,
                 read_only: bool = False, cloud: Cloud | None = None):
        self.token = token
        self.cloud = cloud
        self._deleting: list[threading.Thread] = []
        self.read_only = read_only
        self.catalogue = default_catalogue()
        self.active_after = active_after
        self.sshd_dir = Path(sshd_dir) if sshd_dir else None
        self.ssh_port = ssh_port
        self.force_command = force_command
        self.login_user = login_user
        self.max_per_page = max_per_page
        self.droplets: dict[int, FakeDroplet] = {}
        self.requests: list[Request] = []
        self.lock = threading.RLock()
        self._failures: list[tuple[int, dict]] = []
        self._stuck: set[str] = set()
        self._partial: tuple[int, int] | None = None
        self._etcd_sick: set[str] = set()
        self._stalls: list[float] = []
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- switches ------------------------------------------------------------------------
    def fail_next(self, status: int, count: int = 1, *, retry_after: float | None = None,
                  reset_in: float | None = None) -> None:
        """The next `count` requests (any endpoint) answer `status` instead."""
        headers = {}
        if retry_after is not None:
            headers["retry-after"] = f"{retry_after:g}"
        if reset_in is not None:
            headers["ratelimit-reset"] = str(int(time.time() + reset_in))
        with self.lock:
            self._failures += [(status, headers)] * count

    def clear_failures(self) -> None:
        with self.lock:
            self._failures.clear()
            self._stalls.clear()

    def stall_next(self, count: int, seconds: float) -> None:
        """The next `count` requests wait `seconds` before any answer (read timeouts)."""
        with self.lock:
            self._stalls += [seconds] * count

    def stick(self, name_part: str) -> None:
        """Droplets whose name contains name_part stay 'new' forever."""
        with self.lock:
            self._stuck.add(name_part)

    def partial_create(self, made: int, status: int = 202) -> None:
        """The next create makes only `made` droplets, then answers `status` (202 lists
        those made; anything else is an error after the fact)."""
        with self.lock:
            self._partial = (made, status)

    def etcd_never_healthy(self, name_part: str) -> None:
        """Droplets whose name contains name_part never answer the etcd health check."""
        with self.lock:
            self._etcd_sick.add(name_part)

    def etcd_setup(self, name: str) -> str | None:
        """The etcd setup command the provider sent droplet `name` (None: not sent)."""
        assert self.sshd_dir is not None
        path = self.sshd_dir / name / "etcd-setup"
        return path.read_text() if path.exists() else None

    def add_droplet(self, name: str, tags: list[str], age: float = 0.0,
                    status: str = "active") -> dict:
        """A droplet made `age` seconds ago by someone else (for the reaper's tests)."""
        with self.lock:
            droplet = self._new_droplet(name, {"tags": tags, "region": "nyc3",
                                               "size": "s-1vcpu-2gb", "image": 12345}, None)
            droplet.data["created_at"] = _iso(datetime.now(timezone.utc) - timedelta(seconds=age))
            if status == "active":
                self._activate(droplet)
            return droplet.data

    # -- views -----------------------------------------------------------------------------
    @property
    def url(self) -> str:
        assert self._server is not None, "the fake is not started"
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def names(self) -> list[str]:
        with self.lock:
            return sorted(d.data["name"] for d in self.droplets.values())

    def count(self) -> int:
        with self.lock:
            return len(self.droplets)

    def calls(self, method: str | None = None, path: str | None = None) -> list[Request]:
        with self.lock:
            return [r for r in self.requests
                    if (method is None or r.method == method) and (path is None or r.path == path)]

    def sshd_pids(self) -> list[int]:
        with self.lock:
            return [d.sshd.pid for d in self.droplets.values() if d.sshd is not None]

    # -- life --------------------------------------------------------------------------------
    def start(self) -> Self:
        fake = self

        class Handler(_Handler):
            pass
        Handler.fake = fake
        self._server = _QuietServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.1}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        with self.lock:
            for droplet in self.droplets.values():
                self._stop_sshd(droplet)
            deleting = list(self._deleting)
        for thread in deleting:    # the cloud's stop() removes whatever is still up
            thread.join(120)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- the model ---------------------------------------------------------------------------
    def _new_droplet(self, name: str, body: dict, user_data: str | None) -> FakeDroplet:
        droplet_id = next(_IDS)
        octet = next(_ADDRESSES)
        if octet > 254:
            raise RuntimeError("fake: out of 127.0.0.N addresses")
        region, size, image = body.get("region"), body.get("size"), body.get("image")
        data: dict[str, Any] = {
            "id": droplet_id, "name": name, "memory": 2048, "vcpus": 1, "disk": 50,
            "locked": False, "status": "new", "kernel": None,
            "created_at": _iso(datetime.now(timezone.utc)),
            "features": ["droplet_agent", "private_networking"],
            "backup_ids": [], "next_backup_window": None, "snapshot_ids": [],
            "image": {"id": image if isinstance(image, int) else 7555620,
                      "name": "Flatcar Container Linux", "distribution": "Unknown OS",
                      "slug": image if isinstance(image, str) else None, "public": False,
                      "regions": [region], "type": "custom"},
            "volume_ids": [],
            "size": {"slug": size, "memory": 2048, "vcpus": 1, "disk": 50,
                     "transfer": 2.0, "price_monthly": 12.0, "price_hourly": 0.01786,
                     "regions": [region], "available": True},
            "size_slug": size,
            "networks": {"v4": [], "v6": []},
            "region": {"name": "New York 3", "slug": region, "features": ["metadata"],
                       "available": True, "sizes": [size]},
            "tags": list(body.get("tags") or []),
            "vpc_uuid": body.get("vpc_uuid") or "760e09ef-dc84-11e8-981e-3cfdfeaae000",
        }
        stuck = any(part in name for part in self._stuck)
        droplet = FakeDroplet(data=data, user_data=user_data,
                              polls_left=10 ** 9 if stuck else self.active_after, octet=octet)
        self.droplets[droplet_id] = droplet
        if self.cloud is not None:
            droplet.machine = self.cloud.launch(droplet_id, name, user_data)
        elif self.sshd_dir is not None and user_data:
            self._start_sshd(droplet)
        return droplet

    def _activate(self, droplet: FakeDroplet) -> None:
        droplet.polls_left = 0
        droplet.data["status"] = "active"
        if droplet.machine is not None:
            public, private = droplet.machine.public_ip, droplet.machine.private_ip
            droplet.data["networks"]["v4"] = [
                {"ip_address": public, "netmask": "255.255.255.0",
                 "gateway": public.rsplit(".", 1)[0] + ".1", "type": "public"},
                {"ip_address": private, "netmask": "255.255.255.0",
                 "gateway": private.rsplit(".", 1)[0] + ".1", "type": "private"}]
            return
        droplet.data["networks"]["v4"] = [
            {"ip_address": f"127.0.0.{droplet.octet}", "netmask": "255.255.255.0",
             "gateway": "127.0.0.1", "type": "public"},
            {"ip_address": f"127.1.0.{droplet.octet}", "netmask": "255.255.0.0",
             "gateway": "127.1.0.1", "type": "private"},
        ]

    def _seen(self, droplet: FakeDroplet) -> dict:
        machine = droplet.machine
        if machine is not None and droplet.data["status"] == "new":
            if machine.error:          # what a droplet that never came up shows
                droplet.data["status"] = "off"
            elif not machine.ready.is_set():
                return json.loads(json.dumps(droplet.data))
        if droplet.data["status"] == "new":
            droplet.polls_left -= 1
            if droplet.polls_left <= 0:
                self._activate(droplet)
        return json.loads(json.dumps(droplet.data))

    def _delete(self, droplet_id: int) -> None:
        droplet = self.droplets[droplet_id]
        if droplet.machine is None:
            self.droplets.pop(droplet_id)
            self._stop_sshd(droplet)
        elif not droplet.deleting:
            # listed until its node is gone, as a deleted droplet lingers a little
            droplet.deleting = True
            thread = threading.Thread(target=self._tear_down, args=(droplet_id, droplet),
                                      name=f"delete-{droplet_id}", daemon=True)
            self._deleting.append(thread)
            thread.start()

    def _tear_down(self, droplet_id: int, droplet: FakeDroplet) -> None:
        assert self.cloud is not None and droplet.machine is not None
        try:
            self.cloud.delete(droplet.machine)
        finally:
            with self.lock:
                self.droplets.pop(droplet_id, None)

    # -- sshd per droplet --------------------------------------------------------------------
    def _start_sshd(self, droplet: FakeDroplet) -> None:
        import subprocess
        found = parse_user_data(droplet.user_data or "")
        if not found["host_key_private"]:
            droplet.sshd_error = "no host key in user_data"
            return
        directory = self.sshd_dir / droplet.data["name"]
        directory.mkdir(parents=True, exist_ok=True)
        key = directory / "ssh_host_ed25519_key"
        key.write_text(found["host_key_private"])
        key.chmod(0o600)
        (directory / "authorized_keys").write_text("\n".join(found["authorized_keys"]) + "\n")
        user = self.login_user or found["user"] or getpass.getuser()
        host = f"127.0.0.{droplet.octet}"
        (directory / "find-units").write_text(FIND_UNITS)
        (directory / "etcd-ready").write_text(ETCD_READY)
        standin = directory / "command"
        standin.write_text(_etcd_standin(directory, self.force_command))
        standin.chmod(0o755)
        config = directory / "sshd_config"
        config.write_text(_sshd_config(directory, host, self.ssh_port, user, str(standin)))
        if os.geteuid() == 0:
            Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        with (directory / "sshd.log").open("ab") as log:
            process = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)],
                                       stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                       start_new_session=True)
        if not _wait_for_banner(host, self.ssh_port, process, time.monotonic() + 10):
            stop(process)
            droplet.sshd_error = (directory / "sshd.log").read_text(errors="replace")[-500:]
            return
        droplet.sshd = process

    def _etcd_cluster(self, droplets: list[FakeDroplet]) -> None:
        """What each droplet's etcd health check answers once set up: every droplet of
        the create a member (ETCD_READY's two answers)."""
        members = [{"name": d.data["name"], "peerURLs": [f"http://127.1.0.{d.octet}:2380"],
                    "clientURLs": [f"http://127.1.0.{d.octet}:2379",
                                   f"http://127.1.0.{d.octet}:4001"]} for d in droplets]
        answer = '{"health":"true","reason":""}\n' + json.dumps({"members": members}) + "\n"
        for droplet in droplets:
            directory = (self.sshd_dir or Path()) / droplet.data["name"]
            sick = any(part in droplet.data["name"] for part in self._etcd_sick)
            if droplet.sshd is not None and not sick:
                (directory / "etcd-health").write_text(answer)

    def _stop_sshd(self, droplet: FakeDroplet) -> None:
        if droplet.sshd is not None:
            with contextlib.suppress(Exception):
                stop(droplet.sshd)
            droplet.sshd = None


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        pass  # a client that hung up (a read timeout under test) is not news


class _Handler(BaseHTTPRequestHandler):
    fake: FakeDigitalOcean
    protocol_version = "HTTP/1.1"
    server_version = "fake-digitalocean"

    def log_message(self, *args) -> None:  # quiet
        pass

    # -- plumbing ----------------------------------------------------------------------------
    def _answer(self, status: int, payload: dict | None = None, headers: dict | None = None):
        self.record.status = status  # before the client can see the answer
        body = b"" if payload is None else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json; charset=utf-8")
        self.send_header("content-length", str(len(body)))
        values = {"ratelimit-limit": "5000", "ratelimit-remaining": "4816",
                  "ratelimit-reset": str(int(time.time()) + 60), **(headers or {})}
        if status == 429:
            values["ratelimit-remaining"] = "0"
        for name, value in values.items():
            self.send_header(name, value)
        self.end_headers()
        if body:
            self.wfile.write(body)
        return status

    def _error(self, status: int, ident: str, message: str, headers: dict | None = None):
        return self._answer(status, {"id": ident, "message": message}, headers)

    def _handle(self, method: str) -> None:
        url = urllib.parse.urlsplit(self.path)
        query = {k: v[-1] for k, v in urllib.parse.parse_qs(url.query).items()}
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        record = Request(method, url.path, query, body)
        fake = self.fake
        with fake.lock:
            stall = fake._stalls.pop(0) if fake._stalls else 0.0
        if stall:
            time.sleep(stall)
            record.status = -1  # the client gave up; whatever happens next is not an answer
            with fake.lock:
                fake.requests.append(record)
            return
        self.record = record
        with fake.lock:
            fake.requests.append(record)
            self._route(method, url.path, query, body, raw)

    def _route(self, method, path, query, body, raw) -> int:
        fake = self.fake
        if self.headers.get("authorization") != f"Bearer {fake.token}":
            return self._error(401, "Unauthorized", "Unable to authenticate you")
        if fake._failures:
            status, headers = fake._failures.pop(0)
            if status == 429:
                return self._error(429, "too_many_requests", "API Rate limit exceeded.",
                                   headers)
            return self._error(status, "server_error",
                               "Unexpected server-side error", headers)
        parts = [p for p in path.split("/") if p]
        if fake.read_only and method != "GET":
            return self._error(403, "Forbidden", FORBIDDEN)
        if method == "GET" and parts[:1] == ["v2"] and parts != ["v2", "account"]:
            found = self._catalogue(parts[1:], query)
            if found is not None:
                return found
        if parts == ["v2", "account"] and method == "GET":
            return self._answer(200, {"account": {
                "droplet_limit": 25, "floating_ip_limit": 5, "email": "ci@example.com",
                "uuid": "b6fr89dbf6d9156cace5f3c78dc9851d957381ef", "email_verified": True,
                "status": "active", "status_message": ""}})
        if parts == ["v2", "droplets"]:
            if method == "POST":
                return self._create(body)
            if method == "GET":
                return self._list(query)
            if method == "DELETE":
                tag = query.get("tag_name")
                if not tag:
                    return self._error(422, "unprocessable_entity", "tag_name is required")
                for droplet_id in [i for i, d in fake.droplets.items()
                                   if tag in d.data["tags"]]:
                    fake._delete(droplet_id)
                return self._answer(204)
        if len(parts) == 3 and parts[:2] == ["v2", "droplets"] and parts[2].isdigit():
            droplet = fake.droplets.get(int(parts[2]))
            if droplet is None:
                return self._error(404, "not_found",
                                   "The resource you were accessing could not be found.")
            if method == "GET":
                return self._answer(200, {"droplet": fake._seen(droplet)})
            if method == "DELETE":
                fake._delete(int(parts[2]))
                return self._answer(204)
        return self._error(404, "not_found", f"fake: no {method} {path}")

    def _catalogue(self, parts: list[str], query: dict) -> int | None:
        """GET of what the account offers; None when the path is not the catalogue's."""
        catalogue = self.fake.catalogue
        if parts in (["regions"], ["sizes"]):
            return self._page(parts[0], catalogue[parts[0]], query)
        lookups = {("images",): ("image", "images", ("id", "slug")),
                   ("account", "keys"): ("ssh_key", "ssh_keys", ("id", "fingerprint")),
                   ("vpcs",): ("vpc", "vpcs", ("id",))}
        for prefix, (one, many, keys) in lookups.items():
            if len(parts) == len(prefix) + 1 and tuple(parts[:-1]) == prefix:
                wanted = urllib.parse.unquote(parts[-1])
                for entry in catalogue[many]:
                    if any(str(entry.get(k)) == wanted for k in keys):
                        return self._answer(200, {one: entry})
                return self._error(404, "not_found", NOT_FOUND)
        return None

    def _page(self, name: str, entries: list[dict], query: dict) -> int:
        try:
            page = max(1, int(query.get("page", 1)))
            per_page = max(1, min(int(query.get("per_page", 20)), self.fake.max_per_page))
        except ValueError:
            return self._error(400, "bad_request", "page and per_page are numbers")
        chunk = entries[(page - 1) * per_page: page * per_page]
        pages = {}
        if page * per_page < len(entries):
            pages["next"] = f"{self.fake.url}/v2/{name}?page={page + 1}&per_page={per_page}"
        return self._answer(200, {name: chunk, "links": {"pages": pages},
                                  "meta": {"total": len(entries)}})

    def _create(self, body) -> int:
        fake = self.fake
        if not isinstance(body, dict):
            return self._error(400, "bad_request", "body is not JSON")
        names = body.get("names") or ([body["name"]] if body.get("name") else [])
        missing = [k for k in ("region", "size", "image") if not body.get(k)]
        if not names or missing:
            return self._error(422, "unprocessable_entity",
                               f"missing: {', '.join(missing or ['names'])}")
        if len(names) > 10:
            return self._error(422, "unprocessable_entity", "at most 10 names per request")
        user_data = body.get("user_data")
        if user_data is not None and len(user_data.encode()) > 64 * 1024:
            return self._error(422, "unprocessable_entity", "user_data is too large")
        status = 202
        if fake._partial is not None:
            made, status = fake._partial
            fake._partial = None
            names = names[:made]
        new = [fake._new_droplet(name, body, user_data) for name in names]
        fake._etcd_cluster(new)
        droplets = [d.data for d in new]
        if status != 202:
            return self._error(status, "server_error" if status >= 500 else
                               "unprocessable_entity", "creating droplets failed mid-way")
        copies = [json.loads(json.dumps(d)) for d in droplets]
        actions = [{"id": 36805096 + i, "rel": "create",
                    "href": f"{fake.url}/v2/actions/{36805096 + i}"} for i in range(len(copies))]
        if body.get("names"):
            return self._answer(202, {"droplets": copies, "links": {"actions": actions}})
        return self._answer(202, {"droplet": copies[0], "links": {"actions": actions}})

    def _list(self, query: dict) -> int:
        fake = self.fake
        tag = query.get("tag_name")
        try:
            page = max(1, int(query.get("page", 1)))
            per_page = max(1, min(int(query.get("per_page", 20)), fake.max_per_page))
        except ValueError:
            return self._error(400, "bad_request", "page and per_page are numbers")
        matching = [d for _, d in sorted(fake.droplets.items())
                    if tag is None or tag in d.data["tags"]]
        total = len(matching)
        last = max(1, -(-total // per_page))
        chunk = matching[(page - 1) * per_page: page * per_page]

        def link(number: int) -> str:
            params = {"page": number, "per_page": per_page}
            if tag:
                params["tag_name"] = tag
            return f"{fake.url}/v2/droplets?{urllib.parse.urlencode(params)}"
        pages: dict[str, str] = {}
        if page > 1:
            pages.update(first=link(1), prev=link(page - 1))
        if page < last:
            pages.update(next=link(page + 1), last=link(last))
        return self._answer(200, {"droplets": [fake._seen(d) for d in chunk],
                                  "links": {"pages": pages}, "meta": {"total": total}})

    def do_GET(self):  # noqa: N802
        self._handle("GET")

    def do_POST(self):  # noqa: N802
        self._handle("POST")

    def do_DELETE(self):  # noqa: N802
        self._handle("DELETE")
