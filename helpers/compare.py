"""What changed between two runs: `bash scripts/compare OLD NEW`, each a sign-off bundle or
a run id under the reports directory (reports/signoff-<run id>.tar.gz).

Prints new failures, fixed checks, checks still failing, checks that appeared or
disappeared, advisories that changed, and binaries, versions and node OS that changed;
writes the same as Markdown (for a pull-request comment) to --markdown PATH, by default
compare-<old>-<new>.md beside the new bundle. Exits 1 when there is a new failure.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from helpers import bundle
from helpers.paths import REPORTS

BAD = ("failed", "error", "xpassed")


class CompareError(Exception):
    pass


def load(ref: str) -> tuple[str, dict, dict]:
    """(run id, summary.json, provenance.json) of a bundle file or a run id."""
    path = Path(ref)
    if not path.is_file():
        path = bundle.bundle_path(REPORTS, ref)
    if not path.is_file():
        raise CompareError(f"{ref}: neither a bundle file nor a run id with a bundle in {REPORTS}")
    problems = bundle.verify(path)
    if problems:
        raise CompareError(f"{path}: does not match its manifest: {problems[0]}")
    members = bundle.read(path)
    try:
        summary = json.loads(members["summary.json"])
        provenance = json.loads(members["provenance.json"])
    except (KeyError, ValueError) as exc:
        raise CompareError(f"{path}: no readable summary.json/provenance.json ({exc})") from None
    return summary.get("run_id") or path.stem, summary, provenance


def _short(nodeid: str) -> str:
    return nodeid.split("::")[-1]


def differences(old: dict, new: dict, old_prov: dict, new_prov: dict) -> dict[str, list[str]]:
    was, now = old.get("checks", {}), new.get("checks", {})
    both = sorted(set(was) & set(now))
    outcome = lambda checks, n: checks[n]["outcome"]   # noqa: E731
    found = {
        "new failures": [f"{_short(n)}: {now[n]['message']}" for n in both
                         if outcome(now, n) in BAD and outcome(was, n) not in BAD]
                        + [f"{_short(n)} (new check): {now[n]['message']}"
                           for n in sorted(set(now) - set(was)) if outcome(now, n) in BAD],
        "fixed": [_short(n) for n in both if outcome(was, n) in BAD and outcome(now, n) not in BAD],
        "still failing": [_short(n) for n in both if outcome(was, n) in BAD and outcome(now, n) in BAD],
        "appeared": [_short(n) for n in sorted(set(now) - set(was))],
        "disappeared": [_short(n) for n in sorted(set(was) - set(now))],
        "advisories changed": [f"{_short(n)}: {outcome(was, n)} -> {outcome(now, n)}"
                               for n in both if outcome(was, n) != outcome(now, n)
                               and "xfailed" in (outcome(was, n), outcome(now, n))],
    }
    found["binaries and versions changed"] = _binaries(old_prov.get("binaries") or {},
                                                       new_prov.get("binaries") or {})
    found["node OS changed"] = _nodes(old_prov.get("nodes") or {}, new_prov.get("nodes") or {})
    if old.get("verdict") != new.get("verdict"):
        found["verdict"] = [f"{old.get('verdict')} -> {new.get('verdict')}"]
    return found


def _binaries(old: dict, new: dict) -> list[str]:
    lines = []
    if bool(old.get("standins")) != bool(new.get("standins")):
        lines.append(f"stand-ins: {bool(old.get('standins'))} -> {bool(new.get('standins'))}")
    was, now = old.get("binaries") or {}, new.get("binaries") or {}
    for name in sorted(set(was) | set(now)):
        a, b = was.get(name) or {}, now.get(name) or {}
        if a.get("sha256") != b.get("sha256") or a.get("version") != b.get("version"):
            lines.append(f"{name}: {a.get('version', 'absent')} {str(a.get('sha256', ''))[:12]} -> "
                         f"{b.get('version', 'absent')} {str(b.get('sha256', ''))[:12]}")
    return lines


def _nodes(old: dict, new: dict) -> list[str]:
    lines = []
    for node in sorted(set(old) | set(new)):
        for key in sorted(set(old.get(node, {})) | set(new.get(node, {}))):
            a, b = old.get(node, {}).get(key), new.get(node, {}).get(key)
            if a != b:
                lines.append(f"{node} {key}: {a} -> {b}")
    return lines


def as_text(old_id: str, new_id: str, found: dict[str, list[str]]) -> str:
    lines = [f"compare {old_id} -> {new_id}"]
    for title, items in found.items():
        lines.append(f"{title}: {len(items)}")
        lines += [f"  {item}" for item in items]
    return "\n".join(lines) + "\n"


def as_markdown(old_id: str, new_id: str, found: dict[str, list[str]]) -> str:
    news = found["new failures"]
    lines = [f"### Conformance: `{old_id}` → `{new_id}`", "",
             f"**{len(news)} new failure{'s' if len(news) != 1 else ''}**, "
             f"{len(found['fixed'])} fixed, {len(found['still failing'])} still failing", ""]
    for title, items in found.items():
        if items:
            lines += [f"<details><summary>{title} ({len(items)})</summary>", ""]
            lines += [f"- `{item}`" if ": " not in item else f"- {item}" for item in items]
            lines += ["", "</details>", ""]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="scripts/compare", description=__doc__.split("\n")[0])
    parser.add_argument("old")
    parser.add_argument("new")
    parser.add_argument("--markdown", type=Path, default=None)
    args = parser.parse_args(argv)
    try:
        old_id, old, old_prov = load(args.old)
        new_id, new, new_prov = load(args.new)
    except CompareError as exc:
        print(f"ERROR: {exc}", file=sys.stderr)
        return 4
    found = differences(old, new, old_prov, new_prov)
    sys.stdout.write(as_text(old_id, new_id, found))
    target = args.markdown or (REPORTS / f"compare-{old_id}-{new_id}.md")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(as_markdown(old_id, new_id, found))
    print(f"(markdown: {target})")
    return 1 if found["new failures"] else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
