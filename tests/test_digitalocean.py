"""The `digitalocean` provider and its reaper, against a fake API (tests/fake_digitalocean.py).

Nothing here talks to DigitalOcean: every request goes to a fake on 127.0.0.1, and
the fake "droplets" are real sshd processes on 127.0.0.N configured from the
user_data the provider sent, so host-key verification is the real thing.

It is long because it is the one test module of one provider: create, its failures and
cleanup, the etcd step, destroy, the reaper and the token's secrecy share the fake.
"""
from __future__ import annotations

import dataclasses
import getpass
import json
import logging
import os
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from helpers import ssh as ssh_mod
from helpers.inventory import ROOT, parse
from helpers.providers import digitalocean as do
from helpers.providers import do_api, do_etcd, do_reap, do_userdata
from helpers.providers.base import Cluster, Node, ProviderError, ProviderUnavailable
from helpers.providers.machines import ETCD_READY
from tests.fake_digitalocean import FakeDigitalOcean, parse_user_data
from tests.project import copy_project
from tests.sshd import free_port, keygen

RUN_ID = "20260101-030000-beef"
FAST = do_api.RetryPolicy(tries=5, budget=10.0, base=0.05, cap=0.2, connect_timeout=2.0,
                      read_timeout=5.0)


def make_token() -> str:
    return "dop_v1_" + secrets.token_hex(32)


@pytest.fixture
def token(monkeypatch) -> str:
    value = make_token()
    monkeypatch.setenv(do_api.TOKEN_ENV, value)
    return value


