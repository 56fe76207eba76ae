"""helpers/reporting.py (what goes into allure-results), the node versions recorded once
per run (helpers/lifecycle.py), and scripts/report with allurerc.mjs on a small,
hand-written results directory. No cluster; the scripts/report tests need node."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest

from helpers import reporting
from helpers.inventory import ROOT
from helpers.lifecycle import parse_versions
from helpers.node_facts import VERSIONS_COMMAND

TOKEN = "dop_v1_" + "0123456789abcdef" * 4
KEY = """-----BEGIN OPENSSH PRIVATE KEY-----
b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW
QyNTUxOQAAACBDm0Bk3Ue0xFmU8W5ONpQ0JQyFuXjOgL8W5x0nYk7VPwAAAJg0fOy4NHzs
-----END OPENSSH PRIVATE KEY-----"""
RSA_KEY = "-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA7\n-----END RSA PRIVATE KEY-----"


def config_for(results: Path):
    return SimpleNamespace(option=SimpleNamespace(allure_report_dir=str(results)))


@pytest.fixture
def no_ci(monkeypatch):
    for name in ("CI", "GITHUB_ACTIONS", "GITHUB_SERVER_URL", "GITHUB_REPOSITORY",
                 "GITHUB_RUN_ID", *reporting.SECRET_ENV):
        monkeypatch.delenv(name, raising=False)


# -- redact ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name", reporting.SECRET_ENV)
def test_redact_removes_a_token_from_the_environment(monkeypatch, no_ci, name):
    monkeypatch.setenv(name, TOKEN)
    text = reporting.redact(f"curl -H 'Authorization: Bearer {TOKEN}' https://api\n{TOKEN}")
    assert TOKEN not in text
    assert text.count("[REDACTED]") == 2


def test_redact_leaves_text_alone_without_secrets(no_ci, monkeypatch):
    monkeypatch.setenv("DIGITALOCEAN_TOKEN", "")   # set but empty: nothing to replace
    text = "coreos-1: flannel.service active\nssh-ed25519 AAAAC3Nz... core@coreos-1"
    assert reporting.redact(text) == text


def test_redact_removes_pem_private_keys_of_any_kind(no_ci):
    text = f"before\n{KEY}\nbetween {RSA_KEY} after\n-----BEGIN PRIVATE KEY-----\nMC4C\n" \
           "-----END PRIVATE KEY-----"
    redacted = reporting.redact(text)
    assert "PRIVATE KEY-----" not in redacted
    assert "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ" not in redacted
    assert redacted.count("[REDACTED PRIVATE KEY]") == 3
    assert redacted.startswith("before\n") and "between" in redacted and "after" in redacted


def test_redact_keeps_public_keys_and_certificates(no_ci):
    text = "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEA\n-----END PUBLIC KEY-----"
    assert reporting.redact(text) == text


# -- allure-results: categories, executor, environment, the set-up case ---------------------
def test_prepare_results_dir_empties_it_and_writes_the_categories(tmp_path, no_ci):
    results = tmp_path / "allure-results"
    results.mkdir()
    (results / "old-result.json").write_text("{}")
    reporting.prepare_results_dir(config_for(results))
    assert sorted(p.name for p in results.iterdir()) == ["categories.json"]
    categories = json.loads((results / "categories.json").read_text())
    assert categories == reporting.CATEGORIES
    assert [c["name"] for c in categories] == [
        "Advisories (known defects of the guide)", "Infrastructure (provisioning, SSH, timeouts)",
        "Product (the install is wrong)", "Test defects"]
    for category in categories:
        assert set(category["matchedStatuses"]) <= {"failed", "broken", "skipped", "passed"}
        re.compile(category.get("messageRegex", ""))


def _category(message: str, status: str) -> str | None:
    """The first category that matches, as Allure 2 matches: the regex on the whole message."""
    for category in reporting.CATEGORIES:
        if status not in category["matchedStatuses"]:
            continue
        regex = category.get("messageRegex")
        if regex is None or re.fullmatch(regex, message):
            return category["name"]
    return None


@pytest.mark.parametrize("message,status,expected", [
    ("XFAIL advisory etcd-v2-api: `etcdctl set` is the etcd v2 API\n\nhelpers.checks."
     "CheckFailed: coreos-1: ...\n  expected: x", "skipped", "Advisories"),
    ("setup failed: ProviderError: local provider: no route", "failed", "Infrastructure"),
    ("no cluster: provisioning did not run", "failed", "Infrastructure"),
    ("coreos-2: facts could not be gathered: SSHError: cannot connect", "broken", "Infrastructure"),
    ("coreos-1: flannel.service is active\n  expected: active\n  found: failed", "failed", "Product"),
    ("TypeError: 'NoneType' object is not subscriptable", "broken", "Test defects"),
])
def test_categories_sort_messages_as_intended(message, status, expected):
    assert (_category(message, status) or "").startswith(expected)


def test_executor_json_is_written_when_ci_is_set(tmp_path, monkeypatch, no_ci):
    monkeypatch.setenv("CI", "true")
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    monkeypatch.setenv("GITHUB_SERVER_URL", "https://github.com")
    monkeypatch.setenv("GITHUB_REPOSITORY", "example/k8s-coreos-conformance")
    monkeypatch.setenv("GITHUB_RUN_ID", "4242")
    results = tmp_path / "allure-results"
    reporting.prepare_results_dir(config_for(results))
    executor = json.loads((results / "executor.json").read_text())
    assert executor == {"name": "GitHub Actions", "type": "github", "buildName": "4242",
                        "buildUrl": "https://github.com/example/k8s-coreos-conformance/actions/runs/4242"}


def test_no_executor_json_outside_ci(tmp_path, no_ci):
    results = tmp_path / "allure-results"
    reporting.prepare_results_dir(config_for(results))
    assert not (results / "executor.json").exists()


def _state(**extra) -> dict:
    return {"run_id": "20250101-000000-abcd", "inventory": "/x/local.yaml",
            "bootstrap": {"standins": True, "checksums": {"kubelet": "ab" * 32},
                          "deviations": {"docker_storage_flag": ("-s btrfs", "-s vfs")}},
            "binaries": {"standins": True, "origin": "artifacts.dir /x/standins",
                         "binaries": {"kubelet": {"sha256": "ab" * 32,
                                                  "version": "Kubernetes v0.7.0-standin"}}},
            "node_os": {"versions_from": "coreos-1", "node_os": "Debian GNU/Linux 12 (bookworm)",
                        "node_kernel": "6.1.0-18-amd64", "docker_version": "20.10.24+dfsg1",
                        "etcd_version": "3.4.23"},
            **extra}


def test_environment_properties_has_the_node_versions(tmp_path, no_ci):
    results = tmp_path / "allure-results"
    results.mkdir()
    reporting.record_setup(config_for(results), SimpleNamespace(provider="local"), _state())
    lines = (results / "environment.properties").read_text().splitlines()
    props = dict(line.split("=", 1) for line in lines)
    assert props["provider"] == "local"
    assert props["binaries"] == "stand-ins (NOT A RELEASE VERDICT)"
    assert props["binaries.origin"] == "artifacts.dir /x/standins"
    assert props["version.kubelet"] == "Kubernetes v0.7.0-standin"
    assert props["node_os"] == "Debian GNU/Linux 12 (bookworm)"
    assert props["node_kernel"] == "6.1.0-18-amd64"
    assert props["docker_version"] == "20.10.24+dfsg1"
    assert props["etcd_version"] == "3.4.23"
    assert props["versions_from"] == "coreos-1"
    assert props["sha256.kubelet"] == "ab" * 32
    assert props["deviations"] == "docker_storage_flag=-s vfs"


def test_environment_properties_is_redacted_and_one_line_per_key(tmp_path, monkeypatch, no_ci):
    monkeypatch.setenv("DIGITALOCEAN_TOKEN", TOKEN)
    results = tmp_path / "allure-results"
    results.mkdir()
    state = _state(inventory=f"/x/{TOKEN}.yaml")
    state["node_os"]["node_os"] = "two\nlines"
    reporting.record_setup(config_for(results), SimpleNamespace(provider="local"), state)
    text = (results / "environment.properties").read_text()
    assert TOKEN not in text and "[REDACTED]" in text
    assert "node_os=two lines" in text.splitlines()


def test_the_setup_case_has_steps_and_redacted_attachments(tmp_path, monkeypatch, no_ci):
    monkeypatch.setenv("DIGITALOCEAN_TOKEN", TOKEN)
    results = tmp_path / "allure-results"
    results.mkdir()
    steps = [{"name": "create local cluster", "node": "", "start": 10.0, "stop": 12.5,
              "status": "passed", "message": "", "attachments": {}},
             {"name": "write unit files", "node": "coreos-1", "start": 12.5, "stop": 13.0,
              "status": "passed", "message": f"token {TOKEN}",
              "attachments": {"user_data": f"key:\n{KEY}\n"}}]
    state = _state(steps=steps)
    state["bootstrap"]["units"] = {"coreos-1": {"kubelet.service": "[Service]\nExecStart=/opt/bin/kubelet"}}
    reporting.record_setup(config_for(results), SimpleNamespace(provider="local"), state)
    [result_file] = results.glob("*-result.json")
    result = json.loads(result_file.read_text())
    assert result["name"] == "Cluster set-up: provisioning and the guide's install"
    assert result["status"] == "passed" and result["fullName"] == "setup.bootstrap"
    assert [s["name"] for s in result["steps"]] == ["create local cluster",
                                                     "write unit files [coreos-1]"]
    assert (result["start"], result["stop"]) == (10000, 13000)
    assert [a["name"] for a in result["attachments"]] == ["coreos-1 kubelet.service"]
    for path in results.iterdir():
        text = path.read_text()
        assert TOKEN not in text and "PRIVATE KEY-----" not in text, path.name


def test_a_failed_setup_is_a_broken_case(tmp_path, no_ci):
    results = tmp_path / "allure-results"
    results.mkdir()
    steps = [{"name": "create local cluster", "node": "", "start": 1.0, "stop": 2.0,
              "status": "failed", "message": "boom", "attachments": {}}]
    reporting.record_setup(config_for(results), SimpleNamespace(provider="local"),
                           _state(steps=steps, error="ProviderError: boom"))
    [result_file] = results.glob("*-result.json")
    result = json.loads(result_file.read_text())
    assert result["status"] == "broken"
    assert result["statusDetails"]["message"] == "ProviderError: boom"


# -- node versions (helpers/lifecycle.py) -----------------------------------------------------
def test_parse_versions():
    out = ("os=Container Linux by CoreOS 494.5.0\nkernel=3.17.2\ndocker=1.3.2\n"
           "etcd=0.4.6\nnoise\n")
    assert parse_versions(out) == {"node_os": "Container Linux by CoreOS 494.5.0",
                                   "node_kernel": "3.17.2", "docker_version": "1.3.2",
                                   "etcd_version": "0.4.6"}
    assert parse_versions("os=\nkernel=6.1\n") == {"node_os": "unknown", "node_kernel": "6.1",
                                                    "docker_version": "unknown",
                                                    "etcd_version": "unknown"}


def test_versions_command_runs_here_and_reports_every_key():
    """The master's `versions` facts section, run on this machine (sh, like the node's
    sudo); Docker's version comes from the docker_version section."""
    done = subprocess.run(["sh", "-c", VERSIONS_COMMAND], capture_output=True, text=True,
                          timeout=30)
    versions = parse_versions(done.stdout)
    assert set(versions) == {"node_os", "node_kernel", "docker_version", "etcd_version"}
    assert versions["node_kernel"] == subprocess.run(["uname", "-r"], capture_output=True,
                                                     text=True, timeout=10).stdout.strip()
    assert versions["node_os"] != "unknown"
    if shutil.which("etcd"):
        assert re.fullmatch(r"\d+\.\d+\.\d+\S*", versions["etcd_version"]), versions


