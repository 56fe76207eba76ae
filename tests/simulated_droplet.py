"""One simulated DigitalOcean droplet: a node built like the embedded cluster's
(helpers/providers/local.py: overlay of the cached tree, its own network namespace,
systemd-nspawn), booted with the user_data it was created with, applied by the REAL
Ignition (`-platform digitalocean`) from the droplet's metadata service inside its
namespace (tests/droplet_metadata.py) before the first boot.

What the simulated image adds to the node tree, as Flatcar's image has it:
- /etc/selinux/config (Debian's Ignition reads it to relabel; SELinux is disabled
  here, so the `setfiles` it calls is a shim that labels nothing);
- sshd reads ~/.ssh/authorized_keys.d/ignition, where Ignition puts a user's keys
  (Flatcar merges that directory with update-ssh-keys);
- a fresh machine id, and the presets Ignition wrote applied, as first boot does.

- etcd as Flatcar ships it: `etcd-member.service`, disabled, and no `etcd.service`
  (Debian's unit renamed), so the provider's etcd step takes the path it takes on
  Flatcar: the drop-in on etcd-member.service and etcd.service made an alias of it;
- /etc/docker/daemon.json naming the cloud's registry (tests/droplet_registry.py) as
  Docker's mirror, so that the provider's `docker pull busybox` works as on a droplet.

Each droplet has a local prefix of its own (`<cloud prefix>d<N>`), so deleting it
is the local provider's teardown by that prefix; its name starts with the cloud's.
Its network is the cloud's (tests/simulated_cloud.py): eth0 on the cloud's public
bridge, eth1 on its private one, so that droplets of one region reach each other.
"""
from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path

from helpers import spec
from helpers.inventory import parse
from helpers.providers.local import LocalProvider, NodePlan
from helpers.providers.local_rootfs import BUSYBOX_TAR, ensure_rootfs
from tests import droplet_metadata as md
from tests import droplet_registry as registry

IGNITION = Path("/usr/lib/dracut/modules.d/30ignition/ignition")
CACHE_DIR = Path("/var/cache/k8s-coreos-conformance")
WORK_DIR = Path("/var/lib/k8s-coreos-conformance")


