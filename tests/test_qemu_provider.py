"""The qemu provider without VMs: the KVM decision, the command line, the node's config
(Ignition and its fw_cfg-files tar), image verification, leftovers and teardown. Long
because it is the one module of one provider's tests without VMs; tests/e2e boots them."""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from helpers.inventory import InventoryError, parse
from helpers.providers import provider_class, qemu, qemu_accel, qemu_ignition, qemu_vm
from helpers.providers.base import ProviderError, ProviderUnavailable
from helpers.providers.qemu_image import ImageChecksumError, ensure_image


def inventory(tmp_path: Path | None = None, bootstrap=None, **qemu_settings):
    settings = {"image_path": "/images/base.qcow2", "kernel": "/images/vmlinuz",
                "initrd": "/images/initrd.img", "config_delivery": "fw_cfg-files"}
    if tmp_path is not None:
        settings.update(work_dir=str(tmp_path / "work"), cache_dir=str(tmp_path / "cache"))
    settings.update(qemu_settings)
    data = {"provider": "qemu", "bootstrap": bootstrap or {"enabled": False}, "qemu": settings}
    if bootstrap and bootstrap.get("enabled", True):
        data["artifacts"] = {"url": "https://bin.example.internal/k8s.tgz", "sha256": "a" * 64}
    return parse(data)


def provider(tmp_path, **kwargs) -> qemu.QemuProvider:
    return qemu.QemuProvider(inventory(tmp_path, **kwargs), tmp_path / "run", "r1")


# -- KVM or TCG ---------------------------------------------------------------------------
class FakeBoot:
    def __init__(self, ok: bool, seen: str = ""):
        self.ok, self.seen = ok, seen
        self.calls: list[float] = []

    def __call__(self, timeout):
        self.calls.append(timeout)
        return self.ok, self.seen


@pytest.fixture
def kvm_device(tmp_path):
    device = tmp_path / "kvm"
    device.write_text("")
    return device


def test_tcg_and_kvm_settings_are_taken_without_a_probe(tmp_path, kvm_device):
    boot = FakeBoot(True)
    for accel in ("tcg", "kvm"):
        settings = inventory(accel=accel).qemu
        verdict = qemu_accel.kvm_verdict(settings, tmp_path, boot, kvm_device)
        assert verdict.accel == accel and not verdict.probed
    assert boot.calls == []


def test_auto_without_a_kvm_device_is_tcg_without_a_probe(tmp_path):
    boot = FakeBoot(True)
    verdict = qemu_accel.kvm_verdict(inventory().qemu, tmp_path, boot, tmp_path / "no-kvm")
    assert verdict.accel == "tcg" and "does not exist" in verdict.reason
    assert boot.calls == []


def test_auto_with_an_unusable_kvm_device_is_tcg(tmp_path, kvm_device, monkeypatch):
    monkeypatch.setattr(qemu_accel.os, "access", lambda path, mode: False)
    verdict = qemu_accel.kvm_verdict(inventory().qemu, tmp_path, FakeBoot(True), kvm_device)
    assert verdict.accel == "tcg" and "not readable and writable" in verdict.reason


def test_auto_uses_kvm_only_when_the_test_boot_shows_a_marker(tmp_path, kvm_device):
    good = FakeBoot(True, "Run /init as init process")
    verdict = qemu_accel.kvm_verdict(inventory().qemu, tmp_path / "a", good, kvm_device)
    assert verdict.accel == "kvm" and verdict.probed and "Run /init" in verdict.reason
    assert good.calls == [15]
    hangs = FakeBoot(False, "nothing on its console within 3 s")
    verdict = qemu_accel.kvm_verdict(inventory(kvm_probe_timeout=3).qemu, tmp_path / "b", hangs,
                               kvm_device)
    assert verdict.accel == "tcg" and hangs.calls == [3]
    assert verdict.reason == "a KVM test boot failed: nothing on its console within 3 s"


def test_the_verdict_is_cached_per_run(tmp_path, kvm_device):
    hangs = FakeBoot(False, "nothing on the console")
    first = qemu_accel.kvm_verdict(inventory().qemu, tmp_path, hangs, kvm_device)
    second = qemu_accel.kvm_verdict(inventory().qemu, tmp_path, hangs, kvm_device)
    assert len(hangs.calls) == 1
    assert (first.accel, second.accel) == ("tcg", "tcg") and "cached" in second.reason
    other_run = qemu_accel.kvm_verdict(inventory().qemu, tmp_path / "other", FakeBoot(True, "x"),
                                 kvm_device)
    assert other_run.accel == "kvm"


