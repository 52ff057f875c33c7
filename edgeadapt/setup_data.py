"""Source data for an adapter's setup: EcoTTA's warm-up and EATA's Fisher estimate.

Some methods must see labelled source images before they adapt. EcoTTA's meta networks cost a
great deal of clean accuracy until they are warmed up (a ResNet-56 wrapped without warm-up: 36%
clean accuracy, against 81% for the model and 86% after warm-up); EATA's anti-forgetting term
needs the Fisher information of the source task. `prepare_adapter` runs that setup on the
source images a caller names (an image folder or archive with `train/<class>/...`, the CIFAR-10
python release, or (images, labels) tensors), falls back to the shared CIFAR-10 only where it is
present, and otherwise raises `SourceDataError` naming the option. Running without is an
explicit choice (`no_warmup=True`), and `adapter.setup_record` says what happened, so every
report can say it too.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from edgeadapt.errors import ConfigError
from edgeadapt.normalization import IMAGENET_MEAN, IMAGENET_STD

__all__ = [
    "SETUP_BATCH",
    "SourceData",
    "SourceDataError",
    "describe_setup",
    "find_source_data",
    "load_clean_split",
    "methods_needing_source",
    "prepare_adapter",
    "setup_kinds",
    "setup_label",
    "shared_source",
]

# Batch of the setup on source data: it happens before deployment, on a host, whatever batch
# the stream then comes in.
SETUP_BATCH = 64
LAYOUTS = (
    "an image folder or .tar.gz with train/<class>/<image>, or the CIFAR-10 python release "
    "(cifar-10-python.tar.gz or cifar-10-batches-py)"
)
_WHAT = {"warmup": "its warm-up", "fisher": "its Fisher estimate"}
_NONE = {"warmup": "no warm-up", "fisher": "no Fisher"}


class SourceDataError(ConfigError):
    """A method needs labelled source images for its setup, and none were given or found."""


def shared_source() -> Path | None:
    """The JPEG CIFAR-10 archive in the shared data folder (`$EDGEADAPT_SHARED`, else
    ../shared beside the package), when it is there: an installed copy has none."""
    from edgeadapt._paths import shared_dir

    path = shared_dir() / "data" / "cifar10" / "cifar10-jpeg.tar.gz"
    return path if path.exists() else None


def load_clean_split(
    source: str | os.PathLike[str], split: str, *, progress: bool = True
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


def setup_kinds(method: str | nn.Module) -> tuple[str, ...]:
    """The setup on source data a method has: ("warmup",) for EcoTTA, ("fisher",) for EATA,
    () for most. `method`: a name, or an adapter. Found by the hooks the adapter type has,
    not by name, so a new method with a `warmup` gets the same treatment."""
    if isinstance(method, str):
        from edgeadapt.api import config_for, list_methods

        if method not in list_methods():
            config_for(method)  # raises the registry's UnknownNameError
        from edgeadapt._registry import METHODS

        method = METHODS[method][1]
    return tuple(k for k, hook in (("warmup", "warmup"), ("fisher", "compute_fisher"))
                 if hasattr(method, hook))  # fmt: skip


def methods_needing_source(
    methods: Iterable[str], *, warmup_steps: int = 500, fisher_images: int = 2000,
    no_warmup: bool = False,
) -> list[str]:  # fmt: skip
    """Those of `methods` whose setup will read source images with these settings."""
    if no_warmup:
        return []
    wanted = {"warmup": warmup_steps > 0, "fisher": fisher_images > 0}
    return [m for m in methods if any(wanted[k] for k in setup_kinds(m))]


class SourceData:
    """Labelled source images for a setup, loaded on first use (and once): the train split of
    `path`, or `batches` of normalised (images, labels) tensors used as they are."""

    def __init__(
        self, origin: str, *, path: Path | None = None,
        batches: Sequence[tuple[Tensor, Tensor | None]] | None = None,
    ) -> None:  # fmt: skip
        self.origin = origin  # what reports name: a path, or what the tensors are
        self.path = path
        self.batches = batches
        self._arrays: tuple[np.ndarray, np.ndarray] | None = None

    @classmethod
    def from_batches(cls, batches: Iterable[Any], origin: str = "tensor batches") -> SourceData:
        """`batches`: (images, labels) pairs or bare image tensors, normalised like the
        model's input (labels are needed by a warm-up, not by a Fisher estimate)."""
        pairs: list[tuple[Tensor, Tensor | None]] = []
        for i, b in enumerate(batches):
            x, y = (
                (b[0], b[1] if len(b) > 1 else None) if isinstance(b, (tuple, list)) else (b, None)
            )
            if not isinstance(x, Tensor) or x.ndim != 4 or len(x) == 0:
                raise SourceDataError(
                    f"source batch {i}: expected a float (N, C, H, W) tensor or (images, labels), "
                    f"got {type(x).__name__}{tuple(x.shape) if isinstance(x, Tensor) else ''}"
                )
            pairs.append((x, y))
        if not pairs:
            raise SourceDataError(f"the source batches ({origin}) are empty")
        return cls(origin, batches=pairs)

    def arrays(self, *, progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """uint8 (N, H, W, 3) images and int64 labels of the train split of `path`."""
        from edgeadapt.data.errors import DataNotFoundError

        if self.path is None:
            raise SourceDataError(f"{self.origin} holds tensors, not image files")
        if self._arrays is None:
            try:
                self._arrays = load_clean_split(self.path, "train", progress=progress)
            except DataNotFoundError as exc:
                raise SourceDataError(
                    f"{self.origin} has no clean train split ({exc}); source images are {LAYOUTS}"
                ) from exc
        return self._arrays


def find_source_data(
    source: Any = None, *, needed_by: Sequence[str] = (), option: str = "source",
    skip: str = "no_warmup=True", alternative: str = "",
) -> SourceData:  # fmt: skip
    """`source` as `SourceData`: itself, a path (checked now, loaded on first use), an
    iterable of tensor batches; None: the shared CIFAR-10 where present. Else a
    `SourceDataError` that names `option` (and `skip`, `alternative`) for `needed_by`."""
    if isinstance(source, SourceData):
        return source
    if isinstance(source, (str, os.PathLike)):
        return SourceData(str(source), path=_check_path(Path(source), option))
    if source is not None:
        return SourceData.from_batches(source)
    shared = shared_source()
    if shared is not None:
        return SourceData(f"{shared} (the shared default)", path=shared)
    from edgeadapt._paths import shared_dir

    needs = " and ".join(_needs(m) for m in needed_by) or "the setup"
    verb = "need" if len(needed_by) > 1 else "needs"
    flag = option if option.startswith("-") else f"{option}=PATH"
    alt = f", {alternative}" if alternative else ""
    default = shared_dir() / "data" / "cifar10" / "cifar10-jpeg.tar.gz"
    raise SourceDataError(
        f"{needs} {verb} labelled source images, and none were given (the shared default "
        f"{default} is absent): pass {flag} ({LAYOUTS}){alt}, or {skip} to run without it "
        "(reports then say so)"
    )


def _needs(method: str) -> str:
    kinds = setup_kinds(method)
    return f"{method} ({' and '.join(_WHAT[k] for k in kinds)})" if kinds else method


def _check_path(path: Path, option: str) -> Path:
    if not path.exists():
        raise SourceDataError(
            f"{option} {path}: no such file or folder; source images are {LAYOUTS}"
        )
    release = path.is_dir() and (path / "labels.npy").is_file()
    if release and not (path / "train").is_dir():
        raise SourceDataError(
            f"{option} {path} is a CIFAR-10-C release folder: corrupted test images, no clean "
            f"train split. Pass the clean training set the model learned from: {LAYOUTS}"
        )
    return path


def prepare_adapter(
    adapter: nn.Module,
    source: Any = None,
    *,
    warmup_steps: int = 500,
    fisher_images: int = 2000,
    no_warmup: bool = False,
    warmup_lr: float | None = None,
    input_size: Sequence[int] | None = None,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    seed: int = 0,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    warmup_cache: str | os.PathLike[str] | None = None,
) -> dict[str, dict[str, Any] | None]:
    """Run `adapter`'s setup on source data: EcoTTA's warm-up (`warmup_steps` random batches
    of `SETUP_BATCH` with flips), EATA's Fisher (`fisher_images`), nothing for the others.

    `source`: a path (see `LAYOUTS`; its train split), `SourceData`, or an iterable of
    normalised (images, labels) tensor batches (used as they are, cycled for the steps); None:
    the shared CIFAR-10 where present, else `SourceDataError`. Image files are normalised with
    `mean`/`std` (the models' own by default) and must be `input_size` (H, W) when given.
    `no_warmup` (or a count of 0) skips the setup on purpose. Returns the record, also set as
    `adapter.setup_record`: {"warmup": {"source", "images", "steps", "batch"} or None} for
    EcoTTA, {"fisher": {"source", "images"} or None} for EATA, {} for the rest.

    `warmup_cache`: a folder where warm-ups from image files are kept under a digest of all
    that goes into them (`_warmup_cache`); the same warm-up again is read back, bit-exact."""
    say = log or (lambda _: None)
    kinds = setup_kinds(adapter)
    wanted = {"warmup": warmup_steps > 0, "fisher": fisher_images > 0}
    record: dict[str, dict[str, Any] | None] = {k: None for k in kinds}
    todo = [k for k in kinds if wanted[k] and not no_warmup]
    for k in kinds:
        if k not in todo:
            say(f"{adapter.config.method}: {_NONE[k]} (skipped on request); reports say so")
    if todo:
        method = adapter.config.method
        data = find_source_data(source, needed_by=[method])
        if "warmup" in todo:
            record["warmup"] = _warm_up(adapter, data, warmup_steps, warmup_lr, input_size,
                                        mean, std, seed, progress, say, warmup_cache)  # fmt: skip
        if "fisher" in todo:
            record["fisher"] = _fisher(adapter, data, fisher_images, input_size, mean, std,
                                       seed, progress, say)  # fmt: skip
    adapter.setup_record = record
    return record


def _warm_up(adapter, data: SourceData, steps, lr, input_size, mean, std, seed, progress, say,
             cache=None):  # fmt: skip
    extra = {} if lr is None else {"lr": lr}
    if data.batches is not None:
        if any(y is None for _, y in data.batches):
            raise SourceDataError(f"EcoTTA's warm-up needs labels: {data.origin} has batches "
                                  "without them; pass (images, labels) pairs")  # fmt: skip
        _check_tensors(adapter, data, input_size)
        batches = data.batches
        epochs = math.ceil(steps / len(batches))
        say(f"EcoTTA warm-up: {steps} steps on the {len(batches)} batches of {data.origin}")
        adapter.warmup(batches, epochs=epochs, max_steps=steps, progress=progress, **extra)
        images = sum(len(x) for x, _ in batches)
        return {
            "source": data.origin,
            "images": images,
            "steps": steps,
            "batch": len(batches[0][0]),
        }

    def from_files() -> dict[str, Any]:
        images, labels = data.arrays(progress=progress)
        _check_images(adapter, data, images, input_size)
        batch = min(SETUP_BATCH, len(labels))
        say(f"EcoTTA warm-up: {steps} steps of {batch} clean training images from {data.origin}")
        batches = list(_warmup_batches(images, labels, steps, batch, seed, mean, std))
        adapter.warmup(batches, progress=progress, **extra)
        return {"source": data.origin, "images": len(labels), "steps": steps, "batch": batch}

    from edgeadapt._warmup_cache import cached_warmup

    inputs = {"steps": steps, "lr": lr, "seed": seed, "mean": list(mean), "std": list(std),
              "input_size": None if input_size is None else list(input_size)}  # fmt: skip
    return cached_warmup(adapter, cache, inputs, data.path, from_files, say)


def _fisher(adapter, data: SourceData, count, input_size, mean, std, seed, progress, say):
    if data.batches is not None:
        _check_tensors(adapter, data, input_size)
        chunks = list(_first_images((x for x, _ in data.batches), count))
        say(f"EATA Fisher: {sum(map(len, chunks))} images of {data.origin}")
        adapter.compute_fisher(chunks)
        return {"source": data.origin, "images": sum(map(len, chunks))}
    images, labels = data.arrays(progress=progress)
    _check_images(adapter, data, images, input_size)
    idx = np.random.default_rng(seed).choice(len(labels), size=min(count, len(labels)),
                                             replace=False)  # fmt: skip
    say(f"EATA Fisher: {len(idx)} clean training images from {data.origin}")
    adapter.compute_fisher(
        _normalise(images[np.sort(idx[i : i + SETUP_BATCH])], mean, std)
        for i in range(0, len(idx), SETUP_BATCH)
    )
    return {"source": data.origin, "images": len(idx)}


def _check_images(adapter, data: SourceData, images: np.ndarray, input_size) -> None:
    channels = getattr(adapter, "in_channels", None)
    if channels not in (None, 3):
        raise SourceDataError(
            f"{data.origin} holds RGB images; the model takes {channels} channels"
        )
    if input_size is not None and tuple(images.shape[1:3]) != tuple(input_size):
        raise SourceDataError(
            f"{data.origin} holds {images.shape[1]}×{images.shape[2]} images; the model takes "
            f"{input_size[0]}×{input_size[1]}: pass source images of the input size"
        )


def _check_tensors(adapter, data: SourceData, input_size) -> None:
    x = data.batches[0][0]
    channels = getattr(adapter, "in_channels", None)
    if (channels is not None and x.shape[1] != channels) or (
        input_size is not None and tuple(x.shape[2:]) != tuple(input_size)
    ):
        raise SourceDataError(
            f"{data.origin}: batches of shape {tuple(x.shape[1:])} do not fit the model's "
            f"input ({channels} channels, size {tuple(input_size) if input_size else 'any'})"
        )


def _normalise(images: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    from edgeadapt.data import to_tensor

    shape = (3, 1, 1)  # the same float32 ops as to_tensor(..., normalize=True)
    return (
        to_tensor(images)
        .sub_(torch.tensor(tuple(mean)).view(shape))
        .div_(torch.tensor(tuple(std)).view(shape))
    )


def _warmup_batches(images: np.ndarray, labels: np.ndarray, steps: int, batch: int, seed: int,
                    mean: Sequence[float], std: Sequence[float]):  # fmt: skip
    """Random batches with horizontal flips, as the source training used."""
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        idx = rng.choice(len(labels), size=batch, replace=False)
        x = _normalise(images[idx], mean, std)
        flip = torch.from_numpy(rng.random(batch) < 0.5)
        yield torch.where(flip.view(-1, 1, 1, 1), x.flip(3), x), torch.from_numpy(labels[idx])


def _first_images(batches: Iterable[Tensor], count: int) -> Iterator[Tensor]:
    left = count
    for x in batches:
        if left <= 0:
            return
        yield x[:left]
        left -= len(x[:left])


def setup_label(record: dict[str, Any] | None) -> str:
    """What a table adds to a method's name: "no warm-up", "no Fisher", or ""."""
    return ", ".join(_NONE[k] for k, v in (record or {}).items() if v is None and k in _NONE)


def describe_setup(record: dict[str, Any] | None) -> str:
    """The record as a sentence for reports."""
    if record is None:
        return "setup not recorded"
    if not record:
        return "no setup on source data (the method has none)"
    parts = []
    for kind, done in record.items():
        if done is None:
            parts.append(
                "no warm-up: the meta networks start freshly initialised" if kind == "warmup"
                else "no Fisher estimate: EATA runs without its anti-forgetting term"
            )  # fmt: skip
        elif kind == "warmup":
            parts.append(f"warmed up on {done['source']}: {done['steps']} steps of "
                         f"{done['batch']} from {done['images']} images")  # fmt: skip
        else:
            parts.append(f"Fisher estimated on {done['images']} images of {done['source']}")
    return "; ".join(parts)