@pytest.fixture(scope="module")
def client_key(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("client") / "id_ed25519"
    keygen(path, "conformance-client")
    return path


@pytest.fixture
def ssh_port() -> int:
    return free_port()


@pytest.fixture
def fake(token, tmp_path, ssh_port):
    # max_per_page=2: every listing of a 3-node run needs the pagination links
    with FakeDigitalOcean(token, sshd_dir=tmp_path / "droplets", ssh_port=ssh_port,
                          active_after=2, max_per_page=2) as server:
        yield server


def do_inventory(fake_url: str, key: Path, port: int, **settings):
    extra_ssh = settings.pop("ssh", {})
    section = {"image": "flatcar-stable", "ssh_keys": [512189], "api_url": fake_url,
               "tags": ["nightly"], "active_timeout": 20, **settings}
    return parse({"provider": "digitalocean", "bootstrap": {"enabled": False},
                  "digitalocean": section,
                  "ssh": {"user": getpass.getuser(), "key": str(key),
                          "port": port, "connect_timeout": 3, "command_timeout": 10,
                          **extra_ssh}})


def make_provider(inventory, tmp_path, run_id=RUN_ID) -> do.DigitalOceanProvider:
    provider = do.DigitalOceanProvider(inventory, tmp_path / "run", run_id)
    provider.retry = FAST
    provider.poll_max = 0.2
    provider.destroy_timeout = 5.0
    return provider


@pytest.fixture
def provider(fake, client_key, ssh_port, tmp_path):
    inventory = do_inventory(fake.url, client_key, ssh_port)
    made = make_provider(inventory, tmp_path)
    yield made
    fake.clear_failures()
    made.destroy(None)


def suffix() -> str:
    return do.run_suffix(RUN_ID)


# -- create ---------------------------------------------------------------------------------
def test_create_makes_every_droplet_in_one_request(provider, fake, client_key, tmp_path):
    cluster = provider.create()
    posts = fake.calls("POST", "/v2/droplets")
    assert len(posts) == 1
    body = posts[0].body
    assert body["names"] == [f"coreos-{i}-{suffix()}" for i in (1, 2, 3)]
    assert body["tags"] == ["nightly", do.PROJECT_TAG, f"k8sconf-run-{suffix()}"]
    assert (body["region"], body["size"], body["image"], body["ssh_keys"]) == \
        ("nyc3", "s-1vcpu-2gb", "flatcar-stable", [512189])
    assert "vpc_uuid" not in body
    user_data = body["user_data"]
    assert len(user_data.encode()) <= 64 * 1024
    sent = parse_user_data(user_data)
    client_line = " ".join(Path(f"{client_key}.pub").read_text().split()[:2])
    assert sent["authorized_keys"] == [client_line]
    assert sent["host_key_private"].startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
    # one host key for the run, vouched for on every node
    assert {n.host_keys for n in cluster.nodes} == {(sent["host_key_public"],)}
    assert json.loads(user_data)["ignition"]["version"] == "3.3.0"

    # waited for 'active' (the fake needs two looks), IPs read from networks.v4
    assert [n.name for n in cluster.nodes] == ["coreos-1", "coreos-2", "coreos-3"]
    assert [n.role for n in cluster.nodes] == ["master", "minion", "minion"]
    listed = {d.data["name"]: d for d in fake.droplets.values()}
    for node in cluster.nodes:
        droplet = listed[f"{node.name}-{suffix()}"]
        assert droplet.data["status"] == "active"
        assert node.public_ip == node.ssh_host == f"127.0.0.{droplet.octet}"
        assert node.private_ip == f"127.1.0.{droplet.octet}"
        assert node.ssh_port == provider.inventory.ssh.port
    assert any(r.query.get("page") == "2" for r in fake.calls("GET", "/v2/droplets"))
    assert cluster.state["run_tag"] == f"k8sconf-run-{suffix()}"
    assert set(cluster.state["droplets"]) == set(body["names"])
    assert cluster.ssh_key == str(client_key)

    # SSH verifies the injected key (and nothing else) on every node
    for node in cluster.nodes:
        connection = ssh_mod.Connection(node, cluster.ssh_user, cluster.ssh_key,
                                        connect_timeout=5).connect()
        assert connection.run("echo ok").stdout.strip() == "ok"
        connection.close()
    other = keygen(tmp_path / "other_host_key", "other")
    imposter = dataclasses.replace(Cluster.from_json(cluster.to_json()).nodes[0],
                                   host_keys=(other,))
    with pytest.raises(ssh_mod.HostKeyRejected):
        ssh_mod.Connection(imposter, cluster.ssh_user, cluster.ssh_key,
                           connect_timeout=5).connect()

    pids = fake.sshd_pids()
    assert len(pids) == 3
    provider.destroy(cluster)
    assert fake.count() == 0
    assert [r.query for r in fake.calls("DELETE", "/v2/droplets")] == \
        [{"tag_name": f"k8sconf-run-{suffix()}"}]
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or \
            Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"


def test_cloud_config_user_data_and_vpc(fake, client_key, ssh_port, tmp_path):
    inventory = do_inventory(fake.url, client_key, ssh_port, user_data="cloud-config",
                             vpc_uuid="5a4981aa-9653-4bd1-bef5-d6bff52042e4", image=7555620)
    provider = make_provider(inventory, tmp_path)
    cluster = provider.create()
    body = fake.calls("POST", "/v2/droplets")[0].body
    assert body["user_data"].startswith("#cloud-config\n")
    assert body["vpc_uuid"] == "5a4981aa-9653-4bd1-bef5-d6bff52042e4"
    assert body["image"] == 7555620
    config = yaml.safe_load(body["user_data"])
    assert config["coreos"]["units"][0]["name"] == do_userdata.IDENTITY_UNIT
    assert parse_user_data(body["user_data"])["host_key_public"] == cluster.nodes[0].host_keys[0]
    ssh_mod.wait_for_ssh(cluster.nodes[2], cluster.ssh_user, cluster.ssh_key, 10).close()
    provider.destroy(cluster)
    assert fake.count() == 0


def test_identity_unit_sets_guide_hostname_and_environment():
    script = do_userdata._identity_script(suffix())
    assert f'hostnamectl set-hostname "${{name%-{suffix()}}}"' in script
    assert "COREOS_PRIVATE_IPV4" in script and "/etc/environment" in script
    priv, pub = do_userdata.generate_host_key()
    text = do_userdata.render_user_data("ignition", "core", ["ssh-ed25519 AAAA k"], priv, pub, suffix())
    files = {f["path"]: f for f in json.loads(text)["storage"]["files"]}
    assert files[do_userdata.HOST_KEY_PATH]["mode"] == 0o600
    assert files[do_userdata.IDENTITY_SCRIPT]["mode"] == 0o755
    validate = shutil.which("ignition-validate")
    if validate:
        result = subprocess.run([validate, "-"], input=text, text=True, capture_output=True,
                                timeout=30)
        assert result.returncode == 0, result.stdout + result.stderr


def test_user_data_over_64_kib_is_refused_before_sending(provider, fake, monkeypatch):
    monkeypatch.setattr(do, "MAX_USER_DATA", 512)
    with pytest.raises(ProviderError, match=r"user_data is \d+ bytes, more than the 512"):
        provider.create()
    assert fake.calls("POST") == []


def test_more_nodes_than_one_request_can_make_is_refused(fake, client_key, ssh_port, tmp_path):
    inventory = do_inventory(fake.url, client_key, ssh_port)
    nodes = [{"name": f"coreos-{i}", "role": "master" if i == 1 else "minion"}
             for i in range(1, 12)]
    inventory = parse({**inventory.model_dump(mode="json", exclude_none=True), "nodes": nodes})
    with pytest.raises(ProviderError, match="11 nodes, but one create request makes at most 10"):
        make_provider(inventory, tmp_path).create()
    assert fake.requests == []


# -- etcd, as the guide starts from it -----------------------------------------------------------
DROPIN = "/etc/systemd/system/etcd-member.service.d/20-k8sconf-etcd.conf"
FLATCAR = "etcd-member.service /usr/lib/systemd/system/etcd-member.service\n"
OWN = "etcd.service /lib/systemd/system/etcd.service\n"


def script_of(command: str) -> str:
    """The script inside `sudo -n sh -c '<script>'`, as Connection.run(sudo=True) sends it."""
    words = shlex.split(command)
    assert words[:4] == ["sudo", "-n", "sh", "-c"], command[:80]
    return words[4]


def test_create_sets_up_etcd_on_every_droplet(provider, fake):
    cluster = provider.create()
    private = {n.name: n.private_ip for n in cluster.nodes}
    members = ",".join(f"{name}=http://{ip}:2380" for name, ip in private.items())
    for node in cluster.nodes:
        script = script_of(fake.etcd_setup(f"{node.name}-{suffix()}") or "")
        ip_ = node.private_ip
        for line in (f"ETCD_NAME={node.name}", f"ETCD_INITIAL_CLUSTER={members}",
                     "ETCD_LISTEN_CLIENT_URLS=http://0.0.0.0:2379,http://0.0.0.0:4001",
                     f"ETCD_ADVERTISE_CLIENT_URLS=http://{ip_}:2379,http://{ip_}:4001",
                     f"ETCD_LISTEN_PEER_URLS=http://{ip_}:2380", "ETCD_ENABLE_V2=true",
                     f"ETCD_INITIAL_CLUSTER_TOKEN=k8sconf-run-{suffix()}"):
            assert f'Environment="{line}"' in script, line
        assert f"> {DROPIN}" in script and "ETCD_ELECTION_TIMEOUT" not in script
        assert ("ln -s /usr/lib/systemd/system/etcd-member.service "
                "/etc/systemd/system/etcd.service") in script
        assert script.index("systemctl daemon-reload") < \
            script.index("systemctl enable --now --no-block etcd-member.service")
    provider.destroy(cluster)


class RecordingConnection:
    """A droplet as the etcd step talks to it: answers from `units`, records each call."""

    def __init__(self, node: Node, units: str, healthy: bool = True, script_rc: int = 0):
        self.node, self.units, self.healthy, self.script_rc = node, units, healthy, script_rc
        self.calls: list[tuple[str, bool, float | None]] = []
        self.closed = False

    def run(self, command: str, *, timeout: float | None = None, sudo: bool = False,
            **_) -> ssh_mod.Result:
        self.calls.append((command, sudo, timeout))
        rc, out = 0, ""
        if command == do_etcd.FIND_UNITS:
            out = self.units
        elif command == ETCD_READY:
            rc, out = (0, '{"health":"true"}\n' + '"clientURLs"' * 3) if self.healthy else (7, "")
        elif sudo:
            rc, out = self.script_rc, "sudo: a password is required" if self.script_rc else ""
        return ssh_mod.Result(self.node.name, command, rc, out, "", 0.0)

    def scripts(self) -> list[str]:
        return [command for command, sudo, _ in self.calls if sudo]

    def close(self) -> None:
        self.closed = True


def etcd_step(units: str, **behaviour) -> dict[str, RecordingConnection]:
    nodes = {f"coreos-{i}-{suffix()}": Node(f"coreos-{i}", "minion", f"203.0.113.{i}",
                                            f"10.132.0.{i}", f"203.0.113.{i}")
             for i in (1, 2, 3)}
    conns = {n.name: RecordingConnection(n, units, **behaviour) for n in nodes.values()}
    do_etcd.set_up(nodes, lambda node: conns[node.name], "k8sconf-run-x",
                   time.monotonic() + 2.5, 7.0)
    return conns


def test_etcd_step_names_every_member_on_its_private_address():
    conns = etcd_step(FLATCAR)
    members = "coreos-1=http://10.132.0.1:2380,coreos-2=http://10.132.0.2:2380," \
              "coreos-3=http://10.132.0.3:2380"
    for i, conn in enumerate(conns.values(), start=1):
        [script] = conn.scripts()
        assert f'Environment="ETCD_INITIAL_CLUSTER={members}"' in script
        assert (f'Environment="ETCD_ADVERTISE_CLIENT_URLS=http://10.132.0.{i}:2379,'
                f'http://10.132.0.{i}:4001"') in script
        assert 'Environment="ETCD_ENABLE_V2=true"' in script and DROPIN in script
        assert [c for c, _, _ in conn.calls][-1] == ETCD_READY      # then the health wait
        assert all(timeout for _, _, timeout in conn.calls)         # every call bounded
        assert conn.closed


@pytest.mark.parametrize("units,unit,alias", [
    (FLATCAR, "etcd-member.service", True),
    (OWN, "etcd.service", False),
    (OWN + FLATCAR, "etcd.service", False),
], ids=["flatcar", "own-etcd", "both"])
def test_etcd_alias_only_when_etcd_member_exists_and_etcd_service_does_not(units, unit, alias):
    for conn in etcd_step(units).values():
        [script] = conn.scripts()
        assert f"/etc/systemd/system/{unit}.d/20-k8sconf-etcd.conf" in script
        assert ("ln -s /usr/lib/systemd/system/etcd-member.service "
                "/etc/systemd/system/etcd.service" in script) is alias
        assert ("ln -s" in script) is alias
        assert f"systemctl enable --now --no-block {unit}" in script


def test_etcd_step_failures_are_one_line_naming_the_droplet():
    with pytest.raises(ProviderUnavailable) as missing:
        etcd_step("")
    assert "digitalocean: droplet coreos-" in str(missing.value)
    assert "neither etcd.service nor etcd-member.service" in str(missing.value)
    with pytest.raises(ProviderError) as refused:
        etcd_step(FLATCAR, script_rc=1)
    assert "setting up etcd-member.service exited 1: sudo: a password is required" \
        in str(refused.value)
    started = time.monotonic()
    with pytest.raises(ProviderError) as sick:
        etcd_step(FLATCAR, healthy=False)
    assert time.monotonic() - started < 6
    for caught in (missing, refused, sick):
        assert "\n" not in str(caught.value)
        assert str(caught.value).startswith("digitalocean: droplet coreos-")


def test_droplet_whose_etcd_never_gets_healthy_fails_create(fake, client_key, ssh_port,
                                                            tmp_path):
    fake.etcd_never_healthy("coreos-2")
    provider = make_provider(do_inventory(fake.url, client_key, ssh_port, active_timeout=4),
                             tmp_path)
    with pytest.raises(ProviderError) as caught:
        provider.create()
    message = str(caught.value)
    assert message.startswith(f"digitalocean: droplet coreos-2-{suffix()}: etcd on coreos-2 "
                              "not healthy with 3 members in time")
    assert "\n" not in message and "coreos-1" not in message
    assert fake.count() == 0


# -- rate limits, server errors, other errors --------------------------------------------------
def api_for(fake, token, sleeps=None, **retry) -> do_api.DigitalOceanAPI:
    policy = dataclasses.replace(FAST, **retry)
    return do_api.DigitalOceanAPI(fake.url, token, policy,
                              sleep=(sleeps.append if sleeps is not None else time.sleep))


def test_429_honours_retry_after(fake, token):
    sleeps: list[float] = []
    fake.add_droplet("x-1", [do.PROJECT_TAG])
    fake.fail_next(429, 2, retry_after=3)
    assert [d["name"] for d in api_for(fake, token, sleeps).list_droplets(do.PROJECT_TAG)] == ["x-1"]
    assert sleeps == [3.0, 3.0]
    assert [r.status for r in fake.requests] == [429, 429, 200]


def test_429_falls_back_to_ratelimit_reset(fake, token):
    sleeps: list[float] = []
    fake.fail_next(429, 1, reset_in=7)
    api_for(fake, token, sleeps).list_droplets(do.PROJECT_TAG)
    assert len(sleeps) == 1 and 5.0 <= sleeps[0] <= 7.0


def test_429_real_wait_then_create_succeeds(provider, fake):
    fake.fail_next(429, 1, retry_after=1)
    started = time.monotonic()
    cluster = provider.create()
    assert len(cluster.nodes) == 3
    first, second = fake.requests[0], fake.requests[1]
    assert (first.method, first.status) == ("POST", 429)
    assert second.at - first.at >= 0.95  # waited retry-after, then looked before re-sending
    assert (second.method, second.status) == ("GET", 200)
    assert time.monotonic() - started < 15
    posts = [r for r in fake.calls("POST", "/v2/droplets") if r.status == 202]
    assert len(posts) == 1 and fake.count() == 3


def test_429_longer_than_the_budget_fails_at_once(fake, token):
    sleeps: list[float] = []
    fake.fail_next(429, 1, retry_after=3600)
    with pytest.raises(ProviderError) as caught:
        api_for(fake, token, sleeps).list_droplets("t")
    assert sleeps == []
    assert "HTTP 429 too_many_requests: API Rate limit exceeded." in str(caught.value)
    assert "retry-after 3600 s exceeds the 10 s retry budget" in str(caught.value)


def test_5xx_then_success_backs_off_exponentially(fake, token):
    sleeps: list[float] = []
    fake.fail_next(500, 3)
    api_for(fake, token, sleeps, base=1.0, cap=16.0).list_droplets("t")
    assert len(sleeps) == 3
    assert 0.8 <= sleeps[0] <= 1.0 and 1.6 <= sleeps[1] <= 2.0 and 3.2 <= sleeps[2] <= 4.0
    assert [r.status for r in fake.requests] == [500, 500, 500, 200]


def test_create_survives_500s(provider, fake):
    fake.fail_next(500, 2)
    cluster = provider.create()
    assert len(cluster.nodes) == 3 and fake.count() == 3
    # the failed POST made nothing: the retry looked first (its own 500 retried), then
    # sent the create again
    assert [(r.method, r.status) for r in fake.requests[:4]] == \
        [("POST", 500), ("GET", 500), ("GET", 200), ("POST", 202)]


def test_persistent_500_is_one_line_provider_error(fake, token):
    fake.fail_next(500, 50)
    started = time.monotonic()
    with pytest.raises(ProviderError) as caught:
        api_for(fake, token).list_droplets("k8sconf-run-x")
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("digitalocean: list droplets tagged k8sconf-run-x failed: "
                              "HTTP 500 server_error: Unexpected server-side error")
    assert "gave up after 5 tries" in message
    assert len(fake.requests) == 5
    assert time.monotonic() - started < 5
    assert token not in message


def test_persistent_500_budget_bounds_the_time(fake, token):
    fake.fail_next(503, 50)
    started = time.monotonic()
    with pytest.raises(ProviderError, match=r"HTTP 503 .*the 1 s retry budget is spent"):
        api_for(fake, token, tries=100, budget=1.0, base=0.2, cap=0.4).list_droplets("t")
    assert time.monotonic() - started < 2.0


def test_other_errors_are_not_retried(fake, token):
    bad = api_for(fake, make_token())
    with pytest.raises(ProviderError) as caught:
        bad.list_droplets("t")
    assert str(caught.value) == ("digitalocean: list droplets tagged t failed: "
                                 "HTTP 401 Unauthorized: Unable to authenticate you")
    fake.fail_next(422, 1)
    with pytest.raises(ProviderError, match="HTTP 422"):
        api_for(fake, token).list_droplets("t")
    assert [r.status for r in fake.requests] == [401, 422]


def test_unreachable_api_is_bounded(token):
    port = free_port()
    started = time.monotonic()
    api = do_api.DigitalOceanAPI(f"http://127.0.0.1:{port}", token,
                             do_api.RetryPolicy(tries=3, budget=5, base=0.05, cap=0.1,
                                            connect_timeout=1, read_timeout=1))
    with pytest.raises(ProviderError, match=r"ServiceRequestError.*gave up after 3 tries"):
        api.list_droplets("t")
    assert time.monotonic() - started < 5


def test_every_call_has_a_read_timeout(fake, token):
    fake.stall_next(1, 3.0)
    started = time.monotonic()
    api_for(fake, token, read_timeout=0.5).list_droplets("t")
    assert time.monotonic() - started < 2.5
    assert [r.status for r in fake.requests if r.status != -1] == [200]  # stalled: no answer


def test_token_only_over_https_or_loopback(token):
    with pytest.raises(ProviderError, match="must use https"):
        do_api.DigitalOceanAPI("http://api.example.invalid", token)


# -- waiting, partial creates, destroy -------------------------------------------------------
def test_droplet_stuck_in_new_is_named_within_the_bound(fake, client_key, ssh_port, tmp_path):
    fake.stick("coreos-2")
    provider = make_provider(do_inventory(fake.url, client_key, ssh_port, active_timeout=1.5),
                             tmp_path)
    started = time.monotonic()
    with pytest.raises(ProviderError) as caught:
        provider.create()
    elapsed = time.monotonic() - started
    message = str(caught.value)
    assert f"droplet coreos-2-{suffix()} (id " in message
    assert "still 'new' after 1.5 s" in message and "coreos-1" not in message
    assert 1.5 <= elapsed < 6
    assert fake.count() == 0


@pytest.mark.parametrize("status", [202, 500, 422])
def test_partial_create_leaves_nothing(provider, fake, status):
    fake.partial_create(2, status=status)
    with pytest.raises(ProviderError) as caught:
        provider.create()
    if status == 422:
        assert "HTTP 422" in str(caught.value)
    else:
        assert f"create made 2 of 3 droplets (missing: coreos-3-{suffix()})" in str(caught.value)
    assert len(fake.calls("POST")) == 1  # a POST that made droplets is never sent again
    assert fake.count() == 0
    assert fake.sshd_pids() == []


def test_interrupted_create_leaves_nothing(provider, fake, monkeypatch):
    def interrupted(self, droplets):
        raise KeyboardInterrupt("SIGTERM")
    monkeypatch.setattr(do.DigitalOceanProvider, "_wait_active", interrupted)
    with pytest.raises(KeyboardInterrupt):
        provider.create()
    assert fake.count() == 0


def test_destroy_removes_only_the_run_and_is_idempotent(provider, fake, tmp_path):
    bystander = fake.add_droplet("someone-else", [do.PROJECT_TAG, "k8sconf-run-other"])
    cluster = provider.create()
    assert fake.count() == 4
    provider.destroy(cluster)
    assert fake.names() == ["someone-else"]
    provider.destroy(cluster)
    provider.destroy(None)
    # a fresh provider of the same run (after a crash) finds the run by its id alone
    again = make_provider(provider.inventory, tmp_path)
    fake.add_droplet(f"coreos-1-{suffix()}", [f"k8sconf-run-{suffix()}", do.PROJECT_TAG])
    again.destroy(None)
    assert fake.names() == [bystander["name"]]


def test_destroy_is_bounded_when_droplets_linger(provider, fake, monkeypatch):
    fake.add_droplet(f"coreos-1-{suffix()}", [f"k8sconf-run-{suffix()}"])
    provider.destroy_timeout = 1.0
    started = time.monotonic()
    with monkeypatch.context() as patch:
        patch.setattr(do_api.DigitalOceanAPI, "destroy_by_tag", lambda self, tag: None)
        patch.setattr(do_api.DigitalOceanAPI, "destroy", lambda self, droplet_id: None)
        with pytest.raises(ProviderError, match=r"1 droplet\(s\) tagged k8sconf-run-.* "
                                                 r"remain after 1 s: coreos-1-"):
            provider.destroy(None)
    assert time.monotonic() - started < 3


def test_reboot_goes_over_ssh(provider, monkeypatch):
    seen = []
    monkeypatch.setattr(do, "reboot_over_ssh", lambda *args: seen.append(args))
    provider.reboot("cluster", "node", 30)
    assert seen == [(provider, "cluster", "node", 30)]


# -- token hygiene -------------------------------------------------------------------------------
def test_missing_token_is_provider_unavailable(monkeypatch, client_key, tmp_path):
    monkeypatch.delenv(do_api.TOKEN_ENV, raising=False)
    provider = make_provider(do_inventory("http://127.0.0.1:9", client_key, 22), tmp_path)
    for verb in (provider.preflight, provider.create, lambda: provider.destroy(None)):
        with pytest.raises(ProviderUnavailable, match="DIGITALOCEAN_TOKEN is not set"):
            verb()


def test_preflight_refuses_cloud_config_bootstrap(token, client_key):
    inventory = parse({"provider": "digitalocean",
                       "bootstrap": {"enabled": True, "mode": "cloud-config"},
                       "artifacts": {"url": "https://example.invalid/a.tgz",
                                     "sha256": "0" * 64},
                       "digitalocean": {"image": 1, "ssh_keys": [1]},
                       "ssh": {"key": str(client_key)}})
    with pytest.raises(ProviderUnavailable, match="bootstrap mode 'cloud-config'"):
        do.DigitalOceanProvider(inventory, Path("/nonexistent"), RUN_ID).preflight()


def test_token_never_logged_nor_in_errors_or_state(provider, fake, token, caplog):
    caplog.set_level(logging.DEBUG)
    for name in ("azure", "azure.core", "urllib3", "pydo", "helpers"):
        logging.getLogger(name).setLevel(logging.DEBUG)
    fake.fail_next(429, 1, retry_after=0)
    fake.fail_next(500, 1)
    cluster = provider.create()
    fake.fail_next(500, 50)
    with pytest.raises(ProviderError) as caught:
        provider.destroy(cluster)
    fake.clear_failures()
    fake.fail_next(401, 1)
    with pytest.raises(ProviderError) as refused:
        provider.destroy(cluster)
    assert "HTTP 401" in str(refused.value)
    provider.destroy(cluster)
    assert fake.count() == 0
    texts = [caplog.text, str(caught.value), str(refused.value), cluster.to_json(), repr(provider.api),
             repr(provider.api.client._client._pipeline._impl_policies)]
    texts += [str(r.args) for r in caplog.records]
    for text in texts:
        assert token not in text
        assert "OPENSSH PRIVATE KEY" not in text
    # not vacuous: azure's HTTP logging did run, with the header redacted
    assert "'Authorization': 'REDACTED'" in caplog.text
    assert "gave up after" in str(caught.value)


# -- the reaper -------------------------------------------------------------------------------------
HOUR = 3600


def reaper_droplets(fake) -> None:
    fake.add_droplet("old-conformance", [do.PROJECT_TAG, "k8sconf-run-a"], age=6 * HOUR)
    fake.add_droplet("young-conformance", [do.PROJECT_TAG, "k8sconf-run-b"], age=1 * HOUR)
    fake.add_droplet("old-other", ["production"], age=50 * HOUR)
    fake.add_droplet("old-nightly", [do.PROJECT_TAG, "nightly"], age=5.5 * HOUR)


def test_reaper_deletes_only_old_project_droplets(fake, token, capsys):
    reaper_droplets(fake)
    assert do_reap.main(["reap", "--older-than", "5h", "--api-url", fake.url]) == 0
    assert fake.names() == ["old-other", "young-conformance"]
    out = capsys.readouterr().out
    assert "deleting old-conformance" in out and "deleting old-nightly" in out
    assert "2 droplet(s) tagged k8s-coreos-conformance older than 5 h deleted" in out


def test_reaper_dry_run_and_tag(fake, token, capsys):
    reaper_droplets(fake)
    assert do_reap.main(["reap", "--older-than", "5h", "--dry-run", "--api-url", fake.url]) == 0
    assert fake.count() == 4 and fake.calls("DELETE") == []
    assert "would delete old-conformance" in capsys.readouterr().out
    # --tag narrows, and the project tag is still required
    assert do_reap.main(["reap", "--older-than", "1h", "--tag", "nightly", "--api-url",
                    fake.url]) == 0
    assert fake.names() == ["old-conformance", "old-other", "young-conformance"]
    assert do_reap.main(["reap", "--older-than", "1h", "--tag", "production", "--api-url",
                    fake.url]) == 0
    assert "old-other" in fake.names()


def test_reaper_command_line(fake, token):
    reaper_droplets(fake)
    env = {**os.environ, do_api.TOKEN_ENV: token}
    command = [sys.executable, "-m", "helpers.providers.digitalocean", "reap",
               "--older-than", "5h", "--api-url", fake.url]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert fake.names() == ["old-other", "young-conformance"]
    assert token not in done.stdout + done.stderr
    env.pop(do_api.TOKEN_ENV)
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 2 and "DIGITALOCEAN_TOKEN is not set" in done.stderr
    bad_age = subprocess.run([*command[:5], "soon"], cwd=ROOT, env=env, capture_output=True,
                             text=True, timeout=60)
    assert bad_age.returncode == 2 and "not an age" in bad_age.stderr


@pytest.mark.parametrize("text,seconds", [("5h", 5 * HOUR), ("90m", 5400), ("1d12h", 36 * HOUR),
                                          ("3600", 3600), ("45s", 45)])
def test_age_parsing(text, seconds):
    assert do_reap._parse_age(text) == seconds


# -- whole conformance runs against the fake -------------------------------------------------------


@pytest.fixture(scope="module")
def project_copy(tmp_path_factory) -> Path:
    """The suite in a scratch directory: its reports/ (state file, junit, allure results)
    are the run's own, not the working tree's."""
    return copy_project(tmp_path_factory.mktemp("project"))


class LoggingFake(FakeDigitalOcean):
    marker: Path   # where the droplets' forced command logs each call


@pytest.fixture
def run_fake(token, tmp_path, ssh_port):
    """A fake whose droplets' sshd runs a stand-in for every command: it logs the call,
    waits a little (so a run can be caught mid-check), and fails."""
    marker = tmp_path / "commands.log"
    script = tmp_path / "forced-command"
    script.write_text(f"#!/bin/sh\necho called >> {marker}\nsleep 1\nexit 1\n")
    script.chmod(0o755)
    with LoggingFake(token, sshd_dir=tmp_path / "droplets", ssh_port=ssh_port,
                     active_after=2, force_command=str(script)) as server:
        server.marker = marker
        yield server


def start_run(project: Path, fake, client_key, port, token, tmp_path) -> subprocess.Popen:
    inventory = tmp_path / "do-test.yaml"
    inventory.write_text(yaml.safe_dump({
        "provider": "digitalocean",
        "digitalocean": {"image": "flatcar-stable", "ssh_keys": [512189], "api_url": fake.url,
                         "active_timeout": 30, "tags": ["selftest"]},
        "ssh": {"user": getpass.getuser(), "key": str(client_key), "port": port,
                "connect_timeout": 3, "command_timeout": 5},
        "bootstrap": {"enabled": False}}))
    env = {**os.environ, do_api.TOKEN_ENV: token, "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("PYTEST_ADDOPTS", None)
    log = (tmp_path / "run.log").open("wb")
    return subprocess.Popen([sys.executable, "-m", "pytest", "suites", "--inventory",
                             str(inventory), "--no-bootstrap", "-p", "no:cacheprovider",
                             "-q", "-x"],
                            cwd=project, env=env, stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True)


def finish(process: subprocess.Popen, timeout: float) -> int:
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
        raise


def wait_until(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def assert_no_token_left(project: Path, tmp_path: Path, token: str) -> None:
    for path in [tmp_path / "run.log", *(project / "reports").rglob("*")]:
        if path.is_file():
            assert token not in path.read_text(errors="replace"), path


def test_whole_run_creates_then_destroys(project_copy, run_fake, client_key, ssh_port, token,
                                         tmp_path):
    process = start_run(project_copy, run_fake, client_key, ssh_port, token, tmp_path)
    rc = finish(process, 120)
    output = (tmp_path / "run.log").read_text(errors="replace")
    assert rc == 1, output[-3000:]  # checks fail against sshd stand-ins; that is expected
    assert "k8sconf: destroying the cluster" in output
    assert len(run_fake.calls("POST", "/v2/droplets")) == 1
    assert run_fake.marker.exists()  # the checks did reach the droplets
    assert run_fake.count() == 0
    state = json.loads((project_copy / "reports" / "cluster" / "state.json").read_text())
    assert state["destroyed"] is True and "error" not in state
    assert_no_token_left(project_copy, tmp_path, token)


@pytest.mark.parametrize("phase", ["create", "checks"])
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_whole_run_interrupted_leaves_nothing(project_copy, run_fake, client_key, ssh_port,
                                              token, tmp_path, signum, phase):
    if phase == "create":
        run_fake.stick("coreos-")  # the run waits for 'active' until the signal
    process = start_run(project_copy, run_fake, client_key, ssh_port, token, tmp_path)
    try:
        if phase == "create":
            wait_until(lambda: run_fake.count() == 3, 60, "the droplets")
        else:
            wait_until(lambda: run_fake.marker.exists(), 60, "the first check")
        time.sleep(0.2)
        os.kill(process.pid, signum)
        rc = finish(process, 60)
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
    output = (tmp_path / "run.log").read_text(errors="replace")
    assert rc != 0, output[-3000:]
    assert run_fake.count() == 0, output[-3000:]
    assert run_fake.calls("DELETE", "/v2/droplets"), output[-3000:]
    assert_no_token_left(project_copy, tmp_path, token)
