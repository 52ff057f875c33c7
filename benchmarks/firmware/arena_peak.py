"""What the EcoTTA adaptation step's arena holds at its peak, and what each memory lever
frees: the item behind the STM32F746 shortfall in results.md, measured on the program.

    python benchmarks/firmware/arena_peak.py [--device stm32f746] [--batch 1]

Exports the shipped adapt program (ResNet-20 from ../shared, `EcoTTAConfig.device()`: int8
frozen weights, batch 1) with `edgeadapt export --json`, whose report carries `arena_peak`
(export/arena_peak.py: the bytes alive where the most are, by role), and the same step with
each exact lever the exporter implements undone (no scheduling; and ReLU masks as bool
bytes) and with the opt-in int8 kept activations on (`to_training_program` options, `VARIANTS`),
so those levers are measured, not computed, each with the exporter's fit check. Writes
arena_peak.{json,md} beside this file. The warm-up is skipped: it changes weights, not
sizes. The lever not implemented is computed from the measured roles of the smallest step.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from edgeadapt._paths import shared_dir

HERE = Path(__file__).resolve().parent
F746_SRAM = 320 * 1024


def export_report(device: str, batch: int, out: Path) -> dict:
    """`edgeadapt export` of the shipped adapt program; its JSON report."""
    checkpoint = shared_dir() / "models" / "resnet20_cifar10jpeg.pt"
    if not checkpoint.is_file():
        raise SystemExit(f"{checkpoint} is missing: this benchmark needs ../shared")
    cmd = [sys.executable, "-m", "edgeadapt.cli", "export", "--model", "resnet20",
           "--checkpoint", str(checkpoint), "--method", "ecotta", "--program", "adapt",
           "--batch", str(batch), "--device", device, "--no-warmup", "--skip-check",
           "--out", str(out), "--json", str(out / "report.json")]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True)
    print(done.stdout, end="")
    if not (out / "report.json").is_file():
        raise SystemExit(f"export failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return json.loads((out / "report.json").read_text())


# The shipped step against the same step with one implemented lever undone (the baselines
# of the exact levers), and with the opt-in one on: label -> to_training_program options.
VARIANTS = {
    "not scheduled (--no-schedule)": {"schedule": False},
    "not scheduled, ReLU masks as bool bytes": {"schedule": False, "pack_masks": False},
    "int8 kept activations (opt-in)": {"int8_activations": True},
}


def variant_report(device: str, batch: int, out: Path, options: dict) -> dict:
    """The shipped step exported with `options` (to_training_program's), with its fit check."""
    import torch

    import edgeadapt
    from edgeadapt.export import to_training_program
    from edgeadapt.export.fit import check_fit

    model = edgeadapt.create_model(
        "resnet20", checkpoint=shared_dir() / "models" / "resnet20_cifar10jpeg.pt"
    )
    example = torch.zeros(batch, 3, 32, 32)
    adapter = edgeadapt.wrap(model, edgeadapt.EcoTTAConfig.device(), example_input=example)
    name = "_".join(f"{k}-{v}" for k, v in options.items())
    report = to_training_program(adapter, example, out / f"{name}.pte", device=device, **options)
    return {**report.to_dict(), "fit": check_fit(report, device).to_dict()}


def levers(peak: dict) -> list[tuple[str, int]]:
    """Bytes each lever not implemented yet would free at the peak, from the measured roles."""
    by_role = peak["by_role"]
    # The backward needs at least the gradient it reads and the one it writes.
    temps = sorted((t["bytes"] for t in peak["largest"] if t["role"] == "backward temporaries"),
                   reverse=True)  # fmt: skip
    return [
        ("backward temporaries down to the two largest (a gradient in, one out)",
         max(0, by_role["backward temporaries"] - sum(temps[:2]))),
    ]  # fmt: skip


def measured_runtime_tables(
    program: str = "ecotta_adapt", results: Path = HERE / "results.json"
) -> int | None:
    """The method allocator's bytes for `program` on the Cortex-M7 build (`results`, written
    by run.py), or None where that run is not committed."""
    if not results.is_file():
        return None
    rows = json.loads(results.read_text())["rows"]
    used = [r["method_used"] for r in rows
            if r["program"] == program and r["build"] == "an500" and r["method_used"]]  # fmt: skip
    return used[0] if used else None


def _tensor_row(t: dict) -> str:
    return f"| {t['node']} | {t['role']} | {tuple(t['shape'])} | {t['dtype']} | {t['bytes']:,} |"


def _variant_rows(report: dict, variants: dict[str, dict]) -> list[str]:
    """The implemented levers, measured: the shipped program against each variant."""
    columns = {"shipped": report, **variants}
    peaks = {k: r["arena_peak"] for k, r in columns.items()}
    rows = [("planned arena", {k: sum(r["arena_bytes"]) for k, r in columns.items()}),
            ("bytes alive at the peak", {k: p["peak_live_bytes"] for k, p in peaks.items()}),
            *((f"… {role}", {k: p["by_role"][role] for k, p in peaks.items()})
              for role in ("kept activations", "kept masks", "backward temporaries")),
            ("runtime tables, 32-bit estimate",
             {k: r["runtime_bytes_estimate"] for k, r in columns.items()}),
            ("short of the part (fit check)",
             {k: r["fit"]["missing_bytes"] for k, r in columns.items()})]  # fmt: skip
    return [
        "**Levers, measured** on this program (export/training_passes.py): the shipped step "
        "(scheduled, bit-packed ReLU masks) against the same step not scheduled, not "
        "scheduled with its masks as bool bytes, and with int8 kept activations (opt-in):",
        "",
        "- bit-packed masks (`bit_packed_masks`): each ReLU mask the backward reads packed 8 "
        "to a byte after the forward makes it, unpacked right before its use;",
        "- scheduling (the default; `schedule=False`, `--no-schedule` undo it): aliases read "
        "directly instead of "
        "copied (`drop_aliases`); autograd's |x|, its gradient and a strided slice's gradient "
        "made with fewer full maps (export/training_folds.py); a trainable convolution's "
        "weight gradient before its input gradient (`split_conv_backward`); the loss's L1 "
        "terms computed where their maps are made and their gradients right before use "
        "(`early_forward_ops`, `late_backward_ops`); ops that free memory run first "
        "(export/memory_order.py); an elementwise op writes over the input it is the last to "
        "read (export/in_place.py); arena tensors of one shape at one offset are one runtime "
        "value (`share_arena_tensors`); banks that follow each other in the address map "
        "planned as one region, each tensor at its own offset (export/memory_plan.py, "
        "export/tensor_offsets.py);",
        "- int8 kept activations (`int8_activations=True`, `--kept-activations int8`): the "
        "float maps the "
        "gradients read kept int8 with a step per channel; the forward is unchanged, the "
        "gradients approximate (benchmarks/firmware/int8_activations.md).",
        "",
        "The masks and the scheduling give the same step bit for bit "
        "(tests/export/test_export_training.py).",
        "",
        "| | " + " | ".join(columns) + " |",
        "|---|" + "---:|" * len(columns),
        *(f"| {name} | " + " | ".join(f"{v[k]:,}" for k in columns) + " |" for name, v in rows),
        "",
    ]


def markdown(report: dict, device: str, batch: int, variants: dict[str, dict]) -> str:
    peak = report["arena_peak"]
    fit = report.get("fit", {})
    rows = sorted(peak["by_role"].items(), key=lambda kv: -kv[1])
    total = peak["peak_live_bytes"]
    out = [
        "# The EcoTTA adaptation step's arena at its peak",
        "",
        f"ResNet-20, `EcoTTAConfig.device()` (int8 frozen weights), batch {batch}, planned for "
        f"`{device}`. Written by `benchmarks/firmware/arena_peak.py` from the program's own "
        "tensor specs (`export/arena_peak.py`).",
        "",
        f"Planned arena {sum(report['arena_bytes']):,} B; at its peak (step "
        f"{peak['peak_step']:,} of {peak['steps']:,}) {total:,} B are alive:",
        "",
        "| role | bytes | share |",
        "|---|---:|---:|",
        *(f"| {role} | {b:,} | {b / total:.0%} |" for role, b in rows if b),
        "",
        "**Largest tensors alive there**",
        "",
        "| node | role | shape | dtype | bytes |",
        "|---|---|---|---|---:|",
        *(_tensor_row(t) for t in peak["largest"]),
        "",
        *_variant_rows(report, variants),
    ]
    best_name = "int8 kept activations (opt-in)"
    best = variants[best_name]["arena_peak"]
    out += [
        f"**What the lever not implemented would free** at the peak of the {best_name} step "
        f"({best['peak_live_bytes']:,} B alive; computed from its roles):",
        "",
        "| lever | bytes freed |",
        "|---|---:|",
        *(f"| {name} | {b:,} |" for name, b in levers(best)),
        "",
    ]
    forward = [t for t in best.get("forward_largest", []) if t["bytes"] >= 4096]
    if forward:
        maps = sum(t["bytes"] for t in forward if t["dtype"] == "float32")
        out += [
            f"**The forward alone** (before any backward tensor exists) peaks at step "
            f"{best['forward_peak_step']:,} of the {best_name} step with "
            f"{best['forward_peak_bytes']:,} B alive, {maps:,} B of them float32 maps of "
            "4 KB or more: however the backward is ordered, the step needs at least that much "
            "arena. Its tensors of 4 KB or more there:",
            "",
            "| node | role | shape | dtype | bytes |",
            "|---|---|---|---|---:|",
            *(_tensor_row(t) for t in forward),
            "",
        ]
    freed = sum(b for _, b in levers(best))
    left = best["peak_live_bytes"] - freed
    # The int8 step's own tables, measured by levers.sh; else the shipped step's (run.py).
    tables = measured_runtime_tables("ecotta_adapt_int8", HERE / "levers" / "results.json")
    tables_text = f"{tables:,} B measured for that step on the Cortex-M7 build, levers/results.md"
    if tables is None:
        tables = measured_runtime_tables()
        tables_text = (f"{tables:,} B measured for the shipped step on the Cortex-M7 build, "
                       "results.md" if tables else "not measured here: run run.py")  # fmt: skip
    out += [
        f"With it, {left:,} B would be alive at that peak, against "
        f"{F746_SRAM:,} B of STM32F746 SRAM that must also hold the method allocator's "
        f"tables ({tables_text}). The kept "
        "activations are each meta network's input (its 1×1 convolution's weight gradient "
        "reads it) and each part's output (its BN's γ gradient reads it); the masks are every "
        "frozen ReLU's, which the backward through the frozen parts needs (packed). "
        "Recomputing a "
        "part's forward during its backward would drop the masks and outputs of the parts not "
        "being differentiated at that moment.",
        "",
    ]
    if tables:
        from edgeadapt.export.firmware_measured import measurement_for

        firmware = measurement_for("Arm Cortex-M7")
        own = firmware.firmware_ram_bytes if firmware else 0
        need = left + tables + own
        verdict = (f"{need - F746_SRAM:,} B short: the runtime tables must shrink too (fewer "
                   "instructions: fused or larger kernels)" if need > F746_SRAM
                   else f"{F746_SRAM - need:,} B to spare")  # fmt: skip
        planned = sum(variants[best_name]["arena_bytes"])
        where = " and ".join(variants[best_name].get("arena_banks") or ["one arena"])
        out += [f"That arena plus those tables and the firmware's own RAM "
                f"({own:,} B: .data+.bss, reserved stack and temp pool): {need:,} B, "
                f"{verdict}. That is counted at that step only, so it bounds what the lever "
                f"could do, it is not a fit: the plan holds more than is alive at its peak "
                f"({planned:,} B planned in {where} against "
                f"{best['peak_live_bytes']:,} B alive: offsets that suit every step at once "
                "leave gaps at some), and with the peak lowered another step may set it.",
                ""]  # fmt: skip
        floor = best.get("forward_peak_bytes", 0)
        if floor:
            floor_need = floor + tables + own
            short = floor_need - F746_SRAM
            out += [f"Another step does: the forward's own peak ({floor:,} B, above). With "
                    f"the tables and the firmware's RAM that is {floor_need:,} B, "
                    + (f"{short:,} B more than the part has, whatever the backward does: the "
                       "forward's float32 maps must shrink too (int8 activations in the "
                       "frozen forward, or the first stage run in tiles)."
                       if short > 0 else f"{-short:,} B to spare.")
                    , ""]  # fmt: skip
    if fit:
        out += [f"Fit check of the shipped step: {fit.get('message', '')}", ""]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="stm32f746")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--out", default=str(HERE / "arena_peak"), help="stem of the .json/.md")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        report = export_report(args.device, args.batch, Path(tmp))
        variants = {label: variant_report(args.device, args.batch, Path(tmp), options)
                    for label, options in VARIANTS.items()}  # fmt: skip
    stem = Path(args.out)
    stem.parent.mkdir(parents=True, exist_ok=True)
    keep = {k: report.get(k) for k in ("arena_bytes", "arena_banks", "arena_peak", "fit", "settings",
                                       "input_shape", "file_bytes", "sha256")}  # fmt: skip
    keep["command"] = f"python benchmarks/firmware/arena_peak.py --device {args.device} " \
                      f"--batch {args.batch}"  # fmt: skip
    keep["variants"] = {label: {k: v.get(k) for k in ("arena_bytes", "arena_banks", "arena_peak",
                                                      "runtime_bytes_estimate", "fit", "notes")}
                        for label, v in variants.items()}  # fmt: skip
    stem.with_suffix(".json").write_text(json.dumps(keep, indent=2) + "\n")
    text = markdown(report, args.device, args.batch, variants)
    stem.with_suffix(".md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
