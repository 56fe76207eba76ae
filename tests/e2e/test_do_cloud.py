"""The whole suite on the simulated DigitalOcean (issue 18, `do_e2e`): `pytest suites
--inventory` with provider `digitalocean`, through pydo, the provider and the fake API,
whose droplets are real nodes booted from the provider's user_data by the real Ignition
(tests/simulated_cloud.py). The provider sets up the guide's etcd on them (the
Flatcar-like image has only etcd-member.service), the bootstrap does the guide's
install with the real binaries, every check runs, and teardown leaves 0 droplets and
nothing on this machine, also when the run is interrupted. Octet 93."""
from __future__ import annotations

import json
import secrets
import signal
import time
from pathlib import Path

import pytest
import yaml

from helpers.inventory import ROOT, parse
from helpers.providers.base import ProviderError
from helpers.providers.digitalocean import DigitalOceanProvider
from tests.e2e.suite_runs import SuiteRun
from tests.fake_digitalocean import FakeDigitalOcean
from tests.simulated_cloud import CLOUD_CONFIG_REFUSED, SimulatedCloud
from tests.sshd import keygen
from tests.support import recordings

pytestmark = [pytest.mark.e2e, pytest.mark.do_e2e, pytest.mark.slow,
              pytest.mark.xdist_group(__name__)]
PREFIX, OCTET = "dosim93", 93


def inventory(tmp: Path, api_url: str) -> Path:
    """do.yaml pointed at the fake API, with the deviations the simulated image needs:
    its nodes are the embedded cluster's Debian tree, so they are local.yaml's."""
    data = yaml.safe_load((ROOT / "inventories" / "do.yaml").read_text())
    local = yaml.safe_load((ROOT / "inventories" / "local.yaml").read_text())
    key = tmp / "id_ed25519"
    keygen(key, "do-e2e")
    data["digitalocean"] = {**data["digitalocean"], "api_url": api_url, "active_timeout": 300}
    data["ssh"] = {**data["ssh"], "key": str(key)}
    data["deviations"] = local["deviations"]
    data["bootstrap"] = {**data["bootstrap"], "ship": "all"}
    path = tmp / "do-sim.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture
def cloud(tmp_path):
    token = "dop_v1_" + secrets.token_hex(32)
    with SimulatedCloud(PREFIX, OCTET, tmp_path / "cloud") as region, \
            FakeDigitalOcean(token, cloud=region, active_after=1) as api:
        yield region, api, token, inventory(tmp_path, api.url)
    assert region.leftovers() == [], region.leftovers()


def run(tmp_path, inventory_path, token, *args) -> SuiteRun:
    return SuiteRun(inventory_path, tmp_path / "reports", *args,
                    env={"DIGITALOCEAN_TOKEN": token})


def test_the_suite_passes_on_simulated_droplets_and_leaves_nothing(cloud, tmp_path, measured):
    region, api, token, inventory_path = cloud
    started = time.monotonic()
    suite = run(tmp_path, inventory_path, token, "-n", "3")
    try:
        code = suite.wait(1500)
    finally:
        suite.kill()
    took = time.monotonic() - started
    (tmp_path / "suite.out").write_text(suite.output)
    assert code == 0, suite.output[:4000] + "\n...\n" + suite.output[-2000:]
    # the embedded cluster's verdict, check by check (its recorded live run)
    differ = recordings.unlike_the_embedded_cluster(tmp_path / "reports" / "junit.xml")
    assert differ == {}, f"(simulated droplets, embedded cluster): {differ}"
    assert "Conformance sign-off: PASS" in suite.output
    # made through the API, booted by Ignition, then all deleted again
    assert len(api.calls("POST", "/v2/droplets")) == 1
    assert api.count() == 0 and region.droplet_prefixes() == []
    assert len(region.boot_seconds) == 3
    leaked = [p for p in (tmp_path / "reports").rglob("*") if p.is_file()
              and token.encode() in p.read_bytes()]
    assert leaked == [], f"the token is in {leaked}"
    measured["do_e2e: suite on 3 simulated droplets, create to teardown"] = f"{took:.0f} s"
    measured["do_e2e: droplet boot (Ignition + nspawn)"] = \
        f"{max(region.boot_seconds):.1f} s at most"


PHASES = {
    # the create request is in, the droplets are booting
    "create": lambda api, region, suite: bool(api.calls("POST", "/v2/droplets")),
    # the droplets run and the guide's install has begun on them
    "bootstrap": lambda api, region, suite: len(region.boot_seconds) == 3
    and suite.saw("survey ["),
}


@pytest.mark.parametrize("phase", list(PHASES))
def test_an_interrupted_run_deletes_its_droplets(cloud, tmp_path, phase):
    region, api, token, inventory_path = cloud
    suite = run(tmp_path, inventory_path, token)
    try:
        suite.wait_for(lambda: PHASES[phase](api, region, suite), f"the {phase} phase", 600)
        suite.signal(signal.SIGINT)
        code = suite.wait(300)
    finally:
        suite.kill()
    assert code != 0, suite.output[-3000:]
    assert api.count() == 0, api.names()
    assert region.droplet_prefixes() == []
    assert "Traceback" not in suite.output, suite.output[-3000:]
    state = tmp_path / "reports" / "cluster" / "state.json"
    assert not state.exists() or not json.loads(state.read_text()).get("cluster")


def test_cloud_config_user_data_is_refused_with_its_reason(cloud, tmp_path, monkeypatch):
    """The simulated image runs Ignition only: a cloud-config droplet never comes up, the
    provider says so and deletes it, and the cloud names why."""
    region, api, token, inventory_path = cloud
    data = yaml.safe_load(inventory_path.read_text())
    data["digitalocean"]["user_data"] = "cloud-config"
    monkeypatch.setenv("DIGITALOCEAN_TOKEN", token)
    provider = DigitalOceanProvider(parse(data), tmp_path, "cc1")
    with pytest.raises(ProviderError, match=r"\(off\) instead of active"):
        provider.create()
    assert api.count() == 0 and region.droplet_prefixes() == []
    assert {m.error for m in region.booted} == {CLOUD_CONFIG_REFUSED}
