"""The fault catalogue, as data: for each fault, how to apply it to a bootstrapped local
cluster, how to undo it, and exactly which conformance checks must then fail on which
node (test ids as the JUnit report names them, e.g.
``test_unit_dependencies_match_the_guide[coreos-2-kubelet-Wants]``).

tests/e2e/test_fault_catalogue.py applies each fault, runs the whole conformance suite
against the cluster, and asserts that exactly these checks fail (each message starting
with its node's name) and nothing else does; then it restores and verifies the node.
Faults whose scopes (the nodes whose checks they may fail) are disjoint share a suite
run (``plan_rounds``): every failing check is then attributed by its node to exactly one
fault of the run.

Ground rules of every fault here:
- apply and restore act over SSH (``Lab.sh``, always with sudo) or, for the hung node,
  from the host inside the node's own network namespace; never beyond the cluster.
- a unit that must be restarted is restarted *with every unit ordered after it*
  (``Lab.restart_chain``) in one systemd transaction, so the start order since boot
  stays the guide's and only the intended checks fail (the control
  ``control-docker-restarted-alone`` shows why).
- ``restore`` returns the node to the state ``snapshot`` took before ``apply``; the
  test compares the two.
- a ``control`` is no fault: a routine operation after which no check may fail.
"""
from __future__ import annotations

import json
import shlex
import subprocess
import time
from dataclasses import dataclass, field
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


# -- building blocks of faults --------------------------------------------------------------

def unit_path(unit: str) -> str:
    return f"{spec.UNIT_DIR}/{unit}"


def drop_in_path(unit: str) -> str:
    return f"{spec.UNIT_DIR}/{unit}.d/{DROP_IN}"


def rewrite_unit_file(node: str, unit: str, edit: Callable[[str], str]):
    """Rewrite the unit file through `edit` (text -> text; FaultError when it does not
    apply); daemon-reload. Restore writes the saved text back."""
    def apply(lab: Lab):
        text = lab.read(node, unit_path(unit))
        edited = edit(text)
        lab.saved[(node, unit)] = text
        lab.write(node, unit_path(unit), edited)
        lab.daemon_reload(node)

    def restore(lab: Lab):
        lab.write(node, unit_path(unit), lab.saved.pop((node, unit)))
        lab.daemon_reload(node)
    return apply, restore


def edit_unit_file(node: str, unit: str, old: str, new: str | None):
    """Replace (or, with new=None, delete) a line of the unit file."""
    def edit(text: str) -> str:
        lines = text.split("\n")
        if old not in lines:
            raise FaultError(f"{node}: {unit} has no line {old!r}")
        replacement = [] if new is None else [new]
        return "\n".join(part for line in lines
                         for part in (replacement if line == old else [line]))
    return rewrite_unit_file(node, unit, edit)


def replace_in_unit_file(node: str, unit: str, old: str, new: str):
    """Replace a substring of the unit file (the file text is what some checks read)."""
    def edit(text: str) -> str:
        if old not in text:
            raise FaultError(f"{node}: {unit} has no {old!r}")
        return text.replace(old, new)
    return rewrite_unit_file(node, unit, edit)


def commands(node: str, do: str, undo: str):
    """A fault that is one shell command on the node, undone by another."""
    def apply(lab: Lab):
        lab.sh(node, do)

    def restore(lab: Lab):
        lab.sh(node, undo)
    return apply, restore


def drop_in(node: str, unit: str, body: str | Callable[[Lab], str], restart: bool):
    """A drop-in ([Service] lines) for the unit; daemon-reload; restart the unit and its
    dependents if asked (restore does the same without the drop-in)."""
    def apply(lab: Lab):
        text = body(lab) if callable(body) else body
        lab.write(node, drop_in_path(unit), "[Service]\n" + text.strip() + "\n")
        lab.daemon_reload(node)
        if restart:
            lab.restart_chain(node, unit)

    def restore(lab: Lab):
        lab.sh(node, f"rm -f {drop_in_path(unit)} && rmdir --ignore-fail-on-non-empty "
                     f"{spec.UNIT_DIR}/{unit}.d")
        lab.daemon_reload(node)
        if restart:
            lab.restart_chain(node, unit)
    return apply, restore


def exec_start(lab: Lab, node: str, unit: str, **flags: str) -> str:
    """The guide's ExecStart line for the unit on this node, with flags replaced
    (`-name=value` or `--name=value`); as a drop-in that resets ExecStart first."""
    from helpers.bootstrap.units import node_values
    values = node_values(lab.inventory, [n.private_ip for n in lab.cluster.nodes],
                         lab.node(node).private_ip)
    words = spec.unit(unit).exec_start.line(values).split(" ")
    for flag, value in flags.items():
        for i, word in enumerate(words):
            dashes = word[:len(word) - len(word.lstrip("-"))]
            if dashes and word.lstrip("-").split("=", 1)[0] == flag:
                words[i] = f"{dashes}{flag}={value}"
                break
        else:
            raise FaultError(f"{unit} has no flag {flag}")
    return "ExecStart=\nExecStart=" + " ".join(words)


def stop_unit(node: str, unit: str, *, ignore_dependencies: bool = False):
    """Stop a unit; restore starts it again with every unit ordered after it."""
    mode = " --job-mode=ignore-dependencies" if ignore_dependencies else ""

    def apply(lab: Lab):
        lab.sh(node, f"systemctl stop{mode} {unit}", timeout=120)

    def restore(lab: Lab):
        lab.restart_chain(node, unit)
    return apply, restore


