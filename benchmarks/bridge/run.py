"""Deploy, validate and a 200-frame adapting stream against the device emulator over a real
pseudo-terminal, then a fault-injection table. Writes results.json, results.md, bridge.png.

    OMP_NUM_THREADS=1 python benchmarks/bridge/run.py            # ResNet-20 EcoTTA (~5 min)
    OMP_NUM_THREADS=1 python benchmarks/bridge/run.py --quick    # tiny model, smoke test

The device is `python -m edgeadapt.firmware_bridge.emulator` in its own process; the host
talks to it with `BridgeClient` exactly as to a board on /dev/ttyACM0.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np
import torch

import edgeadapt
from edgeadapt.export import (
    ExecuTorchRunner,
    check_fit,
    inference_module,
    to_executorch,
    to_training_program,
)
from edgeadapt.firmware_bridge import BridgeClient, BridgeError, DeviceError, Target
from edgeadapt.firmware_bridge.emulator import EmulatorProcess, Faults, set_faults
from edgeadapt.firmware_bridge.emulator.adapter_blob import blob_to_state, state_to_blob
from edgeadapt.firmware_bridge.emulator.payloads import decode_output, pixels_to_u8_affine
from edgeadapt.firmware_bridge.validation import device_infer, validate

HERE = Path(__file__).resolve().parent
SHARED = HERE.parents[1].parent / "shared"
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def build(args, work: Path) -> dict:
    """The adapter, its two inference programs (a, b) and its training program."""
    if args.quick:
        model, size = edgeadapt.create_model("tiny_resnet"), 16
    else:
        model = edgeadapt.create_model(
            "resnet20", checkpoint=SHARED / "models/resnet20_cifar10jpeg.pt"
        )
        size = 32
    config = edgeadapt.EcoTTAConfig(optimizer="sgd", momentum=0.0, lr=args.lr, lean=False,
                                    recompute=False)  # fmt: skip
    shape = (args.batch, 3, size, size)
    example = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    adapter = edgeadapt.wrap(model, config, example_input=example[:2])
    t0 = time.perf_counter()
    a = to_executorch(adapter, example, work / "infer_a.pte")
    b = to_executorch(adapter, example, work / "infer_b.pte", backend="portable")
    train = to_training_program(adapter, example, work / "adapt.pte")
    print(f"exported 3 programs in {time.perf_counter() - t0:.0f} s")
    return {"model": model, "adapter": adapter, "config": config, "shape": shape,
            "a": a, "b": b, "train": train}  # fmt: skip


def images(n: int, size: int, corruption: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(clean uint8 NCHW, corrupted uint8 NCHW, labels) from the CIFAR-10 (JPEG) test split."""
    from edgeadapt.data import corrupt, load_image_folder, stream_order

    archive = SHARED / "data/cifar10/cifar10-jpeg.tar.gz"
    if size != 32 or not archive.exists():  # --quick, or no shared data: synthetic images
        gen = np.random.default_rng(0)
        x = gen.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
        return (
            _nchw(x),
            _nchw(np.clip(x + gen.normal(0, 40, x.shape), 0, 255).astype(np.uint8)),
            torch.zeros(n, dtype=torch.long),
        )
    x, y, _ = load_image_folder(archive, "test", limit_per_class=100, progress=False)
    order = stream_order(len(x), seed=0)[:n]
    x, y = x[order], y[order]
    return _nchw(x), _nchw(corrupt(x, corruption, 5, seed=0)), torch.from_numpy(y)


def _nchw(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def normalise(pixels: torch.Tensor) -> torch.Tensor:
    m, s = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)
    return (pixels.float() / 255 - m) / s


def deploy_and_validate(dev: BridgeClient, progs: dict, clean: torch.Tensor, n: int) -> dict:
    out = {}
    for key, target in (("a", Target.PROGRAM), ("train", Target.TRAINING)):
        blob = progs[key].path.read_bytes()
        t0 = time.perf_counter()
        dev.upload(blob, target=target)
        seconds = time.perf_counter() - t0
        out[f"upload_{key}"] = {"bytes": len(blob), "seconds": seconds,
                                "MB_per_s": len(blob) / seconds / 1e6}  # fmt: skip
    b = progs["shape"][0]
    batches = [normalise(clean[i * b : (i + 1) * b]) for i in range(n)]
    host = ExecuTorchRunner(progs["a"].path)
    eager = inference_module(progs["adapter"])[0]
    report = validate(dev, batches, {"executorch_host": host.run, "pytorch_eager": eager},
                      atol=1e-4, rtol=1e-3)  # fmt: skip
    out["validate"] = report.to_dict()
    return out


