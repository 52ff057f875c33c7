"""The EcoTTA adaptation step with its kept activations stored int8, measured against the
scheduled step (fp32): the arena, the gradients, and what the device's online adaptation gets.

    python benchmarks/firmware/int8_activations.py                 # ~9 min on 2 cores
    python benchmarks/firmware/int8_activations.py --per-domain 100 --out /tmp/i8   # a look

Both programs are the ResNet-20 EcoTTA adapt program of `EcoTTAConfig.device()` (int8
frozen weights, batch 1) planned for the STM32F746, exported by `to_training_program`; the
second with `int8_activations=True` (export/training_passes.py `int8_kept_activations`), both
with `schedule=True` (the default, exact; int8 needs it). The forward is the same in both; only the
gradients that read a kept activation differ.

- Arena: the exporter's own report of each program (planned bytes, what is alive at the
  peak by role, the runtime tables' 32-bit estimate).
- Gradients: both programs at lr 0 on the same frames, so their weights and stream
  statistics stay identical; the int8 program's gradients against the fp32 program's
  (relative L2 error of all gradients together, per frame).
- Adaptation: each program stepped with plain SGD at the device's lr by ExecuTorch's host
  runtime (TrainingRunner, as a device steps it) over one continual stream: the four extra
  corruptions (speckle_noise, gaussian_blur, spatter, saturate; severity 5; never used by
  the benchmark of record), the first --per-domain images of the shuffled CIFAR-10 (JPEG)
  test set each. Online top-1 error (prediction before the step), per domain. The two
  programs run in parallel processes.

Writes int8_activations.{json,md,png} into --out (default: beside this file).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from edgeadapt._paths import shared_dir

HERE = Path(__file__).resolve().parent
DOMAINS = ("speckle_noise", "gaussian_blur", "spatter", "saturate")
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
KINDS = ("fp32", "int8")


def adapter():
    import edgeadapt

    torch.manual_seed(0)
    model = edgeadapt.create_model(
        "resnet20", checkpoint=shared_dir() / "models" / "resnet20_cifar10jpeg.pt"
    )
    example = torch.zeros(1, 3, 32, 32)
    return edgeadapt.wrap(model, edgeadapt.EcoTTAConfig.device(), example_input=example)


def export(work: Path) -> dict:
    from edgeadapt.export.training import to_training_program

    reports = {}
    for kind in KINDS:
        t0 = time.perf_counter()
        # Both scheduled (int8 implies it): the comparison isolates the int8 storage.
        report = to_training_program(adapter(), torch.zeros(1, 3, 32, 32), work / f"{kind}.pte",
                                     device="stm32f746", schedule=True,
                                     int8_activations=kind == "int8")  # fmt: skip
        reports[kind] = report.to_dict()
        print(f"exported {kind} kept activations ({time.perf_counter() - t0:.0f} s)", flush=True)
    return reports


def stream(per_domain: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(normalised frames (N, 1, 3, 32, 32), labels): the domains one after another."""
    from edgeadapt.data import corrupt, load_image_folder, stream_order

    archive = shared_dir() / "data/cifar10/cifar10-jpeg.tar.gz"
    x, y, _ = load_image_folder(archive, "test", progress=False)
    order = stream_order(len(x), seed=0)[:per_domain]
    x, y = x[order], y[order]
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    frames = []
    for name in DOMAINS:
        c = torch.from_numpy(
            np.ascontiguousarray(corrupt(x, name, 5, seed=0).transpose(0, 3, 1, 2))
        )
        frames.append((c.float() / 255 - mean) / std)
    labels = torch.from_numpy(np.tile(y, len(DOMAINS)))
    return torch.cat(frames).unsqueeze(1), labels


