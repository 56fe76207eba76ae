"""The etcd the guide starts from, set up on a run's droplets once they answer SSH.

The guide begins on hosts that already run a three-member etcd over their private IPv4s
(clients on 2379 and its 4001, the v2 API on). The qemu provider writes that at first
boot; a droplet learns its private address only once it is active, and one user_data
serves every droplet, so here it is done over SSH, on every droplet at once:
- the ETCD_* drop-in of helpers/providers/machines.py, for the host's etcd unit;
- on Flatcar, whose unit is `etcd-member.service`, `etcd.service` made an alias of it (a
  symlink to its unit file: systemd takes a symlinked unit file for an alias), so the
  guide's `Requires=etcd.service` and `After=etcd.service` resolve to it; a host with an
  etcd.service of its own gets the drop-in on that instead;
- daemon-reload, the unit enabled and started, then a wait until each droplet's etcd is
  healthy and lists every member, within the deadline the provider gives.
Every remote call is bounded; the first failure ends the other droplets' waits and is
raised as one line naming its droplet.
"""
from __future__ import annotations

import shlex
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed

from helpers import spec
from helpers.providers.base import Node, ProviderError, ProviderUnavailable
from helpers.providers.do_api import one_line
from helpers.providers.machines import ETCD_DROPIN, etcd_dropin, etcd_environment, wait_etcd

# "<unit> <file>" for each etcd unit the host has, from systemd's unit search path
FIND_UNITS = (f"for unit in {spec.ETCD} {spec.FLATCAR_ETCD}; do for dir in {spec.UNIT_DIR} "
              "/run/systemd/system /usr/lib/systemd/system /lib/systemd/system; do "
              'if [ -e "$dir/$unit" ]; then echo "$unit $dir/$unit"; break; fi; done; done')


def choose_unit(found: str, who: str) -> tuple[str, str | None]:
    """(the unit to configure, the unit file etcd.service is to alias, or None)."""
    files = dict(line.split(None, 1) for line in found.splitlines() if len(line.split()) == 2)
    if spec.ETCD in files:
        return spec.ETCD, None
    if spec.FLATCAR_ETCD in files:
        return spec.FLATCAR_ETCD, files[spec.FLATCAR_ETCD]
    raise ProviderUnavailable(f"{who} has neither {spec.ETCD} nor {spec.FLATCAR_ETCD}: use an "
                              "image that ships etcd (Flatcar Container Linux)")


def etcd_script(unit: str, alias_of: str | None, dropin: str) -> str:
    """What runs as root on a droplet: the drop-in, the alias if any, the unit started."""
    directory = f"{spec.UNIT_DIR}/{unit}.d"
    lines = ["set -e", f"mkdir -p {directory}",
             f"printf '%s' {shlex.quote(dropin)} > {directory}/{ETCD_DROPIN}"]
    if alias_of:
        lines.append(f"ln -s {shlex.quote(alias_of)} {spec.UNIT_DIR}/{spec.ETCD}")
    # --no-block: a new member's start returns only once a quorum is up, i.e. once the
    # other droplets' etcd runs too; the health wait after this is the bounded one
    lines += ["systemctl daemon-reload", f"systemctl enable --now --no-block {unit}"]
    return "\n".join(lines) + "\n"


def _configure(conn, env: dict[str, str], who: str, timeout: float) -> None:
    found = conn.run(FIND_UNITS, timeout=timeout)
    if not found.ok:
        raise ProviderError(f"{who}: looking for its etcd unit failed: {one_line(found)}")
    unit, alias_of = choose_unit(found.stdout, who)
    script = etcd_script(unit, alias_of, etcd_dropin(env, "digitalocean provider"))
    done = conn.run(script, sudo=True, timeout=timeout, label="the etcd setup script")
    if not done.ok:
        output = one_line((done.stdout + done.stderr).strip() or "no output", 300)
        raise ProviderError(f"{who}: setting up {unit} exited {done.rc}: {output}")


def _set_up_one(who: str, node: Node, connect: Callable, env: dict[str, str], members: int,
                deadline: float, timeout: float, stop: threading.Event) -> None:
    from helpers.ssh import SSHError
    try:
        conn = connect(node)
    except SSHError as exc:
        raise ProviderError(f"{who}: {one_line(exc)}") from None
    try:
        _configure(conn, env, who, timeout)
        wait_etcd(conn, members, deadline, who, interval=1.0, stop=stop,
                  context=lambda: "digitalocean.active_timeout")
    except SSHError as exc:
        raise ProviderError(f"{who}: {one_line(exc)}") from None
    finally:
        conn.close()


def set_up(droplets: dict[str, Node], connect: Callable, token: str, deadline: float,
           timeout: float) -> None:
    """The guide's etcd on every droplet ({droplet name: node}) at once; `connect(node)`
    gives a connection, `timeout` bounds each remote command, `deadline` the health wait."""
    members = [(node.name, node.private_ip) for node in droplets.values()]
    stop = threading.Event()    # the first failure, or Ctrl-C, ends the other waits
    pool = ThreadPoolExecutor(len(droplets), thread_name_prefix="do-etcd")
    try:
        futures = [pool.submit(_set_up_one, f"digitalocean: droplet {name}", node, connect,
                               etcd_environment((node.name, node.private_ip), members, token),
                               len(members), deadline, timeout, stop)
                   for name, node in droplets.items()]
        for future in as_completed(futures):
            future.result()
    finally:
        stop.set()
        pool.shutdown(wait=True, cancel_futures=True)
