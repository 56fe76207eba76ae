"""The pytest11 entry point `k8sconf` (pyproject.toml): what must happen before pytest
reads the rest of the command line. It registers helpers/plugin.py once that is done.

- The options. Loaded through the entry point, `--inventory PATH` and `--reports-dir DIR`
  are options when pytest parses the command line, whatever the working directory.
- The rootdir. pytest picks its rootdir and ini file before it loads any plugin, with
  every option it does not know yet taken for a path: `--inventory /elsewhere/x.yaml`
  roots the run in /elsewhere, without pytest.ini. Once the options are known, the
  choice is made again without their values (and the ini file's addopts applied). A run
  with no paths and no ini file of its own (from any other directory) is a run of the
  suites, with this checkout's pytest.ini.
- Where the run writes: `--reports-dir DIR`, else $K8SCONF_REPORTS (both relative to the
  working directory), else reports/ for a conformance run and tests/reports/ for any other
  run (this project's own tests). helpers.paths.REPORTS is set before helpers/plugin.py,
  and with it lifecycle and summary, is imported; junit.xml and allure-results default
  into it (not under --collect-only, which runs nothing and must not overwrite a run's
  reports).
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from _pytest.config.findpaths import determine_setup, load_config_dict_from_file

from helpers import paths

SUITES = paths.ROOT / "suites"
PLUGIN = "helpers.plugin"
_DEFAULT_ALLURE = "k8sconf_default_alluredir"


def pytest_addoption(parser):
    group = parser.getgroup("k8sconf", "Kubernetes-on-CoreOS conformance")
    group.addoption("--inventory", metavar="PATH", default=None,
                    help="inventory YAML: a path, or a name in inventories/ "
                         "(default: $K8SCONF_INVENTORY or inventories/local.yaml)")
    group.addoption("--reports-dir", metavar="DIR", default=None,
                    help=f"where the run writes everything: junit.xml, allure-results, the "
                         f"cluster's state and facts, the summary (default: ${paths.ENV_VAR}, "
                         "else reports/; tests/reports/ for this project's own tests)")
    group.addoption("--keep-cluster", action="store_true",
                    help="do not destroy the cluster at the end (see --reuse-cluster)")
    group.addoption("--reuse-cluster", action="store_true",
                    help="test the cluster a --keep-cluster run left, instead of creating one")
    group.addoption("--no-bootstrap", action="store_true",
                    help="attach to an installed cluster and only check it")
    group.addoption("--require-real", action="store_true",
                    help="refuse to fall back to this project's stand-ins when the real "
                         "binaries cannot be built (CI uses this)")
    group.addoption("--dry-run", action="store_true",
                    help="check the inventory (for digitalocean: against the API), say what "
                         "a run would create, and create nothing")
    group.addoption("--waivers", metavar="FILE", default=None,
                    help="YAML of accepted failures, each with a reason, an owner, a link "
                         "and an expiry date (schema: inventories/waivers.schema.json)")


def is_conformance(args: list[str], invocation_dir: Path) -> bool:
    """A run of the suites: one of its paths is suites/ or lies under it."""
    for arg in args:
        path = Path(arg.split("::")[0])
        path = (path if path.is_absolute() else invocation_dir / path).resolve()
        if path == SUITES or SUITES in path.parents:
            return True
    return False


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config, parser, args):
    _reroot(early_config, parser, args)
    ns = early_config.known_args_namespace
    invocation_dir = Path(early_config.invocation_params.dir)
    decided, _ = early_config._decide_args(
        args=ns.file_or_dir, pyargs=ns.pyargs, testpaths=early_config.getini("testpaths"),
        invocation_dir=invocation_dir, rootpath=early_config.rootpath, warn=False)
    conformance = is_conformance(decided, invocation_dir)
    given = ns.reports_dir or os.environ.get(paths.ENV_VAR)
    reports = (paths.resolve(given, invocation_dir) if given
               else paths.ROOT / ("reports" if conformance else "tests/reports"))
    paths.REPORTS = reports
    # (xdist workers parse the same command line in the same directory: they decide alike)
    if not ns.collectonly:
        defaults = []
        if not ns.xmlpath:
            defaults.append(f"--junitxml={reports / 'junit.xml'}")
        if hasattr(ns, "allure_report_dir") and not ns.allure_report_dir:
            defaults.append(f"--alluredir={reports / 'allure-results'}")
            # A conformance run empties its results itself (helpers/reporting.py); for any
            # other run the default directory holds this run's results only.
            setattr(early_config, _DEFAULT_ALLURE, None if conformance
                    else reports / "allure-results")
        args[:0] = defaults
    early_config.pluginmanager.import_plugin(PLUGIN)


def _reroot(config, parser, args) -> None:
    """The rootdir and ini file pytest would have chosen had it known our options."""
    ns = config.known_args_namespace
    invocation_dir = Path(config.invocation_params.dir)
    rootpath, inipath, inicfg, _ = determine_setup(
        inifile=ns.inifilename, override_ini=ns.override_ini, args=ns.file_or_dir,
        rootdir_cmd_arg=ns.rootdir or None, invocation_dir=invocation_dir)
    if inipath is None and not ns.file_or_dir and not ns.pyargs and not ns.rootdir:
        # pytest from another directory: the suites, as from the checkout
        rootpath, inipath = paths.ROOT, paths.ROOT / "pytest.ini"
        inicfg = load_config_dict_from_file(inipath) or {}
        args.append(str(SUITES))
        ns.file_or_dir = [*ns.file_or_dir, str(SUITES)]
    if (rootpath, inipath) == (config.rootpath, config.inipath):
        return
    if config.inipath is not None:   # its addopts are in args already: cannot be undone
        raise pytest.UsageError(
            f"pytest took an option's value for a path and read {config.inipath}; "
            "write the option as --name=VALUE")
    old_confcutdir = str(config.rootpath)
    config._rootpath, config._inipath, config._inicfg = rootpath, inipath, inicfg
    config._inicache.clear()
    parser.extra_info["rootdir"] = str(rootpath)
    parser.extra_info["inifile"] = str(inipath)
    if ns.confcutdir == old_confcutdir:
        ns.confcutdir = str(inipath.parent if inipath else rootpath)
    addopts = list(config.getini("addopts"))
    if addopts:
        args[:0] = addopts
        config.pluginmanager.consider_preparse(addopts, exclude_only=False)
        parser.parse_known_args(args, namespace=ns)


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):
    given = config.option.reports_dir
    if given and paths.resolve(given, Path(config.invocation_params.dir)) != paths.REPORTS:
        raise pytest.UsageError(   # this module was loaded by conftest.py, too late for it
            f"--reports-dir needs the plugin installed (bash scripts/install, or pip install "
            f"-e .); or set ${paths.ENV_VAR}")
    config.option.reports_dir = str(paths.REPORTS)
    stale = getattr(config, _DEFAULT_ALLURE, None)
    if stale is not None and not hasattr(config, "workerinput") and stale.exists():
        shutil.rmtree(stale)
    from helpers import lifecycle, summary  # imported by the plugin: check they agree
    if lifecycle.CLUSTER_DIR.parent != paths.REPORTS or summary.SUMMARY.parent != paths.REPORTS:
        raise pytest.UsageError(
            f"helpers.lifecycle was imported before the reports directory was known "
            f"({lifecycle.CLUSTER_DIR.parent}, not {paths.REPORTS}): install the project "
            f"(bash scripts/install) or set ${paths.ENV_VAR}")
