"""`edgeadapt export`: a thin shell over `edgeadapt.export.export_program` and `check_fit`.

Wire it in with `export.command.register(subparsers)`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

__all__ = ["register"]


def register(subparsers) -> argparse.ArgumentParser:
    """Add the `export` subcommand to an argparse subparsers object; returns its parser."""
    p = subparsers.add_parser(
        "export", help="export a model or adapter as a verified ONNX / ExecuTorch program"
    )
    p.add_argument("--model", default="resnet20")
    p.add_argument("--checkpoint", default=None, help="backbone weights")
    p.add_argument("--num-classes", type=int, default=10)
    p.add_argument(
        "--method", default="source", help="source (the plain model), ecotta, tent, norm, ..."
    )
    p.add_argument("--adapter", default=None, help="saved adapter weights (adapter.save) to load")
    p.add_argument("--format", choices=("onnx", "executorch"), default="executorch")
    p.add_argument("--program", choices=("infer", "adapt"), default="infer")
    p.add_argument("--backend", choices=("xnnpack", "portable"), default="xnnpack")
    p.add_argument("--quantize", choices=("int8",), default=None)
    p.add_argument(
        "--statistics",
        choices=("adapter", "running"),
        default="adapter",
        help="BNs on the input batch's statistics as the adapter predicts, or on running ones",
    )
    p.add_argument("--batch", type=int, default=16, help="the program's fixed batch size")
    p.add_argument("--input-size", type=int, default=32)
    p.add_argument("--channels", type=int, default=3)
    p.add_argument("--device", default=None, help="device profile to check the fit against")
    p.add_argument("--out", default=".", help="output folder")
    p.add_argument("--json", default=None, help="write the report as JSON here")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Build the model (and adapter), export, verify, check the fit; 0, or 3 when it does
    not fit the device."""
    import torch

    from edgeadapt.api import config_for, load_adapter, wrap
    from edgeadapt.export.api import ExportRequest, export_program
    from edgeadapt.export.fit import check_fit
    from edgeadapt.models import create_model

    request = ExportRequest(
        format=args.format,
        program=args.program,
        backend=args.backend,
        quantize=args.quantize,
        statistics=args.statistics,
    )
    request.check(args.method)
    if args.device and args.format != "executorch":
        from edgeadapt.export.errors import UnsupportedExportError

        raise UnsupportedExportError("--device needs --format executorch (ONNX has no memory plan)")
    gen = torch.Generator().manual_seed(0)
    shape = (args.batch, args.channels, args.input_size, args.input_size)
    example = torch.randn(shape, generator=gen)
    model = create_model(args.model, num_classes=args.num_classes, checkpoint=args.checkpoint)
    if args.adapter:
        model = load_adapter(model, args.adapter, example_input=example[:2])
    elif args.method != "source":
        model = wrap(model, config_for(args.method), example_input=example[:2])
    suffix = "onnx" if args.format == "onnx" else "pte"
    quant = f"_{args.quantize}" if args.quantize else ""
    path = Path(args.out) / f"{args.model}_{args.method}_{args.program}{quant}.{suffix}"
    report = export_program(model, example, path, request)
    out = report.to_dict()
    print(
        f"wrote {path} ({report.file_bytes:,} B), max |error| vs eager {report.max_abs_error:.3g}"
    )
    if report.arena_bytes:
        print(f"arena {report.total_arena_bytes:,} B, constants {report.constant_bytes:,} B")
    code = 0
    if args.device:
        fit = check_fit(report, args.device)
        out["fit"] = fit.to_dict()
        print(fit.message)
        code = 0 if fit.fits else 3
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
        print(f"wrote {args.json}")
    return code
