"""Summarise a stream's `FrameResult`s into a JSON-able dict."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

import numpy as np

from edgeadapt.errors import InputError
from edgeadapt.video.streaming import FrameResult

__all__ = ["ADAPT_MAC_FACTOR", "per_frame_table", "summarize", "times"]

# Planning rule for one training step: forward + backward ≈ 3 forward passes (backward
# computes gradients w.r.t. inputs and weights, each about one forward).
ADAPT_MAC_FACTOR = 3


def times(ratio: float, better: str, worse: str) -> str:
    """A ratio baseline/this in words that never call a loss a saving: 2.5 -> "2.50x fewer",
    0.4 -> "2.50x more" (better / worse: "fewer"/"more", "faster"/"slower")."""
    if ratio >= 1.0:
        return f"{ratio:.2f}x {better}"
    return f"{1.0 / ratio:.2f}x {worse}" if ratio > 0 else f"infinitely {worse}"


def _ms(values: list[float]) -> dict[str, float]:
    a = np.asarray(values, dtype=np.float64) * 1e3
    return {
        "mean": float(a.mean()),
        "p50": float(np.percentile(a, 50)),
        "p90": float(np.percentile(a, 90)),
        "p99": float(np.percentile(a, 99)),
        "max": float(a.max()),
    }


def summarize(results: Iterable[FrameResult], **meta: Any) -> dict[str, Any]:
    """Frames, latency percentiles, MACs (performed by the CPU runtime, skipped, and the
    element-sparse count when layer stats ran), mean non-zero fraction of Δx per layer
    (anchor frames count as 1.0), anchors and scene cuts (detected, signalled), adaptation
    cost, and the agreement with the dense reference when it ran. `meta` is copied in as
    "settings"."""
    rs = list(results)
    if not rs:
        raise InputError("no frames were streamed; check the source (limit, stride, path)")
    dense = sum(r.macs_dense for r in rs)
    performed = sum(r.macs_performed for r in rs)
    layers: dict[str, list[float]] = {}
    for r in rs:
        for name, v in r.layer_nonzero.items():
            layers.setdefault(name, []).append(v)
    if all(r.macs_element is not None for r in rs):
        element = sum(r.macs_element or 0 for r in rs)
        out_element = {
            "element_per_frame": element / len(rs),
            "element_reduction": dense / element if element else float("inf"),
        }
    else:
        out_element = {}
    adapted = [r for r in rs if r.adapted]
    # Each adapted frame costs ADAPT_MAC_FACTOR dense passes per frame of its batch (per step).
    adapt_macs = sum(ADAPT_MAC_FACTOR * r.macs_dense * r.adapt_batch for r in adapted)
    out: dict[str, Any] = {
        "settings": meta,
        "frames": len(rs),
        "latency_ms": _ms([r.latency_s for r in rs]),
        "macs": {
            "dense_per_frame": dense / len(rs),
            "performed_per_frame": performed / len(rs),
            "skipped_fraction": 1.0 - performed / dense if dense else 0.0,
            "reduction": dense / performed if performed else float("inf"),  # dense/performed
            "vs_dense": times(dense / performed, "fewer", "more") if performed else "none run",
        },
        "anchors": sum(r.anchor for r in rs),
        "scene_cuts": sum(r.scene_cut for r in rs),
        "scene_cuts_signalled": sum(r.cut_signalled for r in rs),
        "nonzero_delta_per_layer": {k: float(np.mean(v)) for k, v in layers.items()},
        "predictions": dict(sorted(Counter(r.prediction for r in rs).items())),
    }
    out["macs"].update(out_element)
    adapt_ms_per_frame = 1e3 * sum(r.adapt_s for r in adapted) / len(rs)
    if adapted:
        # Every step changes the weights, so the next frame is a dense anchor (counted in
        # `performed`), and the step itself costs ADAPT_MAC_FACTOR dense passes per frame of
        # its batch: with both, a delta stream can cost more than dense prediction. Said in
        # words ("more") rather than as a "reduction" below 1.
        with_adapt = performed + adapt_macs
        out["adaptation"] = {
            "steps": len(adapted),
            "mean_ms": float(np.mean([r.adapt_s for r in adapted]) * 1e3),
            "total_s": float(sum(r.adapt_s for r in adapted)),
            "ms_per_frame": adapt_ms_per_frame,
            "macs_estimate": adapt_macs,
            "macs_per_frame_incl_adaptation": with_adapt / len(rs),
            "macs_vs_dense_incl_adaptation": times(dense / with_adapt, "fewer", "more"),
        }
    refs = [r for r in rs if r.dense_prediction is not None]
    if refs:
        dense_ms = _ms([r.dense_latency_s or 0.0 for r in refs])
        out["dense_latency_ms"] = dense_ms
        out["agreement"] = float(np.mean([r.prediction == r.dense_prediction for r in refs]))
        out["wall_clock_ratio"] = dense_ms["mean"] / out["latency_ms"]["mean"]  # dense/this
        out["wall_clock_vs_dense"] = times(out["wall_clock_ratio"], "faster", "slower")
        if adapted:
            # Per frame with the adaptation's time spread over the stream, against dense
            # prediction paying the same adaptation time (it would adapt too; this side's
            # time also holds rebuilding the delta runtime after each step).
            this_ms = out["latency_ms"]["mean"] + adapt_ms_per_frame
            ratio = (dense_ms["mean"] + adapt_ms_per_frame) / this_ms
            out["adaptation"]["ms_per_frame_incl_adaptation"] = this_ms
            out["adaptation"]["wall_clock_vs_dense_incl_adaptation"] = times(
                ratio, "faster", "slower"
            )
    return out


def per_frame_table(results: Iterable[FrameResult]) -> dict[str, list[Any]]:
    """Column-wise per-frame records (compact JSON): index, prediction, latency in ms, MACs
    performed, non-zero element MACs, anchor / scene-cut flags."""
    rs = list(results)
    return {
        "index": [r.index for r in rs],
        "prediction": [r.prediction for r in rs],
        "confidence": [round(r.confidence, 4) for r in rs],
        "latency_ms": [round(r.latency_s * 1e3, 3) for r in rs],
        "macs_performed": [r.macs_performed for r in rs],
        "macs_element": [r.macs_element for r in rs],
        "anchor": [r.anchor for r in rs],
        "scene_cut": [r.scene_cut or r.cut_signalled for r in rs],
    }
