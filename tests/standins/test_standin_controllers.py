"""kube-controller-manager, kube-scheduler and kube-proxy stand-ins."""


def minion_ids(api):
    status, body = api.call("GET", "/api/v1beta1/minions")
    return [m["id"] for m in body["items"]] if status == 200 else []


def test_controller_manager_registers_minions_when_api_comes_late(tools, etcd, spawn):
    etcd.delete("/registry/minions", recursive=True)
    port = tools.free_port()
    cm = spawn("kube-controller-manager", "-master=127.0.0.1:%d" % port,  # bare host:port
               "-machines=10.120.0.1,10.120.0.2")
    cm.wait_log(r"Failed to reach API server at http://127\.0\.0\.1:%d: .*; retrying" % port, count=2)
    api = tools.start_apiserver(spawn, etcd.url, port)
    tools.wait_until(lambda: minion_ids(api) == ["10.120.0.1", "10.120.0.2"], timeout=5,
                     what="both minions registered")
    cm.wait_log(r"Registered minion 10\.120\.0\.1")
    cm.wait_log(r"Registered minion 10\.120\.0\.2")
    # A deleted minion is registered again.
    assert api.call("DELETE", "/api/v1beta1/minions/10.120.0.2")[0] == 200
    tools.wait_until(lambda: minion_ids(api) == ["10.120.0.1", "10.120.0.2"], timeout=5,
                     what="the deleted minion to come back")
    cm.wait_log(r"Registered minion 10\.120\.0\.2", count=2)
    assert cm.stop() == 0


def test_controller_manager_with_guide_placeholder_machines_keeps_running(spawn, tools):
    cm = spawn("kube-controller-manager", "-master=http://127.0.0.1:%d" % tools.free_port(),
               "-machines=,,")
    cm.wait_log(r"Ignoring empty entries in -machines=,,")
    cm.wait_log(r"No machines given")
    assert cm.alive()
    assert cm.stop() == 0


def test_scheduler_without_api_logs_failures_and_keeps_running(spawn, tools):
    port = tools.free_port()
    sched = spawn("kube-scheduler", "-master=127.0.0.1:%d" % port)
    sched.wait_log(r"Failed to contact API server at http://127\.0\.0\.1:%d" % port, count=3)
    assert sched.alive()
    assert sched.stop() == 0


def test_scheduler_sees_a_healthy_api(spawn, tools, apiserver):
    sched = spawn("kube-scheduler", "-master", apiserver.url)
    sched.wait_log(r"API server at %s is healthy" % apiserver.url)
    assert sched.stop() == 0


def test_scheduler_needs_master(tools):
    result = tools.run("kube-scheduler")
    assert result.returncode == 2 and "-master must be given" in result.stderr


def test_proxy_connects_to_etcd_and_stays_up(spawn, etcd):
    proxy = spawn("kube-proxy", "-etcd_servers=" + etcd.url, "-logtostderr=true")
    proxy.wait_log(r"Connected to etcd at " + etcd.url)
    proxy.wait_log(r"v0.7.0-standin .* starting; etcd " + etcd.url)
    assert proxy.count("Failed") == 0
    assert proxy.alive()
    assert proxy.stop() == 0


def test_proxy_without_etcd_logs_and_stays_up(spawn, tools):
    dead = "http://127.0.0.1:%d" % tools.free_port()
    proxy = spawn("kube-proxy", "-etcd_servers=" + dead, "-logtostderr")
    proxy.wait_log(r"Failed to contact etcd: %s" % dead, count=2)
    assert proxy.alive()
    assert proxy.stop() == 0
