"""Fast exact delta runtime vs dense float32 on static-camera footage: wall-clock, MACs, exactness.

For each clip (default: the two in ../shared/data/videos), whole frames are resized to
--size (default 240x320, box filter, aspect squashed 16:9 -> 4:3, nothing cropped) and fed to
the CIFAR-10 (JPEG) ResNet-20 checkpoint run fully convolutionally (global mean pooling).
The model is deltaified (8-bit per-channel steps, `deltaify`) with steps calibrated on 16
frames of the clip's first quarter; everything reported is measured on the frames after it.

In one process, one thread, frame by frame and interleaved (so all see the same load on a
shared machine): the dense float32 model as PyTorch runs it by default (NCHW), the same in
channels-last, and `FastDeltaRuntime` (uint8 frames in, C++ kernels). Reported per clip:
median wall-clock (and thread CPU time) per frame and the speed-up, top-1 agreement of the
delta runtime with dense float32, MACs performed vs dense, and per-layer median time with
the fraction of output pixels that changed. Then a separate exactness pass: a fresh stream over
--exact-frames frames per clip, every frame's logits compared bit for bit with the runtime's
dense PyTorch reference (`fast_reference_forward`: the same integer model, evaluated densely),
and every layer's map every 25 frames.

    OMP_NUM_THREADS=1 python benchmarks/delta/fast_run.py                   # ~12 min
    OMP_NUM_THREADS=1 python benchmarks/delta/fast_run.py --frames 150 --exact-frames 0  # quick

--model picks another backbone the runtime lowers, with its 10-class --checkpoint: e.g.
torchvision's ResNet-18 trained by `edgeadapt train-source --model tv_resnet18` on CIFAR-10
(benchmarks/delta/README_fast.md says how). --bits 6 --act-max 63: coarser quantiser steps.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from edgeadapt._paths import shared_dir
from edgeadapt.delta import (
    FastDeltaConfig,
    deltaify,
    fast_native,
    fast_reference_forward,
    to_fast_delta_runtime,
)
from edgeadapt.models import create_model
from edgeadapt.video.preprocess import to_model_input
from edgeadapt.video.sources import open_frames

HERE = Path(__file__).resolve().parent
CHECKPOINT = "models/resnet20_cifar10jpeg.pt"
CALIBRATION_FRAMES = 16


def cpu_model() -> str:
    """The CPU's model name and AVX-512 extensions (Linux): machines of one name differ, and
    the dense side's speed depends on them (Zen 5 runs AVX-512 at full width, Zen 4 in two
    halves; VP2INTERSECT is one way to tell them apart)."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine()
    name = next((ln.split(":", 1)[1].strip() for ln in info.splitlines()
                 if ln.startswith("model name")), "?")  # fmt: skip
    flags = next((ln.split(":", 1)[1].split() for ln in info.splitlines()
                  if ln.startswith("flags")), [])  # fmt: skip
    avx512 = sorted(f for f in flags if f.startswith("avx512"))
    return f"{name} ({' '.join(avx512) or 'no AVX-512'})"


def median_ms(xs: list[float]) -> float:
    return 1e3 * statistics.median(xs)


def timed(fn, *args):
    """(result, wall seconds, thread CPU seconds) of fn(*args)."""
    w0, c0 = time.perf_counter(), time.thread_time()
    out = fn(*args)
    return out, time.perf_counter() - w0, time.thread_time() - c0


