"""`edgeadapt stream`: a thin shell over `edgeadapt.video.stream` and `summarize`.

Wire it in with `edgeadapt.video.command.register(subparsers)`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

__all__ = ["PARTIAL_INPUT_EXIT", "register", "run"]

# Exit status of a stream that ran to the end of a source that ended early or lost frames
# (without --allow-partial): not 0, whose summary would pass for the whole video, and not 2,
# the status of input refused before any frame was read.
PARTIAL_INPUT_EXIT = 3

_SIZE_FORMS = "N (N×N) or HxW, positive integers, e.g. 32 or 240x320"


def _index_list(text: str) -> list[int]:
    try:
        return [int(t) for t in text.split(",") if t.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"expected frame indices like 120,480; got {text!r}"
        ) from exc


def _frame_size(text: str) -> tuple[int, int]:
    """--size: N -> (N, N), HxW -> (H, W)."""
    parts = text.strip().lower().replace("×", "x").split("x")
    try:
        h, w = (int(parts[0]),) * 2 if len(parts) == 1 else (int(parts[0]), int(parts[1]))
    except (ValueError, IndexError):
        h = w = 0
    if len(parts) > 2 or h < 1 or w < 1:
        raise argparse.ArgumentTypeError(f"expected {_SIZE_FORMS}; got {text!r}")
    return h, w


def _scene_cut(text: str) -> str | float:
    """--scene-cut-threshold: "auto" or a changed-pixel fraction (its range: `_check_args`)."""
    if text.strip().lower() == "auto":
        return "auto"
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected auto or a changed-pixel fraction in [0, 1]; got {text!r}"
        ) from None


def register(subparsers) -> argparse.ArgumentParser:
    """Add the `stream` subcommand to an argparse subparsers object; returns its parser."""
    from edgeadapt.video.scene_cut import SceneCutConfig

    cuts = SceneCutConfig()  # its defaults, for --scene-cut-threshold's help
    p = subparsers.add_parser(
        "stream",
        help="stream a video, image sequence or camera through a model (delta inference, TTA)",
    )
    p.add_argument(
        "source", help="video file, image folder, glob of images, or a camera index (0, 1, ...)"
    )
    p.add_argument("--model", default="resnet20")
    p.add_argument(
        "--checkpoint",
        default=None,
        help="the backbone's trained weights (required unless --delta-weights holds them)",
    )
    p.add_argument("--num-classes", type=int, default=10)
    p.add_argument("--delta", action="store_true", help="predict with the delta runtime")
    p.add_argument(
        "--fast",
        action="store_true",
        help="with --delta: the fast exact delta runtime (CIFAR and torchvision-style ResNets: "
        "C++ kernels on the "
        "uint8 frames, several times the PyTorch delta runtime's speed; does not adapt)",
    )
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
    p.add_argument(
        "--source-data",
        default=None,
        help="--adapt ecotta/eata: labelled source images for the warm-up (EATA: its Fisher), "
        "of the frames' --size: an image folder or .tar.gz with train/<class>/*, or the "
        "CIFAR-10 python release; default: the shared CIFAR-10 JPEG archive where present",
    )
    p.add_argument(
        "--warmup-steps", type=int, default=500, help="--adapt ecotta: warm-up steps of 64 images"
    )
    p.add_argument(
        "--no-warmup",
        action="store_true",
        help="--adapt ecotta/eata without warm-up or Fisher (the summary says so)",
    )
    p.add_argument(
        "--size",
        type=_frame_size,
        default=(32, 32),
        metavar="N|HxW",
        help="frames are fitted to height×width: HxW (e.g. 240x320), or N for N×N (default 32)",
    )
    p.add_argument("--fit", choices=("crop", "squash"), default="crop")
    p.add_argument("--limit", type=int, default=None, help="at most this many frames")
    p.add_argument("--start", type=int, default=0, help="skip this many frames first")
    p.add_argument("--stride", type=int, default=1, help="keep every stride-th frame")
    p.add_argument(
        "--input-threshold",
        type=float,
        default=None,
        help="hold input pixels until they move by more than this many levels (0-255; "
        "default 0, with --fast the fast runtime's 1)",
    )
    p.add_argument(
        "--scene-cut-threshold",
        type=_scene_cut,
        default="auto",
        metavar="auto|FRACTION",
        help="what counts as a scene cut (re-anchor). auto (default): a frame whose median "
        f"pixel change is over {cuts.ratio:g}x the stream's recent median and over "
        f"{cuts.min_change:g} levels (edgeadapt.video.scene_cut); a number in [0, 1]: the delta "
        "runtime's fraction of changed pixels instead (codec noise alone changes most pixels "
        "of a still scene)",
    )
    p.add_argument("--cut-at", type=_index_list, default=[], help="known cuts: frame indices")
    p.add_argument(
        "--compare-dense", action="store_true", help="also run the dense model: agreement, speed"
    )
    p.add_argument(
        "--allow-partial",
        action="store_true",
        help="exit 0 even when a video ends before its declared frame count or loses frames "
        f"it cannot decode (else: the summary, a warning, exit {PARTIAL_INPUT_EXIT})",
    )
    p.add_argument("--json", default=None, help="write the summary and per-frame records here")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)
    return p


def _check_args(args: argparse.Namespace) -> None:
    """Every check that needs no model or frame, before any slow work."""
    from edgeadapt._cli_args import at_least, in_range, input_file, output_file
    from edgeadapt.errors import ConfigError, UnknownNameError
    from edgeadapt.models import get_model_entry

    try:
        get_model_entry(args.model)
    except UnknownNameError as exc:
        raise UnknownNameError(f"--model: {exc}") from exc
    if args.adapt is not None:
        from edgeadapt._suggest import unknown_name_message
        from edgeadapt.api import list_methods

        if args.adapt not in list_methods():
            raise UnknownNameError(
                f"--adapt: {unknown_name_message('method', args.adapt, list_methods())}"
            )
        # Single frames adapt too: the adapters' BNs normalise on the stream's statistics.
        at_least(args.adapt_batch, 1, "--adapt-batch", " (frames per adaptation step)")
    at_least(args.num_classes, 1, "--num-classes")
    # 2**bits - 1 quantiser levels; float32 activations resolve no more than 24 bits.
    in_range(args.bits, 1, 24, "--bits")
    at_least(args.start, 0, "--start")
    at_least(args.stride, 1, "--stride")
    if args.delta or args.adapt:  # both calibrate on the first frames, which takes two
        at_least(args.limit, 2, "--limit", " with --delta or --adapt (they calibrate on 2 frames)")
    at_least(args.limit, 1, "--limit")
    if args.input_threshold is not None:
        in_range(args.input_threshold, 0.0, 255.0, "--input-threshold", high_open=True)
    if args.fast and not args.delta:
        raise ConfigError("--fast is the fast delta runtime: add --delta")
    if args.fast and args.adapt:
        raise ConfigError(
            "--fast runs a fixed integer model and cannot adapt: drop --adapt, or --fast for "
            "the PyTorch delta runtime, which adapts"
        )
    if args.fast and args.input_threshold is not None and args.input_threshold % 1:
        raise ConfigError(
            f"--input-threshold with --fast is whole levels (0-254), got {args.input_threshold}"
        )
    if args.scene_cut_threshold != "auto":
        in_range(args.scene_cut_threshold, 0.0, 1.0, "--scene-cut-threshold")
    negative = [i for i in args.cut_at if i < 0]
    if negative:
        raise ConfigError(f"--cut-at takes frame indices >= 0, got {negative}")
    if args.delta_weights and not args.delta:
        raise ConfigError("--delta-weights needs --delta")
    input_file(args.delta_weights, "--delta-weights")
    output_file(args.json, "--json")
    if args.checkpoint is None and args.delta_weights is None:
        # Untrained weights predict at chance, their deltas and adaptation mean nothing, and
        # the summary would look like a result all the same.
        raise ConfigError(
            f"stream needs the trained weights of --model {args.model}: pass --checkpoint PATH "
            "(e.g. ../shared/models/resnet20_cifar10jpeg.pt for resnet20), or --delta "
            "--delta-weights PATH (a deltaified model's whole state)"
        )
    input_file(args.checkpoint, "--checkpoint")
    _check_setup_args(args)


def _check_setup_args(args: argparse.Namespace) -> None:
    """--source-data, --warmup-steps, --no-warmup: only for an --adapt method with a setup."""
    from edgeadapt._cli_args import at_least, input_file
    from edgeadapt.errors import ConfigError
    from edgeadapt.setup_data import setup_kinds

    given = [f for f, on in (("--source-data", args.source_data), ("--no-warmup", args.no_warmup),
                             ("--warmup-steps", args.warmup_steps != 500)) if on]  # fmt: skip
    if given and (args.adapt is None or not setup_kinds(args.adapt)):
        now = f"--adapt {args.adapt}" if args.adapt else "no --adapt"
        raise ConfigError(f"{', '.join(given)}: only for --adapt ecotta or eata (methods with "
                          f"a setup on source data); got {now}")  # fmt: skip
    if args.source_data and args.no_warmup:
        raise ConfigError("--source-data and --no-warmup exclude each other; pass one")
    input_file(args.source_data, "--source-data", folder_ok=True)
    at_least(args.warmup_steps, 1, "--warmup-steps", " (--no-warmup skips the warm-up)")


def _setup_source(args: argparse.Namespace):
    """The source images --adapt's setup reads, or None when none runs (before any frame)."""
    from edgeadapt.setup_data import find_source_data, methods_needing_source

    if args.adapt is None or not methods_needing_source([args.adapt], no_warmup=args.no_warmup):
        return None
    return find_source_data(args.source_data, needed_by=[args.adapt], option="--source-data",
                            skip="--no-warmup")  # fmt: skip


