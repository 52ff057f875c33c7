"""Backbone registry: invariants over every registered model, checkpoints, typed errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from edgeadapt._paths import shared_dir
from edgeadapt.errors import CheckpointMismatchError, ConfigError, UnknownNameError
from edgeadapt.models import (
    CIFAR_MEAN,
    CIFAR_STD,
    CifarResNet,
    Normalize,
    create_model,
    list_models,
    load_checkpoint,
)
from edgeadapt.models.cifar_resnet import PadShortcut

CIFAR_MODELS = [name for name in list_models() if not name.startswith(("tv_", "timm_"))]
TV_MODELS = list_models("tv_*")
CIFAR_DEPTH_N = {"resnet8": 1, "resnet20": 3, "resnet32": 5, "resnet44": 7, "resnet56": 9}


def _checkpoint(name: str) -> Path:
    path = shared_dir() / "models" / name
    if not path.is_file():
        pytest.skip(f"shared checkpoint {path} absent (set EDGEADAPT_SHARED to its directory)")
    return path


def _input(batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 3, 32, 32, generator=torch.Generator().manual_seed(0))


# --- invariants over the registry -------------------------------------------------------------


@pytest.mark.parametrize("name", CIFAR_MODELS)
def test_forward_shape_and_finite(name: str) -> None:
    model = create_model(name, num_classes=7)
    out = model(_input())
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", CIFAR_MODELS)
def test_every_parameter_gets_a_gradient(name: str) -> None:
    model = create_model(name)
    model(_input()).logsumexp(dim=1).sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.any()]
    assert not missing


@pytest.mark.parametrize("name", CIFAR_MODELS)
def test_state_dict_round_trip(name: str, tmp_path: Path) -> None:
    torch.manual_seed(1)
    source = create_model(name)
    source(_input())  # move the BatchNorm running stats off their defaults
    path = tmp_path / f"{name}.pt"
    torch.save(source.state_dict(), path)
    torch.manual_seed(2)
    loaded = create_model(name, checkpoint=path)
    for key, value in source.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    x = _input()
    assert torch.equal(source.eval()(x), loaded.eval()(x))


@pytest.mark.parametrize("name", CIFAR_MODELS)
def test_structure_the_sdk_relies_on(name: str) -> None:
    model = create_model(name)
    assert isinstance(model, CifarResNet)
    blocks = sum(model.blocks_per_stage)
    relus = [m for m in model.modules() if isinstance(m, nn.ReLU)]
    # One module per activation (stem + two per block), none shared, so each can be swapped.
    assert len(relus) == 1 + 2 * blocks
    assert len({id(m) for m in relus}) == len(relus)
    for stage in ("layer1", "layer2", "layer3"):
        assert isinstance(model.get_submodule(stage), nn.Sequential)
    model.get_submodule("layer2.0")  # partition points are addressable by name
    for module in model.modules():
        if isinstance(module, PadShortcut | nn.Identity):
            assert not list(module.parameters()) and not list(module.buffers())


# --- CIFAR ResNets --------------------------------------------------------------------------


def test_resnet20_has_akamaster_keys() -> None:
    keys = list(create_model("resnet20").state_dict())
    assert keys[:6] == [
        "conv1.weight",
        "bn1.weight",
        "bn1.bias",
        "bn1.running_mean",
        "bn1.running_var",
        "bn1.num_batches_tracked",
    ]
    for key in ("layer1.0.conv1.weight", "layer1.0.bn2.bias", "layer3.2.conv2.weight"):
        assert key in keys
    assert keys[-2:] == ["linear.weight", "linear.bias"]
    assert sum(k.endswith(".weight") and "conv" in k for k in keys) == 19


@pytest.mark.parametrize(("name", "n"), CIFAR_DEPTH_N.items())
def test_depths(name: str, n: int) -> None:
    model = create_model(name)
    assert model.blocks_per_stage == (n, n, n)
    convs = sum(isinstance(m, nn.Conv2d) for m in model.modules())
    assert convs + 1 == 6 * n + 2  # + linear


def test_tiny_resnet_widths() -> None:
    model = create_model("tiny_resnet")
    assert model.widths == (4, 8, 16)
    assert model.linear.in_features == 16


def test_option_a_shortcut_pads_both_ends() -> None:
    shortcut = PadShortcut(2, 6, stride=2)
    x = torch.arange(2 * 4 * 4, dtype=torch.float32).view(1, 2, 4, 4) + 1
    out = shortcut(x)
    assert out.shape == (1, 6, 2, 2)
    assert torch.equal(out[:, 2:4], x[:, :, ::2, ::2])
    assert not out[:, :2].any() and not out[:, 4:].any()


def test_bad_configuration_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="num_classes"):
        create_model("tiny_resnet", num_classes=0)
    with pytest.raises(ConfigError, match="one block count per stage"):
        CifarResNet((1, 1), widths=(4, 8, 16))
    with pytest.raises(ConfigError, match="only widen"):
        CifarResNet(1, widths=(8, 4))


def test_normalize() -> None:
    norm = Normalize()
    x = torch.tensor(CIFAR_MEAN).view(1, 3, 1, 1).expand(1, 3, 2, 2)
    assert torch.allclose(norm(x), torch.zeros(1, 3, 2, 2))
    x = x + torch.tensor(CIFAR_STD).view(1, 3, 1, 1)
    assert torch.allclose(norm(x), torch.ones(1, 3, 2, 2))
    assert not norm.state_dict()  # constants, kept out of checkpoints


# --- shared checkpoints ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "filename"),
    [
        ("resnet20", "resnet20-12fca82f.th"),  # legacy dict, `module.` keys
        ("resnet32", "resnet32-d509ac18.th"),
        ("resnet20", "resnet20_cifar10jpeg.pt"),  # plain state_dict
    ],
)
def test_shared_checkpoints_load(name: str, filename: str) -> None:
    path = _checkpoint(filename)
    model = create_model(name, checkpoint=path).eval()
    raw = torch.load(path, map_location="cpu", weights_only=True)
    raw = raw.get("state_dict", raw)
    weight = raw.get("linear.weight", raw.get("module.linear.weight"))
    assert torch.equal(model.linear.weight, weight)
    with torch.no_grad():
        logits = model(_input(8))
    assert torch.isfinite(logits).all()
    # A loaded classifier discriminates: its logits are not one constant row.
    assert logits.std(dim=1).min() > 0.1


def test_wrong_architecture_names_the_right_one() -> None:
    path = _checkpoint("resnet32-d509ac18.th")
    with pytest.raises(CheckpointMismatchError, match="resnet32") as info:
        create_model("resnet20", checkpoint=path)
    assert "60 unexpected keys" in str(info.value)
    assert "layer1.3." in str(info.value)


def test_wrong_num_classes_names_shapes(tmp_path: Path) -> None:
    path = tmp_path / "tiny.pt"
    torch.save(create_model("tiny_resnet").state_dict(), path)
    model = create_model("tiny_resnet", num_classes=5)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointMismatchError, match=r"linear\.weight.*num_classes=10"):
        load_checkpoint(model, path)
    # Refused whole: nothing was copied in before the error.
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


@pytest.mark.parametrize("content", [b"\x00garbage" * 100, b"", b"not a checkpoint\n"])
def test_unreadable_file(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointMismatchError, match="not a readable checkpoint"):
        create_model("tiny_resnet", checkpoint=path)


def test_file_without_a_state_dict(tmp_path: Path) -> None:
    path = tmp_path / "list.pt"
    torch.save([torch.zeros(1)], path)
    with pytest.raises(CheckpointMismatchError, match="not a state_dict"):
        create_model("tiny_resnet", checkpoint=path)


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.pt"
    with pytest.raises(FileNotFoundError, match=r"absent\.pt"):
        create_model("tiny_resnet", checkpoint=path)


# --- registry -------------------------------------------------------------------------------


def test_unknown_name_suggests_close_matches() -> None:
    with pytest.raises(UnknownNameError, match="resnet20") as info:
        create_model("resnet21")
    assert isinstance(info.value, KeyError)
    with pytest.raises(UnknownNameError, match="available"):
        create_model("vgg16")


def test_list_models_wildcards() -> None:
    assert list_models("resnet*") == ["resnet20", "resnet32", "resnet44", "resnet56", "resnet8"]
    assert list_models("tv_*") == ["tv_mobilenet_v2", "tv_resnet18", "tv_resnet50"]
    assert list_models() == sorted(list_models())
    assert list_models("nothing*") == []


def test_import_does_not_import_torchvision() -> None:
    code = "import sys, edgeadapt.models; sys.exit('torchvision' in sys.modules or 'timm' in sys.modules)"
    root = Path(__file__).resolve().parent.parent
    assert subprocess.run([sys.executable, "-c", code], cwd=root, check=False).returncode == 0


# --- torchvision backbones --------------------------------------------------------------------


def test_torchvision_missing_is_an_import_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torchvision", None)  # makes `import torchvision` fail
    with pytest.raises(ImportError, match="pip install torchvision"):
        create_model("tv_resnet18")


def test_timm_missing_is_an_import_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "timm", None)
    with pytest.raises(ImportError, match="pip install timm"):
        create_model("timm_resnet18")
    assert list_models("timm_*") == ["timm_mobilenetv3_small", "timm_resnet18"]


@pytest.mark.parametrize("name", TV_MODELS)
def test_torchvision_models(name: str) -> None:
    pytest.importorskip("torchvision", reason="torchvision not installed (optional)")
    model = create_model(name, num_classes=3)
    out = model(_input())
    assert out.shape == (2, 3)
    assert torch.isfinite(out).all()
