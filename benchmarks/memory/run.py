"""Peak step memory of every method on ResNet-20, plus EcoTTA's and Tent's memory settings,
at batch 64 and batch 1, measured two ways (tracked per tensor, and as a fresh process's
resident set), with what autograd keeps between forward and backward beside it.

    python benchmarks/memory/run.py            # writes results.json, results.md, memory.png here
    python benchmarks/memory/run.py --replot   # memory.png again from results.json

Weights do not change memory, so no checkpoint is needed. One process per row measures the
resident set (a few seconds each; several minutes in all on one core, with the timings).
"""

from __future__ import annotations

import json
import platform
import statistics
import time
from pathlib import Path

import torch

from edgeadapt.api import config_for, wrap
from edgeadapt.memory import _probe_copy  # the step as measured: every sample adapts
from edgeadapt.memory_report import (
    MIB,
    add_ratios,
    format_memory_table,
    format_peak_breakdown,
    memory_report,
)
from edgeadapt.models import create_model

HERE = Path(__file__).resolve().parent
BATCHES = (64, 1)
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
    ("ecotta (stat_window=4096)", "ecotta", {"stat_window": 4096}),
    (
        "ecotta (teacher_momentum=0.999, teacher_views=4)",
        "ecotta",
        {"teacher_momentum": 0.999, "teacher_views": 4},
    ),
    ("ecotta (no recompute)", "ecotta", {"recompute": False}),
    ("ecotta (frozen_bn=eval, no recompute)", "ecotta", {"frozen_bn": "eval", "recompute": False}),
    (
        "ecotta (frozen_bn=eval, no lean, no recompute)",
        "ecotta",
        {"frozen_bn": "eval", "lean": False, "recompute": False},
    ),
]


def main() -> None:
    torch.set_num_threads(1)
    model = create_model("resnet20")
    results = {}
    for batch in BATCHES:
        shape = (batch, 3, 32, 32)
        rows = []
        for label, method, overrides in VARIANTS:
            (row,) = memory_report(
                model, [method], shape, overrides={method: overrides}, rss_model="resnet20"
            )
            row["label"], row["overrides"] = label, overrides
            row["step_ms"] = _step_ms(model, method, overrides, shape)
            rows.append(row)
            rss = row["rss"]["step"] / MIB if row.get("rss") else float("nan")
            print(
                f"batch {batch:2d} {label:48s} peak {row['measured']['peak_step'] / MIB:6.2f} "
                f"RSS {rss:6.2f} kept {row['measured']['saved_for_backward'] / MIB:6.2f} MiB, "
                f"{row['step_ms']:.1f} ms"
            )
        for r in rows:  # ratios against this run's cotta and tent rows, not each row's own
            for key in [k for k in r if k.startswith(("peak_vs_", "rss_vs_"))]:
                del r[key]
        add_ratios(rows, key="label")
        results[str(batch)] = rows
    meta = {
        "model": "resnet20",
        "input_shapes": {str(b): (b, 3, 32, 32) for b in BATCHES},
        "torch": torch.__version__,
        "machine": platform.machine(),
        "threads": 1,
    }
    (HERE / "results.json").write_text(
        json.dumps({"meta": meta, "batches": results}, indent=2) + "\n"
    )

    lines = [
        "ResNet-20, one adaptation step at 32×32, float32, MiB. Made by "
        "`python benchmarks/memory/run.py`. Peak step: the most bytes alive at once during the "
        "step (forward, backward, recomputation, optimizer), tracked per tensor and as a fresh "
        "process's resident set (RSS); ratios tracked / RSS. Kept for backward: what autograd "
        "holds between forward and backward (analytic: the planning model).",
    ]
    for batch in BATCHES:
        rows = results[str(batch)]
        lines += [
            "",
            f"## Batch {batch}",
            "",
            format_memory_table(rows, key="label"),
            "",
            "Where the tracked peak is: most MiB alive in each phase, and at the peak by category",
            "",
            format_peak_breakdown(rows, key="label"),
        ]
    lines += [
        "",
        "## Step time",
        "",
        "Milliseconds per adaptation step, one thread, median of 5 after one warm-up step. The "
        "machine was shared: differences under about a third can be noise (Tent and EATA run "
        "the same backward).",
        "",
        "| setting | " + " | ".join(f"batch {b}" for b in BATCHES) + " |",
        "|---|" + "---:|" * len(BATCHES),
    ]
    for i, (label, _, _) in enumerate(VARIANTS):
        times = " | ".join(f"{results[str(b)][i]['step_ms']:.1f}" for b in BATCHES)
        lines.append(f"| {label} | {times} |")
    (HERE / "results.md").write_text("\n".join(lines) + "\n")
    _plot(results)


def _step_ms(model, method: str, overrides: dict, shape: tuple[int, ...], repeats: int = 5):
    adapter = _probe_copy(wrap(model, config_for(method, **overrides)), shape)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    adapter(x)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        adapter(x)
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def _plot(results: dict[str, list[dict]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(BATCHES), figsize=(13, 5.5), sharey=True)
    for ax, batch in zip(axes, BATCHES):
        rows = results[str(batch)]
        y = list(range(len(rows)))
        tracked = [r["measured"]["peak_step"] / MIB for r in rows]
        rss = [r["rss"]["step"] / MIB if r.get("rss") else 0.0 for r in rows]
        kept = [r["measured"]["saved_for_backward"] / MIB for r in rows]
        ax.barh([i - 0.27 for i in y], tracked, height=0.27, label="peak step, tracked")
        ax.barh(y, rss, height=0.27, label="peak step, fresh-process RSS")
        ax.barh([i + 0.27 for i in y], kept, height=0.27, label="kept for backward")
        ax.set_yticks(y, [r["label"] for r in rows])
        ax.set_xlabel("MiB per adaptation step")
        ax.set_title(f"ResNet-20, batch {batch}, 32×32")
    axes[0].invert_yaxis()  # once: the panels share the axis
    axes[1].legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(HERE / "memory.png", dpi=120)


if __name__ == "__main__":
    import sys

    if sys.argv[1:] == ["--replot"]:
        _plot(json.loads((HERE / "results.json").read_text())["batches"])
    else:
        main()