def _fake_qemu(script: str) -> list[str]:
    return [sys.executable, "-c", script]


def test_probe_sees_a_marker_on_the_console(tmp_path):
    console = tmp_path / "probe.log"
    cmd = _fake_qemu(f"import time; open({str(console)!r}, 'w').write('Booting\\n"
                     f"[0.9] Run /init as init process\\n'); time.sleep(30)")
    started = time.monotonic()
    assert qemu_accel.run_probe(cmd, console, 10) == (True, "Run /init as init process")
    assert time.monotonic() - started < 5


def test_probe_counts_a_marker_written_just_before_qemu_exits(tmp_path):
    console = tmp_path / "probe.log"     # the kernel panics (no root) and -no-reboot exits
    cmd = _fake_qemu(f"open({str(console)!r}, 'w').write('[5.7] Kernel panic - not syncing: "
                     f"VFS: Unable to mount root fs')")
    assert qemu_accel.run_probe(cmd, console, 10) == (True, "Kernel panic")


def test_probe_of_a_hanging_guest_gives_up_at_the_timeout(tmp_path):
    console = tmp_path / "probe.log"
    cmd = _fake_qemu(f"import time; open({str(console)!r}, 'w').write("
                     f"'Decompressing Linux... Booting the kernel.\\n'); time.sleep(30)")
    started = time.monotonic()
    ok, seen = qemu_accel.run_probe(cmd, console, 1.5)
    assert not ok and seen == ("no boot marker within 1.5 s, its console ends: "
                               "'Decompressing Linux... Booting the kernel.'")
    assert 1.4 < time.monotonic() - started < 5


def test_probe_reports_qemu_failing_to_start(tmp_path):
    cmd = _fake_qemu("import sys; sys.stderr.write('Could not access KVM kernel module\\n'); "
                     "sys.exit(1)")
    ok, seen = qemu_accel.run_probe(cmd, tmp_path / "probe.log", 10)
    assert not ok and seen == "QEMU exited with status 1: Could not access KVM kernel module"


def test_probe_boots_the_kernel_alone_or_the_image_as_a_snapshot(tmp_path):
    cmd = qemu_accel.probe_boot_command(inventory().qemu, None, None, tmp_path / "c.log")
    assert cmd[cmd.index("-accel") + 1] == "kvm" and "-no-reboot" in cmd
    assert cmd[cmd.index("-kernel") + 1] == "/images/vmlinuz" and "-drive" not in cmd
    flatcar = inventory(image_path="/f.img", kernel=None, initrd=None).qemu
    cmd = qemu_accel.probe_boot_command(flatcar, Path("/f.img"), "qcow2", tmp_path / "c.log")
    assert cmd[cmd.index("-drive") + 1] == "file=/f.img,if=virtio,format=qcow2,snapshot=on"


# -- the command line -----------------------------------------------------------------------
def _command(tmp_path, accel="tcg", **settings):
    p = provider(tmp_path, **settings)
    plan = p._plans()[1]
    return plan, qemu_vm.qemu_command(plan, p.settings, accel, "qcow2", p._config_arg(plan))


def _options(cmd: list[str], flag: str) -> list[str]:
    return [cmd[i + 1] for i, arg in enumerate(cmd) if arg == flag]


def test_networking_stays_on_loopback_and_guests_are_restricted(tmp_path):
    plan, cmd = _command(tmp_path)
    public, private, management = _options(cmd, "-netdev")
    # the guide's two networks: segments the VMs share, on loopback multicast
    assert public == "socket,id=public,mcast=230.0.0.2:22219,localaddr=127.0.0.1"
    assert private == "socket,id=private,mcast=230.0.0.1:22219,localaddr=127.0.0.1"
    # the SSH forward: each VM's own user-mode network, restricted
    assert management.startswith("user,id=management,net=10.0.2.0/24,dhcpstart=10.0.2.15,")
    assert "restrict=on" in management.split(",") and "ipv6=off" in management.split(",")
    forwards = [o for o in management.split(",") if o.startswith("hostfwd=")]
    assert forwards == ["hostfwd=tcp:127.0.0.1:22222-10.0.2.15:22"]
    devices = _options(cmd, "-device")
    assert "virtio-net-pci,netdev=public,mac=52:54:00:00:01:02,addr=0x3" in devices
    assert "virtio-net-pci,netdev=private,mac=52:54:00:00:02:02,addr=0x4" in devices
    assert "virtio-net-pci,netdev=management,mac=52:54:00:00:03:02,addr=0x6" in devices


