"""Benchmark reports: a Markdown table and plots people can compare."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgeadapt.bench.runner import MethodResult, SegmentResult
from edgeadapt.setup_data import setup_label

__all__ = [
    "markdown_report",
    "markdown_table",
    "method_label",
    "plot_results",
    "results_from_json",
    "rounds_table",
    "setting_label",
    "stream_label",
]

_SHORT = {
    "gaussian_noise": "gauss", "shot_noise": "shot", "impulse_noise": "impul", "defocus_blur": "defoc",
    "glass_blur": "glass", "motion_blur": "motn", "zoom_blur": "zoom", "snow": "snow", "frost": "frost",
    "fog": "fog", "brightness": "brit", "contrast": "contr", "elastic_transform": "elast",
    "pixelate": "pixel", "jpeg_compression": "jpeg", "speckle_noise": "speck", "gaussian_blur": "gblur",
    "spatter": "spatt", "saturate": "satur",
}  # fmt: skip
MIB = 1 << 20


def _domains(result: MethodResult) -> list[str]:
    """Column names; the severity is added where it varies (gradual protocol)."""
    first = result.rounds()[0]
    varies = len({s.severity for s in first}) > 1
    return [
        _SHORT.get(s.corruption, s.corruption) + (str(s.severity) if varies else "") for s in first
    ]


def method_label(result: MethodResult) -> str:
    """The method's name, with "(no warm-up)" / "(no Fisher)" where its setup was skipped."""
    note = setup_label(result.setup)
    return f"{result.method} ({note})" if note else result.method


def markdown_table(results: Sequence[MethodResult]) -> str:
    """Per-domain error (%) of the first round, mean over all rounds, memory and speed. With
    several rounds a caption says so: per-domain cells of round 1 beside a mean over every
    round (a collapse) would otherwise read as an arithmetic error."""
    if not results:
        return ""
    domains = _domains(results[0])
    rounds = len(results[0].rounds())
    multi = rounds > 1
    mean = f"mean, {rounds} rounds" if multi else "mean"
    head = ["method", *domains, mean, *(["last round"] if multi else []), "adapt MiB", "img/s"]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    if multi:
        caption = (f"Per-domain error (%) of round 1; mean error over all {rounds} rounds; "
                   "the last round's mean.")  # fmt: skip
        lines = [caption, "", *lines]
    for r in results:
        first = [f"{s.error:.1f}" for s in r.rounds()[0]]
        last = [f"{np.mean([s.error for s in r.rounds()[-1]]):.1f}"] if multi else []
        mem = r.memory.get("adaptation", 0) / MIB
        row = [
            method_label(r),
            *first,
            f"**{r.mean_error:.1f}**",
            *last,
            f"{mem:.1f}",
            f"{r.images_per_second:.0f}",
        ]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def markdown_report(results: Sequence[MethodResult]) -> str:
    """`markdown_table`, and with several rounds the per-round table below it."""
    table = markdown_table(results)
    if results and len(results[0].rounds()) > 1:
        table += "\n\nMean error (%) per round:\n\n" + rounds_table(results)
    return table


def rounds_table(results: Sequence[MethodResult]) -> str:
    """Mean error (%) of each round, and the last round minus the first: where drift shows."""
    if not results:
        return ""
    n = max(len(r.rounds()) for r in results)
    head = ["method", *(f"round {i + 1}" for i in range(n)), "last − first"]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for r in results:
        means = [float(np.mean([s.error for s in rd])) for rd in r.rounds()]
        cells = [f"{m:.2f}" for m in means] + [""] * (n - len(means))
        row = [method_label(r), *cells, f"{means[-1] - means[0]:+.2f}"]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def plot_results(results: Sequence[MethodResult], path: str | Path, title: str = "") -> Path:
    """Three panels: per-domain error, mean error against adaptation memory, error by round."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    fig, axes = plt.subplots(1, 3, figsize=(17, 4.8), gridspec_kw={"width_ratios": [2.2, 1, 1]})
    domains = _domains(results[0])
    # Beyond ten series tab10 repeats colours: switch to tab20 and vary the markers too.
    colours = plt.get_cmap("tab10" if len(results) <= 10 else "tab20").colors
    markers = "osD^vP*Xh<>p"
    for i, r in enumerate(results):
        style = {"color": colours[i % len(colours)], "marker": markers[i % len(markers)]}
        label = method_label(r)
        axes[0].plot(range(len(domains)), [s.error for s in r.rounds()[0]], label=label, **style)
        axes[1].scatter(r.memory.get("adaptation", 0) / MIB, r.mean_error, s=60, **style)
        if len(results) <= 8:  # more labels than that pile up; the legend names them
            axes[1].annotate(
                label,
                (r.memory.get("adaptation", 0) / MIB, r.mean_error),
                textcoords="offset points",
                xytext=(5, 4),
            )
        axes[2].plot(
            range(1, len(r.rounds()) + 1),
            [np.mean([s.error for s in rd]) for rd in r.rounds()],
            label=label,
            **style,
        )
    axes[0].set_xticks(range(len(domains)), domains, rotation=60)
    axes[0].set_ylabel("top-1 error (%)")
    axes[0].set_title("error per domain (round 1)")
    axes[0].legend(fontsize=8)
    axes[1].set_xlabel("adaptation memory per step (MiB)")
    axes[1].set_ylabel("mean error (%)")
    axes[1].set_title("error against memory")
    axes[2].set_xticks(range(1, max(len(r.rounds()) for r in results) + 1))
    axes[2].set_xlabel("round")
    axes[2].set_ylabel("mean error (%)")
    axes[2].set_title("error over rounds")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def results_from_json(payload: dict) -> list[MethodResult]:
    """Rebuild results from what `edgeadapt bench --json` wrote (to re-plot or merge runs)."""
    out = []
    for r in payload["results"]:
        segments = [
            SegmentResult(
                s["corruption"], s["severity"], s["round"], s["errors"], s["images"], s["seconds"]
            )
            for s in r["segments"]
        ]
        # batch_size and stream are absent from files written before results recorded them.
        setting = {"batch_size": r.get("batch_size"), "stream": r.get("stream") or {},
                   "setup": r.get("setup")}  # fmt: skip
        out.append(
            MethodResult(r["method"], segments, r["memory"], r.get("setup_seconds", 0.0), **setting)
        )
    return out


def stream_label(stream: Mapping[str, Any]) -> str:
    """How a title names the image order: "i.i.d.", "correlated δ=0.1", or the caller's own."""
    if not stream:
        return "order not recorded"  # a file written before results said
    order = stream.get("order", "given")
    if order == "iid":
        return "i.i.d."
    if "delta" in stream:
        return f"{order} δ={stream['delta']:g}"
    return f"{order} order"


def setting_label(batch_size: int | None, stream: Mapping[str, Any]) -> str:
    """The part of a title that says what an adapter saw per step: "batch 1, correlated δ=0.1"."""
    batch = f"batch {batch_size}" if batch_size is not None else "batch not recorded"
    return f"{batch}, {stream_label(stream)}"
