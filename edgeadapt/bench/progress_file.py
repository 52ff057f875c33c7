"""Saved progress of one method's stream, so that a run of hours survives an interruption."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgeadapt._atomic import atomic_write_bytes
from edgeadapt.bench.protocols import Segment
from edgeadapt.errors import CheckpointMismatchError

__all__ = ["StreamProgress", "orders_sha256", "read_progress_file"]

# 2: the adapter state leaves out the tensors unchanged since wrap (Adapter.resume_state).
FORMAT = "edgeadapt-stream-progress-2"
READABLE = (FORMAT, "edgeadapt-stream-progress-1")


def read_progress_file(path: Path) -> dict[str, Any]:
    """A progress file's contents, read with `weights_only=True`; CheckpointMismatchError for a
    truncated or foreign file or an unknown format."""
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a truncated or foreign file: say which, do not guess
        raise CheckpointMismatchError(
            f"{path} is not a readable progress file ({err}); delete it to start over"
        ) from err
    if not isinstance(saved, dict) or saved.get("format") not in READABLE:
        raise CheckpointMismatchError(f"{path} is not an edgeadapt progress file")
    return saved


def orders_sha256(orders: Sequence[np.ndarray]) -> str:
    """What identifies the segments' image orders. One order for every segment (the i.i.d.
    protocol) hashes as that order alone, as files written before per-segment orders did, so
    they still resume; orders that differ between segments hash each in turn."""
    digests = [hashlib.sha256(np.ascontiguousarray(o).tobytes()).digest() for o in orders]
    if len(set(digests)) <= 1:
        return (digests[0] if digests else hashlib.sha256(b"").digest()).hex()
    return hashlib.sha256(b"per-segment:" + b"".join(digests)).hexdigest()


# What each key of `StreamProgress.stream` is, in the words of a refusal.
_NAMES = {
    "segments": "segments",
    "order_sha256": "image order (stream, delta, seed or number of images)",
    "batch_size": "batch size",
    "data": "data",
}


class StreamProgress:
    """One file per method: the adapter's `resume_state()`, the results of the segments run so
    far, and what identifies the stream (its segments, data, image orders and batch size), so
    that a file is never resumed into another stream. Written atomically after every segment;
    read back with `weights_only=True`. `orders`: one image order per segment."""

    def __init__(
        self,
        path: Path,
        segments: Sequence[Segment],
        orders: Sequence[np.ndarray],
        batch_size: int,
        stream_id: str = "",
    ) -> None:
        self.path = path
        self.total = len(segments)
        self.stream = {
            "segments": [[s.corruption, s.severity, s.round, s.reset_before] for s in segments],
            "order_sha256": orders_sha256(orders),
            "batch_size": int(batch_size),
            "data": stream_id,
        }

    def resume(self, adapter: Any, log: Callable[[str], None]) -> list[dict[str, Any]]:
        """Load the saved state into `adapter` (wrapped and set up as before) and return the
        saved segment results; nothing when there is no file yet."""
        if not self.path.is_file():
            return []
        saved = read_progress_file(self.path)
        if saved["stream"] != self.stream:
            differ = [
                _NAMES.get(k, k) for k in self.stream if saved["stream"].get(k) != self.stream[k]
            ]
            raise CheckpointMismatchError(
                f"{self.path} was saved for another stream ({', '.join(differ) or 'its fields'} "
                "differ); delete it or use another state folder"
            )
        adapter.load_resume_state(saved["adapter"])
        log(f"resumed from {self.path} after {len(saved['segments'])} of {self.total} segments")
        return list(saved["segments"])

    def save(self, adapter: Any, results: Sequence[Any]) -> None:
        from dataclasses import asdict

        payload = {
            "format": FORMAT,
            "stream": self.stream,
            "segments": [asdict(r) for r in results],
            "adapter": adapter.resume_state(),
        }
        buf = io.BytesIO()
        torch.save(payload, buf)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(self.path, buf.getvalue())
