"""The project as an installed package: the pytest11 entry point, the lock, --inventory PATH
from anywhere, and --reports-dir moving everything a run writes. No cluster, no network:
a static inventory whose nodes refuse SSH on loopback makes a whole run in seconds."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
import yaml

from helpers.paths import ROOT
from tests.project import copy_project

VENV_PYTEST = Path(sys.executable).parent / "pytest"


def run(argv, cwd, env=None, timeout=180):
    environment = {k: v for k, v in os.environ.items()
                   if k not in ("K8SCONF_REPORTS", "PYTEST_ADDOPTS")}
    environment.update(env or {})
    return subprocess.run(argv, cwd=cwd, env=environment, capture_output=True, text=True,
                          timeout=timeout)


def local_inventory(where: Path, count: int) -> Path:
    data = yaml.safe_load((ROOT / "inventories" / "local.yaml").read_text())
    data["local"] = {**data.get("local", {}), "count": count}
    where.mkdir(parents=True, exist_ok=True)
    path = where / "x.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def static_inventory(where: Path) -> Path:
    where.mkdir(parents=True, exist_ok=True)
    path = where / "static.yaml"
    path.write_text(yaml.safe_dump({
        "provider": "static",
        "nodes": [{"name": "coreos-1", "role": "master", "public_ip": "127.0.0.1",
                   "private_ip": "127.0.0.1"},
                  {"name": "coreos-2", "role": "minion", "public_ip": "127.0.0.2",
                   "private_ip": "127.0.0.2"}],
        "ssh": {"port": 9, "connect_timeout": 1, "command_timeout": 2,
                "host_key_policy": "accept-new"},
        "bootstrap": {"enabled": False}}))
    return path


def tree(path: Path) -> dict[str, float]:
    return {str(p.relative_to(path)): p.stat().st_mtime for p in path.rglob("*")} \
        if path.exists() else {}


@pytest.fixture
def project_copy(tmp_path) -> Path:
    """The suite in a scratch directory, so that its reports/ is nobody else's."""
    return copy_project(tmp_path / "project")


# -- the package ---------------------------------------------------------------------------

def test_the_plugin_is_an_installed_pytest11_entry_point():
    points = [p for p in metadata.entry_points(group="pytest11") if p.name == "k8sconf"]
    assert [p.value for p in points] == ["helpers.entry"], \
        "the project is not installed: bash scripts/install"
    urls = [json.loads(d.read_text("direct_url.json") or "{}")
            for d in metadata.distributions(name="k8s-coreos-conformance")]
    assert {"url": ROOT.as_uri(), "dir_info": {"editable": True}} in urls
    assert Path(sys.prefix) == ROOT / ".venv", f"not run from .venv: {sys.prefix}"


def test_runtime_and_test_dependencies_are_apart_and_locked_with_hashes():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pin = re.compile(r"([\w.-]+)==([\w.]+)")
    runtime = dict(pin.findall("\n".join(project["dependencies"])))
    test = dict(pin.findall("\n".join(project["optional-dependencies"]["test"])))
    assert len(runtime) == len(project["dependencies"]), "a runtime dependency is not pinned"
    assert len(test) == len(project["optional-dependencies"]["test"]), "a test one is not pinned"
    assert {"pytest", "paramiko", "pydantic", "pydo", "cryptography"} <= set(runtime)
    assert set(test) == {"hypothesis", "pytest-httpserver", "selenium", "ruff", "mypy",
                         "types-PyYAML", "types-paramiko"} and not set(test) & set(runtime)
    text = (ROOT / "requirements.lock").read_text()
    locked = dict(re.findall(r"^([\w.-]+)==(\S+) \\$", text, re.M))
    norm = lambda name: re.sub(r"[-_.]+", "-", name).lower()  # noqa: E731
    locked = {norm(k): v for k, v in locked.items()}
    for name, version in {**runtime, **test}.items():
        assert locked[norm(name)] == version, name
    entries = re.split(r"\n(?=[\w.-]+==)", text.split("\n\n", 1)[1])
    assert all("--hash=sha256:" in entry for entry in entries if "==" in entry)
    assert "setuptools" in locked   # the editable build's backend is pinned too
    installed = {norm(d.metadata["Name"]): d.version for d in metadata.distributions()}
    for name, version in locked.items():
        if name not in ("pip",):
            assert installed.get(name) == version, f"{name}: .venv has {installed.get(name)}"


def test_scripts_use_the_venv_only():
    for script in ("test", "conformance", "report", "benchmark"):
        text = (ROOT / "scripts" / script).read_text()
        assert not re.search(r"^[^#\n]*(?<![\w/.])python3? -m (pytest|helpers|pip)", text, re.M), script
    assert ".venv/bin/python -m pytest" in (ROOT / "scripts" / "test").read_text()
    install = (ROOT / "scripts" / "install").read_text()
    assert "--require-hashes" in install and "-r requirements.lock" in install
    assert "-m venv" in install and "python3-venv" in install and "nodejs npm" in install


# -- --inventory PATH, from anywhere -------------------------------------------------------

