"""flannel stand-in: config from etcd, atomic subnet leases, subnet.env, host-gw routes."""
import json
import re
import signal
import threading
import urllib.error
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

NETWORK = '{"Network": "10.100.0.0/16"}'
LO_MTU = Path("/sys/class/net/lo/mtu").read_text().strip()
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def parse_env(path):
    return dict(line.split("=", 1) for line in path.read_text().splitlines())


def start_flannel(spawn, etcd, prefix, workdir, iface="127.0.0.2", *extra, **env):
    subnet_file = workdir / iface / "run" / "flannel" / "subnet.env"
    proc = spawn("flannel", "-iface=" + iface, "-etcd-endpoints=" + etcd.url,
                 "-etcd-prefix", prefix, "--subnet-file=%s" % subnet_file, *extra, **env)
    proc.subnet_file = subnet_file
    return proc


def wait_subnet(tools, proc):
    tools.wait_until(lambda: proc.subnet_file.exists() or not proc.alive(), timeout=10,
                     what="flannel to write %s" % proc.subnet_file)
    assert proc.alive(), proc.log()
    return parse_env(proc.subnet_file)


def lease_name(subnet_env_value):
    """'10.100.7.1/24' -> '10.100.7.0-24' (the etcd key name of the lease)."""
    addr, length = subnet_env_value.split("/")
    a, b, c, d = map(int, addr.split("."))
    return "%d.%d.%d.%d-%s" % (a, b, c, d - 1, length)


def test_writes_subnet_env_and_leases_with_ttl(tools, etcd, spawn, workdir, prefix):
    etcd.set(prefix + "/config", NETWORK)
    proc = start_flannel(spawn, etcd, prefix, workdir)
    env = wait_subnet(tools, proc)
    assert list(env) == ["FLANNEL_NETWORK", "FLANNEL_SUBNET", "FLANNEL_MTU", "FLANNEL_IPMASQ"]
    assert env["FLANNEL_NETWORK"] == "10.100.0.0/16"
    match = re.fullmatch(r"10\.100\.(\d+)\.1/24", env["FLANNEL_SUBNET"])
    assert match and 1 <= int(match.group(1)) <= 255, env
    assert env["FLANNEL_MTU"] == LO_MTU  # 127.0.0.2 lives on lo; host-gw subtracts nothing
    assert env["FLANNEL_IPMASQ"] == "false"
    leases = etcd.children(prefix + "/subnets")
    assert list(leases) == ["10.100.%s.0-24" % match.group(1)]
    node = leases["10.100.%s.0-24" % match.group(1)]
    assert json.loads(node["value"]) == {"PublicIP": "127.0.0.2"}
    assert 86000 < node["ttl"] <= 86400
    proc.wait_log(r"Subnet lease acquired: 10\.100\.%s\.0/24" % match.group(1))
    assert sorted(p.name for p in proc.subnet_file.parent.iterdir()) == ["subnet.env"]
    assert oct(proc.subnet_file.stat().st_mode & 0o777) == "0o644"
    assert proc.stop() == 0


class SabotagingEtcdProxy:
    """Forwards to etcd and records requests; the first lease create is pre-empted by
    another node's lease, so the stand-in must get 412 and pick another subnet."""

    def __init__(self, etcd):
        self.requests: list[tuple[str, str, str]] = []
        self.sabotaged: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                outer.requests.append((self.command, self.path, body.decode()))
                parts = urllib.parse.urlsplit(self.path)
                query = urllib.parse.parse_qs(parts.query)
                if (self.command == "PUT" and "/subnets/" in parts.path and not outer.sabotaged
                        and query.get("prevExist") == ["false"]):
                    key = urllib.parse.unquote(parts.path[len("/v2/keys"):])
                    etcd.set(key, '{"PublicIP":"10.9.9.9"}', prevExist="false", ttl=600)
                    outer.sabotaged.append(key)
                req = urllib.request.Request(etcd.url + self.path, data=body or None,
                                             method=self.command)
                if body:
                    req.add_header("Content-Type", self.headers["Content-Type"])
                try:
                    with OPENER.open(req, timeout=5) as resp:
                        status, data = resp.status, resp.read()
                except urllib.error.HTTPError as e:
                    status, data = e.code, e.read()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_PUT = do_DELETE = do_POST = do_GET

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = "http://127.0.0.1:%d" % self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def test_lease_is_an_atomic_create_and_a_conflict_picks_another(tools, etcd, spawn, workdir, prefix):
    etcd.set(prefix + "/config", NETWORK)
    proxy = SabotagingEtcdProxy(etcd)
    try:
        proc = start_flannel(spawn, proxy, prefix, workdir)
        env = wait_subnet(tools, proc)
    finally:
        proxy.close()
    assert len(proxy.sabotaged) == 1
    taken = proxy.sabotaged[0].rsplit("/", 1)[-1]
    proc.wait_log(r"was taken concurrently; trying another")
    mine = lease_name(env["FLANNEL_SUBNET"])
    assert mine != taken
    leases = etcd.children(prefix + "/subnets")
    assert json.loads(leases[taken]["value"]) == {"PublicIP": "10.9.9.9"}  # not overwritten
    assert json.loads(leases[mine]["value"]) == {"PublicIP": "127.0.0.2"}
    creates = [(urllib.parse.urlsplit(path), body) for method, path, body in proxy.requests
               if method == "PUT" and "/subnets/" in path]
    assert len(creates) == 2
    for url, body in creates:
        assert urllib.parse.parse_qs(url.query) == {"prevExist": ["false"], "ttl": ["86400"]}
        assert urllib.parse.parse_qs(body) == {"value": ['{"PublicIP":"127.0.0.2"}']}
    assert proc.stop() == 0


