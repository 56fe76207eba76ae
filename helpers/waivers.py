"""Waivers: a known failure accepted for a while, with a name, a reason and an end date.

`--waivers FILE` (YAML; JSON Schema: inventories/waivers.schema.json). Each entry names a
check by its test id (`test_kubelet_is_healthy[coreos-2]`) or a glob pattern over test
ids (`test_kubelet_*`), optionally narrowed to a node, a role or a provider, and says
why, who owns it, where it is tracked and when it ends. A waived failure is reported as
waived (never as a pass); a waiver that matched nothing is reported too. A malformed file
or an expired waiver stops the run before anything is created, in one line.
"""
from __future__ import annotations

import datetime
import fnmatch
from pathlib import Path
from typing import Annotated, Literal, Mapping

import pytest
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_core import ErrorDetails

from helpers.inventory import schema_of, write_schema
from helpers.inventory_types import Name

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "inventories" / "waivers.schema.json"
Text = Annotated[str, Field(min_length=1, max_length=500, pattern=r"^[^\x00-\x1f\x7f]+$")]


class WaiverError(Exception):
    """str() is the one line shown to the user."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Scope(Strict):
    node: Name | None = None
    role: Literal["master", "minion"] | None = None
    provider: Literal["local", "qemu", "digitalocean", "static"] | None = None


class Waiver(Strict):
    check: Text = Field(description="a test id, e.g. test_kubelet_is_healthy[coreos-2], "
                                    "or a pattern over test ids (* and ? are wildcards, "
                                    "brackets are literal)")
    scope: Scope = Scope()
    reason: Text
    owner: Text
    link: Annotated[str, Field(pattern=r"^https?://\S+$")]
    expires: datetime.date = Field(description="the last day the waiver holds (YYYY-MM-DD)")

    def matches(self, test_id: str, node: str, role: str, provider: str) -> bool:
        scope = self.scope
        # `*` and `?` are wildcards; brackets are literal: test ids carry [params]
        pattern = "".join({"[": "[[]", "]": "[]]"}.get(c, c) for c in self.check)
        return (fnmatch.fnmatchcase(test_id, pattern)
                and scope.node in (None, node) and scope.role in (None, role)
                and scope.provider in (None, provider))

    def describe(self) -> str:
        return f"{self.reason} (owner {self.owner}, until {self.expires}, {self.link})"


class WaiverFile(Strict):
    waivers: list[Waiver] = Field(min_length=1)


def load(path: Path, today: datetime.date | None = None) -> list[Waiver]:
    today = today or datetime.date.today()
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise WaiverError(f"waivers {path}: cannot read: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise WaiverError(f"waivers {path}: not valid YAML{where}") from None
    if not isinstance(data, dict):
        raise WaiverError(f"waivers {path}: expected a mapping with 'waivers:' at the top level")
    try:
        waivers = WaiverFile.model_validate(data).waivers
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        entry = _entry(data, first["loc"])
        more = len(exc.errors()) - 1
        raise WaiverError(f"waivers {path}: {where}{entry}: "
                          f"{_problem(first)}" + (f" (and {more} more)" if more else "")) from None
    for index, waiver in enumerate(waivers):
        if waiver.expires < today:
            raise WaiverError(f"waivers {path}: waivers.{index} ({waiver.check}): expired on "
                              f"{waiver.expires} (owner {waiver.owner}): renew or remove it")
    return waivers


def _entry(data: dict, loc: tuple) -> str:
    """Which waiver the error is in, by its check, when it has one."""
    try:
        check = data["waivers"][loc[1]].get("check")
        return f" ({check})" if check and len(loc) > 2 else ""
    except (KeyError, IndexError, TypeError, AttributeError):
        return ""


def _problem(error: ErrorDetails) -> str:
    if error["type"] == "extra_forbidden":
        return "unknown field"
    if error["type"] == "missing":
        return "required field is missing"
    return error["msg"].removeprefix("Value error, ")


def find(waivers: list[Waiver], test_id: str, node: str, role: str,
         provider: str) -> Waiver | None:
    return next((w for w in waivers if w.matches(test_id, node, role, provider)), None)


def json_schema() -> dict:
    return schema_of(WaiverFile, "waivers")


class WaiverHook:
    """Turns a waived failure into a report that says so (and carries the waiver), in the
    process that ran the check: the controller, or each xdist worker."""

    def __init__(self, waivers: list[Waiver], roles: Mapping[str, str], provider: str):
        self.waivers, self.roles, self.provider = waivers, roles, provider

    @pytest.hookimpl(hookwrapper=True, trylast=True)   # inside allure's and junit's view
    def pytest_runtest_makereport(self, item, call):
        outcome = yield
        report = outcome.get_result()
        if report.when != "call" or not report.failed:
            return
        node = dict(item.user_properties).get("node", "cluster")
        waiver = find(self.waivers, item.name, node, self.roles.get(node, ""), self.provider)
        if waiver is None:
            return
        crash = getattr(report.longrepr, "reprcrash", None)
        failure = (crash.message if crash else str(report.longrepr)).splitlines()
        report.outcome = "skipped"
        report.wasxfail = (f"waived: {waiver.describe()}; the failure: "
                           + (failure[0].removeprefix("helpers.checks.CheckFailed: ")
                              if failure else "?"))
        report.user_properties.append(("waived", waiver.check))


if __name__ == "__main__":
    import sys
    write_schema("helpers.waivers", SCHEMA_PATH, json_schema(), sys.argv[1:])
