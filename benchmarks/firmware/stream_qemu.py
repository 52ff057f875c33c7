"""The bridge protocol served by the Cortex-M7 firmware in QEMU (mps2-an500, UART0 on a
pseudo-terminal): deploy and validate a ResNet-20 EcoTTA adapter's programs with the unchanged
`edgeadapt device` commands, then a 100-frame adapting stream whose logits and pulled weights
are compared with the host's eager adapter. Writes stream_qemu.json and stream_qemu.md here.

    OMP_NUM_THREADS=1 python benchmarks/firmware/stream_qemu.py          # ~30 min on 2 busy cores
    python benchmarks/firmware/stream_qemu.py --frames 10 --out /tmp/q   # a shorter look
    OMP_NUM_THREADS=1 python benchmarks/firmware/stream_qemu.py --small  # device_small(), int8 kept

The firmware is firmware_bridge/device/mcu/qemu_server.py's build (../src's server over
hal_mps2.c), built for the operators of the two programs; the programs are made as the bridge
benchmark makes them (benchmarks/bridge/run.py): `edgeadapt.wrap` of the fine-tuned ResNet-20
with `EcoTTAConfig.device()` (frozen weights int8, plain SGD at its lr), exported at batch 1 --
the inference program with the portable kernels, the training program with
`to_training_program`. The stream is CIFAR-10 (JPEG) test images, shuffled once (seed 0),
with gaussian noise at severity 5, sent as u8-affine frames (lossless for pixels); the eager
adapter and the host's ExecuTorch runtime (TrainingRunner, plain SGD) see the same decoded
floats. The device's memory comes from its own report over the protocol (GET_MEMORY, asked
after the stream: `edgeadapt device memory`), checked against its ELF's section table; its
counters from GET_STATS.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import importlib.util
import io
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
SHARED = REPO.parent / "shared"
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _qemu_server():
    path = REPO / "firmware_bridge" / "device" / "mcu" / "qemu_server.py"
    spec = importlib.util.spec_from_file_location("ea_qemu_server", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def programs(work: Path, reuse: bool, size: int = 32, small: bool = False) -> dict:
    """The adapter and its two programs; with `reuse`, the programs and the adapter's initial
    state a previous run left in `work` (the adapter is rebuilt the same way, deterministically).
    `small`: EcoTTAConfig.device_small() and its step with int8 kept activations, the one that
    fits an STM32F746 (small_sram.sh)."""
    import edgeadapt
    from edgeadapt.export import to_executorch, to_training_program

    model = edgeadapt.create_model("resnet20",
                                   checkpoint=SHARED / "models/resnet20_cifar10jpeg.pt")  # fmt: skip
    config = edgeadapt.EcoTTAConfig.device_small() if small else edgeadapt.EcoTTAConfig.device()
    example = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    adapter = edgeadapt.wrap(model, config, example_input=example)
    files = [work / "infer.pte", work / "adapt.pte", work / "initial.pt"]
    if reuse and all(f.exists() for f in files):
        initial = torch.load(files[2], weights_only=True)
        return {"adapter": adapter, "config": config, "infer": files[0], "train": files[1],
                "initial": initial}  # fmt: skip
    t0 = time.perf_counter()
    # The training program's initial state is the adapter's when it is captured: keep it, so
    # the eager replay starts where the device does (exports may run the adapter).
    initial = copy.deepcopy(adapter.state_dict())
    train = to_training_program(adapter, example[:1], work / "adapt.pte", int8_activations=small)
    infer = to_executorch(adapter, example[:1], work / "infer.pte", backend="portable")
    print(f"exported in {time.perf_counter() - t0:.0f} s")
    torch.save(initial, files[2])
    return {"adapter": adapter, "config": config, "infer": infer.path, "train": train.path,
            "initial": initial}  # fmt: skip


def frames(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(uint8 NCHW corrupted test images, labels)."""
    from edgeadapt.data import corrupt, load_image_folder, stream_order

    archive = SHARED / "data/cifar10/cifar10-jpeg.tar.gz"
    x, y, _ = load_image_folder(archive, "test", limit_per_class=max(10, n // 5), progress=False)
    order = stream_order(len(x), seed=0)[:n]
    x, y = x[order], y[order]
    x = corrupt(x, "gaussian_noise", 5, seed=0)
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))), torch.from_numpy(y)


