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
