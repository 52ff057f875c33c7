"""The CIFAR-10-C benchmark of record, assembled: data, source warm-up, every method."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from edgeadapt.bench.protocols import make_protocol
from edgeadapt.bench.runner import MethodResult, check_device, run_benchmark
from edgeadapt.bench.sources import DomainSource, GeneratedSource, ReleaseSource
from edgeadapt.errors import ConfigError
from edgeadapt.models.cifar_resnet import CIFAR_MEAN, CIFAR_STD
from edgeadapt.setup_data import (
    SETUP_BATCH,
    SourceData,
    find_source_data,
    load_clean_split,
    methods_needing_source,
    prepare_adapter,
    shared_source,
)

__all__ = [
    "SETUP_BATCH",
    "default_clean_source",
    "describe_stream",
    "load_clean_split",
    "run_cifar10c",
]


def default_clean_source() -> Path | None:
    """The JPEG CIFAR-10 archive in ../shared, when it is there."""
    return shared_source()


def with_input_statistics(
    overrides: dict[str, dict[str, Any]] | None,
) -> dict[str, dict[str, Any]]:
    """`overrides` plus the normalisation of `to_tensor(..., normalize=True)` for the methods
    that augment (CoTTA, RoTTA, EcoTTA's teacher views): their views are taken on pixels in [0, 1],
    and without these they would clamp normalised input to black and white."""
    ov = {m: dict(v) for m, v in (overrides or {}).items()}
    for augmenting in ("cotta", "ecotta", "rotta"):
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
    stream: str = "iid",
    delta: float | None = None,
    source_data: str | Path | SourceData | None = None,
    no_warmup: bool = False,
    warmup_cache: str | Path | None = None,
    round_order: str = "redraw",
) -> list[MethodResult]:
    """Run every method through the protocol. Domains come from CIFAR-10-C release files
    (`release_dir`) or are generated from the clean test split of `clean_source`.
    `state_dir`: save progress there and resume from it (`run_benchmark`).

    EcoTTA's warm-up and EATA's Fisher read labelled source images (`prepare_adapter`):
    `source_data`, else the train split of `clean_source` when given, else the shared CIFAR-10
    where present, else a `SourceDataError` before any data loads. `no_warmup` (or a count of 0)
    skips them on purpose; each result's `setup` records what ran, and reports label a skipped
    one "(no warm-up)" / "(no Fisher)".

    `stream`: "iid" (one fixed shuffle, the same in every domain) or "correlated" (the
    Dirichlet label-shift order of NOTE/RoTTA, drawn per domain, concentration `delta`,
    default 0.1). Either way the images are the first `n_images` of the i.i.d. shuffle.
    `warmup_cache`: a folder that keeps EcoTTA warm-ups for the next run that repeats one
    exactly (`prepare_adapter`).
    `round_order` (several rounds, correlated stream): "redraw" draws every domain of every
    round afresh; "repeat" feeds each round the first round's stream again, image for image,
    so round-to-round changes are the adapter's drift and not a new label order's luck."""
    from edgeadapt.data import check_stream, segment_orders, to_tensor

    _check_sizes(batch_size=batch_size, n_images=n_images, warmup_steps=warmup_steps,
                 fisher_images=fisher_images)  # fmt: skip
    delta = check_stream(stream, delta)
    check_round_order(round_order)
    check_device(device)
    # Where the setup's source images come from, before any data loads: missing ones fail now.
    needs = methods_needing_source(methods, warmup_steps=warmup_steps, fisher_images=fisher_images,
                                   no_warmup=no_warmup)  # fmt: skip
    setup_source = None
    if needs:
        given = source_data if source_data is not None else clean_source
        setup_source = find_source_data(given, needed_by=needs, option="source_data",
                                        alternative="or clean_source")  # fmt: skip
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
    repeat = None
    if round_order == "repeat":  # one round's segments, whatever the protocol makes of them
        repeat = len(make_protocol(protocol, corruptions, severity=severity, rounds=1))
    orders = segment_orders(labels, len(segments), stream=stream, delta=delta, seed=seed,
                            n_images=n_images, repeat_every=repeat)  # fmt: skip

    records: dict[str, dict[str, Any]] = {}

    def prepare(adapter) -> None:  # the source images are decoded once, for the first method
        records[adapter.config.method] = prepare_adapter(
            adapter, setup_source, warmup_steps=warmup_steps, fisher_images=fisher_images,
            no_warmup=no_warmup, seed=seed, progress=progress, log=log,
            warmup_cache=warmup_cache,
        )  # fmt: skip

    results = run_benchmark(
        model, methods, segments, source, order=orders, batch_size=batch_size,
        to_batch=lambda a: to_tensor(a, normalize=True), overrides=with_input_statistics(overrides),
        warmup=prepare,
        device=device, progress=progress, log=log, state_dir=state_dir, stream_id=stream_id,
        stream=describe_stream(stream, delta, seed, round_order),
    )  # fmt: skip
    for r in results:
        # What each adapter started from; `edgeadapt.bench.report` labels and writes it.
        r.setup = records.get(r.method, {})
    return results


ROUND_ORDERS = ("redraw", "repeat")


def check_round_order(round_order: str) -> None:
    if round_order not in ROUND_ORDERS:
        raise ConfigError(
            f"unknown round order {round_order!r}; choose one of {list(ROUND_ORDERS)} "
            "(--round-order)"
        )


def describe_stream(
    stream: str, delta: float | None, seed: int, round_order: str = "redraw"
) -> dict[str, Any]:
    """What results record of the image order: {"order": "iid", "seed": 0}, or with "delta"
    for the correlated stream, and "rounds": "repeat" when every round replays the first
    (absent for the default "redraw", so earlier results and saved progress stay valid)."""
    check_round_order(round_order)
    about: dict[str, Any] = {"order": stream, **({} if delta is None else {"delta": delta})}
    about["seed"] = seed
    if round_order == "repeat" and delta is not None:
        about["rounds"] = "repeat"
    return about
