"""`edgeadapt stream --size`: N means N×N (as before), HxW a rectangle, threaded through the
fit, the model and the summary; anything else is an argparse error naming the accepted forms."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgeadapt.cli import main
from edgeadapt.video.command import _frame_size
from edgeadapt.video.sources import open_frames


@pytest.mark.parametrize(
    "text, size", [("32", (32, 32)), ("240x320", (240, 320)), ("24X40", (24, 40)), ("7×9", (7, 9))]
)
def test_sizes_parse_as_height_and_width(text, size):
    assert _frame_size(text) == size


@pytest.mark.parametrize("bad", ["0", "-4", "abc", "24x", "x24", "0x8", "8x-1", "2x3x4", ""])
def test_bad_sizes_are_argparse_errors_naming_the_flag_and_the_forms(capsys, mp4, bad):
    with pytest.raises(SystemExit) as exit_:
        main(["stream", str(mp4), "--model", "tiny_resnet", "--size", bad])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "--size" in err and "HxW" in err and "240x320" in err, err


def test_a_rectangle_reaches_the_frames_the_model_and_the_summary(
    mp4, tiny_checkpoint, tmp_path, capsys
):
    out = tmp_path / "out.json"
    code = main(["stream", str(mp4), "--model", "tiny_resnet", "--checkpoint",
                 str(tiny_checkpoint), "--size", "24x40", "--delta", "--limit", "6",
                 "--json", str(out), "--quiet"])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    report = json.loads(out.read_text())
    assert report["frames"] == 6 and report["settings"]["size"] == [24, 40]
    frames = list(open_frames(mp4, size=(24, 40), limit=2))
    assert [f.shape for f in frames] == [(24, 40, 3)] * 2 and frames[0].dtype == np.uint8


def test_a_single_number_still_means_a_square(mp4, tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "out.json"
    code = main(["stream", str(mp4), "--model", "tiny_resnet", "--checkpoint",
                 str(tiny_checkpoint), "--size", "16", "--limit", "3", "--json", str(out),
                 "--quiet"])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    assert json.loads(out.read_text())["settings"]["size"] == [16, 16]
