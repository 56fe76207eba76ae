"""The guide's next step: Ignition and cloud-config rendered from the same spec."""
import json
import shutil
import subprocess
import urllib.parse

import pytest
import yaml

from helpers import spec
from helpers.bootstrap import ignition, userdata
from helpers.inventory import parse
from helpers.providers import do_userdata, qemu, qemu_ignition

INVENTORY = parse({"provider": "static",
                   "nodes": [{"name": "coreos-1", "role": "master", "public_ip": "192.0.2.1",
                              "private_ip": "10.120.0.1"},
                             {"name": "coreos-2", "role": "minion", "public_ip": "192.0.2.2",
                              "private_ip": "10.120.0.2"}],
                   "artifacts": {"url": "https://bin.example.internal/k8s.tgz", "sha256": "a" * 64},
                   "bootstrap": {"mode": "cloud-config"}})
MACHINES = ["10.120.0.1", "10.120.0.2"]
KEYS = ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDummyKeyForTestsOnly core@test"]
MASTER = userdata.NodeIdentity("coreos-1", "master", "192.0.2.1", "10.120.0.1",
                               "-----BEGIN OPENSSH PRIVATE KEY-----\nx\n-----END OPENSSH PRIVATE KEY-----\n",
                               "ssh-ed25519 AAAAhostkey")
MINION_FROM_METADATA = userdata.NodeIdentity("coreos-2", "minion")


def validate(config: str) -> subprocess.CompletedProcess:
    assert shutil.which("ignition-validate"), "ignition-validate missing: run scripts/install"
    return subprocess.run(["ignition-validate", "-"], input=config, text=True,
                          capture_output=True, timeout=30)


@pytest.mark.parametrize("node", [MASTER, MINION_FROM_METADATA], ids=["master", "minion"])
def test_ignition_is_valid_per_ignitions_own_validator(node):
    result = validate(userdata.ignition(INVENTORY, node, MACHINES, KEYS))
    assert result.returncode == 0, result.stdout + result.stderr


def test_validator_refuses_a_broken_config():
    broken = json.loads(userdata.ignition(INVENTORY, MASTER, MACHINES, KEYS))
    broken["storage"]["files"][0]["mode"] = "rw"
    assert validate(json.dumps(broken)).returncode != 0


def test_ignition_carries_the_guides_units_per_role():
    master = json.loads(userdata.ignition(INVENTORY, MASTER, MACHINES, KEYS))
    minion = json.loads(userdata.ignition(INVENTORY, MINION_FROM_METADATA, MACHINES, KEYS))
    def names(config):
        return {u["name"] for u in config["systemd"]["units"]}
    assert {u.name for u in spec.units_for("master")} < names(master)
    assert "apiserver.service" not in names(minion)
    assert userdata.METADATA_ENV_UNIT in names(minion)
    assert userdata.METADATA_ENV_UNIT not in names(master)
    cm = next(u for u in master["systemd"]["units"] if u["name"] == "controller-manager.service")
    assert "-machines=10.120.0.1,10.120.0.2" in cm["contents"]
    kubelet = next(u for u in master["systemd"]["units"] if u["name"] == "kubelet.service")
    assert "Requires=opt-bin.service" in kubelet["contents"]


def test_ignition_fetches_opt_bin_with_its_checksum():
    config = json.loads(userdata.ignition(INVENTORY, MASTER, MACHINES, KEYS))
    fetch = next(u for u in config["systemd"]["units"] if u["name"] == userdata.FETCH_UNIT)
    assert "https://bin.example.internal/k8s.tgz" in fetch["contents"]
    assert "a" * 64 + "  /tmp/opt-bin.tgz' | sha256sum -c" in fetch["contents"]


def test_ignition_writes_environment_and_host_key():
    config = json.loads(userdata.ignition(INVENTORY, MASTER, MACHINES, KEYS))
    files = {f["path"]: urllib.parse.unquote(f["contents"]["source"][len("data:,"):])
             for f in config["storage"]["files"]}
    assert files["/etc/environment"] == "COREOS_PUBLIC_IPV4=192.0.2.1\nCOREOS_PRIVATE_IPV4=10.120.0.1\n"
    assert files["/etc/ssh/ssh_host_ed25519_key.pub"].startswith("ssh-ed25519 AAAAhostkey")
    assert config["passwd"]["users"] == [{"name": "core", "sshAuthorizedKeys": KEYS}]