def run(args: argparse.Namespace) -> int:
    """Open the source, build the model, stream, print the summary; 0 on success."""
    import torch
    from tqdm.auto import tqdm

    from edgeadapt.models import create_model
    from edgeadapt.video.sources import open_frames
    from edgeadapt.video.streaming import stream
    from edgeadapt.video.summary import per_frame_table, summarize

    _check_args(args)
    setup_source = _setup_source(args)
    source = open_frames(
        args.source, size=args.size, fit=args.fit, limit=args.limit, stride=args.stride,
        start=args.start, allow_partial=True,  # judged below, after the summary is written
    )  # fmt: skip
    model = create_model(args.model, num_classes=args.num_classes, checkpoint=args.checkpoint)
    delta_state = None
    if args.delta_weights:
        delta_state = torch.load(args.delta_weights, map_location="cpu", weights_only=True)
    results, setups = [], []
    frames = stream(
        source, model, delta=args.delta, adapt=args.adapt, batch_size=args.adapt_batch,
        compare_dense=args.compare_dense, input_threshold=args.input_threshold,
        scene_cut=_scene_cut_rule(args.scene_cut_threshold), cut_at=args.cut_at,
        delta_state=delta_state, bits=args.bits, fast=args.fast,
        **_setup_options(args, setup_source, setups),
    )  # fmt: skip
    total = source.expected_frames()  # None: a camera, or a video that stores no count
    desc = "stream" if total is not None else "stream (frame count unknown)"
    with tqdm(frames, total=total, desc=desc, unit="frame", disable=args.quiet) as bar:
        for r in bar:
            results.append(r)
            bar.set_postfix(ms=f"{r.latency_s * 1e3:.1f}", refresh=False)
    settings = {k: v for k, v in vars(args).items() if k != "func"}
    summary = summarize(results, **settings)
    if setups:  # what the adapter started from, beside what it did
        from edgeadapt.setup_data import describe_setup

        summary["adapter_setup"] = {"setup": setups[0], "summary": describe_setup(setups[0])}
    report = source.input_report()  # None: a source that declares no length (images, arrays)
    if report is not None:
        summary["input"] = report.to_dict()
    partial = report is not None and report.partial
    if partial:
        summary["warnings"] = [report.describe()]
    print(_format(summary))
    if args.json:
        payload = {**summary, "per_frame": per_frame_table(results)}
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(payload, indent=2) + "\n")
        print(f"wrote {args.json}")
    if not partial:
        return 0
    if args.allow_partial:
        print(f"edgeadapt stream: warning: {report.describe()} (--allow-partial)", file=sys.stderr)
        return 0
    print(
        f"edgeadapt stream: partial input: {report.describe()}; the summary covers only the "
        f"frames read. Pass --allow-partial to accept that (exit 0)",
        file=sys.stderr,
    )
    return PARTIAL_INPUT_EXIT