def cli(*argv: str) -> tuple[int, str]:
    """`edgeadapt ...` in this process, its stdout."""
    from edgeadapt.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(list(argv))
    return code, out.getvalue()


def run(args) -> dict:
    from edgeadapt.export.training import TrainingRunner
    from edgeadapt.firmware_bridge import BridgeClient
    from edgeadapt.firmware_bridge.emulator.adapter_blob import blob_to_state
    from edgeadapt.firmware_bridge.emulator.payloads import (
        decode_input,
        decode_output,
        pixels_to_u8_affine,
    )
    from edgeadapt.firmware_bridge.memory_report import memory_dict

    qs = _qemu_server()
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    progs = programs(work, args.reuse, small=args.small)
    adapter, lr = progs["adapter"], progs["config"].lr
    t0 = time.perf_counter()
    elf = qs.build_server([progs["infer"], progs["train"]])
    build_s = time.perf_counter() - t0
    pixels, labels = frames(args.frames)
    data = [pixels_to_u8_affine(pixels[i : i + 1], MEAN, STD) for i in range(len(pixels))]
    inputs = [decode_input(d, (1, 3, 32, 32)) for d in data]  # what the device computes on
    result: dict = {"firmware_build_seconds": round(build_s, 1)}
    with qs.QemuDevice(elf, lr=lr, slowdown=args.slowdown) as dev:
        port = dev.port
        t0 = time.perf_counter()
        code, out = cli("device", "deploy", "--port", port, "--program", str(progs["infer"]),
                        "--training", str(progs["train"]))  # fmt: skip
        result["deploy"] = {"exit": code, "seconds": round(time.perf_counter() - t0, 1),
                            "output": out.strip().splitlines(),
                            "bytes": progs["infer"].stat().st_size + progs["train"].stat().st_size}  # fmt: skip
        print(out)
        report = work / "validate.json"
        code, _ = cli("device", "validate", "--port", port, "--program", str(progs["infer"]),
                      "--n", str(args.validate), "--report", str(report))  # fmt: skip
        result["validate"] = {"exit": code, **json.loads(report.read_text())}
        print(json.dumps(result["validate"]))
        client = BridgeClient.open(port, timeout=args.timeout, retries=3)
        try:
            client.connect()
            client.reset()  # the adaptation state from the program, nothing run
            before = blob_to_state(client.get_adapter())
            t0 = time.perf_counter()
            results = list(client.stream(data, adapt=True, window=args.window))
            stream_s = time.perf_counter() - t0
            stats = client.stats()
            reported = memory_dict(client.memory())
            info = client.info
        finally:
            client.close()
        blob, state_path = work / "adapter.bin", work / "adapter.pt"
        code, _ = cli("device", "pull-adapter", "--port", port, "--out", str(blob),
                      "--state-dict", str(state_path))  # fmt: skip
        pulled = torch.load(state_path, weights_only=True)
        console = list(dev.output)
    got = torch.cat([decode_output(r.output, (1, -1)) for r in results])

    # The host: the eager adapter, and the same training program in the host's runtime.
    t0 = time.perf_counter()
    adapter.reset()
    adapter.load_state_dict(progs["initial"])
    want = []
    for x in inputs:
        with torch.enable_grad():
            want.append(adapter(x).detach())
    want = torch.cat(want)
    eager_params = {k: p.detach() for k, p in adapter.model.named_parameters() if p.requires_grad}
    runner = TrainingRunner.from_bytes(progs["train"].read_bytes(), lr=lr, momentum=0.0)
    host_rt = torch.cat([runner.step(x)[0].reshape(1, -1) for x in inputs])
    rt_params = runner.parameters()
    host_s = time.perf_counter() - t0
    drift = sensitivity(progs["train"], lr, inputs, host_rt)

    def worst(a: dict, b: dict) -> float:
        return max(float((a[k] - b[k].reshape(a[k].shape)).abs().max()) for k in a)

    per_frame = (got - want).abs().amax(1)
    result["stream"] = {
        "frames": len(results), "adapted": sum(r.adapted for r in results),
        "seconds": round(stream_s, 1), "seconds_per_frame": round(stream_s / len(results), 2),
        "max_abs_logit_diff_vs_eager": float(per_frame.max()),
        "mean_abs_logit_diff_vs_eager": float((got - want).abs().mean()),
        "argmax_agreement_vs_eager": float((got.argmax(1) == want.argmax(1)).float().mean()),
        "max_abs_logit_diff_vs_host_runtime": float((got - host_rt).abs().max()),
        "adapter_tensors": len(pulled),
        "adapter_max_abs_diff_vs_eager": worst(pulled, eager_params),
        "adapter_max_abs_diff_vs_host_runtime": worst(pulled, rt_params),
        "adapter_max_abs_change_on_device": worst(pulled, before),
        "accuracy_device": float((got.argmax(1) == labels).float().mean()),
        "accuracy_eager": float((want.argmax(1) == labels).float().mean()),
        "host_runtime_drift_from_1e-6_on_frame_1": {
            "max_abs_logit_diff": drift["max_abs_logit_diff"],
            "adapter_max_abs_diff": worst(drift["parameters"], rt_params),
            "per_frame_max_abs_diff": drift["per_frame_max_abs_diff"]},
        "host_reference_seconds": round(host_s, 1),
        "per_frame_max_abs_diff_vs_eager": [round(float(v), 8) for v in per_frame],
    }  # fmt: skip
    result["device"] = {"info": vars(info), "stats": vars(stats), "console": console,
                        "memory": memory(elf, qs), "reported": reported}  # fmt: skip
    result["meta"] = {
        "lr": lr, "frames": args.frames,
        "config": ("EcoTTAConfig.device_small(), int8 kept activations" if args.small
                   else "EcoTTAConfig.device()"),
        "window": args.window, "corruption": "gaussian_noise 5", "slowdown": args.slowdown,
        "timeout_s": args.timeout,
        "qemu": _first_line(["qemu-system-arm", "--version"]),
        "gcc": _first_line(["arm-none-eabi-gcc", "--version"]),
    }  # fmt: skip
    return result