def test_restriction_can_be_lifted_but_the_forward_stays_on_loopback(tmp_path):
    _, cmd = _command(tmp_path, restrict_network=False, ssh_base_port=30000)
    management = _options(cmd, "-netdev")[2]
    assert "restrict=off" in management and "hostfwd=tcp:127.0.0.1:30002-" in management


def test_tcg_gets_a_bounded_code_cache_and_kvm_the_host_cpu(tmp_path):
    _, cmd = _command(tmp_path)
    assert _options(cmd, "-accel") == ["tcg,tb-size=128"] and "-cpu" not in cmd
    _, cmd = _command(tmp_path, accel="kvm")
    assert _options(cmd, "-accel") == ["kvm"] and _options(cmd, "-cpu") == ["host"]


def test_vm_runs_daemonized_from_its_overlay_with_pid_file_console_and_config(tmp_path):
    plan, cmd = _command(tmp_path, memory_mb=512, cpus=1)
    assert "-daemonize" in cmd and _options(cmd, "-pidfile") == [str(plan.pid_file)]
    assert _options(cmd, "-drive") == [f"file={plan.disk},if=none,id=disk0,format=qcow2"]
    assert plan.disk.parent == tmp_path / "work" / "k8sconf-coreos-2"
    assert _options(cmd, "-chardev") == [
        f"file,id=console0,path={tmp_path / 'run' / 'coreos-2.console.log'},append=on"]
    assert _options(cmd, "-kernel") == ["/images/vmlinuz"]
    assert _options(cmd, "-append") == ["root=/dev/vda rw console=ttyS0"]
    assert _options(cmd, "-fw_cfg") == [f"name=opt/k8sconf/config.tar,file={plan.dir}/config.tar"]
    assert _options(cmd, "-m") == ["512"] and _options(cmd, "-smp") == ["1"]
    assert _options(cmd, "-qmp") == [f"unix:{plan.qmp},server=on,wait=off"]


def test_flatcar_gets_its_ignition_file_and_boots_its_own_disk(tmp_path):
    plan, cmd = _command(tmp_path, config_delivery="ignition", kernel=None, initrd=None)
    assert _options(cmd, "-fw_cfg") == [
        f"name=opt/org.flatcar-linux/config,file={plan.dir}/config.ign"]
    assert "-kernel" not in cmd and "-initrd" not in cmd


def test_nodes_get_the_guides_addresses_and_one_port_each(tmp_path):
    plans = provider(tmp_path)._plans()
    assert [(p.name, p.role, p.public_ip, p.private_ip, p.ssh_port) for p in plans] == [
        ("coreos-1", "master", "192.168.2.1", "10.120.0.1", 22221),
        ("coreos-2", "minion", "192.168.2.2", "10.120.0.2", 22222),
        ("coreos-3", "minion", "192.168.2.3", "10.120.0.3", 22223)]


def test_a_node_address_outside_its_network_is_refused(tmp_path):
    p = provider(tmp_path)
    p.inventory = p.inventory.model_copy(update={"nodes": [
        parse({"provider": "static", "nodes": [
            {"name": "coreos-1", "role": "master", "public_ip": "192.168.3.1",
             "private_ip": "10.120.0.1"}], "bootstrap": {"enabled": False}}).node_specs()[0]]})
    with pytest.raises(ProviderError, match="192.168.3.1 is not a usable node address"):
        p._plans()


def test_a_taken_ssh_port_is_named(tmp_path):
    import socket
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        p = provider(tmp_path, ssh_base_port=port - 1)
        with pytest.raises(ProviderError, match=f"port 127.0.0.1:{port} for coreos-1"):
            p._check_ports(p._plans())


