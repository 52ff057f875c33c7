"""Frame sources: video files (PyAV), image sequences (Pillow), cameras (OpenCV), arrays.

Every source iterates uint8 (H, W, 3) RGB frames, optionally fitted to the model's input
size, from `start`, every `stride`-th frame, at most `limit` frames. Decoders are imported
when a source is opened, so `import edgeadapt.video` stays light; a missing one raises
`MissingDependencyError` naming the pip package.

A video file that ends before the length its container declares (a truncated download, a
recording cut short) or loses packets its decoder rejects raises `PartialVideoError` once the
frames it holds are read, unless `allow_partial=True`; `input_report()` says what was read
either way.
"""

from __future__ import annotations

import glob
import re
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from edgeadapt._extras import require
from edgeadapt.errors import ConfigError
from edgeadapt.video.errors import (
    FrameDecodeError,
    MissingDependencyError,
    PartialVideoError,
    SourceNotFoundError,
)
from edgeadapt.video.preprocess import Fit, check_frame, fit_frame

__all__ = [
    "IMAGE_SUFFIXES",
    "ArraySource",
    "CameraSource",
    "FrameSource",
    "ImageSequenceSource",
    "InputReport",
    "VideoFileSource",
    "open_frames",
]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
_GLOB_CHARS = re.compile(r"[*?\[]")