def sensitivity(train: Path, lr: float, inputs: list[torch.Tensor], ref: torch.Tensor) -> dict:
    """How far the host's own runtime drifts from itself when the first frame changes by 1e-6
    (std of a Gaussian): the adaptation's amplification of rounding-sized differences, the
    yardstick for the device's distance from the host (`ref`: the host runtime's logits)."""
    from edgeadapt.export.training import TrainingRunner

    runner = TrainingRunner.from_bytes(train.read_bytes(), lr=lr, momentum=0.0)
    gen = torch.Generator().manual_seed(0)
    noisy = [inputs[0] + 1e-6 * torch.randn(inputs[0].shape, generator=gen), *inputs[1:]]
    got = torch.cat([runner.step(x)[0].reshape(1, -1) for x in noisy])
    per_frame = (got - ref).abs().amax(1)
    return {"max_abs_logit_diff": float(per_frame.max()),
            "per_frame_max_abs_diff": [round(float(v), 8) for v in per_frame],
            "parameters": runner.parameters()}  # fmt: skip


def add_sensitivity(args) -> dict:
    """The saved result with the host-drift row computed now (the programs of --work)."""
    from edgeadapt.export.training import TrainingRunner
    from edgeadapt.firmware_bridge.emulator.payloads import decode_input, pixels_to_u8_affine

    result = json.loads((args.out / "stream_qemu.json").read_text())
    progs = programs(args.work, reuse=True, small=args.small)
    pixels, _ = frames(args.frames)
    inputs = [decode_input(pixels_to_u8_affine(pixels[i : i + 1], MEAN, STD), (1, 3, 32, 32))
              for i in range(len(pixels))]  # fmt: skip
    lr = progs["config"].lr
    runner = TrainingRunner.from_bytes(progs["train"].read_bytes(), lr=lr, momentum=0.0)
    host_rt = torch.cat([runner.step(x)[0].reshape(1, -1) for x in inputs])
    drift = sensitivity(progs["train"], lr, inputs, host_rt)
    rt = runner.parameters()
    result["stream"]["host_runtime_drift_from_1e-6_on_frame_1"] = {
        "max_abs_logit_diff": drift["max_abs_logit_diff"],
        "adapter_max_abs_diff": max(float((drift["parameters"][k] - rt[k]).abs().max())
                                    for k in rt),
        "per_frame_max_abs_diff": drift["per_frame_max_abs_diff"]}  # fmt: skip
    return result


