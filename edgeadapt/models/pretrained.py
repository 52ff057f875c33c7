"""Pretrained weights by model name: ``create_model("resnet20", pretrained=True)``.

A table in the manner of torchvision's weight enums and timm's pretrained configs: for each
registered model that has weights, where the release puts the file (URL), what the file
hashes to (sha256) and the name it is kept under. `fetch_pretrained` finds the file, first
that works:

1. the weights cache, `weights_dir()` (`$EDGEADAPT_WEIGHTS_DIR`, else the user's cache folder
   + ``weights``), re-hashed on every use: a damaged copy is deleted and fetched again;
2. the shared data folder of a checkout (`shared_dir()/models`), used in place when the file
   there has the right hash, so a checkout beside ``../shared`` never downloads;
3. a download, from `$EDGEADAPT_WEIGHTS_URL` + file name when that is set (a mirror, e.g.
   ``file:///srv/weights/`` or a plain folder path), else from the table's URL. Anything
   urllib opens works. The body streams to a temporary file beside the cache entry, bounded
   in size and hashed on the way; only a complete file with the right hash is renamed into
   place, so the cache never holds a partial or wrong file.

Files load through `load_checkpoint`, i.e. ``torch.load(weights_only=True)``: a file from a
mirror can be wrong, never code that runs.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import re
import urllib.error
import urllib.parse
import urllib.request
import warnings
from dataclasses import dataclass
from pathlib import Path

from edgeadapt._atomic import atomic_path
from edgeadapt._paths import shared_dir, user_cache_dir
from edgeadapt.data.errors import DownloadError
from edgeadapt.errors import ConfigError
from edgeadapt.models._registry import get_model_entry
from edgeadapt.models.errors import NoPretrainedWeightsError, WeightsChecksumError

__all__ = [
    "RELEASE_URL",
    "WEIGHTS_DIR_ENV",
    "WEIGHTS_URL_ENV",
    "PretrainedWeights",
    "fetch_pretrained",
    "get_pretrained",
    "list_pretrained",
    "register_pretrained",
    "sha256_file",
    "weights_dir",
    "weights_url",
]

WEIGHTS_DIR_ENV = "EDGEADAPT_WEIGHTS_DIR"
WEIGHTS_URL_ENV = "EDGEADAPT_WEIGHTS_URL"
# Where the project's release puts the weight files. It could not be reached from the offline
# sandbox this table was written in, so downloads from it are untested there; the tests and
# any offline machine point $EDGEADAPT_WEIGHTS_URL at a mirror (e.g. file:///path/to/dir/)
# or drop the file into weights_dir(), and then nothing is fetched from here.
RELEASE_URL = "https://github.com/edgeadapt/edgeadapt/releases/download/weights-v1/"
_CHUNK = 1 << 20
_SHA256 = re.compile(r"[0-9a-f]{64}")
_URL_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]+:")  # two letters at least: not a drive


@dataclass(frozen=True, kw_only=True)
class PretrainedWeights:
    """One row of the table: the weights of one registered model."""

    model: str  # the registered model name these weights load into
    file_name: str  # a plain file name: in the cache, the shared folder and under a mirror
    url: str  # where the release puts the file
    sha256: str  # hex digest of the whole file, checked after download and on every use
    num_classes: int = 10  # classifier rows the weights were trained with
    max_bytes: int = 256 * 2**20  # a longer download is cut off: a wrong URL, not weights
    description: str = ""  # one line: training data and accuracy


_PRETRAINED: dict[str, PretrainedWeights] = {}


def register_pretrained(weights: PretrainedWeights) -> PretrainedWeights:
    """Add `weights` to the table under `weights.model` (a registered model), once."""
    get_model_entry(weights.model)  # UnknownNameError for a model that is not registered
    if weights.model in _PRETRAINED:
        raise ConfigError(f"model {weights.model!r} already has pretrained weights")
    name = weights.file_name
    # The name is joined to local folders and to a mirror URL: no separators, no '..'.
    if not name or name in (".", "..") or "/" in name or "\\" in name or name.startswith("."):
        raise ConfigError(f"file_name must be a plain file name, got {name!r}")
    if not _SHA256.fullmatch(weights.sha256):
        raise ConfigError(f"sha256 must be 64 lower-case hex digits, got {weights.sha256!r}")
    _PRETRAINED[weights.model] = weights
    return weights


def list_pretrained(pattern: str = "*") -> list[str]:
    """Model names with pretrained weights matching the fnmatch `pattern`, sorted."""
    return sorted(name for name in _PRETRAINED if fnmatch.fnmatchcase(name, pattern))


def get_pretrained(name: str) -> PretrainedWeights:
    """The table row for model `name`.

    Raises:
        UnknownNameError: `name` is not a registered model (with close matches).
        NoPretrainedWeightsError: it is, but has no weights (the message lists those that do).
    """
    get_model_entry(name)
    weights = _PRETRAINED.get(name)
    if weights is None:
        raise NoPretrainedWeightsError(
            f"model {name!r} has no pretrained weights; models that have them: "
            f"{list_pretrained()}. Train one with `edgeadapt train-source --model {name} "
            "--out PATH` and load it with create_model(..., checkpoint=PATH)"
        )
    return weights


def weights_dir() -> Path:
    """`$EDGEADAPT_WEIGHTS_DIR`, else `user_cache_dir() / "weights"` (made on first download)."""
    env = os.environ.get(WEIGHTS_DIR_ENV)
    return Path(env).expanduser() if env else user_cache_dir() / "weights"


def weights_url(weights: PretrainedWeights) -> str:
    """Where `fetch_pretrained` downloads `weights` from: `$EDGEADAPT_WEIGHTS_URL` (a base URL
    or a folder path) + the file name when set, else the table's URL."""
    base = os.environ.get(WEIGHTS_URL_ENV)
    if not base:
        return weights.url
    if not _URL_SCHEME.match(base):  # a folder path, Windows drives too: its file:// URL
        base = Path(base).expanduser().resolve().as_uri()
    return base.rstrip("/") + "/" + urllib.parse.quote(weights.file_name)


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch_pretrained(
    weights: str | PretrainedWeights, *, progress: bool = True, timeout: float = 60.0
) -> Path:
    """The path of a local file holding `weights` (a model name or a table row), verified.

    See the module docstring for where it looks; `progress` shows a download bar.

    Raises:
        UnknownNameError, NoPretrainedWeightsError: see `get_pretrained`.
        DownloadError: the URL cannot be opened or sends more than `max_bytes`; the message
            says how to point at a mirror.
        WeightsChecksumError: the download does not hash to the table's sha256 (deleted).
    """
    if isinstance(weights, str):
        weights = get_pretrained(weights)
    cached = weights_dir() / weights.file_name
    if cached.is_file():
        found = sha256_file(cached)
        if found == weights.sha256:
            return cached
        warnings.warn(
            f"{cached} has sha256 {found}, not {weights.sha256}: the cached copy is damaged; "
            "deleting it and fetching the weights again",
            stacklevel=2,
        )
        cached.unlink(missing_ok=True)
    shared = shared_dir() / "models" / weights.file_name
    if shared.is_file() and sha256_file(shared) == weights.sha256:
        return shared
    return _download(weights, cached, progress=progress, timeout=timeout)


