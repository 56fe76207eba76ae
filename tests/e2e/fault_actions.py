"""How the faults of tests/e2e/faults.py act: building blocks (a unit file edited, a
drop-in, a unit stopped, a binary wrapped...) and the faults that need more than one. Each
returns (apply, restore), or (apply, restore, during); both act through a `Lab`. About
forty faults' actions: each short, long only together."""
from __future__ import annotations

import json
import subprocess
import time
from typing import Callable

from helpers import spec

from .fault_lab import (
    API,
    API_PIN,
    BACKUP,
    DROP_IN,
    ETCD,
    FAILING_UNIT,
    MASTER,
    MINION_B,
    SECOND_API_UNIT,
    FaultError,
    Lab,
)

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

def unused_subnet(lab: Lab) -> str:
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