def _scene_cut_rule(value: str | float):
    """--scene-cut-threshold as `stream`'s scene_cut: the detector's defaults, or a fraction."""
    from edgeadapt.video.scene_cut import SceneCutConfig

    return SceneCutConfig() if value == "auto" else float(value)


def _setup_options(args: argparse.Namespace, setup_source, setups: list) -> dict:
    if args.adapt is None:
        return {}
    return {"source_data": setup_source, "warmup_steps": args.warmup_steps,
            "no_warmup": setup_source is None, "on_setup": setups.append}  # fmt: skip


def _format(summary: dict) -> str:
    from edgeadapt.video.summary import times

    lat, macs = summary["latency_ms"], summary["macs"]
    lines = [
        f"frames {summary['frames']}, latency mean {lat['mean']:.2f} ms "
        f"(p50 {lat['p50']:.2f}, p99 {lat['p99']:.2f})",
        f"MACs/frame dense {macs['dense_per_frame']:,.0f}, performed "
        f"{macs['performed_per_frame']:,.0f} ({macs['vs_dense']}, "
        f"{100 * macs['skipped_fraction']:.1f}% skipped)",
        f"anchors {summary['anchors']}, scene cuts {summary['scene_cuts']} detected, "
        f"{summary['scene_cuts_signalled']} signalled",
    ]
    if "element_reduction" in macs:
        element = times(macs["element_reduction"], "fewer", "more")
        lines.append(f"element-sparse MACs: {element} than dense")
    if "agreement" in summary:
        lines.append(
            f"top-1 agreement with dense {100 * summary['agreement']:.1f}%, wall-clock "
            f"{summary['wall_clock_vs_dense']} than dense"
        )
    if "adaptation" in summary:
        a = summary["adaptation"]
        lines.append(
            f"adaptation steps {a['steps']}, mean {a['mean_ms']:.1f} ms; with adaptation "
            f"{a['macs_per_frame_incl_adaptation']:,.0f} MACs/frame "
            f"({a['macs_vs_dense_incl_adaptation']} than dense prediction)"
        )
        if "wall_clock_vs_dense_incl_adaptation" in a:
            lines.append(
                f"per frame with adaptation {a['ms_per_frame_incl_adaptation']:.2f} ms "
                f"({a['wall_clock_vs_dense_incl_adaptation']} than dense with the same "
                "adaptation time)"
            )
    if "adapter_setup" in summary:
        lines.append(f"adapter setup: {summary['adapter_setup']['summary']}")
    return "\n".join(lines)
