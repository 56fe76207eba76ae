"""The qemu provider's base image: downloaded once into a cache and verified, or a local
file; and the per-node copy-on-write overlays on it.

- `image_url` + `image_sha256`: fetched (http, https or file URLs) into
  `<cache_dir>/images/.<name>.part` with progress on stderr, hashed while it streams,
  compared with the inventory's sha256 and only then renamed to
  `<cache_dir>/images/<sha256[:16]>-<name>`; a compressed download (.bz2, .gz, .xz, as
  Flatcar publishes some images) is unpacked after verification. The cache key is the
  sha256, so a cached file is never re-downloaded and a changed checksum never reuses
  the old file. A mismatch removes the download and raises ImageChecksumError, whose
  one line names the URL, both sums and what to do.
- A flock per cache serialises concurrent runs: the second waits, then finds the file.
- Overlays: `qemu-img create -f qcow2 -F <format> -b <base> <overlay>`. QEMU opens the
  backing file read-only, so the base is never written.
"""
from __future__ import annotations

import bz2
import fcntl
import gzip
import hashlib
import json
import lzma
import os
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Callable

from helpers.providers.base import ProviderError

CHUNK = 1 << 20
DOWNLOAD_TIMEOUT = 60          # seconds without progress before a download gives up
DECOMPRESSORS = {".bz2": bz2.open, ".gz": gzip.open, ".xz": lzma.open}


class ImageChecksumError(ProviderError):
    """The downloaded image is not the one the inventory names."""


def cached_name(url: str, sha256: str) -> str:
    name = Path(urllib.parse.urlsplit(url).path).name or "image"
    for suffix in DECOMPRESSORS:
        name = name.removesuffix(suffix)
    return f"{sha256[:16]}-{name}"


def ensure_image(url: str, sha256: str, cache_dir: Path,
                 progress: Callable[[str], None] | None = None) -> tuple[Path, bool]:
    """(path of the verified image, whether it was downloaded now)."""
    images = cache_dir / "images"
    final = images / cached_name(url, sha256)
    if final.is_file():
        return final, False
    images.mkdir(parents=True, exist_ok=True)
    with open(images / ".download.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if final.is_file():
            return final, False
        part = images / f".{final.name}.part"
        try:
            got = download(url, part, progress or _stderr)
            verify_checksum(url, got, sha256)
            suffix = Path(urllib.parse.urlsplit(url).path).suffix
            if suffix in DECOMPRESSORS:
                unpacked = images / f".{final.name}.unpacked"
                _decompress(part, unpacked, DECOMPRESSORS[suffix])
                part.unlink()
                part = unpacked
            os.replace(part, final)
        finally:
            for leftover in images.glob(f".{final.name}.*"):
                leftover.unlink(missing_ok=True)
    return final, True


def verify_checksum(url: str, got: str, expected: str) -> None:
    if got != expected:
        raise ImageChecksumError(
            f"qemu: image {url} has sha256 {got}, but qemu.image_sha256 is {expected}: "
            "the download was removed; check the URL and the checksum")


def download(url: str, dest: Path, progress: Callable[[str], None]) -> str:
    """Stream url to dest; returns the sha256 of what was written."""
    digest = hashlib.sha256()
    try:
        response = urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT)  # noqa: S310
    except (OSError, ValueError) as exc:
        raise ProviderError(f"qemu: cannot download image {url}: {_reason(exc)}") from None
    with response, open(dest, "wb") as out:
        total = int(response.headers.get("Content-Length") or 0)
        done, shown, started = 0, 0.0, time.monotonic()
        progress(f"qemu: downloading {url}" + (f" ({total >> 20} MiB)" if total else ""))
        while True:
            try:
                chunk = response.read(CHUNK)
            except OSError as exc:
                raise ProviderError(f"qemu: download of {url} broke after {done >> 20} MiB: "
                                    f"{_reason(exc)}") from None
            if not chunk:
                break
            out.write(chunk)
            digest.update(chunk)
            done += len(chunk)
            now = time.monotonic()
            if now - shown >= 5:
                shown = now
                rate = done / max(now - started, 1e-3) / (1 << 20)
                share = f"{100 * done / total:.0f}% of {total >> 20} MiB" if total else \
                    f"{done >> 20} MiB"
                progress(f"qemu: downloading image: {share}, {rate:.1f} MiB/s")
    if total and done != total:
        raise ProviderError(f"qemu: download of {url} ended after {done} of {total} bytes")
    progress(f"qemu: downloaded {done >> 20} MiB in {time.monotonic() - started:.0f} s")
    return digest.hexdigest()


def _decompress(src: Path, dest: Path, opener) -> None:
    try:
        with opener(src, "rb") as packed, open(dest, "wb") as out:
            while chunk := packed.read(CHUNK):
                out.write(chunk)
    except (OSError, EOFError, lzma.LZMAError) as exc:
        raise ProviderError(f"qemu: cannot unpack {src.name}: {exc}") from None


def _reason(exc: BaseException) -> str:
    return " ".join(str(getattr(exc, "reason", None) or exc or type(exc).__name__).split())


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


# -- qemu-img -----------------------------------------------------------------------------

def image_format(path: Path) -> str:
    """The format QEMU sees in the file (qcow2, raw, ...), from `qemu-img info`."""
    proc = subprocess.run(["qemu-img", "info", "--force-share", "--output=json", str(path)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise ProviderError(f"qemu: `qemu-img info {path}` failed: "
                            f"{' '.join(proc.stderr.split())[:300]}")
    return json.loads(proc.stdout)["format"]


def create_overlay(base: Path, base_format: str, overlay: Path) -> None:
    proc = subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", base_format,
                           "-b", str(base.resolve()), str(overlay)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise ProviderError(f"qemu: cannot create overlay {overlay}: "
                            f"{' '.join(proc.stderr.split())[:300]}")
