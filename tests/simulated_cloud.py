"""A simulated DigitalOcean region on this machine: the networks droplets share, and
the droplets the fake API (tests/fake_digitalocean.py) makes, each a SimulatedDroplet
(tests/simulated_droplet.py) booted from its user_data by the real Ignition. A
cloud-config user_data is refused with its reason (CLOUD_CONFIG_REFUSED): the droplet
shows `off`, as one whose image cannot read its user_data never comes up.

    with SimulatedCloud("dosim93", 93, run_dir) as cloud, \\
            FakeDigitalOcean(token, cloud=cloud) as api:
        ...   # POST /v2/droplets boots droplets; DELETE tears them down

Networks: public 192.168.<octet>.0/24 and private 10.<100+octet>.0.0/24, one bridge
each (`<prefix>-pub`, `<prefix>-priv`), the host at .254 on both; droplet N is .N+1 on
both. The octet is the caller's, so that two clouds (or a cloud and a local cluster)
never share a range; a collision with the host's routes is refused before anything
is made. The fake reports a droplet `active` only once it runs and the host routes its
public address over the cloud's bridge (confirmed here, before any connection).

Everything is named by the prefix, so `start()` first removes what a killed run left
(droplets `<prefix>d<N>-*`, then the bridges), and `stop()` leaves nothing.
"""
from __future__ import annotations

import ipaddress
import itertools
import logging
import re
import threading
import time
from pathlib import Path
from typing import Self

from helpers.inventory import parse
from helpers.providers import netns
from helpers.providers.local import LocalProvider
from helpers.providers.local_rootfs import ensure_rootfs
from helpers.providers.processes import read_text
from tests.simulated_droplet import CACHE_DIR, WORK_DIR, SimulatedDroplet

log = logging.getLogger(__name__)
BOOT_JOIN = 120.0       # seconds stop() waits for a droplet still booting
# Flatcar reads a cloud-config with coreos-cloudinit, which Debian does not package
CLOUD_CONFIG_REFUSED = ("cloud-config user_data: the simulated image applies Ignition only "
                        "(Flatcar's coreos-cloudinit is not simulated); use "
                        "digitalocean.user_data: ignition")


class Machine:
    """One droplet as the fake API sees it: its addresses, booted or failed, deleted."""

    def __init__(self, droplet: SimulatedDroplet):
        self.droplet = droplet
        self.ready = threading.Event()
        self.error = ""
        self.seconds: float | None = None     # to running, once booted
        self.thread: threading.Thread | None = None

    @property
    def public_ip(self) -> str:
        return self.droplet.plan.public_ip

    @property
    def private_ip(self) -> str:
        return self.droplet.plan.private_ip


class SimulatedCloud:
    def __init__(self, prefix: str, octet: int, run_dir: Path):
        self.prefix = prefix
        self.public = ipaddress.IPv4Network(f"192.168.{octet}.0/24")
        self.private = ipaddress.IPv4Network(f"10.{100 + octet}.0.0/24")
        self.run_dir = Path(run_dir)
        self.local = LocalProvider(parse({
            "provider": "local", "bootstrap": {"enabled": False},
            "local": {"prefix": prefix, "public_network": str(self.public),
                      "private_network": str(self.private)}}), self.run_dir, prefix)
        self.bridges = netns.bridge_names(prefix)
        self._numbers = itertools.count(1)
        self._lock = threading.Lock()
        self.machines: list[Machine] = []      # up, or booting
        self.booted: list[Machine] = []        # every one launched, for the tests to read

    # -- life ---------------------------------------------------------------------------
    def start(self) -> Self:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.remove_leftovers()
        netns.check_no_collision([self.public, self.private], set(self.bridges))
        ensure_rootfs(CACHE_DIR)
        self.local._build_bridges()
        return self

    def stop(self) -> None:
        with self._lock:
            machines, self.machines = self.machines, []
        for machine in machines:
            if machine.thread is not None:
                machine.thread.join(BOOT_JOIN)
        for machine in machines:
            machine.droplet.destroy()
        self.remove_leftovers()

    def __enter__(self) -> Self:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- what the fake API calls --------------------------------------------------------
    def launch(self, droplet_id: int, name: str, user_data: str | None) -> Machine:
        """A droplet booting in the background from `user_data`; `ready` once it runs."""
        number = next(self._numbers)
        if number + 1 >= 254:
            raise RuntimeError(f"simulated cloud {self.prefix}: out of addresses")
        droplet = SimulatedDroplet(self.prefix, number, droplet_id, name,
                                   str(self.public[number + 1]), str(self.private[number + 1]),
                                   str(self.public), str(self.private), self.run_dir,
                                   self.bridges)
        machine = Machine(droplet)
        with self._lock:
            self.machines.append(machine)
            self.booted.append(machine)
        machine.thread = threading.Thread(target=self._boot, args=(machine, user_data),
                                          name=f"boot-{name}", daemon=True)
        machine.thread.start()
        return machine

    def delete(self, machine: Machine) -> None:
        """The droplet powered off and every trace of it removed (blocks until done)."""
        if machine.thread is not None:
            machine.thread.join(BOOT_JOIN)
        machine.droplet.destroy()
        with self._lock:
            if machine in self.machines:
                self.machines.remove(machine)

    def _boot(self, machine: Machine, user_data: str | None) -> None:
        started = time.monotonic()
        try:
            if not user_data:
                raise RuntimeError("no user_data: this image boots only what Ignition applies")
            if user_data.lstrip().startswith("#cloud-config"):
                raise RuntimeError(CLOUD_CONFIG_REFUSED)
            machine.droplet.boot(user_data)
            netns.confirm_route(machine.public_ip, self.bridges[0])
            machine.seconds = round(time.monotonic() - started, 1)
        except Exception as exc:  # noqa: BLE001 - reported as the droplet's state
            machine.error = " ".join(str(exc).split())[:300] or type(exc).__name__
            log.error("simulated droplet %s failed to boot: %s", machine.droplet.plan.name,
                      machine.error)
        finally:
            machine.ready.set()

    @property
    def boot_seconds(self) -> list[float]:
        """How long each droplet that came up took to run."""
        return [m.seconds for m in self.booted if m.seconds is not None]

    # -- leftovers ------------------------------------------------------------------------
    def droplet_prefixes(self) -> list[str]:
        """Prefixes of this cloud's droplets on the machine, from node dirs and namespaces."""
        pattern = re.compile(rf"^({re.escape(self.prefix)}d\d+)-")
        found = set()
        if WORK_DIR.is_dir():
            for d in WORK_DIR.iterdir():
                if (match := pattern.match(d.name)) and read_text(d / "prefix") == match[1]:
                    found.add(match[1])
        for ns in _namespaces():
            if match := pattern.match(ns):
                found.add(match[1])
        return sorted(found)

    def remove_leftovers(self) -> None:
        for prefix in self.droplet_prefixes():
            self.local._teardown(prefix, WORK_DIR)
        netns.remove_all(self.prefix)

    def leftovers(self) -> list[str]:
        """What of this cloud is still on the machine (empty after stop())."""
        found = [f"droplet {p}" for p in self.droplet_prefixes()]
        found += [f"namespace {ns}" for ns in _namespaces() if ns.startswith(self.prefix)]
        found += [f"link {link}" for link in netns.our_links(self.prefix)]
        return found


def _namespaces() -> list[str]:
    if not netns.NETNS_DIR.is_dir():
        return []
    return sorted(p.name for p in netns.NETNS_DIR.iterdir())