def move_file(node: str, path: str, to: str, *, reload: bool = False):
    def apply(lab: Lab):
        lab.sh(node, f"mkdir -p $(dirname {to}) && mv {path} {to}")
        if reload:
            lab.daemon_reload(node)

    def restore(lab: Lab):
        lab.sh(node, f"mv {to} {path}")
        if reload:
            lab.daemon_reload(node)
    return apply, restore


def rewrite_subnet_env(node: str, change: Callable[[Lab, dict], dict], restart_docker: bool):
    def apply(lab: Lab):
        lab.saved[(node, "subnet.env")] = lab.read(node, spec.SUBNET_ENV)
        env = change(lab, lab.subnet_env(node))
        lab.write(node, spec.SUBNET_ENV, "".join(f"{k}={v}\n" for k, v in env.items()))
        if restart_docker:
            lab.restart_chain(node, spec.DOCKER)

    def restore(lab: Lab):
        lab.write(node, spec.SUBNET_ENV, lab.saved.pop((node, "subnet.env")))
        if restart_docker:
            lab.restart_chain(node, spec.DOCKER)
    return apply, restore


def binary_wrapper(node: str, binary: str, script: str):
    """Replace /opt/bin/<binary> by a shell script (`{real}`: the real one, kept aside),
    moved over it: a running executable cannot be written ("Text file busy")."""
    path, real = f"{spec.BIN_DIR}/{binary}", f"{BACKUP}/{binary}.real"
    tmp = f"{path}.k8sfault"

    def apply(lab: Lab):
        lab.sh(node, f"mkdir -p {BACKUP} && cp -a {path} {real}")
        lab.write(node, tmp, f"#!/bin/sh\n# k8sfault: a wrapped {binary}\n"
                             + script.format(real=real), mode=0o755)
        lab.sh(node, f"mv {tmp} {path}")

    def restore(lab: Lab):
        lab.sh(node, f"cp -a {real} {tmp} && mv {tmp} {path} && rm -f {real}")
    return apply, restore


def version_wrapper(node: str, binary: str, version: str):
    """/opt/bin/<binary> whose -version prints another release; otherwise the real one."""
    return binary_wrapper(node, binary, f'case " $* " in *" -version "*) echo "{version}"; '
                                        'exit 0;; esac\nexec "{real}" "$@"\n')


# -- the faults one by one (those needing more than a building block) -----------------------

def _unused_subnet(lab: Lab) -> str:
    """A /24 inside the flannel network that no node leases."""
    out = lab.sh(MASTER, f"curl -sf -m 5 {ETCD}{spec.SUBNETS_KEY}").stdout
    leased = {n["key"].rsplit("/", 1)[1].split("-")[0] for n in json.loads(out)["node"]["nodes"]}
    for third in range(254, 0, -1):
        if f"10.100.{third}.0" not in leased:
            return f"10.100.{third}.1/24"
    raise FaultError("no unused /24 in the flannel network")


def minion_unregistered():
    victim = MINION_B

    def apply(lab: Lab):
        lab.sh(MASTER, "systemctl stop controller-manager.service")
        ip = lab.node(victim).private_ip
        lab.sh(MASTER, f"curl -sf -m 5 -X DELETE {API}/minions/{ip} >/dev/null")
        if ip in lab.minion_ids():
            raise FaultError(f"{victim} is still registered")

    def restore(lab: Lab):
        lab.restart_chain(MASTER, "controller-manager.service")
        wanted = sorted(n.private_ip for n in lab.cluster.nodes)
        lab.wait("every minion registered again", lambda: lab.minion_ids() == wanted)
    return apply, restore


def network_config_changed():
    key = spec.NETWORK_CONFIG_KEY

    def apply(lab: Lab):
        lab.saved["network config"] = lab.etcd_get(key)
        lab.etcd_set(key, '{"Network": "10.200.0.0/16"}')

    def restore(lab: Lab):
        lab.etcd_set(key, lab.saved.pop("network config"))
    return apply, restore


def append_byte(node: str, binary: str):
    """One byte more in /opt/bin/<binary>, through a copy moved over it: the real binary
    runs, and a running executable cannot be written ("Text file busy")."""
    path = f"{spec.BIN_DIR}/{binary}"
    tmp = f"{path}.k8sfault"
    return commands(node, f"cp -a {path} {tmp} && printf '\\n' >> {tmp} && mv {tmp} {path}",
                    f"cp -a {path} {tmp} && truncate -s -1 {tmp} && mv {tmp} {path}")


def failed_oneshot(node: str):
    def apply(lab: Lab):
        lab.sh(node, f"systemd-run --unit={FAILING_UNIT} -p Type=oneshot /bin/false",
               check=False)
        lab.wait(f"{FAILING_UNIT} failed", lambda: lab.sh(
            node, f"systemctl is-failed {FAILING_UNIT}", check=False).stdout.strip() == "failed")

    def restore(lab: Lab):
        lab.sh(node, f"systemctl reset-failed {FAILING_UNIT}")
    return apply, restore


def kubelet_started_before_docker(node: str):
    """A real start-order violation: kubelet started while docker was down, docker later."""
    def apply(lab: Lab):
        lab.sh(node, "systemctl stop kubelet.service docker.service && "
                     "systemctl start --job-mode=ignore-dependencies kubelet.service && "
                     f"sleep 1 && systemctl start docker.service {API_PIN}")

    def restore(lab: Lab):
        lab.restart_chain(node, spec.DOCKER)
    return apply, restore


def restart_alone(node: str, unit: str):
    def apply(lab: Lab):
        lab.sh(node, f"systemctl restart {unit}", timeout=120)

    def restore(lab: Lab):
        lab.restart_chain(node, unit)
    return apply, restore


