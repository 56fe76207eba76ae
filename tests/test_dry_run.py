"""`pytest --dry-run`: the inventory checked (for digitalocean against the simulated API),
what a run would create said, and nothing created; problems exit 4, one line each."""
from __future__ import annotations

import copy
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from helpers import dryrun
from helpers import inventory as inv
from helpers.providers import do_api, do_preflight
from tests.fake_digitalocean import FakeDigitalOcean
from tests.sshd import keygen
from tests.support import static_hosts

GOOD_VPC = "5a4981aa-9653-4bd1-bef5-d6bff52042e4"


@pytest.fixture(scope="module")
def client_key(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("client") / "id_ed25519"
    keygen(path, "dry-run-client")
    return path


@pytest.fixture
def token(monkeypatch) -> str:
    value = "dop_v1_" + secrets.token_hex(32)
    monkeypatch.setenv(do_api.TOKEN_ENV, value)
    return value


@pytest.fixture
def fake(token):
    with FakeDigitalOcean(token) as server:
        yield server


def shipped_do(fake_url: str, key: Path, **changes) -> dict:
    """inventories/do.yaml as shipped, pointed at the fake and at a key that exists."""
    data = yaml.safe_load((inv.INVENTORY_DIR / "do.yaml").read_text())
    section = {**data["digitalocean"], "api_url": fake_url, "vpc_uuid": GOOD_VPC, **changes}
    data["digitalocean"] = {k: v for k, v in section.items() if v is not None}
    data["ssh"]["key"] = str(key)
    return data


def problems(data: dict) -> list[str]:
    inventory = inv.parse(copy.deepcopy(data))
    assert inventory.digitalocean is not None
    api = do_api.DigitalOceanAPI(inventory.digitalocean.api_url, do_api.token_from_env())
    try:
        return do_preflight.check(inventory, api)
    finally:
        api.close()


def dry_run(tmp_path: Path, data: dict | Path, env: dict | None = None, *args: str):
    path = data if isinstance(data, Path) else tmp_path / "inventory.yaml"
    if not isinstance(data, Path):
        path.write_text(yaml.safe_dump(data))
    run_env = {**os.environ, **(env or {})}
    run_env.pop("PYTEST_ADDOPTS", None)
    return subprocess.run(
        [sys.executable, "-m", "pytest", f"--inventory={path}", "--dry-run",
         f"--reports-dir={tmp_path / 'reports'}", "-p", "no:cacheprovider", *args],
        cwd=inv.ROOT, env=run_env, capture_output=True, text=True, timeout=120)


def writes(fake) -> list:
    return [r for r in fake.requests if r.method != "GET"]


def test_good_inventory_passes_and_creates_nothing(fake, client_key, tmp_path):
    result = dry_run(tmp_path, shipped_do(fake.url, client_key))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no problems found" in result.stdout
    assert "would create 3 droplets (s-1vcpu-2gb in nyc3, image 123456789" in result.stdout
    assert "nothing was created (dry run)" in result.stdout
    assert fake.count() == 0 and not fake.calls("POST")
    (probe,) = writes(fake)   # the write-scope probe: a delete by a tag nobody carries
    assert probe.method == "DELETE" and probe.path == "/v2/droplets"
    assert probe.query["tag_name"].startswith(do_preflight.PROBE_TAG_PREFIX)
    read = {r.path.split("/")[2] for r in fake.calls("GET")}
    assert read == {"account", "regions", "sizes", "images", "vpcs"}
    assert not (tmp_path / "reports").exists()


BAD_FIELDS = [
    ("region", {"region": "sfo1"},
     "digitalocean.region: 'sfo1' is not an available region; expected one of ams3, nyc3"),
    ("size", {"size": "s-8vcpu-16gb"},
     "digitalocean.size: 's-8vcpu-16gb' is not an available size"),
    ("size not in region", {"size": "s-2vcpu-4gb"},
     "digitalocean.size: 's-2vcpu-4gb' is not offered in nyc3; expected one of its "
     "regions: ams3"),
    ("image", {"image": 987654321},
     "digitalocean.image: no image 987654321 for this token; expected the id of your "
     "uploaded Flatcar custom image"),
    ("image elsewhere", {"region": "ams3", "vpc_uuid": None},
     "digitalocean.image: image 123456789 is not in ams3; expected it there (it is in nyc3)"),
    ("ssh key", {"ssh_keys": [512189, "01:23:45:67:89:ab:cd:ef:01:23:45:67:89:ab:cd:ef"]},
     "digitalocean.ssh_keys.1: no SSH key '01:23:45:67:89:ab:cd:ef:01:23:45:67:89:ab:cd:ef' "
     "in the account; expected the id or MD5 fingerprint of a key added to it"),
    ("vpc", {"vpc_uuid": "00000000-0000-4000-8000-000000000000"},
     "digitalocean.vpc_uuid: no VPC 00000000-0000-4000-8000-000000000000 in the account; "
     "expected the id of a VPC in the droplets' region"),
]


@pytest.mark.parametrize("changes, line", [c[1:] for c in BAD_FIELDS],
                         ids=[c[0] for c in BAD_FIELDS])
def test_each_bad_field_gets_its_one_line(fake, client_key, changes, line):
    found = problems(shipped_do(fake.url, client_key, **changes))
    assert len(found) == 1 and found[0].startswith(line), found
    assert fake.count() == 0 and not fake.calls("POST")


def test_vpc_in_another_region(fake, client_key):
    fake.catalogue["vpcs"][0]["region"] = "ams3"
    assert problems(shipped_do(fake.url, client_key)) == [
        f"digitalocean.vpc_uuid: VPC {GOOD_VPC} is in ams3; expected one in nyc3"]


def test_pages_of_sizes_are_all_read(token, client_key):
    with FakeDigitalOcean(token, max_per_page=1) as fake:
        assert problems(shipped_do(fake.url, client_key)) == []
        assert len(fake.calls("GET", "/v2/sizes")) == len(fake.catalogue["sizes"])


def test_every_bad_field_at_once_exits_4_one_line_each(fake, client_key, tmp_path):
    data = shipped_do(fake.url, client_key, region="sfo1", size="s-8vcpu-16gb", image=7,
                      ssh_keys=[99], vpc_uuid="00000000-0000-4000-8000-000000000000")
    result = dry_run(tmp_path, data)
    assert result.returncode == 4, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert lines[0].startswith("ERROR: dry run of ") and "5 problem(s)" in lines[0]
    fields = [ln.split(":")[0] for ln in lines[1:]]
    assert fields == ["digitalocean.region", "digitalocean.size", "digitalocean.image",
                      "digitalocean.ssh_keys.0", "digitalocean.vpc_uuid"]
    assert fake.count() == 0 and not fake.calls("POST")


def test_read_only_token_is_refused(token, client_key, tmp_path):
    with FakeDigitalOcean(token, read_only=True) as fake:
        result = dry_run(tmp_path, shipped_do(fake.url, client_key))
        assert result.returncode == 4, result.stdout + result.stderr
        assert "DIGITALOCEAN_TOKEN: may not delete droplets (HTTP 403: You do not have " \
               "access for the attempted action.); expected a token with write scope" \
               in result.stderr
        assert "Traceback" not in result.stderr and fake.count() == 0


def test_wrong_token_is_one_line(fake, client_key, monkeypatch):
    monkeypatch.setenv(do_api.TOKEN_ENV, "dop_v1_" + "0" * 64)
    assert problems(shipped_do(fake.url, client_key)) == [
        "DIGITALOCEAN_TOKEN: refused by the API (HTTP 401: Unable to authenticate you); "
        "expected a token with read and write scope"]
    assert len(fake.requests) == 1   # nothing else is asked with a refused token


def test_missing_token_and_bad_inventory_exit_4(client_key, tmp_path, monkeypatch):
    monkeypatch.delenv(do_api.TOKEN_ENV, raising=False)
    result = dry_run(tmp_path, shipped_do("http://127.0.0.1:9", client_key))
    assert result.returncode == 4 and "DIGITALOCEAN_TOKEN is not set" in result.stderr
    bad = shipped_do("http://127.0.0.1:9", client_key, region="New York")
    result = dry_run(tmp_path, bad)
    assert result.returncode == 4 and "digitalocean.region" in result.stderr
    assert "Traceback" not in result.stderr


def test_static_inventory_says_what_it_would_do(tmp_path):
    """Its hosts are fakes that answer the preflight as ready hosts do (tests/support/
    static_hosts.py; tests/test_static_preflight.py has the unready ones)."""
    path = inv.INVENTORY_DIR / "static.example.yaml"
    nodes = list(inv.load(path).nodes or ())
    answers = static_hosts.write_answers(
        tmp_path / "answers.json", {n.name: static_hosts.answer(n, nodes) for n in nodes})
    result = dry_run(tmp_path, path, {static_hosts.FAKE_HOSTS_ENV: str(answers)},
                     "-p", "tests.support.static_hosts")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "would attach to 3 hosts over SSH as core, creating nothing: coreos-1 (master)" \
        in result.stdout
    assert "its binaries built from source" in result.stdout
    assert not (tmp_path / "reports").exists()


@pytest.mark.parametrize("name, expected", [
    ("local.yaml", "would create 3 systemd-nspawn nodes on this machine (public "
                   "192.168.2.0/24, private 10.120.0.0/24): coreos-1 (master), "
                   "coreos-2 (minion), coreos-3 (minion)"),
    ("qemu.yaml", "would boot 3 QEMU VMs (2048 MB, accel auto) from https://"),
])
def test_plan_of_the_local_providers(name, expected):
    lines = dryrun.plan(inv.load(inv.INVENTORY_DIR / name))
    assert lines[0].startswith(expected)
    assert lines[-1].startswith("deviations from the guide: docker_command=")