def run_clip(
    path: Path, dense, size, frames_wanted: int, exact: int, act_max: int, threshold: int,
    quantile: float = 1.0, bits: int = 8,
) -> dict:  # fmt: skip
    frames = np.stack(list(open_frames(path, size=size, fit="squash")))
    start = len(frames) // 4
    calib = to_model_input(frames[:start][:: max(1, start // CALIBRATION_FRAMES)])
    # Steps on each channel's maximum (quantile 1.0): the runtime clamps its uint8 maps at
    # act_max, and clamping the top 0.1% biased the bottle clip's logits toward one class.
    model = deltaify(dense, calib[:CALIBRATION_FRAMES], bits=bits, quantile=quantile).eval()
    config = FastDeltaConfig(act_max=act_max, input_threshold=threshold)
    runtime = to_fast_delta_runtime(model, config)
    dense_cl = copy.deepcopy(dense).to(memory_format=torch.channels_last)
    evals = frames[start : start + frames_wanted]
    print(f"{path.name}: {len(frames)} frames; timing frames {start}-{start + len(evals) - 1}")

    rows: dict[str, list[float]] = {k: [] for k in ("dense", "dense_cl", "fast")}
    cpu: dict[str, list[float]] = {k: [] for k in rows}
    layer_ns, changed, agree, flips, prev_top = [], [], [], 0, -1
    rel_err, margin = [], []  # how close the logits are, beyond top-1 (a constant class agrees)
    with torch.no_grad():
        for i, f in enumerate(evals):
            x = to_model_input(f)
            x_cl = x.contiguous(memory_format=torch.channels_last)
            frame = torch.from_numpy(np.ascontiguousarray(f))
            y_dense, w_d, c_d = timed(dense, x)
            _, w_cl, c_cl = timed(dense_cl, x_cl)
            y_fast, w_f, c_f = timed(runtime, frame)
            agree.append(int(y_dense.argmax()) == int(y_fast.argmax()))
            rel_err.append(float((y_fast - y_dense).norm() / y_dense.norm()))
            top2 = y_dense.topk(2).values.flatten()
            margin.append(float(top2[0] - top2[1]))
            if i and int(y_dense.argmax()) != prev_top:
                flips += 1
            prev_top = int(y_dense.argmax())
            if i == 0:
                anchor_macs = runtime.last_macs()
                continue  # the stream's first frame is a dense pass: not timed
            for key, w, c in (("dense", w_d, c_d), ("dense_cl", w_cl, c_cl), ("fast", w_f, c_f)):
                rows[key].append(w)
                cpu[key].append(c)
            layer_ns.append(runtime.last_layer_ns.copy())
            changed.append([g.count / g.npix for g in runtime._geometry])
    macs = runtime.macs()
    layer_ms = np.median(np.array(layer_ns), axis=0) / 1e6
    layer_changed = np.mean(np.array(changed), axis=0)
    geometry = runtime._geometry
    per_layer = [
        {
            "layer": name,
            "in_out_channels": [g.c, g.o],
            "out_hw": [g.ho, g.wo],
            "dense_macs": g.dense_macs + (g.branch.dense_macs if g.branch else 0),
            "median_ms": float(ms),
            "changed_out_pixels": float(ch),
        }
        for name, g, ms, ch in zip(runtime.layer_names, geometry, layer_ms, layer_changed)
    ]
    result = {
        "clip": path.name,
        "frames_total": len(frames),
        "calibration": f"{CALIBRATION_FRAMES} frames of 0-{start - 1}",
        "timed_frames": len(rows["fast"]),
        "eval_frames": f"{start}-{start + len(evals) - 1} (first one: dense anchor, untimed)",
        "dense_ms": median_ms(rows["dense"]),
        "dense_channels_last_ms": median_ms(rows["dense_cl"]),
        "fast_ms": median_ms(rows["fast"]),
        "speedup": statistics.median(rows["dense"]) / statistics.median(rows["fast"]),
        "speedup_vs_channels_last": statistics.median(rows["dense_cl"])
        / statistics.median(rows["fast"]),
        "dense_cpu_ms": median_ms(cpu["dense"]),
        "dense_channels_last_cpu_ms": median_ms(cpu["dense_cl"]),
        "fast_cpu_ms": median_ms(cpu["fast"]),
        "speedup_cpu": statistics.median(cpu["dense"]) / statistics.median(cpu["fast"]),
        "agreement_top1": float(np.mean(agree)),
        "dense_top1_flicker": flips / max(1, len(evals) - 1),
        # ||logits_delta - logits_dense|| / ||logits_dense|| per frame, and the dense top-1
        # margin: on a clip whose dense class never changes, top-1 agreement alone says little.
        "logit_rel_error_median": float(np.median(rel_err)),
        "logit_rel_error_p99": float(np.percentile(rel_err, 99)),
        "dense_margin_min": float(min(margin)),
        "dense_margin_median": float(np.median(margin)),
        "mac_reduction": macs.ratio,  # anchor frame included
        "mac_reduction_after_anchor": (macs.dense - anchor_macs.dense)
        / max(1, macs.performed - anchor_macs.performed),
        "dense_macs_per_frame": macs.dense // len(evals),
        "scene_cuts": runtime.scene_cuts,
        "per_layer": per_layer,
    }
    if exact:
        result["exactness"] = exactness(model, config, frames[start : start + exact])
    return result


def exactness(model, config: FastDeltaConfig, frames: np.ndarray) -> dict:
    """A fresh stream; every frame's logits (and every 25th frame's maps) vs the reference."""
    runtime = to_fast_delta_runtime(model, config)
    logit_mismatch, map_mismatch, checked_maps, max_diff = 0, 0, 0, 0.0
    for i, f in enumerate(frames):
        frame = torch.from_numpy(np.ascontiguousarray(f))
        got = runtime(frame)
        # The reference on the frame the runtime has seen: with an input threshold, pixels
        # that moved less than it hold their last sent value.
        want, maps = fast_reference_forward(runtime.plan, runtime.seen_frame())
        if not torch.equal(got, want):
            logit_mismatch += 1
            max_diff = max(max_diff, float((got - want).abs().max()))
        if i % 25 == 0:
            checked_maps += 1
            map_mismatch += sum(
                not torch.equal(a, b) for a, b in zip(runtime.layer_maps(), maps, strict=True)
            )
    return {
        "frames": len(frames),
        "logit_mismatches": logit_mismatch,
        "max_abs_logit_diff": max_diff,
        "frames_with_all_maps_checked": checked_maps,
        "map_mismatches": map_mismatch,
        "scene_cuts": runtime.scene_cuts,
    }


def markdown(report: dict) -> str:
    h, w = report["size"]
    lines = [
        f"# Fast exact delta runtime vs dense float32 ({report.get('model_name', 'resnet20')}, "
        f"whole frames at {h}×{w})",
        "",
        f"Input threshold: {report.get('input_threshold', 0)} levels (a pixel is sent when a "
        "channel moved by more; exactness is checked against the dense reference on the frame "
        "the runtime has seen). Quantiser steps calibrated on each channel's "
        + (
            f"{100 * q:g}th percentile"
            if (q := report.get("calibration_quantile", 0.999)) < 1
            else "maximum"
        )
        + " of 16 frames of the clip's first quarter.",
        "",
        f"One thread ({report.get('cpu', report['machine'])}, torch {report['torch']}; dense on "
        f"{report.get('dense_isa', '?')} kernels, oneDNN ISA cap "
        f"{report.get('onednn_max_isa', 'default')}; delta kernels built with "
        f"{report.get('delta_kernel_flags', '-march=native')}), dense and delta "
        "interleaved frame by frame; medians over the timed frames. Speed-up = dense ms / "
        "delta ms (wall-clock; CPU: thread time). MACs ↓ = dense MACs / MACs performed "
        "(anchor frame included). Agreement: top-1 of the delta runtime vs dense float32.",
        "",
        "| clip | timed frames | dense fp32 ms (NCHW / channels-last) | fast delta ms | "
        "speed-up wall (vs NCHW / vs channels-last) | speed-up CPU time | top-1 agreement | "
        "MACs ↓ | exact frames (mismatches) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in report["clips"]:
        ex = r.get("exactness")
        exact = (
            f"{ex['frames']} ({ex['logit_mismatches']} logits, {ex['map_mismatches']} maps)"
            if ex
            else "–"
        )
        lines.append(
            f"| {r['clip']} | {r['timed_frames']} | {r['dense_ms']:.1f} / "
            f"{r['dense_channels_last_ms']:.1f} | {r['fast_ms']:.1f} | "
            f"{r['speedup']:.2f}× / {r['speedup_vs_channels_last']:.2f}× | "
            f"{r['speedup_cpu']:.2f}× | {100 * r['agreement_top1']:.1f}% | "
            f"{r['mac_reduction']:.2f}× | {exact} |"
        )
    lines.append("")
    for r in report["clips"]:
        if "logit_rel_error_median" not in r:
            continue
        lines.append(
            f"- {r['clip']}: logits of the delta runtime vs dense float32, relative L2 error "
            f"median {r['logit_rel_error_median']:.4f}, 99th percentile "
            f"{r['logit_rel_error_p99']:.4f}; dense top-1 margin min "
            f"{r['dense_margin_min']:.3f}, median {r['dense_margin_median']:.3f}; dense top-1 "
            f"changed on {100 * r['dense_top1_flicker']:.1f}% of frames."
        )
    for r in report["clips"]:
        lines += [
            "",
            f"Per layer, {r['clip']} (median ms of the fast runtime, conv + epilogue; "
            "share of output pixels whose quantised value changed):",
            "",
            "| layer | C→O | out H×W | dense MMACs | fast ms | changed pixels |",
            "|---|---|---|---:|---:|---:|",
        ]
        for p in r["per_layer"]:
            c, o = p["in_out_channels"]
            lines.append(
                f"| {p['layer']} | {c}→{o} | {p['out_hw'][0]}×{p['out_hw'][1]} | "
                f"{p['dense_macs'] / 1e6:.1f} | {p['median_ms']:.2f} | "
                f"{100 * p['changed_out_pixels']:.1f}% |"
            )
    return "\n".join(lines) + "\n"


def plot(report: dict, path: Path) -> None:
    """Per clip: dense fp32 (NCHW, channels-last) and fast delta ms per frame; per layer: the
    fast runtime's ms and the share of output pixels that changed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    clips = report["clips"]
    fig, axes = plt.subplots(1, 1 + len(clips), figsize=(5 + 6 * len(clips), 3.8))
    pos = np.arange(len(clips))
    bars = (("dense_ms", "dense fp32 NCHW"), ("dense_channels_last_ms", "dense fp32 channels-last"),
            ("fast_ms", "fast delta"))  # fmt: skip
    for i, (key, label) in enumerate(bars):
        axes[0].bar(pos + (i - 1) * 0.27, [r[key] for r in clips], 0.27, label=label)
    axes[0].set_xticks(pos, [r["clip"].split(".")[0][:20] for r in clips], fontsize=8)
    axes[0].set_ylabel("ms per frame (median)")
    axes[0].set_title(f"{report['size'][0]}×{report['size'][1]}, one thread")
    axes[0].legend(fontsize=7)
    for ax, r in zip(axes[1:], clips):
        layers = r["per_layer"]
        x = np.arange(len(layers))
        ax.bar(x, [p["median_ms"] for p in layers], color="tab:green", label="fast ms")
        ax.set_ylabel("fast runtime ms per frame")
        ax.set_xticks(x, [p["layer"] for p in layers], rotation=60, ha="right", fontsize=6)
        twin = ax.twinx()
        twin.plot(x, [100 * p["changed_out_pixels"] for p in layers], "k.-", label="changed")
        twin.set_ylabel("output pixels changed (%)")
        ax.set_title(f"{r['clip']}: {r['speedup']:.2f}×, {100 * r['agreement_top1']:.1f}% agree")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", nargs="*", help="video files (default: the shared clips)")
    parser.add_argument("--size", default="240x320", help="HxW the whole frame is resized to")
    parser.add_argument("--frames", type=int, default=600, help="timed frames per clip")
    parser.add_argument("--exact-frames", type=int, default=500, help="per clip; 0 skips")
    parser.add_argument("--act-max", type=int, default=255, help="activation clamp (steps)")
    parser.add_argument("--input-threshold", type=int, default=FastDeltaConfig().input_threshold,
                        help="levels a pixel must move to be sent (FastDeltaConfig)")  # fmt: skip
    parser.add_argument("--bits", type=int, default=8,
                        help="quantiser steps: 2**bits - 1 to each channel's calibrated "
                        "maximum (deltaify); with --act-max 2**bits - 1 the integer weights "
                        "get the room the smaller activations leave")  # fmt: skip
    parser.add_argument("--quantile", type=float, default=1.0,
                        help="calibration quantile of each channel's steps (deltaify)")  # fmt: skip
    parser.add_argument("--model", default="resnet20",
                        help="a registered backbone the fast runtime lowers (resnet20, "
                        "tv_resnet18, ...)")  # fmt: skip
    parser.add_argument("--checkpoint", default=None,
                        help=f"its 10-class weights (default for resnet20: ../shared/{CHECKPOINT})")  # fmt: skip
    parser.add_argument("--out", default=str(HERE), help="folder for results_fast.{md,json}")
    args = parser.parse_args(argv)
    size = tuple(int(v) for v in args.size.lower().split("x"))
    torch.set_num_threads(1)
    torch.manual_seed(0)
    clips = [Path(c) for c in args.clips] if args.clips else None
    clips = clips or sorted((shared_dir() / "data/videos").glob("*.mp4"))
    if args.checkpoint is None and args.model != "resnet20":
        parser.error(f"--model {args.model} needs --checkpoint (its trained weights)")
    checkpoint = Path(args.checkpoint) if args.checkpoint else shared_dir() / CHECKPOINT
    if not clips or not checkpoint.is_file():
        print(f"no footage under {shared_dir()} or no checkpoint {checkpoint}", file=sys.stderr)
        return 1
    dense = create_model(args.model, num_classes=10, checkpoint=checkpoint).eval()
    start = time.perf_counter()
    results = [
        run_clip(
            c,
            dense,
            size,
            args.frames,
            args.exact_frames,
            args.act_max,
            args.input_threshold,
            args.quantile,
            args.bits,
        )
        for c in clips
    ]
    report = {
        "model": f"{args.model} ({checkpoint.name}), deltaified {args.bits}-bit, "
        f"act_max {args.act_max}",
        "bits": args.bits,
        "model_name": args.model,
        "checkpoint_sha256": hashlib.sha256(checkpoint.read_bytes()).hexdigest(),
        "calibration_quantile": args.quantile,
        "input_threshold": args.input_threshold,
        "size": list(size),
        "input": f"{size[0]}x{size[1]}, whole frame resized (box filter), aspect squashed",
        "threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(),
        "cpu": cpu_model(),
        # What the two sides ran on: PyTorch's kernel ISA (ATEN_CPU_CAPABILITY caps it; set
        # ONEDNN_MAX_CPU_ISA too for the convolutions) and the delta kernels' -march
        # ($EDGEADAPT_NATIVE_MARCH), so a run that emulates a CPU without AVX-512 says so.
        "dense_isa": torch.backends.cpu.get_cpu_capability(),
        "onednn_max_isa": os.environ.get("ONEDNN_MAX_CPU_ISA", "default"),
        "delta_kernel_flags": " ".join(fast_native.ARCH_FLAGS),
        "torch": torch.__version__,
        "clips": results,
        "seconds": time.perf_counter() - start,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results_fast.json").write_text(json.dumps(report, indent=2) + "\n")
    text = markdown(report)
    (out / "results_fast.md").write_text(text)
    plot(report, out / "results_fast.png")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