# -- the node's configuration ---------------------------------------------------------------
HOST_KEY = ("-----BEGIN OPENSSH PRIVATE KEY-----\nfake\n-----END OPENSSH PRIVATE KEY-----\n",
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHostKeyForTestsOnly")
CLIENT_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIClientKeyForTestsOnly"


def _config(tmp_path, slow=False, **kwargs) -> dict:
    p = provider(tmp_path, **kwargs)
    plans = p._plans()
    return qemu_ignition.node_ignition(p.inventory, p.settings, plans[0], plans, CLIENT_KEY, HOST_KEY,
                              "k8sconf-r1", slow)


def _file(config: dict, path: str) -> str:
    entry = next(f for f in config["storage"]["files"] if f["path"] == path)
    return qemu_ignition._decode_source(entry["contents"]["source"]).decode()


def test_ignition_is_valid_per_ignitions_own_validator(tmp_path):
    assert shutil.which("ignition-validate"), "ignition-validate missing: run scripts/install"
    for kwargs in ({}, {"bootstrap": {"mode": "cloud-config"}, "restrict_network": False}):
        text = json.dumps(_config(tmp_path, **kwargs))
        proc = subprocess.run(["ignition-validate", "-"], input=text, text=True,
                              capture_output=True, timeout=30)
        assert proc.returncode == 0, proc.stdout + proc.stderr


def test_ignition_holds_the_nodes_identity_network_and_etcd(tmp_path):
    config = _config(tmp_path)
    assert config["passwd"]["users"] == [{"name": "core", "sshAuthorizedKeys": [CLIENT_KEY]}]
    assert _file(config, "/etc/hostname") == "coreos-1\n"
    assert _file(config, "/etc/environment") == (
        "COREOS_PUBLIC_IPV4=192.168.2.1\nCOREOS_PRIVATE_IPV4=10.120.0.1\n")
    assert _file(config, "/etc/ssh/ssh_host_ed25519_key") == HOST_KEY[0]
    assert "MACAddress=52:54:00:00:02:01" in _file(
        config, "/etc/systemd/network/10-k8sconf-private.network")
    public = _file(config, "/etc/systemd/network/10-k8sconf-public.network")
    assert "Address=192.168.2.1/24" in public and "Gateway" not in public
    management = _file(config, "/etc/systemd/network/10-k8sconf-management.network")
    assert "MACAddress=52:54:00:00:03:01" in management and "DHCP=ipv4" in management
    assert "10.120.0.3\tcoreos-3" in _file(config, "/etc/hosts")
    etcd = next(u for u in config["systemd"]["units"] if u["name"] == "etcd-member.service")
    dropin = etcd["dropins"][0]["contents"]
    assert etcd["enabled"] is True
    assert ('Environment="ETCD_INITIAL_CLUSTER=coreos-1=http://10.120.0.1:2380,'
            'coreos-2=http://10.120.0.2:2380,coreos-3=http://10.120.0.3:2380"') in dropin
    assert 'Environment="ETCD_LISTEN_CLIENT_URLS=http://0.0.0.0:2379,http://0.0.0.0:4001"' in dropin
    assert 'ETCD_ENABLE_V2=true' in dropin and "ETCD_ELECTION_TIMEOUT" not in dropin
    # the guide's units name etcd.service: on Flatcar an alias of etcd-member.service
    assert config["storage"]["links"] == [{
        "path": "/etc/systemd/system/etcd.service", "overwrite": True,
        "target": "/usr/lib/systemd/system/etcd-member.service"}]
    assert "ETCD_ELECTION_TIMEOUT=5000" in json.dumps(_config(tmp_path, slow=True))


def test_cloud_config_bootstrap_puts_the_guides_units_in_the_same_config(tmp_path):
    config = _config(tmp_path, bootstrap={"mode": "cloud-config"}, restrict_network=False)
    names = {u["name"] for u in config["systemd"]["units"]}
    assert {"apiserver.service", "kubelet.service", "etcd-member.service"} <= names


def test_fw_cfg_files_tar_is_the_same_config(tmp_path):
    config = _config(tmp_path)
    with tarfile.open(fileobj=io.BytesIO(qemu_ignition.ignition_to_tar(config))) as tar:
        members = {m.name: m for m in tar.getmembers()}
        def read(name):
            member = tar.extractfile(members[name])
            assert member is not None, f"{name} is not a regular file in the tar"
            return member.read().decode()
        for entry in config["storage"]["files"]:
            name = entry["path"].lstrip("/")
            assert read(name) == _file(config, entry["path"])
            assert members[name].mode == entry["mode"] and members[name].uname == "root"
        assert members["etc/ssh/ssh_host_ed25519_key"].mode == 0o600
        ssh_dir, keys = members["home/core/.ssh"], members["home/core/.ssh/authorized_keys"]
        assert ssh_dir.isdir() and ssh_dir.mode == 0o700 and ssh_dir.uname == "core"
        assert keys.mode == 0o600 and keys.uname == keys.gname == "core"
        assert read("home/core/.ssh/authorized_keys") == CLIENT_KEY + "\n"
        assert "ETCD_NAME=coreos-1" in read(
            "etc/systemd/system/etcd-member.service.d/20-k8sconf-etcd.conf")
        link = members["etc/systemd/system/multi-user.target.wants/etcd-member.service"]
        assert link.issym() and link.linkname == "/usr/lib/systemd/system/etcd-member.service"
        alias = members["etc/systemd/system/etcd.service"]
        assert alias.issym() and alias.linkname == "/usr/lib/systemd/system/etcd-member.service"
        assert not any(m.isdir() for n, m in members.items() if n != "home/core/.ssh"), \
            "no directory entry may change an existing directory of the image"


def test_fw_cfg_files_refuses_what_it_cannot_carry():
    with pytest.raises(ProviderError, match="cannot carry Ignition directories"):
        qemu_ignition.ignition_to_tar({"ignition": {"version": "3.3.0"},
                              "storage": {"directories": [{"path": "/x"}]}})
    with pytest.raises(ProviderError, match="only carry data: URLs"):
        qemu_ignition.ignition_to_tar({"ignition": {"version": "3.3.0"}, "storage": {"files": [
            {"path": "/x", "contents": {"source": "https://example.invalid/x"}}]}})


# -- the image ------------------------------------------------------------------------------
def test_a_wrong_checksum_is_one_line_and_leaves_nothing(tmp_path):
    image = tmp_path / "flatcar_production_qemu_image.img"
    image.write_bytes(b"not really an image")
    url = image.as_uri()
    with pytest.raises(ImageChecksumError) as caught:
        ensure_image(url, "0" * 64, tmp_path / "cache", progress=lambda line: None)
    message = str(caught.value)
    got = hashlib.sha256(b"not really an image").hexdigest()
    assert "\n" not in message
    assert message == (f"qemu: image {url} has sha256 {got}, but qemu.image_sha256 is "
                       f"{'0' * 64}: the download was removed; check the URL and the checksum")
    assert [p.name for p in (tmp_path / "cache" / "images").iterdir()] == [".download.lock"]


def test_a_verified_image_is_downloaded_once_and_unpacked(tmp_path):
    payload = b"qcow2-ish bytes" * 1000
    packed = tmp_path / "flatcar_production_qemu_image.img.gz"
    packed.write_bytes(gzip.compress(payload))
    sha = hashlib.sha256(packed.read_bytes()).hexdigest()
    lines: list[str] = []
    path, downloaded = ensure_image(packed.as_uri(), sha, tmp_path / "cache", lines.append)
    assert downloaded and path.read_bytes() == payload
    assert path.name == f"{sha[:16]}-flatcar_production_qemu_image.img"
    assert lines[0].startswith("qemu: downloading file://") and "downloaded" in lines[-1]
    packed.unlink()    # the cache answers now
    assert ensure_image(packed.as_uri(), sha, tmp_path / "cache", lines.append) == (path, False)


def test_an_unreachable_image_is_one_line(tmp_path):
    with pytest.raises(ProviderError) as caught:
        ensure_image((tmp_path / "missing.img").as_uri(), "0" * 64, tmp_path / "cache",
                     lambda line: None)
    assert "cannot download image" in str(caught.value) and "\n" not in str(caught.value)


# -- leftovers and teardown -----------------------------------------------------------------
def _fake_vm(node_dir: Path, prefix: str, marker: str) -> subprocess.Popen:
    """A process standing in for QEMU: its command line names `marker`."""
    node_dir.mkdir(parents=True)
    (node_dir / "prefix").write_text(prefix)
    (node_dir / "disk.qcow2").write_bytes(b"overlay")
    # one process (a shell would leave its `sleep` behind when it is killed)
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", marker])
    (node_dir / "qemu.pid").write_text(f"{proc.pid}\n")
    return proc


def test_leftovers_of_a_killed_run_are_found_by_prefix_and_removed(tmp_path):
    work = tmp_path / "work"
    ours = [_fake_vm(work / f"k8sconf-coreos-{i}", "k8sconf", str(work / f"k8sconf-coreos-{i}"))
            for i in (1, 2)]
    other_prefix = _fake_vm(work / "k8sconf-x-coreos-1", "k8sconf-x",
                            str(work / "k8sconf-x-coreos-1"))
    # a pid file that points at a process which is not that node's QEMU (recycled pid)
    stranger = _fake_vm(work / "k8sconf-coreos-3", "k8sconf", "/somewhere/else")
    (work / "k8sconf-unmarked").mkdir()
    try:
        found = qemu_vm.find_leftovers("k8sconf", work)
        assert [d.name for d in found] == ["k8sconf-coreos-1", "k8sconf-coreos-2",
                                           "k8sconf-coreos-3"]
        p = provider(tmp_path)
        p.destroy(None)
        for proc in ours:
            assert proc.wait(timeout=5) == -15
        assert stranger.poll() is None and other_prefix.poll() is None
        assert sorted(d.name for d in work.iterdir()) == ["k8sconf-unmarked", "k8sconf-x-coreos-1"]
        p.destroy(None)     # idempotent
    finally:
        for proc in (*ours, other_prefix, stranger):
            proc.kill()
            proc.wait()


def test_create_removes_what_it_made_when_it_fails(tmp_path, monkeypatch):
    p = provider(tmp_path)
    monkeypatch.setattr(qemu.QemuProvider, "preflight", lambda self: None)
    monkeypatch.setattr(qemu.QemuProvider, "_base_image",
                        lambda self: (Path("/images/base.qcow2"), "qcow2", False))
    monkeypatch.setattr(qemu.QemuProvider, "_accel", lambda self, b, f: qemu_accel.Verdict("tcg", "t"))
    monkeypatch.setattr(qemu, "create_overlay", lambda base, fmt, overlay: overlay.write_bytes(b""))

    def interrupted(self, plan, base_format):
        raise KeyboardInterrupt
    monkeypatch.setattr(qemu.QemuProvider, "_start_vm", interrupted)
    with pytest.raises(KeyboardInterrupt):
        p.create()
    assert not (tmp_path / "work").exists()


def test_console_tail_is_one_line_naming_the_file(tmp_path):
    console = tmp_path / "coreos-2.console.log"
    console.write_bytes(b"\x1b[0;32m  OK  \x1b[0m] Started ssh.service\r\n\r\n"
                        b"Begin: Mounting root\nALERT! /dev/vda does not exist.\n(initramfs) ")
    tail = qemu_vm.console_tail(console)
    assert tail == (f"console {console} ends: OK  ] Started ssh.service | Begin: Mounting root | "
                    "ALERT! /dev/vda does not exist. | (initramfs)")
    assert qemu_vm.console_tail(tmp_path / "none.log").endswith("none.log is empty")


# -- preflight and inventory ------------------------------------------------------------------
def test_preflight_names_the_packages_to_install(tmp_path, monkeypatch):
    monkeypatch.setattr(qemu.shutil, "which", lambda tool: None if tool.startswith("qemu") else "/x")
    with pytest.raises(ProviderUnavailable,
                       match="apt-get install qemu-system-x86 qemu-utils$"):
        provider(tmp_path).preflight()


def test_preflight_refuses_a_cloud_config_bootstrap_behind_restrict(tmp_path, monkeypatch):
    monkeypatch.setattr(qemu.shutil, "which", lambda tool: "/x")
    for name in ("image", "vmlinuz", "initrd"):
        (tmp_path / name).write_text("")
    p = provider(tmp_path, bootstrap={"mode": "cloud-config"}, image_path=str(tmp_path / "image"),
                 kernel=str(tmp_path / "vmlinuz"), initrd=str(tmp_path / "initrd"))
    with pytest.raises(ProviderUnavailable, match="restrict_network keeps guests off"):
        p.preflight()


def test_provider_is_registered():
    assert provider_class("qemu") is qemu.QemuProvider


@pytest.mark.parametrize("settings,message", [
    ({"image_path": "/x", "initrd": "/i"}, "'initrd' needs 'kernel'"),
    ({"image_path": "/x", "private_mcast_group": "10.0.0.1"}, "is not a multicast address"),
    ({"image_path": "/x", "public_network": "10.120.0.0/16"}, "overlap"),
    ({"image_path": "/x", "config_delivery": "cloud-init"}, "qemu.config_delivery"),
])
def test_bad_qemu_settings_get_one_line(settings, message):
    with pytest.raises(InventoryError, match=message):
        parse({"provider": "qemu", "bootstrap": {"enabled": False}, "qemu": settings})


def test_relative_qemu_paths_are_relative_to_the_inventory(tmp_path):
    from helpers.inventory import load
    path = tmp_path / "i.yaml"
    path.write_text("provider: qemu\nbootstrap: {enabled: false}\n"
                    "qemu: {image_path: img/base.qcow2, kernel: img/vmlinuz}\n")
    settings = load(path).qemu
    assert settings is not None
    assert settings.image_path == tmp_path / "img" / "base.qcow2"
    assert settings.kernel == tmp_path / "img" / "vmlinuz"
    assert settings.work_dir == Path("/var/lib/k8s-coreos-conformance/qemu")


# -- reboot ---------------------------------------------------------------------------------
class FakeConnection:
    def __init__(self, boot_id: str, fail_with=None):
        self.boot, self.fail_with = boot_id, fail_with
        self.commands: list[tuple] = []

    def boot_id(self, timeout=None):
        return self.boot

    def run(self, command, sudo=False, timeout=None):
        self.commands.append((command, sudo, timeout))
        if self.fail_with:
            raise self.fail_with

    def close(self):
        pass


def _rebootable(tmp_path, monkeypatch, after: list):
    from helpers import ssh
    from helpers.providers.base import Cluster, Node
    node_dir = tmp_path / "work" / "k8sconf-coreos-1"
    vm = _fake_vm(node_dir, "k8sconf", str(node_dir))
    console = tmp_path / "coreos-1.console.log"
    console.write_text("coreos-1 login: \n")
    node = Node("coreos-1", "master", "192.168.2.1", "10.120.0.1", "127.0.0.1", 22221)
    cluster = Cluster("qemu", [node], ssh_key=str(tmp_path / "id"), state={"nodes": {
        "coreos-1": {"dir": str(node_dir), "console": str(console)}}})
    first = FakeConnection("old-boot", fail_with=ssh.SSHError("coreos-1: connection broke"))
    monkeypatch.setattr(ssh, "wait_for_ssh", lambda *a, **k: first)

    def wait_for_reboot(node, user, key, old, timeout, **kwargs):
        after.append((old, timeout))
        if isinstance(after[0], Exception):
            raise after[0]
        return FakeConnection("new-boot")
    monkeypatch.setattr(ssh, "wait_for_reboot", wait_for_reboot)
    return cluster, node, first, vm


def test_reboot_queues_the_reboot_and_waits_for_a_new_boot_id(tmp_path, monkeypatch):
    waits: list = []
    cluster, node, first, vm = _rebootable(tmp_path, monkeypatch, waits)
    try:
        provider(tmp_path).reboot(cluster, node, timeout=200)
    finally:
        vm.kill()
        vm.wait()
    (command, sudo, timeout), = first.commands
    assert (command, sudo) == ("systemctl reboot --no-block", True) and timeout > 60
    assert waits[0][0] == "old-boot" and 190 < waits[0][1] <= 200


def test_a_reboot_that_never_comes_back_is_one_line_with_the_console(tmp_path, monkeypatch):
    from helpers import ssh
    waits = [ssh.SSHError("coreos-1: did not come back with a new boot id within 200 s")]
    cluster, node, _, vm = _rebootable(tmp_path, monkeypatch, waits)
    try:
        with pytest.raises(ProviderError) as caught:
            provider(tmp_path).reboot(cluster, node, timeout=200)
    finally:
        vm.kill()
        vm.wait()
    assert str(caught.value) == (
        "qemu: reboot of coreos-1: coreos-1: did not come back with a new boot id within 200 s "
        f"(console {tmp_path / 'coreos-1.console.log'} ends: coreos-1 login:)")
