"""A video that ends before its declared length is reported, never passed off as whole: the
source counts decoded against declared frames, `edgeadapt stream` writes the summary with the
shortfall in it, warns, and exits 3 unless --allow-partial."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgeadapt.cli import main
from edgeadapt.video.command import PARTIAL_INPUT_EXIT
from edgeadapt.video.errors import FrameDecodeError, PartialVideoError
from edgeadapt.video.sources import open_frames

FRAMES = 40


def write_video(path: Path, fmt: str = "mp4") -> Path:
    """A noisy 32×32 clip (noise keeps every frame's packet large); mp4 with its index (moov)
    up front, as streaming-friendly files are, so a truncated file still declares its length."""
    import av

    rng = np.random.default_rng(0)
    options = {"movflags": "faststart"} if fmt == "mp4" else {}
    with av.open(str(path), mode="w", format=fmt, options=options) as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        for _ in range(FRAMES):
            img = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
        container.mux(stream.encode())
    return path


def truncate(path: Path, keep: float = 0.6) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


@pytest.mark.parametrize("fmt, declared_from", [("mp4", "frame count"), ("matroska", "duration")])
def test_a_whole_video_reports_every_declared_frame(tmp_path, fmt, declared_from):
    source = open_frames(write_video(tmp_path / "whole.vid", fmt))
    assert len(list(source)) == FRAMES
    report = source.input_report()
    assert (report.declared_frames, report.declared_from) == (FRAMES, declared_from)
    assert report.decoded_frames == FRAMES and report.reached_end and not report.partial


@pytest.mark.parametrize("fmt", ["mp4", "matroska"])
def test_a_truncated_video_raises_after_its_frames_unless_allowed(tmp_path, fmt):
    path = truncate(write_video(tmp_path / "cut.vid", fmt))
    read = []
    with pytest.raises(PartialVideoError, match=rf"of the {FRAMES} frames.*allow_partial"):
        read.extend(open_frames(path))
    assert 0 < len(read) < FRAMES
    allowed = open_frames(path, allow_partial=True)
    assert len(list(allowed)) == len(read)
    report = allowed.input_report()
    assert report.partial and report.missing_frames == FRAMES - len(read)
    assert report.to_dict()["decoded_frames"] == len(read)


def test_stopping_at_a_limit_is_not_a_partial_video(tmp_path):
    source = open_frames(truncate(write_video(tmp_path / "cut.mp4")), limit=2)
    assert len(list(source)) == 2
    assert not source.input_report().partial  # the end was never reached: nothing to judge


def test_a_truncated_file_without_frames_still_fails_loudly(tmp_path):
    with pytest.raises(FrameDecodeError):
        list(open_frames(truncate(write_video(tmp_path / "cut.mp4"), keep=0.05)))


def _stream(path: Path, checkpoint: Path, out: Path, *extra: str) -> int:
    return main(["stream", str(path), "--model", "tiny_resnet", "--checkpoint", str(checkpoint),
                 "--json", str(out), "--quiet", *extra])  # fmt: skip


def test_stream_writes_the_summary_then_exits_3_on_a_truncated_video(
    tmp_path, tiny_checkpoint, capsys
):
    path, out = truncate(write_video(tmp_path / "cut.mp4")), tmp_path / "out.json"
    assert _stream(path, tiny_checkpoint, out) == PARTIAL_INPUT_EXIT == 3
    err = capsys.readouterr().err
    assert f"of the {FRAMES} frames" in err and "--allow-partial" in err
    report = json.loads(out.read_text())
    decoded = report["input"]["decoded_frames"]
    assert report["frames"] == decoded < FRAMES and report["input"]["partial"] is True
    assert report["input"]["declared_frames"] == FRAMES and report["warnings"]


def test_allow_partial_exits_0_and_still_warns(tmp_path, tiny_checkpoint, capsys):
    path, out = truncate(write_video(tmp_path / "cut.mp4")), tmp_path / "out.json"
    assert _stream(path, tiny_checkpoint, out, "--allow-partial") == 0
    assert "warning" in capsys.readouterr().err
    assert json.loads(out.read_text())["input"]["partial"] is True


def test_a_whole_video_exits_0_with_its_counts_in_the_summary(tmp_path, tiny_checkpoint, capsys):
    out = tmp_path / "out.json"
    assert _stream(write_video(tmp_path / "whole.mp4"), tiny_checkpoint, out) == 0
    assert capsys.readouterr().err == ""
    report = json.loads(out.read_text())
    assert report["input"]["decoded_frames"] == FRAMES and not report["input"]["partial"]
    assert "warnings" not in report
