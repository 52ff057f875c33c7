"""Download the official archives: streamed, size-bounded, checksummed, renamed atomically.

Nothing here runs on import, and tests point `download_url` at a loopback server: the
internet is reached only when a caller asks for a real archive.
"""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from pathlib import Path

from edgeadapt.data._io import atomic_path, safe_extract
from edgeadapt.data.errors import ChecksumError, DownloadError

__all__ = [
    "CIFAR10C_MD5",
    "CIFAR10C_URL",
    "CIFAR10_MD5",
    "CIFAR10_URL",
    "download_cifar10",
    "download_cifar10c",
    "download_url",
    "md5_file",
]

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
CIFAR10_MAX_BYTES = 200 * 2**20  # the archive is 170,498,071 bytes
CIFAR10C_URL = "https://zenodo.org/records/2535967/files/CIFAR-10-C.tar?download=1"
CIFAR10C_MD5 = "56bf5dcef84df0e2308c6dcbcbbd8499"
CIFAR10C_MAX_BYTES = 3 * 2**30  # the archive is 2,918,471,680 bytes
_CHUNK = 1 << 20


def md5_file(path: str | os.PathLike[str]) -> str:
    """Hex md5 of a file, read in chunks (md5 only because the releases publish it)."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def download_url(
    url: str,
    dest: str | os.PathLike[str],
    md5: str,
    *,
    max_bytes: int,
    timeout: float = 60.0,
    progress: bool = True,
) -> Path:
    """Fetch `url` into `dest` unless `dest` already has checksum `md5`; returns `dest`.

    The body streams into a temporary file beside `dest` while its md5 is computed; only a
    complete, matching file is renamed onto `dest`. A body longer than `max_bytes` (declared
    or actual) raises `DownloadError`, a checksum mismatch `ChecksumError`; either way the
    partial file is deleted. Only http(s) URLs are accepted.
    """
    from tqdm.auto import tqdm

    dest = Path(dest)
    if not url.lower().startswith(("http://", "https://")):
        raise DownloadError(f"only http(s) URLs can be downloaded, got {url!r}")
    if dest.is_file() and md5_file(dest) == md5.lower():
        return dest
    try:
        response = urllib.request.urlopen(url, timeout=timeout)  # http(s) only, checked above
    except (urllib.error.URLError, OSError) as exc:
        raise DownloadError(f"cannot fetch {url}: {exc}") from exc
    with response, atomic_path(dest) as tmp:
        declared = int(response.headers.get("Content-Length") or 0)
        if declared > max_bytes:
            raise DownloadError(
                f"{url} declares {declared} bytes, over max_bytes={max_bytes}; raise the bound "
                "if the file is really that large"
            )
        digest, size = hashlib.md5(usedforsecurity=False), 0
        bar = tqdm(
            total=declared or None, unit="B", unit_scale=True, disable=not progress, desc=dest.name
        )
        with bar, open(tmp, "wb") as fh:
            for block in iter(lambda: response.read(_CHUNK), b""):
                size += len(block)
                if size > max_bytes:
                    raise DownloadError(f"{url} sent more than max_bytes={max_bytes} bytes")
                digest.update(block)
                fh.write(block)
                bar.update(len(block))
        if digest.hexdigest() != md5.lower():
            raise ChecksumError(
                f"{url}: md5 {digest.hexdigest()} != expected {md5}; the download was "
                "corrupted or the file changed upstream. Deleted it; try again."
            )
    return dest


def download_cifar10(root: str | os.PathLike[str], *, progress: bool = True) -> Path:
    """Download the CIFAR-10 python archive into `root`; returns the `.tar.gz` path.

    `load_cifar10` reads the archive directly, no extraction needed.
    """
    dest = Path(root) / "cifar-10-python.tar.gz"
    return download_url(
        CIFAR10_URL, dest, CIFAR10_MD5, max_bytes=CIFAR10_MAX_BYTES, progress=progress
    )


def download_cifar10c(
    root: str | os.PathLike[str], *, extract: bool = True, progress: bool = True
) -> Path:
    """Download CIFAR-10-C (2.9 GB) into `root` and extract it safely.

    Returns the `CIFAR-10-C/` folder for `load_cifar10c` (or the `.tar` if `extract` is False).
    """
    root = Path(root)
    archive = download_url(
        CIFAR10C_URL,
        root / "CIFAR-10-C.tar",
        CIFAR10C_MD5,
        max_bytes=CIFAR10C_MAX_BYTES,
        progress=progress,
    )
    if not extract:
        return archive
    folder = root / "CIFAR-10-C"
    if not (folder / "labels.npy").is_file():
        safe_extract(archive, root)
    return folder
