"""The plugin's behaviour that needs no cluster: clear refusals, the reports lock."""
import os
import subprocess
import sys

import filelock
import pytest

from helpers.inventory import ROOT, parse
from helpers.providers.base import ProviderUnavailable
from helpers.providers.local import LocalProvider


def run_suite(tmp_path, *args, env=None):
    environment = {**os.environ, "K8SCONF_REPORTS": str(tmp_path / "reports"), **(env or {})}
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
                          cwd=ROOT, env=environment, capture_output=True, text=True, timeout=120)


def test_missing_tools_are_one_line_and_exit_4(tmp_path):
    result = run_suite(tmp_path, env={"PATH": "/nonexistent"})
    output = result.stdout + result.stderr
    assert result.returncode == 4, output
    errors = [line for line in output.splitlines() if line.startswith("ERROR:")]
    assert errors == ["ERROR: local provider: systemd-nspawn, mmdebstrap, ip, ssh-keygen, setsid "
                      "not found: apt-get install iproute2 mmdebstrap openssh-client "
                      "systemd-container util-linux"]
    assert "Traceback" not in output and "destroying" not in output


def test_not_root_is_one_line(monkeypatch, tmp_path):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    provider = LocalProvider(parse({"provider": "local", "bootstrap": {"enabled": False}}),
                             tmp_path, "run")
    with pytest.raises(ProviderUnavailable, match=r"^local provider: needs root .*run the suite as root$"):
        provider.preflight()


def test_a_second_run_on_the_same_reports_is_refused(tmp_path):
    (tmp_path / "reports").mkdir()
    lock = filelock.FileLock(tmp_path / "reports" / ".run.lock")
    with lock.acquire(timeout=5):
        result = run_suite(tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 4, output
    assert f"ERROR: another conformance run is using {tmp_path / 'reports'}" in output
    assert "Traceback" not in output


def test_reuse_without_a_kept_cluster_is_refused(tmp_path):
    result = run_suite(tmp_path, "--reuse-cluster")
    output = result.stdout + result.stderr
    assert result.returncode == 4, output
    assert "ERROR: --reuse-cluster: no kept cluster" in output


def test_reports_dir_wins_over_the_environment_and_is_locked_too(tmp_path):
    reports = tmp_path / "given"
    reports.mkdir()
    with filelock.FileLock(reports / ".run.lock").acquire(timeout=5):
        result = run_suite(tmp_path, "--reports-dir", str(reports))
    output = result.stdout + result.stderr
    assert result.returncode == 4, output
    assert (f"ERROR: another conformance run is using {reports}; wait for it, or give "
            "--reports-dir to run a second one elsewhere") in output
    assert not (tmp_path / "reports").exists()   # $K8SCONF_REPORTS, overridden


def test_the_plugin_is_registered_once():
    """The entry point loads it; conftest.py must not register it a second time."""
    result = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q",
                             "--trace-config", "-p", "no:cacheprovider"], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    registered = [line for line in output.splitlines() if "helpers/plugin.py" in line
                  or "helpers/entry.py" in line]
    assert len([row for row in registered if "plugin.py" in row]) == 1, registered
    assert len([row for row in registered if "entry.py" in row]) == 1, registered
