"""Per layer of the fast delta runtime: time, MACs performed and the rate it runs them at.

Where fast_run.py says how long each layer takes, this says why: a layer's MACs performed
per second of its time (conv and epilogue together), next to dense float32's rate for the
whole network. A layer far below the others is bound by something other than arithmetic
(weights or accumulators moving, per-pixel overhead); that is where kernel work pays.
Same model, calibration and frames as fast_run.py (the frames after the clip's first
quarter, the first of them a dense anchor and not counted).

    OMP_NUM_THREADS=1 python benchmarks/delta/layer_rates.py            # ResNet-20, both clips
    OMP_NUM_THREADS=1 python benchmarks/delta/layer_rates.py --model tv_resnet18 \\
        --checkpoint tv_resnet18_cifar10jpeg.pt --out benchmarks/delta/layer_rates_tv_resnet18
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from edgeadapt._paths import shared_dir
from edgeadapt.delta import FastDeltaConfig, deltaify, to_fast_delta_runtime
from edgeadapt.models import create_model
from edgeadapt.video.preprocess import to_model_input
from edgeadapt.video.sources import open_frames

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from fast_run import CALIBRATION_FRAMES, CHECKPOINT, cpu_model  # noqa: E402


def rates(path: Path, dense, args) -> dict:
    frames = np.stack(list(open_frames(path, size=args.size, fit="squash")))
    start = len(frames) // 4
    calib = to_model_input(frames[:start][:: max(1, start // CALIBRATION_FRAMES)])
    model = deltaify(dense, calib[:CALIBRATION_FRAMES], bits=args.bits, quantile=1.0).eval()
    runtime = to_fast_delta_runtime(model, FastDeltaConfig(act_max=args.act_max))
    ns, macs, dense_s = [], [], []
    with torch.no_grad():
        for i, f in enumerate(frames[start : start + args.frames]):
            runtime(torch.from_numpy(np.ascontiguousarray(f)))
            x = to_model_input(f)
            w0 = time.perf_counter()
            dense(x)
            dense_s.append(time.perf_counter() - w0)
            if i:  # the first frame is the dense anchor
                ns.append(runtime.last_layer_ns.copy())
                macs.append(runtime.last_layer_macs.copy())
    ns, macs = np.array(ns), np.array(macs)
    dense_macs = runtime.macs().dense / max(1, len(frames[start : start + args.frames]))
    layers = []
    for j, (name, g) in enumerate(zip(runtime.layer_names, runtime._geometry)):
        seconds = ns[:, j].sum() / 1e9
        layers.append({
            "layer": name,
            "in_out_channels": [g.c, g.o],
            "out_hw": [g.ho, g.wo],
            "median_ms": float(np.median(ns[:, j]) / 1e6),
            "median_mmacs_performed": float(np.median(macs[:, j]) / 1e6),
            "gmacs_per_s": float(macs[:, j].sum() / seconds / 1e9) if seconds else 0.0,
        })  # fmt: skip
    return {
        "clip": path.name,
        "frames": len(ns),
        "dense_gmacs_per_s": float(dense_macs / float(np.median(dense_s)) / 1e9),
        "layers": layers,
    }


def markdown(report: dict) -> str:
    lines = [
        f"# Fast delta runtime: per-layer rates ({report['model']}, {report['size']})",
        "",
        f"One thread, {report['cpu']}. Rate = MACs performed / layer time (conv + epilogue), "
        "summed over the frames; dense float32 (NCHW) for comparison.",
    ]
    for clip in report["clips"]:
        lines += [
            "",
            f"{clip['clip']}, {clip['frames']} frames; dense float32 runs "
            f"{clip['dense_gmacs_per_s']:.0f} GMAC/s:",
            "",
            "| layer | C→O | out H×W | median ms | median MMACs performed | GMAC/s |",
            "|---|---|---|---:|---:|---:|",
        ]
        for p in clip["layers"]:
            c, o = p["in_out_channels"]
            lines.append(
                f"| {p['layer']} | {c}→{o} | {p['out_hw'][0]}×{p['out_hw'][1]} | "
                f"{p['median_ms']:.2f} | {p['median_mmacs_performed']:.1f} | "
                f"{p['gmacs_per_s']:.1f} |"
            )
    return "\n".join(lines) + "\n"


def plot(report: dict, path: Path) -> None:
    """Per clip, each layer's GMAC/s as a bar and dense float32's rate as a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    clips = report["clips"]
    fig, axes = plt.subplots(1, len(clips), figsize=(6 * len(clips), 3.8), squeeze=False)
    for ax, clip in zip(axes[0], clips):
        layers = clip["layers"]
        x = np.arange(len(layers))
        ax.bar(x, [p["gmacs_per_s"] for p in layers], color="tab:green", label="delta layer")
        ax.axhline(clip["dense_gmacs_per_s"], color="k", ls="--", label="dense float32")
        ax.set_xticks(x, [p["layer"] for p in layers], rotation=60, ha="right", fontsize=6)
        ax.set_ylabel("GMAC/s (MACs performed / layer time)")
        ax.set_title(f"{clip['clip']}: {report['model']}", fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", nargs="*", help="video files (default: the shared clips)")
    parser.add_argument("--size", default="240x320", help="HxW the whole frame is resized to")
    parser.add_argument("--frames", type=int, default=200, help="frames per clip")
    parser.add_argument("--model", default="resnet20")
    parser.add_argument("--checkpoint", default=None, help="default for resnet20: ../shared's")
    parser.add_argument("--bits", type=int, default=8)
    parser.add_argument("--act-max", type=int, default=255)
    parser.add_argument("--out", default=str(HERE / "layer_rates"))
    args = parser.parse_args(argv)
    args.size = tuple(int(v) for v in args.size.lower().split("x"))
    if args.checkpoint is None and args.model != "resnet20":
        parser.error(f"--model {args.model} needs --checkpoint")
    checkpoint = Path(args.checkpoint) if args.checkpoint else shared_dir() / CHECKPOINT
    clips = [Path(c) for c in args.clips] if args.clips else None
    clips = clips or sorted((shared_dir() / "data/videos").glob("*.mp4"))
    if not clips or not checkpoint.is_file():
        print(f"no footage under {shared_dir()} or no checkpoint {checkpoint}", file=sys.stderr)
        return 1
    torch.set_num_threads(1)
    dense = create_model(args.model, num_classes=10, checkpoint=checkpoint).eval()
    report = {
        "model": f"{args.model}, {args.bits}-bit, act_max {args.act_max}",
        "size": f"{args.size[0]}x{args.size[1]}",
        "cpu": cpu_model(),
        "torch": torch.__version__,
        "clips": [rates(c, dense, args) for c in clips],
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "layer_rates.json").write_text(json.dumps(report, indent=2) + "\n")
    text = markdown(report)
    (out / "layer_rates.md").write_text(text)
    plot(report, out / "layer_rates.png")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
