"""`edgeadapt sample-data`: a thin shell over `edgeadapt.sample_data.write_sample_data`.

Wire it in with `edgeadapt.sample_data_command.register(subparsers)`.
"""

from __future__ import annotations

import argparse

__all__ = ["register"]


def register(subparsers) -> argparse.ArgumentParser:
    """Add the `sample-data` subcommand to an argparse subparsers object; returns its parser."""
    p = subparsers.add_parser(
        "sample-data",
        help="write offline sample data (scikit-learn's digits): an image folder, a clip, frames",
        description="Write scikit-learn's digits (no download) as the files the other commands "
        "read: OUT/train/<digit>/*.png and OUT/test/<digit>/*.png (32×32, for train-source "
        "--data and export --source-data/--check-data), and a stream of held-out digits, each "
        "filmed for a few frames and corrupted, as OUT/clip.mp4 (for `edgeadapt stream`) and "
        "OUT/frames.pt (float (N, 3, 32, 32), normalised, for the Python API and `edgeadapt "
        "device stream`).",
    )
    p.add_argument("--out", required=True, help="a new or empty folder to write into")
    p.add_argument(
        "--frames", type=int, default=32, help="frames in the stream (clip.mp4, frames.pt)"
    )
    p.add_argument("--per-digit", type=int, default=8, help="consecutive frames of each digit")
    p.add_argument(
        "--corruption",
        default="gaussian_noise",
        help="the CIFAR-10-C corruption applied to the stream, or 'none'",
    )
    p.add_argument("--severity", type=int, default=3, help="of --corruption, 1 to 5")
    p.add_argument(
        "--no-clip", action="store_true", help="skip clip.mp4 (which needs the 'video' extra)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_run)
    return p


def _run(args: argparse.Namespace) -> int:
    from edgeadapt.sample_data import write_sample_data

    data = write_sample_data(
        args.out, frames=args.frames, per_digit=args.per_digit, corruption=args.corruption,
        severity=args.severity, clip=not args.no_clip, seed=args.seed,
    )  # fmt: skip
    print(f"wrote {data.train} ({data.n_train} images) and {data.test} ({data.n_test}), "
          "one folder per digit, 32×32")  # fmt: skip
    stream = f"{len(data.labels)} frames of {args.corruption} digits"
    print(f"wrote {data.frames} ({stream})" + (f" and {data.clip}" if data.clip else ""))
    print(f"next: edgeadapt train-source --data {data.root} --out model.pt")
    return 0
