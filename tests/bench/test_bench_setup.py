"""`edgeadapt bench` without the shared data (an installed copy): EcoTTA and EATA get their
source images from --source-data, or are refused, or run on request and say so in every
table, JSON and plot; never a silent skip."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from edgeadapt.cli import main


@pytest.fixture(autouse=True)
def installed_copy(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEADAPT_SHARED", str(tmp_path / "no-shared"))
    monkeypatch.setenv("EDGEADAPT_CACHE", str(tmp_path / "cache"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def bench(tmp_path):
    """The command on a tiny model and a 16-image fog domain, plus extra arguments."""
    from edgeadapt.data import write_cifar10c
    from edgeadapt.models import create_model

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (16, 32, 32, 3), dtype=np.uint8)
    release = write_cifar10c(tmp_path / "c10c", images, rng.integers(0, 10, 16),
                             corruptions=["fog"], severities=[5], progress=False)  # fmt: skip
    torch.manual_seed(0)
    torch.save(create_model("tiny_resnet").state_dict(), tmp_path / "tiny.pt")
    common = ["bench", "--model", "tiny_resnet", "--checkpoint", str(tmp_path / "tiny.pt"),
              "--data", str(release), "--corruptions", "fog", "--methods", "source,ecotta,eata",
              "--batch", "4", "--quiet"]  # fmt: skip
    return lambda *extra: main([*common, *extra])


def _source_folder(root: Path) -> Path:
    rng = np.random.default_rng(1)
    for cls in ("a", "b"):
        (root / "train" / cls).mkdir(parents=True)
        for i in range(6):
            pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / "train" / cls / f"{i}.png")
    return root


def test_ecotta_and_eata_are_refused_without_source_data(bench, tmp_path, capsys):
    assert bench("--json", str(tmp_path / "r.json")) == 2
    err = capsys.readouterr().err
    assert "ecotta (its warm-up) and eata (its Fisher estimate) need labelled source" in err
    assert "--source-data" in err and "--no-warmup" in err
    assert not (tmp_path / "r.json").exists()


def test_no_warmup_marks_the_rows_in_the_table_json_and_plot(bench, tmp_path, monkeypatch, capsys):
    from matplotlib.figure import Figure

    from edgeadapt.bench.report import markdown_table, results_from_json

    legend: list[str] = []
    savefig = Figure.savefig

    def spy(fig, *args, **kwargs):
        legend.extend(t.get_text() for t in fig.axes[0].get_legend().get_texts())
        return savefig(fig, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", spy)
    out = tmp_path / "r.json"
    assert bench("--no-warmup", "--json", str(out), "--plot", str(tmp_path / "r.png")) == 0
    printed = capsys.readouterr().out
    assert "| ecotta (no warm-up) |" in printed and "| eata (no Fisher) |" in printed
    assert "| source |" in printed
    payload = json.loads(out.read_text())
    setup = {r["method"]: r["setup"] for r in payload["results"]}
    assert setup == {"source": {}, "ecotta": {"warmup": None}, "eata": {"fisher": None}}
    assert "| ecotta (no warm-up) |" in payload["table"]
    assert legend == ["source", "ecotta (no warm-up)", "eata (no Fisher)"]
    # A re-read file keeps the labels (re-plotting, merging runs).
    assert "| eata (no Fisher) |" in markdown_table(results_from_json(payload))


def test_source_data_warms_up_and_is_recorded(bench, tmp_path, capsys):
    source = _source_folder(tmp_path / "source")
    out = tmp_path / "r.json"
    assert bench("--source-data", str(source), "--warmup-steps", "2", "--json", str(out)) == 0
    printed = capsys.readouterr().out
    assert f"EcoTTA warm-up: 2 steps of 12 clean training images from {source}" in printed
    assert "| ecotta |" in printed and "no warm-up" not in printed
    setup = {r["method"]: r["setup"] for r in json.loads(out.read_text())["results"]}
    warm = {"source": str(source), "images": 12, "steps": 2, "batch": 12}
    assert setup["ecotta"] == {"warmup": warm}
    assert setup["eata"] == {"fisher": {"source": str(source), "images": 12}}


def test_conflicting_or_unusable_source_data_is_refused(bench, tmp_path, capsys):
    source = _source_folder(tmp_path / "source")
    assert bench("--source-data", str(source), "--no-warmup") == 2
    assert "exclude each other" in capsys.readouterr().err
    assert bench("--source-data", str(tmp_path / "c10c")) == 2  # corrupted test images
    assert "CIFAR-10-C release folder" in capsys.readouterr().err


def test_run_cifar10c_refuses_before_loading_and_marks_a_zero_step_warmup(tmp_path):
    from edgeadapt.bench.cifar import run_cifar10c
    from edgeadapt.bench.report import markdown_table
    from edgeadapt.data import write_cifar10c
    from edgeadapt.models import create_model
    from edgeadapt.setup_data import SourceDataError

    model = create_model("tiny_resnet")
    with pytest.raises(SourceDataError, match="source_data=PATH"):
        run_cifar10c(model, ["ecotta"], corruptions=["fog"], release_dir=tmp_path / "nope")
    rng = np.random.default_rng(0)
    release = write_cifar10c(tmp_path / "c10c", rng.integers(0, 256, (8, 32, 32, 3), np.uint8),
                             rng.integers(0, 10, 8), corruptions=["fog"], severities=[5],
                             progress=False)  # fmt: skip
    results = run_cifar10c(model, ["ecotta"], corruptions=["fog"], release_dir=release,
                           batch_size=4, warmup_steps=0, progress=False,
                           log=lambda _: None)  # fmt: skip
    assert results[0].setup == {"warmup": None}
    assert "| ecotta (no warm-up) |" in markdown_table(results)
