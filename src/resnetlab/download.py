"""Verified downloads: stream a URL into a temporary file, keep it only when complete and checksummed.

Used for the official CIFAR archives (MD5, as published) and for pretrained weights (SHA-256). A
progress bar goes to stderr when it is a terminal. Every failure (unreachable server, HTTP error,
interrupted transfer, wrong checksum) is one :class:`~resnetlab.errors.UserError` line that says
what to do instead and leaves nothing at the destination or beside it.
"""

from __future__ import annotations

import hashlib
import http.client
import sys
import urllib.error
import urllib.request
from pathlib import Path

from tqdm import tqdm

from resnetlab.atomic import atomic_open
from resnetlab.errors import UserError

ALGORITHMS = {"md5": "MD5", "sha256": "SHA-256"}  # hashlib name -> how messages spell it


def file_digest(path: Path, algorithm: str = "sha256", chunk: int = 1 << 20) -> str:
    """Hex digest of a file, read in chunks."""
    digest = hashlib.new(algorithm, usedforsecurity=False)
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def matches(digest: str, expected: str) -> bool:
    """Whether ``digest`` is ``expected``, or starts with it when only a prefix is published."""
    return bool(expected) and digest.startswith(expected.lower())


def download_file(
    url: str, dest: Path, expected: str, *, algorithm: str = "sha256", fix: str, timeout: float = 60
) -> Path:
    """Download ``url`` to ``dest``; keep it only if complete and its digest ``matches`` ``expected``.

    ``fix`` is the clause that ends an error message: how to get the file without this download,
    e.g. "download it on a machine with internet access and put it at PATH".
    """
    label = ALGORITHMS[algorithm]
    try:
        response = urllib.request.urlopen(url, timeout=timeout)
    except urllib.error.HTTPError as exc:
        raise UserError(f"downloading {url} failed with HTTP {exc.code} ({exc.reason}); {fix}") from None
    except (OSError, http.client.HTTPException) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise UserError(
            f"could not reach {url} ({reason}): this machine may be offline or the server unreachable; {fix}"
        ) from None
    total = int(response.headers.get("Content-Length") or 0) or None
    digest = hashlib.new(algorithm, usedforsecurity=False)
    received = 0
    quiet = not sys.stderr.isatty()
    bar = tqdm(total=total, unit="B", unit_scale=True, desc=dest.name, file=sys.stderr, disable=quiet)
    with response, bar, atomic_open(dest) as f:
        try:
            while chunk := response.read(1 << 20):
                f.write(chunk)
                digest.update(chunk)
                received += len(chunk)
                bar.update(len(chunk))
        except (OSError, http.client.HTTPException) as exc:
            raise UserError(
                f"the download of {url} was interrupted after {received:,} bytes ({type(exc).__name__}); "
                "nothing was saved: run the command again"
            ) from None
        if total is not None and received != total:
            raise UserError(
                f"the download of {url} stopped after {received:,} of {total:,} bytes; nothing was saved: "
                "run the command again"
            )
        if not matches(digest.hexdigest(), expected):
            raise UserError(
                f"the file downloaded from {url} has {label} {digest.hexdigest()}, not the published "
                f"{expected}; nothing was saved: run again, or {fix}"
            )
    return dest