@dataclass(frozen=True)
class InputReport:
    """What the latest pass over a video read, against what its container declares."""

    declared_frames: int | None  # the container's frame count, else from its duration; None
    declared_from: str | None  # "frame count" or "duration" (an estimate: rate × duration)
    decoded_frames: int  # frames the decoder delivered (before start / stride / limit)
    failed_packets: int  # packets the decoder rejected: frames lost mid-stream
    reached_end: bool  # the demuxer reached the end (False: stopped by limit or a read error)
    read_error: str | None  # what stopped reading before the end, if anything did

    @property
    def missing_frames(self) -> int:
        """Frames short of the declared count, once the end was reached; else 0."""
        if not self.reached_end or self.declared_frames is None:
            return 0
        short = self.declared_frames - self.decoded_frames
        # A count from the duration is rate × duration, rounded: allow 2% for its error.
        slack = 0 if self.declared_from == "frame count" else max(1, self.declared_frames // 50)
        return short if short > slack else 0

    @property
    def partial(self) -> bool:
        """The pass lost frames: it ended early, or frames failed to decode."""
        return bool(self.missing_frames or self.failed_packets or self.read_error)

    def describe(self) -> str:
        """One line on what was lost (or that nothing was)."""
        if not self.partial:
            return f"decoded {self.decoded_frames} frames, none lost"
        said = []
        if self.read_error:
            said.append(f"reading stopped after {self.decoded_frames} frames ({self.read_error})")
        if self.missing_frames:
            said.append(
                f"decoded {self.decoded_frames} of the {self.declared_frames} frames its "
                f"{self.declared_from} declares: the file ends early (truncated?)"
            )
        if self.failed_packets:
            said.append(f"{self.failed_packets} packets failed to decode (frames lost)")
        return "; ".join(said)

    def to_dict(self) -> dict[str, object]:
        return {**asdict(self), "missing_frames": self.missing_frames, "partial": self.partial}


class FrameSource:
    """Base class: subclasses yield raw RGB frames from `_raw()`; this applies the selection.

    Args:
        size: fit frames to this (int for square, or (height, width)); None keeps them.
        fit: "crop" (keep aspect, cut the centre) or "squash" (see `fit_frame`).
        limit: at most this many frames (None: all).
        stride: keep every `stride`-th frame.
        start: skip this many frames first.
        allow_partial: a source that ends before its declared length or loses frames it
            cannot decode (a video file) ends quietly instead of raising `PartialVideoError`;
            `input_report()` says what was read.
    """

    name = "frames"

    def __init__(
        self,
        *,
        size: int | Sequence[int] | None = None,
        fit: Fit = "crop",
        limit: int | None = None,
        stride: int = 1,
        start: int = 0,
        allow_partial: bool = False,
    ) -> None:
        if stride < 1 or start < 0 or (limit is not None and limit < 0):
            raise ConfigError(
                f"need stride >= 1, start >= 0, limit >= 0; got {stride}, {start}, {limit}"
            )
        self.size, self.fit, self.limit, self.stride, self.start = size, fit, limit, stride, start
        self.allow_partial = allow_partial

    def input_report(self) -> InputReport | None:
        """What the latest iteration read against the declared length (video files); None for
        sources that declare none, or before any iteration."""
        return None

    def _raw(self) -> Iterator[np.ndarray]:
        raise NotImplementedError

    def _raw_count(self) -> int | None:
        """How many frames `_raw()` yields, where known without decoding them; else None."""
        return None

    def expected_frames(self) -> int | None:
        """How many frames iterating yields, where known before decoding (an array, an image
        list, a video container's frame count) after start, stride and limit; else `limit`
        (at most that many), or None when nothing says (a camera, a video without a count)."""
        raw = self._raw_count()
        if raw is None:
            return self.limit
        # Frames start, start + stride, ... below raw: ceil((raw - start) / stride).
        kept = max(0, -(-(raw - self.start) // self.stride))
        return kept if self.limit is None else min(kept, self.limit)

    def __iter__(self) -> Iterator[np.ndarray]:
        if self.limit == 0:
            return
        kept, first_shape = 0, None
        for i, frame in enumerate(self._raw()):
            if i < self.start or (i - self.start) % self.stride:
                continue
            frame = check_frame(frame, i)
            if self.size is not None:
                frame = fit_frame(frame, self.size, self.fit)
            elif first_shape is None:
                first_shape = frame.shape
            elif frame.shape != first_shape:
                raise FrameDecodeError(
                    f"{self.name}: frame {i} is {frame.shape[:2]} but the first was "
                    f"{first_shape[:2]}; pass size=... to resize every frame to one size"
                )
            yield frame
            kept += 1
            if self.limit is not None and kept >= self.limit:
                return


class ArraySource(FrameSource):
    """Frames from a uint8 (T, H, W, 3) array (synthetic clips, tests)."""

    def __init__(self, frames: np.ndarray, **kwargs) -> None:
        super().__init__(**kwargs)
        self.frames, self.name = frames, "array"

    def _raw(self) -> Iterator[np.ndarray]:
        yield from self.frames

    def _raw_count(self) -> int | None:
        return len(self.frames)


class VideoFileSource(FrameSource):
    """A video file decoded by PyAV (ffmpeg ships inside the `av` wheel)."""

    def __init__(self, path: str | Path, **kwargs) -> None:
        super().__init__(**kwargs)
        self.path = Path(path)
        self.name = str(path)
        if not self.path.is_file():
            raise SourceNotFoundError(f"video file not found: {self.path}")
        require("av", "reading a video file")  # before any progress bar or model work
        self._progress: dict[str, object] = {}  # the latest pass's InputReport fields

    def input_report(self) -> InputReport | None:
        return InputReport(**self._progress) if self._progress else None  # type: ignore[arg-type]

    def _raw(self) -> Iterator[np.ndarray]:
        av = require("av", "reading a video file")
        try:
            container = av.open(str(self.path))
        except (av.error.FFmpegError, OSError) as exc:
            raise FrameDecodeError(f"{self.path}: not a decodable video ({exc})") from exc
        try:
            if not container.streams.video:
                raise FrameDecodeError(f"{self.path}: has no video stream")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"  # decode with ffmpeg's own threads
            declared, declared_from = _declared_frames(container, stream)
            # Updated as frames arrive, so a pass cut short by `limit` still reports.
            progress = self._progress = {
                "declared_frames": declared, "declared_from": declared_from,
                "decoded_frames": 0, "failed_packets": 0, "reached_end": False,
                "read_error": None,
            }  # fmt: skip
            for frame in _decode(av, container, stream, progress):
                progress["decoded_frames"] += 1  # type: ignore[operator]
                yield frame.to_ndarray(format="rgb24")
            if progress["decoded_frames"] == 0:  # a header without pictures is no empty stream
                raise FrameDecodeError(
                    f"{self.path}: the video stream holds no decodable frames"
                    + (f" ({progress['read_error']})" if progress["read_error"] else "")
                )
            report = self.input_report()
            if report is not None and report.partial and not self.allow_partial:
                raise PartialVideoError(
                    f"{self.path}: {report.describe()}. Pass allow_partial=True (edgeadapt "
                    "stream: --allow-partial) to accept the frames that were read"
                )
        finally:
            container.close()

    def _raw_count(self) -> int | None:
        # The container's own count (0 where the format does not store one); only a progress
        # bar's total, so a file that cannot be read says so when it is decoded, not here.
        try:
            import av

            with av.open(str(self.path)) as container:
                count = container.streams.video[0].frames if container.streams.video else 0
        except Exception:
            return None
        return int(count) or None


def _decode(av, container, stream, progress: dict[str, object]):
    """The stream's frames, packet by packet: a packet the decoder rejects is counted and
    skipped (its frame is lost, the next key frame recovers), and a read error ends the
    stream where it happens; both go into `progress`."""
    packets = container.demux(stream)
    while True:
        try:
            packet = next(packets)
        except StopIteration:
            progress["reached_end"] = True
            return
        except av.error.FFmpegError as exc:
            progress["read_error"] = str(exc)
            return
        try:
            frames = packet.decode()
        except av.error.FFmpegError:
            progress["failed_packets"] += 1  # type: ignore[operator]
            continue
        yield from frames


def _declared_frames(container, stream) -> tuple[int | None, str | None]:
    """The frame count the container declares, or one from its duration and frame rate."""
    if stream.frames:
        return int(stream.frames), "frame count"
    rate = stream.average_rate or stream.guessed_rate
    if stream.duration and stream.time_base and rate:
        seconds = stream.duration * stream.time_base
    elif container.duration and rate and len(container.streams) == 1:
        # The container's duration is its longest stream's: the video's only when it is alone.
        seconds = Fraction(container.duration, 1_000_000)  # AV_TIME_BASE
    else:
        return None, None
    return round(seconds * rate) or None, "duration"


def _natural_key(path: Path) -> list[object]:
    # frame2.png before frame10.png
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path.name)]


class ImageSequenceSource(FrameSource):
    """Image files in order: a folder (its images, natural sort), a glob, or a list of paths."""

    def __init__(self, spec: str | Path | Sequence[str | Path], **kwargs) -> None:
        super().__init__(**kwargs)
        if isinstance(spec, (str, Path)):
            self.name = str(spec)
            self.paths = _image_paths(str(spec))
        else:
            self.name = "image list"
            self.paths = [Path(p) for p in spec]
            missing = [str(p) for p in self.paths if not p.is_file()]
            if missing:
                raise SourceNotFoundError(f"image files not found: {missing[:5]}")
        if not self.paths:
            raise SourceNotFoundError(
                f"no images ({', '.join(IMAGE_SUFFIXES)}) found in {self.name}"
            )

    def _raw_count(self) -> int | None:
        return len(self.paths)

    def _raw(self) -> Iterator[np.ndarray]:
        pil = _import("PIL.Image", "pillow")
        for path in self.paths:
            try:
                with pil.open(path) as img:
                    yield np.asarray(img.convert("RGB"), dtype=np.uint8)
            except (pil.UnidentifiedImageError, OSError) as exc:
                raise FrameDecodeError(f"{path}: not a readable image ({exc})") from exc


def _image_paths(spec: str) -> list[Path]:
    if _GLOB_CHARS.search(spec):
        found = [Path(p) for p in glob.glob(spec) if Path(p).is_file()]
    elif Path(spec).is_dir():
        found = [p for p in Path(spec).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES]
    else:
        raise SourceNotFoundError(f"image folder not found: {spec}")
    return sorted(found, key=_natural_key)


class CameraSource(FrameSource):
    """A camera by index, through OpenCV (`pip install opencv-python-headless`).

    Without `limit` it streams until the camera stops delivering frames.
    """

    def __init__(self, index: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.index, self.name = int(index), f"camera {index}"

    def _raw(self) -> Iterator[np.ndarray]:
        cv2 = _import("cv2", "opencv-python-headless")
        cap = cv2.VideoCapture(self.index)
        try:
            if not cap.isOpened():
                raise SourceNotFoundError(
                    f"camera {self.index} could not be opened; check the index and permissions"
                )
            while True:
                ok, bgr = cap.read()
                if not ok:
                    return
                yield np.ascontiguousarray(bgr[:, :, ::-1])  # OpenCV delivers BGR
        finally:
            cap.release()


def _import(module: str, package: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(
            f"reading this source needs {module!r}: pip install {package}"
        ) from exc


def open_frames(source: str | Path | int | np.ndarray, **kwargs) -> FrameSource:
    """The right source for `source`: a camera index (int or digits), a video file, an image
    folder, a glob of images, a single image, or a uint8 (T, H, W, 3) array. Keyword
    arguments (size, fit, limit, stride, start) go to the source."""
    if isinstance(source, np.ndarray):
        return ArraySource(source, **kwargs)
    if isinstance(source, int) or (isinstance(source, str) and source.isdigit()):
        return CameraSource(int(source), **kwargs)
    spec = str(source)
    path = Path(spec)
    if _GLOB_CHARS.search(spec) or path.is_dir():
        return ImageSequenceSource(spec, **kwargs)
    if not path.exists():
        raise SourceNotFoundError(
            f"{spec}: no such video file, image folder or glob (a camera is an integer index)"
        )
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return ImageSequenceSource([path], **kwargs)
    return VideoFileSource(path, **kwargs)
