"""The `digitalocean` provider: fresh droplets per run, on the official client `pydo`.

    DIGITALOCEAN_TOKEN=... python3 -m pytest --inventory inventories/do.yaml
    python3 -m helpers.providers.digitalocean reap --older-than 5h [--tag T] [--dry-run]

Design, and why:
- One create request. `POST /v2/droplets` with `names` makes every node at once, and
  carries ONE `user_data` for all of them. The run therefore generates ONE ed25519 host
  key (cryptography, never written to disk here) that every droplet of the run gets
  through user_data; its public line goes into each `Node.host_keys`, so SSH verifies
  it and never trusts a first key. Per-node keys selected by hostname would add a
  moving part for no protection: each droplet can read the whole user_data from the
  metadata service (169.254.169.254) for its whole life, so any node of the run could
  read every node's private key anyway. The key dies with the run's droplets.
- What user_data carries: the identity only (the host key, the public half of the
  inventory's `ssh.key` for `ssh.user`, and a oneshot unit that sets the hostname to the
  droplet's name less the run suffix, i.e. the guide's `coreos-N`, and writes
  /etc/environment (COREOS_PUBLIC_IPV4 / COREOS_PRIVATE_IPV4) from the metadata
  service), as Ignition JSON or legacy cloud-config per `digitalocean.user_data`. Size is
  checked against DigitalOcean's 64 KiB before sending. The guide's install is done
  afterwards by the SSH bootstrap: one shared user_data cannot carry per-role units,
  and the `-machines=` list needs private IPs that exist only after creation, so
  `bootstrap.mode: cloud-config` is refused in preflight.
- The etcd the guide starts from (three members over the private IPv4s, clients on 2379
  and 4001, the v2 API on) is set up over SSH once every droplet answers, on all at
  once: the same ETCD_* drop-in the qemu provider writes at first boot, and on Flatcar
  `etcd.service` made an alias of `etcd-member.service` for the guide's units; then a
  wait for every member healthy (helpers/providers/do_etcd.py).
- Names and tags: droplet `<node>-<run id>` (hostname characters only); tags = the
  inventory's + project tag `k8s-coreos-conformance` + run tag `k8sconf-run-<run id>`.
  Everything is found and removed by the run tag; `destroy(None)` derives it from the
  run id, so a killed create is cleaned up too. The reaper removes what a killed
  runner left, by the project tag and age.
- The API client (pydo, bounded retries, the token kept secret) is
  helpers/providers/do_api.py; the user_data is helpers/providers/do_userdata.py; the
  reaper is helpers/providers/do_reap.py.
- Waits are bounded: `active_timeout` for `new` -> `active` (then a ProviderError names
  the droplets still pending), the same again for SSH and again for etcd (each remote
  command within `ssh.command_timeout`), 120 s for destroy to show none left. Any
  failure in create removes whatever exists under the run tag before raising.
- The token is read from the environment only, kept out of repr(), logs, messages
  (scrubbed), Cluster.state and the state file.
"""
from __future__ import annotations

import logging
import re
import sys
import time
import urllib.parse
from pathlib import Path

from helpers.inventory import Inventory
from helpers.inventory_sections import DigitalOceanSettings
from helpers.providers import do_etcd
from helpers.providers.base import Cluster, Node, Provider, ProviderError, ProviderUnavailable
from helpers.providers.do_api import (
    DigitalOceanAPI,
    RetryPolicy,
    is_loopback,
    one_line,
    scrub,
    token_from_env,
)
from helpers.providers.do_userdata import generate_host_key, render_user_data
from helpers.providers.static import reboot_over_ssh
from helpers.waiting import poll

log = logging.getLogger(__name__)

PROJECT_TAG = "k8s-coreos-conformance"
RUN_TAG_PREFIX = "k8sconf-run-"
MAX_USER_DATA = 64 * 1024                  # DigitalOcean's limit, in bytes
MAX_PER_CREATE = 10                        # names in one POST /v2/droplets
DESTROY_TIMEOUT = 120.0


