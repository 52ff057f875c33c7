"""`stream` + `summarize`: per-frame results, MAC accounting, scene cuts, adaptation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edgeadapt.delta import deltaify, save_delta_weights, strip_delta
from edgeadapt.errors import CheckpointMismatchError, ConfigError, InputError
from edgeadapt.video.preprocess import to_model_input
from edgeadapt.video.streaming import stream
from edgeadapt.video.summary import per_frame_table, summarize


def test_summary_fields_and_delta_predictions_match_the_quantised_model(tiny_net, clip):
    results = list(stream(clip, tiny_net, delta=True, compare_dense=True, calibration_frames=4))
    s = summarize(results, source="clip")
    assert s["settings"] == {"source": "clip"} and s["frames"] == len(clip)
    assert set(s["latency_ms"]) == {"mean", "p50", "p90", "p99", "max"}
    macs = s["macs"]
    assert macs["dense_per_frame"] > 0
    assert 0 < macs["performed_per_frame"] < macs["dense_per_frame"]  # a moving square: sparse
    assert macs["skipped_fraction"] == pytest.approx(1 - 1 / macs["reduction"])
    assert macs["element_reduction"] >= macs["reduction"]  # element-sparse skips at least as much
    layers = s["nonzero_delta_per_layer"]
    assert "conv1" in layers and all(0 <= v <= 1 for v in layers.values())
    assert s["anchors"] == 1 and s["scene_cuts"] == 0
    assert 0 <= s["agreement"] <= 1 and s["wall_clock_ratio"] > 0
    # The runtime is exact: its predictions are the dense quantised model's, frame by frame.
    quantised = deltaify(tiny_net, to_model_input(clip[:4])).eval().double()
    with torch.no_grad():
        expected = quantised(to_model_input(clip).double()).argmax(1).tolist()
    assert [r.prediction for r in results] == expected
    table = per_frame_table(results)
    assert len(table["latency_ms"]) == len(clip) and table["anchor"][0] is True


def test_a_static_scene_costs_nothing_after_the_anchor(tiny_net, clip):
    still = np.repeat(clip[:1], 5, axis=0)
    results = list(stream(still, tiny_net, delta=True, calibration_frames=2))
    assert results[0].macs_performed == results[0].macs_dense
    assert [r.macs_performed for r in results[1:]] == [0] * 4
    assert all(v == 0.0 for v in results[-1].layer_nonzero.values())


def test_dense_stream_performs_every_mac(tiny_net, clip):
    s = summarize(stream(clip, tiny_net, delta=False))
    assert s["macs"]["reduction"] == 1.0 and s["anchors"] == 0


def test_detected_scene_cut_resets_the_delta_state(tiny_net, make_clip):
    cut = make_clip(frames=10, cut_at=6)
    results = list(stream(cut, tiny_net, delta=True, calibration_frames=4))
    assert [r.index for r in results if r.scene_cut] == [6]
    assert [r.index for r in results if r.anchor] == [0, 6]
    assert results[6].macs_performed == results[6].macs_dense
    assert summarize(results)["scene_cuts"] == 1


def test_signalled_scene_cut_resets_the_delta_state(tiny_net, clip):
    results = list(stream(clip, tiny_net, delta=True, cut_at=[4], calibration_frames=4))
    assert [r.index for r in results if r.cut_signalled] == [4]
    assert [r.index for r in results if r.anchor] == [0, 4]
    assert results[4].macs_performed == results[4].macs_dense > results[5].macs_performed
    assert summarize(results)["scene_cuts_signalled"] == 1


def test_adaptation_on_the_stream_leaves_the_model_alone(tiny_net, clip):
    before = {k: v.clone() for k, v in tiny_net.state_dict().items()}
    results = list(stream(clip, tiny_net, delta=True, adapt="tent", batch_size=4))
    assert [r.index for r in results if r.adapted] == [3, 7, 11]
    assert all(r.adapt_batch == 4 for r in results if r.adapted)
    # After each step the runtime is rebuilt from the new weights: a dense anchor follows.
    assert [r.index for r in results if r.anchor] == [0, 4, 8]
    s = summarize(results)
    assert s["adaptation"]["steps"] == 3 and s["adaptation"]["macs_estimate"] > 0
    # An anchor after every 4 frames plus 3 dense passes per adapted frame: more than dense,
    # and said so, not as a "reduction" below 1.
    a = s["adaptation"]
    assert a["macs_per_frame_incl_adaptation"] > s["macs"]["dense_per_frame"]
    assert a["macs_vs_dense_incl_adaptation"].endswith("x more")
    for k, v in tiny_net.state_dict().items():
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)


def test_ratios_are_said_as_more_or_fewer_never_a_reduction_below_one():
    from edgeadapt.video.summary import times

    assert times(2.5, "fewer", "more") == "2.50x fewer"
    assert times(0.4, "fewer", "more") == "2.50x more"
    assert times(1.0, "faster", "slower") == "1.00x faster"
    assert times(0.0, "faster", "slower") == "infinitely slower"


def test_augmenting_adapters_undo_the_streams_normalisation(tiny_net, clip, monkeypatch):
    # CoTTA's views are taken on pixels in [0, 1]; the stream feeds normalised frames, so the
    # adapter must know the stream's mean and std, or its views are clamped to black and white.
    import edgeadapt.methods.cotta as cotta
    from edgeadapt.config import CoTTAConfig

    ranges, real = [], cotta.augmented_views

    def spy(x, gen, count, mean=None, std=None):
        m, s = (torch.as_tensor(v).view(1, -1, 1, 1) if v is not None else v for v in (mean, std))
        pixels = x if m is None else x * s + m
        ranges.append((float(pixels.min()), float(pixels.max())))
        return real(x, gen, count, mean, std)

    monkeypatch.setattr(cotta, "augmented_views", spy)
    config = CoTTAConfig(augmentations=2, confidence_threshold=1.0)  # no input_mean/std given
    results = list(stream(clip, tiny_net, delta=False, adapt=config, batch_size=4))
    assert sum(r.adapted for r in results) == 3
    assert ranges and all(lo >= -1e-4 and hi <= 1 + 1e-4 for lo, hi in ranges), ranges


def test_trained_delta_weights_load_into_the_stream(tiny_net, clip, tmp_path):
    example = to_model_input(clip[:4])
    trained = deltaify(tiny_net, example)
    for q in [m for m in trained.modules() if hasattr(m, "log_step")]:
        q.log_step.data += 1.0  # coarser steps than calibration would pick: visible below
    save_delta_weights(trained, tmp_path / "d.pt")
    state = torch.load(tmp_path / "d.pt", weights_only=True)
    coarse = summarize(stream(clip, tiny_net, delta=True, delta_state=state, calibration_frames=4))
    fine = summarize(stream(clip, tiny_net, delta=True, calibration_frames=4))
    assert coarse["macs"]["element_per_frame"] < fine["macs"]["element_per_frame"]
    with pytest.raises(CheckpointMismatchError):
        list(stream(clip, tiny_net, delta=True, delta_state={"nope": torch.zeros(1)}))
    with pytest.raises(ConfigError):
        list(stream(clip, strip_delta(trained), delta=False, delta_state=state))


def test_bad_streams_raise_typed_errors(tiny_net, clip):
    with pytest.raises(InputError, match="fewer than 2"):
        list(stream(clip[:1], tiny_net, delta=True))
    with pytest.raises(ConfigError):
        list(stream(clip, tiny_net, adapt="tent", batch_size=1))
    with pytest.raises(InputError, match="uint8"):
        list(stream([clip[0], clip[1].astype(np.float32)], tiny_net, delta=False))
    with pytest.raises(InputError, match="no frames"):
        summarize([])


def _cifar_resnet():
    from edgeadapt.models.cifar_resnet import CifarResNet

    torch.manual_seed(0)
    return CifarResNet(1, widths=(16, 32)).eval()


def test_fast_stream_is_exact_on_the_frames_it_saw_and_skips_work(clip):
    """stream(fast=True): the fast runtime's logits are its dense integer reference's on the
    frame it saw, the moving square costs a fraction of the dense MACs, and the model was
    calibrated on each channel's maximum (its maps clamp there)."""
    from edgeadapt.delta import fast_reference_forward
    from edgeadapt.delta.fast_native import compiler_found

    if not compiler_found():  # with a compiler, a failed build fails the test
        pytest.skip("no C++ compiler: the fast runtime's kernels cannot build")
    model = _cifar_resnet()
    results = list(stream(clip, model, delta=True, fast=True, compare_dense=True,
                          calibration_frames=4, input_threshold=0))  # fmt: skip
    s = summarize(results)
    assert s["anchors"] == 1 and 0 < s["macs"]["performed_per_frame"] < s["macs"]["dense_per_frame"]
    assert "layer1.0.conv1" in s["nonzero_delta_per_layer"]
    # The same runtime, rebuilt as stream() builds it: the predictions are its reference's.
    from edgeadapt.delta import FastDeltaConfig, to_fast_delta_runtime

    quantised = deltaify(model, to_model_input(clip[:4]), quantile=1.0).eval()
    runtime = to_fast_delta_runtime(quantised, FastDeltaConfig(input_threshold=0))
    expected = [int(fast_reference_forward(runtime.plan, torch.from_numpy(f))[0].argmax())
                for f in clip]  # fmt: skip
    assert [r.prediction for r in results] == expected
    assert all(r.dense_prediction is not None for r in results)


def test_fast_stream_refuses_what_it_cannot_do_before_reading():
    def frames():
        raise AssertionError("read a frame before refusing")
        yield

    cifar = _cifar_resnet()
    with pytest.raises(ConfigError, match="needs delta"):
        list(stream(frames(), cifar, delta=False, fast=True))
    with pytest.raises(ConfigError, match="cannot adapt"):
        list(stream(frames(), cifar, delta=True, fast=True, adapt="tent"))
    plain = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Flatten())
    with pytest.raises(ConfigError, match="cannot lower"):
        list(stream(frames(), plain, delta=True, fast=True))
    with pytest.raises(ConfigError, match="whole levels"):
        list(stream(frames(), cifar, delta=True, fast=True, input_threshold=1.5))
    with pytest.raises(ConfigError, match="uint8: bits must be 1-8"):
        list(stream(frames(), cifar, delta=True, fast=True, bits=10))
