"""A fresh Debian 12, for real: this checkout installed and tested in a bare bookworm root.

The root is `mmdebstrap --variant=standard bookworm` (built once, cached as a tarball under
/var/cache/k8s-coreos-conformance/fresh-debian by a key of the command), unpacked afresh
for every run: python3 3.11 without pip or ensurepip, externally managed (PEP 668), no
node, npm, git or curl. The checkout (HEAD, as `git archive` gives it: what a fresh
clone holds) is copied in, with the host's CA bundle, its
local CAs and resolv.conf, and pip told to use that bundle (/etc/pip.conf). Inside, with
chroot, in a mount namespace of its own (proc, sys, dev, dev/pts; all gone with it, and
unmounted by its trap before), it runs exactly the README's install command, then a
quick part of our tests with the README's test command, and shows:

- the install made .venv and the project is installed into it, Allure runs on node 18,
  and a second install is a no-op;
- ruff and mypy, as pyproject.toml configures them, are clean on helpers/, suites/, tests/;
- `pytest --inventory /elsewhere/x.yaml --collect-only` works from the checkout and from /;
- a whole run with `--reports-dir` (and its HTML report) leaves the repo's reports/ as it was;
- `grep -r "\\.\\./shared"` finds nothing but .ci/run.

Only the package registries are reached (Debian's archive, PyPI, npm). The figures (the
install's duration above all) are shown at the end of the run.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import filelock
import pytest

from helpers.paths import ROOT

pytestmark = [pytest.mark.e2e, pytest.mark.fresh_debian, pytest.mark.slow,
              pytest.mark.xdist_group(__name__)]

CACHE = Path(os.environ.get("K8SCONF_CACHE", "/var/cache/k8s-coreos-conformance")) / "fresh-debian"
MIRROR = "http://deb.debian.org/debian"
MMDEBSTRAP = ["mmdebstrap", "--variant=standard", "bookworm"]
CHECKOUT = "/root/k8s-coreos-conformance"
# The README's quick start, as this test runs it (its test command narrowed to a quick part)
README_INSTALL = "bash scripts/install"
README_TEST = 'bash scripts/test -m "not e2e and not qemu" -k "inventory or spec or packaging"'
LEFT_OUT = (".git", ".venv", "node_modules", "reports", "tests/reports", ".hypothesis")

STATIC = """provider: static
nodes:
  - {name: coreos-1, role: master, public_ip: 127.0.0.1, private_ip: 127.0.0.1}
  - {name: coreos-2, role: minion, public_ip: 127.0.0.2, private_ip: 127.0.0.2}
ssh: {port: 9, connect_timeout: 1, command_timeout: 2, host_key_policy: accept-new}
bootstrap: {enabled: false}
"""

# Each step: a name, the directory, the command. The runner stops at the first that fails.
STEPS = [
    ("bare", CHECKOUT, "! command -v pip && ! command -v pip3 && ! python3 -c 'import ensurepip'"
                       " 2>/dev/null && ls /usr/lib/python3.11/EXTERNALLY-MANAGED"
                       " && ! command -v node && ! command -v npm && ! command -v git"
                       " && ! command -v curl && python3 --version"),
    ("install", CHECKOUT, README_INSTALL),
    ("install again", CHECKOUT, README_INSTALL),
    ("installed", CHECKOUT, ".venv/bin/python -c 'import sys, helpers.entry; print(sys.prefix)'"
                            " && node --version && npx --no-install allure --version"
                            " && ! python3 -c 'import pytest' 2>/dev/null"),
    ("tests", CHECKOUT, README_TEST),
    # scripts/test ran both already (quietly); here they say so
    ("lint and types", CHECKOUT, ".venv/bin/ruff check helpers suites tests && .venv/bin/mypy"),
    ("inventory elsewhere", CHECKOUT,
     "cp inventories/local.yaml /elsewhere/x.yaml"
     " && .venv/bin/pytest --inventory /elsewhere/x.yaml --collect-only -q | tail -1"
     " && .venv/bin/pytest --inventory=/elsewhere/x.yaml --collect-only -q | tail -1"
     f" && cd / && {CHECKOUT}/.venv/bin/pytest --inventory /elsewhere/x.yaml --collect-only"
     " | grep -E '^(rootdir|configfile)|tests? collected'"),
    ("reports elsewhere", CHECKOUT,
     "find reports -printf '%p %s %T@\\n' | sort >/tmp/reports.before"
     " && { .venv/bin/pytest --inventory /elsewhere/static.yaml --reports-dir /elsewhere/out -q"
     " | tail -1; test ${PIPESTATUS[0]} = 1; }"
     " && bash scripts/report --reports-dir /elsewhere/out"
     " && ls /elsewhere/out/junit.xml /elsewhere/out/summary.md /elsewhere/out/cluster/state.json"
     " /elsewhere/out/allure-report/index.html"
     " && find reports -printf '%p %s %T@\\n' | sort | cmp - /tmp/reports.before"
     " && echo 'reports/ untouched'"),
    ("self-contained", CHECKOUT,
     "found=$(grep -rl '\\.\\./shared' . --exclude-dir=.venv --exclude-dir=node_modules || true)"
     " && echo \"found: ${found:-nothing}\" && test -z \"$(echo \"$found\" | grep -vx './.ci/run')\""),
]

RUNNER = r"""
set -uo pipefail
root=$1 steps=$2 log=$3
cleanup() { umount -l "$root/dev/pts" "$root/dev" "$root/sys" "$root/proc" 2>/dev/null; true; }
trap cleanup EXIT
trap 'exit 130' INT TERM
mkdir -p "$root/proc" "$root/sys" "$root/dev/pts" &&
  mount -t proc proc "$root/proc" && mount -t sysfs sysfs "$root/sys" &&
  mount --bind /dev "$root/dev" && mount --bind /dev/pts "$root/dev/pts" || exit 97
