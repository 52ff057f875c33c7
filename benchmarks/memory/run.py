"""Adaptation memory of every method on ResNet-20, plus EcoTTA's and Tent's memory settings.

    python benchmarks/memory/run.py            # writes results.json, results.md, memory.png here

Weights do not change memory, so no checkpoint is needed.
"""

from __future__ import annotations

import json
import platform
from pathlib import Path

import torch

from edgeadapt.memory_report import MIB, memory_report
from edgeadapt.models import create_model

HERE = Path(__file__).resolve().parent
SHAPE = (64, 3, 32, 32)
# (label, method, config overrides)
VARIANTS = [
    ("source", "source", {}),
    ("norm", "norm", {}),
    ("tent", "tent", {}),
    ("tent (lean)", "tent", {"lean": True}),
    ("eata", "eata", {}),
    ("cotta", "cotta", {}),
    ("ecotta", "ecotta", {}),
    ("ecotta (frozen_bn=eval)", "ecotta", {"frozen_bn": "eval"}),
    ("ecotta (no recompute)", "ecotta", {"recompute": False}),
    ("ecotta (frozen_bn=eval, no recompute)", "ecotta", {"frozen_bn": "eval", "recompute": False}),
    (
        "ecotta (frozen_bn=eval, no lean, no recompute)",
        "ecotta",
        {"frozen_bn": "eval", "lean": False, "recompute": False},
    ),
]


def main() -> None:
    model = create_model("resnet20")
    rows = []
    for label, method, overrides in VARIANTS:
        (row,) = memory_report(model, [method], SHAPE, overrides={method: overrides})
        row["label"], row["overrides"] = label, overrides
        rows.append(row)
        print(f"{label:32s} kept {row['measured']['saved_for_backward'] / MIB:7.2f} MiB")
    ref = {r["label"]: r["measured"]["adaptation"] for r in rows}
    for r in rows:
        r["adaptation_vs_cotta"] = r["measured"]["adaptation"] / ref["cotta"]
        r["adaptation_vs_tent"] = r["measured"]["adaptation"] / ref["tent"]
    meta = {
        "model": "resnet20",
        "input_shape": SHAPE,
        "torch": torch.__version__,
        "machine": platform.machine(),
    }
    (HERE / "results.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")

    lines = [
        f"ResNet-20, one adaptation step at input {SHAPE}, float32, MiB. "
        "Made by `python benchmarks/memory/run.py`.",
        "",
        "| setting | kept for backward | analytic | grads + optimizer | adaptation | vs CoTTA | vs Tent | peak step |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        m, a = r["measured"], r["analytic"]
        lines.append(
            f"| {r['label']} | {m['saved_for_backward'] / MIB:.2f} | {a['saved_for_backward'] / MIB:.2f} | "
            f"{(m['gradients'] + m['optimizer_state']) / MIB:.3f} | {m['adaptation'] / MIB:.2f} | "
            f"{100 * r['adaptation_vs_cotta']:.1f}% | {100 * r['adaptation_vs_tent']:.1f}% | {m['peak_step'] / MIB:.1f} |"
        )
    (HERE / "results.md").write_text("\n".join(lines) + "\n")
    _plot(rows)


def _plot(rows: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [r["label"] for r in rows]
    measured = [r["measured"]["adaptation"] / MIB for r in rows]
    analytic = [r["analytic"]["adaptation"] / MIB for r in rows]
    fig, ax = plt.subplots(figsize=(9, 4.5))
    y = range(len(rows))
    ax.barh([i + 0.2 for i in y], measured, height=0.4, label="measured")
    ax.barh([i - 0.2 for i in y], analytic, height=0.4, label="analytic (planning model)")
    ax.set_yticks(list(y), labels)
    ax.invert_yaxis()
    ax.set_xlabel("adaptation memory per step, MiB (kept activations + grads + optimizer)")
    ax.set_title(f"ResNet-20, batch {SHAPE[0]}, {SHAPE[2]}×{SHAPE[3]}")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(HERE / "memory.png", dpi=120)


if __name__ == "__main__":
    main()
