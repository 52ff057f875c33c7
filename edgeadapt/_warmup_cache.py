"""A cache of EcoTTA warm-ups, for benchmarks that wrap the same model the same way many times.

A warm-up of 500 steps takes minutes on a CPU, and a benchmark over batch sizes and streams
repeats it for every run. The warm-up is deterministic given what goes in, so its result is
stored under a digest of everything that goes in: the adapter's full state before the warm-up
(model, meta networks, their initialisation), its config (less the fields a warm-up never
reads: `NOT_READ_BY_WARMUP`), the source file (path, size, mtime),
the steps, lr, seed, normalisation and input size. Not the global RNG: torch seeds it at
random in every process, so an entry keyed on it was never found again by another process.
Instead every warm-up, cached or not, runs on a private RNG seeded from `seed` and leaves the
caller's global RNG as it was, so a hit and a warm-up leave the process in the same state.
Entries are written atomically and read with `weights_only=True`; a damaged entry is ignored
and rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = ["cached_warmup"]

# Config fields a warm-up never reads (it has its own Adam and lr, and runs every sample):
# configs that differ only in these share one entry, so a sweep over them warms up once.
NOT_READ_BY_WARMUP = frozenset({
    "lr", "optimizer", "momentum", "weight_decay", "steps", "episodic", "small_batch",
    "entropy_margin", "restore_prob", "entropy_weighting",
})  # fmt: skip


def cached_warmup(
    adapter: nn.Module,
    cache_dir: str | os.PathLike[str] | None,
    inputs: dict[str, Any],
    source: Path,
    warm_up: Callable[[], dict[str, Any]],
    say: Callable[[str], None],
) -> dict[str, Any]:
    """`warm_up()`'s record, from the cache when an entry for exactly these inputs exists."""
    if cache_dir is None:
        return _on_private_rng(warm_up, inputs["seed"])
    path = Path(cache_dir) / f"{_digest(adapter, inputs, source)}.pt"
    entry = _read(path)
    if entry is not None:
        adapter.load_state_dict(entry["state"])
        adapter._sync_teacher()  # as at the end of a warm-up: the teacher starts from it
        adapter.snapshot()
        say(f"EcoTTA warm-up: taken from the cache ({path})")
        return json.loads(entry["record"])
    record = _on_private_rng(warm_up, inputs["seed"])
    _write(path, {"state": adapter.state_dict(), "record": json.dumps(record)})
    return record


def _on_private_rng(warm_up: Callable[[], dict[str, Any]], seed: int) -> dict[str, Any]:
    """Run `warm_up` with torch's global RNG seeded from `seed`, and restore it afterwards:
    the result depends on nothing a process drew before, and draws nothing from the caller."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return warm_up()


def _digest(adapter: nn.Module, inputs: dict[str, Any], source: Path) -> str:
    from edgeadapt.config import to_dict

    h = hashlib.sha256()
    stat = source.stat()
    config = {k: v for k, v in to_dict(adapter.config).items() if k not in NOT_READ_BY_WARMUP}
    about = {**inputs, "config": config, "source": str(source.resolve()),
             "source_size": stat.st_size, "source_mtime_ns": stat.st_mtime_ns}  # fmt: skip
    h.update(json.dumps(about, sort_keys=True, default=str).encode())
    for name, t in sorted(adapter.state_dict().items()):
        h.update(name.encode())
        h.update(str(t.dtype).encode() + str(tuple(t.shape)).encode())
        h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:32]


def _read(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        entry = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # a damaged or foreign file: warm up again and replace it
        return None
    if not isinstance(entry, dict) or set(entry) != {"state", "record"}:
        return None
    return entry


def _write(path: Path, entry: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    os.close(fd)
    try:
        torch.save(entry, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
