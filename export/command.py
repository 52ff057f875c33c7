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
    p.add_argument(
        "--frozen-bn",
        choices=("batch", "eval"),
        default=None,
        help="ecotta: frozen BNs on batch or source statistics (eval keeps less for backward)",
    )
    p.add_argument(
        "--settings",
        default=None,
        help="the method's settings as JSON, e.g. '{\"teacher_momentum\": 0.999, "
        "\"teacher_views\": 4}' (EcoTTA's teacher option)",
    )
    p.add_argument("--adapter", default=None, help="saved adapter weights (adapter.save) to load")
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
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    x = x[order]
    return [x[i : i + shape[0]] for i in range(0, len(x) - shape[0] + 1, shape[0])][:8]


def run(args: argparse.Namespace) -> int:
    """Build the model (and adapter), export, verify, check the fit; 0, or 3 when it does
    not fit the device (the program, its bundle and the JSON report are written anyway)."""
    import torch

    from edgeadapt.api import config_for, load_adapter, wrap
    from edgeadapt.config import settings_from_json
    from edgeadapt.export.api import ExportRequest, export_program
    from edgeadapt.export.devices import load_profile
    from edgeadapt.export.fit import check_fit
    from edgeadapt.models import create_model

    request = ExportRequest(
        format=args.format,
        program=args.program,
        backend="portable" if args.program == "adapt" else args.backend,
        quantize=args.quantize,
        statistics=args.statistics,
        device=args.device,
    )
    request.check(args.method)
    if args.device:
        load_profile(args.device)  # an unknown name fails now, before the slow export
    shape = (args.batch, args.channels, args.input_size, args.input_size)
    calibration = None
    if args.quantize and args.program == "infer":
        calibration = _calibration(args, shape)
        example = calibration[0]
    else:
        example = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    model = create_model(args.model, num_classes=args.num_classes, checkpoint=args.checkpoint)
    fields = settings_from_json(args.settings, "--settings")
    if args.frozen_bn:
        fields["frozen_bn"] = args.frozen_bn
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
    suffix = "onnx" if args.format == "onnx" else "pte"
    quant = f"_{args.quantize}" if args.quantize else ""
    path = Path(args.out) / f"{args.model}_{args.method}_{args.program}{quant}.{suffix}"
    report = export_program(model, example, path, request, calibration=calibration)
    out = report.to_dict()
    print(
        f"wrote {path} ({report.file_bytes:,} B, sha256 {report.sha256}), "
        f"max |error| vs eager {report.max_abs_error:.3g}"
    )
    if report.bundled_path:
        print(f"wrote {report.bundled_path} (bundled test input and expected outputs)")
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