def crashed_once(node: str, unit: str):
    """The unit's main process killed: Restart=on-failure brings it back 5 s later, active
    again; restore restarts it on purpose, which zeroes systemd's restart counter."""
    def show(lab: Lab, prop: str) -> str:
        return lab.sh(node, f"systemctl show -p {prop} --value {unit}").stdout.strip()

    def apply(lab: Lab):
        lab.sh(node, f"systemctl kill -s KILL --kill-whom=main {unit}")
        lab.wait(f"{unit} restarted by systemd", lambda: show(lab, "NRestarts") == "1"
                 and show(lab, "ActiveState") == "active", timeout=60)

    def restore(lab: Lab):
        lab.restart_chain(node, unit)
    return apply, restore


def etcd_advertises(node: str, which: str):
    """etcd restarted (alone: nothing that Requires= it follows) with its client URLs on
    the node's `which` address instead of the private one."""
    defaults = "/etc/default/etcd"

    def restart(lab: Lab):
        lab.sh(node, "systemctl restart --job-mode=ignore-dependencies etcd.service")
        lab.wait("etcd healthy again", lambda: '"true"' in lab.sh(
            node, "curl -s -m 3 http://127.0.0.1:4001/health", check=False).stdout)

    def apply(lab: Lab):
        ip_ = getattr(lab.node(node), f"{which}_ip")
        lab.sh(node, f"mkdir -p {BACKUP} && cp -a {defaults} {BACKUP}/etcd && sed -i "
                     f"'s|^ETCD_ADVERTISE_CLIENT_URLS=.*|ETCD_ADVERTISE_CLIENT_URLS="
                     f"http://{ip_}:2379,http://{ip_}:4001|' {defaults}")
        restart(lab)

    def restore(lab: Lab):
        lab.sh(node, f"mv {BACKUP}/etcd {defaults}")
        restart(lab)
    return apply, restore


def etcd_only_as_etcd_member(node: str):
    """As on Flatcar: etcd runs as etcd-member.service and there is no etcd.service. It is
    stopped alone (nothing that Requires= it follows) and started under the other name
    with the same settings: the unit's `/etc/default/%p` names its file by the unit's name."""
    unit = "/usr/lib/systemd/system/etcd.service"
    member = f"{spec.UNIT_DIR}/{spec.FLATCAR_ETCD}"

    def start(lab: Lab, name: str):
        lab.sh(node, f"systemctl start --job-mode=ignore-dependencies {name}")
        lab.wait("etcd healthy again", lambda: '"true"' in lab.sh(
            node, "curl -s -m 3 http://127.0.0.1:4001/health", check=False).stdout)

    def apply(lab: Lab):
        lab.sh(node, "systemctl stop --job-mode=ignore-dependencies etcd.service")
        lab.sh(node, f"mkdir -p {BACKUP} && sed 's|/etc/default/%p|/etc/default/etcd|' "
                     f"{unit} > {member} && mv {unit} {BACKUP}/etcd.service")
        lab.daemon_reload(node)
        start(lab, spec.FLATCAR_ETCD)

    def restore(lab: Lab):
        lab.sh(node, f"systemctl stop --job-mode=ignore-dependencies {spec.FLATCAR_ETCD}")
        lab.sh(node, f"rm {member} && mv {BACKUP}/etcd.service {unit}")
        lab.daemon_reload(node)
        start(lab, "etcd.service")
    return apply, restore


def master_unit_on_minion(node: str, unit: str):
    def apply(lab: Lab):
        lab.write(node, unit_path(unit), lab.read(MASTER, unit_path(unit)))
        lab.daemon_reload(node)

    def restore(lab: Lab):
        lab.sh(node, f"rm -f {unit_path(unit)}")
        lab.daemon_reload(node)
    return apply, restore


def second_api_on_minion(node: str):
    """What the advisory asks for on a minion: an API at 127.0.0.1:8080 there."""
    def apply(lab: Lab):
        lab.sh(node, f"systemd-run --unit={SECOND_API_UNIT} /opt/bin/kube-apiserver "
                     "-address=127.0.0.1 -port=8080 -etcd_servers=http://127.0.0.1:4001 "
                     "-portal_net=10.100.0.0/16 -logtostderr=true")
        lab.wait("the minion's API answers", lambda: lab.sh(
            node, "curl -s -m 3 http://127.0.0.1:8080/healthz", check=False).stdout == "ok")

    def restore(lab: Lab):
        lab.sh(node, f"systemctl stop {SECOND_API_UNIT}")
    return apply, restore


def unit_enabled(node: str, unit: str, enabled: bool):
    return commands(node, f"systemctl {'enable' if enabled else 'disable'} {unit}",
                    f"cd {spec.UNIT_DIR} && systemctl {'disable' if enabled else 'enable'} {unit}")


def forward_accept_removed(node: str):
    """Undo the deviation docker_forward_accept on a node: delete the two FORWARD ACCEPT
    rules docker.service's ExecStartPost inserted; restore inserts them as it does."""
    net = spec.DEFAULTS["flannel_network"]
    rules = [f"FORWARD {d} {net} -j ACCEPT" for d in ("-s", "-d")]
    return commands(node, " && ".join(f"iptables -w -D {r}" for r in rules),
                    " && ".join(f"iptables -w -I {r}" for r in rules))


