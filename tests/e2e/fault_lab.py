"""The machinery the fault catalogue (tests/e2e/faults.py) acts with: SSH with sudo to
each node of its cluster (`Lab`), the node-side names faults use, and the snapshot of a
node's state that a fault's restore must give back."""
from __future__ import annotations

import json
import shlex
import subprocess
import time
from typing import Callable

from helpers import spec, workload
from helpers.node_facts import parse_show, start_order_violations

MASTER, MINION_A, MINION_B = "coreos-1", "coreos-2", "coreos-3"
NODES = (MASTER, MINION_A, MINION_B)
BACKUP = "/var/lib/k8sfault"            # node-side copies of what a fault replaces
DROP_IN = "k8sfault.conf"
FAILING_UNIT = "k8sfault-failing.service"
SECOND_API_UNIT = "k8sfault-api.service"
ETCD = "http://127.0.0.1:4001/v2/keys"
API = "http://127.0.0.1:8080/api/v1beta1"


# -- the machinery faults act with ---------------------------------------------------------

class FaultError(Exception):
    """A fault could not be applied or restored (not a check result)."""


class Lab:
    """SSH (sudo) to each node of the catalogue's cluster, plus what faults keep."""

    def __init__(self, cluster, inventory, connections, provider=None):
        self.cluster, self.inventory = cluster, inventory
        self.connections, self.provider = connections, provider
        self.saved: dict = {}

    def node(self, name: str):
        return self.cluster.node(name)

    def role(self, name: str) -> str:
        return self.node(name).role

    def sh(self, name: str, command: str, timeout: float = 120, check: bool = True):
        result = self.connections[name].run(command, sudo=True, timeout=timeout)
        if check and not result.ok:
            raise FaultError(str(result))
        return result

    def read(self, name: str, path: str) -> str:
        return self.sh(name, f"cat {shlex.quote(path)}").stdout

    def write(self, name: str, path: str, text: str, mode: int = 0o644) -> None:
        self.connections[name].put(text.encode(), path, mode=mode)

    def netns(self, name: str) -> str:
        return self.cluster.state["nodes"][name]["machine"]

    def host_in_netns(self, name: str, *argv: str) -> None:
        """Run a command on the host inside the node's network namespace."""
        proc = subprocess.run(["ip", "netns", "exec", self.netns(name), *argv],
                              capture_output=True, text=True, timeout=30)
        if proc.returncode:
            raise FaultError(f"{name}: `{' '.join(argv)}` in netns: {proc.stderr.strip()}")

    # -- systemd --------------------------------------------------------------------------
    def daemon_reload(self, name: str) -> None:
        self.sh(name, "systemctl daemon-reload")

    def restart_chain(self, name: str, unit: str) -> None:
        """Restart `unit` and every unit ordered after it (the guide's, and the declared
        deviations' own: docker-api-pin.service), in one transaction."""
        units = chain(self.role(name), unit,
                      "kubelet_docker_api" in self.inventory.deviations.declared())
        self.sh(name, "systemctl restart " + " ".join(units), timeout=180)

    def subnet_env(self, name: str) -> dict[str, str]:
        text = self.read(name, spec.SUBNET_ENV)
        return dict(line.split("=", 1) for line in text.split() if "=" in line)

    def etcd_get(self, key: str) -> str:
        out = self.sh(MASTER, f"curl -sf -m 5 {ETCD}{key}").stdout
        return json.loads(out)["node"]["value"]

    def etcd_set(self, key: str, value: str) -> None:
        self.sh(MASTER, f"curl -sf -m 5 -X PUT {ETCD}{key} --data-urlencode "
                        f"value={shlex.quote(value)} >/dev/null")

    def minion_ids(self) -> list[str]:
        out = self.sh(MASTER, f"curl -sf -m 5 {API}/minions").stdout
        return sorted(item["id"] for item in json.loads(out)["items"])

    def wait(self, what: str, probe: Callable[[], bool], timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not probe():
            if time.monotonic() > deadline:
                raise FaultError(f"not within {timeout:g} s: {what}")
            time.sleep(1)


def chain(role: str, unit: str, api_pin: bool = True) -> list[str]:
    """`unit` (if the guide puts it on this role, or etcd) and, transitively, every guide
    unit of the role whose After= names one of them; with the kubelet_docker_api
    deviation, its docker-api-pin.service too (Requires= docker: it stops with docker and
    nothing else starts it again)."""
    units = spec.units_for(role) + ((spec.DOCKER_API_PIN,) if api_pin else ())
    found = [unit]
    grew = True
    while grew:
        grew = False
        for u in units:
            if u.name not in found and any(dep in found for dep in u.after):
                found.append(u.name)
                grew = True
    return found


# -- snapshots: what restore must give back ----------------------------------------------

GUIDE_UNITS = " ".join(u.name for u in spec.UNITS)
API_PIN = spec.DOCKER_API_PIN.name     # the kubelet_docker_api deviation's unit
ORDER_PROPS = ("Id,InactiveExitTimestampMonotonic,InactiveEnterTimestampMonotonic,"
               "ActiveEnterTimestampMonotonic")
SNAPSHOT = f"""
echo '## unit files'; cd {spec.UNIT_DIR} && sha256sum *.service 2>/dev/null | sort
echo '## drop-ins'; find {spec.UNIT_DIR} -mindepth 2 -path '*.service.d/*' | sort
echo '## enabled'; ls {spec.UNIT_DIR}/{spec.WANTED_BY}.wants | sort
echo '## /opt/bin'; cd {spec.BIN_DIR} && sha256sum * | sort
echo '## subnet.env'; cat {spec.SUBNET_ENV}
echo '## active'; systemctl is-active etcd.service {GUIDE_UNITS} {API_PIN} {SECOND_API_UNIT} 2>&1
echo '## failed'; systemctl list-units --failed --plain --no-legend --no-pager
echo '## iptables'; iptables -S | grep -v -- '--dport {workload.CONTAINER_PORT} -j ACCEPT$' | sort
echo '## listening'; ss -Hltnp | awk '(!/"kube-proxy"/ || $4 ~ /:10249$/) && $4 !~ /:{workload.HOST_PORT}$/ {{print $4}}' | sort
echo '## docker0'; ip -4 -o addr show dev docker0 | awk '{{print $4}}'
echo '## containers'; docker ps --format '{{{{.Names}}}}' | grep -vc '^k8s_'"""
# the kubelet's own containers (k8s_*) come and go with the suite's pods: not counted, nor
# the hostPort their pods publish (its docker-proxy listener and its DOCKER chain rule);
# kube-proxy's portal listeners take a random port each time it (re)opens them: only its
# fixed 10249 is compared
SNAPSHOT += f"""
echo '## order'; systemctl show etcd.service {GUIDE_UNITS} -p {ORDER_PROPS}
"""
MASTER_SNAPSHOT = f"""
echo '## network config'; curl -s -m 5 {ETCD}{spec.NETWORK_CONFIG_KEY} | python3 -c \
  'import json,sys; print(json.load(sys.stdin)["node"]["value"])'
echo '## minions'; curl -s -m 5 {API}/minions | python3 -c \
  'import json,sys; print(sorted(i["id"] for i in json.load(sys.stdin)["items"]))'
"""


def snapshot(lab: Lab, name: str) -> dict[str, str]:
    """The node's state that faults change, by section; `order` is reduced to the list
    of start-order violations (the timestamps themselves change on every restart)."""
    script = SNAPSHOT + (MASTER_SNAPSHOT if lab.role(name) == spec.MASTER else "")
    out = lab.sh(name, script, timeout=60, check=False).stdout
    sections: dict[str, list[str]] = {}
    current = None
    for line in out.splitlines():
        if line.startswith("## "):
            current = line[3:]
            sections[current] = []
        elif current:
            sections[current].append(line)
    found = {k: "\n".join(v) for k, v in sections.items()}
    found["order"] = "\n".join(order_violations(lab.role(name), found.get("order", "")))
    return found


def order_violations(role: str, show: str) -> list[str]:
    """The suite's start-order rule (the same function), applied to `systemctl show`."""
    return start_order_violations(role, parse_show(show))


def differences(before: dict[str, str], after: dict[str, str]) -> list[str]:
    return [f"{key}: before {before.get(key)!r}, after {after.get(key)!r}"
            for key in sorted(set(before) | set(after)) if before.get(key) != after.get(key)]
