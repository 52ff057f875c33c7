"""Fleet results as JSON, Markdown and a plot."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edgeadapt.fleet.runner import FleetResult, devices_table, rounds_table

__all__ = ["plot_fleet", "write_outputs"]


def plot_fleet(results: Sequence[FleetResult], path: str | Path, title: str = "") -> Path:
    """Two panels: the fleet's online error per round for each run, and the bytes a device
    sends and receives per round."""
    from edgeadapt._extras import require

    require("matplotlib", "the fleet plot")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4), gridspec_kw={"width_ratios": [2, 1]})
    for r in results:
        errors = r.round_errors()
        rounds = [k + 1 for k, e in enumerate(errors) if e is not None]
        ax.plot(rounds, [e for e in errors if e is not None], marker=".", label=f"{r.mode} "
                f"(mean {r.mean_error():.1f}%)")  # fmt: skip
    ax.set_xlabel("round")
    ax.set_ylabel("online error over all devices (%)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    traffic = [r for r in results if r.mode.startswith("fleet")]
    if traffic:
        b = traffic[0].bytes_per_device()
        ks = range(1, len(b) + 1)
        bx.bar([k - 0.2 for k in ks], [x["sent"] / 1024 for x in b], 0.4, label="to device")
        bx.bar([k + 0.2 for k in ks], [x["received"] / 1024 for x in b], 0.4, label="from device")
        bx.set_xlabel("round")
        bx.set_ylabel("KiB per device")
        bx.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=2)
    fig.suptitle(textwrap.fill(title, 120), fontsize=9)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_outputs(
    results: Sequence[FleetResult],
    title: str,
    *,
    json_path: str | Path | None = None,
    markdown_path: str | Path | None = None,
    plot_path: str | Path | None = None,
    extra: dict[str, Any] | None = None,
    notes: str = "",
) -> list[Path]:
    """Write whichever of the three outputs have a path; returns the paths written."""
    written = []
    table = rounds_table(list(results))
    per_device = devices_table(list(results))
    if per_device:
        table += f"\n\nPer device: online error (%) over the whole run.\n\n{per_device}"
    if json_path:
        payload = {**(extra or {}), "title": title, "results": [r.to_dict() for r in results]}
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_text(json.dumps(payload, indent=2) + "\n")
        written.append(Path(json_path))
    if markdown_path:
        Path(markdown_path).parent.mkdir(parents=True, exist_ok=True)
        body = f"{title}\n\n{notes}\n\n{table}\n" if notes else f"{title}\n\n{table}\n"
        Path(markdown_path).write_text(body)
        written.append(Path(markdown_path))
    if plot_path:
        written.append(plot_fleet(results, plot_path, title))
    return written
