"""Sample data for a first run, offline: scikit-learn's digits as the files a user would bring.

`write_sample_data` writes what the README's walk-through uses, from data that ships with
scikit-learn (no download): the 8×8 digits upscaled to 32×32 RGB (as the demo does) as an
image folder with a `train/` and a `test/` split of one subfolder per class, which
`edgeadapt train-source --data`, `edgeadapt export --source-data/--check-data` and
`load_image_folder` read; and a short "camera" stream made of held-out digits, each filmed
for a few frames (`edgeadapt.video.synthetic`: pan, zoom, light drift) and then corrupted
(the shift that adaptation is for), written as a video (`clip.mp4`, for `edgeadapt stream`)
and as a tensor of normalised frames (`frames.pt`, for the Python API and `edgeadapt device
stream`).
"""

from __future__ import annotations

import math
import os
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeadapt.errors import ConfigError

__all__ = ["CLIP_RATE", "SampleData", "write_sample_data"]

SIZE = 32  # the side of every image and frame: the CIFAR size the corruptions are defined at
CLIP_RATE = 8  # frames per second of clip.mp4


@dataclass(frozen=True)
class SampleData:
    """What `write_sample_data` wrote."""

    root: Path  # the folder holding everything below
    train: Path  # root/train/<digit>/<n>.png: the source model's training images
    test: Path  # root/test/<digit>/<n>.png: held out (the stream's digits come from here)
    frames: Path  # root/frames.pt: float32 (N, 3, 32, 32), normalised as training normalises
    clip: Path | None  # root/clip.mp4: the same N frames as a video; None with clip=False
    labels: tuple[int, ...]  # the digit each of the N frames shows
    n_train: int
    n_test: int


def _check(out: Path, frames: int, per_digit: int, corruption: str, severity: int) -> None:
    """Every value, before anything is written; each failure is one ConfigError line."""
    for flag, value in (("--frames", frames), ("--per-digit", per_digit)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{flag} must be an int >= 1, got {value!r}")
    if isinstance(severity, bool) or not isinstance(severity, int) or not 1 <= severity <= 5:
        raise ConfigError(f"--severity must be an int from 1 to 5, got {severity!r}")
    if corruption != "none":
        from edgeadapt.data import ALL_CORRUPTIONS

        if corruption not in ALL_CORRUPTIONS:
            from edgeadapt._suggest import unknown_name_message

            names = ["none", *ALL_CORRUPTIONS]
            raise ConfigError(
                f"--corruption: {unknown_name_message('corruption', corruption, names)}"
            )
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; pass a folder to write the sample data into")
    if out.is_dir() and any(out.iterdir()):
        raise ConfigError(
            f"--out {out} is not empty; pass a new folder (the sample data is never written "
            "over other files)"
        )
    from edgeadapt._cli_args import output_folder

    output_folder(out, "--out")


def _write_split(folder: Path, images: np.ndarray, labels: np.ndarray) -> None:
    from PIL import Image

    for digit in range(10):
        (folder / str(digit)).mkdir(parents=True)
    for i, (image, label) in enumerate(zip(images, labels)):
        Image.fromarray(image).save(folder / str(int(label)) / f"{i:04d}.png")


def _write_clip(path: Path, frames: np.ndarray) -> None:
    import av

    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("mpeg4", rate=CLIP_RATE)
        stream.width, stream.height, stream.pix_fmt = SIZE, SIZE, "yuv420p"
        # The encoder's default rate (a few kbit/s at this size) smooths the corruption away;
        # this one keeps the frames within yuv420p's colour subsampling of frames.pt.
        stream.bit_rate = 1_000_000
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())  # flush the encoder


def write_sample_data(
    out: str | os.PathLike[str],
    *,
    frames: int = 32,
    per_digit: int = 8,
    corruption: str = "gaussian_noise",
    severity: int = 3,
    clip: bool = True,
    seed: int = 0,
) -> SampleData:
    """Write scikit-learn's digits into the folder `out` (see the module docstring).

    `out` must be new or empty: everything is written beside it first and renamed into place
    at the end, so an interrupted run leaves no half-written folder. The stream has `frames`
    frames: held-out digits in a fixed shuffle (`seed`), each filmed for `per_digit` frames,
    corrupted with `corruption` (a CIFAR-10-C name, or "none") at `severity`. `clip=False`
    skips the video, and with it PyAV.

    Raises:
        ConfigError: a value out of range, an unknown corruption, or `out` a file or a folder
            that is not empty.
        MissingExtraError: scikit-learn (the `bench` extra) or, for the clip, PyAV (the
            `video` extra) is not installed.
    """
    import torch

    from edgeadapt._extras import require
    from edgeadapt.data import corrupt, to_tensor
    from edgeadapt.errors import MissingExtraError
    from edgeadapt.source_training import digits_dataset
    from edgeadapt.video.synthetic import ClipStyle, synthesize_clips

    out = Path(out)
    _check(out, frames, per_digit, corruption, severity)
    require("sklearn", "the sample data (scikit-learn's digits)")
    if clip:
        try:
            require("av", "the sample clip")
        except MissingExtraError as exc:
            raise MissingExtraError(f"{exc}; or pass --no-clip") from exc
    train_x, train_y, test_x, test_y = digits_dataset(seed, SIZE)
    n_digits = math.ceil(frames / per_digit)
    if n_digits > len(test_y):
        raise ConfigError(
            f"--frames {frames} at --per-digit {per_digit} needs {n_digits} held-out digits; "
            f"there are {len(test_y)}: pass fewer frames or more per digit"
        )
    # Each digit filmed as a camera would (a slow pan and zoom, light drift, sensor noise),
    # then corrupted: the stream a deployed model meets, in runs of one label.
    style = ClipStyle(length=per_digit)
    stream = synthesize_clips(test_x[:n_digits], style, seed=seed).reshape(-1, SIZE, SIZE, 3)
    stream = stream[:frames]
    labels = tuple(int(y) for y in np.repeat(test_y[:n_digits], per_digit)[:frames])
    if corruption != "none":
        stream = corrupt(stream, corruption, severity, seed=seed)

    out.parent.mkdir(parents=True, exist_ok=True)
    # A fresh hidden name made with mkdir, so the folder gets the usual umask permissions.
    staging = out.parent / f".{out.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    staging.mkdir()
    try:
        _write_split(staging / "train", train_x, train_y)
        _write_split(staging / "test", test_x, test_y)
        torch.save(to_tensor(stream, normalize=True).contiguous(), staging / "frames.pt")
        if clip:
            _write_clip(staging / "clip.mp4", stream)
        if out.is_dir():
            out.rmdir()  # empty (checked above): the rename needs the name free
        os.replace(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return SampleData(
        root=out, train=out / "train", test=out / "test", frames=out / "frames.pt",
        clip=out / "clip.mp4" if clip else None, labels=labels, n_train=len(train_y),
        n_test=len(test_y),
    )  # fmt: skip
