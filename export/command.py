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
    p.add_argument("--checkpoint", default=None, help="the backbone's trained weights (required)")
    p.add_argument(
        "--random-weights",
        action="store_true",
        help="export untrained weights instead of --checkpoint: for sizes and --device fit, "
        "which do not depend on the weights (the program's predictions mean nothing)",
    )
    p.add_argument("--num-classes", type=int, default=10)
    p.add_argument(
        "--method", default="source", help="source (the plain model), ecotta, tent, norm, ..."
    )
    p.add_argument(
        "--frozen-bn",
        choices=("batch", "eval"),
        default=None,
        help="ecotta: frozen BNs on stream (batch) or source statistics; --program adapt "
        "defaults to EcoTTA's device configuration (EcoTTAConfig.device())",
    )
    p.add_argument(
        "--settings",
        default=None,
        help="the method's settings as JSON, e.g. '{\"teacher_momentum\": 0.999, "
        "\"teacher_views\": 4}' (EcoTTA's teacher option)",
    )
    p.add_argument(
        "--adapter",
        default=None,
        help="saved adapter weights (adapter.save) to load, e.g. a warmed-up EcoTTA: the "
        "program starts from them, and no warm-up runs",
    )
    p.add_argument(
        "--source-data",
        default=None,
        help="ecotta/eata: labelled source images the meta networks are warmed up on (EATA: "
        "its Fisher): an image folder or .tar.gz with train/<class>/*, or the CIFAR-10 python "
        "release; default: the shared CIFAR-10 JPEG archive where present, else refused",
    )
    p.add_argument(
        "--warmup-steps",
        type=int,
        default=500,
        help="ecotta: warm-up steps of 64 source images before export",
    )
    p.add_argument(
        "--warmup-cache",
        default=None,
        help="ecotta: a folder that keeps warm-ups; an export that would repeat one exactly "
        "(same model, settings, source data, steps) reads it back instead",
    )
    p.add_argument(
        "--no-warmup",
        action="store_true",
        help="ecotta/eata: export without warm-up (freshly initialised meta networks, which "
        "cost much clean accuracy) or Fisher; the report says so (implied by --random-weights "
        "without --source-data)",
    )
    p.add_argument("--format", choices=("onnx", "executorch"), default="executorch")
    p.add_argument("--program", choices=("infer", "adapt"), default="infer")
    p.add_argument(
        "--backend",
        choices=("xnnpack", "portable"),
        default="xnnpack",
        help="inference programs; training programs always run on the portable kernels",
    )
    p.add_argument("--quantize", choices=("int8",), default=None)
    p.add_argument(
        "--calibration-data",
        default=None,
        help="int8: image folder or .tar.gz (<split>/<class>/*.jpg) whose train split "
        "calibrates; default: the shared CIFAR-10 JPEG archive",
    )
    p.add_argument(
        "--check-data",
        default=None,
        help="adapt: real images the program must adapt on like the eager adapter (an image "
        "folder or .tar.gz, <split>/<class>/*.jpg, test split if present; corrupted with "
        "--check-corruption); default: the shared CIFAR-10 JPEG archive",
    )
    p.add_argument(
        "--check-corruption",
        default="gaussian_noise",
        help="adapt: the corruption (severity 3) applied to --check-data, or 'none'",
    )
    p.add_argument(
        "--check-steps", type=int, default=20, help="adapt: steps of the check against eager"
    )
    p.add_argument(
        "--skip-check",
        action="store_true",
        help="adapt: do not check that the program adapts (not recommended; implied by "
        "--random-weights, where predictions mean nothing)",
    )
    p.add_argument(
        "--schedule",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="adapt: rewrite and order the step's ops for a smaller arena and far fewer "
        "runtime tables: folded gradients, ops that free memory first, elementwise ops in "
        "place, tensors shared between instructions; with --device, contiguous RAM banks "
        "planned as one and each tensor at its own offset. Exact: the same step bit for bit. "
        "On by default; --no-schedule exports autograd's graph as it is "
        "(benchmarks/firmware/arena_peak.md)",
    )
    p.add_argument(
        "--kept-activations",
        choices=("fp32", "int8"),
        default="fp32",
        help="adapt: how the activations the gradients read are kept; int8 stores them in a "
        "quarter of the bytes (needs the scheduling; the forward is unchanged, the gradients "
        "approximate: benchmarks/firmware/int8_activations.md)",
    )
    p.add_argument(
        "--statistics",
        choices=("adapter", "running"),
        default="adapter",
        help="BNs on the input batch's statistics as the adapter predicts, or on running ones",
    )
    p.add_argument("--batch", type=int, default=16, help="the program's fixed batch size")
    p.add_argument("--input-size", type=int, default=32)
    p.add_argument("--channels", type=int, default=3)
    p.add_argument(
        "--device", default=None, help="device profile: plan the arena into its RAM banks"
    )
    p.add_argument("--out", default=".", help="output folder")
    p.add_argument("--json", default=None, help="write the report as JSON here")
    p.set_defaults(func=run)
    return p