def memory(elf: Path, qs) -> dict:
    """What the firmware holds, from its ELF (sections) and its build's pool sizes."""
    a = subprocess.run(["arm-none-eabi-size", "-A", str(elf)], capture_output=True, text=True)
    sections = {p[0]: int(p[1]) for p in (ln.split() for ln in a.stdout.splitlines())
                if len(p) == 3 and p[0] in (".text", ".data", ".bss", ".stack", ".ea_flash")}  # fmt: skip
    return {"sections": sections, "pools_per_slot_and_buffers": qs.POOLS,
            "flash_region": qs.FLASH_REGION, "flash_advertised": qs.FLASH_CAPACITY}  # fmt: skip


def _first_line(cmd: list[str]) -> str:
    return subprocess.run(cmd, capture_output=True, text=True).stdout.splitlines()[0]


def markdown(r: dict) -> str:
    s, d, v, m = r["stream"], r["deploy"], r["validate"], r["device"]["memory"]
    ref = v["references"]["executorch_host"]
    h = s["host_runtime_drift_from_1e-6_on_frame_1"]
    diffs = s["per_frame_max_abs_diff_vs_eager"]
    first = next(
        (i for i, d in enumerate(diffs) if d > 1e-4), len(diffs)
    )  # 0-based: frames before it
    sec = m["sections"]
    return "\n".join([
        "# Bridge protocol on the Cortex-M7 firmware in QEMU (mps2-an500), measured", "",
        f"Written by `benchmarks/firmware/stream_qemu.py`. {r['meta']['qemu']}; "
        f"{r['meta']['gcc']}. The host talks to QEMU's UART0 on a pseudo-terminal with the "
        "unchanged `edgeadapt device` commands and `BridgeClient`.", "",
        "| step | result |", "|---|---|",
        f"| deploy (`edgeadapt device deploy`, {d['bytes']:,} B) | exit {d['exit']}, "
        f"{d['seconds']} s ({d['bytes'] / d['seconds'] / 1e3:.0f} kB/s incl. commits) |",
        f"| validate (`edgeadapt device validate --n {v['n_inputs']}`) | exit {v['exit']}, "
        f"max abs error vs host runtime {ref['max_abs_error']:.3g}, argmax agreement "
        f"{ref['argmax_agreement']:.2f} |",
        f"| {s['frames']}-frame adapting stream (window {r['meta']['window']}) | "
        f"{s['adapted']} frames adapted, {s['seconds']} s ({s['seconds_per_frame']} s/frame) |",
        f"| logits vs eager adapter | max abs diff {s['max_abs_logit_diff_vs_eager']:.3g}, "
        f"mean {s['mean_abs_logit_diff_vs_eager']:.3g}, argmax agreement "
        f"{s['argmax_agreement_vs_eager']:.2f} |",
        f"| logits vs host ExecuTorch runtime | max abs diff "
        f"{s['max_abs_logit_diff_vs_host_runtime']:.3g} |",
        f"| pulled adapter ({s['adapter_tensors']} tensors) vs eager | max abs diff "
        f"{s['adapter_max_abs_diff_vs_eager']:.3g} (moved {s['adapter_max_abs_change_on_device']:.3g}"
        " on the device) |",
        f"| pulled adapter vs host runtime | max abs diff "
        f"{s['adapter_max_abs_diff_vs_host_runtime']:.3g} |",
        f"| host runtime vs itself, frame 1 changed by 1e-6 | max abs logit diff "
        f"{h['max_abs_logit_diff']:.3g}, adapter {h['adapter_max_abs_diff']:.3g} |",
        f"| accuracy on the stream (device / eager) | {s['accuracy_device']:.2f} / "
        f"{s['accuracy_eager']:.2f} |", "",
        *reported_table(r["device"].get("reported")),
        f"Memory (ELF): code+constants {sec.get('.text', 0):,} B, .data {sec.get('.data', 0):,} B, "
        f"stack {sec.get('.stack', 0):,} B, static pools (.bss) {sec.get('.bss', 0):,} B, upload "
        f"flash region {sec.get('.ea_flash', 0):,} B ({m['flash_advertised']:,} B advertised, "
        "A/B). GET_STATS counters are in the JSON.", "",
        f"The device follows the eager adapter to 1e-4 in logits up to frame {first}; where it "
        "departs, compare the host's own runtime given a first frame changed by 1e-6 (the row "
        "above; per-frame figures of both in the JSON): the adaptation amplifies "
        "rounding-sized differences (on the device: newlib's libm, the portable kernels' "
        "summation order) at the same frames and by the same amounts."
        + (" With int8 kept activations the program's gradients are approximations by design "
           "(benchmarks/firmware/int8_activations.md), so it also departs from eager by "
           "those: the host's runtime, which steps the same program, is the reference for "
           "the device."
           if "int8 kept" in r["meta"]["config"] else ""), "",
        f"Configuration: {r['meta']['config']}, lr {r['meta']['lr']}, "
        f"{r['meta']['corruption']}, device --slowdown {r['meta']['slowdown']}, host timeout "
        f"{r['meta']['timeout_s']} s.", "",
    ])  # fmt: skip


