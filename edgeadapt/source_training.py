"""Train a source model: the supervised step before any adaptation.

Test-time adaptation starts from a model trained on a source domain. Where no released
weights fit (`create_model(name, pretrained=True)`), `train_source` makes them: from the
user's labelled images (one subfolder per class), or, with no folder, from scikit-learn's
8×8 digits (shipped with scikit-learn: no download), as the demo does. The recipe is the
demo's: Adam under a one-cycle schedule, random shifts, inputs normalised with the CIFAR
statistics the backbones expect. The checkpoint loads with `create_model(name,
num_classes=K, checkpoint=PATH)`, so `edgeadapt bench/export --checkpoint PATH` read it too.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edgeadapt.data.errors import DataFormatError, DataNotFoundError
from edgeadapt.errors import ConfigError

__all__ = [
    "HOLDOUT_FRACTION",
    "LabelledImages",
    "SourceTrainingResult",
    "accuracy",
    "digits_dataset",
    "digits_images",
    "fit_classifier",
    "load_class_folders",
    "train_source",
]

HOLDOUT_FRACTION = 0.2  # of each class, held out when the folder has no test/ or val/ split
_HELDOUT_SPLITS = ("test", "val", "valid", "validation")
_DIGIT_CLASSES = tuple(str(d) for d in range(10))


@dataclass(frozen=True)
class LabelledImages:
    """Training and held-out images: uint8 (N, H, W, 3) arrays with int64 labels."""

    train_x: np.ndarray
    train_y: np.ndarray
    heldout_x: np.ndarray  # may be empty: then there is no held-out accuracy
    heldout_y: np.ndarray
    classes: tuple[str, ...]  # label i is classes[i]
    description: str  # where the images came from, for messages


@dataclass(frozen=True)
class SourceTrainingResult:
    """What `train_source` wrote and how well the model fits."""

    path: Path  # the checkpoint
    model: str  # the registered model name
    classes: tuple[str, ...]  # label i is classes[i]; num_classes is len(classes)
    train_accuracy: float  # percent, on the training images without augmentation
    heldout_accuracy: float | None  # percent; None when nothing was held out
    n_train: int
    n_heldout: int


def digits_dataset(
    seed: int = 0, size: int = 32
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """scikit-learn's digits as (train images, train labels, test images, test labels):
    uint8 (N, size, size, 3), 70/30 in a fixed shuffle."""
    from edgeadapt._extras import require

    digits = require("sklearn.datasets", "training on the digits").load_digits()
    small = torch.from_numpy(digits.images).float().unsqueeze(1) / 16.0  # (N, 1, 8, 8) in [0, 1]
    big = F.interpolate(small, size=(size, size), mode="bilinear", align_corners=False)
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


def digits_images(size: int = 32, seed: int = 0) -> LabelledImages:
    """`digits_dataset` as `LabelledImages` (classes "0" to "9")."""
    train_x, train_y, test_x, test_y = digits_dataset(seed, size)
    return LabelledImages(train_x, train_y, test_x, test_y, _DIGIT_CLASSES, "scikit-learn's digits")


def _shift(x: torch.Tensor, gen: torch.Generator, pad: int = 3) -> torch.Tensor:
    """Random translations: pad, then crop back at a random offset."""
    padded = F.pad(x, (pad,) * 4)
    dy, dx = torch.randint(0, 2 * pad + 1, (2,), generator=gen).tolist()
    return padded[:, :, dy : dy + x.shape[2], dx : dx + x.shape[3]]


def fit_classifier(
    model: nn.Module,
    images: np.ndarray,
    labels: np.ndarray,
    *,
    epochs: int,
    batch_size: int = 64,
    lr: float = 5e-3,
    seed: int = 0,
    shift: int = 3,
    progress: bool = False,
) -> nn.Module:
    """Train `model` (in place) on uint8 (N, H, W, 3) `images`; returns it in eval mode.

    Adam under a one-cycle schedule peaking at `lr`, random shifts of up to `shift` pixels,
    inputs normalised as `to_tensor(normalize=True)` does. `progress` shows a bar over the
    epochs × steps.
    """
    from tqdm.auto import tqdm

    from edgeadapt.data import to_tensor

    gen = torch.Generator().manual_seed(seed)
    y_all = torch.from_numpy(np.asarray(labels, dtype=np.int64))
    n = len(y_all)
    # A last batch of one image is dropped: BatchNorm cannot train on one value per channel.
    starts = [i for i in range(0, n, batch_size) if n - i > 1 or n == 1]
    steps = epochs * len(starts)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    model.train()
    with tqdm(total=steps, desc="training", unit="step", disable=not progress) as bar:
        for _ in range(epochs):
            perm = torch.randperm(n, generator=gen)
            for i in starts:
                idx = perm[i : i + batch_size]
                x = to_tensor(images[idx.numpy()], normalize=True)  # per batch: bounded memory
                loss = F.cross_entropy(model(_shift(x, gen, shift)), y_all[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
                bar.update()
    return model.eval()


@torch.no_grad()
def accuracy(
    model: nn.Module, images: np.ndarray, labels: np.ndarray, batch_size: int = 256
) -> float:
    """Percent of uint8 `images` the model, in eval mode, classifies as `labels`."""
    from edgeadapt.data import to_tensor

    model.eval()
    correct = 0
    for i in range(0, len(labels), batch_size):
        logits = model(to_tensor(images[i : i + batch_size], normalize=True))
        correct += int((logits.argmax(1).numpy() == labels[i : i + batch_size]).sum())
    return 100.0 * correct / max(len(labels), 1)


def _class_files(folder: Path) -> dict[str, list[Path]]:
    """Subfolder name -> its image files, for subfolders that hold at least one image."""
    from edgeadapt.data.image_folder import IMAGE_SUFFIXES

    found = {}
    for sub in sorted(folder.iterdir()):
        if sub.is_dir() and not sub.name.startswith("."):
            files = sorted(
                f for f in sub.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES
            )
            if files:
                found[sub.name] = files
    return found


def _scan(root: Path) -> tuple[dict[str, list[Path]], dict[str, list[Path]] | None]:
    """(train classes, held-out classes or None): `root/<class>/*`, or `root/train/<class>/*`
    with an optional `test/` (or `val/`) beside it."""
    if not root.is_dir():
        raise DataNotFoundError(
            f"--data {root}: no such folder; expected one subfolder of images per class"
        )
    train = _class_files(root / "train") if (root / "train").is_dir() else {}
    if not train:
        return _class_files(root), None
    for split in _HELDOUT_SPLITS:
        if (root / split).is_dir():
            heldout = _class_files(root / split)
            extra = sorted(set(heldout) - set(train))
            if extra:
                raise DataFormatError(
                    f"{root / split} has classes that train/ lacks ({', '.join(extra[:5])}); "
                    "give both splits the same class folders"
                )
            return train, heldout
    return train, None


def _class_order(names) -> tuple[str, ...]:
    from edgeadapt.data.cifar import CIFAR10_CLASSES

    # CIFAR-10's label order when the folders are its classes, so the benchmark's labels agree.
    return tuple(CIFAR10_CLASSES) if set(names) == set(CIFAR10_CLASSES) else tuple(sorted(names))


def _decode(files: list[tuple[Path, int]], size: int, progress: bool) -> np.ndarray:
    from PIL import Image, ImageOps, UnidentifiedImageError
    from tqdm.auto import tqdm

    out = np.empty((len(files), size, size, 3), np.uint8)
    bar = tqdm(files, desc="decoding", unit="img", disable=not progress or len(files) < 500)
    for k, (path, _) in enumerate(bar):
        try:
            with Image.open(path) as img:
                # Centre-crop to a square, then resize: no squashing of non-square photos.
                fitted = ImageOps.fit(img.convert("RGB"), (size, size), Image.Resampling.BILINEAR)
        except (UnidentifiedImageError, OSError, SyntaxError) as exc:
            raise DataFormatError(f"{path}: cannot decode image ({exc})") from exc
        out[k] = np.asarray(fitted)
    return out


def _plan(root: Path, seed: int) -> tuple[tuple[str, ...], list, list]:
    """(classes, train files, held-out files), files as (path, label): no image decoded."""
    train, heldout = _scan(root)
    if len(train) < 2:
        where = root / "train" if (root / "train").is_dir() else root
        raise DataFormatError(
            f"--data {where}: found {len(train)} class folder(s) with images "
            f"({', '.join(train) or 'none'}); a classifier needs at least 2: one subfolder of "
            "images per class"
        )
    classes = _class_order(train)
    label = {c: i for i, c in enumerate(classes)}
    if heldout is not None:
        train_files = [(f, label[c]) for c in classes for f in train[c]]
        return classes, train_files, [(f, label[c]) for c in heldout for f in heldout[c]]
    rng = np.random.default_rng(seed)
    train_files, heldout_files = [], []
    for c in classes:
        files = [train[c][j] for j in rng.permutation(len(train[c]))]
        n_out = min(len(files) - 1, max(1, round(len(files) * HOLDOUT_FRACTION)))
        heldout_files += [(f, label[c]) for f in files[:n_out]]
        train_files += [(f, label[c]) for f in files[n_out:]]
    return classes, train_files, heldout_files


def _load_planned(root: Path, plan, size: int, progress: bool) -> LabelledImages:
    classes, train_files, heldout_files = plan
    files = train_files + heldout_files
    images = _decode(files, size, progress)
    labels = np.array([y for _, y in files], dtype=np.int64)
    n = len(train_files)
    return LabelledImages(images[:n], labels[:n], images[n:], labels[n:], classes, str(root))


def load_class_folders(
    root: str | os.PathLike[str], *, size: int = 32, seed: int = 0, progress: bool = False
) -> LabelledImages:
    """Labelled images from `root/<class>/*.jpg|png` (or `root/train/<class>/*` with an
    optional `root/test/` or `root/val/`), centre-cropped and resized to size × size.

    Without a test/val split, `HOLDOUT_FRACTION` of each class (at least one image of a class
    that has two) is held out, drawn with `seed`.

    Raises:
        DataNotFoundError: `root` is not a folder.
        DataFormatError: fewer than two class folders with images, or an undecodable image.
    """
    root = Path(root)
    return _load_planned(root, _plan(root, seed), size, progress)


def _check(model_name, out, epochs, batch_size, lr, size) -> None:
    """Every value, before anything slow; each failure is one ConfigError line."""
    from edgeadapt.models import get_model_entry

    get_model_entry(model_name)  # UnknownNameError with close matches
    for flag, value, low in (("--epochs", epochs, 1), ("--batch", batch_size, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ConfigError(f"{flag} must be an int >= {low}, got {value!r}")
    # The backbones downsample 4× (CIFAR) or more: below 8 pixels nothing is left to pool.
    if isinstance(size, bool) or not isinstance(size, int) or size < 8:
        raise ConfigError(f"--size must be an int >= 8 (pixels), got {size!r}")
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise ConfigError(f"--lr must be a positive number, got {lr!r}")
    out = Path(out)
    if out.is_dir():
        raise ConfigError(f"--out {out} is a folder; pass the path of the checkpoint file")
    parent = out.absolute().parent
    if not parent.is_dir():
        raise ConfigError(f"--out {out}: folder {parent} does not exist; create it first")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"--out {out}: cannot write in {parent} (permission denied)")


def train_source(
    model_name: str = "resnet20",
    *,
    out: str | os.PathLike[str],
    data: str | os.PathLike[str] | None = None,
    epochs: int = 15,
    batch_size: int = 64,
    lr: float = 5e-3,
    size: int = 32,
    seed: int = 0,
    progress: bool = True,
    log: Callable[[str], object] = print,
) -> SourceTrainingResult:
    """Train `model_name` on the class folders in `data` (default: scikit-learn's digits) and
    write its checkpoint to `out`, atomically.

    Every value is checked before any image is decoded; `seed` seeds torch's global generator
    (the model's initialisation) as well as the shuffles and shifts. The checkpoint is a dict with the
    ``state_dict`` and what it was trained on (``classes``, ``input_size``, accuracies);
    `load_checkpoint` reads it, so ``create_model(model_name, num_classes=len(classes),
    checkpoint=out)`` restores the model.

    Raises:
        ConfigError: a value out of range, or `out` in a folder that does not exist.
        UnknownNameError: `model_name` is not registered.
        DataNotFoundError, DataFormatError: see `load_class_folders`.
        MissingExtraError: no `data` and scikit-learn is not installed.
    """
    from edgeadapt._atomic import atomic_path
    from edgeadapt.models import CIFAR_MEAN, CIFAR_STD, create_model

    _check(model_name, out, epochs, batch_size, lr, size)
    if data is None:
        from edgeadapt._extras import require

        require("sklearn", "training on the digits")
        plan, classes = None, _DIGIT_CLASSES
    else:
        plan = _plan(Path(data), seed)  # lists the files only: bad folders fail in a second
        classes = plan[0]
    torch.manual_seed(seed)
    # Built before decoding: a model that cannot be built (torchvision missing) fails early.
    model = create_model(model_name, num_classes=len(classes))
    if plan is None:
        found = digits_images(size, seed)
    else:
        found = _load_planned(Path(data), plan, size, progress)
    held = f", {len(found.heldout_y)} held out" if len(found.heldout_y) else ""
    plural = "" if epochs == 1 else "s"
    log(
        f"training {model_name} on {len(found.train_y)} images of {found.description} "
        f"({len(found.classes)} classes, {size}×{size}{held}) for {epochs} epoch{plural}"
    )
    fit_classifier(
        model, found.train_x, found.train_y, epochs=epochs, batch_size=batch_size, lr=lr,
        seed=seed, shift=max(1, round(3 * size / 32)), progress=progress,
    )  # fmt: skip
    train_acc = accuracy(model, found.train_x, found.train_y)
    has_heldout = len(found.heldout_y) > 0
    heldout_acc = accuracy(model, found.heldout_x, found.heldout_y) if has_heldout else None
    payload = {
        "state_dict": model.state_dict(),
        "model": model_name,
        "classes": list(found.classes),
        "input_size": size,
        "normalization": {"mean": list(CIFAR_MEAN), "std": list(CIFAR_STD)},
        "train_accuracy": train_acc,
        "heldout_accuracy": heldout_acc,
        "data": found.description,
    }
    with atomic_path(out) as tmp:
        torch.save(payload, tmp)
    return SourceTrainingResult(
        path=Path(out), model=model_name, classes=found.classes, train_accuracy=train_acc,
        heldout_accuracy=heldout_acc, n_train=len(found.train_y), n_heldout=len(found.heldout_y),
    )  # fmt: skip
