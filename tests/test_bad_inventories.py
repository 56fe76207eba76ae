"""Bad input never gets a traceback (issue 20): every bad inventory is refused by
validation with one line naming the field, in-process and through the real command line
(`pytest --collect-only`: exit 4, one line, no traceback).

The generator starts from a valid inventory of each provider and breaks it in one way
that must be refused: a control character or a shell character in a free-text field, a
network that is loopback, link-local, public or overlapping another, a flannel subnet
length that does not fit, a field the provider ignores, a port clash. Long because the
generator's table of what may break where is the point: it is one table.
"""
from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import inventory as inv
from helpers import inventory_sections, inventory_types

SHA = "0" * 64
DEVIATIONS = {"docker_command": "/usr/sbin/dockerd", "docker_storage_flag": "-s vfs",
              "docker_host": "unix:///var/run/docker.sock", "etcdctl_env": "ETCDCTL_API=2 ",
              "docker_forward_accept": True, "kubelet_docker_api": "1.15",
              "pause_image": "preload"}
STATIC_NODES = [{"name": f"coreos-{i}", "role": "master" if i == 1 else "minion",
                 "public_ip": f"192.0.2.{10 + i}", "private_ip": f"10.120.0.{i}"}
                for i in (1, 2, 3)]
BASES: dict[str, dict[str, Any]] = {
    "local": {"provider": "local", "artifacts": {"dir": "."}, "deviations": DEVIATIONS,
              "local": {"count": 3, "prefix": "k8sconf", "public_network": "192.168.2.0/24",
                        "private_network": "10.120.0.0/24",
                        "work_dir": "/var/lib/k8s-coreos-conformance"}},
    "qemu": {"provider": "qemu", "bootstrap": {"enabled": False},
             "qemu": {"image_path": "/images/base.qcow2", "kernel": "/images/vmlinuz",
                      "kernel_append": "root=/dev/vda rw console=ttyS0", "count": 3,
                      "public_network": "192.168.2.0/24", "private_network": "10.120.0.0/24"}},
    "static": {"provider": "static", "nodes": STATIC_NODES,
               "ssh": {"user": "core", "key": "~/.ssh/id_ed25519",
                       "known_hosts": "~/.ssh/known_hosts"},
               "artifacts": {"url": "https://bin.example.internal/k8s.tgz", "sha256": SHA},
               "deviations": DEVIATIONS},
    "digitalocean": {"provider": "digitalocean", "ssh": {"user": "core", "key": "/keys/id"},
                     "artifacts": {"url": "https://bin.example.internal/k8s.tgz",
                                   "sha256": SHA},
                     "digitalocean": {"image": "flatcar-stable", "size": "s-1vcpu-2gb",
                                      "ssh_keys": ["aa:bb:cc:dd:ee:ff:00:11:22:33:44:55:66:77:88:99"],
                                      "tags": ["nightly"],
                                      "vpc_uuid": "5a4981aa-9653-4bd1-bef5-d6bff52042e4"}},
}


def copy(data):
    return json.loads(json.dumps(data))


def put(data: dict, path: str, value) -> dict:
    """`data` with the dotted `path` (list indexes as numbers) set to `value`."""
    data = copy(data)
    *parents, last = [int(p) if p.isdigit() else p for p in path.split(".")]
    here = data
    for part in parents:
        if isinstance(part, str):
            here = here.setdefault(part, {})
        else:
            here = here[part]
    here[last] = value
    return data


def get(data: Any, path: str) -> Any:
    for part in path.split("."):
        data = data[int(part)] if part.isdigit() else data.get(part)
        if data is None:
            return None
    return data


def refused(data, source="gen.yaml") -> str:
    """The one line an inventory is refused with (fails the test if it is accepted)."""
    try:
        inv.parse(data, source)
    except inv.InventoryError as exc:
        text = str(exc)
    else:
        pytest.fail(f"accepted: {data!r}")
    assert text.startswith(f"inventory {source}: "), text
    assert "\n" not in text and "\r" not in text and "Traceback" not in text
    assert not inventory_types.CONTROL.search(text), repr(text)
    return text


