"""kube-apiserver stand-in: minions API stored in etcd, /healthz, /version, flag checks."""
import json
import signal
import socket
import subprocess

import pytest


def test_minion_round_trip_is_stored_in_etcd(etcd, apiserver):
    status, body = apiserver.call("POST", "/api/v1beta1/minions", {"id": "10.120.0.1", "kind": "Minion"})
    assert status == 201, body
    assert body["kind"] == "Minion" and body["id"] == "10.120.0.1"
    assert body["selfLink"] == "/api/v1beta1/minions/10.120.0.1"
    status, body = apiserver.call("POST", "/api/v1beta1/minions", {"id": "10.120.0.1", "kind": "Minion"})
    assert status == 409 and body["reason"] == "AlreadyExists", body
    assert apiserver.call("POST", "/api/v1beta1/minions", {"id": "10.120.0.2"})[0] == 201

    node = etcd.get("/registry/minions/10.120.0.1")
    assert json.loads(node["value"])["id"] == "10.120.0.1"

    status, body = apiserver.call("GET", "/api/v1beta1/minions")
    assert status == 200
    assert (body["kind"], body["apiVersion"]) == ("MinionList", "v1beta1")
    assert [(m["kind"], m["id"]) for m in body["items"]] == [("Minion", "10.120.0.1"), ("Minion", "10.120.0.2")]

    status, body = apiserver.call("GET", "/api/v1beta1/minions/10.120.0.2")
    assert status == 200 and body["id"] == "10.120.0.2"
    status, body = apiserver.call("DELETE", "/api/v1beta1/minions/10.120.0.2")
    assert status == 200 and body["status"] == "success"
    status, body = apiserver.call("GET", "/api/v1beta1/minions/10.120.0.2")
    assert status == 404 and body["kind"] == "Status" and body["reason"] == "NotFound"
    assert apiserver.call("DELETE", "/api/v1beta1/minions/10.120.0.2")[0] == 404
    assert apiserver.call("DELETE", "/api/v1beta1/minions/%2E%2E")[0] == 404  # no way out of the registry
    assert etcd.get("/registry/minions/10.120.0.2") is None
    assert [m["id"] for m in apiserver.call("GET", "/api/v1beta1/minions")[1]["items"]] == ["10.120.0.1"]
    apiserver.proc.wait_log(r"Created minion 10\.120\.0\.1")
    apiserver.proc.wait_log(r"POST /api/v1beta1/minions: \([0-9.]+ms\) 409")


def test_empty_minion_list(apiserver):
    status, body = apiserver.call("GET", "/api/v1beta1/minions")
    assert status == 200 and body["items"] == []


@pytest.mark.parametrize("body, code", [("not json", 400), ({"kind": "Minion"}, 422),
                                        ({"id": "a/b"}, 422), ({"id": "x", "kind": "Pod"}, 422)])
def test_bad_minion_is_refused(apiserver, body, code):
    status, answer = apiserver.call("POST", "/api/v1beta1/minions", body)
    assert status == code and answer["kind"] == "Status", answer
    assert apiserver.call("GET", "/api/v1beta1/minions")[1]["items"] == []


def test_healthz_version_and_root(tools, apiserver):
    assert tools.http("GET", apiserver.url + "/healthz") == (200, "ok")
    status, body = apiserver.call("GET", "/version")
    assert status == 200
    assert (body["major"], body["minor"], body["gitVersion"]) == ("0", "7", "v0.7.0-standin")
    status, body = apiserver.call("GET", "/")
    assert status == 200 and "/healthz" in body["paths"] and "/api/v1beta1/minions" in body["paths"]
    status, body = apiserver.call("GET", "/api/v1beta1/pods")
    assert status == 404 and body["kind"] == "Status"
    assert apiserver.call("PUT", "/api/v1beta1/minions")[0] == 405


def test_etcd_unreachable_gives_500(tools, spawn):
    dead = "http://127.0.0.1:%d" % tools.free_port()
    api = tools.start_apiserver(spawn, dead)
    status, text = tools.http("GET", api.url + "/healthz")
    assert status == 500 and text.startswith("etcd unreachable")
    status, body = api.call("GET", "/api/v1beta1/minions")
    assert status == 500 and body["kind"] == "Status" and "etcd unreachable" in body["message"]
    assert api.call("GET", "/version")[0] == 200
    assert api.proc.stop() == 0


def test_each_etcd_server_is_tried(tools, etcd, spawn):
    dead = "http://127.0.0.1:%d" % tools.free_port()
    api = tools.start_apiserver(spawn, dead + "," + etcd.url)
    assert tools.http("GET", api.url + "/healthz") == (200, "ok")
    assert api.call("GET", "/api/v1beta1/minions")[0] == 200


@pytest.mark.parametrize("value", ["", "banana", "10.100.0.0/33", "10.100.0.1/16", "fd00::/64"])
def test_invalid_portal_net_exits_2(tools, value):
    result = tools.run("kube-apiserver", "-etcd_servers=http://127.0.0.1:1", "-portal_net=" + value)
    assert result.returncode == 2
    assert 'invalid -portal_net "%s"' % value in result.stderr


def test_missing_etcd_servers_exits_2(tools):
    result = tools.run("kube-apiserver", "-portal_net=10.100.0.0/16")
    assert result.returncode == 2 and "-etcd_servers must be given" in result.stderr


def test_busy_port_exits_1(tools):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        result = tools.run("kube-apiserver", "-port=%d" % busy.getsockname()[1],
                           "-etcd_servers=http://127.0.0.1:1", "-portal_net=10.100.0.0/16")
    assert result.returncode == 1 and "Unable to listen" in result.stderr


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_exits_0(etcd, apiserver, sig):
    assert apiserver.proc.stop(sig) == 0
    assert "Received %s, exiting" % sig.name in apiserver.proc.log()


def test_port_0_disables_the_insecure_port(etcd, spawn):
    """Like the real --insecure-port=0: the process runs and listens nowhere."""
    proc = spawn("kube-apiserver", "-address=127.0.0.1", "-port=0",
                 "-etcd_servers=" + etcd.url, "-portal_net=10.100.0.0/16")
    proc.wait_log(r"the insecure port is disabled")
    listening = subprocess.run(["ss", "-Hltnp"], capture_output=True, text=True).stdout
    assert f"pid={proc.pid}," not in listening
    assert proc.stop() == 0