def _calibration(args: argparse.Namespace, shape: tuple[int, ...]):
    """Normalised source images in batches shaped like the program's input."""
    import torch

    from edgeadapt._paths import shared_dir
    from edgeadapt.data import load_image_folder, to_tensor
    from edgeadapt.errors import ConfigError

    source = args.calibration_data or shared_dir() / "data" / "cifar10" / "cifar10-jpeg.tar.gz"
    if not Path(source).exists():
        raise ConfigError(
            f"int8 needs calibration images; {source} does not exist: pass --calibration-data"
        )
    images, _, _ = load_image_folder(source, "train", limit_per_class=16, progress=False)
    x = to_tensor(images, normalize=True)
    if tuple(x.shape[1:]) != shape[1:]:
        raise ConfigError(
            f"calibration images are {tuple(x.shape[1:])}, the program takes {shape[1:]}"
        )
    if len(x) < shape[0]:
        raise ConfigError(
            f"--batch {shape[0]} is more than the {len(x)} calibration images "
            f"(16 per class of {source}); pass a smaller --batch"
        )
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    x = x[order]
    return [x[i : i + shape[0]] for i in range(0, len(x) - shape[0] + 1, shape[0])][:8]


def _check_source(args: argparse.Namespace) -> Path | None:
    """Where the adaptation check's images come from; None when no check runs."""
    from edgeadapt._paths import shared_dir
    from edgeadapt.errors import ConfigError

    if args.program != "adapt" or args.skip_check or args.random_weights:
        return None
    source = args.check_data or shared_dir() / "data" / "cifar10" / "cifar10-jpeg.tar.gz"
    if not Path(source).exists():
        raise ConfigError(
            f"--program adapt checks that the program adapts on real images, and {source} does "
            "not exist: pass --check-data (an image folder or .tar.gz), or --skip-check"
        )
    return Path(source)


def _check_images(args: argparse.Namespace, source: Path, shape: tuple[int, ...]):
    """Normalised real images for the adaptation check, corrupted as --check-corruption says:
    8 per class, shuffled, at least enough for the steps."""
    import torch

    from edgeadapt.data import corrupt, load_image_folder, to_tensor
    from edgeadapt.data.errors import DataNotFoundError
    from edgeadapt.errors import ConfigError

    try:  # the test split where the folder has one: images the model did not train on
        images, _, _ = load_image_folder(source, "test", limit_per_class=8, progress=False)
    except DataNotFoundError:
        images, _, _ = load_image_folder(source, "train", limit_per_class=8, progress=False)
    if args.check_corruption != "none":
        images = corrupt(images, args.check_corruption, 3, seed=0)
    x = to_tensor(images, normalize=True)
    if tuple(x.shape[1:]) != shape[1:]:
        raise ConfigError(
            f"--check-data images are {tuple(x.shape[1:])}, the program takes {shape[1:]}: pass "
            "images of the program's size"
        )
    if len(x) < shape[0]:
        raise ConfigError(f"--check-data has {len(x)} images, fewer than --batch {shape[0]}")
    return x[torch.randperm(len(x), generator=torch.Generator().manual_seed(0))]


def _program_path(args: argparse.Namespace) -> Path:
    suffix = "onnx" if args.format == "onnx" else "pte"
    quant = f"_{args.quantize}" if args.quantize else ""
    return Path(args.out) / f"{args.model}_{args.method}_{args.program}{quant}.{suffix}"


