"""The embedded demo: the whole pipeline on data that ships with scikit-learn, no download.

scikit-learn's 8×8 digits, upscaled to 32×32 RGB, train a small CIFAR-style ResNet in
seconds. Its test split then arrives as a continual stream of CIFAR-10-C corruptions, and
each method adapts on the way.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

# The digits and the training loop are shared with `edgeadapt train-source`.
from edgeadapt.source_training import digits_dataset, fit_classifier

__all__ = ["DEMO_CORRUPTIONS", "digits_dataset", "run_demo", "train_source_model"]

DEMO_CORRUPTIONS = (
    "gaussian_noise",
    "defocus_blur",
    "fog",
    "contrast",
    "pixelate",
    "impulse_noise",
)


def train_source_model(
    images: np.ndarray,
    labels: np.ndarray,
    *,
    epochs: int = 15,
    seed: int = 0,
    progress: bool = False,
) -> torch.nn.Module:
    """A small ResNet (one block per stage, widths 8/16/32) trained on the clean digits;
    `progress` shows a bar over the training steps."""
    from edgeadapt.models import CifarResNet

    torch.manual_seed(seed)
    model = CifarResNet(1, widths=(8, 16, 32), num_classes=10)
    # lr: the one-cycle schedule's peak; batches of 64.
    return fit_classifier(
        model, images, labels, epochs=epochs, batch_size=64, lr=5e-3, seed=seed, progress=progress
    )


def run_demo(
    methods: Sequence[str] = ("source", "norm", "tent", "ecotta"),
    *,
    severity: int = 3,
    batch_size: int = 64,
    corruptions: Sequence[str] = DEMO_CORRUPTIONS,
    train_epochs: int = 15,
    seed: int = 0,
    progress: bool = True,
    overrides: dict[str, dict[str, Any]] | None = None,
    log=print,
) -> tuple[list[Any], str]:
    """Train, then run the continual protocol for each method; returns (results, table)."""
    from edgeadapt.bench.cifar import with_input_statistics
    from edgeadapt.bench.protocols import make_protocol
    from edgeadapt.bench.report import markdown_table
    from edgeadapt.bench.runner import run_benchmark
    from edgeadapt.bench.sources import GeneratedSource
    from edgeadapt.data import to_tensor
    from edgeadapt.setup_data import SourceData, prepare_adapter

    train_x, train_y, test_x, test_y = digits_dataset(seed)
    log(f"training a small ResNet on {len(train_y)} clean digits (32×32)...")
    model = train_source_model(train_x, train_y, epochs=train_epochs, seed=seed, progress=progress)
    with torch.no_grad():
        clean_error = 100 * float(
            (model(to_tensor(test_x, normalize=True)).argmax(1).numpy() != test_y).mean()
        )
    log(
        f"clean test error {clean_error:.1f}% on {len(test_y)} digits; now the corrupted stream (severity {severity})"
    )

    warm = SourceData.from_batches(
        [
            (to_tensor(train_x[i : i + 64], normalize=True), torch.from_numpy(train_y[i : i + 64]))
            for i in range(0, len(train_y), 64)
        ],
        "the clean training digits",
    )
    records: dict[str, dict[str, Any]] = {}

    def prepare(adapter) -> None:  # EcoTTA: 3 epochs of warm-up; EATA: Fisher on the digits
        records[adapter.config.method] = prepare_adapter(
            adapter, warm, warmup_steps=3 * len(warm.batches), warmup_lr=3e-3, progress=progress
        )

    segments = make_protocol("continual", list(corruptions), severity=severity)
    results = run_benchmark(
        model, methods, segments, GeneratedSource(test_x, test_y, seed=seed),
        order=np.random.default_rng(seed).permutation(len(test_y)), batch_size=batch_size,
        to_batch=lambda a: to_tensor(a, normalize=True), warmup=prepare, progress=progress, log=log,
        overrides=with_input_statistics(overrides),  # the digits are normalised as CIFAR is
    )  # fmt: skip
    for r in results:
        r.setup = records.get(r.method, {})
    return results, markdown_table(results)
