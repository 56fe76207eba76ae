"""Support code for this project's own tests (not part of the installed package)."""
