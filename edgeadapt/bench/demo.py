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
import torch.nn.functional as F

__all__ = ["DEMO_CORRUPTIONS", "digits_dataset", "run_demo", "train_source_model"]

DEMO_CORRUPTIONS = (
    "gaussian_noise",
    "defocus_blur",
    "fog",
    "contrast",
    "pixelate",
    "impulse_noise",
)


def digits_dataset(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(train images, train labels, test images, test labels): uint8 (N, 32, 32, 3), 70/30."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    small = torch.from_numpy(digits.images).float().unsqueeze(1) / 16.0  # (N, 1, 8, 8) in [0, 1]
    big = F.interpolate(small, size=(32, 32), mode="bilinear", align_corners=False)
    images = (
        (big.clamp(0, 1) * 255)
        .round()
        .to(torch.uint8)
        .repeat(1, 3, 1, 1)
        .permute(0, 2, 3, 1)
        .numpy()
    )
    labels = digits.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(labels))
    cut = int(0.7 * len(labels))
    return images[order[:cut]], labels[order[:cut]], images[order[cut:]], labels[order[cut:]]


def _shift(x: torch.Tensor, gen: torch.Generator, pad: int = 3) -> torch.Tensor:
    """Random translations: pad, then crop back at a random offset."""
    padded = F.pad(x, (pad,) * 4)
    dy, dx = torch.randint(0, 2 * pad + 1, (2,), generator=gen).tolist()
    return padded[:, :, dy : dy + x.shape[2], dx : dx + x.shape[3]]


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
    from tqdm.auto import tqdm

    from edgeadapt.data import to_tensor
    from edgeadapt.models import CifarResNet

    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = CifarResNet(1, widths=(8, 16, 32), num_classes=10)
    x_all, y_all = to_tensor(images, normalize=True), torch.from_numpy(labels)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    steps = epochs * ((len(y_all) + 63) // 64)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=5e-3, total_steps=steps)
    model.train()
    with tqdm(total=steps, desc="training", unit="step", disable=not progress) as bar:
        for _ in range(epochs):
            perm = torch.randperm(len(y_all), generator=gen)
            for i in range(0, len(perm), 64):
                idx = perm[i : i + 64]
                loss = F.cross_entropy(model(_shift(x_all[idx], gen)), y_all[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
                bar.update()
    return model.eval()


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
