"""The `edgeadapt` command. Each subcommand is a thin shell over a library function."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from edgeadapt.errors import EdgeAdaptError

__all__ = ["main"]

ALL_METHODS = "source,norm,tent,eata,cotta,ecotta"


def _cmd_methods(args: argparse.Namespace) -> int:
    from edgeadapt.api import list_methods

    print("\n".join(list_methods()))
    return 0


def _cmd_models(args: argparse.Namespace) -> int:
    from edgeadapt.models import get_model_entry, list_models

    for name in list_models(args.pattern):
        print(f"{name:18s} {get_model_entry(name).description}")
    return 0


def _cmd_memory(args: argparse.Namespace) -> int:
    from edgeadapt.memory_report import format_memory_table, memory_report
    from edgeadapt.models import create_model

    model = create_model(args.model, num_classes=args.num_classes, checkpoint=args.checkpoint)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    shape = (args.batch, args.channels, args.input_size, args.input_size)
    rows = memory_report(model, methods, shape, frozen_bits=args.frozen_bits)
    print(
        f"One adaptation step of {args.model} at input {shape}, MiB (measured; analytic = planning model)"
    )
    print(format_memory_table(rows))
    if args.json:
        out = {
            "model": args.model,
            "input_shape": shape,
            "frozen_bits": args.frozen_bits,
            "rows": rows,
        }
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edgeadapt", description="Test-time adaptation for edge devices."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("methods", help="list the adaptation methods")
    p.set_defaults(func=_cmd_methods)

    p = sub.add_parser("models", help="list the registered backbones")
    p.add_argument("pattern", nargs="?", default="*", help="wildcard, e.g. 'resnet*'")
    p.set_defaults(func=_cmd_models)

    p = sub.add_parser("memory", help="measure one adaptation step's memory for several methods")
    p.add_argument("--model", default="resnet20")
    p.add_argument(
        "--checkpoint",
        default=None,
        help="weights to load (optional: memory does not depend on them)",
    )
    p.add_argument("--num-classes", type=int, default=10)
    p.add_argument(
        "--methods", default=ALL_METHODS, help=f"comma-separated (default {ALL_METHODS})"
    )
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--input-size", type=int, default=32)
    p.add_argument("--channels", type=int, default=3)
    p.add_argument(
        "--frozen-bits",
        type=int,
        default=32,
        choices=(8, 16, 32),
        help="frozen weights in the analytic model",
    )
    p.add_argument("--json", default=None, help="also write the rows as JSON here")
    p.set_defaults(func=_cmd_memory)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (EdgeAdaptError, FileNotFoundError) as exc:
        print(f"edgeadapt {args.command}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
