"""The guide's first two sections, automated: flannel v0.2.0 and Kubernetes v0.7.0 built
from their upstream source trees with Debian's Go, in GOPATH mode with the vendored
dependencies, plus the small compatibility patches today's Go needs (`patches/`).

Sources: the directory named by K8SCONF_SOURCES, holding `flannel-0.2.0.tar.gz` and
`kubernetes-0.7.0.tar.gz`, or else the upstream tag archives. Each is verified by the
sha256 of its file tree (paths, exec bits and contents), not of the tarball: gzip bytes
differ between packers, and the tree is what the build reads. Kubernetes' `contrib/` is
left out of the digest: no binary is built from it, and mirrors have been seen without
its prebuilt files.

The result is cached under `<cache>/build/<key>`; the key covers the trees, the patches,
our node programs (`node/`) and the recipe, so a second run builds nothing.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import signal
import subprocess
import tarfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from helpers.bootstrap.steps import StepLog

ROOT = Path(__file__).resolve().parents[2]
PATCHES = ROOT / "patches"
NODE_PROGRAMS = ROOT / "node"
SOURCES_ENV = "K8SCONF_SOURCES"
RECIPE_VERSION = 1
DOWNLOAD_TIMEOUT = 120
STEP_TIMEOUT = 900
VERSION_TIMEOUT = 10
K8S_PKG = "github.com/GoogleCloudPlatform/kubernetes"


class SourcesUnavailable(Exception):
    """The sources cannot be had and nothing is cached: str() is the one line to show."""


class BuildError(Exception):
    """A build step failed: str() names the step and its log file."""


@dataclass(frozen=True)
class Source:
    name: str
    version: str
    import_path: str
    url: str
    tree_sha256: str
    exclude: tuple[str, ...] = ()

    @property
    def tarball(self) -> str:
        return f"{self.name}-{self.version}.tar.gz"


FLANNEL = Source("flannel", "0.2.0", "github.com/coreos/flannel",
                 "https://github.com/flannel-io/flannel/archive/refs/tags/v0.2.0.tar.gz",
                 "bffaa5a92c6c48834dcf9b38cf988f5e186f46c1ae86e1465e5787dbb6ce3aea")
KUBERNETES = Source("kubernetes", "0.7.0", K8S_PKG,
                    "https://github.com/kubernetes/kubernetes/archive/refs/tags/v0.7.0.tar.gz",
                    "6c7ec537b46727a8845fb3018eae7a9f3ab6c8fc715457770dbfb75d7c20929e",
                    exclude=("contrib/",))
SOURCES = (FLANNEL, KUBERNETES)

# What the guide's release directory listed (e2e and integration are test programs).
K8S_TARGETS = {
    "kube-apiserver": "cmd/kube-apiserver", "kube-controller-manager": "cmd/kube-controller-manager",
    "kube-scheduler": "plugin/cmd/kube-scheduler", "kube-proxy": "cmd/kube-proxy",
    "kubelet": "cmd/kubelet", "kubecfg": "cmd/kubecfg", "kubectl": "cmd/kubectl",
    "kubernetes": "cmd/kubernetes", "e2e": "cmd/e2e", "integration": "cmd/integration",
}
# How each binary is asked for its version; None: not asked (`integration` would start
# its test run, and the all-in-one `kubernetes` has no version flag).
VERSION_ARGS = {"kubectl": ["version", "--client"], "e2e": None, "integration": None,
                "kubernetes": None}
# As the release's hack/lib/version.sh injects them.
K8S_VERSION_VARS = {"gitVersion": "v0.7.0", "gitCommit": "ad44234f7152e9c66bc2853575445c7071335e57",
                    "gitTreeState": "clean", "gitMajor": "0", "gitMinor": "7"}
PAUSE_IMAGE = "kubernetes/pause:latest"


# -- sources -----------------------------------------------------------------------------
def tree_digest(tarball: Path, exclude: tuple[str, ...] = ()) -> str:
    """sha256 over `path exec-bit sha256` (or `path link target`) of every file in the
    tarball below its top folder, sorted by path."""
    entries = []
    try:
        with tarfile.open(tarball, "r:gz") as tar:
            for member in tar:
                rel = member.name.partition("/")[2]
                if not rel or member.isdir() or rel.startswith(exclude):
                    continue
                if member.issym():
                    entries.append(f"{rel}\0link\0{member.linkname}\n")
                elif member.isfile():
                    handle = tar.extractfile(member)
                    assert handle is not None  # a regular file's
                    data = handle.read()
                    mode = "x" if member.mode & 0o111 else "-"
                    entries.append(f"{rel}\0{mode}\0{hashlib.sha256(data).hexdigest()}\n")
    except (tarfile.TarError, OSError, EOFError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise SourcesUnavailable(f"{tarball}: not a readable tar.gz ({reason})") from None
    digest = hashlib.sha256()
    for entry in sorted(entries):
        digest.update(entry.encode())
    return digest.hexdigest()


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def how_to_provide() -> str:
    names = " and ".join(s.tarball for s in SOURCES)
    return f"set {SOURCES_ENV} to a directory holding {names}"


def locate(source: Source, downloads: Path) -> tuple[Path, str]:
    """The verified tarball, and where it came from."""
    given = os.environ.get(SOURCES_ENV)
    if given:
        path = Path(given).expanduser() / source.tarball
        if not path.is_file():
            raise SourcesUnavailable(f"{SOURCES_ENV}={given}: no {source.tarball} there")
        origin = str(path)
    else:
        path, origin = downloads / source.tarball, source.url
        if not path.is_file():
            _download(source, path)
    found = tree_digest(path, source.exclude)
    if found != source.tree_sha256:
        if not given:
            path.unlink()   # a bad download is not kept: the next run fetches it again
        raise SourcesUnavailable(f"{origin}: its file tree has sha256 {found}, expected "
                                 f"{source.tree_sha256} ({source.name} {source.version})")
    return path, origin


def _download(source: Source, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".part")
    try:
        with urllib.request.urlopen(source.url, timeout=DOWNLOAD_TIMEOUT) as answer, \
                open(partial, "wb") as out:
            shutil.copyfileobj(answer, out)
    except BaseException as exc:
        partial.unlink(missing_ok=True)   # an interrupt, too, leaves no half a tarball
        if not isinstance(exc, (OSError, ValueError)):
            raise
        reason = getattr(exc, "reason", exc)
        raise SourcesUnavailable(f"cannot download {source.url} ({reason}); "
                                 f"{how_to_provide()}") from None
    partial.replace(target)


# -- the cache key -------------------------------------------------------------------------
def _inputs() -> list[Path]:
    """Our files that go into the build: the patches and the node programs."""
    found = [p for p in sorted(PATCHES.rglob("*.patch"))]
    found += [p for p in sorted(NODE_PROGRAMS.rglob("*.go"))]
    return found


def patches_for(source: Source) -> list[Path]:
    return sorted((PATCHES / f"{source.name}-{source.version}").glob("*.patch"))


def cache_key() -> str:
    digest = hashlib.sha256(f"recipe {RECIPE_VERSION}\n".encode())
    for source in SOURCES:
        digest.update(f"{source.name} {source.tree_sha256}\n".encode())
    for path in _inputs():
        digest.update(f"{path.relative_to(ROOT)} {file_sha256(path)}\n".encode())
    return digest.hexdigest()[:16]


# -- building ------------------------------------------------------------------------------
@dataclass
class Built:
    """A finished build: /opt/bin's files, the node programs, and what made them."""

    dir: Path

    @property
    def opt_bin(self) -> Path:
        return self.dir / "opt-bin"

    @property
    def node_programs(self) -> Path:
        return self.dir / "node"

    @property
    def record(self) -> dict:
        return json.loads((self.dir / "build.json").read_text())


