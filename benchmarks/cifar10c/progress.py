"""Where a resumable `edgeadapt bench --state-dir` run stands: the rounds it has finished,
read from its progress file, for a run that spans sessions.

    python benchmarks/cifar10c/progress.py /tmp/rec_long/state/NAME/ecotta.pt --label NAME \
        --json benchmarks/cifar10c/record_long-term_partial.json

Prints the finished segments and a per-round table (the last round may be partial, and is
labelled so); with --json writes them in the merged-record format plus the counts, so a
partial result is committed as partial. The file is read with `weights_only=True`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from edgeadapt.bench.progress_file import read_progress_file
from edgeadapt.bench.runner import MethodResult, SegmentResult
from edgeadapt.errors import CheckpointMismatchError


def summarise(path: Path, label: str) -> dict:
    saved = read_progress_file(path)
    segments = saved["segments"]
    planned = saved["stream"]["segments"]
    result = MethodResult(label, [SegmentResult(**s) for s in segments])
    # Planned segments are [corruption, severity, round, reset_before] (StreamProgress.stream).
    domains_per_round = sum(1 for p in planned if p[2] == planned[0][2])
    rounds = [
        {"round": r[0].round, "domains": len(r), "complete": len(r) == domains_per_round,
         "mean_error": float(np.mean([s.error for s in r]))}
        for r in result.rounds()
    ]  # fmt: skip
    return {
        "method": label,
        "segments_done": len(segments),
        "segments_planned": len(planned),
        "rounds": rounds,
        "seconds": result.seconds,
        "images_per_second": result.images_per_second,
        "segments": segments,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("progress_file", type=Path)
    ap.add_argument("--label", default=None, help="the row's name (default: the file's folder)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    try:
        summary = summarise(args.progress_file, args.label or args.progress_file.parent.name)
    except CheckpointMismatchError as err:
        raise SystemExit(str(err)) from err
    print(f"{summary['method']}: {summary['segments_done']} of {summary['segments_planned']} "
          f"segments, {summary['images_per_second']:.0f} img/s")  # fmt: skip
    print("| round | domains | mean error |\n|---:|---:|---:|")
    for r in summary["rounds"]:
        partial = "" if r["complete"] else " (partial)"
        print(f"| {r['round'] + 1} | {r['domains']}{partial} | {r['mean_error']:.2f} |")
    done = [r["mean_error"] for r in summary["rounds"] if r["complete"]]
    if len(done) > 1:
        print(f"last complete − first: {done[-1] - done[0]:+.2f}")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
