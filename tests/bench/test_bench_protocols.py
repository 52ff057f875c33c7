"""Protocols, the stream runner and reports, on a tiny model and random images."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edgeadapt.bench import GeneratedSource, make_protocol, run_benchmark
from edgeadapt.bench.report import markdown_report, markdown_table, plot_results, rounds_table
from edgeadapt.data import to_tensor
from edgeadapt.errors import ConfigError
from edgeadapt.models import create_model


def test_protocol_shapes():
    c = ["gaussian_noise", "fog"]
    assert [(s.corruption, s.round) for s in make_protocol("continual", c)] == [
        ("gaussian_noise", 0),
        ("fog", 0),
    ]
    assert all(s.reset_before for s in make_protocol("reset", c))
    assert not any(s.reset_before for s in make_protocol("continual", c, rounds=3))
    assert len(make_protocol("long-term", c)) == 20  # ten rounds by default
    assert len(make_protocol("long-term", c, rounds=1)) == 2  # an explicit number is kept
    ramp = [s.severity for s in make_protocol("gradual", c, severity=3)]
    assert ramp == [1, 2, 3, 2, 1, 1, 2, 3, 2, 1]
    for bad in [dict(name="nope"), dict(severity=6), dict(rounds=0)]:
        with pytest.raises(ConfigError):
            make_protocol(bad.pop("name", "continual"), c, **bad)


@pytest.fixture
def tiny_stream():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (48, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, 48)
    return GeneratedSource(images, labels, seed=0), np.arange(48)


def test_runner_counts_errors_and_memory(tiny_stream):
    source, order = tiny_stream
    torch.manual_seed(0)
    model = create_model("tiny_resnet")
    segments = make_protocol("reset", ["gaussian_noise", "contrast"], severity=2)
    results = run_benchmark(
        model, ["source", "tent", "ecotta"], segments, source, order=order, batch_size=16,
        to_batch=lambda a: to_tensor(a, normalize=True), progress=False, log=lambda _: None,
    )  # fmt: skip
    assert [r.method for r in results] == ["source", "tent", "ecotta"]
    for r in results:
        assert len(r.segments) == 2 and all(s.images == 48 for s in r.segments)
        assert 0 <= r.mean_error <= 100 and r.images_per_second > 0
        assert r.memory["input_shape"] == (16, 3, 32, 32)
    # The source model's errors are what a plain forward gives.
    with torch.no_grad():
        images, labels = source.get("gaussian_noise", 2)
        expected = int(
            (model.eval()(to_tensor(images, normalize=True)).argmax(1).numpy() != labels).sum()
        )
    assert results[0].segments[0].errors == expected
    assert results[2].memory["adaptation"] < results[1].memory["adaptation"]

    table = markdown_table(results)
    assert "| ecotta |" in table and "gauss" in table and "contr" in table
    assert table.startswith("| method |")  # one round: no caption needed
    assert markdown_report(results) == table  # and no per-round table


def test_plot_is_written(tiny_stream, tmp_path):
    source, order = tiny_stream
    segments = make_protocol("continual", ["fog"], severity=1, rounds=2)
    results = run_benchmark(
        create_model("tiny_resnet"), ["source", "norm"], segments, source, order=order, batch_size=24,
        to_batch=lambda a: to_tensor(a, normalize=True), progress=False, log=lambda _: None,
    )  # fmt: skip
    assert len(results[0].rounds()) == 2
    table = markdown_table(results)
    assert "last round" in table and "mean, 2 rounds" in table
    assert table.startswith("Per-domain error (%) of round 1")  # not a mean over the rounds
    assert markdown_report(results).endswith(rounds_table(results))  # what bench prints
    rows = rounds_table(results).splitlines()
    assert "round 2" in rows[0] and len(rows) == 2 + len(results)
    assert rows[2].startswith("| source |") and rows[2].endswith("| +0.00 |")  # no adaptation
    path = plot_results(results, tmp_path / "r.png", "t")
    assert path.stat().st_size > 1000


def test_demo_runs_small():
    from edgeadapt.bench.demo import run_demo

    results, table = run_demo(
        ("source", "tent"),
        corruptions=("gaussian_noise", "fog"),
        train_epochs=2,
        progress=False,
        log=lambda _: None,
    )
    assert [r.method for r in results] == ["source", "tent"]
    assert "| tent |" in table
    assert results[0].segments[0].images == 540  # 30% of scikit-learn's 1797 digits


def test_demo_gives_augmenting_methods_the_input_normalisation(monkeypatch):
    # CoTTA's views are taken on pixels in [0, 1]; the demo's batches are normalised, so without
    # input_mean/input_std the views were clamped to black and white (29% error, not 13%).
    import edgeadapt.methods.cotta as cotta
    from edgeadapt.bench.demo import run_demo

    ranges = []
    real = cotta.augmented_views

    def spy(x, gen, count, mean=None, std=None):
        m, s = (torch.as_tensor(v).view(1, -1, 1, 1) if v is not None else v for v in (mean, std))
        pixels = x if m is None else x * s + m
        ranges.append((float(pixels.min()), float(pixels.max())))
        return real(x, gen, count, mean, std)

    monkeypatch.setattr(cotta, "augmented_views", spy)
    run_demo(("cotta",), corruptions=("fog",), train_epochs=1, progress=False, log=lambda _: None,
             overrides={"cotta": {"augmentations": 2, "confidence_threshold": 1.0}})  # fmt: skip
    inside = [lo >= -1e-4 and hi <= 1 + 1e-4 for lo, hi in ranges]
    # The memory measurement steps on random data first (outside); every stream step is inside.
    assert sum(inside) >= 9 and inside[-sum(inside) :] == [True] * sum(inside), ranges
