"""`edgeadapt stream`: a thin shell over `edgeadapt.video.stream` and `summarize`.

Wire it in with `edgeadapt.video.command.register(subparsers)`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

__all__ = ["register", "run"]


def _index_list(text: str) -> list[int]:
    try:
        return [int(t) for t in text.split(",") if t.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"expected frame indices like 120,480; got {text!r}"
        ) from exc


def register(subparsers) -> argparse.ArgumentParser:
    """Add the `stream` subcommand to an argparse subparsers object; returns its parser."""
    p = subparsers.add_parser(
        "stream",
        help="stream a video, image sequence or camera through a model (delta inference, TTA)",
    )
    p.add_argument(
        "source", help="video file, image folder, glob of images, or a camera index (0, 1, ...)"
    )
    p.add_argument("--model", default="resnet20")
    p.add_argument("--checkpoint", default=None, help="backbone weights")
    p.add_argument("--num-classes", type=int, default=10)
    p.add_argument("--delta", action="store_true", help="predict with the delta runtime")
    p.add_argument(
        "--delta-weights",
        default=None,
        help="a deltaified model's weights (edgeadapt.delta.distill.save_delta_weights)",
    )
    p.add_argument("--bits", type=int, default=8, help="quantiser calibration, when deltaifying")
    p.add_argument(
        "--adapt", default=None, help="test-time adaptation on the stream: ecotta, tent, norm, ..."
    )
    p.add_argument("--adapt-batch", type=int, default=8, help="frames per adaptation step")
    p.add_argument("--size", type=int, default=32, help="frames are fitted to size×size")
    p.add_argument("--fit", choices=("crop", "squash"), default="crop")
    p.add_argument("--limit", type=int, default=None, help="at most this many frames")
    p.add_argument("--start", type=int, default=0, help="skip this many frames first")
    p.add_argument("--stride", type=int, default=1, help="keep every stride-th frame")
    p.add_argument(
        "--input-threshold",
        type=float,
        default=0.0,
        help="hold input pixels until they move by more than this many levels (0-255)",
    )
    p.add_argument(
        "--scene-cut-threshold",
        type=float,
        default=0.5,
        help="changed-pixel fraction that counts as a scene cut (re-anchor)",
    )
    p.add_argument("--cut-at", type=_index_list, default=[], help="known cuts: frame indices")
    p.add_argument(
        "--compare-dense", action="store_true", help="also run the dense model: agreement, speed"
    )
    p.add_argument("--json", default=None, help="write the summary and per-frame records here")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Open the source, build the model, stream, print the summary; 0 on success."""
    import torch
    from tqdm.auto import tqdm

    from edgeadapt.delta import DeltaRuntimeConfig
    from edgeadapt.errors import ConfigError
    from edgeadapt.models import create_model
    from edgeadapt.video.sources import open_frames
    from edgeadapt.video.streaming import stream
    from edgeadapt.video.summary import per_frame_table, summarize

    if args.delta_weights and not args.delta:
        raise ConfigError("--delta-weights needs --delta")
    source = open_frames(
        args.source, size=args.size, fit=args.fit, limit=args.limit, stride=args.stride,
        start=args.start,
    )  # fmt: skip
    model = create_model(args.model, num_classes=args.num_classes, checkpoint=args.checkpoint)
    delta_state = None
    if args.delta_weights:
        delta_state = torch.load(args.delta_weights, map_location="cpu", weights_only=True)
    results = []
    frames = stream(
        source, model, delta=args.delta, adapt=args.adapt, batch_size=args.adapt_batch,
        compare_dense=args.compare_dense, input_threshold=args.input_threshold,
        runtime_config=DeltaRuntimeConfig(scene_cut_threshold=args.scene_cut_threshold),
        cut_at=args.cut_at, delta_state=delta_state, bits=args.bits,
    )  # fmt: skip
    with tqdm(frames, total=args.limit, desc="stream", unit="frame", disable=args.quiet) as bar:
        for r in bar:
            results.append(r)
            bar.set_postfix(ms=f"{r.latency_s * 1e3:.1f}", refresh=False)
    settings = {k: v for k, v in vars(args).items() if k != "func"}
    summary = summarize(results, **settings)
    print(_format(summary))
    if args.json:
        payload = {**summary, "per_frame": per_frame_table(results)}
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(payload, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


def _format(summary: dict) -> str:
    lat, macs = summary["latency_ms"], summary["macs"]
    lines = [
        f"frames {summary['frames']}, latency mean {lat['mean']:.2f} ms "
        f"(p50 {lat['p50']:.2f}, p99 {lat['p99']:.2f})",
        f"MACs/frame dense {macs['dense_per_frame']:,.0f}, performed "
        f"{macs['performed_per_frame']:,.0f} ({macs['reduction']:.2f}x fewer, "
        f"{100 * macs['skipped_fraction']:.1f}% skipped)",
        f"anchors {summary['anchors']}, scene cuts {summary['scene_cuts']} detected, "
        f"{summary['scene_cuts_signalled']} signalled",
    ]
    if "element_reduction" in macs:
        lines.append(f"element-sparse MACs: {macs['element_reduction']:.2f}x fewer than dense")
    if "agreement" in summary:
        lines.append(
            f"top-1 agreement with dense {100 * summary['agreement']:.1f}%, wall-clock "
            f"dense/this {summary['wall_clock_ratio']:.2f}"
        )
    if "adaptation" in summary:
        a = summary["adaptation"]
        lines.append(f"adaptation steps {a['steps']}, mean {a['mean_ms']:.1f} ms")
    return "\n".join(lines)