def pause_image_unlabelled(node: str):
    """kubernetes/pause:latest as a pull would leave it: the same build/pause, imported
    without our preload label; the preload is kept aside under another tag."""
    aside = "k8sfault/pause:preload"
    return commands(
        node, f"docker tag {spec.PAUSE_IMAGE} {aside} && docker rmi {spec.PAUSE_IMAGE} && "
              f"docker import -c 'CMD [\"/pause\"]' {spec.DEVIATION_DIR}/pause.tar "
              f"{spec.PAUSE_IMAGE} >/dev/null",
        f"docker tag {aside} {spec.PAUSE_IMAGE} && docker rmi {aside} >/dev/null")


PINNED_SOCKET_UNIT = "k8sfault-docker-sock-pin.service"


def docker_socket_pinned(node: str):
    """What would fix the start-request advisory: Docker's own socket serves unversioned
    requests as API v1.15 (a docker-api-pin in front of the daemon's socket, moved aside)."""
    sock, aside = spec.DOCKER_SOCKET, f"{spec.DOCKER_SOCKET}.k8sfault"
    return commands(
        node, f"mv {sock} {aside} && systemd-run --unit={PINNED_SOCKET_UNIT} "
              f"{spec.DEVIATION_DIR}/docker-api-pin -listen {sock} -docker {aside} "
              f"-api-version 1.15 && for i in $(seq 50); do [ -S {sock} ] && break; "
              "sleep 0.1; done && docker version >/dev/null",
        f"systemctl stop {PINNED_SOCKET_UNIT}; rm -f {sock} && mv {aside} {sock} && "
        "docker version >/dev/null")


def forward_drop(node: str):
    rule = f"FORWARD -s {spec.DEFAULTS['flannel_network']} -j DROP"
    return commands(node, f"iptables -I {rule}", f"iptables -D {rule}")


HUNG_RULES = (("INPUT", "--dport"), ("OUTPUT", "--sport"))


def hung_ssh(node: str):
    """The node stops answering SSH mid-run: once the suite's SSH connection to it is up,
    every tcp/22 packet on its public interface is dropped (in both directions), from the
    host, inside the node's network namespace. Everything else on the node keeps running."""
    def rule(chain_, port_flag, action):
        iface = "-i" if chain_ == "INPUT" else "-o"
        return ("iptables", action, chain_, iface, "eth0", "-p", "tcp", port_flag, "22",
                "-j", "DROP")

    def apply(lab: Lab):
        lab.connections[node].close()   # ours must not be the connection the watcher sees

    def during(lab: Lab, proc) -> str:
        """Wait for the suite's connection to the node, then cut it; returns what it saw."""
        host = lab.node(node).ssh_host
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline:
            ss = subprocess.run(["ss", "-Htnp", "state", "established", "dst", host,
                                 "dport", "=", ":22"], capture_output=True, text=True).stdout
            if f"pid={proc.pid}," in ss:
                time.sleep(0.5)   # the facts script is now running on the node
                for chain_, flag in HUNG_RULES:
                    lab.host_in_netns(node, *rule(chain_, flag, "-I"))
                lab.saved[(node, "hung")] = True
                return "cut an established connection"
            time.sleep(0.05)
        raise FaultError(f"the suite never connected to {node}")

    def restore(lab: Lab):
        if lab.saved.pop((node, "hung"), False):
            for chain_, flag in HUNG_RULES:
                lab.host_in_netns(node, *rule(chain_, flag, "-D"))
        lab.connections[node].close()
        # the suite could not remove the probe container it started there
        lab.sh(node, "docker ps -aq --filter name=k8sconf-probe- | xargs -r docker rm -f")
    return apply, restore, during


# -- the catalogue ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Fault:
    name: str
    what: str
    apply: Callable[[Lab], None]
    restore: Callable[[Lab], None]
    expected: tuple[str, ...] = ()
    touches: tuple[str, ...] = ()       # nodes it changes: snapshotted and compared
    all_checks_of: str | None = None    # every check of this node must fail, except:
    except_: tuple[str, ...] = ()
    during: Callable | None = None      # called with (lab, suite process) while it runs
    inventory: dict = field(default_factory=dict)   # overrides for the suite's inventory
    slow: bool = False                  # a registration check waits its DEADLINE
    control: bool = False               # no fault: a routine operation, nothing may fail
    note: str = ""
    # check -> a text its failure message must contain (what the fault is known by)
    message: dict = field(default_factory=dict)

    @property
    def alone(self) -> bool:
        """Needs a suite run of its own (own inventory, or acts during the run)."""
        return bool(self.during or self.inventory)

    def scope(self) -> set[str]:
        """The nodes whose checks this fault may fail: failures there are its own."""
        nodes = set(self.touches) | {node for check in self.expected
                                     if (node := node_of(check)) is not None}
        if self.all_checks_of:
            nodes.add(self.all_checks_of)
        return nodes


def node_of(check: str) -> str | None:
    """The node a check id is about: the first node name in its parameters."""
    params = check.partition("[")[2].removesuffix("]")
    return next((n for n in NODES if params == n or params.startswith(n + "-")), None)


def plan_rounds(faults: list[Fault], one_by_one: bool = False) -> list[list[Fault]]:
    """Group faults into suite runs: faults whose scopes (nodes) are disjoint share a run,
    so that every failing check is attributed to exactly one fault by its node. Slow
    faults (a run that waits out the workload's or the registration's deadline) are
    placed first, so that they share runs with each other rather than slow down many."""
    rounds: list[list[Fault]] = []
    for fault in sorted(faults, key=lambda f: not f.slow):
        for batch in ([] if one_by_one or fault.alone else rounds):
            if not any(f.alone for f in batch) and all(
                    not (f.scope() & fault.scope()) for f in batch):
                batch.append(fault)
                break
        else:
            rounds.append([fault])
    return rounds


def t(check: str, *params: str) -> str:
    return f"{check}[{'-'.join(params)}]"


