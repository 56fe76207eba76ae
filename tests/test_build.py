"""The guide's first two sections automated (helpers/bootstrap/build.py): sources verified by
the sha256 of their file tree, our patches, the cache, one-line failures, the fallback to
the stand-ins, and the real build itself (with $K8SCONF_SOURCES, as CI has it)."""
from __future__ import annotations

import gzip
import io
import json
import os
import subprocess
import sys
import tarfile
import time
from dataclasses import replace
from pathlib import Path

import pytest

from helpers import lifecycle, spec
from helpers.bootstrap import artifacts, build
from helpers.bootstrap.steps import StepLog
from helpers.inventory import ROOT, parse
from helpers.inventory_sections import Artifacts
from helpers.providers.base import ProviderUnavailable
from helpers.summary import SignOff, binaries_lines


def make_tarball(path: Path, files: dict[str, bytes], *, top: str = "proj-1.0",
                 executable: tuple[str, ...] = (), level: int = 9) -> Path:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(f"{top}/{name}")
            info.size, info.mode = len(data), 0o755 if name in executable else 0o644
            tar.addfile(info, io.BytesIO(data))
    path.write_bytes(gzip.compress(raw.getvalue(), compresslevel=level, mtime=0))
    return path


FILES = {"main.go": b"package main\n", "contrib/podex/podex": b"\x7fELF prebuilt",
         "build/x.sh": b"#!/bin/sh\n"}


def test_the_tree_digest_ignores_the_packing_but_not_the_tree(tmp_path):
    one = make_tarball(tmp_path / "a.tar.gz", FILES, executable=("build/x.sh",))
    other = make_tarball(tmp_path / "b.tar.gz", FILES, executable=("build/x.sh",), level=1,
                         top="other-name")
    assert one.read_bytes() != other.read_bytes()
    assert build.tree_digest(one) == build.tree_digest(other)
    changed = make_tarball(tmp_path / "c.tar.gz", {**FILES, "main.go": b"package other\n"},
                           executable=("build/x.sh",))
    not_executable = make_tarball(tmp_path / "d.tar.gz", FILES)
    assert build.tree_digest(changed) != build.tree_digest(one)
    assert build.tree_digest(not_executable) != build.tree_digest(one)


def test_excluded_folders_do_not_count(tmp_path):
    """Mirrors have been seen without contrib/'s prebuilt files; no binary is built from it."""
    full = make_tarball(tmp_path / "full.tar.gz", FILES)
    lacking = make_tarball(tmp_path / "lacking.tar.gz",
                           {k: v for k, v in FILES.items() if not k.startswith("contrib/")})
    assert build.tree_digest(full) != build.tree_digest(lacking)
    assert build.tree_digest(full, ("contrib/",)) == build.tree_digest(lacking, ("contrib/",))


def test_a_damaged_tarball_is_one_line(tmp_path):
    bad = tmp_path / "bad.tar.gz"
    bad.write_bytes(b"not gzip at all")
    with pytest.raises(build.SourcesUnavailable) as caught:
        build.tree_digest(bad)
    assert "\n" not in str(caught.value) and str(bad) in str(caught.value)


def _source(tmp_path, files=FILES, **overrides) -> build.Source:
    tarball = make_tarball(tmp_path / "proj-1.0.tar.gz", files)
    fields = {"name": "proj", "version": "1.0", "import_path": "example.com/proj",
              "url": "http://127.0.0.1:9/proj.tar.gz", "tree_sha256": build.tree_digest(tarball)}
    return build.Source(**{**fields, **overrides})


def test_sources_from_the_directory_named_by_the_environment(tmp_path, monkeypatch):
    source = _source(tmp_path)
    monkeypatch.setenv(build.SOURCES_ENV, str(tmp_path))
    path, origin = build.locate(source, tmp_path / "downloads")
    assert path == tmp_path / "proj-1.0.tar.gz" and origin == str(path)
    missing = replace(source, version="2.0")
    with pytest.raises(build.SourcesUnavailable, match=r"no proj-2\.0\.tar\.gz there"):
        build.locate(missing, tmp_path / "downloads")
    wrong = replace(source, tree_sha256="0" * 64)
    with pytest.raises(build.SourcesUnavailable) as caught:
        build.locate(wrong, tmp_path / "downloads")
    assert "its file tree has sha256" in str(caught.value) and "0" * 64 in str(caught.value)
    assert path.exists()   # a user's own copy is never removed


def test_sources_downloaded_from_their_url_and_checked(tmp_path, monkeypatch, httpserver):
    monkeypatch.delenv(build.SOURCES_ENV, raising=False)
    served = tmp_path / "served"
    served.mkdir()
    source = _source(served)
    httpserver.expect_request("/proj.tar.gz").respond_with_data(
        (served / "proj-1.0.tar.gz").read_bytes())
    source = replace(source, url=httpserver.url_for("/proj.tar.gz"))
    path, origin = build.locate(source, tmp_path / "downloads")
    assert origin == source.url and path.read_bytes() == (served / "proj-1.0.tar.gz").read_bytes()
    # a download whose tree is wrong is not kept
    with pytest.raises(build.SourcesUnavailable, match="its file tree has sha256"):
        build.locate(replace(source, tree_sha256="1" * 64), tmp_path / "downloads")
    assert not path.exists()


