"""The fake DigitalOcean API's cloud mode, without root: what it reports of droplets that
a cloud boots (tests/simulated_cloud.py; here a stand-in cloud the test steers). A
droplet is `new` until its machine runs, then `active` with the machine's addresses;
`off` when it failed to boot; listed after a delete until its machine is gone."""
from __future__ import annotations

import json
import threading
import time
import urllib.request

from tests.fake_digitalocean import FakeDigitalOcean


class SteeredMachine:
    def __init__(self, number: int):
        self.ready = threading.Event()
        self.error = ""
        self.public_ip, self.private_ip = f"192.168.93.{number + 1}", f"10.193.0.{number + 1}"


class SteeredCloud:
    def __init__(self):
        self.machines: list[SteeredMachine] = []
        self.user_data: list[str | None] = []
        self.may_delete = threading.Event()

    def launch(self, droplet_id: int, name: str, user_data: str | None) -> SteeredMachine:
        self.user_data.append(user_data)
        self.machines.append(SteeredMachine(len(self.machines) + 1))
        return self.machines[-1]

    def delete(self, machine: SteeredMachine) -> None:
        self.may_delete.wait(10)


def api(fake: FakeDigitalOcean, method: str, path: str, body: dict | None = None):
    """(status, the answer's JSON or None)."""
    request = urllib.request.Request(fake.url + path, method=method,
                                     data=json.dumps(body).encode() if body else None,
                                     headers={"Authorization": "Bearer t0k",
                                              "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as answer:
        raw = answer.read()
        return answer.status, json.loads(raw) if raw else None


def create(fake: FakeDigitalOcean, *names: str) -> None:
    api(fake, "POST", "/v2/droplets", {"names": list(names), "region": "nyc3",
                                       "size": "s-1vcpu-2gb", "image": 1,
                                       "user_data": '{"ignition": {"version": "3.3.0"}}'})


def droplets(fake: FakeDigitalOcean) -> list[dict]:
    return api(fake, "GET", "/v2/droplets")[1]["droplets"]


def statuses(fake: FakeDigitalOcean) -> dict[str, str]:
    return {d["name"]: d["status"] for d in droplets(fake)}


def test_a_droplet_is_new_until_its_machine_runs_then_active_with_its_addresses():
    cloud = SteeredCloud()
    with FakeDigitalOcean("t0k", cloud=cloud, active_after=1) as fake:
        create(fake, "coreos-1", "coreos-2")
        assert cloud.user_data == ['{"ignition": {"version": "3.3.0"}}'] * 2
        assert statuses(fake) == {"coreos-1": "new", "coreos-2": "new"}
        assert statuses(fake) == {"coreos-1": "new", "coreos-2": "new"}   # polls do not count
        cloud.machines[0].ready.set()
        assert statuses(fake) == {"coreos-1": "active", "coreos-2": "new"}
        droplet = next(d for d in droplets(fake) if d["name"] == "coreos-1")
        assert {n["type"]: n["ip_address"] for n in droplet["networks"]["v4"]} == \
            {"public": "192.168.93.2", "private": "10.193.0.2"}


def test_a_droplet_that_failed_to_boot_is_off():
    cloud = SteeredCloud()
    with FakeDigitalOcean("t0k", cloud=cloud, active_after=1) as fake:
        create(fake, "coreos-1")
        cloud.machines[0].error = "ignition files failed"
        cloud.machines[0].ready.set()
        assert statuses(fake) == {"coreos-1": "off"}


def test_a_deleted_droplet_stays_listed_until_its_machine_is_gone():
    cloud = SteeredCloud()
    with FakeDigitalOcean("t0k", cloud=cloud, active_after=1) as fake:
        create(fake, "coreos-1")
        cloud.machines[0].ready.set()
        droplet_id = droplets(fake)[0]["id"]
        assert api(fake, "DELETE", f"/v2/droplets/{droplet_id}")[0] == 204
        assert list(statuses(fake)) == ["coreos-1"]
        cloud.may_delete.set()
        deadline = time.monotonic() + 5
        while statuses(fake) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert statuses(fake) == {}
