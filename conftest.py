"""The plugin is loaded through the installed project's pytest11 entry point `k8sconf`
(pyproject.toml; scripts/install installs the project into .venv): helpers/entry.py, which
registers helpers/plugin.py. Registering it here as well would be an error, so this file
loads it only when the project is not installed (e.g. `PYTHONPATH=. pytest`), with fewer
powers: `--inventory=PATH` and $K8SCONF_REPORTS then, not `--inventory PATH` and
`--reports-dir`."""
import sys

if "helpers.entry" not in sys.modules:
    pytest_plugins = ["helpers.entry", "helpers.plugin"]