def _check_args(args: argparse.Namespace) -> dict:
    """Every check that needs no model, before any slow work (a training-program export
    takes minutes); returns the method's settings from --settings and --frozen-bn."""
    from edgeadapt._cli_args import at_least, input_file, output_file, output_folder
    from edgeadapt._extras import require
    from edgeadapt._suggest import unknown_name_message
    from edgeadapt.api import config_for, list_methods
    from edgeadapt.config import settings_from_json
    from edgeadapt.errors import ConfigError, UnknownNameError
    from edgeadapt.models import get_model_entry

    if args.format == "onnx":
        require("onnx", "ONNX export")
        require("onnxruntime", "checking an ONNX export")
    else:
        require("executorch", "ExecuTorch export")
    try:
        get_model_entry(args.model)
    except UnknownNameError as exc:
        raise UnknownNameError(f"--model: {exc}") from exc
    if args.method not in list_methods():
        raise UnknownNameError(
            f"--method: {unknown_name_message('method', args.method, list_methods())}"
        )
    at_least(args.batch, 1, "--batch", " (the program's fixed batch size)")
    at_least(args.input_size, 1, "--input-size")
    at_least(args.channels, 1, "--channels")
    at_least(args.num_classes, 1, "--num-classes")
    fields = settings_from_json(args.settings, "--settings")
    if args.frozen_bn:
        if args.method != "ecotta":
            raise ConfigError(f"--frozen-bn applies to --method ecotta, not {args.method!r}")
        fields["frozen_bn"] = args.frozen_bn
    if args.adapter:
        if fields:
            raise ConfigError(
                "--settings and --frozen-bn do not apply with --adapter: the adapter file "
                "holds its method's settings"
            )
    elif args.method == "source":
        if fields:
            raise ConfigError("--settings need an adapting --method (ecotta, tent, ...)")
    else:
        if args.method == "ecotta" and args.program == "adapt":
            # The program is what a device runs: EcoTTA's device configuration unless
            # --settings/--frozen-bn say otherwise (EcoTTAConfig.device()).
            from edgeadapt.config import DEVICE_SETTINGS

            fields = {**DEVICE_SETTINGS, **fields}
        config_for(args.method, **fields)  # bad settings fail now, not after the model loads
    int8_infer = args.quantize == "int8" and args.program == "infer"
    if args.calibration_data and not int8_infer:
        raise ConfigError(
            "--calibration-data is used only by --quantize int8 --program infer; drop it"
        )
    input_file(args.calibration_data, "--calibration-data", folder_ok=True)
    adapt_only = args.check_data or args.skip_check or args.check_steps != 20
    if adapt_only and args.program != "adapt":
        raise ConfigError("--check-data, --check-steps and --skip-check apply to --program adapt")
    input_file(args.check_data, "--check-data", folder_ok=True)
    at_least(args.check_steps, 1, "--check-steps")
    if args.check_corruption != "none":
        from edgeadapt.data import ALL_CORRUPTIONS

        if args.check_corruption not in ALL_CORRUPTIONS:
            raise ConfigError(
                f"--check-corruption {args.check_corruption!r} is unknown; choose 'none' or one "
                f"of {list(ALL_CORRUPTIONS)}"
            )
    input_file(args.adapter, "--adapter")
    _check_setup_args(args)
    output_folder(args.out, "--out")
    if _program_path(args).is_dir():
        raise ConfigError(f"--out {args.out}: {_program_path(args)} is a folder; remove it")
    output_file(args.json, "--json")
    if args.checkpoint is not None and args.random_weights:
        raise ConfigError("--checkpoint and --random-weights exclude each other; pass one")
    if args.checkpoint is None and not args.random_weights:
        # An untrained program verifies and fits like a trained one, and then predicts at
        # chance on the device: only an explicit flag may produce one.
        raise ConfigError(
            f"export needs the trained weights of --model {args.model}: pass --checkpoint PATH "
            "(e.g. ../shared/models/resnet20_cifar10jpeg.pt for resnet20), or --random-weights "
            "where only sizes and --device fit matter"
        )
    input_file(args.checkpoint, "--checkpoint")
    return fields


def _check_setup_args(args: argparse.Namespace) -> None:
    """--source-data, --warmup-steps and --no-warmup: for a method with a setup on source data
    (EcoTTA's warm-up, EATA's Fisher), and not with --adapter, whose file holds the state."""
    from edgeadapt._cli_args import at_least, input_file
    from edgeadapt.errors import ConfigError
    from edgeadapt.setup_data import setup_kinds

    given = [f for f, on in (("--source-data", args.source_data), ("--no-warmup", args.no_warmup),
                             ("--warmup-steps", args.warmup_steps != 500)) if on]  # fmt: skip
    if given and not setup_kinds(args.method):
        raise ConfigError(f"{', '.join(given)}: --method {args.method!r} has no setup on source "
                          "data (ecotta's warm-up and eata's Fisher do)")  # fmt: skip
    if given and args.adapter:
        raise ConfigError(f"{', '.join(given)}: not with --adapter, whose file holds the "
                          "adapter's state (warmed up when it was saved)")  # fmt: skip
    if args.source_data and args.no_warmup:
        raise ConfigError("--source-data and --no-warmup exclude each other; pass one")
    input_file(args.source_data, "--source-data", folder_ok=True)
    at_least(args.warmup_steps, 1, "--warmup-steps", " (--no-warmup skips the warm-up)")
    if args.warmup_cache is not None:
        from edgeadapt._cli_args import output_folder

        output_folder(args.warmup_cache, "--warmup-cache")


