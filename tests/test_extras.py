"""Optional dependencies: a feature whose extra is missing fails with a typed error that names
the extra, before any slow work (CI also runs .ci/core_install_check.py in a core-only install)."""

from __future__ import annotations

import sys
import time

import pytest
import torch

from edgeadapt import cli
from edgeadapt._extras import EXTRA_OF, as_missing_extra, require
from edgeadapt.errors import EdgeAdaptError, MissingExtraError

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]


def _block(monkeypatch, *modules: str) -> None:
    """Make `import <module>` fail as it does where the package is not installed."""
    for name in modules:  # submodules too: an earlier test may have imported them
        for key in [k for k in sys.modules if k == name or k.startswith(name + ".")]:
            monkeypatch.setitem(sys.modules, key, None)
        monkeypatch.setitem(sys.modules, name, None)


def test_require_names_the_extra_and_the_install_command(monkeypatch):
    _block(monkeypatch, "onnx")
    with pytest.raises(MissingExtraError) as info:
        require("onnx", "ONNX export")
    assert isinstance(info.value, ImportError) and isinstance(info.value, EdgeAdaptError)
    assert "ONNX export needs onnx" in str(info.value)
    assert 'pip install "edgeadapt[export]"' in str(info.value)


def test_a_plain_import_failure_of_an_extra_package_is_mapped_and_others_are_not():
    assert "edgeadapt[video]" in str(as_missing_extra(ModuleNotFoundError(name="av.container")))
    assert as_missing_extra(ModuleNotFoundError(name="not_an_extra_package")) is None
    assert as_missing_extra(ValueError("x")) is None


def test_every_extra_package_is_in_its_extra_and_none_in_the_core():
    with open("pyproject.toml", "rb") as f:
        project = tomllib.load(f)["project"]
    core = " ".join(project["dependencies"])
    extras = project["optional-dependencies"]
    for module, (dist, extra) in EXTRA_OF.items():
        assert any(req.startswith(dist) for req in extras[extra]), (module, extra)
        assert dist not in core, f"{dist} is an extra's package but the core install pulls it"
    assert set(extras["all"][0].split("[")[1].rstrip("]").split(",")) >= {
        "export",
        "video",
        "bridge",
        "bench",
    }


def test_python_export_api_refuses_without_executorch(monkeypatch, tmp_path, tiny_model):
    from edgeadapt.export import ExecuTorchRunner, to_executorch, to_onnx

    _block(monkeypatch, "executorch", "onnx")
    with pytest.raises(MissingExtraError, match=r"edgeadapt\[export\]"):
        to_executorch(tiny_model, torch.randn(1, 3, 16, 16), tmp_path / "m.pte")
    with pytest.raises(MissingExtraError, match=r"edgeadapt\[export\]"):
        to_onnx(tiny_model, torch.randn(1, 3, 16, 16), tmp_path / "m.onnx")
    with pytest.raises(MissingExtraError, match=r"edgeadapt\[export\]"):
        ExecuTorchRunner(tmp_path / "missing.pte")
    assert not list(tmp_path.iterdir())


EXPORT = ["export", "--model", "tiny_resnet", "--random-weights"]
BENCH = ["bench", "--model", "tiny_resnet", "--checkpoint", "CKPT"]
CLI_CASES = [
    (EXPORT, "executorch", "export"),
    ([*EXPORT, "--format", "onnx"], "onnx", "export"),
    (["device", "list"], "serial", "bridge"),
    (["demo"], "sklearn", "bench"),
    ([*BENCH, "--source", "SRC"], "scipy", "bench"),
    ([*BENCH, "--data", "DATA", "--plot", "p.png"], "matplotlib", "bench"),
]


@pytest.mark.parametrize("argv, blocked, extra", CLI_CASES)
def test_cli_names_the_missing_extra_in_one_line_before_slow_work(
    monkeypatch, tmp_path, capsys, tiny_model, argv, blocked, extra
):
    ckpt = tmp_path / "tiny.pt"
    torch.save(tiny_model.state_dict(), ckpt)
    names = {"CKPT": str(ckpt), "SRC": str(tmp_path), "DATA": str(tmp_path)}
    argv = [names.get(a, a) for a in argv]
    if argv[0] == "export":
        argv += ["--out", str(tmp_path / "out")]
    _block(monkeypatch, blocked)
    start = time.perf_counter()
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"edgeadapt[{extra}]" in err[0], err
    assert time.perf_counter() - start < 10


def test_stream_of_a_video_file_names_the_video_extra(monkeypatch, tmp_path, capsys):
    from edgeadapt.video.sources import open_frames

    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"\x00" * 64)
    _block(monkeypatch, "av")
    with pytest.raises(MissingExtraError, match=r"edgeadapt\[video\]"):
        open_frames(clip)


def test_bench_without_any_images_says_which_flags_to_pass(monkeypatch, tmp_path, capsys):
    import edgeadapt.bench.cifar as cifar

    monkeypatch.setattr(cifar, "default_clean_source", lambda: None)
    ckpt = tmp_path / "tiny.pt"
    torch.save(torch.nn.Linear(1, 1).state_dict(), ckpt)
    assert cli.main(["bench", "--model", "tiny_resnet", "--checkpoint", str(ckpt)]) == 2
    err = capsys.readouterr().err
    assert "--data DIR" in err and "--source PATH" in err and "release_dir" not in err
