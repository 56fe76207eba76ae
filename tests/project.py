"""The suite copied into a scratch directory, so that the reports/ a run there writes (state
file, junit, allure results) are that run's own, not the working tree's."""
from __future__ import annotations

import shutil
from pathlib import Path

from helpers.paths import ROOT

# what a run of the suites reads from its checkout (docs/: the guide's statement ids)
COPIED = ("helpers", "suites", "inventories", "docs", "conftest.py", "pytest.ini")


def copy_project(target: Path) -> Path:
    for name in COPIED:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, target / name,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(source, target / name)
    return target
