"""An exported adaptation program must adapt like the eager adapter on real images: weights
move, predictions vary, program and eager agree; a broken program is refused, not written."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import edgeadapt
from edgeadapt._paths import shared_dir
from edgeadapt.cli import main
from edgeadapt.export.adapt_check import AdaptationCheckError, check_adaptation
from edgeadapt.export.training import to_training_program

CHECKPOINT = shared_dir() / "models" / "resnet20_cifar10jpeg.pt"
CIFAR = shared_dir() / "data" / "cifar10" / "cifar10-jpeg.tar.gz"


def _images(n: int = 40, size: int = 16) -> torch.Tensor:
    gen = torch.Generator().manual_seed(5)
    return 1.5 * torch.randn(n, 3, size, size, generator=gen) + 0.3


def _device_ecotta(model, lr: float = 5e-2, frozen_bn: str = "batch", **extra):
    """EcoTTA as a device runs it (EcoTTAConfig.device(): frozen BNs on the stream, int8
    frozen weights, SGD), single frames; or with the frozen BNs on source statistics."""
    config = edgeadapt.EcoTTAConfig.device(
        frozen_bn=frozen_bn, momentum=0.0, lr=lr, entropy_margin=10.0, **extra
    )
    return edgeadapt.wrap(model, config, example_input=_images(2))


@pytest.fixture(scope="module", params=["batch", "eval"])
def tiny_program(request, tmp_path_factory):
    torch.manual_seed(0)
    adapter = _device_ecotta(edgeadapt.create_model("tiny_resnet"), frozen_bn=request.param)
    path = tmp_path_factory.mktemp("check") / "ecotta_b1.pte"
    report = to_training_program(adapter, _images(1), path, quantize="int8",
                                 check_images=_images())  # fmt: skip
    return adapter, report


def test_device_program_adapts_like_eager(tiny_program):
    adapter, report = tiny_program
    check = report.adaptation_check
    assert check["passed"] and check["steps"] == 20 and check["batch"] == 1
    assert check["updates"] == 20 and check["weights_moved"] > 1e-3
    assert check["max_logit_diff"] < 1e-4 and check["max_weight_diff"] < 1e-4
    assert check["distinct_predictions"] >= 2
    # The check ran on a copy: the adapter itself took no step.
    assert adapter.steps_taken == 0


def test_program_of_another_adapter_is_refused(tiny_program):
    """Verifying against the program's own graph cannot see this; eager can."""
    _, report = tiny_program
    other = _device_ecotta(edgeadapt.create_model("tiny_resnet"))
    with torch.no_grad():
        for p in other.trainable_parameters():
            p.add_(0.5 * torch.randn_like(p))
    check = check_adaptation(other, report.path.read_bytes(), _images(), int8=True)
    assert not check.passed and "part from eager" in check.reason


def test_program_that_does_not_update_is_refused(tmp_path):
    torch.manual_seed(0)
    still = _device_ecotta(edgeadapt.create_model("tiny_resnet"), lr=1e-12)
    with pytest.raises(AdaptationCheckError, match="did not move") as err:
        to_training_program(still, _images(1), tmp_path / "still.pte", quantize="int8",
                            check_images=_images())  # fmt: skip
    assert err.value.check.updates == 20
    assert not (tmp_path / "still.pte").exists()


def test_constant_predictions_are_refused(tmp_path):
    """Tent on a network whose last BN feeds global pooling, normalising each frame by its
    own statistics (a window of one sample): every frame gets the same logits."""
    torch.manual_seed(0)
    nn = torch.nn
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10),
    ).eval()  # fmt: skip
    config = edgeadapt.TentConfig(optimizer="sgd", lr=5e-2, stat_window=1)
    tent = edgeadapt.wrap(model, config, example_input=_images(2))
    with pytest.raises(AdaptationCheckError, match="same for every input"):
        to_training_program(tent, _images(1), tmp_path / "const.pte", check_images=_images())


def _image_folder(root: Path, size: int = 16) -> Path:
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for cls in ("a", "b", "c"):
            folder = root / split / cls
            folder.mkdir(parents=True)
            for i in range(8):
                pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")
    return root


def test_command_writes_the_check_or_says_why_it_failed(tmp_path, capsys):
    torch.manual_seed(0)
    checkpoint = tmp_path / "tiny.pt"
    torch.save(edgeadapt.create_model("tiny_resnet").state_dict(), checkpoint)
    data = _image_folder(tmp_path / "images")
    common = [
        "export", "--model", "tiny_resnet", "--checkpoint", str(checkpoint), "--method",
        "ecotta", "--program", "adapt", "--batch", "1", "--input-size", "16", "--check-data",
        str(data), "--check-corruption", "none", "--out", str(tmp_path / "out"), "--no-warmup",
    ]  # fmt: skip
    good = {"frozen_bn": "eval", "optimizer": "sgd", "lr": 0.05, "entropy_margin": 10.0}
    assert main([*common, "--settings", json.dumps(good), "--json", str(tmp_path / "ok.json")]) == 0
    report = json.loads((tmp_path / "ok.json").read_text())
    assert report["adaptation_check"]["passed"]
    assert "adapts like eager" in capsys.readouterr().out
    still = {**good, "lr": 1e-12}
    code = main([*common, "--settings", json.dumps(still), "--json", str(tmp_path / "bad.json")])
    assert code == 2
    assert "did not move" in capsys.readouterr().err
    failed = json.loads((tmp_path / "bad.json").read_text())
    assert failed["written"] is False and not failed["adaptation_check"]["passed"]


@pytest.mark.skipif(not (CHECKPOINT.exists() and CIFAR.exists()), reason="needs ../shared")
def test_resnet20_single_frame_program_adapts_and_per_frame_statistics_are_refused(tmp_path):
    """The issue's failure on the real model: meta BNs that normalise a frame by itself gave
    one class for every frame and no update; the stream statistics adapt and vary."""
    from edgeadapt.bench.cifar import load_clean_split
    from edgeadapt.data import corrupt, to_tensor

    images, labels = load_clean_split(CIFAR, "test", progress=False)
    idx = np.random.default_rng(0).permutation(len(labels))[:40]
    x = to_tensor(corrupt(images[idx], "gaussian_noise", 3, seed=0), normalize=True)
    train = [(x[i : i + 8], torch.from_numpy(labels[idx][i : i + 8])) for i in range(0, 40, 8)]
    model = edgeadapt.create_model("resnet20", checkpoint=CHECKPOINT)
    for window, adapts in ((64, True), (1, False)):
        config = edgeadapt.EcoTTAConfig(frozen_bn="eval", frozen_weights="int8",
                                        optimizer="sgd", lr=1e-3, stat_window=window)  # fmt: skip
        adapter = edgeadapt.wrap(model, config, example_input=x[:2])
        adapter.warmup(train, max_steps=0, progress=False)  # calibration only: starts as source
        path = tmp_path / f"w{window}.pte"
        if adapts:
            report = to_training_program(adapter, x[:1], path, quantize="int8", check_images=x)
            assert report.adaptation_check["distinct_predictions"] >= 3
        else:
            with pytest.raises(AdaptationCheckError):
                to_training_program(adapter, x[:1], path, quantize="int8", check_images=x)
