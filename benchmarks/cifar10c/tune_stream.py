"""Tuning for single frames, on the four extra corruptions only: the statistics window and
EcoTTA's settings at batch 1, on an i.i.d. and a class-correlated (δ = 0.1) stream.

    python benchmarks/cifar10c/make_release.py --out /tmp/c10c          # once
    python benchmarks/cifar10c/tune_stream.py --data /tmp/c10c --workers 2

Continual over speckle_noise, gaussian_blur, spatter, saturate (severity 5), the first
2000 images of each domain. Each setting is one `edgeadapt bench` process; an interrupted
sweep resumes. Writes tune_stream[_b<batch>].json/.md beside this file, keeping the rows of
earlier sweeps that this one did not rerun. The 15 corruptions of the
benchmark of record are never used here.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from _jobs import add_executor_args, bench_command, merge, run_parallel

from edgeadapt._paths import shared_dir
from edgeadapt.bench.report import results_from_json
from edgeadapt.config import SMALL_SRAM_SETTINGS

HERE = Path(__file__).resolve().parent
GROW = [512, 4096]  # a window growing with depth (stream_norm.stream_windows)
DEVICE = {"frozen_bn": "eval", "frozen_weights": "int8"}
# EcoTTAConfig.device_small()'s partition; its step size is what the rows below choose.
SMALL_SRAM = {k: v for k, v in SMALL_SRAM_SETTINGS.items() if k != "lr"}


def _plain_sgd(lr: float, **extra) -> dict:
    """The device's EcoTTA (frozen BNs on the stream, as DEVICE_SETTINGS has them) stepped by
    plain SGD at `lr`, as the device applies it."""
    return {**DEVICE, "frozen_bn": "batch", "stat_window": GROW, "optimizer": "sgd",
            "momentum": 0.0, "lr": lr, **extra}  # fmt: skip


# label -> (method, settings)
SETTINGS: dict[str, tuple[str, dict]] = {
    "source": ("source", {}),
    **{f"norm, window {w}": ("norm", {"stat_window": w}) for w in (64, 512, 1024, 2048, 4096)},
    "norm, window 512→4096": ("norm", {"stat_window": GROW}),
    "norm, window 256→2048": ("norm", {"stat_window": [256, 2048]}),
    "ecotta, window 64": ("ecotta", {"stat_window": 64}),
    "ecotta, window 512→4096": ("ecotta", {"stat_window": GROW}),
    "ecotta, window 512→4096, statistics only": ("ecotta", {"stat_window": GROW, "lr": 1e-9}),
    "ecotta, window 512→4096, lr 1e-4": ("ecotta", {"stat_window": GROW, "lr": 1e-4}),
    "ecotta device, window 512→4096": ("ecotta", {**DEVICE, "stat_window": GROW}),
    "ecotta device, window 512→4096, statistics only": (
        "ecotta",
        {**DEVICE, "stat_window": GROW, "lr": 1e-9},
    ),
    "ecotta device, window 512→4096, lr 1e-4": (
        "ecotta",
        {**DEVICE, "stat_window": GROW, "lr": 1e-4},
    ),
    "ecotta device, window 512→4096, SGD 1e-4": (
        "ecotta",
        {**DEVICE, "stat_window": GROW, "optimizer": "sgd", "lr": 1e-4},
    ),
    "ecotta device, window 512→4096, teacher": (
        "ecotta",
        {**DEVICE, "stat_window": GROW, "teacher_momentum": 0.999},
    ),
    **{
        f"ecotta device, frozen BNs on the stream, window 512→4096, SGD {lr:g}": (
            "ecotta",
            {**DEVICE, "frozen_bn": "batch", "stat_window": GROW, "optimizer": "sgd", "lr": lr},
        )
        for lr in (3e-5, 1e-4, 3e-4)
    },
    # The device applies plain SGD (no momentum state; docs/bridge-protocol.md §5): its
    # step size chosen here, with the frozen BNs on the stream as DEVICE_SETTINGS has them.
    **{
        f"ecotta device, BNs on the stream, plain SGD {lr:g}": ("ecotta", _plain_sgd(lr))
        for lr in (1e-4, 3e-4, 1e-3, 3e-3)
    },
    # The device configuration that fits an STM32F746's 320 KB
    # (benchmarks/firmware/small_sram/results.md): meta networks on stages 2 and 3 only, one
    # part each. Its step size.
    **{
        f"ecotta device 320 KB (stages 2-3, 2 parts), plain SGD {lr:g}": (
            "ecotta",
            _plain_sgd(lr, **SMALL_SRAM),
        )
        for lr in (3e-5, 1e-4, 3e-4, 1e-3)
    },
    "tent, window 512→4096": ("tent", {"stat_window": GROW}),
    "tent, window 512→4096, lr 1e-4": ("tent", {"stat_window": GROW, "lr": 1e-4}),
    "sar, window 512→4096, lr 1e-4": ("sar", {"stat_window": GROW, "lr": 1e-4}),
    "sar, window 512→4096, lr 3e-5": ("sar", {"stat_window": GROW, "lr": 3e-5}),
    "rotta": ("rotta", {}),
}
# A window named in a label applies at every batch size: the threshold above which a batch
# uses its own statistics alone (own_statistics_from, 64 by default) is off in these rows.
for _method, _settings in SETTINGS.values():
    if "stat_window" in _settings:
        _settings["own_statistics_from"] = None
STREAMS = ("iid", "correlated")


def job_name(stream: str, label: str) -> str:
    return f"{stream}__" + "".join(c if c.isalnum() else "_" for c in label)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True, help="release folder from make_release.py")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--n-images", type=int, default=2000)
    ap.add_argument("--batch", type=int, default=1, help="frames per step (default 1)")
    ap.add_argument("--streams", default=",".join(STREAMS), help="comma list (default: both)")
    ap.add_argument("--only", default=None, help="labels to run, separated by ';' (default: all)")
    ap.add_argument("--out", default=None, help="folder for per-run JSON and logs")
    add_executor_args(ap)  # --executor, --ray-address
    args = ap.parse_args()
    suffix = "" if args.batch == 1 else f"_b{args.batch}"
    out = Path(args.out or HERE / f"tune_stream{suffix}_runs")
    chosen = [x.strip() for x in args.only.split(";")] if args.only else list(SETTINGS)
    unknown = [label for label in chosen if label not in SETTINGS]
    if unknown:
        ap.error(f"--only: unknown settings {unknown}; known: {list(SETTINGS)}")
    common = ["--checkpoint", str(shared_dir() / "models" / "resnet20_cifar10jpeg.pt"),
              "--data", args.data, "--corruptions", "extra", "--batch", str(args.batch),
              "--n-images", str(args.n_images)]  # fmt: skip
    common += ["--warmup-cache", str(out / "warmups")]  # one warm-up per EcoTTA configuration
    jobs, labels = {}, {}
    streams = [x for x in args.streams.split(",") if x]
    if set(streams) - set(STREAMS):
        ap.error(f"--streams: choose from {STREAMS}")
    for stream in streams:
        for label in chosen:
            method, settings = SETTINGS[label]
            name = job_name(stream, label)
            extra = ["--stream", stream, "--methods", method]
            if settings:
                extra += ["--overrides", json.dumps({method: settings})]
            jobs[name] = bench_command(name, out, [*common, *extra])
            labels[name] = label
    start = time.time()
    run_parallel(jobs, out, args.workers, executor=args.executor, ray_address=args.ray_address)
    rows = []
    for stream in streams:
        payload = merge(out, [job_name(stream, label) for label in SETTINGS], labels)
        for r in results_from_json(payload):
            rows.append({"stream": stream, "setting": r.method, "mean_error": r.mean_error,
                         "errors": [s.error for s in r.segments],
                         "images_per_second": r.images_per_second})  # fmt: skip
    stem = HERE / f"tune_stream{suffix}"
    rows = _keep_earlier_rows(stem, rows)
    stem.with_suffix(".json").write_text(json.dumps({"rows": rows, "meta": vars(args)}, indent=2))
    _write_table(rows, args.n_images, args.batch, stem)
    print(f"{time.time() - start:.0f} s")


def _keep_earlier_rows(stem: Path, rows: list[dict]) -> list[dict]:
    """Rows of an earlier sweep (whose run folder may be gone) that this one did not rerun."""
    path = stem.with_suffix(".json")
    if not path.exists():
        return rows
    done = {(r["stream"], r["setting"]) for r in rows}
    earlier = json.loads(path.read_text())["rows"]
    return [r for r in earlier if (r["stream"], r["setting"]) not in done] + rows


def _write_table(rows: list[dict], n_images: int, batch: int, stem: Path) -> None:
    by = {(r["stream"], r["setting"]): r["mean_error"] for r in rows}
    lines = [
        f"Batch {batch}, continual over the 4 extra corruptions (severity 5, first {n_images} images "
        "of each), ResNet-20: mean error (%).",
        "",
        "| setting | i.i.d. | correlated δ=0.1 |",
        "|---|---:|---:|",
    ]
    for label in SETTINGS:
        cells = [by.get((s, label)) for s in STREAMS]
        if all(c is None for c in cells):
            continue
        lines.append(
            f"| {label} | " + " | ".join("–" if c is None else f"{c:.1f}" for c in cells) + " |"
        )
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