def unit_check(check: str, node: str, unit: str, *more: str) -> str:
    return t(check, node, unit.removesuffix(".service"), *more)


# A kubelet the master cannot reach: the v0.7 API server's minion registry checks each
# kubelet's health and leaves that minion out of its lists, so the scheduler binds no pod
# there (and the registration checks wait out their deadline).
KUBELET_UNREACHABLE = ("the API leaves the minion out of its list (its kubelet health "
                       "check fails): no pod is bound there")


def workload_fails(*nodes: str) -> tuple[str, ...]:
    return tuple(t(c, n) for n in nodes for c in ("test_a_pod_runs_on_the_node",
                                                  "test_pod_reaches_the_pods_on_other_nodes"))


WORKLOAD_EVERYWHERE = workload_fails(*NODES)


def _faults() -> list[Fault]:
    M, A, B = MASTER, MINION_A, MINION_B
    faults = []

    def add(name, what, actions, expected=(), touches=(), **kw):
        apply, restore = actions[:2]
        if len(actions) > 2:
            kw["during"] = actions[2]
        faults.append(Fault(name, what, apply, restore, tuple(expected), tuple(touches), **kw))

    # -- unit files: dependencies, restart policy, install location ---------------------
    add("kubelet-without-wants-etcd", "kubelet.service lost Wants=etcd.service",
        edit_unit_file(A, "kubelet.service", "Wants=etcd.service", None),
        [unit_check("test_unit_dependencies_match_the_guide", A, "kubelet", "Wants")], [A])
    add("docker-without-requires-flannel", "docker.service lost Requires=flannel.service",
        edit_unit_file(B, "docker.service", "Requires=flannel.service", None),
        [unit_check("test_unit_dependencies_match_the_guide", B, "docker", "Requires")], [B])
    add("flannel-without-after-etcd", "flannel.service lost After=etcd.service",
        edit_unit_file(M, "flannel.service", "After=etcd.service", None),
        [unit_check("test_unit_dependencies_match_the_guide", M, "flannel", "After")], [M])
    add("restart-removed", "scheduler.service drop-in Restart=no",
        drop_in(B, "scheduler.service", "Restart=no", restart=False),
        [unit_check("test_unit_restarts_on_failure_after_5s", B, "scheduler")], [B])
    add("restartsec-changed", "proxy.service drop-in RestartSec=10",
        drop_in(A, "proxy.service", "RestartSec=10", restart=False),
        [unit_check("test_unit_restarts_on_failure_after_5s", A, "proxy")], [A])
    add("docker-reads-another-environment-file", "docker.service drop-in: EnvironmentFile= "
        "a file other than subnet.env, and no docker0 teardown before it starts",
        drop_in(B, spec.DOCKER, "EnvironmentFile=\nEnvironmentFile=/run/flannel/docker.env\n"
                "ExecStartPre=", restart=False),
        [unit_check("test_unit_wraps_its_command_as_the_guide_writes", B, "docker")], [B])
    add("unit-crashed-and-restarted", "proxy.service's main process killed: systemd "
        "restarted it and it is active again",
        crashed_once(A, "proxy.service"),
        [unit_check("test_unit_has_not_restarted_since_it_started", A, "proxy")], [A],
        message={unit_check("test_unit_has_not_restarted_since_it_started", A, "proxy"):
                 "status=9/KILL"})
    add("etcd-advertises-the-public-address", "etcd on a minion restarted with its client "
        "URLs on the public address",
        etcd_advertises(B, "public"),
        [t("test_etcd_member_talks_over_the_private_address", B)], [B])
    add("etcd-only-as-etcd-member", "etcd on a minion runs as etcd-member.service, as on "
        "Flatcar, and etcd.service is gone",
        etcd_only_as_etcd_member(A),
        [t("test_etcd_runs_as_the_unit_the_guides_units_name", A)], [A])
    add("unit-not-enabled", "proxy.service disabled",
        unit_enabled(A, "proxy.service", False),
        [unit_check("test_unit_is_enabled_for_multi_user", A, "proxy")], [A])
    add("unit-file-outside-etc", "scheduler.service moved to /usr/lib/systemd/system",
        move_file(A, unit_path("scheduler.service"), "/usr/lib/systemd/system/scheduler.service",
                  reload=True),
        [unit_check("test_unit_file_is_in_etc_systemd_system", A, "scheduler")], [A])
    add("master-only-unit-on-minion", "controller-manager.service installed on a minion",
        master_unit_on_minion(B, "controller-manager.service"),
        [t("test_master_only_units_absent_on_minion", B)], [B])
    add("failed-unit", "a oneshot unit that failed",
        failed_oneshot(A), [t("test_no_failed_units", A)], [A])
    add("start-order-violation", "kubelet started while docker was down, docker after it",
        kubelet_started_before_docker(B),
        [t("test_start_order_since_boot_respects_after", B)], [B])

    # -- units running -----------------------------------------------------------------------
    add("kubelet-stopped", "kubelet.service stopped",
        stop_unit(B, "kubelet.service"),
        [unit_check("test_unit_is_active", B, "kubelet"),
         t("test_kubelet_listens_on_the_private_ip", B), t("test_kubelet_is_healthy", B),
         t("test_kubelet_reachable_from_the_master", B),
         t("test_kubelet_is_reachable_only_on_the_private_address", B),
         t("test_kubecfg_lists_every_node", M), t("test_api_lists_every_node", M),
         *workload_fails(B)], [B], slow=True,
        note=KUBELET_UNREACHABLE)
    add("docker-daemon-down", "docker.service stopped (docker-api-pin.service with it)",
        stop_unit(A, spec.DOCKER),
        [unit_check("test_unit_is_active", A, "docker"), t("test_docker_daemon_answers", A),
         t("test_docker_applies_the_flannel_mtu", A),
         t("test_container_reaches_every_other_node", A),
         t("test_forward_chain_passes_container_traffic", A),
         t("test_a_pod_runs_on_the_node", A), t("test_pod_reaches_the_pods_on_other_nodes", A)],
        [A], slow=True, note="the v0.7 kubelet's /healthz does not look at Docker: it stays ok")
    add("flannel-stopped", "flannel.service stopped (docker's Requires= stops docker too)",
        stop_unit(A, spec.FLANNEL),
        [unit_check("test_unit_is_active", A, "flannel"),
         unit_check("test_unit_is_active", A, "docker"), t("test_docker_daemon_answers", A),
         t("test_docker_applies_the_flannel_mtu", A),
         t("test_container_reaches_every_other_node", A),
         t("test_forward_chain_passes_container_traffic", A),
         t("test_a_pod_runs_on_the_node", A), t("test_pod_reaches_the_pods_on_other_nodes", A)],
        [A], slow=True)
    add("docker-api-pin-stopped", "docker-api-pin.service stopped on a minion (deviation "
        "kubelet_docker_api): the kubelet cannot reach Docker",
        commands(B, f"systemctl stop {API_PIN}", f"systemctl start {API_PIN}"),
        [t("test_a_pod_runs_on_the_node", B), t("test_pod_reaches_the_pods_on_other_nodes", B)],
        [B], slow=True, message={t("test_a_pod_runs_on_the_node", B): "docker-api-pin.sock"},
        note="the message quotes the kubelet's error: dial unix /run/docker-api-pin.sock")
    # the v0.7 kubelet reads its pods from the node's own etcd: no pod runs there either
    add("etcd-member-down", "etcd stopped on a minion (flannel and docker left running)",
        stop_unit(B, "etcd.service", ignore_dependencies=True),
        [t("test_etcd_runs_as_the_unit_the_guides_units_name", B),
         t("test_etcd_is_healthy_with_every_member", B), t("test_network_config_equals_the_spec", B),
         t("test_subnet_lies_in_the_network_stored_in_etcd", B),
         t("test_etcd_lease_names_the_private_ip", B),
         t("test_etcd_member_talks_over_the_private_address", B), *workload_fails(B)], [B],
        slow=True)

    # -- flannel and docker ----------------------------------------------------------------
    add("subnet-env-removed", "/run/flannel/subnet.env removed",
        move_file(B, spec.SUBNET_ENV, f"{BACKUP}/subnet.env"),
        [t("test_subnet_env_exists_and_parses", B), t("test_docker0_carries_the_flannel_subnet", B),
         t("test_docker_applies_the_flannel_mtu", B),
         t("test_subnet_lies_in_the_network_stored_in_etcd", B),
         t("test_subnet_is_unique_across_nodes", B), t("test_etcd_lease_names_the_private_ip", B),
         t("test_mtu_is_a_sane_integer", B)], [B])
    add("flannel-mtu-insane", "subnet.env says FLANNEL_MTU=100",
        rewrite_subnet_env(A, lambda lab, env: {**env, "FLANNEL_MTU": "100"}, False),
        [t("test_mtu_is_a_sane_integer", A), t("test_docker_applies_the_flannel_mtu", A)], [A])
    add("docker-bip-not-from-flannel", "docker.service drop-in: a fixed --bip outside the lease",
        drop_in(A, spec.DOCKER, lambda lab: exec_start(lab, A, spec.DOCKER,
                                                       bip=_unused_subnet(lab)), restart=True),
        [t("test_docker0_carries_the_flannel_subnet", A),
         unit_check("test_unit_runs_the_guide_command", A, "docker"),
         t("test_container_reaches_every_other_node", M),
         t("test_container_reaches_every_other_node", B),
         t("test_pod_reaches_the_pods_on_other_nodes", M),
         t("test_pod_reaches_the_pods_on_other_nodes", B)], [A],
        note="the node's own containers still reach out (docker masquerades its bridge "
             "subnet), but no other node can reach them")
    add("docker-mtu-mismatch", "docker.service drop-in: --mtu=1400",
        drop_in(B, spec.DOCKER, lambda lab: exec_start(lab, B, spec.DOCKER, mtu="1400"),
                restart=True),
        [t("test_docker_applies_the_flannel_mtu", B),
         unit_check("test_unit_runs_the_guide_command", B, "docker")], [B])
    # Docker's MASQUERADE of the node's containers (-s <its docker0 subnet> ! -o docker0)
    # still carries their pings across flannel under the node's real lease: the data plane
    # checks pass, the subnet and lease checks say what is wrong
    add("subnet-shared-with-master", "a minion's subnet.env holds the master's subnet, "
        "docker restarted with it",
        rewrite_subnet_env(B, lambda lab, env: {
            **env, "FLANNEL_SUBNET": lab.subnet_env(M)["FLANNEL_SUBNET"]}, True),
        [t("test_subnet_is_unique_across_nodes", M), t("test_subnet_is_unique_across_nodes", B),
         t("test_etcd_lease_names_the_private_ip", B)], [B])
    add("network-config-changed", "etcd's /coreos.com/network/config set to 10.200.0.0/16",
        network_config_changed(),
        [t(c, n) for c in ("test_network_config_equals_the_spec",
                           "test_subnet_lies_in_the_network_stored_in_etcd") for n in NODES],
        [M])
    add("dataplane-cut", "iptables -I FORWARD -s 10.100.0.0/16 -j DROP on a minion",
        forward_drop(B), [t(c, n) for c in ("test_container_reaches_every_other_node",
                                            "test_pod_reaches_the_pods_on_other_nodes")
                          for n in NODES], [B],
        note="an explicit DROP rule, not the policy: the FORWARD policy counter stays 0")
    add("forward-accept-removed", "the docker_forward_accept deviation undone on a minion: "
        "its two FORWARD ACCEPT rules for 10.100.0.0/16 deleted (policy DROP left alone)",
        forward_accept_removed(B),
        [t(c, n) for c in ("test_container_reaches_every_other_node",
                           "test_pod_reaches_the_pods_on_other_nodes") for n in (M, A)]
        + [t("test_forward_chain_passes_container_traffic", B)], [B],
        message={t("test_forward_chain_passes_container_traffic", B): "policy DROP dropped"},
        note="traffic into the node's containers is dropped by the policy; their own "
             "pings out still get answers (Docker accepts RELATED,ESTABLISHED to docker0)")
    add("docker-unit-in-1x-syntax", "docker.service rewritten to the guide's Docker 1.x line "
        "(daemon-reload; the running daemon is left alone)",
        drop_in(M, spec.DOCKER, "ExecStart=\nExecStart=/usr/bin/docker -d -s=btrfs -H fd:// "
                                "--bip=${FLANNEL_SUBNET} --mtu=${FLANNEL_MTU}", restart=False),
        [t("test_docker_unit_uses_current_docker_syntax", M),
         unit_check("test_unit_runs_the_guide_command", M, "docker")], [M])

    # -- API server, kubelet, registration ------------------------------------------------
    add("apiserver-on-all-interfaces", "apiserver drop-in: -address=0.0.0.0",
        drop_in(M, spec.APISERVER, lambda lab: exec_start(lab, M, spec.APISERVER,
                                                          address="0.0.0.0"), restart=True),
        [t("test_api_server_is_reachable_only_on_loopback", M),
         unit_check("test_unit_runs_the_guide_command", M, "apiserver")], [M],
        message={t("test_api_server_is_reachable_only_on_loopback", M): "*:8080"})
    # the insecure-port advisory must still xfail here: it reads -port, not the socket
    add("apiserver-down", "apiserver.service stopped",
        stop_unit(M, spec.APISERVER),
        [unit_check("test_unit_is_active", M, "apiserver"),
         t("test_api_server_answers_on_loopback", M), t("test_kubecfg_lists_every_node", M),
         t("test_api_lists_every_node", M),
         t("test_api_server_is_reachable_only_on_loopback", M), *WORKLOAD_EVERYWHERE],
        [M], slow=True)
    add("kubelet-on-public-address", "kubelet drop-in: -address=${COREOS_PUBLIC_IPV4}",
        drop_in(A, "kubelet.service", lambda lab: exec_start(
            lab, A, "kubelet.service", address="${COREOS_PUBLIC_IPV4}"), restart=True),
        [t("test_kubelet_listens_on_the_private_ip", A), t("test_kubelet_is_healthy", A),
         t("test_kubelet_reachable_from_the_master", A),
         t("test_kubelet_is_reachable_only_on_the_private_address", A),
         unit_check("test_unit_runs_the_guide_command", A, "kubelet"),
         t("test_kubecfg_lists_every_node", M), t("test_api_lists_every_node", M),
         *workload_fails(A)], [A], slow=True,
        message={t("test_kubelet_is_reachable_only_on_the_private_address", A):
                 "reachable from the public"}, note=KUBELET_UNREACHABLE)
    add("minion-not-registered", "controller-manager stopped, a minion DELETEd via the API",
        minion_unregistered(),
        [unit_check("test_unit_is_active", M, "controller-manager"),
         t("test_kubecfg_lists_every_node", M), t("test_api_lists_every_node", M),
         t("test_a_pod_runs_on_the_node", B), t("test_pod_reaches_the_pods_on_other_nodes", B)],
        [M, B], slow=True, note="the scheduler no longer knows the minion: its pod stays "
                               "unassigned (one hostPort per minion)")
    add("kubecfg-table-broken", "kubecfg prints a wrong table header",
        binary_wrapper(M, "kubecfg", 'case " $* " in *" list minions "*) "{real}" "$@" | '
                                     'sed "1s/.*/MINION/"; exit;; esac\nexec "{real}" "$@"\n'),
        [t("test_kubecfg_lists_every_node", M), t("test_binaries_identical_on_every_node", M)],
        [M], slow=True)
    add("kubecfg-version-other", "a kubecfg wrapper whose -version prints another release",
        version_wrapper(M, "kubecfg", "Kubernetes v0.6.2"),
        [t("test_kubecfg_version_answers", M), t("test_binaries_identical_on_every_node", M)], [M],
        message={t("test_kubecfg_version_answers", M): "Kubernetes v0.6.2"})

    # -- binaries ---------------------------------------------------------------------------
    add("binary-missing-on-minion", "/opt/bin/kube-proxy missing on a minion",
        move_file(A, f"{spec.BIN_DIR}/kube-proxy", f"{BACKUP}/kube-proxy"),
        [t("test_opt_bin_holds_what_the_role_needs", A)], [A])
    add("binary-differs-on-minion", "one byte appended to /opt/bin/kubelet on a minion",
        append_byte(B, "kubelet"), [t("test_binaries_identical_on_every_node", B)], [B])
    add("environment-names-another-address",
        "/etc/environment on a minion gives the master's private address as its own",
        commands(B, f"mkdir -p {BACKUP} && cp -a {spec.NODE_ENVIRONMENT} "
                    f"{BACKUP}/environment.real && sed -i 's/^COREOS_PRIVATE_IPV4=.*/COREOS_PRIVATE_IPV4=10.0.0.99/' "
                    f"{spec.NODE_ENVIRONMENT}",
                 f"cp -a {BACKUP}/environment.real {spec.NODE_ENVIRONMENT} && "
                 f"rm -f {BACKUP}/environment.real"),
        [t("test_etc_environment_names_the_nodes_own_addresses", B)], [B],
        message={t("test_etc_environment_names_the_nodes_own_addresses", B):
                 "COREOS_PRIVATE_IPV4=10.0.0.99"})
    add("proxy-version-other", "/opt/bin/kube-proxy on a minion reports another release",
        version_wrapper(A, "kube-proxy", "Kubernetes v0.6.2"),
        [t("test_binaries_report_the_shipped_version", A),
         t("test_binaries_identical_on_every_node", A)], [A],
        message={t("test_binaries_report_the_shipped_version", A): "kube-proxy: Kubernetes v0.6.2"})
    add("binary-differs-on-master", "one byte appended to /opt/bin/kube-scheduler on the master",
        append_byte(M, "kube-scheduler"), [t("test_binaries_identical_on_every_node", M)], [M])

    # -- advisories "fixed": the strict expected failure turns into a FAIL --------------------
    add("advisory-portal-net-fixed", "apiserver drop-in: -portal_net=10.200.0.0/16",
        drop_in(M, spec.APISERVER, lambda lab: exec_start(lab, M, spec.APISERVER,
                                                          portal_net="10.200.0.0/16"),
                restart=True),
        [t("test_portal_net_is_apart_from_the_flannel_network", M),
         unit_check("test_unit_runs_the_guide_command", M, "apiserver")], [M])
    add("advisory-minion-api-reachable", "an API server answers on a minion's 127.0.0.1:8080",
        second_api_on_minion(A), [t("test_scheduler_on_minion_reaches_the_api", A)], [A])
    add("advisory-etcd-v3-write", "flannel.service writes its config with `etcdctl put` (v3)",
        replace_in_unit_file(M, spec.FLANNEL, "ETCDCTL_API=2 /usr/bin/etcdctl set",
                             "ETCDCTL_API=3 /usr/bin/etcdctl put"),
        [t("test_flannel_config_written_without_the_etcd_v2_api", M),
         unit_check("test_unit_wraps_its_command_as_the_guide_writes", M, "flannel")], [M])

    add("advisory-insecure-port-fixed", "apiserver drop-in: -port=0 (no insecure port, the "
        "CIS fix; the guide's API on 127.0.0.1:8080 is gone with it, and so is the "
        "ExecStartPost loop that waits for it)",
        drop_in(M, spec.APISERVER, lambda lab: "ExecStartPost=\n" + exec_start(
            lab, M, spec.APISERVER, port="0"), restart=True),
        [t("test_api_server_serves_no_insecure_port", M),
         t("test_api_server_answers_on_loopback", M), t("test_kubecfg_lists_every_node", M),
         t("test_api_lists_every_node", M),
         unit_check("test_unit_runs_the_guide_command", M, "apiserver"),
         unit_check("test_unit_wraps_its_command_as_the_guide_writes", M, "apiserver"),
         *WORKLOAD_EVERYWHERE],
        [M], slow=True)
    add("advisory-read-only-port-fixed", "apiserver drop-in: -read_only_port=0 (no "
        "unauthenticated read-only API on the public address)",
        drop_in(M, spec.APISERVER, lambda lab: exec_start(lab, M, spec.APISERVER)
                + " -read_only_port=0", restart=True),
        [t("test_api_server_read_only_port_is_not_exposed", M),
         unit_check("test_unit_runs_the_guide_command", M, "apiserver")], [M])

    # -- the declared deviations' advisories "fixed" where a fix exists ---------------------
    add("advisory-forward-policy-accept", "iptables -P FORWARD ACCEPT on a minion (as Docker "
        "1.x left it)",
        commands(A, "iptables -w -P FORWARD ACCEPT", "iptables -w -P FORWARD DROP"),
        [t("test_guide_docker_forwards_flannel_traffic", A)], [A])
    add("advisory-pause-image-pulled", f"{spec.PAUSE_IMAGE} without our preload label (as "
        "the kubelet's pull would leave it)", pause_image_unlabelled(B),
        [t("test_pause_image_is_dockers_own", B)], [B])
    add("advisory-docker-socket-pinned", "Docker's own socket serves unversioned requests as "
        "API v1.15 (a docker-api-pin in front of it)", docker_socket_pinned(M),
        [t("test_docker_accepts_the_kubelets_start_request", M)], [M])

    # -- a control, no fault: routine operations after which every check still passes ---
    add("control-docker-restarted-alone", "no fault: `systemctl restart docker.service` "
        "alone, as an operator would", restart_alone(A, spec.DOCKER), (), [A], control=True,
        note="the start-order check once took this for a violation (it compared with the "
             "dependency's last activation); it now must not fail")

    # -- issue 10: a node that stops answering SSH mid-run ------------------------------------
    add("hung-node", "a minion stops answering SSH once the suite has connected",
        hung_ssh(B), (), [B], all_checks_of=B,
        except_=(t("test_kubelet_reachable_from_the_master", B),),
        inventory={"ssh": {"connect_timeout": 5, "command_timeout": 10}},
        note="only the master's view of the node's kubelet still passes")
    return faults


FAULTS: list[Fault] = _faults()
BY_NAME = {f.name: f for f in FAULTS}
assert len(BY_NAME) == len(FAULTS), "fault names must be unique"
