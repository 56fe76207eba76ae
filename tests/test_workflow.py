""".github/workflows/nightly.yml: the nightly DigitalOcean run, checked without GitHub.

The structure and the facts the project relies on are checked here in any case;
`actionlint` (expressions, action inputs, runner labels, shell scripts) runs too when
it is on PATH.
"""
from __future__ import annotations

import re
import shlex

import pytest
import yaml

from helpers.inventory import ROOT
from helpers.providers import digitalocean as do
from helpers.providers import do_reap

WORKFLOW = ROOT / ".github" / "workflows" / "nightly.yml"
TOKEN_EXPRESSION = "${{ secrets.DIGITALOCEAN_TOKEN }}"
NIGHTLY = "inventories/nightly.yaml"
RUN = f".venv/bin/python -m pytest --inventory {NIGHTLY} -n 3 --require-real"
DRY_RUN = f".venv/bin/python -m pytest --inventory {NIGHTLY} --dry-run"
MAKE_INVENTORY = ".venv/bin/python tools/nightly_inventory.py"
REAP = ".venv/bin/python -m helpers.providers.digitalocean reap --older-than 5h"


@pytest.fixture(scope="module")
def workflow() -> dict:
    return yaml.safe_load(WORKFLOW.read_text())


@pytest.fixture(scope="module")
def job(workflow) -> dict:
    jobs = workflow["jobs"]
    assert len(jobs) == 1
    return next(iter(jobs.values()))


def step(job, *, run: str | None = None, uses: str | None = None) -> dict:
    found = [s for s in job["steps"]
             if (run is not None and run in s.get("run", ""))
             or (uses is not None and s.get("uses", "").startswith(uses))]
    assert len(found) == 1, f"expected one step with {run or uses}, found {len(found)}"
    return found[0]


def test_triggers_nightly_and_by_hand(workflow):
    triggers = workflow.get("on", workflow.get(True))  # YAML 1.1 reads a bare `on` as True
    assert set(triggers) == {"schedule", "workflow_dispatch"}
    (entry,) = triggers["schedule"]
    fields = entry["cron"].split()
    assert len(fields) == 5
    minute, hour, day, month, weekday = fields
    assert 0 <= int(minute) <= 59 and 0 <= int(hour) <= 23  # once a day, at a fixed time
    assert (day, month, weekday) == ("*", "*", "*")


def test_job_runs_on_ubuntu_with_least_privilege(workflow, job):
    assert job["runs-on"].startswith("ubuntu-")
    assert workflow["permissions"] == {"contents": "read"}
    assert job["timeout-minutes"] <= 360
    assert workflow["concurrency"]["cancel-in-progress"] is False  # never cut a teardown


def test_steps_in_order(job):
    steps = job["steps"]
    order = [steps.index(step(job, uses="actions/checkout@")),
             steps.index(step(job, run="bash scripts/install")),
             steps.index(step(job, run=MAKE_INVENTORY)),
             steps.index(step(job, run=DRY_RUN)),
             steps.index(step(job, run=RUN)),
             steps.index(step(job, run="bash scripts/report")),
             steps.index(step(job, uses="actions/upload-artifact@")),
             steps.index(step(job, run=REAP))]
    assert order == sorted(order)
    for path in ("scripts/install", "scripts/report", "inventories/do.yaml",
                 "tools/nightly_inventory.py"):
        assert (ROOT / path).is_file()


def test_token_comes_from_secrets_and_only_where_needed(workflow, job):
    text = WORKFLOW.read_text()
    for value in re.findall(r"DIGITALOCEAN_TOKEN:\s*(.+)", text):
        assert value.strip() == TOKEN_EXPRESSION
    assert "DIGITALOCEAN_TOKEN" not in (workflow.get("env") or {})
    assert "DIGITALOCEAN_TOKEN" not in (job.get("env") or {})
    for needed in (DRY_RUN, RUN, REAP):
        assert step(job, run=needed)["env"]["DIGITALOCEAN_TOKEN"] == TOKEN_EXPRESSION
    install = step(job, run="bash scripts/install")
    assert "DIGITALOCEAN_TOKEN" not in (install.get("env") or {})
    assert not re.search(r"dop_v1_[0-9a-f]{8,}", text)


