"""The reaper: deletes the conformance droplets a killed runner left, by project tag and age.

    python3 -m helpers.providers.digitalocean reap --older-than 5h [--tag T] [--dry-run]
"""
from __future__ import annotations

import argparse
import logging
import os
import re
import sys
from datetime import datetime, timezone
from typing import Callable

from helpers.providers.base import ProviderError, ProviderUnavailable
from helpers.providers.digitalocean import PROJECT_TAG
from helpers.providers.do_api import DigitalOceanAPI, scrub, token_from_env

API_URL_ENV = "DIGITALOCEAN_API_URL"        # the reaper's default endpoint (tests: a fake)
DEFAULT_API_URL = "https://api.digitalocean.com"


def reap(api: DigitalOceanAPI, older_than: float, tag: str = PROJECT_TAG, dry_run: bool = False,
         now: datetime | None = None, out: Callable[[str], None] = print) -> list[dict]:
    """Delete droplets carrying the project tag (and `tag`) created more than older_than
    seconds ago; returns those deleted (or, with dry_run, those that would be)."""
    now = now or datetime.now(timezone.utc)
    required = {PROJECT_TAG, tag}
    doomed = []
    for droplet in api.list_droplets(tag):
        created = _created_at(droplet)
        if not required <= set(droplet.get("tags") or []) or created is None:
            continue
        age = (now - created).total_seconds()
        if age > older_than:
            doomed.append(droplet)
            out(f"reap: {'would delete' if dry_run else 'deleting'} {droplet.get('name')} "
                f"(id {droplet.get('id')}, created {droplet.get('created_at')}, "
                f"{age / 3600:.1f} h old)")
    if not dry_run:
        for droplet in doomed:
            api.destroy(droplet["id"])
    out(f"reap: {len(doomed)} droplet(s) tagged {tag} older than {older_than / 3600:g} h"
        f"{' (dry run: none deleted)' if dry_run else ' deleted'}")
    return doomed


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python3 -m helpers.providers.digitalocean")
    commands = parser.add_subparsers(dest="command", required=True)
    reaper = commands.add_parser("reap", help="delete leaked conformance droplets")
    reaper.add_argument("--older-than", required=True, type=_age_arg, metavar="AGE",
                        help="e.g. 5h, 90m, 1d")
    reaper.add_argument("--tag", default=PROJECT_TAG,
                        help=f"only droplets with this tag (and always {PROJECT_TAG})")
    reaper.add_argument("--dry-run", action="store_true", help="list, delete nothing")
    reaper.add_argument("--api-url", default=os.environ.get(API_URL_ENV, DEFAULT_API_URL),
                        help=f"API base URL (default ${API_URL_ENV} or {DEFAULT_API_URL})")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    try:
        api = DigitalOceanAPI(args.api_url, token_from_env())
        try:
            reap(api, args.older_than, args.tag, args.dry_run)
        finally:
            api.close()
    except ProviderUnavailable as exc:
        print(f"reap: {exc}", file=sys.stderr)
        return 2
    except ProviderError as exc:
        print(f"reap: {scrub(str(exc))}", file=sys.stderr)
        return 1
    return 0


def _age_arg(text: str) -> float:
    try:
        return _parse_age(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _parse_age(text: str) -> float:
    """'5h', '90m', '1d12h', '3600s' or a bare number of seconds -> seconds."""
    text = text.strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    parts = re.findall(r"(\d+(?:\.\d+)?)([smhd])", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"not an age: {text!r} (use e.g. 5h, 90m, 1d)")
    unit = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    return sum(float(n) * unit[u] for n, u in parts)


def _created_at(droplet: dict) -> datetime | None:
    value = droplet.get("created_at")
    if not value:
        return None
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
