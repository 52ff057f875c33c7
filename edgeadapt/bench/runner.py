"""Run adapters over a stream of domains and count errors."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from edgeadapt.bench.progress_file import StreamProgress
from edgeadapt.bench.protocols import Segment
from edgeadapt.bench.sources import DomainSource
from edgeadapt.errors import ConfigError

__all__ = ["MethodResult", "SegmentResult", "run_benchmark", "run_stream"]


@dataclass
class SegmentResult:
    corruption: str
    severity: int
    round: int
    errors: int
    images: int
    seconds: float

    @property
    def error(self) -> float:
        """Top-1 error in percent."""
        return 100.0 * self.errors / max(self.images, 1)


@dataclass
class MethodResult:
    method: str
    segments: list[SegmentResult] = field(default_factory=list)
    memory: dict[str, Any] = field(default_factory=dict)  # StepMemory.to_dict() of one step
    setup_seconds: float = 0.0  # warm-up / Fisher estimation before the stream
    batch_size: int | None = None  # images per adaptation step; None: not recorded (old JSON)
    # How the image order was made, e.g. {"order": "correlated", "delta": 0.1, "seed": 0}.
    stream: dict[str, Any] = field(default_factory=dict)
    # What the adapter started from (edgeadapt.setup_data.prepare_adapter's record); None:
    # not recorded (old JSON, or a caller that ran no setup step).
    setup: dict[str, Any] | None = None

    @property
    def mean_error(self) -> float:
        return float(np.mean([s.error for s in self.segments]))

    @property
    def seconds(self) -> float:
        return sum(s.seconds for s in self.segments)

    @property
    def images_per_second(self) -> float:
        return sum(s.images for s in self.segments) / max(self.seconds, 1e-9)

    def rounds(self) -> list[list[SegmentResult]]:
        out: dict[int, list[SegmentResult]] = {}
        for s in self.segments:
            out.setdefault(s.round, []).append(s)
        return [out[r] for r in sorted(out)]

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "batch_size": self.batch_size,
            "stream": self.stream,
            "mean_error": self.mean_error,
            "mean_error_by_round": [float(np.mean([s.error for s in r])) for r in self.rounds()],
            "seconds": self.seconds,
            "images_per_second": self.images_per_second,
            "setup_seconds": self.setup_seconds,
            "memory": self.memory,
            "segments": [{**asdict(s), "error": s.error} for s in self.segments],
        } | ({} if self.setup is None else {"setup": self.setup})


Order = np.ndarray | Sequence[np.ndarray]


def per_segment(order: Order, n_segments: int) -> list[np.ndarray]:
    """`order` as one image order per segment: a 1-D array is every segment's order (the
    i.i.d. protocol), anything else holds one order per segment (`segment_orders`)."""
    if not isinstance(order, np.ndarray) and all(np.ndim(o) == 0 for o in order):
        order = np.asarray(order, dtype=np.int64)  # a plain list of indices: one order
    if isinstance(order, np.ndarray) and order.ndim == 1:
        return [order] * n_segments
    orders = [np.asarray(o) for o in order]
    if len(orders) != n_segments or any(o.ndim != 1 for o in orders):
        raise ConfigError(
            f"got {len(orders)} image orders for {n_segments} segments; pass one 1-D order for "
            "every segment, or one 1-D order per segment (edgeadapt.data.segment_orders)"
        )
    return orders


def _batches(order: np.ndarray, batch_size: int) -> int:
    return (len(order) + batch_size - 1) // batch_size


def run_stream(
    adapter: nn.Module,
    segments: Sequence[Segment],
    source: DomainSource,
    *,
    order: Order,
    batch_size: int,
    to_batch: Callable[[np.ndarray], torch.Tensor],
    device: str = "cpu",
    progress: bool = True,
    desc: str = "",
    done: Sequence[SegmentResult] = (),
    after_segment: Callable[[list[SegmentResult]], None] | None = None,
) -> list[SegmentResult]:
    """Feed every segment's images, in its order, batch by batch; the adapter predicts and
    adapts. `order`: one order for every segment, or one per segment (`per_segment`).
    `done`: results of the first segments, already run (a resumed stream starts after them).
    `after_segment(results so far)` is called after each segment (to save progress)."""
    from tqdm.auto import tqdm

    orders = per_segment(order, len(segments))
    counts = [_batches(o, batch_size) for o in orders]
    bar = tqdm(total=sum(counts), desc=desc, disable=not progress, leave=False, unit="batch",
               initial=sum(counts[: len(done)]))  # fmt: skip
    results = list(done)
    for seg, seg_order in list(zip(segments, orders, strict=True))[len(done) :]:
        if seg.reset_before:
            adapter.reset()
        results.append(_run_segment(adapter, seg, source, seg_order, batch_size, to_batch,
                                    device, bar))  # fmt: skip
        bar.set_postfix(last=f"{seg.corruption}-{seg.severity}: {results[-1].error:.1f}%")
        if after_segment is not None:
            after_segment(results)
    bar.close()
    return results


def _run_segment(adapter, seg, source, order, batch_size, to_batch, device, bar) -> SegmentResult:
    images, labels = source.get(seg.corruption, seg.severity)
    errors, start = 0, time.perf_counter()
    for i in range(0, len(order), batch_size):
        idx = order[i : i + batch_size]
        logits = adapter(to_batch(images[idx]).to(device))
        errors += int((logits.argmax(1).cpu().numpy() != labels[idx]).sum())
        bar.update(1)
    elapsed = time.perf_counter() - start
    return SegmentResult(seg.corruption, seg.severity, seg.round, errors, len(order), elapsed)


def check_device(device: str) -> torch.device:
    """`device` as torch names it, or ConfigError when this machine cannot run it: a CPU
    build of torch asked for "cuda" would otherwise fail with a bare AssertionError after
    the data has loaded."""
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(f"device {device!r} is not a torch device name ({exc}); use e.g. "
                          "'cpu' or 'cuda'") from exc  # fmt: skip
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            f"device {device!r}: this torch has no CUDA device (torch.cuda.is_available() is "
            "False); use 'cpu', or install a CUDA build of torch on a machine with a GPU"
        )
    count = torch.cuda.device_count() if parsed.type == "cuda" else 0
    if parsed.type == "cuda" and parsed.index is not None and parsed.index >= count:
        raise ConfigError(f"device {device!r}: there are {count} CUDA devices")
    return parsed


def run_benchmark(
    model: nn.Module,
    methods: Sequence[str],
    segments: Sequence[Segment],
    source: DomainSource,
    *,
    order: Order,
    batch_size: int,
    to_batch: Callable[[np.ndarray], torch.Tensor],
    overrides: dict[str, dict[str, Any]] | None = None,
    warmup: Callable[[nn.Module], None] | None = None,
    device: str = "cpu",
    progress: bool = True,
    log: Callable[[str], None] = print,
    state_dir: str | Path | None = None,
    stream_id: str = "",
    stream: Mapping[str, Any] | None = None,
) -> list[MethodResult]:
    """Every method over the same stream. `warmup(adapter)` prepares an adapter before its
    stream (EcoTTA's source warm-up, EATA's Fisher); its time is reported apart.

    With `state_dir`, each method's adapter state and results are saved there after every
    segment (`<method>.pt`, atomically), and a run that finds its file goes on after the last
    saved segment with exactly the state it had, so a long run survives being interrupted.
    `stream_id` names the data (a folder, a seed) so a file is never resumed on other images.

    `order`: the image order of every segment (one 1-D array), or one per segment (the
    correlated protocol, `edgeadapt.data.segment_orders`). `stream` says how it was made
    (e.g. {"order": "correlated", "delta": 0.1, "seed": 0}); each result records it with the
    batch size. Default: {"order": "given"}, the caller's own."""
    from edgeadapt.api import config_for, wrap
    from edgeadapt.memory import measure_step_memory

    check_device(device)
    orders = per_segment(order, len(segments))
    about = dict(stream) if stream is not None else {"order": "given"}
    first, _ = source.get(segments[0].corruption, segments[0].severity)
    example = to_batch(first[orders[0][:2]])
    results = []
    for method in methods:
        fields = dict((overrides or {}).get(method, {}))
        adapter = wrap(model, config_for(method, **fields), example_input=example)
        memory = measure_step_memory(adapter, (batch_size, *example.shape[1:])).to_dict()
        adapter.to(device)
        start = time.perf_counter()
        if warmup is not None:
            warmup(adapter)
        setup = time.perf_counter() - start
        done, save = [], None
        if state_dir is not None:
            saved = StreamProgress(
                Path(state_dir) / f"{method}.pt", segments, orders, batch_size, stream_id
            )
            done = [SegmentResult(**d) for d in saved.resume(adapter, log)]
            save = functools.partial(saved.save, adapter)
        segs = run_stream(
            adapter, segments, source, order=orders, batch_size=batch_size, to_batch=to_batch,
            device=device, progress=progress, desc=method, done=done, after_segment=save,
        )  # fmt: skip
        result = MethodResult(method, segs, memory, setup, batch_size, about)
        log(
            f"{method:8s} mean error {result.mean_error:5.1f}%  ({result.images_per_second:.0f} img/s)"
        )
        results.append(result)
    return results