def test_an_unreachable_source_says_how_to_provide_it(tmp_path, monkeypatch):
    monkeypatch.delenv(build.SOURCES_ENV, raising=False)
    source = _source(tmp_path, url="http://127.0.0.1:9/nothing-listens-here.tar.gz")
    with pytest.raises(build.SourcesUnavailable) as caught:
        build.locate(source, tmp_path / "downloads")
    text = str(caught.value)
    assert "\n" not in text and source.url in text
    assert f"set {build.SOURCES_ENV} to a directory holding flannel-0.2.0.tar.gz" in text


def test_the_known_trees_and_patches():
    assert {s.name: s.version for s in build.SOURCES} == {"flannel": "0.2.0",
                                                          "kubernetes": "0.7.0"}
    patches = build.patches_for(build.KUBERNETES)
    assert [p.name for p in patches] == sorted(p.name for p in patches) and len(patches) == 2
    for patch in patches:   # each says why, in its header, before the diff
        header = patch.read_text().split("\n--- ", 1)[0]
        assert len(header.split()) > 20, patch.name
    assert build.patches_for(build.FLANNEL) == []   # flannel builds unchanged


def test_the_cache_key_covers_our_patches_and_node_programs(tmp_path, monkeypatch):
    key = build.cache_key()
    patches = tmp_path / "patches" / "kubernetes-0.7.0"
    patches.mkdir(parents=True)
    (patches / "0001-x.patch").write_text("a fix\n")
    programs = tmp_path / "node" / "tool"
    programs.mkdir(parents=True)
    (programs / "main.go").write_text("package main\n")
    monkeypatch.setattr(build, "ROOT", tmp_path)
    monkeypatch.setattr(build, "PATCHES", tmp_path / "patches")
    monkeypatch.setattr(build, "NODE_PROGRAMS", tmp_path / "node")
    first = build.cache_key()
    (patches / "0001-x.patch").write_text("another fix\n")
    assert build.cache_key() not in (first, key)


def test_a_cached_build_builds_nothing(tmp_path, monkeypatch):
    done = tmp_path / "build" / build.cache_key()
    done.mkdir(parents=True)
    (done / "build.json").write_text("{}")
    monkeypatch.setattr(build, "_build", lambda *a: pytest.fail("built again"))
    monkeypatch.setattr(build, "locate", lambda *a: pytest.fail("looked for sources"))
    assert build.ensure(tmp_path, StepLog()).dir == done


def test_a_failed_step_is_one_line_naming_it_and_its_log(tmp_path):
    with pytest.raises(build.BuildError) as caught:
        build._run("go build example", [sys.executable, "-c", "print('cmd/x: undefined: y');"
                                        "raise SystemExit(2)"], tmp_path, StepLog())
    text = str(caught.value)
    log = tmp_path / "go-build-example.log"
    assert text == f"build step 'go build example' failed (exit 2); see {log}"
    assert "undefined: y" in log.read_text()
    with pytest.raises(build.BuildError, match="no-such-go not found"):
        build._run("go build example", ["no-such-go", "build"], tmp_path, StepLog())


# -- the fallback to the stand-ins ------------------------------------------------------------

def _lifecycle(require_real: bool, lines: list):
    inventory = parse({"provider": "local", "artifacts": {"build": True}})
    run = lifecycle.ClusterLifecycle(inventory, Path("inventory.yaml"), keep=False,
                                     reuse=False, bootstrap=True, require_real=require_real,
                                     progress=lambda step: lines.append(step.name))
    return run


def _no_sources(monkeypatch):
    def unavailable(*args, **kwargs):
        raise build.SourcesUnavailable("cannot download https://example.invalid/x.tar.gz")
    monkeypatch.setattr(artifacts.build_mod, "ensure", unavailable)


def test_without_sources_the_run_says_so_and_falls_back_to_the_standins(monkeypatch):
    _no_sources(monkeypatch)
    lines: list[str] = []
    binaries = _lifecycle(False, lines)._binaries()
    assert binaries.standins and "kubelet" in binaries.files
    assert binaries.fallback == "cannot download https://example.invalid/x.tar.gz"
    assert len(lines) == 1 and "the real binaries cannot be had" in lines[0]
    assert "NOT A RELEASE VERDICT" in lines[0] and "--require-real" in lines[0]
    assert all(artifacts.STANDIN_MARK in v for v in binaries.versions.values())


def test_require_real_refuses_the_fallback(monkeypatch):
    _no_sources(monkeypatch)
    lines: list[str] = []
    with pytest.raises(ProviderUnavailable, match="^--require-real: the real binaries cannot be had"):
        _lifecycle(True, lines)._binaries()
    assert lines == []


def artifacts_of(data: dict) -> Artifacts:
    found = parse(data).artifacts
    assert found is not None, data
    return found


