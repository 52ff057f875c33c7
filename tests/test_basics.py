"""A user's first hour: --version, load_adapter, the package files, 'did you mean', where an
installed copy keeps its data, progress bars with totals, third-party warnings kept quiet."""

from __future__ import annotations

import argparse
import copy
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import edgeadapt
from edgeadapt import _paths
from edgeadapt.cli import SHOW_WARNINGS_ENV, main, third_party_warnings_hidden
from edgeadapt.errors import (
    CheckpointMismatchError,
    ConfigError,
    EdgeAdaptError,
    UnknownNameError,
)

ROOT = Path(__file__).resolve().parent.parent


# --- 1. --version ---------------------------------------------------------------------------


def test_version_flag_prints_the_package_version(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out == f"edgeadapt {edgeadapt.__version__}\n"


def test_version_comes_from_metadata_with_a_fallback(monkeypatch):
    import importlib.metadata

    assert edgeadapt._installed_version() == importlib.metadata.version("edgeadapt")

    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", missing)
    assert edgeadapt._installed_version() == edgeadapt._FALLBACK_VERSION


# --- 2. load_adapter ------------------------------------------------------------------------


def test_load_adapter_restores_a_saved_adapter(tiny_model, batch, example, tmp_path):
    fresh = copy.deepcopy(tiny_model)  # the same frozen weights, never adapted
    adapter = edgeadapt.wrap(tiny_model, edgeadapt.TentConfig(lr=1e-2), example_input=example)
    adapter(batch)
    adapter(batch)  # two steps: the adapter's weights differ from the model's
    path = adapter.save(tmp_path / "tent.pt")

    loaded = edgeadapt.load_adapter(fresh, path, example_input=example)
    assert loaded.config == adapter.config
    with adapter.frozen(), loaded.frozen():
        assert torch.equal(loaded(batch), adapter(batch))
    with loaded.frozen():
        assert not torch.equal(loaded(batch), fresh.eval()(batch))


def test_load_adapter_refuses_what_it_cannot_load(tiny_model, example, tmp_path):
    from edgeadapt.methods.base import AdapterNotFoundError
    from edgeadapt.models import create_model

    adapter = edgeadapt.wrap(tiny_model, edgeadapt.TentConfig(), example_input=example)
    path = adapter.save(tmp_path / "tent.pt")

    with pytest.raises(AdapterNotFoundError, match="no adapter file") as info:
        edgeadapt.load_adapter(tiny_model, tmp_path / "missing.pt")
    assert isinstance(info.value, FileNotFoundError) and isinstance(info.value, EdgeAdaptError)

    plain = tmp_path / "weights.pt"
    torch.save({"w": torch.zeros(1)}, plain)
    with pytest.raises(CheckpointMismatchError, match="not an edgeadapt adapter"):
        edgeadapt.load_adapter(tiny_model, plain)

    # An object a weights_only load refuses: read safely, never executed.
    unsafe = tmp_path / "unsafe.pt"
    torch.save({"format": "edgeadapt-adapter/1", "x": argparse.Namespace(a=1)}, unsafe)
    with pytest.raises(CheckpointMismatchError, match="not a readable adapter"):
        edgeadapt.load_adapter(tiny_model, unsafe)

    with pytest.raises(CheckpointMismatchError, match="architecture"):
        edgeadapt.load_adapter(create_model("resnet8"), path, example_input=example)

    with pytest.raises(ConfigError, match="model first"):
        edgeadapt.load_adapter(path, tiny_model)


# --- 3. LICENSE, CHANGELOG, py.typed ----------------------------------------------------------


def test_package_files():
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib

    license_text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in license_text and "Version 2.0, January 2004" in license_text
    assert "Copyright 2026 the edgeadapt authors" in license_text
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert "## Unreleased" in changelog and f"## {edgeadapt._FALLBACK_VERSION}" in changelog
    assert (ROOT / "edgeadapt" / "py.typed").is_file()
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "py.typed" in pyproject["tool"]["setuptools"]["package-data"]["edgeadapt"]


# --- 4. did you mean ------------------------------------------------------------------------


def test_unknown_names_suggest_close_ones():
    from edgeadapt.data.corruptions import corrupt
    from edgeadapt.models import create_model

    with pytest.raises(UnknownNameError) as info:
        edgeadapt.config_for("ecota")
    assert str(info.value).startswith("unknown method 'ecota'; did you mean 'ecotta'? available: [")
    with pytest.raises(UnknownNameError, match="did you mean 'resnet20'"):
        create_model("resnet21")
    with pytest.raises(UnknownNameError, match="did you mean 'gaussian_noise'"):
        corrupt(np.zeros((1, 32, 32, 3), np.uint8), "gausian_noise", 1)
    with pytest.raises(UnknownNameError) as info:
        edgeadapt.config_for("xyz")
    assert "did you mean" not in str(info.value) and "available: [" in str(info.value)


@pytest.mark.parametrize(
    "argv, says",
    [
        (["export", "--model", "tiny_resnet", "--device", "stm32h473"],
         "--device: unknown device 'stm32h473'; did you mean 'stm32h743'?"),
        (["export", "--model", "tiny_resnet", "--method", "ecota"],
         "--method: unknown method 'ecota'; did you mean 'ecotta'?"),
        (["stream", "clip.mp4", "--model", "tiny_resnet", "--adapt", "tnet"],
         "--adapt: unknown method 'tnet'; did you mean 'tent'?"),
        (["stream", "clip.mp4", "--model", "tiny_rsenet"],
         "--model: unknown model 'tiny_rsenet'; did you mean 'tiny_resnet'?"),
    ],
)  # fmt: skip
def test_commands_suggest_close_names(capsys, tmp_path, argv, says):
    assert main([*argv, "--out" if argv[0] == "export" else "--json", str(tmp_path / "o")]) == 2
    assert says in capsys.readouterr().err


# --- 5. where the data lives ----------------------------------------------------------------


def test_shared_dir_beside_a_checkout_or_in_the_cache_when_installed(monkeypatch, tmp_path):
    monkeypatch.delenv(_paths.SHARED_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr(_paths, "_WINDOWS", False)

    monkeypatch.setattr(_paths, "_REPO_ROOT", tmp_path / "work" / "edgeadapt")  # a checkout
    assert _paths.shared_dir() == tmp_path / "work" / "shared"  # even before it exists

    site = tmp_path / "venv" / "lib" / "python3.11" / "site-packages"
    monkeypatch.setattr(_paths, "_REPO_ROOT", site)  # installed from a wheel
    assert _paths.shared_dir() == tmp_path / "xdg" / "edgeadapt"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert _paths.shared_dir() == tmp_path / "home" / ".cache" / "edgeadapt"
    monkeypatch.setattr(_paths, "_WINDOWS", True)
    monkeypatch.setenv("LOCALAPPDATA", str(tmp_path / "local"))
    assert _paths.shared_dir() == tmp_path / "local" / "edgeadapt"

    (site.parent / "shared").mkdir(parents=True)  # a shared folder put there on purpose
    assert _paths.shared_dir() == site.parent / "shared"
    monkeypatch.setenv(_paths.SHARED_ENV, str(tmp_path / "mine"))  # the variable comes first
    assert _paths.shared_dir() == tmp_path / "mine"


# --- 6. progress bars with totals -----------------------------------------------------------


def test_demo_training_shows_a_bar_with_its_total(capsys):
    from edgeadapt.bench.demo import train_source_model

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (130, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, 130)
    train_source_model(images, labels, epochs=1, progress=True)  # 3 steps of 64
    err = capsys.readouterr().err
    assert "training" in err and "3/3" in err
    train_source_model(images, labels, epochs=1, progress=False)
    assert capsys.readouterr().err == ""


def test_sources_know_how_many_frames_they_yield(tmp_path):
    from PIL import Image

    from edgeadapt.video.sources import ArraySource, CameraSource, open_frames

    frames = np.zeros((10, 8, 8, 3), np.uint8)
    assert ArraySource(frames).expected_frames() == 10
    assert ArraySource(frames, start=1, stride=3).expected_frames() == 3  # frames 1, 4, 7
    assert ArraySource(frames, start=12).expected_frames() == 0
    assert ArraySource(frames, limit=4).expected_frames() == 4
    assert len(list(ArraySource(frames, start=1, stride=3))) == 3
    for i in range(5):
        Image.fromarray(frames[i]).save(tmp_path / f"f{i}.png")
    assert open_frames(str(tmp_path)).expected_frames() == 5
    assert CameraSource(0).expected_frames() is None  # nothing says, and nothing is opened
    assert CameraSource(0, limit=7).expected_frames() == 7


def test_video_file_count_comes_from_the_container(tmp_path):
    av = pytest.importorskip("av")
    from edgeadapt.video.sources import open_frames

    path = tmp_path / "clip.mp4"
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 16, 16, "yuv420p"
        for _ in range(6):
            frame = av.VideoFrame.from_ndarray(np.zeros((16, 16, 3), np.uint8), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    assert open_frames(path).expected_frames() == 6
    assert open_frames(path, stride=4).expected_frames() == 2
    (tmp_path / "broken.mp4").write_bytes(b"not a video")
    assert open_frames(tmp_path / "broken.mp4").expected_frames() is None


def test_stream_command_bar_has_the_frame_count(capsys, tmp_path, tiny_model):
    from PIL import Image

    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(4):
        Image.fromarray(np.full((32, 32, 3), 40 * i, np.uint8)).save(folder / f"f{i}.png")
    checkpoint = tmp_path / "tiny.pt"
    torch.save(tiny_model.state_dict(), checkpoint)
    argv = ["stream", str(folder), "--model", "tiny_resnet", "--checkpoint", str(checkpoint)]
    assert main(argv) == 0
    assert "4/4" in capsys.readouterr().err
    assert main([*argv, "--limit", "3"]) == 0
    assert "3/3" in capsys.readouterr().err
    assert main([*argv, "--quiet"]) == 0
    assert "stream" not in capsys.readouterr().err


# --- 7. third-party warnings ----------------------------------------------------------------


def _warn_from(module: str, text: str) -> None:
    warnings.warn_explicit(text, UserWarning, f"{module}.py", 1, module=module)


def test_third_party_warnings_are_hidden_and_edgeadapt_ones_shown():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with third_party_warnings_hidden():
            _warn_from("torch.export._trace", "Mutation on a buffer in the model is detected")
            _warn_from("executorch.exir", "third party")
            _warn_from("copyreg", "`isinstance(treespec, LeafSpec)` is deprecated")
            _warn_from("torchvision_extra", "not torch itself")
            _warn_from("edgeadapt.x", "ours")
        _warn_from("torch.export._trace", "outside the block")
    assert [str(w.message) for w in caught] == ["not torch itself", "ours", "outside the block"]


def test_third_party_log_records_below_error_are_hidden(caplog):
    import logging

    torchao = logging.getLogger("torchao")
    before = torchao.level
    with caplog.at_level(logging.WARNING), third_party_warnings_hidden():
        torchao.warning("Failed to load a CUDA kernel")
        torchao.error("a real failure")
        logging.getLogger("edgeadapt.x").warning("ours")
    assert [r.getMessage() for r in caplog.records] == ["a real failure", "ours"]
    assert torchao.level == before  # restored


@pytest.mark.parametrize(
    "argv, env, shown",
    [
        (["methods"], None, ["ours"]),
        (["methods", "--verbose"], None, ["torch's", "ours"]),
        (["--verbose", "methods"], None, ["torch's", "ours"]),
        (["methods"], "1", ["torch's", "ours"]),
        (["methods"], "0", ["ours"]),
    ],
)
def test_cli_hides_third_party_warnings_unless_asked(monkeypatch, argv, env, shown):
    import edgeadapt.cli as cli

    def fake_methods(args):
        _warn_from("torch.export", "torch's")
        _warn_from("edgeadapt.x", "ours")
        return 0

    monkeypatch.setattr(cli, "_cmd_methods", fake_methods)
    if env is None:
        monkeypatch.delenv(SHOW_WARNINGS_ENV, raising=False)
    else:
        monkeypatch.setenv(SHOW_WARNINGS_ENV, env)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(argv) == 0
    assert [str(w.message) for w in caught] == shown
