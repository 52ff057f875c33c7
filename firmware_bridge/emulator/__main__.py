"""`python -m edgeadapt.firmware_bridge.emulator --profile stm32h743 [faults]`

Opens a pseudo-terminal, prints `PTY <slave path>` on stdout (and writes the path to
`--link-file`), and serves the bridge protocol on it until SIGINT/SIGTERM. Logs go to stderr.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading

from edgeadapt._atomic import atomic_write_bytes


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m edgeadapt.firmware_bridge.emulator",
        description="A device that speaks the edgeadapt bridge protocol on a pseudo-terminal.",
    )
    p.add_argument("--profile", required=True, help="device profile (devices/*.toml) to enforce")
    p.add_argument("--lr", type=float, default=5e-3, help="SGD step size of ADAPT")
    p.add_argument("--max-payload", type=int, default=4096)
    p.add_argument("--link-file", default=None, help="also write the pty path here")
    p.add_argument("--threads", type=int, default=1, help="CPU threads for the runtime")
    p.add_argument("--drop", type=float, default=0.0, help="per-byte drop probability")
    p.add_argument("--corrupt", type=float, default=0.0, help="per-byte corruption probability")
    p.add_argument("--delay", type=float, default=0.0, help="per-byte delay probability")
    p.add_argument("--delay-ms", type=int, default=0, help="how long a delayed byte waits")
    p.add_argument(
        "--reset-at", type=float, default=0.0, help="reboot once an upload is this fraction in"
    )
    p.add_argument("--reboot", type=float, default=0.0,
                   help="per-request probability of a power cut while it is served")  # fmt: skip
    p.add_argument("--boot-ms", type=int, default=200, help="how long a reboot keeps it deaf")
    p.add_argument("--flash-dir", default=None,
                   help="keep flash (programs, adapter, staged upload) in this folder, so it "
                   "survives restarts and kill -9; default: in memory")  # fmt: skip
    p.add_argument("--keepalive-ms", type=int, default=100,
                   help="IN_PROGRESS period while a request runs (0: never)")  # fmt: skip
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--log-level", default="WARNING")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr)  # a program, not a library
    import torch

    from edgeadapt.errors import EdgeAdaptError
    from edgeadapt.export.devices import load_profile

    from .device import EmulatedDevice
    from .faults import Faults, FaultyLine
    from .pty_port import PtyPort

    torch.set_num_threads(args.threads)
    try:
        profile = load_profile(args.profile)
        faults = Faults(
            drop=args.drop, corrupt=args.corrupt, delay=args.delay, delay_ms=args.delay_ms,
            reset_at=args.reset_at, reboot=args.reboot, boot_ms=args.boot_ms, seed=args.seed,
        )  # fmt: skip
    except (EdgeAdaptError, ValueError) as exc:
        print(f"emulator: {exc}", file=sys.stderr)
        return 2
    # Kernel libraries in the order ExecuTorchRunner loads them: initialising the runtime
    # before the quantized kernels are registered changes which kernels some ops get, and the
    # training step's last bits with them (the host reference would then differ).
    import executorch.kernels.quantized  # noqa: F401
    from executorch.runtime import Runtime

    Runtime.get()  # load the runtime before announcing the port: ready means ready
    port = PtyPort(FaultyLine(faults))
    device = EmulatedDevice(port, profile, lr=args.lr, max_payload=args.max_payload,
                            faults=faults, flash_dir=args.flash_dir,
                            keepalive_ms=args.keepalive_ms)  # fmt: skip
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    if args.link_file:
        atomic_write_bytes(args.link_file, (port.path + "\n").encode())
    print(f"PTY {port.path}", flush=True)
    try:
        device.serve_forever(stop)
    finally:
        port.close()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # skip the interpreter's slow teardown of torch and the runtime


if __name__ == "__main__":
    raise SystemExit(main())