while IFS=$'\t' read -r name dir command; do
  echo "@@@step $name" >>"$log"
  started=$(date +%s.%N)
  chroot "$root" /usr/bin/env -i HOME=/root LANG=C.UTF-8 TERM=dumb \
    PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt \
    bash -c "cd $dir && $command" </dev/null >>"$log" 2>&1
  rc=$?
  printf '%s\t%s\t%s\n' "$name" "$rc" "$(awk "BEGIN { print $(date +%s.%N) - $started }")" \
    >>"$log.steps"
  [ "$rc" = 0 ] || exit 1
done <"$steps"
"""


def base_tarball() -> tuple[Path, float]:
    """The bare root as mmdebstrap makes it; built once per key. Seconds spent building."""
    key = hashlib.sha256(json.dumps([*MMDEBSTRAP, MIRROR]).encode()).hexdigest()[:16]
    tarball = CACHE / f"bookworm-standard-{key}.tar"
    CACHE.mkdir(parents=True, exist_ok=True)
    with filelock.FileLock(CACHE / ".lock", timeout=1800):
        if tarball.exists():
            return tarball, 0.0
        started = time.monotonic()
        partial = tarball.with_suffix(".partial.tar")
        result = subprocess.run([*MMDEBSTRAP, str(partial), MIRROR], stdin=subprocess.DEVNULL,
                                capture_output=True, text=True, timeout=1800)
        assert result.returncode == 0, result.stderr[-3000:]
        partial.rename(tarball)
        return tarball, time.monotonic() - started


def copy_checkout(target: Path) -> None:
    """What a fresh clone holds: HEAD (`git archive`); without git, the working tree's
    files but .git, .venv, node_modules and what runs wrote."""
    target.mkdir(parents=True)
    if (ROOT / ".git").exists() and shutil.which("git"):
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", "--format=tar", "HEAD"],
                                 capture_output=True, check=True, timeout=120).stdout
        subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True, timeout=120)
    else:
        shutil.copytree(ROOT, target, dirs_exist_ok=True, ignore=shutil.ignore_patterns(
            *LEFT_OUT, "__pycache__", "*.pyc", "*.egg-info"))
    (target / "reports").mkdir(exist_ok=True)


def prepare(root: Path) -> None:
    copy_checkout(root / CHECKOUT.lstrip("/"))
    # the host's trust and resolver: the registries are reached through them
    certs = root / "etc" / "ssl" / "certs"
    certs.mkdir(parents=True, exist_ok=True)
    shutil.copy2("/etc/ssl/certs/ca-certificates.crt", certs / "ca-certificates.crt")
    local_cas = Path("/usr/local/share/ca-certificates")
    if local_cas.is_dir():
        shutil.copytree(local_cas, root / "usr/local/share/ca-certificates", dirs_exist_ok=True)
    resolv = root / "etc" / "resolv.conf"
    if resolv.is_symlink() or resolv.exists():
        resolv.unlink()
    resolv.write_text(Path("/etc/resolv.conf").read_text())
    (root / "etc" / "pip.conf").write_text("[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n")
    # a chroot runs no init: packages must not start their daemons (etcd, sshd) in it
    policy = root / "usr" / "sbin" / "policy-rc.d"
    policy.write_text("#!/bin/sh\nexit 101\n")
    policy.chmod(0o755)
    (root / "elsewhere").mkdir()
    (root / "elsewhere" / "static.yaml").write_text(STATIC)   # nodes that refuse SSH


def processes_in(root: Path) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.readlink(entry / "root") == str(root):
                    found.append(int(entry.name))
            except OSError:
                pass
    return found


def mounts_under(root: Path) -> list[str]:
    return [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()
            if line.split()[4].startswith(str(root))]


@pytest.fixture(scope="module")
def fresh_root():
    if os.geteuid() != 0:
        pytest.fail("needs root: mmdebstrap, chroot and mounts", pytrace=False)
    for tool in ("mmdebstrap", "unshare", "chroot"):
        if not shutil.which(tool):
            pytest.fail(f"{tool} not found (scripts/install installs it)", pytrace=False)
    tarball, built = base_tarball()
    scratch = Path(tempfile.mkdtemp(prefix="k8sconf-fresh-debian-", dir="/var/tmp"))
    root = scratch / "root"
    root.mkdir()
    try:
        started = time.monotonic()
        subprocess.run(["tar", "--numeric-owner", "-xpf", str(tarball), "-C", str(root)],
                       check=True, timeout=600)
        prepare(root)
        yield {"root": root, "scratch": scratch, "built": built,
               "unpacked": time.monotonic() - started}
    finally:
        for pid in processes_in(root):   # ours: started inside this root
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        left = mounts_under(root)
        for mount in sorted(left, reverse=True):
            subprocess.run(["umount", "-l", mount], capture_output=True, timeout=60)
        assert not mounts_under(root), f"still mounted: {mounts_under(root)}"
        shutil.rmtree(scratch, ignore_errors=True)


def test_a_bare_debian_12_installs_and_passes(fresh_root, measured):
    root, scratch = fresh_root["root"], fresh_root["scratch"]
    steps_file, log = scratch / "steps.json", scratch / "log"
    steps_file.write_text("".join("\t".join(step) + "\n" for step in STEPS))
    process = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "bash", "-c",
                                RUNNER, "runner", str(root), str(steps_file), str(log)],
                               stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        output, _ = process.communicate(timeout=3600)
    except BaseException:   # the timeout, Ctrl-C: the namespace goes with its processes
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)
        raise
    assert not mounts_under(root), "the runner's mounts are visible outside its namespace"
    done = {}
    if (log.with_name("log.steps")).exists():
        for line in log.with_name("log.steps").read_text().splitlines():
            name, rc, seconds = line.split("\t")
            done[name] = (int(rc), float(seconds))
    text = log.read_text() if log.exists() else ""
    if fresh_root["built"]:
        measured["fresh Debian: mmdebstrap --variant=standard bookworm"] = \
            f"{fresh_root['built']:.0f} s"
    measured["fresh Debian: unpack + copy the checkout"] = f"{fresh_root['unpacked']:.0f} s"
    for name, (rc, seconds) in done.items():
        measured[f"fresh Debian: {name}"] = f"{seconds:.0f} s" + ("" if rc == 0 else f" (rc {rc})")
    failed = [name for name, (rc, _) in done.items() if rc != 0]
    assert process.returncode == 0 and not failed and list(done) == [s[0] for s in STEPS], \
        f"failed: {failed or process.returncode}\n{output[-2000:]}\n{text[-6000:]}"
    sections = dict(part.split("\n", 1) for part in text.split("@@@step ")[1:])
    assert "Python 3.11" in sections["bare"]
    assert f"{CHECKOUT}/.venv" in sections["installed"]
    assert sections["installed"].splitlines()[1].startswith("v18.")   # Debian 12's node
    assert "apt-get install" not in sections["install again"]
    assert "pip install" not in sections["install again"] and "npm ci" not in sections["install again"]
    assert " passed" in sections["tests"] and " failed" not in sections["tests"]
    assert "All checks passed!" in sections["lint and types"]
    assert "Success: no issues found in " in sections["lint and types"]
    assert f"rootdir: {CHECKOUT}" in sections["inventory elsewhere"]
    assert "reports/ untouched" in sections["reports elsewhere"]
    assert "found: " in sections["self-contained"]