# -- the bad inventories the issue names ---------------------------------------------------
LOCAL = BASES["local"]
NAMED = [
    ("local ssh.user empty", put(LOCAL, "ssh.user", ""), "ssh.user: must be a user name"),
    ("local ssh.user with a shell command", put(LOCAL, "ssh.user", "core; x"),
     "ssh.user: must be a user name"),
    ("local ssh.user other than core", put(LOCAL, "ssh.user", "admin"),
     "ssh.user: provider 'local' logs in as 'core'"),
    ("newline in a deviation", put(LOCAL, "deviations.docker_command",
                                   "/usr/sbin/dockerd\nExecStartPre=/bin/true"),
     "deviations.docker_command: control character in"),
    ("newline in the storage flag", put(LOCAL, "deviations.docker_storage_flag",
                                        "-s vfs\nExecStartPost=/bin/sh -c 'rm -rf /'"),
     "deviations.docker_storage_flag: control character in"),
    ("loopback public network", put(LOCAL, "local.public_network", "127.0.0.0/24"),
     "local.public_network: 127.0.0.0/24 is loopback"),
    ("public range as public network", put(LOCAL, "local.public_network", "8.8.8.0/24"),
     "local.public_network: 8.8.8.0/24 is not a private range (RFC 1918"),
    ("link-local private network", put(LOCAL, "local.private_network", "169.254.3.0/24"),
     "local.private_network: 169.254.3.0/24 is link-local"),
    ("flannel network over the private network",
     put(LOCAL, "guide.flannel_network", "10.120.0.0/16"),
     "local.private_network: 10.120.0.0/24 overlaps guide.flannel_network 10.120.0.0/16"),
    ("private network inside the flannel network",
     put(LOCAL, "local.private_network", "10.100.7.0/24"),
     "local.private_network: 10.100.7.0/24 overlaps guide.flannel_network"),
    ("portal_net over the public network", put(LOCAL, "guide.portal_net", "192.168.0.0/16"),
     "local.public_network: 192.168.2.0/24 overlaps guide.portal_net 192.168.0.0/16"),
    ("the two local networks overlap", put(LOCAL, "local.private_network", "192.168.2.128/25"),
     "local.public_network 192.168.2.0/24 and local.private_network 192.168.2.128/25 overlap"),
    ("flannel_subnet_len 8 inside a /16", put(LOCAL, "guide.flannel_subnet_len", 8),
     "guide.flannel_subnet_len: /8 is not inside guide.flannel_network 10.100.0.0/16"),
    ("flannel network too small for the nodes",
     put(put(LOCAL, "guide.flannel_network", "10.100.0.0/23"), "guide.flannel_subnet_len", 24),
     "10.100.0.0/23 holds 1 /24 subnet for hosts (flannel skips the first), fewer than the 3"),
    ("flannel_subnet_len flannel 0.2.0 does not take", put(LOCAL, "guide.flannel_subnet_len", 26),
     "guide.flannel_subnet_len: /26, but the guide's network config names no SubnetLen"),
    ("ssh.key on local", put(LOCAL, "ssh.key", "~/.ssh/id_ed25519"),
     "ssh.key: ignored by provider 'local', which generates a key per run"),
    ("ssh.key on qemu", put(BASES["qemu"], "ssh.key", "/keys/id"),
     "ssh.key: ignored by provider 'qemu'"),
    ("ssh.port on local", put(LOCAL, "ssh.port", 2222), "ssh.port: ignored by provider 'local'"),
    ("ssh.port on qemu", put(BASES["qemu"], "ssh.port", 22), "ssh.port: ignored by provider 'qemu'"),
    ("node addresses on digitalocean",
     put(BASES["digitalocean"], "nodes", [dict(STATIC_NODES[0])]),
     "nodes.0.public_ip: ignored by provider 'digitalocean'"),
    ("cloud-config on local", put(LOCAL, "bootstrap.mode", "cloud-config"),
     "bootstrap.mode: 'cloud-config' is ignored by provider 'local'"),
    ("count beside nodes", put(LOCAL, "nodes", [{"name": "coreos-1", "role": "master"}]),
     "local.count: ignored when 'nodes' is given"),
    ("digitalocean without ssh.key", put(BASES["digitalocean"], "ssh", {"user": "core"}),
     "ssh.key: required for provider 'digitalocean'"),
    ("a local network too small", put(LOCAL, "local.private_network", "10.120.0.0/30"),
     "local.private_network: 10.120.0.0/30 is too small for 3 nodes"),
    ("a qemu node outside its public network",
     {**BASES["qemu"], "nodes": [dict(STATIC_NODES[0], public_ip="192.168.3.1",
                                      private_ip="10.120.0.1")],
      "qemu": {k: v for k, v in BASES["qemu"]["qemu"].items() if k != "count"}},
     "nodes.0.public_ip: 192.168.3.1 is not in qemu.public_network 192.168.2.0/24"),
    ("a qemu network on the VMs' management network",
     put(BASES["qemu"], "qemu.private_network", "10.0.2.0/24"),
     "overlaps 10.0.2.0/24, each VM's own management network"),
    ("one multicast group for both qemu segments",
     put(BASES["qemu"], "qemu.public_mcast_group", "230.0.0.1"),
     "public_mcast_group and private_mcast_group are both 230.0.0.1"),
    ("etcdctl_env without its space", put(LOCAL, "deviations.etcdctl_env", "ETCDCTL_API=2"),
     "deviations.etcdctl_env: must be 'ETCDCTL_API=N '"),
    ("docker_host with a shell word", put(LOCAL, "deviations.docker_host", "fd:// && reboot"),
     "deviations.docker_host: must be a Docker host URL"),
    ("a quote in the artifacts URL", put(BASES["static"], "artifacts.url",
                                         "https://x.example/a'; reboot; '"),
     "artifacts.url: must be an http(s) or file URL"),
    ("relative local work_dir", put(LOCAL, "local.work_dir", "var/lib/x"),
     "local.work_dir: must be an absolute path"),
    ("a newline in a field name", put(LOCAL, "guide.a\nb", 1), "guide.a\\nb: unknown field"),
    ("a node address inside the flannel network",
     put(BASES["static"], "nodes.1.private_ip", "10.100.3.2"),
     "nodes.1.private_ip: 10.100.3.2 lies in guide.flannel_network"),
    ("the kubelet on etcd's port", put(LOCAL, "guide.kubelet_port", 4001),
     "kubelet_port: 4001 is etcd's"),
]


