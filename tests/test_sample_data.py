"""`edgeadapt sample-data`: the digits as an image folder, a clip and frames that the other
commands read; bad values stop with one line and exit 2 before anything is written."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from edgeadapt import cli

pytest.importorskip("sklearn")


def _run(argv: list[str], capsys) -> tuple[int, list[str], list[str]]:
    rc = cli.main(argv)
    captured = capsys.readouterr()
    return rc, captured.out.strip().splitlines(), captured.err.strip().splitlines()


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_writes_what_train_source_stream_and_the_device_read(tmp_path, capsys):
    pytest.importorskip("av")
    from edgeadapt.source_training import load_class_folders
    from edgeadapt.video.sources import open_frames

    out = tmp_path / "digits"
    rc, lines, err = _run(["sample-data", "--out", str(out), "--frames", "12", "--per-digit",
                           "4"], capsys)  # fmt: skip
    assert rc == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["clip.mp4", "frames.pt", "test", "train"]
    assert _leftovers(tmp_path) == []
    found = load_class_folders(out, size=32)  # train/ and test/, as train-source reads them
    assert found.classes == tuple(str(d) for d in range(10))
    assert len(found.train_y) == 1257 and len(found.heldout_y) == 540
    assert set(np.unique(found.heldout_y)) == set(range(10))
    frames = torch.load(out / "frames.pt", weights_only=True)
    assert frames.shape == (12, 3, 32, 32) and frames.dtype == torch.float32
    assert torch.isfinite(frames).all() and frames.std() > 0.5  # normalised, not in [0, 1]
    decoded = list(open_frames(str(out / "clip.mp4")))
    assert len(decoded) == 12 and decoded[0].shape == (32, 32, 3)
    assert "next: edgeadapt train-source --data" in lines[-1]


def test_the_stream_is_filmed_held_out_digits_then_corrupted(tmp_path):
    from edgeadapt.data import to_tensor
    from edgeadapt.sample_data import write_sample_data
    from edgeadapt.source_training import digits_dataset
    from edgeadapt.video.synthetic import ClipStyle, synthesize_clips

    clean = write_sample_data(tmp_path / "clean", frames=6, per_digit=3, corruption="none",
                              clip=False)  # fmt: skip
    noisy = write_sample_data(tmp_path / "noisy", frames=6, per_digit=3, clip=False)
    _, _, test_x, test_y = digits_dataset(0, 32)
    assert clean.clip is None and not (tmp_path / "clean" / "clip.mp4").exists()
    assert clean.labels == noisy.labels == tuple(int(y) for y in np.repeat(test_y[:2], 3))
    filmed = synthesize_clips(test_x[:2], ClipStyle(length=3), seed=0).reshape(-1, 32, 32, 3)
    clean_frames = torch.load(clean.frames, weights_only=True)
    assert torch.equal(clean_frames, to_tensor(filmed, normalize=True))
    noisy_frames = torch.load(noisy.frames, weights_only=True)
    assert (noisy_frames - clean_frames).abs().mean() > 0.1  # gaussian_noise, severity 3


def _bad_cases(tmp_path: Path) -> dict[str, tuple[list[str], str]]:
    """Case name -> (arguments, what the one error line must say)."""
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    full = tmp_path / "full"
    full.mkdir()
    (full / "mine.txt").write_text("x")
    new = str(tmp_path / "new")
    return {
        "frames 0": (["--out", new, "--frames", "0"], "--frames"),
        "per-digit 0": (["--out", new, "--per-digit", "0"], "--per-digit"),
        "severity 6": (["--out", new, "--severity", "6"], "--severity"),
        "unknown corruption": (["--out", new, "--corruption", "gausian_noise"], "did you mean"),
        "out is a file": (["--out", str(a_file)], "is a file"),
        "out is not empty": (["--out", str(full)], "not empty"),
        "more digits than held out": (
            ["--out", new, "--frames", "600", "--per-digit", "1"],
            "there are 540",
        ),
    }


@pytest.mark.parametrize("case", [
    "frames 0", "per-digit 0", "severity 6", "unknown corruption", "out is a file",
    "out is not empty", "more digits than held out",
])  # fmt: skip
def test_bad_values_exit_2_with_one_line_and_write_nothing(tmp_path, capsys, case):
    argv, expected = _bad_cases(tmp_path)[case]
    rc, _, err = _run(["sample-data", "--no-clip", *argv], capsys)
    assert rc == 2
    assert len(err) == 1 and err[0].startswith("edgeadapt sample-data: ") and expected in err[0]
    assert not (tmp_path / "new").exists() and _leftovers(tmp_path) == []
    assert [p.name for p in (tmp_path / "full").iterdir()] == ["mine.txt"]


def test_without_pyav_the_clip_names_the_extra_and_no_clip_works(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "av", None)
    rc, _, err = _run(["sample-data", "--out", str(tmp_path / "d")], capsys)
    assert rc == 2 and len(err) == 1, err
    assert "edgeadapt[video]" in err[0] and "--no-clip" in err[0]
    assert not (tmp_path / "d").exists()
    rc, _, err = _run(["sample-data", "--out", str(tmp_path / "d"), "--no-clip", "--frames", "2"],
                      capsys)  # fmt: skip
    assert rc == 0, err
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == ["frames.pt", "test", "train"]


def test_an_interrupted_write_leaves_nothing(tmp_path, monkeypatch):
    from edgeadapt import sample_data

    def fail(*_):
        raise KeyboardInterrupt

    monkeypatch.setattr(sample_data, "_write_split", fail)
    with pytest.raises(KeyboardInterrupt):
        sample_data.write_sample_data(tmp_path / "d", frames=2, clip=False)
    assert list(tmp_path.iterdir()) == []