def test_cloud_config_is_the_same_content():
    text = userdata.cloud_config(INVENTORY, MASTER, MACHINES, KEYS)
    assert text.startswith("#cloud-config\n")
    config = yaml.safe_load(text)
    units = {u["name"]: u for u in config["coreos"]["units"]}
    ignition = json.loads(userdata.ignition(INVENTORY, MASTER, MACHINES, KEYS))
    assert {n: u["content"] for n, u in units.items()} == \
        {u["name"]: u["contents"] for u in ignition["systemd"]["units"]}
    assert all(u["enable"] and u["command"] == "start" for u in units.values())


def test_user_data_over_64_kib_is_refused():
    huge = MASTER.__class__(**{**MASTER.__dict__, "host_key_public": "x" * 70_000})
    with pytest.raises(userdata.UserDataError, match="coreos-1: user_data is .* bytes, more than the 65536"):
        userdata.ignition(INVENTORY, huge, MACHINES, KEYS)


def test_needs_an_artifacts_url():
    local = parse({"provider": "local", "artifacts": {"dir": "."}})
    with pytest.raises(userdata.UserDataError, match="needs artifacts.url"):
        userdata.ignition(local, MASTER, MACHINES, KEYS)


def test_unit_scripts_survive_systemd_specifiers_and_quoting():
    """`%` is a systemd specifier and nested quotes end the -c argument early."""
    units = userdata.node_units(INVENTORY, MINION_FROM_METADATA, MACHINES)
    for name in (userdata.FETCH_UNIT, userdata.METADATA_ENV_UNIT):
        line = next(row for row in units[name].splitlines() if row.startswith("ExecStart="))
        command = line.removeprefix("ExecStart=/bin/sh -c ")
        assert command.startswith('"') and command.endswith('"') and command.count('"') == 2
        assert "%" not in command.replace("%%", "")
    assert "$${COREOS_DIGITALOCEAN_IPV4_PRIVATE_0}" in units[userdata.METADATA_ENV_UNIT]


def test_bootstrap_qemu_and_digitalocean_configs_come_from_the_one_renderer(tmp_path, monkeypatch):
    """All three are ignition.MachineConfig's output: the same file renders the same, and each
    config passes Ignition's own validator; so do the cloud-config twins."""
    rendered: list[ignition.MachineConfig] = []
    real = ignition.MachineConfig.ignition_dict
    def spy(self):
        rendered.append(self)
        return real(self)
    monkeypatch.setattr(ignition.MachineConfig, "ignition_dict", spy)
    private, public = MASTER.host_key_private or "", MASTER.host_key_public or ""
    vm = qemu.QemuProvider(parse({"provider": "qemu", "bootstrap": {"enabled": False},
                                  "qemu": {"image_path": "/images/base.qcow2",
                                           "work_dir": str(tmp_path / "work"),
                                           "cache_dir": str(tmp_path / "cache")}}),
                           tmp_path / "run", "r1")
    plans = vm._plans()
    configs = {
        "bootstrap": json.loads(userdata.ignition(INVENTORY, MASTER, MACHINES, KEYS)),
        "qemu": qemu_ignition.node_ignition(vm.inventory, vm.settings, plans[0], plans, KEYS[0],
                                   (private, public), "k8sconf-r1", False),
        "digitalocean": json.loads(do_userdata.render_user_data(
            "ignition", "core", KEYS, private, public, "beef")),
    }
    assert len(rendered) == 3
    pub = "/etc/ssh/ssh_host_ed25519_key.pub"
    for name, config in configs.items():
        assert validate(json.dumps(config)).returncode == 0, name
        assert config["passwd"] == {"users": [{"name": "core", "sshAuthorizedKeys": KEYS}]}
        assert all(u["enabled"] is True for u in config["systemd"]["units"]), name
        assert next(f for f in config["storage"]["files"] if f["path"] == pub) == \
            {"path": pub, "mode": 0o644, "overwrite": True,
             "contents": {"source": "data:," + urllib.parse.quote(public + "\n")}}, name
    twins = [yaml.safe_load(userdata.cloud_config(INVENTORY, MASTER, MACHINES, KEYS)),
             yaml.safe_load(do_userdata.render_user_data("cloud-config", "core", KEYS, private,
                                                          public, "beef"))]
    assert [next(f for f in twin["write_files"] if f["path"] == pub) for twin in twins] == \
        [{"path": pub, "permissions": "0644", "content": public + "\n"}] * 2