@pytest.mark.parametrize("data,message", [(d, m) for _, d, m in NAMED],
                         ids=[name for name, _, _ in NAMED])
def test_a_named_bad_inventory_gets_its_own_line(data, message):
    assert message in refused(data)


@pytest.mark.parametrize("provider", sorted(BASES))
def test_the_generators_starting_points_are_valid(provider):
    inv.parse(BASES[provider], "base.yaml")


def test_the_guides_portal_net_may_equal_its_flannel_network():
    # a known defect of the guide, reported as an advisory (never refused)
    parsed = inv.parse(LOCAL)
    assert parsed.guide.portal_net == parsed.guide.flannel_network


def test_empty_deviation_strings_are_plain_values():
    inv.parse(put(put(LOCAL, "deviations.docker_storage_flag", ""),
                  "deviations.etcdctl_env", ""))


# -- the generator -------------------------------------------------------------------------
CONTROL_CHARS = st.characters(codec=None, min_codepoint=0, max_codepoint=0x9f).filter(
    lambda c: inventory_types.CONTROL.match(c) is not None)
SHELL = set("'\"`$\\;|&<>*?(){}[]!#~ \t")
URL_OK = set("~:/?#[]@!&()*+,;=%")
PATH_OK = set("~")
COMMAND_OK = set(" ")
# field -> (providers whose base has it, characters of SHELL the field may hold)
TEXT_FIELDS = {
    "ssh.user": (("static", "digitalocean"), set()),
    "deviations.docker_command": (("local", "static"), COMMAND_OK),
    "deviations.docker_storage_flag": (("local", "static"), set(" ")),
    "deviations.docker_host": (("local", "static"), set()),
    "deviations.etcdctl_env": (("local", "static"), set(" ")),
    "deviations.kubelet_docker_api": (("local", "static"), set()),
    "guide.etcd_endpoint": (tuple(BASES), set()),
    "artifacts.url": (("static", "digitalocean"), URL_OK),
    "artifacts.dir": (("local",), PATH_OK),
    "ssh.key": (("static", "digitalocean"), PATH_OK),
    "ssh.known_hosts": (("static",), PATH_OK),
    "local.prefix": (("local",), set()),
    "local.work_dir": (("local",), PATH_OK),
    "qemu.image_path": (("qemu",), PATH_OK),
    "qemu.kernel": (("qemu",), PATH_OK),
    "qemu.kernel_append": (("qemu",), set(" ")),
    "nodes.0.name": (("static",), set()),
    "digitalocean.size": (("digitalocean",), set()),
    "digitalocean.image": (("digitalocean",), set()),
    "digitalocean.tags.0": (("digitalocean",), set()),
    "digitalocean.vpc_uuid": (("digitalocean",), set()),
}
DEFAULT_TEXT = {"guide.etcd_endpoint": "http://127.0.0.1:4001"}