def cached(cache: Path) -> Built | None:
    found = cache / "build" / cache_key()
    return Built(found) if (found / "build.json").is_file() else None


def ensure(cache: Path, log: StepLog) -> Built:
    """The real binaries: from the cache, or built now (sources first, so that a missing
    source is one line before anything else happens)."""
    done = cached(cache)
    if done:
        return done
    root = cache / "build"
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)   # a second run waits, then finds it built
        done = cached(cache)
        if done:
            return done
        with log.step("locate and verify the sources (sha256 of each file tree)") as step:
            tarballs = {s.name: locate(s, cache / "sources") for s in SOURCES}
            step.attach("sources", "\n".join(f"{n}: {o}" for n, (_, o) in tarballs.items()))
        return _build(root, tarballs, log)


def _build(root: Path, tarballs: dict[str, tuple[Path, str]], log: StepLog) -> Built:
    key = cache_key()
    for stale in root.glob(".tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    work = root / f".tmp-{key}-{os.getpid()}"
    logs = root / f"logs-{key}"
    shutil.rmtree(logs, ignore_errors=True)
    logs.mkdir(parents=True)
    started = time.monotonic()
    try:
        out = work / "out"
        (out / "opt-bin").mkdir(parents=True)
        (out / "node").mkdir()
        gopath = work / "gopath"
        trees = {s.name: _unpack(s, tarballs[s.name][0], gopath, logs, log) for s in SOURCES}
        env = _go_env(root)
        _go_build_kubernetes(trees["kubernetes"], gopath, out / "opt-bin", env, logs, log)
        _go_build_flannel(trees["flannel"], gopath, out / "opt-bin", env, logs, log)
        _go_build_node_programs(trees["kubernetes"], gopath, out / "node", env, logs, log)
        record = _record(out, tarballs, env, logs, time.monotonic() - started)
        (out / "build.json").write_text(json.dumps(record, indent=2) + "\n")
        final = root / key
        shutil.rmtree(final, ignore_errors=True)
        out.rename(final)
        return Built(final)
    except KeyboardInterrupt:   # Ctrl-C or SIGTERM: nothing of this build stays
        shutil.rmtree(logs, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _run(step: str, cmd: list[str], logs: Path, log: StepLog, **kwargs) -> str:
    """One build step; its output goes to its own log file, named when it fails."""
    path = logs / (step.replace(" ", "-").replace("/", "-") + ".log")
    with log.step(f"build: {step}"), open(path, "w") as out:
        out.write(f"$ {' '.join(cmd)}\n")
        out.flush()
        try:
            returncode = _run_group(cmd, out, **kwargs)
        except FileNotFoundError:
            raise BuildError(f"build step '{step}': {cmd[0]} not found (scripts/install "
                             "installs golang-go, gcc and patch)") from None
        except subprocess.TimeoutExpired:
            raise BuildError(f"build step '{step}' did not finish within {STEP_TIMEOUT} s; "
                             f"see {path}") from None
    if returncode != 0:
        raise BuildError(f"build step '{step}' failed (exit {returncode}); see {path}")
    return path.read_text()


def _run_group(cmd: list[str], out, **kwargs) -> int:
    """A step in a process group of its own, all of it ended by a timeout or an interrupt:
    killing `go` alone leaves its compilers and linker running (and writing)."""
    proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True, **kwargs)
    try:
        return proc.wait(timeout=STEP_TIMEOUT)
    except BaseException:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
        raise


def _unpack(source: Source, tarball: Path, gopath: Path, logs: Path, log: StepLog) -> Path:
    tree = gopath / "src" / source.import_path
    tree.parent.mkdir(parents=True, exist_ok=True)
    with log.step(f"build: unpack {source.tarball}"):
        staging = tree.parent / f".{source.name}"
        with tarfile.open(tarball) as tar:
            tar.extractall(staging, filter="data")
        (top,) = staging.iterdir()
        top.rename(tree)
        staging.rmdir()
    for patch in patches_for(source):
        _run(f"patch {source.name} {patch.stem}", ["patch", "-p1", "--batch", "--forward",
             "-d", str(tree), "-i", str(patch)], logs, log)
    return tree


def _go_env(root: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GO")}
    return env | {"GO111MODULE": "off", "GOFLAGS": "", "GOPROXY": "off",
                  "GOCACHE": str(root / "gocache"), "HOME": str(root)}


def _go_build_kubernetes(tree: Path, gopath: Path, out: Path, env: dict, logs: Path,
                         log: StepLog) -> None:
    ldflags = " ".join(f"-X {K8S_PKG}/pkg/version.{k}={v}" for k, v in K8S_VERSION_VARS.items())
    env = env | {"GOPATH": f"{tree}/Godeps/_workspace:{gopath}", "CGO_ENABLED": "0"}
    _run("go build kubernetes", ["go", "build", "-ldflags", ldflags, "-o", f"{out}/",
         *(f"./{path}" for path in K8S_TARGETS.values())], logs, log, cwd=tree, env=env)


def _go_build_flannel(tree: Path, gopath: Path, out: Path, env: dict, logs: Path,
                      log: StepLog) -> None:
    # its UDP backend is C (cgo); linked statically so that any node OS can run it. The
    # guide's `go get` names the binary `flannel` (upstream's Makefile says flanneld).
    env = env | {"GOPATH": f"{tree}/Godeps/_workspace:{gopath}", "CGO_ENABLED": "1"}
    _run("go build flannel", ["go", "build", "-tags", "netgo,osusergo", "-ldflags",
         '-extldflags "-static"', "-o", str(out / "flannel"), "."], logs, log,
         cwd=tree, env=env)


def _go_build_node_programs(k8s_tree: Path, gopath: Path, out: Path, env: dict, logs: Path,
                            log: StepLog) -> None:
    """Not the guide's: what the declared deviations run on the nodes. The pause program is
    v0.7.0's own (build/pause), packed as the kubelet's network container image."""
    env = env | {"GOPATH": str(gopath), "CGO_ENABLED": "0"}
    _run("go build pause", ["go", "build", "-o", str(out / "pause"), "./build/pause"],
         logs, log, cwd=k8s_tree, env=env)
    with tarfile.open(out / "pause.tar", "w") as tar:
        tar.add(out / "pause", arcname="pause")
    (out / "pause").unlink()
    for program in sorted(p for p in NODE_PROGRAMS.iterdir() if (p / "main.go").is_file()):
        _run(f"go build {program.name}", ["go", "build", "-o", str(out / program.name), "."],
             logs, log, cwd=program, env=env)


def version_of(binary: Path) -> str:
    """What the binary says of its version (Kubernetes on stdout, flannel on stderr)."""
    args = VERSION_ARGS.get(binary.name, ["-version"])
    if args is None:
        return "(not asked)"
    try:
        proc = subprocess.run([str(binary), *args], capture_output=True, text=True,
                              timeout=VERSION_TIMEOUT, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"(no answer: {exc})"
    lines = (proc.stdout + proc.stderr).strip().splitlines()
    return lines[0].strip() if lines else "(no answer)"


def _record(out: Path, tarballs: dict, env: dict, logs: Path, seconds: float) -> dict:
    go = subprocess.run(["go", "version"], capture_output=True, text=True, env=env,
                        timeout=VERSION_TIMEOUT).stdout.strip()
    binaries = {p.name: {"sha256": file_sha256(p), "version": version_of(p)}
                for p in sorted((out / "opt-bin").iterdir())}
    return {
        "key": cache_key(), "go": go, "seconds": round(seconds, 1), "logs": str(logs),
        "sources": {s.name: {"version": s.version, "from": tarballs[s.name][1],
                             "tarball_sha256": file_sha256(tarballs[s.name][0]),
                             "tree_sha256": s.tree_sha256} for s in SOURCES},
        "patches": [str(p.relative_to(ROOT)) for p in _inputs() if p.suffix == ".patch"],
        "binaries": binaries,
        "node_programs": {p.name: file_sha256(p) for p in sorted((out / "node").iterdir())},
    }
