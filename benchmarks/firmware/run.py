"""The Cortex-M7 firmware, measured: each program built for each device profile
(firmware_bridge/device/mcu/build.py), run in QEMU's mps2-an500, and compared with the host.
Writes results.json and results.md here.

    python benchmarks/firmware/run.py                       # the programs in build/mcu/programs
    python benchmarks/firmware/run.py --programs DIR

Each program is a folder DIR/<name>/ holding the exporter's .pte and its --json report, made by
`sh benchmarks/firmware/programs.sh [DIR]` (the committed results' programs), which runs:

    C="--model resnet20 --checkpoint ../shared/models/resnet20_cifar10jpeg.pt --batch 1"
    edgeadapt export $C --method ecotta --no-warmup --program adapt --device stm32h743 \\
        --out DIR/ecotta_adapt --json DIR/ecotta_adapt/ecotta_adapt.json
    edgeadapt export $C --method ecotta --no-warmup --program infer --backend portable --quantize int8 \\
        --settings '{"frozen_bn":"batch","frozen_weights":"int8"}' --device stm32h743 ...
    edgeadapt export $C --method tent --program adapt --device stm32h743 ...
    edgeadapt export $C --method ecotta --no-warmup --program adapt \\
        --settings '{"frozen_weights":"fp32"}' ...
    edgeadapt export $C --method ecotta --no-warmup --program infer --backend portable \\
        --settings '{"frozen_bn":"batch","frozen_weights":"fp32"}' --device stm32h743 ...
    (and the two EcoTTA int8 programs with --device stm32f746 into DIR/<name>_f746: planned
    for its banks; the warm-up changes weights, not sizes)

Measured on the firmware, not estimated: the method allocator's used bytes after
`load_method`, the planned arenas (MethodMeta), the stack's high-water mark (painted at reset),
and the sections (arm-none-eabi-size). A training program runs `--steps` SGD steps on CIFAR-10
test images linked into flash, and its logits and final parameters are compared with the
host's Python ExecuTorch runtime stepping the same program with the same SGD
(TrainingRunner, momentum 0: docs/bridge-protocol.md §5).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np

from edgeadapt.export.firmware_measured import measurement_path, write_measurement

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
CORE = "Arm Cortex-M7"  # what mps2-an500 emulates, and the profiles' cpu.core it calibrates
F746_SRAM = 320 * 1024


def _build_module():
    spec = importlib.util.spec_from_file_location(
        "ea_mcu_build", REPO / "firmware_bridge" / "device" / "mcu" / "build.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def host_adapt(pte: Path, inputs: np.ndarray, steps: int, lr: float) -> dict:
    """The same training program stepped by the host's ExecuTorch runtime with plain SGD."""
    import torch

    from edgeadapt.export.training import TrainingRunner
    from edgeadapt.firmware_bridge.emulator.programs import program_parameters

    data = pte.read_bytes()
    order = list(program_parameters(data))
    runner = TrainingRunner.from_bytes(data, lr=lr, momentum=0.0)
    logits, kept, losses = [], [], []
    for s in range(steps):
        x = torch.from_numpy(inputs[s % len(inputs)][None].copy())
        out, loss, k = runner.step(x)
        logits.append(out.flatten().tolist())
        kept.append(k)
        losses.append(loss)
    params = runner.parameters()
    return {"logits": logits, "kept": kept, "loss": losses,
            "params": [params[k].flatten().tolist() for k in order],
            "initial": [v.flatten().tolist() for v in program_parameters(data).values()]}  # fmt: skip


def host_infer(pte: Path, inputs: np.ndarray) -> list[list[float]]:
    import torch

    from edgeadapt.export.executorch_program import ExecuTorchRunner

    runner = ExecuTorchRunner.from_bytes(pte.read_bytes())
    return [runner.run(torch.from_numpy(x[None].copy())).flatten().tolist() for x in inputs]


def _max_diff(a: list[list[float]], b: list[list[float]]) -> float:
    return max(float(np.max(np.abs(np.asarray(x) - np.asarray(y)))) for x, y in zip(a, b))


