"""Stream orders for the continual benchmark.

The image-folder test split is sorted by class, so reading it in file order is a label-shift
stream that breaks batch-norm based adaptation for reasons unrelated to corruptions. The
standard (i.i.d.) protocol shuffles the test split once with a fixed seed and uses that same
order in every domain; a class-sorted stream is a separate, named protocol.

A device camera sees consecutive frames of mostly one class: the temporally correlated
protocol (`correlated_order`) is the Dirichlet label-shift order of NOTE (Gong et al.,
NeurIPS 2022) and RoTTA (Yuan et al., CVPR 2023), drawn afresh for every domain.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from edgeadapt.errors import ConfigError

__all__ = [
    "DEFAULT_DELTA",
    "DEFAULT_STREAM_SEED",
    "STREAMS",
    "check_stream",
    "class_sorted_order",
    "correlated_order",
    "majority_share",
    "mean_run_length",
    "segment_orders",
    "stream_order",
]

DEFAULT_STREAM_SEED = 0
DEFAULT_DELTA = 0.1  # RoTTA's and NOTE's setting: long runs of one class
STREAMS = ("iid", "correlated")
MAX_SLOTS = 100  # RoTTA caps the slots at 100 so that ImageNet's 1000 classes still share slots


def stream_order(n: int, seed: int = DEFAULT_STREAM_SEED) -> np.ndarray:
    """The i.i.d. protocol order: one fixed permutation of `range(n)` (int64).

    Index every domain's images with the same order (`images[order]`) so domains differ only
    in the corruption. Depends only on (n, seed), via numpy's PCG64 Generator.
    """
    if n < 0:
        raise ConfigError(f"n must be >= 0, got {n}")
    return np.random.default_rng(seed).permutation(n).astype(np.int64)


def class_sorted_order(labels: np.ndarray) -> np.ndarray:
    """The label-shift protocol order: indices sorted by label, stable within a class."""
    return np.argsort(np.asarray(labels), kind="stable").astype(np.int64)


def _check_delta(delta: float) -> float:
    try:
        value = float(delta)
    except (TypeError, ValueError):
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise ConfigError(
            f"delta must be a finite number > 0, got {delta!r}; pass e.g. 0.1 (the published "
            "setting: long runs of one class) or larger for a milder label shift"
        )
    return value


def correlated_order(
    labels: np.ndarray,
    delta: float = DEFAULT_DELTA,
    seed: int | Sequence[int] = DEFAULT_STREAM_SEED,
    slots: int | None = None,
) -> np.ndarray:
    """The temporally correlated order of NOTE and RoTTA: a permutation of `range(len(labels))`
    (int64) in which consecutive images mostly share a class.

    The stream is cut into `slots` consecutive slots (default: one per class, at most 100).
    Each class's images are split over the slots in proportions drawn from
    Dirichlet([delta] * slots); each slot lists its classes' chunks in a random order. Small
    `delta` (0.1) puts most of a class in one slot: long runs of one class. Large `delta`
    spreads every class evenly over the slots, so each slot's label mix tends to uniform, but
    a slot still lists each class as one block (about len/classes² images): this is the
    published sampler, kept as is so results compare with the papers, and it does not
    become the i.i.d. order as `delta` grows.

    Deterministic in (labels, delta, seed, slots); `seed` may be a tuple such as
    (seed, domain index). Images are shuffled within their class first, so the order of a
    subset does not follow the file order.
    """
    labels = np.asarray(labels)
    delta = _check_delta(delta)
    if labels.ndim != 1:
        raise ConfigError(f"labels must be one-dimensional, got shape {labels.shape}")
    classes = np.unique(labels)
    n_slots = min(len(classes), MAX_SLOTS) if slots is None else slots
    if n_slots < 1 and len(labels):
        raise ConfigError(f"slots must be >= 1 (or None: one per class), got {slots}")
    rng = np.random.default_rng(seed)
    chunks: list[list[np.ndarray]] = [[] for _ in range(max(n_slots, 0))]
    for c in classes:
        members = rng.permutation(np.flatnonzero(labels == c))
        shares = rng.dirichlet([delta] * n_slots)
        # Cut points as RoTTA takes them: floor of the cumulative share of the class's size.
        cuts = (np.cumsum(shares)[:-1] * len(members)).astype(np.int64)
        for slot, chunk in zip(chunks, np.split(members, cuts), strict=True):
            slot.append(chunk)
    parts = [slot[i] for slot in chunks for i in rng.permutation(len(slot))]
    return np.concatenate([np.empty(0, np.int64), *parts]).astype(np.int64)


def mean_run_length(labels: np.ndarray) -> float:
    """Mean length of the runs of equal consecutive labels: about 1/(1 - 1/classes) for an
    i.i.d. stream of balanced classes, up to len(labels) for a single run (0 when empty)."""
    labels = np.asarray(labels)
    if labels.size == 0:
        return 0.0
    runs = 1 + int(np.count_nonzero(labels[1:] != labels[:-1]))
    return labels.size / runs


def majority_share(labels: np.ndarray, window: int) -> float:
    """Mean share of the most common label in consecutive windows of `window` labels (the
    last, shorter one included): with `window` the batch size, how nearly one class each
    batch is, which is what batch-norm statistics feel; about 1/classes when i.i.d. and
    `window` is large, 1.0 when every window holds one class."""
    labels = np.asarray(labels)
    if window < 1:
        raise ConfigError(f"window must be >= 1, got {window}")
    windows = [labels[i : i + window] for i in range(0, len(labels), window)]
    shares = [np.unique(w, return_counts=True)[1].max() / len(w) for w in windows]
    return float(np.mean(shares)) if shares else 0.0


def check_stream(stream: str, delta: float | None = None) -> float | None:
    """The δ a stream uses (None for "iid"), or ConfigError for an unknown name, a δ given
    with "iid" (which has none) or a δ that is not a finite number > 0."""
    if stream not in STREAMS:
        raise ConfigError(f"unknown stream {stream!r}; choose one of {list(STREAMS)}")
    if stream == "iid":
        if delta is not None:
            raise ConfigError(
                f"delta ({delta}) only shapes the correlated stream; drop it, or pass "
                "stream='correlated' (--stream correlated)"
            )
        return None
    return _check_delta(DEFAULT_DELTA if delta is None else delta)


def segment_orders(
    labels: np.ndarray,
    n_segments: int,
    *,
    stream: str = "iid",
    delta: float | None = None,
    seed: int = DEFAULT_STREAM_SEED,
    n_images: int | None = None,
    repeat_every: int | None = None,
) -> list[np.ndarray]:
    """The image order of each of `n_segments` domains whose images carry `labels`.

    The first `n_images` of the i.i.d. permutation (all by default) are the images used;
    "iid" feeds them in that order in every domain, "correlated" rearranges them by
    `correlated_order` with a draw of its own per domain (seed (seed, domain index)), as
    RoTTA draws per domain. `repeat_every=n`: segment k reuses the draw of segment k mod n,
    so a long-term run repeats one round's stream exactly and what changes from round to
    round is the adapter alone.
    """
    if repeat_every is not None and repeat_every < 1:
        raise ConfigError(f"repeat_every must be >= 1 (segments per round), got {repeat_every}")
    delta = check_stream(stream, delta)
    labels = np.asarray(labels)
    base = stream_order(len(labels), seed)[: n_images or len(labels)]
    if delta is None:
        return [base] * n_segments  # one array: the i.i.d. protocol's single order
    period = repeat_every or n_segments
    draws = [base[correlated_order(labels[base], delta, (seed, k))] for k in range(period)]
    return [draws[k % period] for k in range(n_segments)]
