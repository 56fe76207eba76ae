"""The sign-off (issue 16) without a cluster: verdicts that cannot mislead, waivers, the
sealed bundle and its verification, and the comparison of two runs."""
from __future__ import annotations

import datetime
import json
import tarfile
from pathlib import Path
from types import SimpleNamespace

import pytest

from helpers import bundle, compare, waivers
from helpers.summary import SUITES, SignOff, selection_of

TODAY = datetime.date(2026, 12, 3)


def config(*args, keyword="", markexpr="", deselect=None, cwd=SUITES.parent):
    option = SimpleNamespace(keyword=keyword, markexpr=markexpr, deselect=deselect)
    return SimpleNamespace(option=option, args=list(args) or [str(SUITES)],
                           invocation_params=SimpleNamespace(dir=cwd))


def signoff(results: dict, cfg=None, waived=None, total=208) -> SignOff:
    found = SignOff(cfg or config())
    found.results = {f"suites/test_x.py::{name}": (outcome, "area", "coreos-1", msg)
                     for name, (outcome, msg) in results.items()}
    found.waived = {f"suites/test_x.py::{n}": check for n, check in (waived or {}).items()}
    found._total = total
    return found


REAL = {"binaries": {"standins": False}}


def test_a_whole_green_run_on_the_real_binaries_is_pass():
    assert signoff({"a": ("passed", ""), "b": ("xfailed", "advisory x")}).verdict(REAL) == "PASS"


def test_any_failure_error_or_unexpected_pass_is_fail():
    for outcome in ("failed", "error", "xpassed"):
        assert signoff({"a": ("passed", ""), "b": (outcome, "m")}).verdict(REAL) == "FAIL"


@pytest.mark.parametrize("narrowed", [
    config(keyword="kubelet"), config(markexpr="slow"), config(deselect=["x"]),
    config("suites/test_kubelet.py"), config("suites::test_x"),
], ids=["-k", "-m", "--deselect", "a path", "a node id"])
def test_a_narrowed_run_is_partial_never_pass(narrowed):
    found = signoff({"a": ("passed", ""), "b": ("passed", "")}, narrowed)
    assert found.verdict(REAL) == "PARTIAL (2 of 208 checks)"
    assert selection_of(narrowed)


def test_standins_or_an_unreadable_node_are_not_a_release_verdict():
    green = signoff({"a": ("passed", "")})
    assert green.verdict({"binaries": {"standins": True}}) == (
        "NOT A RELEASE VERDICT (this project's stand-ins ran, not the guide's binaries)")
    failing = signoff({"a": ("failed", "coreos-3: facts could not be gathered")})
    assert failing.verdict({**REAL, "unreadable": ["coreos-3"]}) == (
        "NOT A RELEASE VERDICT (coreos-3 could not be read; 1 check failed)")


def test_waivers_are_counted_in_the_verdict():
    found = signoff({"a": ("passed", ""), "b": ("waived", "waived: known")}, waived={"b": "b"})
    assert found.verdict(REAL) == "PASS with 1 waiver"
    two = signoff({"a": ("waived", ""), "b": ("waived", "")}, waived={"a": "a", "b": "b"})
    assert two.verdict(REAL) == "PASS with 2 waivers"


def test_an_unexpected_pass_is_called_out_by_name():
    found = signoff({"test_y[coreos-1]": ("xpassed", "[XPASS(strict)] advisory portal-net-x: m")})
    assert found.unexpected_passes() == ["test_y[coreos-1] (advisory portal-net-x)"]
    assert "Advisories that passed unexpectedly" in found.markdown(REAL)


def test_the_json_summary_holds_every_check(tmp_path):
    found = signoff({"a": ("passed", ""), "b": ("failed", "coreos-1: broke")})
    found.write({**REAL, "run_id": "r1"}, tmp_path / "summary.md")
    data = json.loads((tmp_path / "summary.json").read_text())
    assert data["verdict"] == "FAIL" and data["run_id"] == "r1"
    assert data["checks"]["suites/test_x.py::b"] == {"outcome": "failed", "area": "area",
                                                      "node": "coreos-1", "message": "coreos-1: broke"}


def test_the_whole_suite_is_counted_by_a_collection(tmp_path):
    inventory = tmp_path / "i.yaml"
    inventory.write_text("provider: static\nbootstrap: {enabled: false}\nnodes:\n"
                         "- {name: a, role: master, public_ip: 192.0.2.1, private_ip: 10.9.0.1}\n")
    found = SignOff(config(keyword="kubelet"), inventory)
    total = found.total()
    assert total is not None and total > 40


# -- waivers -----------------------------------------------------------------------------------