class SimulatedDroplet:
    def __init__(self, cloud_prefix: str, number: int, droplet_id: int, name: str,
                 public_ip: str, private_ip: str, public_net: str, private_net: str,
                 run_dir: Path, bridges: tuple[str, str]):
        self.prefix = f"{cloud_prefix}d{number}"
        inventory = parse({"provider": "local", "bootstrap": {"enabled": False},
                           "local": {"prefix": self.prefix, "count": 1,
                                     "public_network": public_net,
                                     "private_network": private_net}})
        self.local = LocalProvider(inventory, run_dir, self.prefix)
        machine = f"{self.prefix}-{name}"
        self.plan = NodePlan(1, name, "node", public_ip, private_ip, machine, WORK_DIR / machine)
        self.droplet_id = droplet_id
        self.bridges = bridges
        self.services: list[subprocess.Popen] = []

    def boot(self, user_data: str) -> None:
        """Network, metadata service, Ignition on the root, then systemd-nspawn."""
        self.destroy()                        # what a killed run left under this prefix
        plan, root = self.plan, self.plan.root
        try:
            rootfs = ensure_rootfs(CACHE_DIR)
            self.local._attach_node(plan, self.bridges, self.prefix)
            for sub in ("upper", "work", "root", "docker"):
                (plan.dir / sub).mkdir(parents=True, exist_ok=True)
            (plan.dir / "prefix").write_text(self.prefix)   # ours, for the teardown
            subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                            f"lowerdir={rootfs},upperdir={plan.dir / 'upper'},"
                            f"workdir={plan.dir / 'work'}", str(root)], check=True)
            self._image_files(root)
            self.services.append(md.start_in_namespace(
                plan.machine, md.metadata(self.droplet_id, plan.name, user_data,
                                          plan.public_ip, plan.private_ip), plan.dir / "md"))
            self.services.append(registry.start_in_namespace(
                plan.machine, rootfs / BUSYBOX_TAR.lstrip("/"), plan.dir / "md" / "registry.log"))
            for stage in ("fetch", "files"):
                self._ignition(stage)
            (plan.dir / "ignition.json").unlink(missing_ok=True)   # holds the host key
            units = _ignition_presets(root)
            if units:   # preset-all would also undo the tree's masks
                subprocess.run(["systemctl", f"--root={root}", "preset", *units], check=True,
                               capture_output=True)
            self.local._start_node(plan)
        except BaseException:
            self.destroy()
            raise

    def destroy(self) -> None:
        while self.services:
            service = self.services.pop()
            service.kill()     # ours: started by boot(), ended by its Popen
            service.wait(10)
        self.local._teardown(self.prefix, WORK_DIR)

    def _image_files(self, root: Path) -> None:
        (root / "etc/selinux").mkdir(exist_ok=True)
        (root / "etc/selinux/config").write_text("SELINUX=disabled\nSELINUXTYPE=targeted\n")
        (root / "etc/machine-id").write_text(uuid.uuid4().hex + "\n")
        (root / "etc/ssh/sshd_config.d/authorized-keys-d.conf").write_text(
            "AuthorizedKeysFile .ssh/authorized_keys .ssh/authorized_keys.d/ignition\n")
        units = root / "usr/lib/systemd/system"
        debian = units / spec.ETCD
        if debian.exists():
            (units / spec.FLATCAR_ETCD).write_text(debian.read_text())
            debian.unlink()
            (root / "etc/systemd/system/multi-user.target.wants" / spec.ETCD).unlink(
                missing_ok=True)
            (root / "etc/systemd/system/etcd2.service").unlink(missing_ok=True)
            # else systemd's SysV generator would make an etcd.service of Debian's script
            for script in [root / "etc/init.d/etcd", *root.glob("etc/rc?.d/[SK][0-9][0-9]etcd")]:
                script.unlink(missing_ok=True)
        (root / "etc/docker").mkdir(exist_ok=True)
        (root / "etc/docker/daemon.json").write_text(registry.daemon_json())

    def _ignition(self, stage: str) -> None:
        shims = self.plan.dir / "shims"
        shims.mkdir(exist_ok=True)
        (shims / "setfiles").write_text("#!/bin/sh\ncat >/dev/null\n")
        (shims / "setfiles").chmod(0o755)
        env = {**os.environ, "PATH": f"{shims}:{os.environ.get('PATH', '/usr/bin:/bin')}"}
        log = self.plan.dir / f"ignition-{stage}.log"
        with open(log, "w") as out:
            result = subprocess.run(
                ["ip", "netns", "exec", self.plan.machine, str(IGNITION), "-platform",
                 "digitalocean", "-stage", stage, "-root", str(self.plan.root),
                 "-log-to-stdout", "-config-cache", str(self.plan.dir / "ignition.json"),
                 "-state-file", str(self.plan.dir / "ignition.state"),
                 "-fetch-timeout", "30s"],
                stdout=out, stderr=subprocess.STDOUT, env=env, timeout=120)
        if result.returncode != 0:
            tail = log.read_text(errors="replace").strip().splitlines()[-1:]
            raise RuntimeError(f"droplet {self.plan.name}: ignition {stage} failed: "
                               f"{tail[0] if tail else '?'} (log: {log})")

    @property
    def bridge(self) -> str:
        return self.bridges[0]


def _ignition_presets(root: Path) -> list[str]:
    """The units Ignition's config enables or disables (it writes them as presets)."""
    preset = root / "etc/systemd/system-preset/20-ignition.preset"
    if not preset.exists():
        return []
    return [line.split()[1] for line in preset.read_text().splitlines()
            if len(line.split()) == 2 and line.split()[0] in ("enable", "disable")]