def test_report_artifacts_and_reaper_always_run(job):
    assert step(job, run="bash scripts/report")["if"] == "always()"
    upload = step(job, uses="actions/upload-artifact@")
    assert upload["if"] == "always()"
    paths = upload["with"]["path"].split()
    assert {"reports/allure-report", "reports/junit.xml", "reports/signoff-*.tar.gz"} <= set(paths)
    reaper = step(job, run=REAP)
    assert reaper["if"] == "always()"


def test_reaper_command_is_what_the_module_accepts(job):
    argv = shlex.split(step(job, run=REAP)["run"])
    assert argv[:3] == [".venv/bin/python", "-m", "helpers.providers.digitalocean"]
    args = do_reap.build_parser().parse_args(argv[3:])
    assert (args.command, args.older_than, args.tag, args.dry_run) == \
        ("reap", 5 * 3600, do.PROJECT_TAG, False)


def test_each_night_is_compared_with_the_last(job):
    steps = job["steps"]
    compare = step(job, run="bash scripts/compare")
    assert compare["if"] == "always()" and "previous/signoff-" in compare["run"]
    assert steps.index(step(job, run=RUN)) < steps.index(compare)
    assert (ROOT / "scripts" / "compare").is_file()
    cached = {s["uses"].split("@")[0]: s for s in steps
              if s.get("uses", "").startswith("actions/cache/") and s["with"]["path"] == "previous"}
    assert set(cached) == {"actions/cache/restore", "actions/cache/save"}
    assert steps.index(cached["actions/cache/restore"]) < steps.index(step(job, run=RUN))
    assert cached["actions/cache/save"]["if"] == "always()"


def test_workflow_and_readme_name_the_same_settings():
    """A user switches the workflow on from the README's table: it must name exactly the
    secrets and variables the workflow reads, and its header comment must agree."""
    text = WORKFLOW.read_text()
    used = set(re.findall(r"\$\{\{\s*(secrets|vars)\.([A-Z0-9_]+)\s*\}\}", text))
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Nightly on DigitalOcean\n", 1)[1].split("\n## ", 1)[0]
    kinds = {"secret": "secrets", "variable": "vars"}
    listed = {(kinds[kind], name)
              for kind, name in re.findall(r"^\| (secret|variable) \| `([A-Z0-9_]+)` \|",
                                           section, flags=re.M)}
    assert used == listed and used, (used, listed)
    header = "".join(line for line in text.splitlines(keepends=True) if line.startswith("#"))
    commented = {(kinds[kind], name)
                 for kind, name in re.findall(r"^#\s+(secret|variable) ([A-Z0-9_]+)", header,
                                              flags=re.M)}
    assert commented == used


def test_nightly_inventory_is_do_yaml_with_the_settings(tmp_path):
    from tools import nightly_inventory

    target = tmp_path / "nightly.yaml"
    fingerprint = "0a:1b:2c:3d:4e:5f:60:71:82:93:a4:b5:c6:d7:e8:f9"
    source = ROOT / "inventories" / "do.yaml"
    assert nightly_inventory.main(["987654321", fingerprint, str(source), str(target)]) == 0
    made, shipped = yaml.safe_load(target.read_text()), yaml.safe_load(source.read_text())
    assert made["digitalocean"].pop("image") == 987654321
    assert made["digitalocean"].pop("ssh_keys") == [fingerprint]
    for section in (made, shipped):
        section["digitalocean"].pop("image", None)
        section["digitalocean"].pop("ssh_keys", None)
    assert made == shipped
    assert nightly_inventory.main(["", fingerprint, str(source), str(target)]) == 4
