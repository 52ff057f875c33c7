"""`edgeadapt device list|info|memory|deploy|infer|validate|stream|pull-adapter`: thin shells over
`BridgeClient` and `validation`. Wire it in with `register(subparsers)`.

Exit codes: 0 done, 2 a typed error (message on stderr), 4 `validate` found a mismatch.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

__all__ = ["register"]


def register(subparsers) -> argparse.ArgumentParser:
    """Add the `device` subcommand (with its own subcommands); returns its parser."""
    p = subparsers.add_parser("device", help="talk to a device (or the emulator) over a port")
    sub = p.add_subparsers(dest="device_command", required=True)

    q = sub.add_parser("list", help="serial ports whose USB ids match a device profile")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=_list)

    q = _with_port(sub.add_parser("info", help="handshake; print DEVICE_INFO and STATS as JSON"))
    q.set_defaults(func=_info)

    q = _with_port(sub.add_parser("memory", help="what the resident programs and the firmware "
                                  "take, as the device measured it (JSON)"))  # fmt: skip
    q.add_argument("--json", default=None, help="also write the report here")
    q.set_defaults(func=_memory)

    q = _with_port(sub.add_parser("deploy", help="upload programs / adapter, activated atomically"))
    q.add_argument("--program", help="inference program (.pte)")
    q.add_argument("--training", help="training program for ADAPT (.pte, program=adapt)")
    q.add_argument("--adapter", help="adapter blob (from pull-adapter) to push")
    q.set_defaults(func=_deploy)

    q = _with_port(sub.add_parser("infer", help="run one input (a tensor in a .pt file)"))
    q.add_argument("--input", required=True, help="a .pt file holding one program input tensor")
    q.add_argument("--json", default=None, help="write the output here")
    q.set_defaults(func=_infer)

    q = _with_port(sub.add_parser("validate", help="device outputs vs the host reference"))
    q.add_argument("--program", required=True, help="the .pte deployed on the device")
    q.add_argument("--n", type=int, default=8, help="random inputs to send")
    q.add_argument("--inputs", default=None, help="a .pt file with a list of inputs instead")
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--atol", type=float, default=1e-4)
    q.add_argument("--rtol", type=float, default=1e-3)
    q.add_argument("--model", default=None, help="also compare with this model in eager")
    q.add_argument("--checkpoint", default=None)
    q.add_argument("--num-classes", type=int, default=10)
    q.add_argument("--report", default=None, help="write the JSON report here")
    q.set_defaults(func=_validate)

    q = _with_port(sub.add_parser("stream", help="stream frames (N, C, H, W) from a .pt file"))
    q.add_argument("--input", required=True)
    q.add_argument("--adapt", action="store_true", help="adapt on every full batch")
    q.add_argument("--window", type=int, default=8)
    q.add_argument("--json", default=None)
    q.set_defaults(func=_stream)

    q = _with_port(sub.add_parser("pull-adapter", help="read the adapted weights back"))
    q.add_argument("--out", required=True, help="adapter blob (.bin) to write")
    q.add_argument("--state-dict", default=None, help="also write them as a torch state dict")
    q.set_defaults(func=_pull_adapter)
    return p


def _with_port(q: argparse.ArgumentParser) -> argparse.ArgumentParser:
    q.add_argument("--port", required=True, help="serial device or pyserial URL")
    q.add_argument("--baud", type=int, default=115200)
    q.add_argument("--timeout", type=float, default=2.0,
                   help="seconds of silence per attempt (a busy device sends keep-alives, so "
                   "long steps and commits need no larger value)")  # fmt: skip
    q.add_argument("--retries", type=int, default=3)
    q.add_argument("--busy-limit", type=float, default=600.0,
                   help="the longest one request may keep the device busy (seconds)")  # fmt: skip
    q.add_argument("--max-payload", type=int, default=4096)
    q.add_argument("--traffic-log", default=None, help="hex-dump all traffic to this file")
    return q


def _check_args(args: argparse.Namespace) -> None:
    """The values every subcommand has, checked before the port is opened (ConfigError
    naming the flag); each subcommand checks its own files the same way first."""
    from edgeadapt._cli_args import at_least, in_range, output_file

    from .protocol import DEFAULT_MAX_PAYLOAD, MIN_MAX_PAYLOAD

    at_least(args.baud, 1, "--baud")
    if args.timeout <= 0:
        from edgeadapt.errors import ConfigError

        raise ConfigError(f"--timeout must be > 0 seconds, got {args.timeout}")
    at_least(args.retries, 0, "--retries")
    if args.busy_limit <= 0:
        from edgeadapt.errors import ConfigError

        raise ConfigError(f"--busy-limit must be > 0 seconds, got {args.busy_limit}")
    in_range(args.max_payload, MIN_MAX_PAYLOAD, DEFAULT_MAX_PAYLOAD, "--max-payload")
    output_file(args.traffic_log, "--traffic-log")


def _open(args: argparse.Namespace):
    from .client import BridgeClient

    _check_args(args)
    log = open(args.traffic_log, "w") if args.traffic_log else None  # noqa: SIM115
    client = BridgeClient.open(
        args.port, baudrate=args.baud, timeout=args.timeout, retries=args.retries,
        max_payload=args.max_payload, traffic_log=log, busy_limit=args.busy_limit,
    )  # fmt: skip
    client.connect()
    return client


def _emit(data: Any, path: str | None) -> None:
    text = json.dumps(data, indent=2)
    print(text)
    if path:
        from edgeadapt._atomic import atomic_write_bytes

        atomic_write_bytes(path, (text + "\n").encode())


def _memory(args: argparse.Namespace) -> int:
    from .memory_report import memory_dict

    with _open(args) as dev:
        _emit(memory_dict(dev.memory()), args.json)
    return 0


def _list(args: argparse.Namespace) -> int:
    from edgeadapt.export.devices import list_profiles, load_profile

    from .discover import discover

    table = []
    for key in list_profiles():
        s = load_profile(key).serial
        if s.usb_vid is not None and s.usb_pid is not None:
            table.append((key, s.usb_vid, s.usb_pid))
    found = discover(table)
    if args.json:
        print(json.dumps([vars(m) for m in found], indent=2))
    else:
        for m in found:
            print(f"{m.port:20s} {m.name:16s} {m.vid:04x}:{m.pid:04x} {m.description}")
        if not found:
            print("no attached board matches a device profile (the emulator prints its pty)")
    return 0


def _info(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    with _open(args) as dev:
        _emit({"device_info": asdict(dev.info), "stats": asdict(dev.stats())}, None)
    return 0


def _deploy(args: argparse.Namespace) -> int:
    import zlib

    from edgeadapt._cli_args import input_file

    from .protocol import Target

    items = [(args.program, Target.PROGRAM), (args.training, Target.TRAINING),
             (args.adapter, Target.ADAPTER)]  # fmt: skip
    items = [(Path(p), t) for p, t in items if p]
    if not items:
        from edgeadapt.errors import ConfigError

        raise ConfigError("nothing to deploy: give --program, --training and/or --adapter")
    for path, target in items:
        input_file(path, f"--{target.name.lower()}")
    with _open(args) as dev:
        for path, target in items:
            blob = path.read_bytes()
            start = time.perf_counter()
            resumed = dev.upload(blob, target=target)
            print(
                f"{target.name.lower()}: {path} ({len(blob):,} B, crc {zlib.crc32(blob):08x}) "
                f"active in {time.perf_counter() - start:.2f} s"
                + (f", resumed at byte {resumed:,}" if resumed else "")
            )
    return 0


def _load_tensor(path: str):
    import torch

    return torch.load(path, map_location="cpu", weights_only=True)


def _infer(args: argparse.Namespace) -> int:
    from edgeadapt._cli_args import input_file, output_file

    from .validation import device_infer

    input_file(args.input, "--input")
    output_file(args.json, "--json")
    x = _load_tensor(args.input)
    with _open(args) as dev:
        y = device_infer(dev, x)
    _emit({"output": y.tolist(), "argmax": y.argmax(-1).tolist()}, args.json)
    return 0


def _validate(args: argparse.Namespace) -> int:
    import torch

    from edgeadapt.export.executorch_program import ExecuTorchRunner

    from .validation import program_input_shape, validate

    _check_validate_args(args)
    program = Path(args.program).read_bytes()
    if args.inputs:
        inputs = list(_load_tensor(args.inputs))
    else:
        shape = program_input_shape(program)
        gen = torch.Generator().manual_seed(args.seed)
        inputs = [torch.randn(shape, generator=gen) for _ in range(args.n)]
    host = ExecuTorchRunner.from_bytes(program, name=args.program)
    references = {"executorch_host": host.run}
    if args.model:
        from edgeadapt.export import inference_module
        from edgeadapt.models import create_model

        model = create_model(args.model, num_classes=args.num_classes, checkpoint=args.checkpoint)
        references["pytorch_eager"] = inference_module(model)[0]
    with _open(args) as dev:
        report = validate(dev, inputs, references, atol=args.atol, rtol=args.rtol)
        out = {"port": args.port, "program": args.program, "device": dev.info.profile}
    _emit(out | report.to_dict(), args.report)
    return 0 if report.passed else 4


def _check_validate_args(args: argparse.Namespace) -> None:
    from edgeadapt._cli_args import at_least, input_file, output_file
    from edgeadapt.errors import ConfigError

    input_file(args.program, "--program")
    input_file(args.inputs, "--inputs")
    at_least(args.n, 1, "--n")
    at_least(args.atol, 0, "--atol")
    at_least(args.rtol, 0, "--rtol")
    at_least(args.num_classes, 1, "--num-classes")
    if args.model and not args.checkpoint:
        # Untrained eager weights never match the exported program: a sure false mismatch.
        raise ConfigError(
            f"--model {args.model} needs --checkpoint: the eager reference must have the "
            "weights the program was exported with"
        )
    if args.checkpoint and not args.model:
        raise ConfigError("--checkpoint needs --model (the eager reference to build)")
    input_file(args.checkpoint, "--checkpoint")
    output_file(args.report, "--report")


def _stream(args: argparse.Namespace) -> int:
    from edgeadapt._cli_args import in_range, input_file, output_file

    from .emulator.payloads import decode_output, encode_raw, encode_u8_affine

    input_file(args.input, "--input")
    in_range(args.window, 1, 65535, "--window")  # STREAM_START carries it as a u16
    output_file(args.json, "--json")
    frames = _load_tensor(args.input)
    with _open(args) as dev:
        room = dev.link.max_payload - 8  # the session and the frame id come first
        data = [encode_raw(f[None]) if 4 * f.numel() <= room else encode_u8_affine(f[None])
                for f in frames]  # fmt: skip
        start = time.perf_counter()
        results = list(dev.stream(data, adapt=args.adapt, window=args.window))
        seconds = time.perf_counter() - start
    preds = [int(decode_output(r.output).argmax()) for r in results]
    _emit(
        {"frames": len(results), "seconds": seconds, "frames_per_second": len(results) / seconds,
         "adapted": sum(r.adapted for r in results), "predictions": preds},
        args.json,
    )  # fmt: skip
    return 0


def _pull_adapter(args: argparse.Namespace) -> int:
    from edgeadapt._atomic import atomic_path, atomic_write_bytes
    from edgeadapt._cli_args import output_file

    output_file(args.out, "--out")
    output_file(args.state_dict, "--state-dict")
    with _open(args) as dev:
        blob = dev.get_adapter()
    atomic_write_bytes(args.out, blob)
    print(f"wrote {args.out} ({len(blob):,} B)")
    if args.state_dict:
        import torch

        from .emulator.adapter_blob import blob_to_state

        with atomic_path(args.state_dict) as tmp:
            torch.save(blob_to_state(blob), tmp)
        print(f"wrote {args.state_dict}")
    return 0
