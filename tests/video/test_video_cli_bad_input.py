"""`edgeadapt stream` refuses bad input before it loads a model or decodes a frame: exit 2, one
line on stderr that names the flag."""

from __future__ import annotations

import time

import pytest
import torch

from edgeadapt.cli import main

FAST_S = 10.0  # far under a model load plus a stream


def _refused(capsys, argv: list[str]) -> str:
    start = time.perf_counter()
    code = main(argv)
    elapsed = time.perf_counter() - start
    err = capsys.readouterr().err
    assert code == 2, err
    assert elapsed < FAST_S, f"took {elapsed:.1f} s: the check ran after slow work"
    assert len(err.strip().splitlines()) == 1, err
    return err


@pytest.mark.parametrize(
    "argv, flag",
    [
        (["--limit", "0"], "--limit"),
        (["--limit", "-5"], "--limit"),
        (["--delta", "--limit", "1"], "--limit"),  # delta calibrates on 2 frames
        (["--stride", "0"], "--stride"),
        (["--start", "-1"], "--start"),
        (["--bits", "0"], "--bits"),
        (["--bits", "99"], "--bits"),
        (["--num-classes", "0"], "--num-classes"),
        (["--adapt", "tent", "--adapt-batch", "0"], "--adapt-batch"),
        (["--adapt", "tentt"], "--adapt"),
        (["--input-threshold", "-1"], "--input-threshold"),
        (["--input-threshold", "255"], "--input-threshold"),
        (["--scene-cut-threshold", "1.5"], "--scene-cut-threshold"),
        (["--cut-at", "3,-1"], "--cut-at"),
        (["--delta-weights", "w.pt"], "--delta"),
        (["--delta", "--delta-weights", "nope.pt"], "--delta-weights"),
        (["--fast"], "--delta"),
        (["--delta", "--fast", "--adapt", "tent"], "--adapt"),
        (["--delta", "--fast", "--input-threshold", "1.5"], "--input-threshold"),
    ],
)
def test_bad_values_exit_2_with_one_line_naming_the_flag(capsys, mp4, tiny_checkpoint, argv, flag):
    argv = ["stream", str(mp4), "--model", "tiny_resnet", "--checkpoint", str(tiny_checkpoint),
            *argv]  # fmt: skip
    assert flag in _refused(capsys, argv)


def test_a_missing_checkpoint_is_refused_not_replaced_by_random_weights(capsys, mp4):
    err = _refused(capsys, ["stream", str(mp4), "--model", "tiny_resnet"])
    assert "--checkpoint" in err and "trained weights" in err
    err = _refused(capsys, ["stream", str(mp4), "--model", "tiny_resnet", "--checkpoint", "no.pt"])
    assert "--checkpoint" in err and "no such file" in err


def test_unknown_model_names_the_flag(capsys, mp4, tiny_checkpoint):
    err = _refused(capsys, ["stream", str(mp4), "--model", "resnet21", "--checkpoint",
                            str(tiny_checkpoint)])  # fmt: skip
    assert "--model" in err and "resnet20" in err


@pytest.mark.parametrize(
    "json_path, says",
    [
        (lambda d: d, "is a folder"),
        (lambda d: d / "somefile.txt" / "out.json", "is a file"),
    ],
)
def test_unusable_json_paths_exit_2(capsys, mp4, tiny_checkpoint, tmp_path, json_path, says):
    (tmp_path / "somefile.txt").write_text("not a folder")
    err = _refused(capsys, ["stream", str(mp4), "--model", "tiny_resnet", "--checkpoint",
                            str(tiny_checkpoint), "--json", str(json_path(tmp_path))])  # fmt: skip
    assert "--json" in err and says in err


def test_delta_weights_stand_in_for_the_checkpoint(capsys, mp4, clip, tiny_net, tmp_path):
    # A deltaified model's state holds every weight: no --checkpoint needed beside it.
    from edgeadapt.delta import deltaify
    from edgeadapt.video.preprocess import to_model_input

    weights = tmp_path / "delta.pt"
    torch.save(deltaify(tiny_net, to_model_input(clip[:4])).state_dict(), weights)
    code = main(["stream", str(mp4), "--model", "tiny_resnet", "--delta", "--delta-weights",
                 str(weights), "--limit", "4", "--quiet"])  # fmt: skip
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "frames 4" in captured.out
