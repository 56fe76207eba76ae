"""Where the run writes: reports/ beside the code, or $K8SCONF_REPORTS, or what
`--reports-dir` says (helpers/entry.py sets REPORTS from it, and from the kind of run,
before helpers.lifecycle and helpers.summary read it at import)."""
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ENV_VAR = "K8SCONF_REPORTS"


def resolve(value: str | os.PathLike, cwd: Path | None = None) -> Path:
    """A reports directory as given: relative to the working directory."""
    path = Path(os.path.expanduser(value))
    return Path(os.path.abspath(path if path.is_absolute() else (cwd or Path.cwd()) / path))


REPORTS = resolve(os.environ[ENV_VAR]) if os.environ.get(ENV_VAR) else ROOT / "reports"
