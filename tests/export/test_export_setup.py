"""`edgeadapt export --method ecotta` warms the meta networks up on the given source images (or
loads --adapter), refuses without either, and its report says which state the program starts
from. The exporter itself is stubbed: these tests are about what it is handed and what the
report says, not about lowering (tests/export/test_export_*.py cover that)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import edgeadapt
from edgeadapt.cli import main


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


@pytest.fixture
def exported(tmp_path, monkeypatch):
    """No shared data (an installed copy), and an exporter that only records what it got."""
    import edgeadapt.export.api as export_api
    from edgeadapt.export.report import ExportReport

    monkeypatch.setenv("EDGEADAPT_SHARED", str(tmp_path / "no-shared"))
    monkeypatch.setenv("EDGEADAPT_CACHE", str(tmp_path / "cache"))
    got: list = []

    def export_program(model, example, path, request, **kwargs):
        got.append(model)
        return ExportReport(path=Path(path), format=request.format, program=request.program,
                            backend=request.backend, file_bytes=0, sha256="", max_abs_error=0.0,
                            input_shape=tuple(example.shape), batch_statistics=False)  # fmt: skip

    monkeypatch.setattr(export_api, "export_program", export_program)
    return got


@pytest.fixture
def export(tmp_path):
    torch.manual_seed(0)
    checkpoint = tmp_path / "tiny.pt"
    torch.save(edgeadapt.create_model("tiny_resnet").state_dict(), checkpoint)
    data = _image_folder(tmp_path / "images")
    common = ["export", "--model", "tiny_resnet", "--checkpoint", str(checkpoint),
              "--program", "adapt", "--batch", "1", "--input-size", "16", "--check-data",
              str(data), "--check-corruption", "none", "--out", str(tmp_path / "out")]  # fmt: skip
    return lambda *extra, method="ecotta": main([*common, "--method", method, *extra])


def test_ecotta_without_source_data_or_adapter_is_refused(export, exported, tmp_path, capsys):
    assert export("--json", str(tmp_path / "r.json")) == 2
    err = capsys.readouterr().err
    assert "ecotta (its warm-up) needs labelled source images" in err
    assert "--source-data" in err and "--adapter" in err and "--no-warmup" in err
    assert exported == [] and not (tmp_path / "r.json").exists()


def test_the_program_starts_from_the_warm_up_and_the_report_names_it(
    export, exported, tmp_path, capsys
):
    source = tmp_path / "images"
    out = tmp_path / "r.json"
    assert export("--source-data", str(source), "--warmup-steps", "2", "--json", str(out)) == 0
    warm = {"source": str(source), "images": 24, "steps": 2, "batch": 24}
    assert exported[0].setup_record == {"warmup": warm}  # what the exporter was handed
    starts = json.loads(out.read_text())["starts_from"]
    assert starts["adapter"] is None and starts["setup"] == {"warmup": warm}
    assert starts["summary"].startswith(f"warmed up on {source}: 2 steps of 24")
    assert f"the program starts from: warmed up on {source}" in capsys.readouterr().out


def test_the_program_starts_from_a_saved_adapter(export, exported, tmp_path, capsys):
    from edgeadapt.api import prepare_adapter

    model = edgeadapt.create_model("tiny_resnet", checkpoint=tmp_path / "tiny.pt")
    adapter = edgeadapt.wrap(model, edgeadapt.EcoTTAConfig(),
                             example_input=torch.zeros(2, 3, 16, 16))  # fmt: skip
    prepare_adapter(adapter, tmp_path / "images", warmup_steps=2, progress=False)
    adapter.save(tmp_path / "ecotta.pt")
    out = tmp_path / "r.json"
    assert export("--adapter", str(tmp_path / "ecotta.pt"), "--json", str(out)) == 0
    saved = adapter.adapter_state_dict()
    assert all(torch.equal(v, exported[0].adapter_state_dict()[k]) for k, v in saved.items())
    starts = json.loads(out.read_text())["starts_from"]
    assert starts["adapter"] == str(tmp_path / "ecotta.pt")
    assert "the program starts from: the adapter file" in capsys.readouterr().out


def test_no_warmup_exports_and_says_so(export, exported, tmp_path, capsys):
    out = tmp_path / "r.json"
    assert export("--no-warmup", "--json", str(out)) == 0
    assert exported[0].setup_record == {"warmup": None}
    starts = json.loads(out.read_text())["starts_from"]
    assert starts["setup"] == {"warmup": None}
    assert starts["summary"] == (
        "no warm-up: the meta networks start freshly initialised (--no-warmup)"
    )
    assert "starts from: no warm-up" in capsys.readouterr().out


def test_setup_options_are_checked_before_the_model_loads(export, exported, tmp_path, capsys):
    source, some_file = str(tmp_path / "images"), str(tmp_path / "tiny.pt")
    for extra, method, said in [
        (["--source-data", source], "tent", "has no setup on source data"),
        (["--source-data", source, "--adapter", some_file], "ecotta", "not with --adapter"),
        (["--source-data", source, "--no-warmup"], "ecotta", "exclude each other"),
        (["--warmup-steps", "0"], "ecotta", "--warmup-steps must be >= 1"),
        (["--source-data", str(tmp_path / "nope")], "ecotta", "no such file"),
    ]:
        assert export(*extra, method=method) == 2
        assert said in capsys.readouterr().err
    # 16×16 program, 32×32 source images: refused, not warmed up on the wrong size.
    big = _image_folder(tmp_path / "big", size=32)
    assert export("--source-data", str(big), "--warmup-steps", "1") == 2
    assert "32×32 images; the model takes 16×16" in capsys.readouterr().err
    assert exported == []
