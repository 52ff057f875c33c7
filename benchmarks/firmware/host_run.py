"""The programs of run.py on the host build of the device: firmware_bridge/device's C++ server
on the executorch wheel's runtime, x86-64 Linux (what a Pi-class device runs), measured by the
firmware itself and asked over the protocol (GET_MEMORY, `BridgeClient.memory`).

    python benchmarks/firmware/host_run.py                  # the programs in build/mcu/programs
    python benchmarks/firmware/run.py --render              # results.md with these rows

For each program folder (as run.py: DIR/<name>/ with the exporter's .pte; the `_f746` twins
are skipped, they are the same graphs planned for another part) a fresh device process
(`edgeadapt-device --profile rpi4_4gb`, empty flash) gets the program uploaded (a training
program as the TRAINING target, an inference program as PROGRAM), runs it once (ADAPT or
INFER on one CIFAR-sized input, so the runtime has loaded the method), and reports its memory:
the planned arenas, the method allocator's used bytes (64-bit pointers: larger than on the
Cortex-M7) and the temp allocator's peak. Code size is the `.text` of the device binary and the
runtime libraries it loads (every kernel: no selective build on the host). The host build does
not measure its stack (the OS grows it).

Writes host.json here; run.py's results.md shows it beside the Cortex-M7 builds.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
PROFILE = "rpi4_4gb"  # a Linux board: the host build stands for one
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _build_host():
    path = REPO / "firmware_bridge" / "device" / "build_host.py"
    spec = importlib.util.spec_from_file_location("ea_device_build_host", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    missing = module.toolchain_missing()
    if missing:
        raise SystemExit(f"host device not built: missing {missing}")
    return module.build()


def text_bytes(binary: Path) -> dict[str, int]:
    """.text of the binary and of each executorch library it links (ldd), by file name."""
    libs = [binary]
    for line in subprocess.run(
        ["ldd", str(binary)], capture_output=True, text=True
    ).stdout.splitlines():
        parts = line.split("=>")
        if len(parts) == 2 and "executorch" in parts[0]:
            libs.append(Path(parts[1].split("(")[0].strip()))
    out = {}
    for lib in libs:
        rows = subprocess.run(["size", "-A", str(lib)], capture_output=True, text=True).stdout
        text = sum(int(w[1]) for w in (r.split() for r in rows.splitlines())
                   if len(w) >= 2 and w[0] == ".text")  # fmt: skip
        out[lib.name] = text
    return out


def measure(binary: Path, pte: Path, training: bool, lr: float) -> dict:
    """Upload one program to a fresh host device, run it once, ask GET_MEMORY."""
    from edgeadapt.firmware_bridge import BridgeClient
    from edgeadapt.firmware_bridge.emulator import EmulatorProcess
    from edgeadapt.firmware_bridge.emulator.payloads import pixels_to_u8_affine
    from edgeadapt.firmware_bridge.memory_report import memory_dict
    from edgeadapt.firmware_bridge.protocol import Target

    pixels = torch.from_numpy(
        np.random.default_rng(0).integers(0, 256, (1, 3, 32, 32), dtype=np.uint8)
    )
    data = pixels_to_u8_affine(pixels, MEAN, STD)
    with tempfile.TemporaryDirectory() as flash:
        args = (f"--flash-dir={flash}", f"--lr={lr}")
        with EmulatorProcess(PROFILE, *args, executable=binary) as dev:
            client = BridgeClient.open(dev.port, timeout=60.0, retries=1)
            try:
                client.connect()
                client.upload(
                    pte.read_bytes(), target=Target.TRAINING if training else Target.PROGRAM
                )
                if training:
                    client.adapt(data, timeout=120.0)
                else:
                    client.infer(data, timeout=120.0)
                report = memory_dict(client.memory())
            finally:
                client.close()
    return report["programs"]["training" if training else "inference"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--programs", type=Path, default=REPO / "build" / "mcu" / "programs")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--out", type=Path, default=HERE / "host.json")
    args = p.parse_args(argv)
    binary = _build_host()
    code = text_bytes(binary)
    folders = sorted(
        d for d in args.programs.iterdir() if d.is_dir() and not d.name.endswith("_f746")
    )
    rows = []
    for i, folder in enumerate(folders, 1):
        ptes = sorted(folder.glob("*.pte"))
        reports = sorted(folder.glob("*.json"))
        if not ptes or not reports:
            continue
        exported = json.loads(reports[0].read_text())
        training = exported["program"] == "adapt"
        print(f"[{i}/{len(folders)}] {folder.name}: {ptes[0].name}", flush=True)
        figures = measure(binary, ptes[0], training, args.lr)
        rows.append({"program": folder.name, "build": "host (x86-64)", "pte_bytes": ptes[0].stat().st_size,
                     "runtime_estimate": exported.get("runtime_bytes_estimate"), **figures})  # fmt: skip
        print(f"  {figures}", flush=True)
    result = {"binary": str(binary.relative_to(REPO)), "profile": PROFILE, "text_bytes": code,
              "code_bytes": sum(code.values()), "rows": rows}  # fmt: skip
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=1) + "\n")
    tmp.replace(args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