def test_restart_reuses_the_same_lease(tools, etcd, spawn, workdir, prefix):
    etcd.set(prefix + "/config", NETWORK)
    first = start_flannel(spawn, etcd, prefix, workdir)
    subnet = wait_subnet(tools, first)["FLANNEL_SUBNET"]
    assert first.stop() == 0
    first.subnet_file.unlink()
    second = start_flannel(spawn, etcd, prefix, workdir)
    assert wait_subnet(tools, second)["FLANNEL_SUBNET"] == subnet
    second.wait_log(r"Found lease \(%s\) for current IP \(127\.0\.0\.2\), reusing"
                    % re.escape(lease_name(subnet).replace("-", "/")))
    assert list(etcd.children(prefix + "/subnets")) == [lease_name(subnet)]
    assert second.stop(signal.SIGINT) == 0


def test_two_nodes_get_distinct_subnets_and_host_gw_routes(tools, etcd, spawn, workdir, prefix):
    etcd.set(prefix + "/config", NETWORK)
    a = start_flannel(spawn, etcd, prefix, workdir, "127.0.0.2")
    b = start_flannel(spawn, etcd, prefix, workdir, "127.0.0.3")
    net_a = lease_name(wait_subnet(tools, a)["FLANNEL_SUBNET"]).replace("-", "/")
    net_b = lease_name(wait_subnet(tools, b)["FLANNEL_SUBNET"]).replace("-", "/")
    assert net_a != net_b
    tools.wait_until(lambda: "route replace %s via 127.0.0.3" % net_b in a.ip_calls(),
                     what="a route to b's subnet", timeout=5)
    tools.wait_until(lambda: "route replace %s via 127.0.0.2" % net_a in b.ip_calls(),
                     what="a route to a's subnet", timeout=5)
    assert not any(net_a in call for call in a.ip_calls()), "a routed its own subnet"
    # Docker's FORWARD policy is DROP: flannel appends ACCEPT rules for its network
    for direction in ("-s", "-d"):
        rule = f"-A FORWARD {direction} 10.100.0.0/16 -j ACCEPT"
        tools.wait_until(lambda rule=rule: rule in a.ip_calls(),
                         what=f"a FORWARD {direction} rule", timeout=5)
    # b goes away and its lease vanishes (as when its TTL runs out): a drops the route.
    assert b.stop() == 0
    etcd.delete(prefix + "/subnets/" + net_b.replace("/", "-"))
    tools.wait_until(lambda: "route del %s via 127.0.0.3" % net_b in a.ip_calls(),
                     what="a to delete the route to b's subnet", timeout=5)
    a.wait_log(r"Removed route to %s via 127\.0\.0\.3" % re.escape(net_b))
    assert a.alive()
    assert a.stop() == 0


def test_failing_route_command_is_logged_and_flannel_keeps_running(tools, etcd, spawn, workdir, prefix):
    etcd.set(prefix + "/config", NETWORK)
    etcd.set(prefix + "/subnets/10.100.200.0-24", '{"PublicIP":"127.0.0.9"}', ttl=600)
    proc = start_flannel(spawn, etcd, prefix, workdir, STANDIN_FLANNEL_IP_CMD="/bin/false")
    wait_subnet(tools, proc)
    proc.wait_log(r"Failed to add route to 10\.100\.200\.0/24 via 127\.0\.0\.9")
    assert proc.stop() == 0
    assert proc.count("Failed to add route") == 1  # retried quietly, logged once


def test_lost_own_lease_is_acquired_again(tools, etcd, spawn, workdir, prefix):
    etcd.set(prefix + "/config", NETWORK)
    proc = start_flannel(spawn, etcd, prefix, workdir)
    key = prefix + "/subnets/" + lease_name(wait_subnet(tools, proc)["FLANNEL_SUBNET"])
    etcd.delete(key)
    proc.wait_log(r"Lease .* is gone; acquiring a new one")
    proc.wait_log(r"Subnet lease acquired", count=2)
    leases = etcd.children(prefix + "/subnets")
    assert [json.loads(n["value"])["PublicIP"] for n in leases.values()] == ["127.0.0.2"]
    new = lease_name(parse_env(proc.subnet_file)["FLANNEL_SUBNET"])
    assert list(leases) == [new]
    assert proc.stop() == 0