def test_standins_given_as_real_binaries_are_refused(tmp_path):
    with pytest.raises(artifacts.ArtifactError, match="mark them 'standins: true'"):
        artifacts.resolve(artifacts_of({"provider": "local", "artifacts": {
            "dir": str(artifacts.STANDINS_DIR)}}), tmp_path)


def test_a_standin_run_is_never_a_release_verdict():
    signoff = SignOff()
    signoff.results["x"] = ("passed", "area", "coreos-1", "")
    assert signoff.verdict({"binaries": {"standins": False}}) == "PASS"
    assert signoff.verdict({"binaries": {"standins": True}}).startswith("NOT A RELEASE VERDICT")
    signoff.results["y"] = ("failed", "area", "coreos-1", "")
    assert signoff.verdict({"binaries": {"standins": True}}) == (
        "NOT A RELEASE VERDICT (this project's stand-ins ran, not the guide's binaries; "
        "1 check failed)")


def test_refused_before_anything_is_created(tmp_path):
    """`--require-real` with no source and no cache: one line, exit 4, no cluster."""
    if os.geteuid() != 0:
        pytest.fail("needs root: the local provider's preflight runs first")
    inventory = tmp_path / "real.yaml"
    inventory.write_text("provider: local\nartifacts: {build: true}\n"
                         "local: {prefix: k8snosrc, public_network: 192.168.31.0/24, "
                         "private_network: 10.131.0.0/24}\n")
    env = {**os.environ, build.SOURCES_ENV: str(tmp_path / "empty"),
           "K8SCONF_CACHE": str(tmp_path / "cache"), "K8SCONF_REPORTS": str(tmp_path / "r")}
    (tmp_path / "empty").mkdir()
    result = subprocess.run([sys.executable, "-m", "pytest", "suites", "--inventory",
                             str(inventory), "--require-real", "-p", "no:cacheprovider", "-q"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    errors = [line for line in (result.stdout + result.stderr).splitlines() if "ERROR" in line]
    assert result.returncode == 4, result.stdout[-2000:] + result.stderr[-2000:]
    assert errors == [f"ERROR: --require-real: the real binaries cannot be had: "
                      f"{build.SOURCES_ENV}={tmp_path / 'empty'}: no flannel-0.2.0.tar.gz there"]
    assert "Traceback" not in result.stdout + result.stderr
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert "k8snosrc" not in netns and not (tmp_path / "r" / "cluster" / "state.json").exists()


# -- the real build -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def real_build():
    """The real binaries, as a conformance run gets them (cached after the first run)."""
    log = StepLog()
    started = time.monotonic()
    try:
        built = build.ensure(lifecycle.CACHE_DIR, log)
    except build.SourcesUnavailable as exc:   # a missing source is a failure, never a skip
        pytest.fail(f"{exc} (CI sets {build.SOURCES_ENV} in .ci/run)", pytrace=False)
    return built, log, time.monotonic() - started


def test_the_real_build_makes_the_guides_release(real_build):
    built, log, seconds = real_build
    record = built.record
    names = sorted(p.name for p in built.opt_bin.iterdir())
    assert names == sorted(["flannel", *spec.RELEASE_BINARIES])
    versions = {n: i["version"] for n, i in record["binaries"].items()}
    for name in ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kube-proxy",
                 "kubelet", "kubecfg"):
        assert versions[name] == spec.KUBERNETES_VERSION, (name, versions[name])
    assert versions["flannel"] == spec.FLANNEL_VERSION
    assert "GitVersion:\"v0.7.0\"" in versions["kubectl"]
    assert record["patches"] == [str(p.relative_to(ROOT)) for p in
                                 build.patches_for(build.KUBERNETES)]
    assert record["sources"]["kubernetes"]["tree_sha256"] == build.KUBERNETES.tree_sha256
    assert sorted(p.name for p in built.node_programs.iterdir()) == ["docker-api-pin",
                                                                    "pause.tar"]
    for name, info in record["binaries"].items():
        assert artifacts.sha256_of(built.opt_bin / name) == info["sha256"]
    steps = [s.name for s in log.steps]
    print(f"\nreal build: {seconds:.1f} s ({'built now: ' + ', '.join(steps) if steps else 'cached'})")


def test_a_second_run_builds_nothing(real_build, monkeypatch):
    built, _, _ = real_build
    monkeypatch.setattr(build, "_build", lambda *a: pytest.fail("built again"))
    log = StepLog()
    assert build.ensure(lifecycle.CACHE_DIR, log).dir == built.dir and log.steps == []


def test_the_real_binaries_are_what_resolve_ships(real_build):
    binaries = artifacts.resolve(artifacts_of({"provider": "local", "artifacts": {"build": True}}),
                                 lifecycle.CACHE_DIR)
    assert not binaries.standins and binaries.origin.startswith("built from source here")
    assert set(binaries.node_programs) == {"docker-api-pin", "pause.tar"}
    text = "\n".join(binaries_lines(binaries.summary()))
    assert "the guide's real binaries" in text and "Kubernetes v0.7.0" in text
    assert "0001-go-bindata-assetfs-size-is-ambiguous.patch" in text
    assert json.dumps(binaries.summary())   # it goes into the state file
