"""What the EcoTTA adaptation step's arena holds at its peak, and what each memory lever
would free: the item behind the STM32F746 shortfall in results.md, measured on the program.

    python benchmarks/firmware/arena_peak.py [--device stm32f746] [--batch 1]

Exports the shipped adapt program (ResNet-20 from ../shared, `EcoTTAConfig.device()`: int8
frozen weights, batch 1) with `edgeadapt export --json`, whose report now carries
`arena_peak` (export/arena_peak.py: the bytes alive where the most are, by role), and writes
arena_peak.{json,md} beside this file. The warm-up is skipped: it changes weights, not sizes.
The levers are computed from the measured roles, not implemented: each line says which role
it acts on and by how much it would shrink it.
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


def levers(peak: dict) -> list[tuple[str, int]]:
    """Bytes each lever would free at the peak, from the measured roles."""
    by_role = peak["by_role"]
    kept, masks = by_role["kept activations"], by_role["kept masks"]
    # The backward needs at least the gradient it reads and the one it writes.
    temps = sorted((t["bytes"] for t in peak["largest"] if t["role"] == "backward temporaries"),
                   reverse=True)  # fmt: skip
    return [
        ("ReLU masks bit-packed (1 bit instead of a bool byte)", masks - masks // 8),
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


def markdown(report: dict, device: str, batch: int) -> str:
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
        "**What each lever would free at this peak** (computed from the roles above; none is "
        "implemented):",
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
        f"All three together would leave {left:,} B alive at this peak, against "
        f"{F746_SRAM:,} B of STM32F746 SRAM that must also hold the method allocator's "
        f"tables ({tables_text}). The kept "
        "activations are each meta network's input (its 1×1 convolution's weight gradient "
        "reads it) and each part's output (its BN's γ gradient reads it); the masks are every "
        "frozen ReLU's, which the backward through the frozen parts needs. Recomputing a "
        "part's forward during its backward would drop the masks and outputs of the parts not "
        "being differentiated at that moment.",
        "",
    ]
    if tables:
        need = left + tables
        verdict = (f"{need - F746_SRAM:,} B short: the runtime tables must shrink too (fewer "
                   "instructions: fused or larger kernels)" if need > F746_SRAM
                   else f"{F746_SRAM - need:,} B to spare")  # fmt: skip
        out += [f"Arena after the three levers plus the tables: {need:,} B, {verdict}.", ""]
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
    stem = Path(args.out)
    keep = {k: report.get(k) for k in ("arena_bytes", "arena_peak", "fit", "settings",
                                       "input_shape", "file_bytes", "sha256")}  # fmt: skip
    keep["command"] = f"python benchmarks/firmware/arena_peak.py --device {args.device} " \
                      f"--batch {args.batch}"  # fmt: skip
    stem.with_suffix(".json").write_text(json.dumps(keep, indent=2) + "\n")
    text = markdown(report, args.device, args.batch)
    stem.with_suffix(".md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
