"""`edgeadapt stream` end to end on a tiny generated video and a tiny model."""

from __future__ import annotations

import json

import pytest

from edgeadapt.cli import main


def test_stream_command_writes_the_summary_and_per_frame_records(
    mp4, tiny_checkpoint, tmp_path, capsys
):
    out = tmp_path / "out.json"
    code = main(
        ["stream", str(mp4), "--model", "tiny_resnet", "--checkpoint", str(tiny_checkpoint),
         "--delta", "--adapt", "ecotta", "--no-warmup", "--adapt-batch", "4", "--compare-dense",
         "--cut-at", "6", "--json", str(out), "--quiet"]
    )  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert "MACs/frame" in printed and "agreement" in printed
    report = json.loads(out.read_text())
    assert report["frames"] == 12 and report["settings"]["adapt"] == "ecotta"
    assert report["adaptation"]["steps"] == 3
    assert report["scene_cuts_signalled"] == 1
    assert len(report["per_frame"]["latency_ms"]) == 12
    assert report["nonzero_delta_per_layer"]


def test_stream_command_runs_the_fast_delta_runtime(mp4, tiny_checkpoint, tmp_path, capsys):
    from edgeadapt.delta.fast_native import compiler_found

    if not compiler_found():  # with a compiler, a failed build fails the test
        pytest.skip("no C++ compiler: the fast runtime's kernels cannot build")
    out = tmp_path / "fast.json"
    code = main(["stream", str(mp4), "--model", "tiny_resnet", "--checkpoint",
                 str(tiny_checkpoint), "--delta", "--fast", "--compare-dense", "--json",
                 str(out), "--quiet"])  # fmt: skip
    assert code == 0
    report = json.loads(out.read_text())
    assert report["settings"]["fast"] is True and report["frames"] == 12
    assert report["macs"]["performed_per_frame"] < report["macs"]["dense_per_frame"]
    assert report["nonzero_delta_per_layer"]


def test_stream_command_reports_a_missing_source_without_a_traceback(
    tiny_checkpoint, tmp_path, capsys
):
    code = main(["stream", str(tmp_path / "missing.mp4"), "--model", "tiny_resnet",
                 "--checkpoint", str(tiny_checkpoint)])  # fmt: skip
    assert code == 2
    assert "no such video file" in capsys.readouterr().err