def text_value(base: dict, field: str) -> str:
    value = get(base, field)
    return str(value) if value is not None else DEFAULT_TEXT[field]


@st.composite
def bad_text(draw):
    """A free-text field with a control character, or a shell character it may not hold."""
    field = draw(st.sampled_from(sorted(TEXT_FIELDS)))
    providers, allowed = TEXT_FIELDS[field]
    base = BASES[draw(st.sampled_from(providers))]
    value = text_value(base, field)
    bad = draw(st.one_of(CONTROL_CHARS, st.sampled_from(sorted(SHELL - allowed))))
    at = draw(st.integers(0, len(value)))
    if bad == " ":     # a space is refused where words end, not as an inner separator
        at = len(value)
    return put(base, field, value[:at] + bad + value[at:]), [field]


SPECIAL_RANGES = ["127.0.0.0/8", "169.254.0.0/16", "224.0.0.0/4", "240.0.0.0/4", "0.0.0.0/8",
                  "8.0.0.0/8", "100.64.0.0/10", "172.32.0.0/11", "192.0.2.0/24", "198.18.0.0/15"]


@st.composite
def subnet_of(draw, network: str, min_prefix: int = 16, max_prefix: int = 28):
    net = ipaddress.IPv4Network(network)
    prefix = draw(st.integers(max(net.prefixlen, min_prefix), max_prefix))
    count = 2 ** (prefix - net.prefixlen)
    index = draw(st.integers(0, count - 1))
    return str(ipaddress.IPv4Network((int(net.network_address) + index * 2 ** (32 - prefix),
                                      prefix)))


@st.composite
def bad_network(draw):
    """A local/qemu network that is not private, or that overlaps another network."""
    provider = draw(st.sampled_from(["local", "qemu"]))
    base = BASES[provider]
    side = draw(st.sampled_from(["public_network", "private_network"]))
    field = f"{provider}.{side}"
    other = "private_network" if side == "public_network" else "public_network"
    kind = draw(st.sampled_from(["special", "flannel", "portal", "other", "guide-moved"]))
    if kind == "special":
        return put(base, field, draw(subnet_of(draw(st.sampled_from(SPECIAL_RANGES)),
                                               min_prefix=8, max_prefix=26))), [field]
    if kind == "flannel":
        return put(base, field, draw(subnet_of("10.100.0.0/16"))), [field]
    if kind == "portal":
        portal = draw(subnet_of("172.16.0.0/12", 12, 20))
        data = put(base, "guide.portal_net", portal)
        return put(data, field, draw(subnet_of(portal, max_prefix=26))), [field]
    if kind == "other":
        return put(base, field, draw(subnet_of(get(base, f"{provider}.{other}"), 8, 26))), \
            [f"{provider}.public_network", f"{provider}.private_network"]
    # the guide's networks moved over one of ours
    name = draw(st.sampled_from(["guide.flannel_network", "guide.portal_net"]))
    ours = ipaddress.IPv4Network(get(base, field))
    covering = str(ours.supernet(new_prefix=draw(st.integers(12, ours.prefixlen))))
    data = put(base, name, covering)
    return data, [field, name]


@st.composite
def bad_subnet_len(draw):
    provider = draw(st.sampled_from(sorted(BASES)))
    base = BASES[provider]
    prefix = draw(st.integers(8, 28))
    network = draw(subnet_of("10.0.0.0/8", prefix, prefix))
    kind = draw(st.sampled_from(["not inside", "too few", "not flannel's"]))
    chosen = 24 if prefix < 24 else prefix + 1
    if kind == "not inside":
        length = draw(st.integers(8, min(prefix, 30)))
    elif kind == "too few":
        # a network that holds fewer host subnets than the 3 nodes (flannel skips the first)
        prefix = draw(st.integers(23, 28))
        network = draw(subnet_of("10.0.0.0/8", prefix, prefix))
        length = 24 if prefix < 24 else prefix + 1
        assert 2 ** (length - prefix) - 1 < 3
    else:
        length = draw(st.integers(prefix + 1, 30).filter(lambda n: n != chosen)) \
            if prefix < 29 else 8
    data = put(put(base, "guide.flannel_network", network), "guide.flannel_subnet_len", length)
    # keep the node networks apart from the moved flannel network, so that the length is
    # what is wrong
    if provider in ("local", "qemu"):
        data = put(put(data, f"{provider}.public_network", "192.168.2.0/24"),
                   f"{provider}.private_network", "172.20.0.0/24")
    if provider == "static":
        data = put(data, "nodes", [dict(n, private_ip=f"172.20.0.{i}")
                                   for i, n in enumerate(STATIC_NODES, 1)])
    return data, ["guide.flannel_subnet_len", "guide.flannel_network", "network"]


