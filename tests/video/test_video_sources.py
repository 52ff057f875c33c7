"""Frame sources: video files, image sequences, cameras, arrays; bad input gives typed errors."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from edgeadapt.errors import ConfigError, InputError
from edgeadapt.video.errors import FrameDecodeError, MissingDependencyError, SourceNotFoundError
from edgeadapt.video.sources import (
    ArraySource,
    CameraSource,
    ImageSequenceSource,
    VideoFileSource,
    open_frames,
)


def test_video_file_decodes_every_frame_close_to_what_was_written(mp4: Path, clip: np.ndarray):
    frames = list(open_frames(mp4))
    assert isinstance(open_frames(mp4), VideoFileSource)
    assert len(frames) == len(clip)
    assert all(f.dtype == np.uint8 and f.shape == (32, 32, 3) for f in frames)
    # Lossy codec: close to the source, and the square is where it was written.
    err = np.abs(np.stack(frames).astype(int) - clip.astype(int)).mean()
    assert err < 12
    assert frames[5][12, 9:12].mean() > frames[5][12, 20:23].mean() + 60


def test_selection_start_stride_limit_and_resize(mp4: Path):
    frames = list(open_frames(mp4, start=2, stride=3, limit=2, size=(8, 16), fit="squash"))
    assert len(frames) == 2 and frames[0].shape == (8, 16, 3)
    assert len(list(open_frames(mp4, start=100))) == 0


def test_image_folder_is_read_in_natural_order(image_folder: Path, clip: np.ndarray):
    source = open_frames(image_folder)
    assert isinstance(source, ImageSequenceSource)
    frames = np.stack(list(source))
    np.testing.assert_array_equal(frames, clip)  # PNG is lossless: frame10 after frame9
    globbed = np.stack(list(open_frames(str(image_folder / "frame1*.png"))))
    np.testing.assert_array_equal(globbed, clip[[1, 10, 11]])


def test_array_source_and_camera_index_are_recognised(clip: np.ndarray):
    assert isinstance(open_frames(clip), ArraySource)
    assert len(list(open_frames(clip, limit=3))) == 3
    assert isinstance(open_frames("0"), CameraSource)
    assert isinstance(open_frames(1), CameraSource)


def test_missing_file_folder_and_glob_raise_source_not_found(tmp_path: Path):
    with pytest.raises(SourceNotFoundError, match="no such video file"):
        open_frames(tmp_path / "nope.mp4")
    with pytest.raises(SourceNotFoundError):
        VideoFileSource(tmp_path / "nope.mp4")
    with pytest.raises(FileNotFoundError):  # callers catching the built-in keep working
        open_frames(str(tmp_path / "*.png"))


def test_empty_image_folder_raises(tmp_path: Path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    with pytest.raises(SourceNotFoundError, match="no images"):
        open_frames(tmp_path / "empty")


def test_corrupt_video_raises_frame_decode_error(tmp_path: Path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"garbage" * 50)
    with pytest.raises(FrameDecodeError, match=r"bad\.mp4"):
        list(open_frames(bad))


def test_truncated_video_fails_loudly_or_yields_only_real_frames(tmp_path, clip, make_mp4):
    path = make_mp4(tmp_path / "cut.mp4", clip)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    try:
        frames = list(open_frames(path))
    except FrameDecodeError:
        return
    assert 0 < len(frames) <= len(clip)  # never invented frames


def test_corrupt_image_raises_frame_decode_error(image_folder: Path):
    (image_folder / "frame3.png").write_bytes(b"not a png")
    with pytest.raises(FrameDecodeError, match=r"frame3\.png"):
        list(open_frames(image_folder))


def test_mixed_frame_sizes_need_a_size(tmp_path: Path, clip: np.ndarray):
    from PIL import Image

    Image.fromarray(clip[0]).save(tmp_path / "a0.png")
    Image.fromarray(clip[1, :16]).save(tmp_path / "a1.png")
    with pytest.raises(FrameDecodeError, match="size"):
        list(open_frames(tmp_path))
    assert [f.shape for f in open_frames(tmp_path, size=8)] == [(8, 8, 3)] * 2


def test_bad_selection_and_bad_frames_are_rejected(clip: np.ndarray):
    with pytest.raises(ConfigError):
        open_frames(clip, stride=0)
    with pytest.raises(InputError, match="uint8"):
        list(open_frames(clip.astype(np.float32)))


def test_camera_without_opencv_names_the_pip_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "cv2", None)  # makes `import cv2` raise ImportError
    with pytest.raises(MissingDependencyError, match="pip install opencv-python-headless"):
        list(open_frames(0, limit=1))


def test_camera_that_does_not_open_raises_source_not_found():
    pytest.importorskip("cv2")
    with pytest.raises(SourceNotFoundError, match="camera 63"):
        list(open_frames(63, limit=1))