def _setup_source(args: argparse.Namespace):
    """The source images the method's setup reads (`SourceData`), or None when none runs: the
    method has no setup, --adapter holds the state, --no-warmup, or --random-weights (whose
    predictions mean nothing) without --source-data."""
    from edgeadapt.setup_data import find_source_data, setup_kinds

    skipped = args.no_warmup or (args.random_weights and not args.source_data)
    if not setup_kinds(args.method) or args.adapter or skipped:
        return None
    return find_source_data(
        args.source_data, needed_by=[args.method], option="--source-data", skip="--no-warmup",
        alternative="or --adapter (a warmed-up adapter saved with adapter.save)",
    )  # fmt: skip


def _starts_from(args: argparse.Namespace, record: dict | None) -> dict:
    """What the program's adapter state starts from, for the report and the JSON."""
    from edgeadapt.setup_data import describe_setup

    if args.adapter:
        saved = f"its setup: {describe_setup(record)}" if record is not None else (
            "its setup is not recorded in it: saved before adapters kept it"
        )  # fmt: skip
        summary = f"the adapter file {args.adapter} ({saved})"
        return {"adapter": str(args.adapter), "setup": record, "summary": summary}
    if args.method == "source":
        return {"adapter": None, "setup": {}, "summary": "the source model (no adapter)"}
    summary = describe_setup(record)
    skipped = [k for k, v in (record or {}).items() if v is None]
    if skipped:
        summary += " (--no-warmup)" if args.no_warmup else " (--random-weights)"
    return {"adapter": None, "setup": record, "summary": summary}


def run(args: argparse.Namespace) -> int:
    """Build the model (and adapter), export, verify, check the fit; 0, or 3 when it does
    not fit the device (the program, its bundle and the JSON report are written anyway)."""
    import torch

    from edgeadapt.api import config_for, load_adapter, wrap
    from edgeadapt.export.adapt_check import AdaptationCheckError
    from edgeadapt.export.api import ExportRequest, export_program
    from edgeadapt.export.errors import UnknownDeviceError
    from edgeadapt.export.fit import check_fit
    from edgeadapt.models import create_model
    from edgeadapt.setup_data import prepare_adapter

    request = ExportRequest(
        format=args.format,
        program=args.program,
        backend="portable" if args.program == "adapt" else args.backend,
        quantize=args.quantize,
        statistics=args.statistics,
        device=args.device,
        schedule=args.schedule,
        kept_activations=args.kept_activations,
    )
    # An unsupported combination, an unknown --device or one that cannot run the program
    # (XNNPACK on an MCU) fails now, before the slow export.
    try:
        request.check(args.method)
    except UnknownDeviceError as exc:
        raise UnknownDeviceError(f"--device: {_unknown_device(args.device, exc)}") from exc
    fields = _check_args(args)
    shape = (args.batch, args.channels, args.input_size, args.input_size)
    calibration = None
    if args.quantize and args.program == "infer":
        calibration = _calibration(args, shape)
        example = calibration[0]
    else:
        example = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    check_source = _check_source(args)  # before the model loads: a missing folder fails now
    setup_source = _setup_source(args)  # so do missing source images for the warm-up
    model = create_model(args.model, num_classes=args.num_classes, checkpoint=args.checkpoint)
    if fields.get("teacher_views") and "input_mean" not in fields:
        # The views are taken on pixels in [0, 1]: the program un-normalises its input first,
        # with the normalisation this command calibrates with (the models' own, ImageNet's).
        from edgeadapt.normalization import IMAGENET_MEAN, IMAGENET_STD

        fields.update(input_mean=IMAGENET_MEAN, input_std=IMAGENET_STD)
        print("teacher views: input taken as normalised with ImageNet's mean/std (give "
              "input_mean/input_std in --settings for another normalisation)")  # fmt: skip
    if args.adapter:
        model = load_adapter(model, args.adapter, example_input=example[:2])
    elif args.method != "source":
        model = wrap(model, config_for(args.method, **fields), example_input=example[:2])
    record = getattr(model, "setup_record", None) if args.adapter else None
    if not args.adapter and args.method != "source":
        record = prepare_adapter(
            model, setup_source, warmup_steps=args.warmup_steps, no_warmup=setup_source is None,
            input_size=shape[2:], log=print, warmup_cache=args.warmup_cache,
        )  # fmt: skip
    starts_from = _starts_from(args, record)
    print(f"the program starts from: {starts_from['summary']}")
    path = _program_path(args)
    check = _check_images(args, check_source, shape) if check_source else None
    try:
        report = export_program(
            model, example, path, request, calibration=calibration, check_images=check,
            check_steps=args.check_steps,
        )  # fmt: skip
    except AdaptationCheckError as exc:  # the JSON says why, then the one-line error
        if args.json:
            _write_json(args.json, {"written": False, "adaptation_check": exc.check.to_dict()})
        raise
    out = {**report.to_dict(), "starts_from": starts_from, "settings": _settings_of(model)}
    if report.adaptation_check:
        c = report.adaptation_check
        print(
            f"adapts like eager over {c['steps']} steps on real images: logits within "
            f"{c['max_logit_diff']:.2g}, weights within {c['max_weight_diff']:.2g} (relative), "
            f"weights moved {c['weights_moved']:.2g}, {c['distinct_predictions']} classes predicted"
        )
    elif args.program == "adapt":
        print("adaptation not checked (--skip-check or --random-weights)")
    print(
        f"wrote {path} ({report.file_bytes:,} B, sha256 {report.sha256}), "
        f"max |error| vs eager {report.max_abs_error:.3g}"
    )
    if report.bundled_path:
        print(f"wrote {report.bundled_path} (bundled test input and expected outputs)")
    if report.arena_bytes:
        print(f"arena {report.total_arena_bytes:,} B, constants {report.constant_bytes:,} B")
    if report.arena_peak:
        print(_arena_peak_line(report.arena_peak))
    for note in report.notes:
        print(note)
    code = 0
    if args.device:
        fit = check_fit(report, args.device)
        out["fit"] = fit.to_dict()
        print(fit.message)
        for line in fit.basis:  # which figures are measured, calibrated or estimated
            print(f"  {line}")
        code = 0 if fit.fits else 3
        if not fit.fits:
            for line in _smaller_step_levers(args, out["settings"]):
                print(f"  {line}")
    if args.json:
        _write_json(args.json, out)
        print(f"wrote {args.json}")
    return code


