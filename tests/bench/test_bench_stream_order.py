"""The temporally correlated stream (the Dirichlet label-shift order of NOTE and RoTTA) as a
benchmark protocol dimension: the order itself, per-domain draws, the runner, resume, and the
bench command's flags and records. Tiny labels, a tiny model, random images."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch

from edgeadapt.bench import GeneratedSource, make_protocol, run_benchmark
from edgeadapt.bench.cifar import describe_stream, run_cifar10c
from edgeadapt.bench.progress_file import orders_sha256
from edgeadapt.bench.report import results_from_json, setting_label
from edgeadapt.cli import main
from edgeadapt.data import (
    check_stream,
    correlated_order,
    majority_share,
    mean_run_length,
    segment_orders,
    stream_order,
    to_tensor,
)
from edgeadapt.errors import CheckpointMismatchError, ConfigError
from edgeadapt.models import create_model

BALANCED = np.repeat(np.arange(10), 100)  # 10 classes: 10 slots of 100 images


def test_correlated_order_is_a_deterministic_permutation():
    labels = np.random.default_rng(0).integers(0, 10, 500)
    order = correlated_order(labels, 0.1, seed=3)
    assert order.dtype == np.int64 and sorted(order) == list(range(500))
    assert np.array_equal(order, correlated_order(labels, 0.1, seed=3))
    assert not np.array_equal(order, correlated_order(labels, 0.1, seed=4))
    assert sorted(correlated_order(labels, 0.1, seed=(3, 1), slots=4)) == list(range(500))
    assert correlated_order(np.array([], dtype=np.int64)).size == 0
    # Classes named by any integers, not only 0..K-1.
    assert sorted(correlated_order(np.array([7, 7, 42, 3]), 0.5)) == [0, 1, 2, 3]


def _mean_over_seeds(measure, delta: float) -> float:
    return float(
        np.mean([measure(BALANCED[correlated_order(BALANCED, delta, s)]) for s in range(5)])
    )


def test_correlation_falls_as_delta_grows():
    def runs(delta):
        return _mean_over_seeds(mean_run_length, delta)

    def slot_mix(delta):  # share of the main class in each stretch of one slot's length
        return _mean_over_seeds(lambda y: majority_share(y, 100), delta)

    iid = BALANCED[stream_order(len(BALANCED))]
    assert runs(0.01) > runs(0.1) > runs(1e4) > 5 * mean_run_length(iid)
    assert slot_mix(0.1) > 3 * slot_mix(1e4)  # δ=0.1: each slot is mostly one or two classes
    assert abs(slot_mix(1e4) - majority_share(iid, 100)) < 0.05  # δ=1e4: each slot mixed as i.i.d.


def test_large_delta_keeps_class_blocks_as_the_published_sampler_does():
    # RoTTA/NOTE list each class's share of a slot as one block, so even δ → ∞ is not the i.i.d.
    # order: runs of about 100/10 images. Kept so results compare with the papers.
    order = BALANCED[correlated_order(BALANCED, 1e4, 0)]
    assert 8 <= mean_run_length(order) <= 12
    for i in range(0, 1000, 100):  # yet every slot-long stretch holds every class, about evenly
        counts = np.bincount(order[i : i + 100], minlength=10)
        assert counts.min() >= 1 and counts.max() <= 20, counts


def test_segment_orders_iid_is_one_order_and_correlated_is_drawn_per_domain():
    labels = np.random.default_rng(1).integers(0, 10, 300)
    iid = segment_orders(labels, 3, seed=2, n_images=120)
    assert all(o is iid[0] for o in iid) and np.array_equal(iid[0], stream_order(300, 2)[:120])
    corr = segment_orders(labels, 3, stream="correlated", seed=2, n_images=120)
    for o in corr:  # the same subset, rearranged
        assert sorted(o) == sorted(iid[0])
    assert not np.array_equal(corr[0], corr[1]) and not np.array_equal(corr[1], corr[2])
    again = segment_orders(labels, 3, stream="correlated", delta=0.1, seed=2, n_images=120)
    assert all(np.array_equal(a, b) for a, b in zip(corr, again, strict=True))
    assert mean_run_length(labels[corr[0]]) > 3 * mean_run_length(labels[iid[0]])


def test_repeat_every_replays_one_rounds_draws_and_redraw_does_not():
    labels = np.random.default_rng(1).integers(0, 10, 300)
    fresh = segment_orders(labels, 6, stream="correlated", seed=2, n_images=120)
    replay = segment_orders(labels, 6, stream="correlated", seed=2, n_images=120, repeat_every=3)
    for k in range(3):  # round 1 is the same draw either way; round 2 replays it, or not
        assert np.array_equal(replay[k], fresh[k]) and np.array_equal(replay[k + 3], fresh[k])
        assert not np.array_equal(fresh[k + 3], fresh[k])
    with pytest.raises(ConfigError, match="repeat_every must be >= 1"):
        segment_orders(labels, 6, stream="correlated", repeat_every=0)


def test_round_order_is_recorded_only_when_it_replays_and_typos_are_refused():
    assert describe_stream("correlated", 0.1, 0) == {"order": "correlated", "delta": 0.1, "seed": 0}
    assert describe_stream("correlated", 0.1, 0, "repeat")["rounds"] == "repeat"
    assert "rounds" not in describe_stream("iid", None, 0, "repeat")  # one order already
    with pytest.raises(ConfigError, match="--round-order"):
        describe_stream("correlated", 0.1, 0, "repeats")


@pytest.mark.parametrize("delta", [0, -1, float("nan"), float("inf"), "x", None])
def test_bad_delta_is_a_config_error(delta):
    with pytest.raises(ConfigError, match="delta must be a finite number > 0"):
        correlated_order(BALANCED, delta)


def test_bad_stream_settings_are_config_errors():
    assert check_stream("iid") is None and check_stream("correlated") == 0.1
    assert check_stream("correlated", 2) == 2.0
    with pytest.raises(ConfigError, match="unknown stream 'dirichlet'"):
        check_stream("dirichlet")
    with pytest.raises(ConfigError, match="only shapes the correlated stream"):
        check_stream("iid", 0.1)
    with pytest.raises(ConfigError, match="delta must be"):
        check_stream("correlated", -0.1)
    with pytest.raises(ConfigError, match="slots"):
        correlated_order(BALANCED, 0.1, slots=0)
    with pytest.raises(ConfigError, match="window"):
        majority_share(BALANCED, 0)


@pytest.mark.parametrize(
    "flags, said",
    [(["--stream", "correlated", "--delta", "-1"], "delta must be"),
     (["--stream", "dirichlet"], "unknown stream"),
     (["--delta", "0.5"], "only shapes the correlated stream")],
)  # fmt: skip
def test_bench_checks_stream_flags_before_loading_anything(flags, said, monkeypatch, capsys):
    import edgeadapt.models

    def no_loading(*args, **kwargs):
        raise AssertionError("the model was loaded before the flags were checked")

    monkeypatch.setattr(edgeadapt.models, "create_model", no_loading)
    assert main(["bench", "--model", "tiny_resnet", "--quiet", *flags]) == 2
    out = capsys.readouterr()
    assert out.out == "" and len(out.err.strip().splitlines()) == 1 and said in out.err


def test_run_cifar10c_checks_the_stream_before_the_data(tmp_path):
    model = create_model("tiny_resnet")
    for stream, delta in [("correlated", -1.0), ("iid", 0.1), ("nope", None)]:
        with pytest.raises(ConfigError, match=r"delta|stream"):
            run_cifar10c(model, ["source"], corruptions=["fog"], release_dir=tmp_path / "nope",
                         stream=stream, delta=delta)  # fmt: skip


@pytest.fixture
def tiny():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (40, 32, 32, 3), dtype=np.uint8)
    labels = np.repeat(np.arange(4), 10)
    segments = make_protocol("continual", ["gaussian_noise", "fog"], severity=2)
    return GeneratedSource(images, labels, seed=0), labels, segments


def _normalised(a):
    return to_tensor(a, normalize=True)


def _run(source, segments, order, methods=("source",), to_batch=_normalised,
         log=lambda _: None, **kwargs):  # fmt: skip
    torch.manual_seed(0)
    return run_benchmark(
        create_model("tiny_resnet"), list(methods), segments, source, order=order, batch_size=8,
        to_batch=to_batch, progress=False, log=log, **kwargs,
    )  # fmt: skip


def test_correlated_run_feeds_each_domain_its_order_and_records_delta(tiny):
    source, labels, segments = tiny
    orders = segment_orders(labels, len(segments), stream="correlated", delta=0.1, n_images=32)
    fed = []

    def to_batch(a):
        fed.append(a)
        return to_tensor(a, normalize=True)

    about = describe_stream("correlated", 0.1, 0)
    (result,) = _run(source, segments, orders, to_batch=to_batch, stream=about)
    for k, seg in enumerate(segments):  # fed[0] is the example input wrap traces with
        images, _ = source.get(seg.corruption, seg.severity)
        assert np.array_equal(np.concatenate(fed[1 + 4 * k : 5 + 4 * k]), images[orders[k]])
    assert [s.images for s in result.segments] == [32, 32]
    assert result.batch_size == 8 and result.stream == {
        "order": "correlated",
        "delta": 0.1,
        "seed": 0,
    }
    row = json.loads(json.dumps(result.to_dict()))
    assert row["batch_size"] == 8 and row["stream"]["delta"] == 0.1
    (back,) = results_from_json({"results": [row]})
    assert setting_label(back.batch_size, back.stream) == "batch 8, correlated δ=0.1"
    assert setting_label(8, {"order": "iid", "seed": 0}) == "batch 8, i.i.d."


def test_one_order_or_the_same_order_per_segment_give_identical_results(tiny):
    source, labels, segments = tiny
    order = stream_order(len(labels))
    one = _run(source, segments, order, methods=("tent",))
    each = _run(source, segments, [order] * len(segments), methods=("tent",))
    assert [s.errors for s in one[0].segments] == [s.errors for s in each[0].segments]
    assert one[0].stream == {"order": "given"}
    with pytest.raises(ConfigError, match="3 image orders for 2 segments"):
        _run(source, segments, [order] * 3)


class PowerCut(Exception):
    pass


class CutAfter:
    """A data source that fails on its `calls`-th read, as a killed process would stop."""

    def __init__(self, source, calls: int) -> None:
        self.source, self.calls = source, calls

    def get(self, corruption: str, severity: int):
        self.calls -= 1
        if self.calls < 0:
            raise PowerCut
        return self.source.get(corruption, severity)


def test_correlated_stream_resumes_and_refuses_another_delta(tiny, tmp_path):
    source, labels, segments = tiny
    segments = segments * 2  # four domains

    def orders(delta):
        return segment_orders(labels, len(segments), stream="correlated", delta=delta)

    straight = _run(source, segments, orders(0.1), methods=("tent",))
    with pytest.raises(PowerCut):  # read 1 is the example input; reads 2-3 two domains
        _run(CutAfter(source, 3), segments, orders(0.1), methods=("tent",), state_dir=tmp_path)
    said: list[str] = []
    resumed = _run(source, segments, orders(0.1), methods=("tent",), state_dir=tmp_path,
                   log=said.append)  # fmt: skip
    assert any("after 2 of 4 segments" in line for line in said)
    assert [s.errors for s in resumed[0].segments] == [s.errors for s in straight[0].segments]
    with pytest.raises(CheckpointMismatchError, match="image order"):
        _run(source, segments, orders(1.0), methods=("tent",), state_dir=tmp_path)
    iid = segment_orders(labels, len(segments))
    with pytest.raises(CheckpointMismatchError, match="image order"):
        _run(source, segments, iid, methods=("tent",), state_dir=tmp_path)


def test_iid_progress_files_keep_their_hash(tiny, tmp_path):
    source, labels, segments = tiny
    order = stream_order(len(labels))
    # What files written before per-segment orders hold: the hash of the one order.
    assert orders_sha256([order] * 5) == hashlib.sha256(order.tobytes()).hexdigest()
    _run(source, segments, order, methods=("tent",), state_dir=tmp_path)
    said: list[str] = []
    _run(source, segments, segment_orders(labels, 2), methods=("tent",), state_dir=tmp_path,
         log=said.append)  # fmt: skip
    assert any("after 2 of 2 segments" in line for line in said)


def _release(root, n: int = 24):
    """A CIFAR-10-C style folder of random images: fog.npy (5·n rows) and labels.npy."""
    rng = np.random.default_rng(0)
    root.mkdir()
    np.save(root / "fog.npy", rng.integers(0, 255, (5 * n, 32, 32, 3), dtype=np.uint8))
    np.save(root / "labels.npy", np.tile(np.repeat(np.arange(4), n // 4), 5))
    return root


def test_bench_command_records_batch_and_stream(tmp_path, capsys):
    release = _release(tmp_path / "c10c")
    torch.manual_seed(0)
    torch.save(create_model("tiny_resnet").state_dict(), tmp_path / "tiny.pt")
    out = tmp_path / "r.json"
    argv = ["bench", "--model", "tiny_resnet", "--checkpoint", str(tmp_path / "tiny.pt"),
            "--data", str(release), "--corruptions", "fog", "--methods", "source,norm",
            "--batch", "4", "--n-images", "20", "--warmup-steps", "0", "--quiet",
            "--stream", "correlated", "--delta", "0.5", "--json", str(out),
            "--markdown", str(tmp_path / "r.md")]  # fmt: skip
    assert main(argv) == 0
    title = "tiny_resnet, CIFAR-10-C severity 5, continual, batch 4, correlated δ=0.5"
    assert f"{title}\n\n| method |" in capsys.readouterr().out
    assert (tmp_path / "r.md").read_text().startswith(title)
    payload = json.loads(out.read_text())
    assert payload["batch_size"] == 4
    assert payload["stream"] == {"order": "correlated", "delta": 0.5, "seed": 0}
    for row in payload["results"]:
        assert row["stream"] == payload["stream"] and row["batch_size"] == 4
        assert [s["images"] for s in row["segments"]] == [20]