def stream(dev: BridgeClient, progs: dict, frames: torch.Tensor, labels: torch.Tensor) -> dict:
    """The device adapts on every batch of the stream; the eager adapter does the same on
    the host. Frames go as u8-affine, lossless for pixels (3,096 B for 32x32x3)."""
    dev.reset()
    before = blob_to_state(dev.get_adapter())
    data = [pixels_to_u8_affine(frames[i : i + 1], MEAN, STD) for i in range(len(frames))]
    b = progs["shape"][0]
    t0 = time.perf_counter()
    results = list(dev.stream(data, adapt=True, window=b))
    seconds = time.perf_counter() - t0
    got = torch.cat([decode_output(r.output, (1, -1)) for r in results])
    eager = progs["adapter"]
    eager.reset()
    source = progs["model"].eval()
    want, src = [], []
    with torch.no_grad():
        for i in range(0, len(frames) - len(frames) % b, b):
            x = normalise(frames[i : i + b])
            src.append(source(x))
            with torch.enable_grad():
                want.append(eager(x).detach())
    want, src = torch.cat(want), torch.cat(src)
    m = len(want)
    per_batch = [float((got[i : i + b] - want[i : i + b]).abs().max()) for i in range(0, m, b)]
    pulled = blob_to_state(dev.get_adapter())
    params = dict(eager.model.named_parameters())
    adapter_err = max(float((v - params[k].detach()).abs().max()) for k, v in pulled.items())
    moved = max(float((v - before[k]).abs().max()) for k, v in pulled.items())
    return {
        "frames": len(results), "seconds": seconds, "frames_per_second": len(results) / seconds,
        "adapted_frames": sum(r.adapted for r in results),
        "max_abs_logit_diff_vs_eager": max(per_batch), "per_batch_max_abs_diff": per_batch,
        "argmax_agreement_vs_eager": float((got[:m].argmax(1) == want.argmax(1)).float().mean()),
        "accuracy_device_adapting": float((got[:m].argmax(1) == labels[:m]).float().mean()),
        "accuracy_eager_adapting": float((want.argmax(1) == labels[:m]).float().mean()),
        "accuracy_source_no_adaptation": float((src.argmax(1) == labels[:m]).float().mean()),
        "adapter_tensors": len(pulled), "adapter_max_abs_diff_vs_eager": adapter_err,
        "adapter_max_abs_change_on_device": moved,
    }  # fmt: skip


LINE_FAULTS = [
    ("none", Faults()),
    ("drop", Faults(drop=1e-4)), ("drop", Faults(drop=1e-3)), ("drop", Faults(drop=1e-2)),
    ("corrupt", Faults(corrupt=1e-4)), ("corrupt", Faults(corrupt=1e-3)),
    ("corrupt", Faults(corrupt=1e-2)),
    ("delay 50 ms", Faults(delay=1e-4, delay_ms=50)), ("delay 50 ms", Faults(delay=1e-3, delay_ms=50)),
    ("drop+corrupt+delay", Faults(drop=3e-4, corrupt=3e-4, delay=3e-4, delay_ms=50)),
]  # fmt: skip