def reported_table(rep: dict | None) -> list[str]:
    """Markdown rows for what the firmware reported over GET_MEMORY (none: an older result)."""
    if not rep:
        return []
    rows = ["What the firmware reports over the protocol (`edgeadapt device memory`, "
            "GET_MEMORY; measured by its allocators, its painted stack and its linker symbols):",
            "", "| program | planned arenas | method allocator (runtime tables) | temp peak "
            "| sum |", "|---|---:|---:|---:|---:|"]  # fmt: skip
    for role, p in rep["programs"].items():
        rows.append(f"| {role} | {p['planned_arena_bytes']:,} B | "
                    f"{p['method_allocator_used_bytes']:,} B | {p['temp_allocator_peak_bytes']:,} B "
                    f"| {p['program_ram_bytes']:,} B |")  # fmt: skip
    f = rep["firmware"]
    rows += ["", f"Firmware: stack high-water {f['stack_high_water_bytes']:,} of "
             f"{f['stack_bytes']:,} B; text {f['text_bytes']:,} B, data {f['data_bytes']:,} B, "
             f"bss {f['bss_bytes']:,} B (the static pools included).", ""]  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--frames", type=int, default=100)
    p.add_argument("--validate", type=int, default=4, help="inputs `device validate` sends")
    p.add_argument("--window", type=int, default=4)
    p.add_argument("--timeout", type=float, default=5.0, help="host silence timeout (s)")
    p.add_argument("--slowdown", type=float, default=4.0,
                   help="the firmware's IN_PROGRESS estimate multiplier (QEMU's speed varies)")  # fmt: skip
    p.add_argument("--work", type=Path, default=REPO / "build" / "mcu" / "stream_qemu")
    p.add_argument("--reuse", action="store_true", help="the programs a previous run exported")
    p.add_argument("--out", type=Path, default=None,
                   help="default: here, or small_sram/ with --small")  # fmt: skip
    p.add_argument("--small", action="store_true",
                   help="EcoTTAConfig.device_small()'s programs, the step with int8 kept "
                        "activations that fits an STM32F746 (small_sram.sh)")  # fmt: skip
    p.add_argument("--add-sensitivity", action="store_true",
                   help="only add the host-drift row to an existing --out result (with --reuse)")  # fmt: skip
    args = p.parse_args(argv)
    if args.out is None:
        args.out = HERE / "small_sram" if args.small else HERE
    if args.small and args.work == p.get_default("work"):
        args.work = args.work.with_name("stream_qemu_small")
    result = add_sensitivity(args) if args.add_sensitivity else run(args)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "stream_qemu.json").write_text(json.dumps(result, indent=1, default=str) + "\n")
    (args.out / "stream_qemu.md").write_text(markdown(result) + "\n")
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