@st.composite
def ignored_field(draw):
    kind = draw(st.sampled_from(["key", "port", "do-ip", "count", "mode"]))
    if kind == "mode":
        return put(LOCAL, "bootstrap.mode", "cloud-config"), ["bootstrap.mode: 'cloud-config'"]
    if kind in ("key", "port"):
        provider = draw(st.sampled_from(["local", "qemu"]))
        value = draw(st.sampled_from(["~/.ssh/id_ed25519", "/k/id", "id_rsa"])) \
            if kind == "key" else draw(st.integers(1, 65535))
        return put(BASES[provider], f"ssh.{kind}", value), [f"ssh.{kind}: ignored by provider"]
    if kind == "do-ip":
        attr = draw(st.sampled_from(["public_ip", "private_ip"]))
        node = {"name": "coreos-1", "role": "master", attr: f"10.131.0.{draw(st.integers(1, 250))}"}
        return put(BASES["digitalocean"], "nodes", [node]), \
            [f"nodes.0.{attr}: ignored by provider 'digitalocean'"]
    provider = draw(st.sampled_from(["local", "qemu"]))
    nodes = [{"name": f"coreos-{i}", "role": "master" if i == 1 else "minion"}
             for i in range(1, draw(st.integers(1, 4)) + 1)]
    data = put(put(BASES[provider], "nodes", nodes), f"{provider}.count",
               draw(st.integers(1, 8)))
    return data, [f"{provider}.count: ignored when 'nodes' is given"]


@st.composite
def bad_fit(draw):
    kind = draw(st.sampled_from(["user", "ports", "etcd-port", "node-in-guide", "small"]))
    if kind == "user":
        user = draw(st.from_regex(r"[a-z_][a-z0-9_-]{0,31}", fullmatch=True).filter(
            lambda u: u != "core"))
        return put(LOCAL, "ssh.user", user), ["ssh.user: provider 'local'"]
    if kind == "ports":
        port = draw(st.integers(1, 65535).filter(lambda p: p not in inventory_sections.ETCD_PORTS + (22,)))
        data = put(put(LOCAL, "guide.apiserver_port", port), "guide.kubelet_port", port)
        return data, ["apiserver_port and kubelet_port are both"]
    if kind == "etcd-port":
        name = draw(st.sampled_from(["apiserver_port", "kubelet_port"]))
        return put(LOCAL, f"guide.{name}", draw(st.sampled_from(inventory_sections.ETCD_PORTS + (22,)))), \
            [f"{name}: "]
    if kind == "node-in-guide":
        attr = draw(st.sampled_from(["public_ip", "private_ip"]))
        index = draw(st.integers(0, 2))
        address = f"10.100.{draw(st.integers(0, 255))}.{draw(st.integers(1, 254))}"
        return put(BASES["static"], f"nodes.{index}.{attr}", address), \
            [f"nodes.{index}.{attr}: {address} lies in guide."]
    provider = draw(st.sampled_from(["local", "qemu"]))
    side = draw(st.sampled_from(["public_network", "private_network"]))
    # addresses of a network that are no node's: network, broadcast, and the host's
    # (local, .254 of a /24; qemu's segments hold the VMs only)
    taken = 3 if provider == "local" else 2
    prefix = draw(st.integers(28, 30))
    room = max(0, 2 ** (32 - prefix) - taken)
    limit = 16 if provider == "local" else 8
    if room >= limit:
        prefix, room = 30, max(0, 4 - taken)
    count = draw(st.integers(room + 1, limit))
    network = "192.168.2.0" if side == "public_network" else "10.120.0.0"
    data = put(put(BASES[provider], f"{provider}.count", count),
               f"{provider}.{side}", f"{network}/{prefix}")
    return data, [f"{provider}.{side}: {network}/{prefix} is too small for {count} nodes"]