def _download(weights: PretrainedWeights, dest: Path, *, progress: bool, timeout: float) -> Path:
    from tqdm.auto import tqdm

    url = weights_url(weights)
    how = (
        f"Point ${WEIGHTS_URL_ENV} at a folder or URL that has {weights.file_name} (e.g. "
        f"file:///path/to/dir/), or copy the file into {dest.parent}"
    )
    try:
        response = urllib.request.urlopen(url, timeout=timeout)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DownloadError(
            f"cannot fetch the {weights.model} weights from {url} ({reason}). {how}"
        ) from exc
    with response, atomic_path(dest) as tmp:
        declared = int(response.headers.get("Content-Length") or 0)
        if declared > weights.max_bytes:
            raise DownloadError(
                f"{url} declares {declared} bytes, over the {weights.max_bytes} bytes the "
                f"{weights.model} weights may take: not the weights file. {how}"
            )
        digest, size = hashlib.sha256(), 0
        bar = tqdm(
            total=declared or None,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            desc=weights.file_name,
            disable=not progress,
        )
        with bar, open(tmp, "wb") as fh:
            for block in iter(lambda: response.read(_CHUNK), b""):
                size += len(block)
                if size > weights.max_bytes:
                    raise DownloadError(
                        f"{url} sent more than the {weights.max_bytes} bytes the "
                        f"{weights.model} weights may take: not the weights file. {how}"
                    )
                digest.update(block)
                fh.write(block)
                bar.update(len(block))
            fh.flush()
            os.fsync(fh.fileno())
        if digest.hexdigest() != weights.sha256:
            # Raising inside atomic_path deletes the temporary file: nothing is left behind.
            raise WeightsChecksumError(
                f"{url}: sha256 {digest.hexdigest()} is not the {weights.model} weights' "
                f"{weights.sha256}; the download was corrupted or the mirror holds another "
                f"file. Deleted it. {how}"
            )
    return dest


register_pretrained(
    PretrainedWeights(
        model="resnet20",
        file_name="resnet20_cifar10jpeg.pt",
        url=RELEASE_URL + "resnet20_cifar10jpeg.pt",
        sha256="912cf88b8f6a26483174443e0034ed0567e4b95f5780f05fc55acc6b9c3caffa",
        num_classes=10,
        max_bytes=8 * 2**20,  # the file is 1,122,639 bytes
        description="akamaster's CIFAR-10 ResNet-20 fine-tuned on CIFAR-10 (JPEG): 88.24% on "
        "its test split; inputs normalised with CIFAR_MEAN/CIFAR_STD",
    )
)
