"""The project's pytest plugin lives in helpers/plugin.py; this file only loads it."""
pytest_plugins = ["helpers.plugin"]