def adapt(kind: str, work: str, per_domain: int, lr: float) -> list[int]:
    """Online predictions of one program stepped over the stream (a worker process)."""
    from edgeadapt.export import TrainingRunner

    torch.set_num_threads(1)
    frames, _ = stream(per_domain)
    runner = TrainingRunner(Path(work) / f"{kind}.pte", lr=lr)
    preds = []
    for i, x in enumerate(frames):
        logits, _, _ = runner.step(x)
        preds.append(int(logits.argmax()))
        if (i + 1) % 500 == 0 or i + 1 == len(frames):
            print(f"  {kind}: {i + 1}/{len(frames)} frames", flush=True)
    return preds


def gradient_errors(work: Path, frames: torch.Tensor) -> list[float]:
    """Per frame: the int8 program's gradients against the fp32 program's, both at lr 0."""
    from edgeadapt.export import TrainingRunner

    runners = [TrainingRunner(work / f"{kind}.pte", lr=0.0) for kind in KINDS]
    errors = []
    for x in frames:
        for runner in runners:
            runner.forward_backward(x)
        a, b = (runner.gradients() for runner in runners)
        diff = sum(float((a[k] - b[k]).norm()) ** 2 for k in a) ** 0.5
        norm = sum(float(a[k].norm()) ** 2 for k in a) ** 0.5
        errors.append(diff / max(norm, 1e-30))
    return errors


def arena_row(report: dict) -> dict:
    peak = report["arena_peak"]
    return {
        "planned_bytes": sum(report["arena_bytes"]),
        "peak_live_bytes": peak["peak_live_bytes"],
        "by_role": peak["by_role"],
        "runtime_bytes_estimate": report["runtime_bytes_estimate"],
        "notes": report.get("notes", []),
    }


def run(args) -> dict:
    work = Path(tempfile.mkdtemp(prefix="int8_act_"))
    reports = export(work)
    frames, labels = stream(args.per_domain)
    lr = adapter().config.lr
    t0 = time.perf_counter()
    print(f"adapting over {len(frames)} frames, both programs in parallel", flush=True)
    with mp.get_context("spawn").Pool(2) as pool:
        jobs = {k: pool.apply_async(adapt, (k, str(work), args.per_domain, lr)) for k in KINDS}
        preds = {k: np.array(j.get()) for k, j in jobs.items()}
    print(f"adapted ({time.perf_counter() - t0:.0f} s); gradients on {args.grad_frames} frames",
          flush=True)  # fmt: skip
    errors = gradient_errors(work, frames[: args.grad_frames])
    y = labels.numpy()
    n = args.per_domain
    online = {k: {d: float((p[i * n : (i + 1) * n] != y[i * n : (i + 1) * n]).mean())
                  for i, d in enumerate(DOMAINS)} for k, p in preds.items()}  # fmt: skip
    for k in online:
        online[k]["mean"] = float(np.mean([online[k][d] for d in DOMAINS]))
    right = {k: p == y for k, p in preds.items()}
    return {
        "program": "ResNet-20 EcoTTA adapt, EcoTTAConfig.device(), batch 1, planned for stm32f746",
        "lr": lr,
        "per_domain": n,
        "domains": list(DOMAINS),
        "arena": {k: arena_row(r) for k, r in reports.items()},
        "gradient_rel_error": {
            "frames": len(errors),
            "median": float(np.median(errors)),
            "p90": float(np.percentile(errors, 90)),
            "max": float(np.max(errors)),
            "per_frame": [round(e, 6) for e in errors],
        },
        "online_error": online,
        "only_fp32_right": int((right["fp32"] & ~right["int8"]).sum()),
        "only_int8_right": int((right["int8"] & ~right["fp32"]).sum()),
        "agreement": float((preds["fp32"] == preds["int8"]).mean()),
    }


def error_row(kind: str, r: dict) -> str:
    cells = [f"{100 * r['online_error'][kind][d]:.2f}%" for d in [*r["domains"], "mean"]]
    return f"| {kind} | " + " | ".join(cells) + " |"