def write(tmp_path, text: str) -> Path:
    path = tmp_path / "waivers.yaml"
    path.write_text(text)
    return path


GOOD = """waivers:
- check: test_kubelet_is_healthy[coreos-2]
  reason: the kubelet on coreos-2 restarts after the kernel update (KERNEL-12)
  owner: release-team
  link: https://tracker.example/KERNEL-12
  expires: 2026-12-31
- check: test_unit_*-proxy-*
  scope: {role: minion, provider: local}
  reason: proxy.service drop-in under review
  owner: alice
  link: https://tracker.example/NET-3
  expires: 2027-01-15
"""


def test_waivers_match_by_id_or_pattern_within_their_scope(tmp_path):
    found = waivers.load(write(tmp_path, GOOD), TODAY)
    assert waivers.find(found, "test_kubelet_is_healthy[coreos-2]", "coreos-2", "minion",
                        "local") is found[0]
    assert waivers.find(found, "test_kubelet_is_healthy[coreos-3]", "coreos-3", "minion",
                        "local") is None
    assert waivers.find(found, "test_unit_is_active[coreos-3-proxy]", "coreos-3", "minion",
                        "local") is None
    assert waivers.find(found, "test_unit_restarts_on_failure_after_5s[coreos-3-proxy-x]",
                        "coreos-3", "minion", "local") is found[1]
    assert waivers.find(found, "test_unit_restarts_on_failure_after_5s[coreos-3-proxy-x]",
                        "coreos-3", "minion", "digitalocean") is None


@pytest.mark.parametrize("text,message", [
    (GOOD.replace("2026-12-31", "2026-11-30"),
     "waivers.0 (test_kubelet_is_healthy[coreos-2]): expired on 2026-11-30 (owner release-team)"),
    (GOOD.replace("  owner: alice\n", ""), "waivers.1.owner (test_unit_*-proxy-*): required field is missing"),
    (GOOD.replace("role: minion", "role: boss"), "waivers.1.scope.role (test_unit_*-proxy-*):"),
    (GOOD.replace("https://tracker.example/NET-3", "not a link"), "waivers.1.link"),
    (GOOD.replace("expires: 2027-01-15", "expires: soon"), "waivers.1.expires"),
    (GOOD + "  colour: red\n", "waivers.1.colour (test_unit_*-proxy-*): unknown field"),
    ("waivers: []\n", "waivers: List should have at least 1 item"),
    ("- just a list\n", "expected a mapping with 'waivers:' at the top level"),
    ("waivers: [\n", "not valid YAML"),
    (GOOD.replace("reason: proxy.service drop-in under review",
                  'reason: "proxy\\nExecStart=x"'), "waivers.1.reason"),
], ids=["expired", "no owner", "bad role", "bad link", "bad date", "unknown field", "empty",
        "not a mapping", "bad yaml", "control character"])