def run_suffix(run_id: str) -> str:
    suffix = re.sub(r"[^a-z0-9-]+", "-", run_id.lower()).strip("-")
    if not suffix:
        raise ProviderError(f"digitalocean: run id {run_id!r} has no hostname characters")
    return suffix[:30].rstrip("-")


def run_tag(run_id: str) -> str:
    return RUN_TAG_PREFIX + run_suffix(run_id)


def droplet_name(node_name: str, run_id: str) -> str:
    return f"{node_name}-{run_suffix(run_id)}"


def public_key_line(private_key_path: Path) -> str:
    """The authorized_keys line of the inventory's SSH key (from .pub, else derived)."""
    pub = Path(str(private_key_path) + ".pub")
    if pub.is_file():
        fields = pub.read_text().split()
        if len(fields) >= 2:
            return f"{fields[0]} {fields[1]}"
    import paramiko
    try:
        key = paramiko.PKey.from_path(str(private_key_path))
    except (OSError, paramiko.SSHException, ValueError) as exc:
        raise ProviderUnavailable(f"digitalocean: cannot read ssh.key {private_key_path}: "
                                  f"{one_line(exc)}") from None
    return f"{key.get_name()} {key.get_base64()}"


def _ipv4(droplet: dict, kind: str) -> str | None:
    for net in (droplet.get("networks") or {}).get("v4") or []:
        if net.get("type") == kind and net.get("ip_address"):
            return str(net["ip_address"])
    return None


