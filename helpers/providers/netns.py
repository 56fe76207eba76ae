"""Host networking of the `local` provider: two bridges, one namespace per node.

The layout mirrors the guide's two networks: every node has `eth0` on the public
bridge and `eth1` on the private bridge, each a veth pair whose host end is
enslaved to the bridge. The host holds an address on each bridge so that it can
reach the nodes (SSH goes to the public address); nothing is routed beyond them.

Every name we create starts with the provider's prefix, which is how a later run
finds and removes what a killed run left behind. Linux caps interface names at 15
characters, hence :func:`short_prefix`.
"""
from __future__ import annotations

import hashlib
import ipaddress
import json
import shutil
import subprocess
from pathlib import Path

from helpers.providers.base import ProviderError

NETNS_DIR = Path("/run/netns")
IFNAMSIZ = 15


def ip(*args: str, check: bool = True, ns: str | None = None) -> subprocess.CompletedProcess:
    cmd = ["ip", *(["-n", ns] if ns else []), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise ProviderError(f"`{' '.join(cmd)}` failed: {proc.stderr.strip()}")
    return proc


def ip_json(*args: str) -> list[dict]:
    out = ip("-j", *args).stdout.strip()
    return json.loads(out) if out else []


def short_prefix(prefix: str) -> str:
    """The prefix as it appears in link names: at most 8 characters, so that the longest
    tail (`-16priv`) fits; a longer prefix is cut and given a stable hash."""
    if len(prefix) <= 8:
        return prefix
    return prefix[:4] + hashlib.sha256(prefix.encode()).hexdigest()[:4]


def ifname(prefix: str, tail: str) -> str:
    name = f"{short_prefix(prefix)}-{tail}"
    if len(name) > IFNAMSIZ:
        raise ProviderError(f"interface name {name} is longer than {IFNAMSIZ} characters")
    return name


def bridge_names(prefix: str) -> tuple[str, str]:
    return ifname(prefix, "pub"), ifname(prefix, "priv")


def veth_names(prefix: str, index: int) -> tuple[str, str]:
    """Host ends of node `index`'s public and private veth pairs."""
    return ifname(prefix, f"{index}pub"), ifname(prefix, f"{index}priv")


def link_prefix(prefix: str) -> str:
    """What every host link of ours starts with (see :func:`ifname`)."""
    return f"{short_prefix(prefix)}-"


# -- collision check (pure, so that it can be unit-tested with fake route lists) -----

def collisions(networks: list[ipaddress.IPv4Network], routes: list[dict],
               addrs: list[dict], ours: set[str]) -> list[str]:
    """Routes and addresses of the host, not on our links, that overlap our networks.

    `routes` is `ip -j route show table all`, `addrs` is `ip -j addr`. The default
    route overlaps everything and is not a collision: our more specific routes win.
    """
    found = []
    for route in routes:
        dst, dev = route.get("dst", "default"), route.get("dev", "")
        if dst == "default" or dev in ours or route.get("type") in ("local", "broadcast"):
            continue
        try:
            net = ipaddress.ip_network(dst, strict=False)
        except ValueError:
            continue
        if net.version == 4 and any(net.overlaps(n) for n in networks):
            found.append(f"route {dst} dev {dev or '?'}")
    for link in addrs:
        if link.get("ifname") in ours:
            continue
        for info in link.get("addr_info", []):
            if info.get("family") != "inet":
                continue
            net = ipaddress.ip_network(f"{info['local']}/{info.get('prefixlen', 32)}", strict=False)
            if any(net.overlaps(n) for n in networks):
                found.append(f"address {info['local']}/{info.get('prefixlen')} on {link.get('ifname')}")
    return found


def check_no_collision(networks: list[ipaddress.IPv4Network], ours: set[str]) -> None:
    found = collisions(networks, ip_json("route", "show", "table", "all"), ip_json("addr"), ours)
    if found:
        nets = ", ".join(str(n) for n in networks)
        raise ProviderError(f"local provider: the node networks ({nets}) collide with the "
                            f"host's {'; '.join(found)}: choose other local.public_network/"
                            "local.private_network in the inventory")


# -- building -----------------------------------------------------------------------

def add_bridge(name: str, address: str) -> None:
    ip("link", "add", name, "type", "bridge")
    ip("addr", "add", address, "dev", name)
    ip("link", "set", name, "up")


def add_namespace(ns: str) -> None:
    ip("netns", "add", ns)
    ip("link", "set", "lo", "up", ns=ns)


def add_veth(host_end: str, bridge: str, ns: str, inner: str, address: str) -> None:
    """A veth pair: `host_end` on `bridge`, its peer `inner` with `address` in `ns`."""
    ip("link", "add", host_end, "type", "veth", "peer", "name", inner, "netns", ns)
    ip("link", "set", host_end, "master", bridge)
    ip("link", "set", host_end, "up")
    ip("addr", "add", address, "dev", inner, ns=ns)
    ip("link", "set", inner, "up", ns=ns)


def confirm_route(address: str, bridge: str) -> None:
    """Refuse to talk to `address` unless the host routes it over our bridge."""
    routes = ip_json("route", "get", address)
    dev = routes[0].get("dev") if routes else None
    if dev != bridge:
        raise ProviderError(f"local provider: {address} routes via {dev or 'nothing'}, "
                            f"not our bridge {bridge}; refusing to connect")


# -- removing -----------------------------------------------------------------------

def our_namespaces(prefix: str) -> list[str]:
    if not NETNS_DIR.is_dir():
        return []
    return sorted(p.name for p in NETNS_DIR.iterdir() if p.name.startswith(f"{prefix}-"))


def our_links(prefix: str) -> list[str]:
    start = link_prefix(prefix)
    return [link["ifname"] for link in ip_json("link")
            if link["ifname"].split("@")[0].startswith(start)]


def remove_all(prefix: str) -> None:
    """Delete our namespaces (their veth ends go with them), then our host links."""
    for ns in our_namespaces(prefix):
        ip("netns", "delete", ns, check=False)
    for link in our_links(prefix):
        ip("link", "delete", link, check=False)
    _unmount_empty_netns_dir()


def is_mountpoint(path: Path) -> bool:
    """From the mount table: os.path.ismount misses bind mounts within one file system."""
    target = str(Path(path).resolve())
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        if line.split()[4].replace("\\040", " ") == target:
            return True
    return False


def mounts_under(path: Path) -> list[str]:
    """Mount points at or below `path`, deepest first."""
    base = str(Path(path).resolve())
    points = [line.split()[4].replace("\\040", " ")
              for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    return sorted((p for p in points if p == base or p.startswith(base + "/")),
                  key=lambda p: -p.count("/"))


def safe_rmtree(path: Path) -> None:
    """rmtree that first detaches mounts below `path` and refuses if one stays: rmtree
    crosses mount points, and a build's bind of the host's /dev must never be emptied."""
    if not Path(path).exists():
        return
    for point in mounts_under(path):
        subprocess.run(["umount", "--lazy", point], capture_output=True)
    left = mounts_under(path)
    if left:
        raise ProviderError(f"refusing to delete {path}: still mounted: {', '.join(left)}")
    shutil.rmtree(path)


def _unmount_empty_netns_dir() -> None:
    # `ip netns add` turns /run/netns into a mount point on first use; leave the host
    # as it was when no namespace at all remains in it.
    if NETNS_DIR.is_dir() and not any(NETNS_DIR.iterdir()) and is_mountpoint(NETNS_DIR):
        subprocess.run(["umount", str(NETNS_DIR)], capture_output=True)
    try:
        NETNS_DIR.rmdir()
    except OSError:
        pass
