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

__all__ = ["StreamProgress", "read_progress_file"]

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


class StreamProgress:
    """One file per method: the adapter's `resume_state()`, the results of the segments run so
    far, and what identifies the stream (its segments, data, image order and batch size), so that a
    file is never resumed into another stream. Written atomically after every segment; read
    back with `weights_only=True`."""

    def __init__(
        self,
        path: Path,
        segments: Sequence[Segment],
        order: np.ndarray,
        batch_size: int,
        stream_id: str = "",
    ) -> None:
        self.path = path
        self.total = len(segments)
        self.stream = {
            "segments": [[s.corruption, s.severity, s.round, s.reset_before] for s in segments],
            "order_sha256": hashlib.sha256(np.ascontiguousarray(order).tobytes()).hexdigest(),
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
            raise CheckpointMismatchError(
                f"{self.path} was saved for another stream (segments, data, image order or "
                "batch size differ); delete it or use another state folder"
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
