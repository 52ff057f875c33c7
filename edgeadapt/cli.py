"""The `edgeadapt` command. Each subcommand is a thin shell over a library function."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

from edgeadapt._extras import as_missing_extra
from edgeadapt.errors import ConfigError, EdgeAdaptError

__all__ = ["main"]

ALL_METHODS = "source,norm,tent,eata,cotta,ecotta"

SHOW_WARNINGS_ENV = "EDGEADAPT_SHOW_WARNINGS"
# Libraries whose warnings are about their own internals (executorch's "Mutation on a buffer
# in the model is detected", torch's pytree deprecations, torchao's missing CUDA kernels): a
# screenful on every export that the user can do nothing about. edgeadapt's own warnings are
# never hidden.
THIRD_PARTY = (
    "torch",
    "torchvision",
    "torchao",
    "executorch",
    "onnx",
    "onnxscript",
    "onnxruntime",
    "coremltools",
)
# Their warnings by the module they are attributed to; copyreg too: torch's deprecated classes
# warn when copied or unpickled, attributed to copyreg (the caller of their __new__).
THIRD_PARTY_WARNINGS = rf"({'|'.join(THIRD_PARTY)}|copyreg)(\.|$)"
_VERBOSE_HELP = (
    f"show third-party warnings (torch, executorch, onnx, ...); or set {SHOW_WARNINGS_ENV}=1"
)


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
    from edgeadapt.memory_report import format_memory_table, format_peak_breakdown, memory_report
    from edgeadapt.models import create_model

    model = create_model(args.model, num_classes=args.num_classes, checkpoint=args.checkpoint)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    shape = (args.batch, args.channels, args.input_size, args.input_size)
    rss_model = None if args.no_rss else args.model
    rows = memory_report(
        model,
        methods,
        shape,
        frozen_bits=args.frozen_bits,
        rss_model=rss_model,
        num_classes=args.num_classes,
    )
    print(
        f"One adaptation step of {args.model} at input {shape}, MiB. Peak step: the most bytes "
        "alive at once during the step (forward, backward, recomputation, optimizer), tracked "
        "per tensor and as a fresh process's resident set (RSS); ratios tracked / RSS. Kept "
        "for backward: what autograd holds between forward and backward (analytic: the "
        "planning model)."
    )
    print(format_memory_table(rows))
    print("\nWhere the tracked peak is: most MiB alive in each phase, and at the peak by category")
    print(format_peak_breakdown(rows))
    for r in rows:
        if r.get("rss_error"):
            print(f"{r['method']}: no RSS ({r['rss_error']})", file=sys.stderr)
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


def _write_outputs(args: argparse.Namespace, results, table: str, title: str, extra: dict) -> None:
    from edgeadapt.bench.report import plot_results

    if args.json:
        payload = {**extra, "results": [r.to_dict() for r in results], "table": table}
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(payload, indent=2) + "\n")
        print(f"wrote {args.json}")
    if args.markdown:
        Path(args.markdown).write_text(f"{title}\n\n{table}\n")
        print(f"wrote {args.markdown}")
    if args.plot:
        print(f"wrote {plot_results(results, args.plot, title)}")


def _cmd_demo(args: argparse.Namespace) -> int:
    from edgeadapt._extras import require
    from edgeadapt.bench.demo import run_demo

    require("sklearn", "the demo (its digits ship with scikit-learn)")
    if args.plot is not None:
        require("matplotlib", "--plot")
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    results, table = run_demo(methods, severity=args.severity, progress=not args.quiet)
    print(table)
    _write_outputs(
        args, results, table, "edgeadapt demo: digits, continual corruptions", {"demo": "digits"}
    )
    return 0


def _check_bench_data(args: argparse.Namespace) -> None:
    """Where the corrupted images come from, and the extras that needs, before anything loads."""
    from edgeadapt._extras import require
    from edgeadapt.bench.cifar import default_clean_source

    if args.data is None and args.source is None and default_clean_source() is None:
        raise ConfigError(
            "bench needs images: pass --data DIR (a CIFAR-10-C release: <corruption>.npy + "
            "labels.npy) or --source PATH (a clean CIFAR-10 archive or folder to corrupt)"
        )
    if args.data is None:
        require("scipy", "corrupting clean images (bench without --data)")
    if args.plot is not None:
        require("matplotlib", "--plot")


def _cmd_bench(args: argparse.Namespace) -> int:
    from edgeadapt.bench.cifar import describe_stream, run_cifar10c
    from edgeadapt.bench.report import markdown_report, setting_label
    from edgeadapt.config import settings_from_json
    from edgeadapt.data import CORRUPTIONS, EXTRA_CORRUPTIONS, check_stream
    from edgeadapt.models import create_model

    if args.dataset != "cifar10-c":
        raise EdgeAdaptError(f"unknown dataset {args.dataset!r}; supported: cifar10-c")
    # Before the model and data load: a bad --stream/--delta fails in a second, not an hour.
    stream = describe_stream(
        args.stream, check_stream(args.stream, args.delta), args.seed, args.round_order
    )
    named = {"standard": list(CORRUPTIONS), "extra": list(EXTRA_CORRUPTIONS)}
    corruptions = named.get(args.corruptions) or [
        c.strip() for c in args.corruptions.split(",") if c.strip()
    ]
    overrides = settings_from_json(args.overrides, "--overrides")  # before the slow part
    if args.warmup_cache is not None:
        from edgeadapt._cli_args import output_folder

        output_folder(args.warmup_cache, "--warmup-cache")
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if args.checkpoint is None:
        # An untrained network errs at chance (about 90% on CIFAR-10) whatever the method:
        # a table of it looks like results and means nothing.
        raise ConfigError(
            f"bench needs the trained weights of --model {args.model}: pass --checkpoint PATH "
            "(e.g. ../shared/models/resnet20_cifar10jpeg.pt for resnet20)"
        )
    _check_bench_data(args)
    setup_source = _bench_setup_source(args, methods)  # missing source images fail now
    model = create_model(args.model, checkpoint=args.checkpoint)
    results = run_cifar10c(
        model, methods, corruptions=corruptions, protocol=args.protocol, rounds=args.rounds,
        severity=args.severity, batch_size=args.batch, release_dir=args.data, clean_source=args.source,
        n_images=args.n_images, warmup_steps=args.warmup_steps, overrides=overrides, seed=args.seed,
        device=args.device, progress=not args.quiet, state_dir=args.state_dir, stream=args.stream,
        delta=args.delta, source_data=setup_source, no_warmup=args.no_warmup,
        warmup_cache=args.warmup_cache, round_order=args.round_order,
    )  # fmt: skip
    table = markdown_report(results)  # with several rounds, the per-round means too
    title = f"{args.model}, CIFAR-10-C severity {args.severity}, {args.protocol}, " + setting_label(
        args.batch, stream
    )
    print(f"{title}\n\n{table}")
    # What each adaptation step saw, at the top of the file (each result row repeats it).
    setting = {"batch_size": args.batch, "stream": stream}
    _write_outputs(args, results, table, title, {**setting, "args": vars(args) | {"func": None}})
    return 0


def _bench_setup_source(args: argparse.Namespace, methods: list[str]):
    """Where EcoTTA's warm-up and EATA's Fisher read their images: --source-data, else
    --source's train split, else ../shared where present; None when no method needs them."""
    from edgeadapt.setup_data import find_source_data, methods_needing_source

    if args.no_warmup and args.source_data:
        raise ConfigError("--source-data and --no-warmup exclude each other; pass one")
    needs = methods_needing_source(methods, warmup_steps=args.warmup_steps,
                                   no_warmup=args.no_warmup)  # fmt: skip
    if not needs:
        return None
    given, option = (
        (args.source_data, "--source-data") if args.source_data else (args.source, "--source")
    )
    return find_source_data(
        given, needed_by=needs, option=option if given else "--source-data", skip="--no-warmup",
        alternative="or --source (its train split)",
    )  # fmt: skip