def fault_table(port: str, progs: dict, clean: torch.Tensor) -> list[dict]:
    """Each line fault: SET_ADAPTER (the adapter blob) + 2 validated INFERs (inputs staged
    by UPLOAD), 512-byte frames, timeout 0.25 s, 6 retries. Then power cuts mid-upload."""
    b = progs["shape"][0]
    inputs = [normalise(clean[i * b : (i + 1) * b]) for i in range(2)]
    host = ExecuTorchRunner(progs["a"].path)
    want = [host.run(x) for x in inputs]
    blob = state_to_blob({k: v.detach() for k, v in progs["adapter"].model.named_parameters()
                          if v.requires_grad})  # fmt: skip
    rows = []
    for i, (name, faults) in enumerate(LINE_FAULTS):
        faults = Faults(**{**vars(faults), "seed": i})
        rate = max(faults.drop, faults.corrupt, faults.delay)
        with BridgeClient.open(port, timeout=0.25, retries=6, max_payload=512) as dev:
            dev.connect()
            set_faults(dev, faults)
            t0 = time.perf_counter()
            try:
                dev.set_adapter(blob)
                ok = all(torch.equal(device_infer(dev, x), w) for x, w in zip(inputs, want))
                ok = ok and dev.get_adapter() == blob
                outcome = "correct" if ok else "WRONG RESULT"
            except BridgeError as exc:
                outcome = f"typed error: {type(exc).__name__}"
            seconds = time.perf_counter() - t0
            set_faults(dev, Faults(), timeout=0.1, retries=200)
            counters = dict(dev.link.counters)
        rows.append({"fault": name, "rate_per_byte": rate, "outcome": outcome,
                     "seconds_to_outcome": seconds, "host_counters": counters})  # fmt: skip
        print(f"  {name:20s} {rate:8.0e} {outcome:32s} {seconds:6.2f} s")
    a, b_blob = progs["a"].path.read_bytes(), progs["b"].path.read_bytes()
    for boot_ms, label in ((200, "power cut mid-upload, 0.2 s boot"),
                           (3000, "power cut mid-upload, 3 s boot")):  # fmt: skip
        with BridgeClient.open(port, timeout=0.5, retries=3) as dev:
            dev.connect()
            dev.upload(a)
            set_faults(dev, Faults(reset_at=0.5, boot_ms=boot_ms))
            t0 = time.perf_counter()
            try:
                dev.upload(b_blob)
                outcome = "correct (resumed by retries)"
            except BridgeError as exc:
                outcome = f"typed error: {type(exc).__name__}"
            seconds = time.perf_counter() - t0
            time.sleep(boot_ms / 1000)
            crc = dev.connect().program_crc
            active = {zlib.crc32(a): "old", zlib.crc32(b_blob): "new"}.get(crc, "OTHER")
            resumed = dev.upload(b_blob) if active == "old" else None
            set_faults(dev, Faults())
        if resumed is not None:
            outcome += f"; old program stayed active; re-upload resumed at byte {resumed:,}"
        rows.append({"fault": label, "rate_per_byte": None, "outcome": outcome,
                     "seconds_to_outcome": seconds, "active_after": active})  # fmt: skip
        print(f"  {label:34s} {outcome} {seconds:6.2f} s")
    return rows


def budget(progs: dict) -> dict:
    """Which profiles the (inference + training) programs fit, and what an STM32H743
    emulator answers when asked to take the inference program."""
    sizes = {
        "arena_bytes": [*progs["a"].arena_bytes, *progs["train"].arena_bytes],
        "constant_bytes": progs["a"].constant_bytes + progs["train"].constant_bytes,
    }
    fits = {p: check_fit(sizes, p).message for p in ("stm32h743", "esp32s3_n8r8", "rpi_zero_2w")}
    with EmulatorProcess("stm32h743") as emu, BridgeClient.open(emu.port, timeout=5) as dev:
        dev.connect()
        try:
            dev.upload(progs["a"].path.read_bytes())
            reply = "accepted"
        except DeviceError as exc:
            reply = f"ERROR {exc.code} ({type(exc).__name__}): {exc.text}"
    return {"sizes": sizes, "fit": fits, "stm32h743_emulator_reply": reply}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true", help="tiny model and synthetic frames")
    p.add_argument("--profile", default="rpi_zero_2w", help="emulated device")
    p.add_argument("--frames", type=int, default=200)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--validate", type=int, default=16, help="batches to validate")
    p.add_argument("--lr", type=float, default=5e-3)
    p.add_argument("--corruption", default="gaussian_noise")
    p.add_argument("--out", default=str(HERE))
    args = p.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    work = Path(tempfile.mkdtemp(prefix="bridge-bench-"))
    emu = EmulatorProcess(args.profile, f"--lr={args.lr}")  # boots while we export
    progs = build(args, work)
    size = progs["shape"][-1]
    clean, corrupted, labels = images(
        max(args.frames, args.validate * args.batch), size, args.corruption
    )
    results = {"model": "tiny_resnet" if args.quick else "resnet20 EcoTTA (resnet20_cifar10jpeg.pt)",
               "profile": args.profile, "batch": args.batch, "lr": args.lr,
               "corruption": f"{args.corruption}-5", "host": platform.processor() or platform.machine(),
               "programs": {k: {"bytes": progs[k].file_bytes, "arena_bytes": list(progs[k].arena_bytes),
                                "constant_bytes": progs[k].constant_bytes} for k in ("a", "b", "train")}}  # fmt: skip
    try:
        with BridgeClient.open(emu.port, timeout=30.0, retries=2) as dev:
            info = dev.connect()
            results["device_info"] = {"profile": info.profile, "ram_bytes": info.ram_bytes,
                                      "flash_bytes": info.flash_bytes}  # fmt: skip
            results |= deploy_and_validate(dev, progs, clean, args.validate)
            print("validate:", json.dumps(results["validate"]["references"]))
            results["stream"] = stream(dev, progs, corrupted[: args.frames], labels[: args.frames])
            print(
                "stream:",
                {k: v for k, v in results["stream"].items() if k != "per_batch_max_abs_diff"},
            )
        print("fault table:")
        results["faults"] = fault_table(emu.port, progs, clean)
    finally:
        emu.close()
    results["budget"] = budget(progs)
    print(results["budget"]["stm32h743_emulator_reply"])
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "results.md").write_text(markdown(results))
    plot(results, out / "bridge.png")
    print(f"wrote {out}/results.json, results.md, bridge.png")


