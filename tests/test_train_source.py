"""`edgeadapt train-source`: tiny runs on the digits and on a generated image folder; bad
values stop with one line and exit 2 before any slow work."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from edgeadapt import cli
from edgeadapt.data import to_tensor
from edgeadapt.models import create_model
from edgeadapt.source_training import accuracy, digits_dataset, load_class_folders

TINY = ["train-source", "--model", "tiny_resnet", "--epochs", "1", "--size", "16", "--quiet"]
COLOURS = {"blue": (20, 40, 220), "green": (30, 200, 40), "red": (220, 30, 30)}


def _image_folder(root: Path, per_class: int = 4, classes=COLOURS) -> Path:
    """Class folders of noisy single-colour images, of several sizes and formats."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for name, rgb in classes.items():
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            h, w = 20 + 3 * i, 24 + 5 * i  # not square, not --size: cropped and resized
            pixels = np.clip(np.array(rgb) + rng.normal(0, 20, (h, w, 3)), 0, 255)
            Image.fromarray(pixels.astype(np.uint8)).save(
                root / name / f"{i}.{'png' if i % 2 else 'jpg'}"
            )
    return root


def _run(argv: list[str], capsys) -> tuple[int, list[str], list[str]]:
    rc = cli.main(argv)
    captured = capsys.readouterr()
    return rc, captured.out.strip().splitlines(), captured.err.strip().splitlines()


def test_digits_by_default_and_the_checkpoint_reproduces_its_accuracy(tmp_path, capsys):
    pytest.importorskip("sklearn")
    out = tmp_path / "digits.pt"
    rc, lines, err = _run([*TINY, "--out", str(out)], capsys)
    assert rc == 0, err
    assert any("train accuracy" in line and "held-out accuracy" in line for line in lines), lines
    assert [p.name for p in tmp_path.iterdir()] == ["digits.pt"]  # written atomically
    model = create_model("tiny_resnet", checkpoint=out).eval()
    saved = torch.load(out, map_location="cpu", weights_only=True)
    assert saved["classes"] == [str(d) for d in range(10)] and saved["input_size"] == 16
    _, _, test_x, test_y = digits_dataset(0, 16)
    assert accuracy(model, test_x, test_y) == pytest.approx(saved["heldout_accuracy"])
    assert f"{saved['heldout_accuracy']:.1f}%" in "\n".join(lines)
    logits = model(to_tensor(test_x[:32], normalize=True))
    assert logits.shape == (32, 10) and torch.isfinite(logits).all()


def test_a_class_folder_trains_a_model_with_its_classes(tmp_path, capsys):
    data = _image_folder(tmp_path / "photos")
    out = tmp_path / "photos.pt"
    rc, lines, err = _run([*TINY, "--epochs", "3", "--batch", "4", "--data", str(data),
                           "--out", str(out)], capsys)  # fmt: skip
    assert rc == 0, err
    assert "--num-classes 3" in lines[-1]  # the hint names the flags export needs
    saved = torch.load(out, map_location="cpu", weights_only=True)
    assert saved["classes"] == ["blue", "green", "red"]
    model = create_model("tiny_resnet", num_classes=3, checkpoint=out).eval()
    found = load_class_folders(data, size=16)
    assert len(found.train_y) == 9 and len(found.heldout_y) == 3  # one of each four held out
    logits = model(to_tensor(found.train_x, normalize=True))
    assert logits.shape == (9, 3) and torch.isfinite(logits).all()
    assert accuracy(model, found.heldout_x, found.heldout_y) == pytest.approx(
        saved["heldout_accuracy"]
    )


def test_a_train_and_test_split_is_used_as_given(tmp_path):
    root = tmp_path / "split"
    _image_folder(root / "train", per_class=3)
    _image_folder(root / "test", per_class=2)
    found = load_class_folders(root, size=16)
    assert found.classes == ("blue", "green", "red")
    assert np.bincount(found.train_y).tolist() == [3, 3, 3]
    assert np.bincount(found.heldout_y).tolist() == [2, 2, 2]
    assert found.train_x.shape == (9, 16, 16, 3) and found.train_x.dtype == np.uint8


def _bad_cases(tmp_path: Path) -> dict[str, tuple[list[str], str]]:
    """Case name -> (arguments, what the one error line must say)."""
    one_class = _image_folder(tmp_path / "one", classes={"red": COLOURS["red"]})
    empty = tmp_path / "empty"
    (empty / "cat").mkdir(parents=True)  # a class folder with no images is no class
    ok_out = str(tmp_path / "m.pt")
    return {
        "epochs 0": (["--epochs", "0", "--out", ok_out], "--epochs"),
        "batch 0": (["--batch", "0", "--out", ok_out], "--batch"),
        "lr 0": (["--lr", "0", "--out", ok_out], "--lr"),
        "size 4": (["--size", "4", "--out", ok_out], "--size"),
        "missing folder": (["--data", str(tmp_path / "nope"), "--out", ok_out], "no such folder"),
        "one class": (["--data", str(one_class), "--out", ok_out], "at least 2"),
        "no images": (["--data", str(empty), "--out", ok_out], "at least 2"),
        "out in missing folder": (["--out", str(tmp_path / "no" / "m.pt")], "does not exist"),
        "out is a folder": (["--out", str(tmp_path)], "is a folder"),
        "unknown model": (["--model", "resnet21", "--out", ok_out], "did you mean"),
    }


BAD_CASES = [
    "epochs 0",
    "batch 0",
    "lr 0",
    "size 4",
    "missing folder",
    "one class",
    "no images",
    "out in missing folder",
    "out is a folder",
    "unknown model",
]


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_values_exit_2_with_one_line_before_slow_work(tmp_path, capsys, case):
    argv, expected = _bad_cases(tmp_path)[case]
    start = time.perf_counter()
    rc, _, err = _run([*TINY, *argv], capsys)
    assert rc == 2
    assert len(err) == 1 and err[0].startswith("edgeadapt train-source: ") and expected in err[0]
    assert time.perf_counter() - start < 10
    assert not (tmp_path / "m.pt").exists()


def test_digits_without_scikit_learn_names_the_extra(tmp_path, capsys, monkeypatch):
    for key in [k for k in sys.modules if k == "sklearn" or k.startswith("sklearn.")]:
        monkeypatch.setitem(sys.modules, key, None)
    monkeypatch.setitem(sys.modules, "sklearn", None)
    rc, _, err = _run([*TINY, "--out", str(tmp_path / "m.pt")], capsys)
    assert rc == 2 and len(err) == 1 and "edgeadapt[bench]" in err[0], err
    assert "training on the digits" in err[0]