# -- the provider ---------------------------------------------------------------------------------
class DigitalOceanProvider(Provider):
    name = "digitalocean"
    retry = RetryPolicy()
    poll_max = 5.0               # seconds between status polls, at most
    destroy_timeout = DESTROY_TIMEOUT

    def __init__(self, inventory: Inventory, run_dir: Path, run_id: str):
        super().__init__(inventory, run_dir, run_id)
        self.run_tag = run_tag(run_id)
        self._api: DigitalOceanAPI | None = None

    @property
    def settings(self) -> DigitalOceanSettings:
        if self.inventory.digitalocean is None:
            raise ProviderUnavailable("digitalocean: the inventory has no 'digitalocean' section")
        return self.inventory.digitalocean

    @property
    def api(self) -> DigitalOceanAPI:
        if self._api is None:
            self._api = DigitalOceanAPI(self.settings.api_url, token_from_env(), self.retry)
        return self._api

    def _login_key_line(self) -> str:
        key = self.inventory.ssh.key
        if key is None or not Path(key).is_file():
            raise ProviderUnavailable(f"digitalocean: ssh.key {key or '(unset)'} is not a file: "
                                      "the private key whose public half logs in as "
                                      f"{self.inventory.ssh.user}")
        return public_key_line(Path(key))

    def preflight(self) -> None:
        token_from_env()
        settings = self.settings
        self._login_key_line()
        url = urllib.parse.urlsplit(settings.api_url)
        if url.scheme != "https" and not is_loopback(url.hostname):
            raise ProviderUnavailable(f"digitalocean: api_url {settings.api_url} must use https")
        boot = self.inventory.bootstrap
        if boot.enabled and boot.mode == "cloud-config":
            raise ProviderUnavailable(
                "digitalocean: bootstrap mode 'cloud-config' is not supported: one create "
                "request carries one user_data for all droplets, and the units need private "
                "IPs known only after creation; use bootstrap mode 'ssh'")

    # -- create ---------------------------------------------------------------------------
    def create(self) -> Cluster:
        settings, ssh = self.settings, self.inventory.ssh
        specs = self.inventory.node_specs()
        names = {droplet_name(spec.name, self.run_id): spec for spec in specs}
        if len(names) > MAX_PER_CREATE:
            raise ProviderError(f"digitalocean: {len(names)} nodes, but one create request "
                                f"makes at most {MAX_PER_CREATE} droplets")
        host_private, host_public = generate_host_key()
        user_data = render_user_data(settings.user_data, ssh.user,
                                     [self._login_key_line()], host_private,
                                     host_public, run_suffix(self.run_id))
        del host_private
        size = len(user_data.encode())
        if size > MAX_USER_DATA:
            raise ProviderError(f"digitalocean: user_data is {size} bytes, more than the "
                                f"{MAX_USER_DATA} bytes DigitalOcean accepts")
        tags = list(dict.fromkeys([*settings.tags, PROJECT_TAG, self.run_tag]))
        body = {"names": list(names), "region": settings.region, "size": settings.size,
                "image": settings.image, "ssh_keys": list(settings.ssh_keys), "tags": tags,
                "user_data": user_data, "ipv6": False, "monitoring": False}
        if settings.vpc_uuid:
            body["vpc_uuid"] = settings.vpc_uuid
        log.info("digitalocean: creating %s in %s (%s, image %s), tagged %s",
                 ", ".join(names), settings.region, settings.size, settings.image, self.run_tag)
        api = self.api
        try:
            created = api.create_droplets(body, self.run_tag)
            droplets = self._check_all_made(created, list(names))
            droplets = self._wait_active(droplets)
            nodes = [self._node(droplets[name], spec, host_public)
                     for name, spec in names.items()]
            self._wait_for_ssh(nodes)
            self._set_up_etcd(dict(zip(names, nodes, strict=True)))
        except BaseException as exc:
            log.warning("digitalocean: create failed (%s); removing droplets tagged %s",
                        one_line(scrub(str(exc)) or type(exc).__name__, 200), self.run_tag)
            self._cleanup_quietly()
            raise
        state = {"run_id": self.run_id, "run_tag": self.run_tag, "api_url": settings.api_url,
                 "region": settings.region,
                 "droplets": {name: droplets[name]["id"] for name in names}}
        return Cluster(provider=self.name, nodes=nodes, ssh_user=ssh.user, ssh_key=str(ssh.key),
                       state=state)

    def _check_all_made(self, created: list[dict], wanted: list[str]) -> dict[str, dict]:
        found = {d.get("name"): d for d in created}
        if set(wanted) - set(found):  # the reply may be short: ask what exists
            found.update({d.get("name"): d for d in self.api.list_droplets(self.run_tag)})
        missing = [name for name in wanted if name not in found]
        if missing:
            made = len(wanted) - len(missing)
            raise ProviderError(f"digitalocean: create made {made} of {len(wanted)} droplets "
                                f"(missing: {', '.join(missing)})")
        return {name: found[name] for name in wanted}

    def _wait_active(self, droplets: dict[str, dict]) -> dict[str, dict]:
        timeout = self.settings.active_timeout
        pending: list[str] = []

        def all_active() -> bool:
            nonlocal droplets, pending
            listed = {d.get("name"): d for d in self.api.list_droplets(self.run_tag)}
            gone = [name for name in droplets if name not in listed]
            if gone:
                raise ProviderError(f"digitalocean: droplet {', '.join(gone)} disappeared "
                                    "while booting")
            droplets = {name: listed[name] for name in droplets}
            failed = [f"{n} ({d.get('status')})" for n, d in droplets.items()
                      if d.get("status") not in ("new", "active")]
            if failed:
                raise ProviderError(f"digitalocean: droplet {', '.join(failed)} instead of "
                                    "active")
            pending = [n for n, d in droplets.items() if d.get("status") != "active"]
            return not pending
        if not poll(all_active, timeout=timeout, interval=0.5, max_interval=self.poll_max):
            described = ", ".join(f"{n} (id {droplets[n].get('id')})" for n in pending)
            raise ProviderError(f"digitalocean: droplet {described} still "
                                f"'{droplets[pending[0]].get('status')}' after {timeout:g} s "
                                "(digitalocean.active_timeout)")
        return droplets

    def _node(self, droplet: dict, spec, host_public: str) -> Node:
        public, private = _ipv4(droplet, "public"), _ipv4(droplet, "private")
        if not public or not private:
            raise ProviderError(f"digitalocean: droplet {droplet.get('name')} has no "
                                f"{'public' if not public else 'private'} IPv4 in networks.v4")
        return Node(name=spec.name, role=spec.role, public_ip=public, private_ip=private,
                    ssh_host=public, ssh_port=self.inventory.ssh.port, host_keys=(host_public,))

    def _wait_for_ssh(self, nodes: list[Node]) -> None:
        """Every node answers SSH with the injected host key, within active_timeout.

        Sequential with one deadline: the droplets boot in parallel, so this costs the
        slowest boot, and it stays in the main thread (Ctrl-C and SIGTERM interrupt it).
        """
        from helpers import ssh as ssh_mod
        settings = self.inventory.ssh
        timeout = self.settings.active_timeout
        deadline = time.monotonic() + timeout
        for node in nodes:
            remaining = max(1.0, deadline - time.monotonic())
            try:
                ssh_mod.wait_for_ssh(node, settings.user, settings.key, remaining,
                                     policy="verify", known_hosts=settings.known_hosts,
                                     connect_timeout=settings.connect_timeout).close()
            except ssh_mod.HostKeyRejected as exc:
                raise ProviderError(f"digitalocean: {exc} (the droplet did not take the host "
                                    "key from user_data)") from None
            except ssh_mod.SSHError as exc:
                raise ProviderError(f"digitalocean: {one_line(exc)}") from None

    def _set_up_etcd(self, droplets: dict[str, Node]) -> None:
        """The guide's etcd on every droplet (helpers/providers/do_etcd.py), healthy
        within active_timeout."""
        from helpers import ssh as ssh_mod
        settings = self.inventory.ssh
        deadline = time.monotonic() + self.settings.active_timeout

        def connect(node: Node) -> ssh_mod.Connection:
            return ssh_mod.wait_for_ssh(node, settings.user, settings.key,
                                        max(1.0, deadline - time.monotonic()), policy="verify",
                                        known_hosts=settings.known_hosts,
                                        connect_timeout=settings.connect_timeout)
        do_etcd.set_up(droplets, connect, self.run_tag, deadline, settings.command_timeout)

    # -- attach, reboot ------------------------------------------------------------------
    def attach(self, cluster: Cluster) -> Cluster:
        if cluster.state.get("run_tag"):
            self.run_tag = cluster.state["run_tag"]
        return cluster

    def reboot(self, cluster: Cluster, node: Node, timeout: float) -> None:
        reboot_over_ssh(self, cluster, node, timeout)

    # -- destroy --------------------------------------------------------------------------
    def destroy(self, cluster: Cluster | None) -> None:
        tag = (cluster.state.get("run_tag") if cluster else None) or self.run_tag
        api = self.api
        log.info("digitalocean: destroying droplets tagged %s", tag)
        api.destroy_by_tag(tag)
        deadline = time.monotonic() + self.destroy_timeout
        left: list[dict] = []
        reissued = False

        def all_gone() -> bool:
            nonlocal left, reissued
            left = api.list_droplets(tag)
            if left and not reissued and deadline - time.monotonic() < self.destroy_timeout / 2:
                reissued = True  # a delete lost on the way: ask once more, one by one
                for droplet in left:
                    api.destroy(droplet["id"])
            return not left
        if not poll(all_gone, timeout=self.destroy_timeout, interval=1.0,
                    max_interval=self.poll_max):
            names = ", ".join(f"{d.get('name')} (id {d.get('id')})" for d in left)
            raise ProviderError(f"digitalocean: {len(left)} droplet(s) tagged {tag} remain "
                                f"after {self.destroy_timeout:g} s: {names}")

    def _cleanup_quietly(self) -> None:
        try:
            self.destroy(None)
        except Exception as exc:  # noqa: BLE001 - the create error is the one to report
            log.error("digitalocean: cleanup after a failed create failed: %s",
                      one_line(scrub(str(exc))))


if __name__ == "__main__":
    from helpers.providers.do_reap import main
    sys.exit(main())