def markdown(r: dict) -> str:
    v, s = r["validate"], r["stream"]
    lines = [
        f"# Bridge benchmark: {r['model']} on the emulator (profile {r['profile']}) over a pty",
        "",
        f"Batch {r['batch']}, SGD lr {r['lr']}, stream corruption {r['corruption']}.",
        "",
        "| step | result |", "|---|---|",
        f"| deploy inference program | {r['upload_a']['bytes']:,} B in {r['upload_a']['seconds']:.2f} s |",
        f"| deploy training program | {r['upload_train']['bytes']:,} B in {r['upload_train']['seconds']:.2f} s |",
    ]  # fmt: skip
    for name, ref in v["references"].items():
        lines.append(
            f"| validate vs {name} ({v['n_inputs']} batches) | max abs error {ref['max_abs_error']:.3g}, "
            f"argmax agreement {ref['argmax_agreement']:.3f}, {'pass' if ref['passed'] else 'FAIL'} |"
        )
    lines += [
        f"| stream with adaptation | {s['frames']} frames in {s['seconds']:.1f} s ({s['frames_per_second']:.2f} frames/s), {s['adapted_frames']} adapted |",
        f"| device vs eager adapter, logits | max abs diff {s['max_abs_logit_diff_vs_eager']:.3g}, argmax agreement {s['argmax_agreement_vs_eager']:.3f} |",
        f"| device vs eager adapter, pulled weights | max abs diff {s['adapter_max_abs_diff_vs_eager']:.3g} over {s['adapter_tensors']} tensors (largest change while adapting: {s['adapter_max_abs_change_on_device']:.3g}) |",
        f"| accuracy on the stream | device adapting {s['accuracy_device_adapting']:.3f}, eager adapting {s['accuracy_eager_adapting']:.3f}, source {s['accuracy_source_no_adaptation']:.3f} |",
        f"| memory budget | STM32H743 emulator: {r['budget']['stm32h743_emulator_reply']} |",
        "", "## Fault injection", "",
        "| fault | rate per byte | outcome | time to outcome (s) |", "|---|---|---|---|",
    ]  # fmt: skip
    for row in r["faults"]:
        rate = "—" if row["rate_per_byte"] is None else f"{row['rate_per_byte']:.0e}"
        lines.append(
            f"| {row['fault']} | {rate} | {row['outcome']} | {row['seconds_to_outcome']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def plot(r: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.2))
    diffs = r["stream"]["per_batch_max_abs_diff"]
    ax1.semilogy(range(1, len(diffs) + 1), [max(d, 1e-9) for d in diffs], "o-")
    ax1.set_xlabel("adaptation step (batch of the stream)")
    ax1.set_ylabel("max |device − eager| logit")
    ax1.set_title("device adapts as the host does")
    rows = r["faults"]
    labels = [
        f"{x['fault']}" + (f" {x['rate_per_byte']:.0e}" if x["rate_per_byte"] else "") for x in rows
    ]
    colors = ["tab:green" if x["outcome"].startswith("correct") else "tab:orange" for x in rows]
    ax2.barh(range(len(rows)), [x["seconds_to_outcome"] for x in rows], color=colors)
    ax2.set_yticks(range(len(rows)), labels, fontsize=7)
    ax2.invert_yaxis()
    ax2.set_xlabel("time to outcome (s); green: correct result, orange: typed error")
    ax2.set_title("fault injection")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