BAD_INVENTORIES = st.one_of(bad_text(), bad_network(), bad_subnet_len(), ignored_field(),
                            bad_fit())
GENERATED_EXAMPLES = 400
TRIED: list[str] = []


@settings(max_examples=GENERATED_EXAMPLES, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(BAD_INVENTORIES)
def refused_for_its_fault(case):
    data, fragments = case
    text = refused(data)
    TRIED.append(text)
    assert any(f in text for f in fragments), (text, fragments)


def test_every_generated_bad_inventory_is_refused_with_one_line():
    """At least 200 generated bad inventories, each refused with one line naming its fault."""
    TRIED.clear()
    started = time.monotonic()
    refused_for_its_fault()
    print(f"\n{len(TRIED)} generated bad inventories tried in "
          f"{time.monotonic() - started:.1f} s, {len(set(TRIED))} different refusals")
    assert len(TRIED) >= 200


# -- through the real command line ----------------------------------------------------------
def collect_only(path, reports):
    env = {**os.environ, "K8SCONF_REPORTS": str(reports)}
    env.pop(inv.ENV_VAR, None)
    return subprocess.run([sys.executable, "-m", "pytest", "suites", "--inventory", str(path),
                           "--collect-only", "-p", "no:cacheprovider"], cwd=inv.ROOT, env=env,
                          capture_output=True, text=True, timeout=180)


# what issue 20 names, each through the command line; the rest of NAMED in-process
ISSUE_NAMED = {"local ssh.user empty", "local ssh.user with a shell command",
               "newline in a deviation", "loopback public network",
               "public range as public network", "flannel network over the private network",
               "flannel_subnet_len 8 inside a /16", "ssh.key on local",
               "node addresses on digitalocean", "a newline in a field name",
               "ssh.port on qemu", "a quote in the artifacts URL"}


def cli_sample() -> list[tuple[str, dict, str]]:
    """The inventories the issue names, and one of each other kind (the generated ones
    go through `parse`, which is what the command line calls)."""
    return [(name, data, message) for name, data, message in NAMED if name in ISSUE_NAMED]


@pytest.mark.slow
def test_bad_inventories_through_the_command_line(tmp_path):
    sample = cli_sample()
    paths = []
    for i, (_, data, _) in enumerate(sample):
        path = tmp_path / f"bad-{i}.yaml"
        path.write_text(yaml.safe_dump(data))
        paths.append(path)
    started = time.monotonic()
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda ip: collect_only(ip[1], tmp_path / f"reports-{ip[0]}"),
                                enumerate(paths)))
    seconds = time.monotonic() - started
    for (name, _, message), path, result in zip(sample, paths, results, strict=True):
        output = result.stdout + result.stderr
        lines = [line for line in output.splitlines() if line.strip()]
        assert result.returncode == 4, f"{name}: exit {result.returncode}\n{output[-2000:]}"
        assert "Traceback" not in output and "INTERNALERROR" not in output, f"{name}:\n{output}"
        assert len(lines) == 1 and lines[0].startswith(f"ERROR: inventory {path}: "), \
            f"{name}:\n{output}"
        assert message in lines[0], (name, lines[0])
        # refused before anything: no run state, no report written
        assert not list((tmp_path / f"reports-{paths.index(path)}").glob("**/*.json")), name
    print(f"\n{len(sample)} bad inventories through `pytest --collect-only` in {seconds:.1f} s")


def test_a_bad_inventory_file_is_refused_by_load(tmp_path):
    for i, (name, data, message) in enumerate(NAMED):
        path = tmp_path / f"bad-{i}.yaml"
        path.write_text(yaml.safe_dump(data))
        with pytest.raises(inv.InventoryError) as caught:
            inv.load(path)
        text = str(caught.value)
        assert text.startswith(f"inventory {path}: ") and "\n" not in text, name
        assert message in text, (name, text)


@pytest.mark.parametrize("content", [b"\xff\xfe\x00garbage", b"[" * 5000, b"provider: [\x07]"],
                         ids=["not utf-8", "nested too deeply", "control character in YAML"])
def test_unreadable_inventory_files_get_one_line(tmp_path, content):
    path = tmp_path / "odd.yaml"
    path.write_bytes(content)
    with pytest.raises(inv.InventoryError) as caught:
        inv.load(path)
    assert "\n" not in str(caught.value) and str(caught.value).startswith(f"inventory {path}: ")
