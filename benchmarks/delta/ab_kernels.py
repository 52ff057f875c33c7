"""Two builds of the fast delta kernels against each other, frame by frame in one process.

For kernel work: builds each C++ source given (e.g. the committed
`edgeadapt/delta/native/fast_delta.cpp` and an edited copy) with the flags the runtime uses,
runs one `FastDeltaRuntime` per build on the same frames, alternating which goes first, and
checks that both give the same logits on every frame (the kernels are exact, so any
difference is a bug). Prints each build's median frame and per-layer times, and their
ratio. Both sources must keep the runtime's ABI (the `ea_*` signatures in `fast_native.py`,
int16 delta rows).

    git show a276b61:edgeadapt/delta/native/fast_delta.cpp > /tmp/old.cpp
    OMP_NUM_THREADS=1 python benchmarks/delta/ab_kernels.py /tmp/old.cpp \\
        edgeadapt/delta/native/fast_delta.cpp --dense

--dense runs the dense float32 model before each delta frame, as fast_run.py does, so that
each delta frame starts from caches holding dense's data rather than its own state.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from edgeadapt._paths import shared_dir
from edgeadapt.delta import FastDeltaConfig, deltaify, fast_native, to_fast_delta_runtime
from edgeadapt.models import create_model
from edgeadapt.video.preprocess import to_model_input
from edgeadapt.video.sources import open_frames

CHECKPOINT = "models/resnet20_cifar10jpeg.pt"
CALIBRATION_FRAMES = 16


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sources", nargs=2, type=Path, help="two fast_delta.cpp versions")
    parser.add_argument("--clip", type=Path, default=None, help="default: the shared bottle clip")
    parser.add_argument("--frames", type=int, default=200, help="timed frames")
    parser.add_argument("--size", default="240x320", help="HxW the frames are resized to")
    parser.add_argument("--dense", action="store_true", help="run dense before each delta frame")
    args = parser.parse_args(argv)
    for source in args.sources:
        if not source.is_file():
            parser.error(f"no kernel source {source} (give two versions of fast_delta.cpp)")
    torch.set_num_threads(1)
    clip = args.clip or shared_dir() / "data/videos/bottle-detection.mp4"
    checkpoint = shared_dir() / CHECKPOINT
    if not clip.is_file() or not checkpoint.is_file():
        print(f"no clip {clip} or no checkpoint {checkpoint}", file=sys.stderr)
        return 1
    size = tuple(int(v) for v in args.size.lower().split("x"))
    # Built as the shipped kernels are (flags, cache, errors), one library per source.
    libs = [fast_native.load_kernels(s.resolve()) for s in args.sources]
    dense = create_model("resnet20", num_classes=10, checkpoint=checkpoint).eval()
    frames = np.stack(list(open_frames(clip, size=size, fit="squash")))
    start = len(frames) // 4  # as fast_run.py: calibrate on the first quarter, time after it
    calib = to_model_input(frames[:start][:: max(1, start // CALIBRATION_FRAMES)])
    model = deltaify(dense, calib[:CALIBRATION_FRAMES], bits=8, quantile=1.0).eval()
    runtimes = []
    for lib in libs:
        runtime = to_fast_delta_runtime(model, FastDeltaConfig())
        runtime._lib = lib
        runtimes.append(runtime)
    evals = frames[start : start + args.frames + 1]
    times: list[list[float]] = [[], []]
    layers: list[list[np.ndarray]] = [[], []]
    with torch.no_grad():
        for i, f in enumerate(evals):
            frame = torch.from_numpy(np.ascontiguousarray(f))
            x = to_model_input(f) if args.dense else None
            logits = [None, None]
            for k in (0, 1) if i % 2 else (1, 0):  # alternate who runs first
                if x is not None:
                    dense(x)
                t0 = time.perf_counter()
                logits[k] = runtimes[k](frame)
                if i:  # the first frame is the dense anchor
                    times[k].append(time.perf_counter() - t0)
                    layers[k].append(runtimes[k].last_layer_ns.copy())
            if not torch.equal(logits[0], logits[1]):
                print(f"frame {i}: the two builds' logits differ", file=sys.stderr)
                return 1
            print(f"\r{i + 1}/{len(evals)} frames", end="", file=sys.stderr)
    print(file=sys.stderr)
    for k, source in enumerate(args.sources):
        per_layer = np.median(np.array(layers[k]), axis=0) / 1e6
        print(f"{source}: median {statistics.median(times[k]) * 1e3:.2f} ms a frame; layers (ms) "
              + " ".join(f"{v:.2f}" for v in per_layer))  # fmt: skip
    ratio = statistics.median(times[1]) / statistics.median(times[0])
    print(f"second / first: {ratio:.3f} (same logits on all {len(evals)} frames)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