@pytest.mark.parametrize("where", ["checkout", "elsewhere"])
@pytest.mark.parametrize("form", ["space", "equals"])
def test_an_inventory_outside_the_checkout_from_anywhere(tmp_path, where, form):
    inventory = local_inventory(tmp_path / "elsewhere", count=2)
    cwd = ROOT if where == "checkout" else tmp_path / "cwd"
    cwd.mkdir(exist_ok=True)
    option = ["--inventory", str(inventory)] if form == "space" else [f"--inventory={inventory}"]
    for argv in ([str(VENV_PYTEST)], [sys.executable, "-m", "pytest"]):
        result = run([*argv, *option, "--collect-only"], cwd)
        output = result.stdout + result.stderr
        assert result.returncode == 0, output[-3000:]
        assert f"rootdir: {ROOT}" in output and "configfile: pytest.ini" in output
        ids = re.findall(r"<Function (\S+)>", output)
        assert ids and any("coreos-2" in i for i in ids)
        assert not any("coreos-3" in i for i in ids)   # the file's count: 2, not local.yaml's 3
        assert "test_units.py" in output and "tests/test_" not in output
    assert not (tmp_path / "cwd" / "reports").exists()


def test_unknown_plugin_paths_still_root_in_the_checkout(tmp_path):
    """A path argument beside the option: the run is that path, rooted in the checkout."""
    inventory = local_inventory(tmp_path / "elsewhere", count=1)
    result = run([str(VENV_PYTEST), str(ROOT / "suites" / "test_etcd.py"), "--inventory",
                  str(inventory), "--collect-only", "-q"], tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    assert "test_etcd.py" in result.stdout and "test_units.py" not in result.stdout


def test_without_the_entry_point_conftest_loads_the_plugin_once(tmp_path):
    inventory = local_inventory(tmp_path, count=1)
    result = run([sys.executable, "-m", "pytest", "-p", "no:k8sconf",
                  f"--inventory={inventory}", "--collect-only", "-q"], ROOT)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    refused = run([sys.executable, "-m", "pytest", "-p", "no:k8sconf", f"--inventory={inventory}",
                   f"--reports-dir={tmp_path / 'r'}", "--collect-only", "-q"], ROOT)
    assert refused.returncode == 4
    assert "--reports-dir needs the plugin installed" in refused.stdout + refused.stderr


# -- --reports-dir -------------------------------------------------------------------------

@pytest.mark.slow
def test_reports_dir_moves_everything_a_run_writes(tmp_path, project_copy):
    inventory = static_inventory(tmp_path / "elsewhere")
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    before = tree(project_copy / "reports")
    own = {"PYTHONPATH": str(project_copy)}   # the copy's helpers, not the installed ones
    result = run([sys.executable, "-m", "pytest", str(project_copy / "suites"), "--inventory",
                  str(inventory), "--reports-dir", "out", "-q"], cwd, env=own)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output[-3000:]   # every check fails: no node answers
    reports = cwd / "out"
    assert (reports / "junit.xml").is_file()
    assert list((reports / "allure-results").glob("*-result.json"))
    assert (reports / "allure-results" / "categories.json").is_file()
    assert json.loads((reports / "cluster" / "state.json").read_text())["provider"] == "static"
    assert (reports / "summary.md").is_file() and (reports / ".run.lock").exists()
    assert str(reports / "summary.md") in output
    assert "k8sconf: static cluster from" in output
    # the HTML report and its history, from the same directory
    if (ROOT / "node_modules" / ".bin" / "allure").exists():
        report = run(["bash", str(ROOT / "scripts" / "report"), "--reports-dir", "out"], cwd,
                     timeout=300)
        assert report.returncode == 0, report.stdout + report.stderr
        assert (reports / "allure-report" / "index.html").is_file()
        assert (reports / "history.jsonl").is_file()
    assert tree(project_copy / "reports") == before
    assert not (project_copy / "tests").exists() and not (cwd / "reports").exists()

    # the environment form, relative to the working directory too
    again = run([sys.executable, "-m", "pytest", str(project_copy / "suites"), "--inventory",
                 str(inventory), "-q", "-x"], cwd,
                env={**own, "K8SCONF_REPORTS": "env-out"})
    assert again.returncode == 1, again.stdout[-3000:]
    assert (cwd / "env-out" / "junit.xml").is_file()
    assert (cwd / "env-out" / "cluster" / "state.json").is_file()
    assert tree(project_copy / "reports") == before


def test_collect_only_writes_no_reports(tmp_path):
    result = run([sys.executable, "-m", "pytest", "--collect-only", "-q",
                  f"--reports-dir={tmp_path / 'r'}"], ROOT)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    assert not (tmp_path / "r").exists()


def test_our_own_tests_write_under_tests_reports_only(project_copy):
    (project_copy / "tests").mkdir()
    (project_copy / "tests" / "test_tiny.py").write_text("def test_ok():\n    pass\n")
    for _ in range(2):
        result = run([sys.executable, "-m", "pytest", "tests/test_tiny.py", "-q"], project_copy)
        assert result.returncode == 0, result.stdout + result.stderr
    reports = project_copy / "tests" / "reports"
    assert "test_ok" in (reports / "junit.xml").read_text()
    assert len(list((reports / "allure-results").glob("*-result.json"))) == 1  # this run's
    assert not (project_copy / "reports").exists()