# -- scripts/report and allurerc.mjs ---------------------------------------------------------
def _result(name: str, status: str, message: str = "") -> dict:
    return {"uuid": f"{name}-uuid", "historyId": f"{name}-history", "name": name,
            "fullName": f"suites.test_x#{name}", "status": status, "start": 1000, "stop": 2000,
            "statusDetails": {"message": message},
            "labels": [{"name": "feature", "value": "X"}]}


@pytest.fixture
def results_dir(tmp_path, no_ci) -> Path:
    results = tmp_path / "reports" / "allure-results"
    results.mkdir(parents=True)
    reporting.prepare_results_dir(config_for(results))
    cases = [_result("ok", "passed"),
             _result("advisory", "skipped", "XFAIL advisory a: the guide says so\n\ndetails"),
             _result("infra", "failed", "setup failed: ProviderError: no route\nmore"),
             _result("product", "failed", "coreos-1: unit is active\n  found: failed")]
    for case in cases:
        (results / f"{case['uuid']}-result.json").write_text(json.dumps(case))
    return results


def _report(cwd: Path, reports: str | None):
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(cwd)}
    if reports is not None:
        env["K8SCONF_REPORTS"] = reports
    return subprocess.run(["bash", str(ROOT / "scripts" / "report")], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def _category_counts(report: Path) -> dict[str, int]:
    nodes = json.loads((report / "widgets" / "categories.json").read_text())["nodes"]
    return {n["name"]: n["statistic"]["total"] for n in nodes.values() if n["type"] == "category"}


@pytest.mark.slow
def test_scripts_report_follows_k8sconf_reports_and_carries_history(tmp_path, results_dir):
    if not (ROOT / "node_modules" / ".bin" / "allure").exists():
        pytest.fail("Allure Report 3 is not installed: scripts/install", pytrace=False)
    reports = results_dir.parent
    first = _report(tmp_path, "reports")            # relative: to the caller's cwd
    assert first.returncode == 0, first.stderr
    report = reports / "allure-report"
    assert (report / "index.html").is_file() and not (report / "awesome").exists()
    assert len((reports / "history.jsonl").read_text().splitlines()) == 1
    statistic = json.loads((report / "widgets" / "statistic.json").read_text())
    assert statistic == {"total": 4, "new": 4, "passed": 1, "failed": 2, "skipped": 1}
    # the suite's categories reach the awesome report through allurerc.mjs
    assert _category_counts(report) == {"Advisories (known defects of the guide)": 1,
                                        "Infrastructure (provisioning, SSH, timeouts)": 1,
                                        "Product (the install is wrong)": 1}
    # a second report replaces the first (no stale index.html, no awesome/ subdirectory)
    second = _report(tmp_path, str(reports))
    assert second.returncode == 0, second.stderr
    assert (report / "index.html").is_file() and not (report / "awesome").exists()
    assert len((reports / "history.jsonl").read_text().splitlines()) == 2
    statistic = json.loads((report / "widgets" / "statistic.json").read_text())
    assert "new" not in statistic and statistic["total"] == 4


def test_scripts_report_without_results_says_so(tmp_path):
    done = _report(tmp_path, str(tmp_path / "nothing"))
    assert done.returncode == 1
    assert "no test results" in done.stderr
    assert not (tmp_path / "nothing" / "allure-report").exists()


def test_a_transient_failure_shows_as_flaky_in_allure(tmp_path):
    results = tmp_path / "allure-results"
    results.mkdir()
    transient = {"name": "a", "labels": [{"name": "tag", "value": "transient"}],
                 "statusDetails": {}}
    plain = {"name": "b", "labels": [{"name": "tag", "value": "coreos-1"}]}
    (results / "1-result.json").write_text(json.dumps(transient))
    (results / "2-result.json").write_text(json.dumps(plain))
    assert reporting.mark_transient_flaky(results) == 1
    assert json.loads((results / "1-result.json").read_text())["statusDetails"]["flaky"] is True
    assert "flaky" not in json.loads((results / "2-result.json").read_text()).get(
        "statusDetails", {})
    assert reporting.mark_transient_flaky(None) == 0
