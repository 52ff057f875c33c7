"""Compare methods' step memory side by side (the `edgeadapt memory` command).

The headline is the peak of one adaptation step, measured two ways: tracked (every tensor
storage the step allocates, `measure_step_memory`) and as the resident set of a fresh process
(`measure_step_rss`). What autograd keeps between forward and backward, measured and by the
planning model, stays beside it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn

__all__ = ["format_memory_table", "format_peak_breakdown", "memory_report"]

MIB = 1 << 20
PEERS = ("cotta", "tent")  # the ratio columns: each method's peak against these methods'


def memory_report(
    model: nn.Module,
    methods: Sequence[str],
    input_shape: tuple[int, ...],
    *,
    frozen_bits: int = 32,
    overrides: dict[str, dict[str, Any]] | None = None,
    rss_model: str | None = None,
    num_classes: int = 10,
) -> list[dict[str, Any]]:
    """One row per method: the step's measured bytes (tracked peak and its breakdown, kept for
    backward, gradients, optimiser state), the planning model's, and with `rss_model` (the
    registered name of `model`) the fresh-process resident peak too (one process per method;
    `rss` is None where the resident set cannot be read). Ratios to CoTTA's and Tent's peaks
    where those methods are in the report."""
    from edgeadapt.api import config_for, wrap
    from edgeadapt.memory import (
        RssUnavailableError,
        analytic_step_memory,
        measure_step_memory,
        measure_step_rss,
    )

    rows = []
    for method in methods:
        config = config_for(method, **(overrides or {}).get(method, {}))
        adapter = wrap(model, config)
        row: dict[str, Any] = {
            "method": method,
            "measured": measure_step_memory(adapter, input_shape).to_dict(),
            "analytic": analytic_step_memory(
                adapter, input_shape, frozen_bits=frozen_bits
            ).to_dict(),
        }
        if rss_model is not None:
            try:
                row["rss"] = measure_step_rss(
                    rss_model, config, input_shape, num_classes=num_classes
                )
            except RssUnavailableError as exc:
                row["rss"], row["rss_error"] = None, str(exc)
        rows.append(row)
    add_ratios(rows)
    return rows


def add_ratios(rows: Sequence[dict[str, Any]], key: str = "method") -> None:
    """`peak_vs_<peer>` (tracked) and `rss_vs_<peer>` on each row, where `peer` is a row's
    `key` (the method, or a benchmark's label)."""
    by_name = {r[key]: r for r in rows}
    for peer in PEERS:
        ref = by_name.get(peer)
        if ref is None:
            continue
        for r in rows:
            if ref["measured"]["peak_step"]:
                r[f"peak_vs_{peer}"] = r["measured"]["peak_step"] / ref["measured"]["peak_step"]
            if r.get("rss") and ref.get("rss") and ref["rss"]["step"] > 0:
                r[f"rss_vs_{peer}"] = r["rss"]["step"] / ref["rss"]["step"]


def _mib(n: float | None, digits: int = 2) -> str:
    return "–" if n is None else f"{n / MIB:.{digits}f}"


def _ratios(r: dict[str, Any], peer: str) -> str:
    tracked, rss = r.get(f"peak_vs_{peer}"), r.get(f"rss_vs_{peer}")
    if tracked is None:
        return "–"
    return f"{100 * tracked:.1f}%" + ("" if rss is None else f" / {100 * rss:.1f}%")


def format_memory_table(rows: Sequence[dict[str, Any]], key: str = "method") -> str:
    """The headline table, MiB: the step's peak both ways, ratios (tracked / RSS), then what
    autograd keeps between forward and backward (measured and planned) and gradients +
    optimiser state."""
    lines = [
        "| method | peak step, tracked | peak step, RSS | vs CoTTA | vs Tent "
        "| kept for backward | kept, analytic | grads + optimizer |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        m, a, rss = r["measured"], r["analytic"], r.get("rss")
        lines.append(
            f"| {r[key]} | {_mib(m['peak_step'])} | {_mib(rss['step'] if rss else None)} | "
            f"{_ratios(r, 'cotta')} | {_ratios(r, 'tent')} | {_mib(m['saved_for_backward'])} | "
            f"{_mib(a['saved_for_backward'])} | "
            f"{_mib(m['gradients'] + m['optimizer_state'], 3)} |"
        )
    return "\n".join(lines)


def format_peak_breakdown(rows: Sequence[dict[str, Any]], key: str = "method") -> str:
    """Where the tracked peak is, MiB: the most bytes alive in each phase of the step, the
    phase of the overall peak, and what is alive at that peak by category."""
    from edgeadapt.memory import CATEGORIES, PHASES

    head = " | ".join(p.replace("_", " ") for p in PHASES)
    cats = " | ".join(c.replace("_", " ") for c in CATEGORIES)
    lines = [
        f"| method | {head} | peak in | at the peak: {cats} |",
        "|---|" + "---:|" * len(PHASES) + "---|" + "---:|" * len(CATEGORIES),
    ]
    for r in rows:
        m = r["measured"]
        phases = " | ".join(_mib(m["peak_phases"].get(p)) for p in PHASES)
        parts = " | ".join(_mib(m["peak_parts"].get(c, 0)) for c in CATEGORIES)
        lines.append(f"| {r[key]} | {phases} | {m['peak_phase']} | {parts} |")
    return "\n".join(lines)
