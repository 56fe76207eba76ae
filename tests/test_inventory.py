"""The inventory: every malformed input gets its own one-line message naming the field."""
import json
import subprocess
import sys

import pytest
import yaml

from helpers import inventory as inv

VALID = {"provider": "local", "artifacts": {"dir": "."}}
STATIC_NODES = [{"name": "coreos-1", "role": "master", "public_ip": "192.0.2.1",
                 "private_ip": "10.0.0.1"},
                {"name": "coreos-2", "role": "minion", "public_ip": "192.0.2.2",
                 "private_ip": "10.0.0.2"}]


def with_(**changes):
    data = json.loads(json.dumps(VALID))
    data.update(changes)
    return data


MALFORMED = [
    ("no provider", {"artifacts": {"dir": "."}}, "provider: required field is missing"),
    ("unknown provider", with_(provider="vagrant"), "provider: Input should be 'local', 'qemu'"),
    ("unknown top-level field", with_(colour="blue"), "colour: unknown field"),
    ("bad node count", with_(local={"count": 40}), "local.count: Input should be less than or equal to 16"),
    ("bad public network", with_(local={"public_network": "192.168.2.0/33"}), "local.public_network:"),
    ("two masters", with_(provider="static", nodes=[dict(STATIC_NODES[0]), dict(STATIC_NODES[0], name="coreos-9")]),
     "exactly one node must have role 'master'"),
    ("bad role", with_(provider="static", nodes=[dict(STATIC_NODES[0], role="boss")]),
     "nodes.0.role: Input should be 'master' or 'minion'"),
    ("bad private ip", with_(provider="static", nodes=[dict(STATIC_NODES[0], private_ip="10.0.0.300")]),
     "nodes.0.private_ip:"),
    ("static without ips", with_(provider="static", nodes=[{"name": "coreos-1", "role": "master"}]),
     "provider 'static' needs public_ip and private_ip"),
    ("static without nodes", with_(provider="static"), "provider 'static' needs 'nodes'"),
    ("duplicate names", with_(provider="static", nodes=[STATIC_NODES[0], dict(STATIC_NODES[1], name="coreos-1")]),
     "nodes: names must be unique"),
    ("bad host name", with_(provider="static", nodes=[dict(STATIC_NODES[0], name="Coreos_1")]),
     "nodes.0.name: String should match pattern"),
    ("bad ssh port", with_(ssh={"port": 70000}), "ssh.port: Input should be less than or equal to 65535"),
    ("bad host key policy", with_(ssh={"host_key_policy": "trust-all"}),
     "ssh.host_key_policy: Input should be 'verify' or 'accept-new'"),
    ("artifacts url without sha256", with_(artifacts={"url": "https://x.example/a.tgz"}),
     "'sha256' is required with 'url'"),
    ("artifacts dir and url", with_(artifacts={"dir": ".", "url": "https://x.example/a.tgz", "sha256": "0" * 64}),
     "exactly one of 'build: true', 'dir' or 'url' is required"),
    ("bad sha256", with_(artifacts={"url": "https://x.example/a.tgz", "sha256": "abc"}),
     "artifacts.sha256: String should match pattern"),
    ("bootstrap without artifacts", {"provider": "local"}, "'artifacts' is required when bootstrap is enabled"),
    ("bad flannel network", with_(guide={"flannel_network": "10.100.0.0/40"}),
     "guide.flannel_network: Input is not a valid IPv4 network"),
    ("bad subnet len", with_(guide={"flannel_subnet_len": 31}), "guide.flannel_subnet_len: Input should be less than or equal to 30"),
    ("bad etcd endpoint", with_(guide={"etcd_endpoint": "127.0.0.1:4001"}), "guide.etcd_endpoint: must be an etcd client URL"),
    ("unknown deviation", with_(deviations={"kernel": "6.1"}), "deviations.kernel: unknown field"),
    ("token in inventory", {"provider": "digitalocean", "artifacts": {"dir": "."},
                            "digitalocean": {"image": "x", "ssh_keys": [1], "token": "dop_v1_secret"}},
     "a token does not belong in the inventory; set the DIGITALOCEAN_TOKEN"),
    ("do without section", with_(provider="digitalocean"), "section 'digitalocean' is required"),
    ("section for another provider", with_(qemu={"image_path": "/x"}), "section 'qemu' given but provider is 'local'"),
    ("qemu with two images", with_(provider="qemu", qemu={"image_path": "/x", "image_url": "https://x.example/i", "image_sha256": "0" * 64}),
     "exactly one of 'image_url' or 'image_path' is required"),
    ("top level is a list", [1, 2], "expected a YAML mapping at the top level, found list"),
]


