"""Where the run writes: reports/ beside the code, or $K8SCONF_REPORTS (our own tests
point it at a scratch directory so they never touch a user's reports)."""
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REPORTS = Path(os.environ.get("K8SCONF_REPORTS") or ROOT / "reports")
