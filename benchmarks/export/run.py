"""The export table: ResNet-20 with EcoTTA and with Tent, inference and adaptation programs,
fp32 and int8 frozen backbone, at batch 1, against every device profile; and what int8
costs in accuracy on the benchmark data.

    OMP_NUM_THREADS=1 python benchmarks/export/run.py            # ~9 min on one core
    OMP_NUM_THREADS=1 python benchmarks/export/run.py --quick    # tiny model, smoke test
    OMP_NUM_THREADS=1 python benchmarks/export/run.py --methods ecotta_teacher  # these rows only

`ecotta_teacher` is EcoTTA with its mean-teacher option as the CIFAR-10-C record runs it
(teacher_momentum 0.999, 4 views): its adaptation step only (its prediction program is the
plain EcoTTA one with the teacher's weights). With --methods, the other rows of results.json
are kept.

Every program is exported with ExecuTorch's default plan (one arena) and checked against
each profile; for the STM32H743 it is exported again, planned into the H743's banks, and
that plan is what the H743 column checks. Programs run on the portable kernels (XNNPACK has
no Cortex-M kernels); int8 prediction programs are PT2E (int8 weights and activations),
int8 training programs store int8 weights (see `edgeadapt.export.training_ops`). Writes
results.json, results.md and export.png beside this file; the programs go to a temp folder.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

import edgeadapt
from edgeadapt.export import ExportError, check_fit, list_profiles, load_profile, to_executorch
from edgeadapt.export.quantize import quantize_int8, to_executorch_int8
from edgeadapt.export.training import to_training_program

HERE = Path(__file__).parent
TARGET = "stm32h743"
CORRUPTIONS = ("gaussian_noise", "fog")


def _images(split: str, per_class: int, corruption: str | None = None):
    from edgeadapt._paths import shared_dir
    from edgeadapt.data import corrupt, load_image_folder, stream_order, to_tensor

    source = shared_dir() / "data" / "cifar10" / "cifar10-jpeg.tar.gz"
    images, labels, _ = load_image_folder(source, split, limit_per_class=per_class, progress=False)
    order = stream_order(len(labels))
    images, labels = images[order], labels[order]
    if corruption:
        images = corrupt(images, corruption, 5)
    return to_tensor(images, normalize=True), torch.from_numpy(labels)


def _model(quick: bool):
    if quick:
        torch.manual_seed(0)
        return edgeadapt.create_model("tiny_resnet"), 16
    from edgeadapt._paths import shared_dir

    ckpt = shared_dir() / "models" / "resnet20_cifar10jpeg.pt"
    return edgeadapt.create_model("resnet20", checkpoint=str(ckpt)), 32


METHODS = ("ecotta", "tent", "ecotta_teacher")


def _config(method: str):
    from edgeadapt.models.cifar_resnet import CIFAR_MEAN, CIFAR_STD

    # EcoTTA as a device runs it (EcoTTAConfig.device()); the fp32 rows keep fp32 frozen
    # weights, the int8 rows store them int8 (`quantize`), so both precisions are measured.
    if method == "ecotta":
        return edgeadapt.EcoTTAConfig.device(frozen_weights="fp32")
    if method == "ecotta_teacher":
        return edgeadapt.EcoTTAConfig.device(
            frozen_weights="fp32", teacher_momentum=0.999, teacher_views=4,
            input_mean=CIFAR_MEAN, input_std=CIFAR_STD,
        )  # fmt: skip
    return edgeadapt.TentConfig()


def _adapter(method: str, model, example, source):
    config = _config(method)
    adapter = edgeadapt.wrap(model, config, example_input=example.repeat(2, 1, 1, 1))
    if method.startswith("ecotta"):
        # A short warm-up (output BNs calibrated to the identity, then a few steps) so the
        # programs compute a working network, as deployed ones would; sizes do not depend on it.
        adapter.warmup(source, epochs=1, max_steps=len(source), progress=False)
    return adapter


def _export(adapter, program, quant, example, calibration, path, device=None):
    if program == "adapt":
        return to_training_program(adapter, example, path, device=device, quantize=quant)
    if quant:
        return to_executorch_int8(
            adapter, example, path, calibration=calibration, backend="portable", device=device
        )
    return to_executorch(adapter, example, path, backend="portable", device=device)


def _row(method, program, quant, report, banked, seconds) -> dict:
    return {
        "method": method,
        "program": program,
        "weights": quant or "fp32",
        "file_bytes": report.file_bytes,
        "arena_bytes": report.total_arena_bytes,
        "h743_arena_bytes": dict(zip(banked.arena_banks, banked.arena_bytes)),
        "constant_bytes": report.constant_bytes,
        "trainable_bytes": report.trainable_bytes,
        "runtime_bytes_estimate": report.runtime_bytes_estimate,
        "max_abs_error": report.max_abs_error,
        "export_seconds": seconds,
    }


def refit(row: dict) -> None:
    """The fit of a measured program on every profile, from the row's own numbers: the
    single-arena plan everywhere, the banked plan on the STM32H743."""
    sizes = {
        "constant_bytes": row["constant_bytes"],
        "trainable_bytes": row["trainable_bytes"],
        "runtime_bytes_estimate": row["runtime_bytes_estimate"],
        "backend": "portable",
    }
    single = dict(sizes, arena_bytes=[row["arena_bytes"]])
    banked = dict(
        sizes,
        arena_bytes=list(row["h743_arena_bytes"].values()),
        arena_banks=list(row["h743_arena_bytes"]),
        planned_for=TARGET,
    )
    row["fits"] = {
        key: check_fit(banked if key == TARGET else single, key).to_dict()
        for key in list_profiles()
    }
    row["h743_plan_only_fits"] = check_fit(banked, TARGET, include_runtime=False).fits


def programs(quick: bool, folder: Path, methods: tuple[str, ...] = METHODS) -> list[dict]:
    model, size = _model(quick)
    example = _images("test", 1)[0][:1] if not quick else torch.randn(1, 3, size, size)
    if quick:
        calibration = [torch.randn(1, 3, size, size) for _ in range(4)]
        source = [(torch.randn(8, 3, size, size), torch.randint(0, 10, (8,)))]
    else:
        train, labels = _images("train", 64)
        calibration = [train[i : i + 1] for i in range(32)]
        source = [(train[i : i + 64], labels[i : i + 64]) for i in range(0, len(train), 64)]
    rows = []
    for method in methods:
        adapter = _adapter(method, model, example, source)
        teacher = method == "ecotta_teacher"  # its infer program is ecotta's
        for program in ("adapt",) if teacher else ("infer", "adapt"):
            for quant in (None, "int8"):
                name = f"{method}_{program}_{quant or 'fp32'}"
                t = time.time()
                try:
                    report = _export(
                        adapter, program, quant, example, calibration, folder / f"{name}.pte"
                    )
                    banked = _export(
                        adapter, program, quant, example, calibration, folder / f"{name}_h743.pte",
                        device=load_profile(TARGET),
                    )  # fmt: skip
                except ExportError as exc:  # recorded, not hidden: the table says what failed
                    rows.append({"method": method, "program": program,
                                 "weights": quant or "fp32", "error": str(exc)})  # fmt: skip
                    print(f"{name}: {exc}", flush=True)
                    continue
                rows.append(_row(method, program, quant, report, banked, time.time() - t))
                refit(rows[-1])
                print(f"{name}: {rows[-1]['arena_bytes']:,} B arena, "
                      f"H743 {rows[-1]['fits'][TARGET]['message'][:160]}", flush=True)  # fmt: skip
    return rows


@torch.no_grad()
def accuracy(quick: bool) -> dict:
    """Top-1 of the source model, fp32 vs its int8 PT2E graph (what the portable program
    computes, up to rounding ties), one image at a time as the batch-1 programs see them."""
    from edgeadapt.export.graph import inference_module

    model, size = _model(quick)
    net, _ = inference_module(model.eval())
    per_class = 2 if quick else 200
    train = _images("train", 8 if not quick else 1)[0]
    if quick:
        train = torch.nn.functional.interpolate(train, size=size)
    # Captured at batch 1 (the programs' batch): the graph is specialised to its shape.
    calibration = [train[i : i + 1] for i in range(len(train))]
    int8 = quantize_int8(net, calibration[0], calibration)
    out = {}
    for domain in ("clean", *CORRUPTIONS):
        x, y = _images("test", per_class, None if domain == "clean" else domain)
        if quick:
            x = torch.nn.functional.interpolate(x, size=size)
        fp = torch.cat([net(x[i : i + 1]) for i in range(len(x))]).argmax(1)
        q = torch.cat([int8(x[i : i + 1]) for i in range(len(x))]).argmax(1)
        out[domain] = {
            "images": len(y),
            "fp32_accuracy": float((fp == y).float().mean()),
            "int8_accuracy": float((q == y).float().mean()),
            "agreement": float((fp == q).float().mean()),
        }
        print(domain, out[domain], flush=True)
    return out


def _mib(b: int) -> str:
    return f"{b / 2**20:.2f}"


def markdown(rows: list[dict], acc: dict) -> str:
    keys = list_profiles()
    lines = [
        "| method | program | weights | file MiB | arena MiB | H743 banks KiB | constants MiB "
        "| runtime est. KiB | max error | fits |",
        "|---|---|---|---:|---:|---|---:|---:|---:|---|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(
                f"| {r['method']} | {r['program']} | {r['weights']} | failed: {r['error']} |"
            )
            continue
        banks = " + ".join(f"{v // 1024}" for v in r["h743_arena_bytes"].values())
        fits = ", ".join(k for k in keys if r["fits"][k]["fits"]) or "none"
        lines.append(
            f"| {r['method']} | {r['program']} | {r['weights']} | {_mib(r['file_bytes'])} "
            f"| {_mib(r['arena_bytes'])} | {banks} | {_mib(r['constant_bytes'])} "
            f"| {r['runtime_bytes_estimate'] // 1024} | {r['max_abs_error']:.2g} | {fits} |"
        )
    lines += ["", "STM32H743 (banked plan):", ""]
    for r in (r for r in rows if "error" not in r):
        lines.append(
            f"- {r['method']} {r['program']} {r['weights']}: {r['fits'][TARGET]['message']}"
        )
    lines += [
        "",
        "| data (severity 5) | images | fp32 top-1 | int8 top-1 | agreement |",
        "|---|---:|---:|---:|---:|",
    ]
    for domain, a in acc.items():
        lines.append(
            f"| {domain} | {a['images']} | {100 * a['fp32_accuracy']:.1f}% "
            f"| {100 * a['int8_accuracy']:.1f}% | {100 * a['agreement']:.1f}% |"
        )
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in rows if "error" not in r]
    labels = [f"{r['method']}\n{r['program']}\n{r['weights']}" for r in rows]
    arena = [sum(r["h743_arena_bytes"].values()) / 1024 for r in rows]
    extra = [(r["trainable_bytes"] + r["runtime_bytes_estimate"]) / 1024 for r in rows]
    fig, ax = plt.subplots(figsize=(10, 4.5))
    ax.bar(labels, arena, label="planned arena (H743 banks)")
    ax.bar(labels, extra, bottom=arena, label="trainable tensors + runtime tables (est.)")
    ram = sum(b.usable_bytes for b in load_profile(TARGET).data_banks) / 1024
    ax.axhline(ram, color="k", ls="--", lw=1, label=f"STM32H743 RAM ({ram:.0f} KiB)")
    ax.set_ylabel("KiB at batch 1")
    ax.set_title("ResNet-20 programs on the STM32H743 (32×32, batch 1)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny model, random data")
    parser.add_argument(
        "--refit",
        action="store_true",
        help="only redo the fit checks, table and plot from results.json (profiles changed)",
    )
    parser.add_argument(
        "--methods", default=None, help=f"a subset of {','.join(METHODS)}; keeps the other rows"
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    suffix = "_quick" if args.quick else ""
    if args.methods:
        methods = tuple(m for m in args.methods.split(",") if m)
        unknown = sorted(set(methods) - set(METHODS))
        if unknown:
            parser.error(f"unknown methods {unknown}; choose from {METHODS}")
        saved = json.loads((HERE / f"results{suffix}.json").read_text())
        with tempfile.TemporaryDirectory() as tmp:
            fresh = programs(args.quick, Path(tmp), methods)
        rows = [r for r in saved["programs"] if r["method"] not in methods] + fresh
        acc = saved["int8_accuracy"]
    elif args.refit:
        saved = json.loads((HERE / f"results{suffix}.json").read_text())
        rows, acc = saved["programs"], saved["int8_accuracy"]
        for row in rows:
            if "error" not in row:
                refit(row)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            rows = programs(args.quick, Path(tmp))
        acc = accuracy(args.quick)
    (HERE / f"results{suffix}.json").write_text(
        json.dumps({"programs": rows, "int8_accuracy": acc}, indent=1) + "\n"
    )
    (HERE / f"results{suffix}.md").write_text(markdown(rows, acc))
    plot(rows, HERE / f"export{suffix}.png")
    print(markdown(rows, acc))


if __name__ == "__main__":
    main()