def _add_outputs(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", default=None, help="write results as JSON here")
    p.add_argument("--markdown", default=None, help="write the table as Markdown here")
    p.add_argument("--plot", default=None, help="write a PNG of the results here")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def build_parser() -> argparse.ArgumentParser:
    from edgeadapt import __version__

    parser = argparse.ArgumentParser(
        prog="edgeadapt", description="Test-time adaptation for edge devices."
    )
    parser.add_argument("--version", action="version", version=f"edgeadapt {__version__}")
    parser.add_argument("--verbose", action="store_true", help=_VERBOSE_HELP)
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
    p.add_argument(
        "--no-rss",
        action="store_true",
        help="skip the fresh-process resident-set measurement (one process per method)",
    )
    p.add_argument("--json", default=None, help="also write the rows as JSON here")
    p.set_defaults(func=_cmd_memory)

    p = sub.add_parser(
        "demo", help="the whole pipeline on scikit-learn's digits, no download (< 2 min)"
    )
    p.add_argument("--methods", default="source,norm,tent,ecotta")
    p.add_argument("--severity", type=int, default=3)
    _add_outputs(p)
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("bench", help="continual test-time adaptation benchmark (CIFAR-10-C)")
    p.add_argument("--dataset", default="cifar10-c")
    p.add_argument("--model", default="resnet20")
    p.add_argument("--checkpoint", default=None, help="the model's trained weights (required)")
    p.add_argument("--methods", default=ALL_METHODS)
    p.add_argument(
        "--protocol", default="continual", choices=("continual", "reset", "long-term", "gradual")
    )
    p.add_argument(
        "--rounds",
        type=int,
        default=None,
        help="repetitions of the sequence (default: 10 for long-term, else 1)",
    )
    p.add_argument("--severity", type=int, default=5)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument(
        "--corruptions",
        default="standard",
        help="'standard' (the 15), 'extra' (the 4 for tuning), or a list",
    )
    p.add_argument(
        "--data", default=None, help="a CIFAR-10-C release folder (<corruption>.npy + labels.npy)"
    )
    p.add_argument(
        "--source",
        default=None,
        help="clean CIFAR-10 (archive or folder) to corrupt; default: ../shared's JPEG set",
    )
    p.add_argument(
        "--n-images", type=int, default=None, help="use the first N images of the stream order"
    )
    p.add_argument(
        "--stream",
        default="iid",
        help="image order in each domain: 'iid' (one fixed shuffle) or 'correlated' (runs of "
        "one class, the Dirichlet order of NOTE/RoTTA, drawn per domain)",
    )
    p.add_argument(
        "--delta",
        type=float,
        default=None,
        help="Dirichlet concentration of --stream correlated (default 0.1; smaller: longer runs)",
    )
    p.add_argument(
        "--round-order",
        choices=["redraw", "repeat"],
        default="redraw",
        help="with several rounds of --stream correlated: draw each round's label order afresh "
        "(default) or replay the first round's stream exactly (round-to-round change is then "
        "the adapter's drift alone)",
    )
    p.add_argument(
        "--source-data",
        default=None,
        help="labelled source images for EcoTTA's warm-up and EATA's Fisher: an image folder "
        "or .tar.gz with train/<class>/*, or the CIFAR-10 python release; default: --source, "
        "else ../shared's JPEG set where present (without one, those methods are refused)",
    )
    p.add_argument(
        "--warmup-steps",
        type=int,
        default=500,
        help="EcoTTA source warm-up steps (of 64 images; 0 skips it, and its row says so)",
    )
    p.add_argument(
        "--no-warmup",
        action="store_true",
        help="run EcoTTA without warm-up and EATA without Fisher; their rows are marked "
        "'(no warm-up)' / '(no Fisher)' in the table, JSON and plot",
    )
    p.add_argument(
        "--warmup-cache",
        default=None,
        help="a folder that keeps EcoTTA warm-ups: a later run that would repeat one exactly "
        "(same model, config, source data, steps, seed) reads it back instead",
    )
    p.add_argument("--overrides", default=None, help='JSON, e.g. \'{"ecotta": {"lr": 0.01}}\'')
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument(
        "--state-dir",
        default=None,
        help="save each method's adapter and results here after every domain, and resume from "
        "there when the same command runs again (for runs of hours)",
    )
    _add_outputs(p)
    p.set_defaults(func=_cmd_bench)

    from edgeadapt.export.command import register as register_export

    register_export(sub)
    from edgeadapt.video.command import register as register_stream

    register_stream(sub)
    from edgeadapt.firmware_bridge.command import register as register_device

    register_device(sub)
    from edgeadapt.train_source_command import register as register_train_source

    register_train_source(sub)
    from edgeadapt.sample_data_command import register as register_sample_data

    register_sample_data(sub)
    from edgeadapt.fleet.command import register as register_fleet

    register_fleet(sub)
    _add_verbose_to_subcommands(parser)
    return parser


def _add_verbose_to_subcommands(parser: argparse.ArgumentParser) -> None:
    """--verbose after a subcommand too (`edgeadapt export ... --verbose`), nested ones
    (`edgeadapt device upload`) included; SUPPRESS keeps one given before the subcommand."""
    for action in parser._actions:  # argparse has no public way to walk its subparsers
        if isinstance(action, argparse._SubParsersAction):
            for command in action.choices.values():
                command.add_argument(
                    "--verbose", action="store_true", default=argparse.SUPPRESS, help=_VERBOSE_HELP
                )
                _add_verbose_to_subcommands(command)


@contextlib.contextmanager
def third_party_warnings_hidden(hide: bool = True) -> Iterator[None]:
    """Inside this block (when `hide`), warnings attributed to THIRD_PARTY_WARNINGS modules are
    not shown, nor are the THIRD_PARTY libraries' log records below ERROR; the warning filters
    and logger levels are restored on the way out."""
    loggers = [logging.getLogger(name) for name in THIRD_PARTY] if hide else []
    levels = [logger.level for logger in loggers]
    with warnings.catch_warnings():
        if hide:
            warnings.filterwarnings("ignore", module=THIRD_PARTY_WARNINGS)
        for logger in loggers:
            logger.setLevel(max(logger.level, logging.ERROR))
        try:
            yield
        finally:
            for logger, level in zip(loggers, levels):
                logger.setLevel(level)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    show = args.verbose or os.environ.get(SHOW_WARNINGS_ENV, "") not in ("", "0")
    try:
        with third_party_warnings_hidden(not show):
            return args.func(args)
    except (EdgeAdaptError, FileNotFoundError) as exc:
        print(f"edgeadapt {args.command}: {exc}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as exc:
        missing = as_missing_extra(exc)  # a feature of an extra that is not installed
        if missing is None:
            raise
        print(f"edgeadapt {args.command}: {missing}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
