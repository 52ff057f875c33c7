"""The CIFAR-10-C benchmark of record, assembled: data, source warm-up, every method."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgeadapt.bench.protocols import make_protocol
from edgeadapt.bench.runner import MethodResult, check_device, run_benchmark
from edgeadapt.bench.sources import DomainSource, GeneratedSource, ReleaseSource
from edgeadapt.errors import ConfigError
from edgeadapt.models.cifar_resnet import CIFAR_MEAN, CIFAR_STD

__all__ = ["default_clean_source", "load_clean_split", "run_cifar10c"]


def default_clean_source() -> Path | None:
    """The JPEG CIFAR-10 archive in ../shared, when it is there."""
    from edgeadapt._paths import shared_dir

    path = shared_dir() / "data" / "cifar10" / "cifar10-jpeg.tar.gz"
    return path if path.exists() else None


def load_clean_split(
    source: str | Path, split: str, *, progress: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """A clean split from the official python archive/folder or an image-folder tree/archive."""
    from edgeadapt.data import load_cifar10, load_image_folder

    source = Path(source)
    official = (
        "cifar-10-python" in source.name
        or (source / "cifar-10-batches-py").exists()
        or source.name == "cifar-10-batches-py"
    )
    if official:
        return load_cifar10(source, split)
    images, labels, _ = load_image_folder(source, split, progress=progress)
    return images, labels


def _warmup_batches(images: np.ndarray, labels: np.ndarray, steps: int, batch: int, seed: int):
    """Random batches with horizontal flips, as the source training used."""
    from edgeadapt.data import to_tensor

    rng = np.random.default_rng(seed)
    for _ in range(steps):
        idx = rng.choice(len(labels), size=batch, replace=False)
        x = to_tensor(images[idx], normalize=True)
        flip = torch.from_numpy(rng.random(batch) < 0.5)
        yield torch.where(flip.view(-1, 1, 1, 1), x.flip(3), x), torch.from_numpy(labels[idx])


def with_input_statistics(
    overrides: dict[str, dict[str, Any]] | None,
) -> dict[str, dict[str, Any]]:
    """`overrides` plus the normalisation of `to_tensor(..., normalize=True)` for the methods
    that augment (CoTTA, EcoTTA's teacher views): their views are taken on pixels in [0, 1],
    and without these they would clamp normalised input to black and white."""
    ov = {m: dict(v) for m, v in (overrides or {}).items()}
    for augmenting in ("cotta", "ecotta"):
        ov.setdefault(augmenting, {}).update(input_mean=CIFAR_MEAN, input_std=CIFAR_STD)
    return ov


def _check_sizes(*, batch_size: int, n_images: int | None, warmup_steps: int,
                 fisher_images: int) -> None:  # fmt: skip
    """Before any data loads: a count of 0 or less would otherwise mean something else
    (n_images 0 the whole stream, -5 all but the last 5) or fail deep inside the first step."""
    if batch_size < 1:
        raise ConfigError(f"batch size must be >= 1, got {batch_size}")
    if n_images is not None and n_images < 1:
        raise ConfigError(f"n_images must be >= 1 (or None for every image), got {n_images}")
    if warmup_steps < 0 or fisher_images < 0:
        raise ConfigError(
            f"warmup_steps and fisher_images must be >= 0 (0 skips them), got "
            f"{warmup_steps} and {fisher_images}"
        )


def run_cifar10c(
    model: torch.nn.Module,
    methods: Sequence[str],
    *,
    corruptions: Sequence[str],
    protocol: str = "continual",
    rounds: int | None = None,
    severity: int = 5,
    batch_size: int = 64,
    release_dir: str | Path | None = None,
    clean_source: str | Path | None = None,
    n_images: int | None = None,
    warmup_steps: int = 500,
    fisher_images: int = 2000,
    overrides: dict[str, dict[str, Any]] | None = None,
    seed: int = 0,
    device: str = "cpu",
    progress: bool = True,
    log=print,
    state_dir: str | Path | None = None,
) -> list[MethodResult]:
    """Run every method through the protocol. Domains come from CIFAR-10-C release files
    (`release_dir`) or are generated from the clean test split of `clean_source`; the clean
    train split of `clean_source` (when given) warms EcoTTA up and gives EATA its Fisher.
    `state_dir`: save progress there and resume from it (`run_benchmark`)."""
    from edgeadapt.data import stream_order, to_tensor

    _check_sizes(batch_size=batch_size, n_images=n_images, warmup_steps=warmup_steps,
                 fisher_images=fisher_images)  # fmt: skip
    check_device(device)
    clean_source = clean_source or default_clean_source()
    source: DomainSource
    if release_dir is not None:
        source = ReleaseSource(release_dir)
        stream_id = f"release {Path(release_dir).resolve()}"
    elif clean_source is not None:
        images, labels = load_clean_split(clean_source, "test", progress=progress)
        source = GeneratedSource(images, labels, seed=seed)
        stream_id = f"generated from {Path(clean_source).resolve()}, seed {seed}"
    else:
        raise ConfigError(
            "no data: pass release_dir (CIFAR-10-C files) or clean_source (a clean CIFAR-10 split)"
        )
    segments = make_protocol(protocol, corruptions, severity=severity, rounds=rounds)
    _, labels = source.get(segments[0].corruption, segments[0].severity)
    order = stream_order(len(labels), seed)[: n_images or len(labels)]

    cache: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def prepare(adapter) -> None:
        wants = (hasattr(adapter, "warmup") and warmup_steps > 0) or (
            hasattr(adapter, "compute_fisher") and fisher_images > 0
        )
        if clean_source is None or not wants:
            return
        if "train" not in cache:  # decoded once, only when a method needs source data
            cache["train"] = load_clean_split(clean_source, "train", progress=progress)
        train = cache["train"]
        if hasattr(adapter, "warmup") and warmup_steps > 0:
            log(f"EcoTTA warm-up: {warmup_steps} steps of {batch_size} clean training images")
            adapter.warmup(
                list(_warmup_batches(*train, warmup_steps, batch_size, seed)), progress=progress
            )
        if hasattr(adapter, "compute_fisher") and fisher_images > 0:
            idx = np.random.default_rng(seed).choice(
                len(train[1]), size=min(fisher_images, len(train[1])), replace=False
            )
            adapter.compute_fisher(
                to_tensor(train[0][np.sort(c)], normalize=True) for c in _chunks(idx, batch_size)
            )

    return run_benchmark(
        model, methods, segments, source, order=order, batch_size=batch_size,
        to_batch=lambda a: to_tensor(a, normalize=True), overrides=with_input_statistics(overrides),
        warmup=prepare,
        device=device, progress=progress, log=log, state_dir=state_dir, stream_id=stream_id,
    )  # fmt: skip


def _chunks(idx: np.ndarray, size: int):
    for i in range(0, len(idx), size):
        yield idx[i : i + size]