@pytest.mark.parametrize("data,message", [(d, m) for _, d, m in MALFORMED],
                         ids=[name for name, _, _ in MALFORMED])
def test_malformed_inventory_gets_one_specific_line(data, message):
    with pytest.raises(inv.InventoryError) as caught:
        inv.parse(data, "bad.yaml")
    text = str(caught.value)
    assert "\n" not in text and text.startswith("inventory bad.yaml: ")
    assert message in text


def test_flannel_network_needs_cidr():
    # "10.100.0.0" alone is a /32 network, valid CIDR but not a sane flannel range
    with pytest.raises(inv.InventoryError, match="guide.flannel_network"):
        inv.parse(with_(guide={"flannel_network": "10.100.0.1/16"}), "x")


def test_every_shipped_inventory_is_valid():
    for path in sorted(inv.INVENTORY_DIR.glob("*.yaml")):
        assert inv.load(path).provider in path.read_text()


def test_guide_values_are_the_defaults():
    guide = inv.parse(VALID).guide.values()
    assert guide["flannel_network"] == "10.100.0.0/16"
    assert guide["portal_net"] == "10.100.0.0/16"
    assert guide["apiserver_port"] == 8080 and guide["kubelet_port"] == 10250
    assert guide["etcd_endpoint"] == "http://127.0.0.1:4001"


def test_local_nodes_are_named_as_in_the_guide():
    nodes = inv.parse(with_(local={"count": 4})).node_specs()
    assert [n.name for n in nodes] == ["coreos-1", "coreos-2", "coreos-3", "coreos-4"]
    assert [n.role for n in nodes] == ["master", "minion", "minion", "minion"]


def test_committed_schema_is_current():
    committed = json.loads((inv.INVENTORY_DIR / "schema.json").read_text())
    assert committed == inv.json_schema(), \
        "inventories/schema.json is stale: run `python3 -m helpers.inventory --schema`"


def test_path_lookup(tmp_path, monkeypatch):
    assert inv.resolve_path("local") == inv.INVENTORY_DIR / "local.yaml"
    assert inv.resolve_path("do.yaml") == inv.INVENTORY_DIR / "do.yaml"
    own = tmp_path / "mine.yaml"
    own.write_text(yaml.safe_dump(VALID))
    assert inv.resolve_path("mine.yaml", cwd=tmp_path) == own
    monkeypatch.setenv(inv.ENV_VAR, str(own))
    assert inv.resolve_path(None) == own
    with pytest.raises(inv.InventoryError, match="nope.yaml: file not found"):
        inv.resolve_path("nope.yaml", cwd=tmp_path)


def test_bad_yaml_names_the_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("provider: local\nlocal: [unclosed\n")
    with pytest.raises(inv.InventoryError, match=r"bad.yaml: not valid YAML at line \d"):
        inv.load(bad)


def test_relative_paths_are_relative_to_the_inventory(tmp_path):
    path = tmp_path / "i.yaml"
    path.write_text(yaml.safe_dump({"provider": "static", "nodes": STATIC_NODES[:1],
                                    "artifacts": {"dir": "bins"}, "ssh": {"key": "keys/id"}}))
    loaded = inv.load(path)
    assert loaded.artifacts is not None and loaded.artifacts.dir == tmp_path / "bins"
    assert loaded.ssh.key == tmp_path / "keys" / "id"


def run_pytest(*args, cwd=inv.ROOT):
    return subprocess.run([sys.executable, "-m", "pytest", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=120)


def test_bad_inventory_is_a_usage_error_without_traceback(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(with_(ssh={"port": "ssh"})))
    result = run_pytest("--inventory", str(bad), "--collect-only", "-q", "suites")
    assert result.returncode == 4
    errors = [row for row in (result.stdout + result.stderr).splitlines()
              if row.startswith("ERROR:")]
    assert errors == [f"ERROR: inventory {bad}: ssh.port: Input should be a valid integer, "
                      "unable to parse string as an integer"]
    assert "Traceback" not in result.stdout + result.stderr


def test_collect_only_and_help_need_no_cluster():
    collected = run_pytest("--collect-only", "-q")
    assert collected.returncode == 0, collected.stdout + collected.stderr
    assert "test_kubecfg_lists_every_node[coreos-1]" in collected.stdout
    assert "coreos-3" in collected.stdout
    helped = run_pytest("--help")
    assert helped.returncode == 0 and "--inventory=PATH" in helped.stdout
