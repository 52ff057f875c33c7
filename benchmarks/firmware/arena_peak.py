"""What the EcoTTA adaptation step's arena holds at its peak, and what each memory lever
frees: the item behind the STM32F746 shortfall in results.md, measured on the program.

    python benchmarks/firmware/arena_peak.py [--device stm32f746] [--batch 1]

Exports the shipped adapt program (ResNet-20 from ../shared, `EcoTTAConfig.device()`: int8
frozen weights, batch 1) with `edgeadapt export --json`, whose report carries `arena_peak`
(export/arena_peak.py: the bytes alive where the most are, by role), and the same step with
its ReLU masks left unpacked (`to_training_program(..., pack_masks=False)`), so the one lever
the exporter implements (bit-packed masks) is measured, not computed. Writes
arena_peak.{json,md} beside this file. The warm-up is skipped: it changes weights, not
sizes. The other levers are computed from the measured roles: each line says which role it
acts on and by how much it would shrink it.
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


def unpacked_report(device: str, batch: int, out: Path) -> dict:
    """The same step exported with its ReLU masks as bool bytes (the exporter's default packs
    them): the baseline of the implemented lever."""
    import torch

    import edgeadapt
    from edgeadapt.export import to_training_program

    model = edgeadapt.create_model(
        "resnet20", checkpoint=shared_dir() / "models" / "resnet20_cifar10jpeg.pt"
    )
    example = torch.zeros(batch, 3, 32, 32)
    adapter = edgeadapt.wrap(model, edgeadapt.EcoTTAConfig.device(), example_input=example)
    report = to_training_program(adapter, example, out / "unpacked.pte", device=device,
                                 pack_masks=False)  # fmt: skip
    return report.to_dict()


def levers(peak: dict) -> list[tuple[str, int]]:
    """Bytes each lever not implemented yet would free at the peak, from the measured roles."""
    by_role = peak["by_role"]
    kept = by_role["kept activations"]
    # The backward needs at least the gradient it reads and the one it writes.
    temps = sorted((t["bytes"] for t in peak["largest"] if t["role"] == "backward temporaries"),
                   reverse=True)  # fmt: skip
    return [
        ("kept activations stored int8 (a quarter of fp32)", kept - kept // 4),
        ("backward temporaries down to the two largest (a gradient in, one out)",
         max(0, by_role["backward temporaries"] - sum(temps[:2]))),
    ]  # fmt: skip


def measured_runtime_tables() -> int | None:
    """The method allocator's bytes for ecotta_adapt on the Cortex-M7 build (results.json,
    written by run.py), or None where that run is not committed."""
    path = HERE / "results.json"
    if not path.is_file():
        return None
    rows = json.loads(path.read_text())["rows"]
    used = [r["method_used"] for r in rows
            if r["program"] == "ecotta_adapt" and r["build"] == "an500" and r["method_used"]]  # fmt: skip
    return used[0] if used else None


def _tensor_row(t: dict) -> str:
    return f"| {t['node']} | {t['role']} | {tuple(t['shape'])} | {t['dtype']} | {t['bytes']:,} |"


def _packing_rows(report: dict, unpacked: dict) -> list[str]:
    """The implemented lever, measured: the shipped program against its unpacked twin."""
    a, b = unpacked, report
    pa, pb = a["arena_peak"], b["arena_peak"]
    rows = [
        ("planned arena", sum(a["arena_bytes"]), sum(b["arena_bytes"])),
        ("bytes alive at the peak", pa["peak_live_bytes"], pb["peak_live_bytes"]),
        ("ReLU masks alive there", pa["by_role"]["kept masks"], pb["by_role"]["kept masks"]),
        ("runtime tables, 32-bit estimate", a["runtime_bytes_estimate"],
         b["runtime_bytes_estimate"]),
    ]  # fmt: skip
    return [
        "**Implemented: ReLU masks bit-packed** (`export/training_passes.py` "
        "`bit_packed_masks`, on by default): each mask the backward reads is packed 8 to a byte "
        "right after the forward makes it and unpacked right before its backward use; the "
        "step is bit-identical (`tests/export/test_export_training.py`). Measured on this "
        "program against the same step with bool masks:",
        "",
        "| | bool masks | bit-packed | change |",
        "|---|---:|---:|---:|",
        *(f"| {name} | {x:,} | {y:,} | {y - x:+,} |" for name, x, y in rows),
        "",
    ]


def markdown(report: dict, device: str, batch: int, unpacked: dict | None = None) -> str:
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
        *(_packing_rows(report, unpacked) if unpacked else []),
        "**What each lever not implemented would free at this peak** (computed from the "
        "roles above):",
        "",
        "| lever | bytes freed |",
        "|---|---:|",
        *(f"| {name} | {b:,} |" for name, b in levers(peak)),
        "",
    ]
    freed = sum(b for _, b in levers(peak))
    left = total - freed
    tables = measured_runtime_tables()
    tables_text = (f"{tables:,} B measured on the Cortex-M7 build, results.md"
                   if tables else "not measured here: run run.py")  # fmt: skip
    out += [
        f"Both together would leave {left:,} B alive at this peak, against "
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
        out += [f"Arena after both levers plus the tables and the firmware's own RAM "
                f"({own:,} B: .data+.bss, reserved stack and temp pool): {need:,} B, "
                f"{verdict}.", ""]  # fmt: skip
    if fit:
        out += [f"Fit check: {fit.get('message', '')}", ""]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="stm32f746")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--out", default=str(HERE / "arena_peak"), help="stem of the .json/.md")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        report = export_report(args.device, args.batch, Path(tmp))
        unpacked = unpacked_report(args.device, args.batch, Path(tmp))
    stem = Path(args.out)
    keep = {k: report.get(k) for k in ("arena_bytes", "arena_peak", "fit", "settings",
                                       "input_shape", "file_bytes", "sha256")}  # fmt: skip
    keep["command"] = f"python benchmarks/firmware/arena_peak.py --device {args.device} " \
                      f"--batch {args.batch}"  # fmt: skip
    keep["unpacked_masks"] = {k: unpacked.get(k) for k in ("arena_bytes", "arena_peak",
                                                           "runtime_bytes_estimate")}  # fmt: skip
    stem.with_suffix(".json").write_text(json.dumps(keep, indent=2) + "\n")
    text = markdown(report, args.device, args.batch, unpacked)
    stem.with_suffix(".md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