def markdown(r: dict) -> str:
    a, b = r["arena"]["fp32"], r["arena"]["int8"]
    g = r["gradient_rel_error"]
    rows = [
        ("planned arena", a["planned_bytes"], b["planned_bytes"]),
        ("bytes alive at the peak", a["peak_live_bytes"], b["peak_live_bytes"]),
        *((f"… {role}", a["by_role"][role], b["by_role"][role])
          for role in a["by_role"] if a["by_role"][role] or b["by_role"][role]),
        ("runtime tables, 32-bit estimate", a["runtime_bytes_estimate"],
         b["runtime_bytes_estimate"]),
    ]  # fmt: skip
    lines = [
        "# Kept activations int8: the EcoTTA adaptation step, measured",
        "",
        f"{r['program']}. Written by `benchmarks/firmware/int8_activations.py` "
        "(export/training_passes.py `int8_kept_activations`: each float activation of at "
        "least 8192 values that a gradient reads is stored int8, one step of (max - min) / 255 "
        "per channel, and widened again right before that gradient).",
        "",
        "| | fp32 kept (scheduled) | int8 kept | change |",
        "|---|---:|---:|---:|",
        *(f"| {name} | {x:,} | {y:,} | {y - x:+,} |" for name, x, y in rows),
        "",
        f"**Gradients** (both programs at lr 0 on the first {g['frames']} frames of the stream, "
        "so weights and stream statistics stay identical): relative L2 error of all the int8 "
        f"program's gradients against the fp32 program's, median {g['median']:.2%}, 90th "
        f"percentile {g['p90']:.2%}, max {g['max']:.2%}. The forward is the same in both "
        "(loss and logits agree to float rounding).",
        "",
        f"**Adaptation** (plain SGD at lr {r['lr']:g} by ExecuTorch's host runtime, continual over "
        f"{', '.join(r['domains'])}, severity 5, {r['per_domain']} images each): online top-1 "
        "error.",
        "",
        "| kept activations | " + " | ".join(r["domains"]) + " | mean |",
        "|---|" + "---:|" * (len(r["domains"]) + 1),
        *(error_row(k, r) for k in KINDS),
        "",
        f"Same prediction on {100 * r['agreement']:.1f}% of frames; right only with fp32 kept: "
        f"{r['only_fp32_right']}, only with int8 kept: {r['only_int8_right']}.",
        "",
        "![online error and gradient error](int8_activations.png)",
    ]
    return "\n".join(lines) + "\n"


def plot(r: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    names = [*r["domains"], "mean"]
    xs = np.arange(len(names))
    for i, k in enumerate(KINDS):
        left.bar(xs + (i - 0.5) * 0.38, [100 * r["online_error"][k][d] for d in names], 0.38,
                 label=f"{k} kept activations")  # fmt: skip
    left.set_xticks(xs, names, rotation=20)
    left.set_ylabel("online top-1 error (%)")
    left.set_title("adaptation on the device's runtime")
    left.legend()
    right.hist(100 * np.array(r["gradient_rel_error"]["per_frame"]), bins=30)
    right.set_xlabel("gradient relative L2 error, int8 vs fp32 kept (%)")
    right.set_ylabel("frames")
    right.set_title("gradients at identical state")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-domain", type=int, default=500, help="images per corruption")
    parser.add_argument("--grad-frames", type=int, default=200, help="frames for the gradients")
    parser.add_argument("--out", type=Path, default=HERE)
    parser.add_argument("--render", action="store_true",
                        help="only rewrite the .md and .png from the .json in --out")  # fmt: skip
    args = parser.parse_args(argv)
    if args.render:
        result = json.loads((args.out / "int8_activations.json").read_text())
        (args.out / "int8_activations.md").write_text(markdown(result))
        plot(result, args.out / "int8_activations.png")
        return 0
    if not (shared_dir() / "models" / "resnet20_cifar10jpeg.pt").is_file():
        print(f"needs the ResNet-20 checkpoint and CIFAR-10 under {shared_dir()}", file=sys.stderr)
        return 1
    result = run(args)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "int8_activations.json").write_text(json.dumps(result, indent=1) + "\n")
    (args.out / "int8_activations.md").write_text(markdown(result))
    plot(result, args.out / "int8_activations.png")
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
