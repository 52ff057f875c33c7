"""`edgeadapt stream --adapt ecotta` and `stream(adapt="ecotta")` warm the adapter up on the
given source images, refuse without them, or run on request and say so; never a silent skip."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgeadapt.cli import main


@pytest.fixture(autouse=True)
def installed_copy(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEADAPT_SHARED", str(tmp_path / "no-shared"))
    monkeypatch.setenv("EDGEADAPT_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def source(tmp_path) -> Path:
    """Labelled source images of the frames' size (32×32): train/<class>/<i>.png."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for cls in ("a", "b"):
        (tmp_path / "source" / "train" / cls).mkdir(parents=True)
        for i in range(6):
            pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / "source" / "train" / cls / f"{i}.png")
    return tmp_path / "source"


@pytest.fixture
def run_stream(image_folder, tiny_checkpoint):
    common = ["stream", str(image_folder), "--model", "tiny_resnet", "--checkpoint",
              str(tiny_checkpoint), "--adapt-batch", "4", "--quiet"]  # fmt: skip
    return lambda *extra: main([*common, *extra])


def test_adapting_with_ecotta_without_source_data_is_refused(run_stream, tmp_path, capsys):
    assert run_stream("--adapt", "ecotta", "--json", str(tmp_path / "s.json")) == 2
    err = capsys.readouterr().err
    assert "ecotta (its warm-up) needs labelled source images" in err
    assert "--source-data" in err and "--no-warmup" in err
    assert not (tmp_path / "s.json").exists()


def test_the_summary_names_the_warm_up(run_stream, source, tmp_path, capsys):
    out = tmp_path / "s.json"
    code = run_stream("--adapt", "ecotta", "--delta", "--source-data", str(source),
                      "--warmup-steps", "2", "--json", str(out))  # fmt: skip
    assert code == 0
    warm = {"source": str(source), "images": 12, "steps": 2, "batch": 12}
    report = json.loads(out.read_text())
    assert report["adapter_setup"]["setup"] == {"warmup": warm}
    assert report["adaptation"]["steps"] == 3
    assert f"adapter setup: warmed up on {source}: 2 steps of 12" in capsys.readouterr().out


def test_no_warmup_runs_and_says_so(run_stream, tmp_path, capsys):
    out = tmp_path / "s.json"
    assert run_stream("--adapt", "ecotta", "--no-warmup", "--json", str(out)) == 0
    assert json.loads(out.read_text())["adapter_setup"]["setup"] == {"warmup": None}
    assert "adapter setup: no warm-up" in capsys.readouterr().out


def test_setup_options_need_a_method_that_has_a_setup(run_stream, source, capsys):
    assert run_stream("--adapt", "tent", "--source-data", str(source)) == 2
    assert "only for --adapt ecotta or eata" in capsys.readouterr().err
    assert run_stream("--no-warmup") == 2
    assert "--no-warmup: only for --adapt ecotta or eata" in capsys.readouterr().err


def test_stream_function_refuses_warms_up_or_skips(clip, tiny_net, source):
    from edgeadapt.setup_data import SourceDataError
    from edgeadapt.video.streaming import stream

    with pytest.raises(SourceDataError, match="source_data=PATH"):
        next(stream(clip, tiny_net, delta=False, adapt="ecotta", batch_size=4))
    records: list = []
    results = list(stream(clip, tiny_net, delta=False, adapt="ecotta", batch_size=4,
                          source_data=source, warmup_steps=1, on_setup=records.append))  # fmt: skip
    assert len(results) == len(clip)
    assert records == [{"warmup": {"source": str(source), "images": 12, "steps": 1, "batch": 12}}]
    list(stream(clip, tiny_net, delta=False, adapt="ecotta", batch_size=4, no_warmup=True,
                on_setup=records.append))  # fmt: skip
    assert records[-1] == {"warmup": None}