def compare(run, pte: Path, inputs: np.ndarray, steps: int, lr: float, training: bool) -> dict:
    if training:
        host = host_adapt(pte, inputs, steps, lr)
        moved_dev = max(float(np.max(np.abs(np.asarray(p) - np.asarray(q))))
                        for p, q in zip(run.params, host["initial"]))  # fmt: skip
        return {
            "steps": steps,
            "updates_device": sum(1 for s in run.steps if s["kept"] > 0),
            "updates_host": sum(1 for k in host["kept"] if k > 0),
            "kept_equal": [s["kept"] for s in run.steps] == host["kept"],
            "max_logit_diff": _max_diff(run.outputs, host["logits"]),
            "max_param_diff": _max_diff(run.params, host["params"]),
            "params_moved_device": moved_dev,
            "distinct_predictions": len({int(np.argmax(x)) for x in run.outputs}),
        }
    host = host_infer(pte, inputs)
    same = [int(np.argmax(a)) == int(np.argmax(b)) for a, b in zip(run.outputs, host)]
    return {"inputs": len(host), "max_output_diff": _max_diff(run.outputs, host),
            "identical_outputs": sum(np.array_equal(np.float32(a), np.float32(b))
                                     for a, b in zip(run.outputs, host)),
            "same_argmax": all(same), "same_argmax_inputs": sum(same)}  # fmt: skip


def row(b, run, report: dict | None) -> dict:
    """One program x build: sizes from the ELF, figures from the run."""
    s = b.sections
    blobs = b.pte_bytes + b.input_bytes
    arena_sections = {k: v for k, v in s.items() if k.startswith(".arena.")}
    r = {
        "program": b.program,
        "build": b.profile,
        "linked": b.elf is not None,
        "overflow": b.overflow,
        "pte_bytes": b.pte_bytes,
        "input_bytes": b.input_bytes,
        "code_bytes": s.get(".text", 0) + s.get(".ARM.exidx", 0) - blobs if s else None,
        "data_bytes": s.get(".data", 0) if s else None,
        "bss_bytes": s.get(".bss", 0) if s else None,
        "arena_sections": arena_sections,
        "stack_reserved": s.get(".stack", 0) if s else None,
        "runtime_estimate": (report or {}).get("runtime_bytes_estimate"),
        "arena_report": sum((report or {}).get("arena_bytes", []) or [0]),
    }
    if run is not None:
        r.update(
            ran=run.ok,
            planned=run.planned,
            arena_bytes=sum(run.planned),
            method_used=run.figures.get("method_used"),
            method_pool=run.figures.get("method_pool"),
            temp_used=run.figures.get("temp_used"),
            temp_pool=run.figures.get("temp_pool"),
            stack_high_water=run.figures.get("stack_high_water"),
            qemu_seconds=round(run.seconds, 1),
        )
        if not run.ok:
            r["error"] = run.error or run.text[-200:]
        high, size = run.figures.get("stack_high_water") or 0, r["stack_reserved"] or 0
        if size and high >= size:  # painted to the bottom: it overflowed, nothing here holds
            r["ran"], r["error"] = False, f"stack overflow: high-water {high:,} of {size:,} B"
    return r


def f746_budget(r: dict) -> dict:
    """SRAM a program needs on an STM32F746, item by item, from a measured run: the arenas,
    the method allocator's tables, the runtime's statics, and the stack and temp pool as this
    firmware reserves them (their high-water marks beside: what a leaner build could reserve);
    against 320 KB."""
    items = {
        "planned arenas": r["arena_bytes"],
        "method allocator (runtime tables)": r["method_used"],
        f"temp allocator pool (reserved; peak {r['temp_used']:,} B)": r["temp_pool"],
        ".data + .bss": r["data_bytes"] + r["bss_bytes"],
        f"stack (reserved; high-water {r['stack_high_water']:,} B)": r["stack_reserved"],
    }
    need = sum(items.values())
    return {"items": items, "need": need, "have": F746_SRAM, "short": max(0, need - F746_SRAM)}