def test_waits_for_config_and_tries_each_endpoint(tools, etcd, spawn, workdir, prefix):
    dead = "http://127.0.0.1:%d" % tools.free_port()
    subnet_file = workdir / "subnet.env"
    proc = spawn("flannel", "-iface=127.0.0.2", "-etcd-endpoints=%s,%s" % (dead, etcd.url),
                 "-etcd-prefix=" + prefix, "-subnet-file=%s" % subnet_file)
    proc.wait_log(r"Failed to retrieve network config: Key not found", count=2)
    etcd.set(prefix + "/config", "{not json")
    proc.wait_log(r"Invalid network config at %s/config" % re.escape(prefix))
    assert not subnet_file.exists()
    etcd.set(prefix + "/config", NETWORK)
    tools.wait_until(subnet_file.exists, timeout=5, what="subnet.env")
    assert proc.stop() == 0


def test_unreachable_etcd_is_logged_and_retried(spawn, workdir, tools, prefix):
    dead = "http://127.0.0.1:%d" % tools.free_port()
    proc = spawn("flannel", "-iface=127.0.0.2", "-etcd-endpoints=" + dead,
                 "-etcd-prefix=" + prefix, "-subnet-file=%s" % (workdir / "subnet.env"))
    proc.wait_log(r"Failed to retrieve network config: etcd unreachable", count=2)
    assert proc.stop() == 0


def test_subnet_len_and_ip_masq_are_honoured(tools, etcd, spawn, workdir, prefix):
    etcd.set(prefix + "/config", '{"Network": "10.101.0.0/16", "SubnetLen": 28}')
    proc = start_flannel(spawn, etcd, prefix, workdir, "127.0.0.2", "-ip-masq")
    env = wait_subnet(tools, proc)
    match = re.fullmatch(r"10\.101\.(\d+)\.(\d+)/28", env["FLANNEL_SUBNET"])
    assert match and (int(match.group(2)) - 1) % 16 == 0, env
    assert env["FLANNEL_NETWORK"] == "10.101.0.0/16"
    assert env["FLANNEL_IPMASQ"] == "true"
    assert list(etcd.children(prefix + "/subnets")) == [lease_name(env["FLANNEL_SUBNET"])]
    assert lease_name(env["FLANNEL_SUBNET"]).endswith("-28")
    assert proc.stop() == 0


def test_subnet_min_max_are_honoured_and_exhaustion_is_survived(tools, etcd, spawn, workdir, prefix):
    etcd.set(prefix + "/config", json.dumps(
        {"Network": "10.102.0.0/16", "SubnetMin": "10.102.7.0", "SubnetMax": "10.102.7.0"}))
    a = start_flannel(spawn, etcd, prefix, workdir, "127.0.0.2", "-ip-masq=false")
    assert wait_subnet(tools, a)["FLANNEL_SUBNET"] == "10.102.7.1/24"
    b = start_flannel(spawn, etcd, prefix, workdir, "127.0.0.3")
    b.wait_log(r"no free subnet left in 10\.102\.0\.0/16", count=2)
    assert not b.subnet_file.exists()
    assert json.loads(etcd.get(prefix + "/subnets/10.102.7.0-24")["value"]) == {"PublicIP": "127.0.0.2"}
    assert b.stop() == 0
    assert a.stop() == 0


def test_lease_is_renewed(tools, etcd, spawn, workdir, prefix):
    etcd.set(prefix + "/config", NETWORK)
    proc = start_flannel(spawn, etcd, prefix, workdir, STANDIN_FLANNEL_LEASE_TTL="2")
    key = prefix + "/subnets/" + lease_name(wait_subnet(tools, proc)["FLANNEL_SUBNET"])
    created = etcd.get(key)["createdIndex"]
    proc.wait_log(r"Lease .* renewed \(ttl 2s\)", count=2, timeout=6)
    node = etcd.get(key)
    assert node is not None and node["createdIndex"] == created  # refreshed, never expired
    assert node["ttl"] <= 2
    assert proc.count("Subnet lease acquired") == 1
    assert proc.stop() == 0


def test_iface_by_name(tools, etcd, spawn, workdir, prefix):
    etcd.set(prefix + "/config", NETWORK)
    proc = start_flannel(spawn, etcd, prefix, workdir, "lo")
    env = wait_subnet(tools, proc)
    assert env["FLANNEL_MTU"] == LO_MTU
    node = etcd.get(prefix + "/subnets/" + lease_name(env["FLANNEL_SUBNET"]))
    assert json.loads(node["value"]) == {"PublicIP": "127.0.0.1"}
    proc.wait_log(r"Using interface lo with address 127\.0\.0\.1")
    assert proc.stop() == 0


def test_invalid_iface_exits_2(tools):
    result = tools.run("flannel", "-iface=eth0; rm -rf /", "-etcd-endpoints=http://127.0.0.1:1")
    assert result.returncode == 2
    assert "invalid -iface" in result.stderr


def test_unknown_interface_name_fails(tools):
    result = tools.run("flannel", "-iface=nosuchdev0", "-etcd-endpoints=http://127.0.0.1:1")
    assert result.returncode == 1
    assert "nosuchdev0" in result.stderr
