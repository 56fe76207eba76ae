"""The whole suite on three QEMU VMs (issue 18 item 6; opt-in: `--qemu-suite`).

`pytest suites --inventory` with provider `qemu`: the VMs boot the Docker variant of
the test image (tests/e2e/qemu_image.py) and get their starting point (identity, the
guide's etcd behind etcd-member.service with etcd.service its alias) from the
provider's Ignition renderer, delivered through fw_cfg; the bootstrap does the guide's
install with the real binaries, every check runs, and teardown leaves nothing. The
image is Debian's Docker 20.10 on a real kernel, so the run declares local.yaml's
deviations with Docker's overlay2 on the VM's ext4 root.

Under software emulation (this machine: nested KVM hangs) it takes tens of minutes,
hence opt-in; the figures go to the terminal summary. Prefix and ports are its own.
"""
from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml

from helpers.inventory import ROOT
from tests.e2e.qemu_image import ensure_image
from tests.e2e.suite_runs import SuiteRun
from tests.support import recordings

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.qemu, pytest.mark.qemu_suite,
              pytest.mark.xdist_group("qemu-cluster")]
PREFIX = "k8sqst"
CACHE_DIR = Path("/var/cache/k8s-coreos-conformance/qemu")
WORK_DIR = Path("/var/lib/k8s-coreos-conformance/qemu")


def inventory(tmp: Path, image) -> Path:
    local = yaml.safe_load((ROOT / "inventories" / "local.yaml").read_text())
    data = {
        "provider": "qemu",
        "qemu": {"image_path": str(image.base), "kernel": str(image.kernel),
                 "initrd": str(image.initrd), "config_delivery": "fw_cfg-files",
                 "memory_mb": 1536, "cpus": 1, "accel": "auto", "prefix": PREFIX,
                 "ssh_base_port": 22360, "private_mcast_port": 22359,
                 "boot_timeout": 900, "cache_dir": str(CACHE_DIR), "work_dir": str(WORK_DIR),
                 # apparmor=0: Debian's kernel enables AppArmor, and Docker then refuses to
                 # start containers without apparmor_parser; Flatcar runs no AppArmor
                 "kernel_append": "root=/dev/vda rw console=ttyS0 mitigations=off apparmor=0"},
        # the facts script's 43 probes take minutes on an emulated CPU (60 s is the default)
        "ssh": {"command_timeout": 300},
        "artifacts": {"build": True},
        "bootstrap": {"enabled": True, "ship": "all", "settle_timeout": 900},
        "deviations": {**local["deviations"], "docker_storage_flag": "-s overlay2"},
    }
    path = tmp / "qemu-suite.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_the_suite_passes_on_three_vms(tmp_path, measured):
    started = time.monotonic()
    image = ensure_image(CACHE_DIR, docker=True)
    if image.built:
        measured["qemu suite: Docker test image build"] = f"{image.seconds:.0f} s"
    suite = SuiteRun(inventory(tmp_path, image), tmp_path / "reports", "-n", "3")
    try:
        code = suite.wait(3600)
    finally:
        suite.kill()
    (tmp_path / "suite.out").write_text(suite.output)
    measured["qemu suite: 3 VMs, create to teardown"] = \
        f"{time.monotonic() - started:.0f} s"
    assert code == 0, suite.output[:4000] + "\n...\n" + suite.output[-3000:]
    # the embedded cluster's verdict, check by check (its recorded live run)
    differ = recordings.unlike_the_embedded_cluster(tmp_path / "reports" / "junit.xml")
    assert differ == {}, f"(VMs, embedded cluster): {differ}"
    assert "Conformance sign-off: PASS" in suite.output