def test_a_bad_waivers_file_is_one_line_naming_the_entry(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(waivers.WaiverError) as caught:
        waivers.load(path, TODAY)
    assert "\n" not in str(caught.value) and str(caught.value).startswith(f"waivers {path}: ")
    assert message in str(caught.value)


def test_the_committed_waiver_schema_is_current():
    assert json.loads(waivers.SCHEMA_PATH.read_text()) == waivers.json_schema()


# -- the bundle ---------------------------------------------------------------------------------

def make_bundle(tmp_path, secret="", checks=None, binaries=None) -> Path:
    reports = tmp_path / "reports"
    (reports / "allure-results").mkdir(parents=True, exist_ok=True)
    (reports / "allure-results" / "x-result.json").write_text(f'{{"name": "a {secret}"}}')
    summary = {"verdict": "PASS", "run_id": "r", "checks": checks or {}}
    (reports / "summary.json").write_text(json.dumps(summary))
    (reports / "summary.md").write_text(f"# PASS {secret}\n")
    (reports / "facts.json").write_text(json.dumps({"coreos-1": {"text": {"env": secret}}}))
    (reports / "id_ed25519").write_text("-----BEGIN OPENSSH PRIVATE KEY-----\nxx\n"
                                        "-----END OPENSSH PRIVATE KEY-----\n")
    inventory = tmp_path / "inventory.yaml"
    inventory.write_text(f"provider: local\n# {secret}\nsecrets: {{api_token: {secret or 'x'}}}\n")
    state = {"run_id": str(len(list(tmp_path.glob("r*")))) + "run",
             "binaries": binaries or {"standins": False, "binaries": {"kubelet": {
                 "sha256": "ab" * 32, "version": "Kubernetes v0.7.0"}}},
             "node_versions": {"coreos-1": {"node_os": "Debian 12"}}}
    files = {name: reports / name for name in ("summary.md", "summary.json", "facts.json",
                                                "allure-results")}
    return bundle.write(reports, state, inventory, SUITES.parent, files)


def test_a_bundle_verifies_and_holds_its_provenance(tmp_path):
    path = make_bundle(tmp_path)
    assert bundle.verify(path) == []
    members = bundle.read(path)
    assert set(members) == {"summary.md", "summary.json", "facts.json",
                            "allure-results/x-result.json", "provenance.json", "SHA256SUMS"}
    provenance = json.loads(members["provenance.json"])
    assert len(provenance["suite"]["commit"]) == 40 and provenance["suite"]["dirty"] in (True, False)
    assert len(provenance["inventory"]["sha256"]) == 64
    assert provenance["binaries"]["binaries"]["kubelet"]["version"] == "Kubernetes v0.7.0"
    assert provenance["nodes"]["coreos-1"]["node_os"] == "Debian 12"


def test_a_tampered_bundle_is_refused(tmp_path):
    path = make_bundle(tmp_path)
    members = bundle.read(path)
    members["summary.md"] = b"# PASS, honestly\n"
    members["extra.txt"] = b"smuggled"
    tampered = tmp_path / "tampered.tar.gz"
    with tarfile.open(tampered, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(f"top/{name}")
            info.size = len(data)
            import io
            tar.addfile(info, io.BytesIO(data))
    problems = bundle.verify(tampered)
    assert any(p.startswith("summary.md: sha256") for p in problems)
    assert "extra.txt: not in SHA256SUMS" in problems
    assert bundle.main(["verify", str(tampered)]) == 1 and bundle.main(["verify", str(path)]) == 0
    garbage = tmp_path / "garbage.tar.gz"
    garbage.write_bytes(b"nope")
    assert bundle.verify(garbage)[0].startswith(f"{garbage}: not a readable bundle")


def test_no_secret_enters_a_bundle(tmp_path, monkeypatch):
    token = "dop_v1_" + "5e" * 32
    monkeypatch.setenv("DIGITALOCEAN_TOKEN", token)
    path = make_bundle(tmp_path, secret=token)
    raw = b"".join(bundle.read(path).values())
    assert token.encode() not in raw and b"[REDACTED]" in raw
    assert b"PRIVATE KEY" not in raw   # the run's key is never packed
    provenance = json.loads(bundle.read(path)["provenance.json"])
    assert provenance["inventory"]["content"]["secrets"] == "[REMOVED]"
    with tarfile.open(path) as tar:
        assert not any("id_ed25519" in m.name for m in tar)


# -- comparing runs ------------------------------------------------------------------------------

def check(outcome, message=""):
    return {"outcome": outcome, "area": "a", "node": "coreos-1", "message": message}


def test_compare_names_new_failures_fixes_and_changes(tmp_path, monkeypatch):
    old = make_bundle(tmp_path / "old", checks={
        "s::a": check("passed"), "s::b": check("failed", "b broke"), "s::c": check("failed"),
        "s::gone": check("passed"), "s::adv": check("xfailed")})
    new = make_bundle(tmp_path / "new", checks={
        "s::a": check("failed", "coreos-1: a broke"), "s::b": check("passed"),
        "s::c": check("failed"), "s::added": check("passed"), "s::adv": check("xpassed")},
        binaries={"standins": False, "binaries": {"kubelet": {"sha256": "cd" * 32,
                                                              "version": "Kubernetes v0.7.1"}}})
    _, o, op = compare.load(str(old))
    _, n, np_ = compare.load(str(new))
    found = compare.differences(o, n, op, np_)
    assert found["new failures"] == ["a: coreos-1: a broke", "adv: "]
    assert found["fixed"] == ["b"] and found["still failing"] == ["c"]
    assert found["appeared"] == ["added"] and found["disappeared"] == ["gone"]
    assert found["advisories changed"] == ["adv: xfailed -> xpassed"]
    assert found["binaries and versions changed"] == [
        "kubelet: Kubernetes v0.7.0 abababababab -> Kubernetes v0.7.1 cdcdcdcdcdcd"]
    markdown = tmp_path / "c.md"
    assert compare.main([str(old), str(new), "--markdown", str(markdown)]) == 1
    assert "**2 new failures**" in markdown.read_text()
    assert compare.main([str(new), str(new), "--markdown", str(markdown)]) == 0


def test_compare_refuses_what_is_not_a_bundle(tmp_path, capsys):
    assert compare.main([str(tmp_path / "nothing"), "also-nothing"]) == 4
    assert "neither a bundle file nor a run id" in capsys.readouterr().err