def host_table(path: Path) -> list[str]:
    """The same programs on the host build (host_run.py's host.json), where it was measured."""
    if not path.is_file():
        return []
    h = json.loads(path.read_text())
    out = ["## Host build (x86-64 Linux, the executorch wheel's runtime)", "",
           f"Written by `benchmarks/firmware/host_run.py`: `{h['binary']}` (profile "
           f"`{h['profile']}`), each program uploaded over the bridge protocol and run once, "
           "its memory as the firmware reports it (GET_MEMORY). Code: .text of the binary and "
           f"the runtime libraries it loads, {h['code_bytes']:,} B (every kernel: no "
           "selective build). The method allocator holds 64-bit pointers here: compare the "
           "Cortex-M7 rows above for an MCU. Stack: not measured (the OS grows it).", "",
           "| program | .pte | arenas | method allocator used | runtime est. (32-bit) | "
           "temp peak |", "|---|---:|---:|---:|---:|---:|"]  # fmt: skip
    for r in h["rows"]:
        est = f"{r['runtime_estimate']:,}" if r.get("runtime_estimate") else "-"
        out.append(f"| {r['program']} | {r['pte_bytes']:,} | {r['planned_arena_bytes']:,} | "
                   f"{r['method_allocator_used_bytes']:,} | {est} | "
                   f"{r['temp_allocator_peak_bytes']:,} |")  # fmt: skip
    return [*out, ""]


