"""Allure results for release sign-off: labels, environment, categories, the bootstrap.

Everything written here passes through `redact` first: tokens and private keys
never reach reports/.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import uuid
from pathlib import Path
from typing import Any

import allure

from helpers import spec

SECRET_ENV = ("DIGITALOCEAN_TOKEN", "DIGITALOCEAN_ACCESS_TOKEN")
_PRIVATE_KEY = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?-----END [A-Z ]*PRIVATE KEY-----",
                          re.S)

CATEGORIES: list[dict[str, Any]] = [
    {"name": "Advisories (known defects of the guide)", "matchedStatuses": ["skipped"],
     "messageRegex": "(?s).*advisory.*"},   # messages span lines; Allure matches the whole
    {"name": "Infrastructure (provisioning, SSH, timeouts)",
     "matchedStatuses": ["broken", "failed"],
     "messageRegex": r"(?s).*(setup failed|no cluster|facts could not be gathered|"
                     r"SSHError|CommandTimeout|did not finish within|cannot connect|"
                     r"ProviderError|BootstrapError).*"},
    {"name": "Product (the install is wrong)", "matchedStatuses": ["failed"]},
    {"name": "Test defects", "matchedStatuses": ["broken"]},
]


def secrets_in_environment() -> list[str]:
    return [os.environ[name] for name in SECRET_ENV if os.environ.get(name)]


def redact(text: str) -> str:
    for secret in secrets_in_environment():
        text = text.replace(secret, "[REDACTED]")
    text = _PRIVATE_KEY.sub("[REDACTED PRIVATE KEY]", text)
    return text


def results_dir(config) -> Path | None:
    value = getattr(config.option, "allure_report_dir", None)
    return Path(value) if value else None


def prepare_results_dir(config) -> None:
    """Clean once per run, in the controller (workers cleaning races: allure-python #807)."""
    target = results_dir(config)
    if target is None:
        return
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    (target / "categories.json").write_text(json.dumps(CATEGORIES, indent=2))
    if os.environ.get("CI"):
        (target / "executor.json").write_text(json.dumps(_executor(), indent=2))


def _executor() -> dict:
    env = os.environ
    url = ""
    if env.get("GITHUB_SERVER_URL") and env.get("GITHUB_RUN_ID"):
        url = f"{env['GITHUB_SERVER_URL']}/{env.get('GITHUB_REPOSITORY', '')}/actions/runs/{env['GITHUB_RUN_ID']}"
    return {"name": "GitHub Actions" if env.get("GITHUB_ACTIONS") else "CI", "type": "github"
            if env.get("GITHUB_ACTIONS") else "ci", "buildName": env.get("GITHUB_RUN_ID", "local"),
            "buildUrl": url}


def label_node(node) -> None:
    """Allure's `host` is the machine running pytest; the node under test is ours."""
    allure.dynamic.label("node", node.name)
    allure.dynamic.tag(node.name)
    allure.dynamic.tag(node.role)


def attach(name: str, text: str) -> None:
    allure.attach(redact(text), name=name, attachment_type=allure.attachment_type.TEXT)


def record_setup(config, inventory, state: dict) -> None:
    target = results_dir(config)
    if target is None:
        return
    _write_environment(target, inventory, state)
    _write_setup_result(target, state)


def _write_environment(target: Path, inventory, state: dict) -> None:
    boot = state.get("bootstrap") or {}
    binaries = state.get("binaries") or {}
    props = {
        "provider": inventory.provider,
        "inventory": state.get("inventory", ""),
        "run_id": state.get("run_id", ""),
        "binaries": ("stand-ins (NOT A RELEASE VERDICT)" if binaries.get("standins")
                     else "the guide's real binaries" if binaries else "not shipped by this run"),
        "binaries.origin": binaries.get("origin", ""),
        "binaries.fallback": binaries.get("fallback", "") or "none",
        "build.go": binaries.get("go", "") or "n/a",
        "build.patches": ", ".join(binaries.get("patches") or []) or "none",
        "deviations": "; ".join(f"{k}={v[1]}" for k, v in (boot.get("deviations") or {}).items())
                      or "none",
    }
    for name, info in sorted((binaries.get("binaries") or {}).items()):
        props[f"version.{name}"] = info.get("version", "")
        props[f"sha256.{name}"] = info.get("sha256", "")
    for name, source in sorted((binaries.get("sources") or {}).items()):
        props[f"source.{name}"] = f"{source.get('version')} tree sha256 {source.get('tree_sha256')}"
    props.update(state.get("node_os", {}))
    lines = [f"{k}={_escape(str(v))}" for k, v in props.items()]
    (target / "environment.properties").write_text(redact("\n".join(lines) + "\n"))


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", " ")


def _write_setup_result(target: Path, state: dict) -> None:
    """The provisioning and bootstrap steps as one Allure test case, with durations."""
    steps = state.get("steps") or []
    if not steps:
        return
    status = "broken" if state.get("error") else "passed"
    attachments = []
    result_steps = []
    for step in steps:
        step_attachments = []
        for name, text in step.get("attachments", {}).items():
            source = f"{uuid.uuid4()}-attachment.txt"
            (target / source).write_text(redact(text))
            step_attachments.append({"name": name, "source": source, "type": "text/plain"})
        title = step["name"] + (f" [{step['node']}]" if step.get("node") else "")
        result_steps.append({
            "name": title, "status": step["status"],
            "statusDetails": {"message": redact(step.get("message", ""))},
            "start": int(step["start"] * 1000), "stop": int(step["stop"] * 1000),
            "attachments": step_attachments})
    units = (state.get("bootstrap") or {}).get("units") or {}
    for node, files in units.items():
        for name, text in files.items():
            source = f"{uuid.uuid4()}-attachment.txt"
            (target / source).write_text(redact(text))
            attachments.append({"name": f"{node} {name}", "source": source,
                                "type": "text/plain"})
    result = {
        "uuid": str(uuid.uuid4()), "historyId": "k8sconf-setup",
        "name": "Cluster set-up: provisioning and the guide's install",
        "fullName": "setup.bootstrap", "status": status,
        "statusDetails": {"message": redact(state.get("error", ""))},
        "start": result_steps[0]["start"], "stop": result_steps[-1]["stop"],
        "steps": result_steps, "attachments": attachments,
        "labels": [{"name": "epic", "value": "Install steps"},
                   {"name": "feature", "value": "Bootstrap"},
                   {"name": "severity", "value": "blocker"},
                   {"name": "suite", "value": "setup"}],
        "links": [{"type": "link", "name": "guide", "url": spec.GUIDE_URL}],
    }
    (target / f"{result['uuid']}-result.json").write_text(json.dumps(result, indent=2))


def mark_transient_flaky(target: Path | None) -> int:
    """Allure shows a check that failed and passed on a second reading as flaky (allure-pytest
    sets no flaky flag itself): every result tagged `transient` gets statusDetails.flaky."""
    if target is None or not target.is_dir():
        return 0
    count = 0
    for path in target.glob("*-result.json"):
        result = json.loads(path.read_text())
        if {"name": "tag", "value": "transient"} in result.get("labels", []):
            result.setdefault("statusDetails", {})["flaky"] = True
            path.write_text(json.dumps(result))
            count += 1
    return count