def _smaller_step_levers(args: argparse.Namespace, settings: dict | None) -> list[str]:
    """What this export left unused that shrinks an EcoTTA adaptation step that does not fit.
    Both together fit ResNet-20's step into an STM32F746's 320 KB
    (benchmarks/firmware/small_sram/results.md)."""
    if args.method != "ecotta" or args.program != "adapt":
        return []
    levers = []
    if args.kept_activations == "fp32":
        levers.append(
            "--kept-activations int8: what the backward reads kept in a quarter of the bytes "
            "(approximate gradients)"
        )
    if not (settings or {}).get("skip_stages") and not (settings or {}).get("parts"):
        levers.append(
            f"--settings '{_small_sram_json()}' (EcoTTAConfig.device_small()): no meta "
            "network on the first stage, whose maps are the largest, so the step keeps none "
            "of them (it adapts less: benchmarks/firmware/small_sram/results.md)"
        )
    return [f"smaller step: {lever}" for lever in levers]


def _small_sram_json() -> str:
    from edgeadapt.config import SMALL_SRAM_SETTINGS

    return json.dumps(SMALL_SRAM_SETTINGS)


def _arena_peak_line(peak: dict) -> str:
    """Where the arena's bytes go at its peak, largest role first (a training program)."""
    roles = sorted(((b, r) for r, b in peak["by_role"].items() if b), reverse=True)
    parts = ", ".join(f"{r} {b:,} B" for b, r in roles)
    return f"arena at its peak: {peak['peak_live_bytes']:,} B alive ({parts})"


def _unknown_device(name: str, exc: Exception) -> str:
    """The profile lookup's refusal, with close matches (the lookup in export/devices.py
    lists the profiles but suggests none)."""
    from edgeadapt._suggest import unknown_name_message
    from edgeadapt.export.devices import devices_dir, list_profiles

    if "did you mean" in str(exc):
        return str(exc)
    return unknown_name_message("device", name, list_profiles(), f"(profiles in {devices_dir()})")


def _settings_of(model) -> dict | None:
    """The exported adapter's configuration (what the device runs), for the JSON report."""
    config = getattr(model, "config", None)
    if config is None:
        return None
    from edgeadapt.config import to_dict

    return to_dict(config)


def _write_json(path: str, payload: dict) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(payload, indent=2) + "\n")
