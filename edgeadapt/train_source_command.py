"""`edgeadapt train-source`: a thin shell over `edgeadapt.source_training.train_source`.

Wire it in with `edgeadapt.train_source_command.register(subparsers)`.
"""

from __future__ import annotations

import argparse

__all__ = ["register"]


def register(subparsers) -> argparse.ArgumentParser:
    """Add the `train-source` subcommand to an argparse subparsers object; returns its parser."""
    p = subparsers.add_parser(
        "train-source",
        help="train a source model on your labelled images (default: scikit-learn's digits)",
        description="Train a backbone on labelled images and write a checkpoint that "
        "create_model(..., checkpoint=PATH) and `edgeadapt bench/export --checkpoint` load.",
    )
    p.add_argument("--model", default="resnet20", help="a registered backbone (edgeadapt models)")
    p.add_argument(
        "--data",
        default=None,
        help="a folder with one subfolder of images per class (or train/<class>/ with an "
        "optional test/ or val/ beside it); default: scikit-learn's 8×8 digits, offline",
    )
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--batch", type=int, default=64, help="images per training step")
    p.add_argument("--lr", type=float, default=5e-3, help="peak of the one-cycle Adam schedule")
    p.add_argument("--size", type=int, default=32, help="images are centre-cropped to size×size")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="the checkpoint to write (its folder must exist)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_run)
    return p


def _run(args: argparse.Namespace) -> int:
    from edgeadapt.source_training import train_source

    result = train_source(
        args.model, out=args.out, data=args.data, epochs=args.epochs, batch_size=args.batch,
        lr=args.lr, size=args.size, seed=args.seed, progress=not args.quiet,
    )  # fmt: skip
    held = (
        f"held-out accuracy {result.heldout_accuracy:.1f}% ({result.n_heldout} images)"
        if result.heldout_accuracy is not None
        else "no held-out images"
    )
    print(f"train accuracy {result.train_accuracy:.1f}% ({result.n_train} images), {held}")
    k = len(result.classes)
    flags = f"--model {args.model}{'' if k == 10 else f' --num-classes {k}'}"
    # bench streams CIFAR-10-C: only a 10-class model fits it.
    commands = "export and stream" + (", or bench" if k == 10 else "")
    print(
        f"wrote {result.path}; load it with create_model({args.model!r}, num_classes={k}, "
        f"checkpoint={str(result.path)!r}), or pass {flags} --checkpoint {result.path} to "
        f"edgeadapt {commands}"
    )
    return 0