def markdown(rows: list[dict], compares: dict, budgets: dict, meta: dict) -> str:
    """The results page; `meta["notes"]` (--note), where set, replaces the shipped programs'
    host table and notes (a run on other programs, into another --out)."""
    out = ["# Firmware on a Cortex-M7 (QEMU mps2-an500), measured", "",
           f"ExecuTorch {meta['executorch']} runtime built with {meta['gcc']} for Cortex-M7 "
           "(FPv5-SP, -Os, selective build of the portable kernels); run in "
           f"{meta['qemu']}. Written by `benchmarks/firmware/run.py`.", "",
           "Builds: `an500` links against QEMU's memories (4 MB flash, 4 MB RAM) to measure "
           "programs that fit no part; `stm32h743` / `stm32f746` link against the part's own "
           "flash and RAM banks (devices/*.toml), so a program that does not fit fails its "
           "link and the linker's overflow is the row.", "",
           "| program | build | .pte | arenas (MethodMeta) | method allocator used | runtime est. | "
           "stack high-water | code | .data+.bss | fits |",
           "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        if not r["linked"]:
            parts = []
            for k, v in r["overflow"].items():
                if k == "FLASH":  # the self-test's inputs are in flash too; a device's are not
                    left = v - r["input_bytes"]
                    parts.append(f"FLASH by {v:,} B with the {r['input_bytes']:,} B of test "
                                 "inputs (" + ("fits without them" if left <= 0 else
                                               f"{left:,} B without them") + ")")  # fmt: skip
                else:
                    parts.append(f"{k} by {v:,} B")
            over = ", ".join(parts)
            out.append(f"| {r['program']} | {r['build']} | {r['pte_bytes']:,} | "
                       f"{r['arena_report']:,} (plan) | - | {r['runtime_estimate'] or '-'} | - | - "
                       f"| - | **no**: link overflows {over} |")  # fmt: skip
            continue
        error = r.get("error") or ""
        fits = "yes (ran)" if r.get("ran") else f"linked; run failed: {error.splitlines()[-1:]}"
        if error.endswith("EA fault\n") or error.endswith("EA fault"):
            # ExecuTorch 1.5's Method::parse_values does not check its list allocations: when
            # the method allocator's pool runs out it writes through a null pointer, then a
            # BoxedEvalueList ET_CHECK aborts (a fault here) instead of returning an error.
            fits = ("**no**: linked, but the runtime aborts in `load_method` (the method "
                    "allocator's pool runs out inside `Method::parse_values`, which does not "
                    "check that allocation)")  # fmt: skip
        if error.startswith("load 4") and r.get("method_pool"):
            # runner.h kMethodFailed: load_method ran out of the pool left in the main bank
            fits = (
                f"**no**: linked, but `load_method` fails: {r['method_pool']:,} B left "
                "for the method allocator"
            )
            measured = next((x for x in rows if x["program"] == r["program"]
                             and x["build"] == "an500" and x.get("ran")), None)  # fmt: skip
            if measured:
                short = measured["method_used"] - r["method_pool"]
                fits += f", it needs {measured['method_used']:,} B ({short:,} B short)"
            elif r.get("runtime_estimate"):  # no measurement build of it: the estimate
                fits += f"; the 32-bit estimate of its tables is {r['runtime_estimate']:,} B"
        if r["build"] == "an500":
            fits = "measurement build"
        est = f"{r['runtime_estimate']:,}" if r["runtime_estimate"] else "-"
        # A load that failed used part of what it needed: not a figure to read as its need.
        loaded = r.get("ran") or r["build"] == "an500"
        used = f"{r.get('method_used') or 0:,}" if loaded else "-"
        stack = f"{r.get('stack_high_water') or 0:,}" if loaded else "-"
        out.append(f"| {r['program']} | {r['build']} | {r['pte_bytes']:,} | "
                   f"{r.get('arena_bytes', 0):,} | {used} | {est} | "
                   f"{stack} | {r['code_bytes']:,} | "
                   f"{r['data_bytes'] + r['bss_bytes']:,} | {fits} |")  # fmt: skip
    out += ["", "Code = .text less the linked-in .pte and inputs (runtime + kernels + runner); "
            ".bss excludes the arenas and the stack (own sections).", ""]  # fmt: skip
    notes = meta.get("notes")
    if not notes:
        out += host_table(HERE / "host.json")
    if compares:
        out += ["## Device vs host", ""]
        for name, c in compares.items():
            out.append(f"- **{name}**: " + ", ".join(f"{k} {v}" for k, v in c.items()))
        out.append("")
    if budgets:
        out += ["## STM32F746 (320 KB SRAM)", ""]
        for name, b in budgets.items():
            out.append(f"**{name}** needs {b['need']:,} B of SRAM, "
                       + ("fits." if not b["short"] else f"**{b['short']:,} B short**:"))  # fmt: skip
            for k, v in b["items"].items():
                out.append(f"- {k}: {v:,} B")
            out.append("")
    out += ["## Notes", "", *(f"- {n}" for n in notes), ""] if notes else NOTES
    return "\n".join(out)


NOTES = [
    "## Notes",
    "",
    "- Programs made by `sh benchmarks/firmware/programs.sh` (EcoTTA's with `--no-warmup`: "
    "sizes and memory do not depend on the warm-up). The training programs are the shipped "
    "configuration: scheduled (the default; `--no-schedule` exports autograd's graph as it "
    "is), ReLU masks bit-packed, fp32 kept activations, int8 frozen weights for "
    "`EcoTTAConfig.device()`, and planned with the banks that follow each other in the "
    "address map as one region and each tensor at its own offset (export/memory_plan.py).",
    "- The `_f746` programs are exported with `--device stm32f746`, the part alone (no "
    "SDRAM; the 32F746G-DISCOVERY board's is the `stm32f746g_disco` profile). Its DTCM, SRAM1 "
    "and SRAM2 follow each other (0x20000000 to 0x2004FFFF): a training program is planned "
    "and linked there as one 320 KB region; the inference program, not scheduled, per bank.",
    "- The int8 inference program (PT2E) runs requantizing kernels whose rounding differs from "
    "the host's Python runtime by whole steps of its output's int8 scale; the training "
    "programs agree to float rounding (the device-vs-host lines above).",
    "- What would close the STM32F746 gap for the EcoTTA step: the arena is the item "
    "(`arena_peak.md`: what it holds at its peak and what each lever frees); int8 kept "
    "activations (opt-in) are measured in `levers/results.md`. The runtime tables are second. "
    "With meta networks on stages 2 and 3 only (`EcoTTAConfig.device_small()`) and int8 kept "
    "activations the step fits the part and runs there: `small_sram/results.md`.",
    "",
]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--programs", type=Path, default=REPO / "build" / "mcu" / "programs")
    p.add_argument("--inputs", type=int, default=20)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--lr", type=float, default=1e-4,
                   help="SGD lr of the device-vs-host steps (the committed results: 1e-4; "
                        "EcoTTAConfig.device() adapts at 1e-3)")  # fmt: skip
    p.add_argument("--out", type=Path, default=HERE)
    p.add_argument("--note", action="append", default=[],
                   help="a note on these programs (repeatable); replaces the shipped "
                        "programs' host table and notes on the page")  # fmt: skip
    p.add_argument("--render", action="store_true",
                   help="only rewrite results.md from results.json")  # fmt: skip
    p.add_argument("--measurement", type=Path, default=None,
                   help="the fit check's calibration file to write (default: the shipped "
                        "devices/firmware_cortex_m7.json, when --out is this folder)")  # fmt: skip
    args = p.parse_args(argv)
    if args.measurement is None and args.out.resolve() == HERE:
        args.measurement = measurement_path(CORE)
    if args.render:
        saved = json.loads((args.out / "results.json").read_text())
        if args.note:
            saved["meta"]["notes"] = args.note
            (args.out / "results.json").write_text(json.dumps(saved, indent=1) + "\n")
        (args.out / "results.md").write_text(markdown(saved["rows"], saved["device_vs_host"],
                                                      saved["stm32f746"], saved["meta"]) + "\n")  # fmt: skip
        _write_measurement(args.measurement, saved["rows"], saved["meta"])
        return 0
    mcu = _build_module()
    inputs_path = mcu.cifar_inputs(mcu.build_dir() / "inputs" / f"cifar_{args.inputs}.bin",
                                   args.inputs)  # fmt: skip
    inputs = np.fromfile(inputs_path, dtype="<f4").reshape(args.inputs, 3, 32, 32)
    progs, reports = [], {}
    for folder in sorted(d for d in args.programs.iterdir() if d.is_dir()):
        ptes = sorted(folder.glob("*.pte"))
        jsons = sorted(folder.glob("*.json"))
        if not ptes or not jsons:
            continue
        report = json.loads(jsons[0].read_text())
        planned = report.get("planned_for", "stm32h743")
        profiles = (planned,) if folder.name.endswith("_f746") else ("an500", planned)
        training = report.get("program") == "adapt"
        progs.append(mcu.Program(folder.name, ptes[0], profiles, inputs_path,
                                 args.steps if training else 0, args.lr, jsons[0]))  # fmt: skip
        reports[folder.name] = report
    built = mcu.build(progs)
    rows, compares, budgets = [], {}, {}
    for b in built:
        prog = next(p for p in progs if p.name == b.program)
        run = mcu.run_firmware(b.elf) if b.elf else None
        r = row(b, run, reports[b.program])
        rows.append(r)
        print(json.dumps(r))
        # The measurement build, or a program's only build (one for the STM32F746 alone, run
        # inside the part's own 320 KB, which is what the comparison must show there).
        if run is not None and run.ok and (b.profile == "an500" or "an500" not in prog.profiles):
            compares[b.program] = compare(run, prog.pte, inputs, args.steps, args.lr,
                                          prog.steps > 0)  # fmt: skip
            budgets[b.program] = f746_budget(r)
            print(compares[b.program])
    meta = {
        "executorch": "cff6f4dd32 (1.5 line)",
        "gcc": subprocess.run(
            ["arm-none-eabi-gcc", "--version"], capture_output=True, text=True
        ).stdout.splitlines()[0],
        "qemu": subprocess.run(
            ["qemu-system-arm", "--version"], capture_output=True, text=True
        ).stdout.splitlines()[0],
        "host": platform.machine(),
        "inputs": f"{args.inputs} CIFAR-10 (JPEG) test images, shuffled with seed 0",
        "steps": args.steps,
        "lr": args.lr,
        **({"notes": args.note} if args.note else {}),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(
        {"meta": meta, "rows": rows, "device_vs_host": compares, "stm32f746": budgets},
        indent=1) + "\n")  # fmt: skip
    (args.out / "results.md").write_text(markdown(rows, compares, budgets, meta) + "\n")
    print(f"wrote {args.out / 'results.json'} and results.md")
    _write_measurement(args.measurement, rows, meta)
    return 0


def _write_measurement(path: Path | None, rows: list[dict], meta: dict) -> None:
    """The figures `check_fit` uses for Cortex-M7 profiles: the measurement build's rows."""
    if path is None:
        return
    ran = [r for r in rows if r["build"] == "an500" and r.get("method_used")]
    source = (f"benchmarks/firmware/results.md: ExecuTorch {meta['executorch']}, "
              f"arm-none-eabi-gcc {meta['gcc'].split(')')[-1].split()[0]} -Os, QEMU mps2-an500")  # fmt: skip
    write_measurement(path, CORE, source, ran)
    print(f"wrote {path}")


if __name__ == "__main__":
    sys.exit(main())
