"""Compare methods' adaptation memory side by side (the `edgeadapt memory` command)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn

__all__ = ["format_memory_table", "memory_report"]

MIB = 1 << 20


def memory_report(
    model: nn.Module,
    methods: Sequence[str],
    input_shape: tuple[int, ...],
    *,
    frozen_bits: int = 32,
    overrides: dict[str, dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """One row per method: measured and analytic bytes for one adaptation step."""
    from edgeadapt.api import config_for, wrap
    from edgeadapt.memory import analytic_step_memory, measure_step_memory

    example = None
    rows = []
    for method in methods:
        config = config_for(method, **(overrides or {}).get(method, {}))
        adapter = wrap(model, config, example_input=example)
        measured = measure_step_memory(adapter, input_shape)
        analytic = analytic_step_memory(adapter, input_shape, frozen_bits=frozen_bits)
        rows.append(
            {"method": method, "measured": measured.to_dict(), "analytic": analytic.to_dict()}
        )
    reference = {r["method"]: r["measured"]["adaptation"] for r in rows}
    for r in rows:
        for peer in ("cotta", "tent"):
            if reference.get(peer):
                r[f"adaptation_vs_{peer}"] = r["measured"]["adaptation"] / reference[peer]
    return rows


def format_memory_table(rows: Sequence[dict[str, Any]]) -> str:
    """A Markdown table, MiB."""
    head = (
        "| method | kept for backward | analytic | grads + optimizer | trainable | frozen | "
        "adaptation | vs CoTTA | vs Tent | peak step |\n"
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    )
    lines = [head]
    for r in rows:
        m, a = r["measured"], r["analytic"]

        def ratio(key: str, r: dict[str, Any] = r) -> str:
            return f"{100 * r[key]:.1f}%" if key in r else "–"

        lines.append(
            f"| {r['method']} | {m['saved_for_backward'] / MIB:.2f} | {a['saved_for_backward'] / MIB:.2f} | "
            f"{(m['gradients'] + m['optimizer_state']) / MIB:.3f} | {m['trainable'] / MIB:.3f} | "
            f"{m['frozen'] / MIB:.2f} | {m['adaptation'] / MIB:.2f} | {ratio('adaptation_vs_cotta')} | "
            f"{ratio('adaptation_vs_tent')} | {m['peak_step'] / MIB:.1f} |"
        )
    return "\n".join(lines)
