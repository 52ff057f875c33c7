"""SAR: the sharpness-aware step against a hand computation, reliable-sample filtering, model
recovery, and its state (reset, resume, frozen tensors) on a tiny random model."""

from __future__ import annotations

import copy
import io
import math

import pytest
import torch

import edgeadapt.methods.sar  # noqa: F401  (registers the method)
from edgeadapt.api import config_for, list_methods, wrap
from edgeadapt.errors import ConfigError
from edgeadapt.losses import entropy
from edgeadapt.methods.base import AdaptationDivergedError
from edgeadapt.methods.sar import SARAdapter
from edgeadapt.models import create_model
from edgeadapt.modules.stream_norm import StreamBatchNorm2d

# A random tiny model's predictions are all near ln(10): a margin of 10 keeps every sample.
SETTINGS = {"lr": 1e-2, "entropy_margin": 10.0}


def _adapter(**extra) -> SARAdapter:
    torch.manual_seed(0)
    model = create_model("tiny_resnet")
    example = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    return wrap(model, config_for("sar", **{**SETTINGS, **extra}), example_input=example)


def _frames(n: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, 3, 16, 16, generator=torch.Generator().manual_seed(seed))


def _state(adapter) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in adapter.state_dict().items()}


def _trained(adapter) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in adapter.named_parameters() if p.requires_grad}


def _stream_stats(module) -> list[torch.Tensor]:
    return [
        t.clone()
        for m in module.modules()
        if isinstance(m, StreamBatchNorm2d)
        for t in (m.running_mean, m.running_var)
    ]


def _through_a_file(state: dict) -> dict:
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


def _sam_reference(adapter, x: torch.Tensor, rho: float, lr: float):
    """By hand, on copies of the model before the step: the plain SGD step, the SAM step and
    the second entropy (the first step of SGD with momentum moves by lr · gradient)."""
    thr = adapter.entropy_threshold
    at_theta, at_eps = copy.deepcopy(adapter.model), copy.deepcopy(adapter.model)
    params = [p for p in at_theta.parameters() if p.requires_grad]
    theta = [p.detach().clone() for p in params]
    ent = entropy(at_theta(x))
    keep = ent.detach() < thr
    grads = torch.autograd.grad(ent[keep].mean(), params)
    norm = torch.sqrt(sum((g * g).sum() for g in grads))
    params_eps = [p for p in at_eps.parameters() if p.requires_grad]
    with torch.no_grad():
        for p, g in zip(params_eps, grads):
            p.add_(rho * g / norm)
    ent2 = entropy(at_eps(x))  # a copy from before the step: the stream statistics it had
    keep2 = keep & (ent2.detach() < thr)
    second = ent2[keep2].mean()
    grads2 = torch.autograd.grad(second, params_eps)
    plain = [t - lr * g for t, g in zip(theta, grads)]
    sam = [t - lr * g for t, g in zip(theta, grads2)]
    return plain, sam, second.item(), (int(keep.sum()), int(keep2.sum()))


# ---- the adapter ---------------------------------------------------------------------------
def test_registered():
    assert "sar" in list_methods()
    assert isinstance(_adapter(), SARAdapter)


@pytest.mark.parametrize(("batch", "window"), [(1, 64), (4, 64), (8, 64), (64, 64), (8, None)])
def test_runs_and_adapts_at_any_batch(batch, window):
    small = "adapt" if window else "predict"
    adapter = _adapter(stat_window=window, small_batch=small)
    before = _trained(adapter)
    for seed in range(3):
        out = adapter(_frames(batch, seed))
        assert out.shape == (batch, 10) and torch.isfinite(out).all()
    assert adapter.steps_taken == 3 and adapter.loss_average is not None
    assert all(not torch.equal(p, before[n]) for n, p in _trained(adapter).items())


def test_lean_runs_at_batch_one():
    adapter = _adapter(lean=True)
    before = _trained(adapter)
    for seed in range(2):
        assert torch.isfinite(adapter(_frames(1, seed))).all()
    assert all(not torch.equal(p, before[n]) for n, p in _trained(adapter).items())


@pytest.mark.parametrize("batch", [1, 8])
def test_update_is_an_sgd_step_with_the_gradient_at_theta_plus_eps(batch):
    x = _frames(batch)
    probe = _adapter()
    with torch.no_grad():
        ent = entropy(copy.deepcopy(probe.model)(x))
    # At batch 8 a margin at the median keeps half the samples at θ, and of those fewer
    # still at θ + ε: both filters are in the computation.
    margin = (float(ent.median()) + 1e-6) / math.log(10) if batch > 1 else 10.0
    rho, lr = 0.05, 0.1
    adapter = _adapter(entropy_margin=margin, rho=rho, lr=lr)
    plain, sam, second, (kept, kept_again) = _sam_reference(adapter, x, rho, lr)
    if batch > 1:
        assert 0 < kept_again < kept < batch
    adapter(x)
    got = list(_trained(adapter).values())
    for g, s in zip(got, sam, strict=True):
        torch.testing.assert_close(g, s, rtol=1e-6, atol=1e-7)
    # ...which is not the plain step: ε mattered.
    assert max(float((s - p).abs().max()) for s, p in zip(sam, plain)) > 1e-3
    assert adapter.loss_average == pytest.approx(second, rel=1e-6)


def test_without_perturbation_the_second_forward_repeats_the_first():
    """ρ = 0: the second forward normalises exactly as the first did (with the stream
    statistics from before it), so SAR's step is the filtered-entropy gradient step."""
    x = _frames(4)
    adapter = _adapter(rho=0.0, lr=0.1)
    plain, _, _, _ = _sam_reference(adapter, x, 0.0, 0.1)
    adapter(x)
    for g, p in zip(_trained(adapter).values(), plain):
        torch.testing.assert_close(g, p, rtol=0, atol=1e-7)


def test_theta_is_restored_before_the_optimiser_steps():
    adapter = _adapter(rho=1.0)
    theta = list(_trained(adapter).values())
    seen = []
    adapter.optimizer.register_step_pre_hook(
        lambda opt, args, kwargs: seen.append(
            [p.detach().clone() for g in opt.param_groups for p in g["params"]]
        )
    )
    adapter(_frames(1))
    assert len(seen) == 1
    assert all(torch.equal(a, b) for a, b in zip(seen[0], theta, strict=True))
    assert any(not torch.equal(a, b) for a, b in zip(_trained(adapter).values(), theta))


@pytest.mark.parametrize("batch", [1, 8])
def test_second_forward_leaves_the_stream_statistics_as_the_first_left_them(batch):
    adapter = _adapter(rho=1.0)
    x = _frames(batch)
    once = copy.deepcopy(adapter.model)
    before = _stream_stats(once)
    with torch.no_grad():
        once(x)  # one forward: one observation of the stream
    adapter(x)
    after = _stream_stats(adapter.model)
    assert all(torch.equal(a, b) for a, b in zip(after, _stream_stats(once), strict=True))
    assert any(not torch.equal(a, b) for a, b in zip(after, before))


def test_filtered_out_batches_do_not_update():
    adapter = _adapter(entropy_margin=1e-3)  # nothing on a random model is this confident
    trained = _trained(adapter)
    for seed in range(3):
        adapter(_frames(4, seed))
    assert all(torch.equal(p, trained[n]) for n, p in _trained(adapter).items())
    assert adapter.optimizer.state_dict()["state"] == {}
    assert adapter.loss_average is None and adapter.steps_taken == 3


def test_no_step_when_nothing_is_reliable_at_theta_plus_eps():
    """A frame just under the margin at θ; ε climbs the entropy past it, so no step. With
    ρ = 0 the same frame updates: it was the second filter that held the step back."""
    x = _frames(1)
    probe = _adapter()
    with torch.no_grad():
        h = float(entropy(copy.deepcopy(probe.model)(x)))
    margin = (h + 1e-5) / math.log(10)
    for rho, steps in ((0.05, False), (0.0, True)):
        adapter = _adapter(entropy_margin=margin, rho=rho)
        trained = _trained(adapter)
        adapter(x)
        moved = any(not torch.equal(p, trained[n]) for n, p in _trained(adapter).items())
        assert moved == steps
        assert (adapter.loss_average is not None) == steps


# ---- model recovery ------------------------------------------------------------------------
def test_recovery_fires_below_the_threshold_and_not_above():
    x = _frames(4)
    first = _adapter(reset_below=0.0)
    first(x)
    value = first.loss_average
    above = _adapter(reset_below=value - 1e-4)
    above(x)
    assert above.recoveries == 0 and above.loss_average == value
    below = _adapter(reset_below=value + 1e-4)
    below(x)
    assert below.recoveries == 1 and below.loss_average is None


def test_moving_average_of_the_second_entropy():
    adapter = _adapter(reset_below=0.0, loss_ema=0.5)
    seconds = []
    reliable = adapter._reliable_entropy

    def spy(logits, among=None):
        loss, keep = reliable(logits, among)
        if among is not None:
            seconds.append(loss.item())
        return loss, keep

    adapter._reliable_entropy = spy
    for seed in range(3):
        adapter(_frames(4, seed))
    a, b, c = seconds
    assert adapter.loss_average == pytest.approx(0.5 * (0.5 * a + 0.5 * b) + 0.5 * c, rel=1e-12)


def test_recovery_restores_trained_weights_and_optimiser_and_keeps_stream_statistics():
    adapter = _adapter(reset_below=100.0)  # any entropy is below it: recover on every step
    at_wrap = _state(adapter)
    x = _frames(4)
    once = copy.deepcopy(adapter.model)
    with torch.no_grad():
        once(x)
    adapter(x)
    assert adapter.recoveries == 1 and adapter.loss_average is None
    for n, p in _trained(adapter).items():
        assert torch.equal(p, at_wrap[n]), n
    assert adapter.optimizer.state_dict()["state"] == {}
    # The stream statistics are this frame's observation, not the wrap-time ones.
    kept = _stream_stats(adapter.model)
    assert all(torch.equal(a, b) for a, b in zip(kept, _stream_stats(once), strict=True))
    assert any(not torch.equal(a, b) for a, b in zip(kept, _stream_stats(_adapter().model)))
    adapter(_frames(4, seed=2))
    assert adapter.recoveries == 2


# ---- invariants and state ------------------------------------------------------------------
def test_frozen_tensors_bit_identical_and_predictions_vary_at_batch_one():
    adapter = _adapter()
    before = _state(adapter)
    trained = set(adapter.adapter_state_keys())
    outputs = [adapter(x) for x in _frames(16).split(1)]
    after = adapter.state_dict()
    for k, v in before.items():
        if k not in trained:
            assert torch.equal(v, after[k]), f"frozen tensor {k} changed"
    for n in _trained(adapter):
        assert not torch.equal(before[n], after[n]), f"{n} did not move"
    logits = torch.cat(outputs)
    assert float(logits.std(dim=0).min()) > 1e-4, "predictions do not depend on the input"
    with adapter.frozen():
        frozen = torch.cat([adapter(x) for x in _frames(4, seed=5).split(1)])
    assert float(frozen.std(dim=0).min()) > 1e-4


def test_reset_is_exact_including_the_moving_average_and_recoveries():
    # A threshold this random model's entropy crosses within four steps.
    fresh = _adapter(reset_below=2.1)
    adapter = _adapter(reset_below=2.1)
    for seed in range(4):
        adapter(_frames(4, seed))
    assert adapter.recoveries >= 1 and adapter.loss_average is not None
    adapter.reset()
    assert adapter.loss_average is None and adapter.recoveries == 0
    for k, v in fresh.state_dict().items():
        assert torch.equal(v, adapter.state_dict()[k]), k
    for seed in range(3):
        assert torch.equal(fresh(_frames(4, seed)), adapter(_frames(4, seed)))
    assert (fresh.loss_average, fresh.recoveries) == (adapter.loss_average, adapter.recoveries)


@pytest.mark.parametrize("reset_below", [0.0, 100.0])
def test_resumed_adapter_goes_on_exactly(reset_below):
    batches = [_frames(n, seed) for seed, n in enumerate([1, 4, 1, 4, 1])]
    straight = _adapter(reset_below=reset_below)
    for x in batches:
        straight(x)
    first = _adapter(reset_below=reset_below)
    for x in batches[:2]:
        first(x)
    saved = _through_a_file(first.resume_state())
    second = _adapter(reset_below=reset_below)
    second.load_resume_state(saved)
    for x in batches[2:]:
        second(x)
    for k, v in straight.state_dict().items():
        assert torch.equal(second.state_dict()[k], v), k
    assert (second.loss_average, second.recoveries) == (
        straight.loss_average,
        straight.recoveries,
    )
    assert second.recoveries == (5 if reset_below else 0)
    s, t = second.optimizer.state_dict()["state"], straight.optimizer.state_dict()["state"]
    assert s.keys() == t.keys()
    assert all(torch.equal(s[i]["momentum_buffer"], t[i]["momentum_buffer"]) for i in s)
    straight.reset()
    second.reset()
    for k, v in straight.state_dict().items():
        assert torch.equal(second.state_dict()[k], v), k


# ---- errors --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "bad",
    [
        {"rho": -0.1},
        {"reset_below": -1.0},
        {"loss_ema": 1.0},
        {"loss_ema": -0.1},
        {"entropy_margin": 0.0},
        {"lr": 0.0},
        {"no_such_field": 1},
    ],
)
def test_bad_config_values(bad):
    with pytest.raises(ConfigError):
        config_for("sar", **bad)


def test_diverged_model_raises_and_does_not_step():
    adapter = _adapter()
    with torch.no_grad():
        adapter.model.bn1.weight.fill_(float("nan"))
    with pytest.raises(AdaptationDivergedError, match="nan"):
        adapter(_frames(4))
    assert adapter.steps_taken == 0 and adapter.optimizer.state_dict()["state"] == {}


def test_nan_at_theta_plus_eps_raises_with_theta_restored():
    adapter = _adapter()
    theta = _trained(adapter)
    calls = []

    def second_forward_nan(module, args, out):
        calls.append(1)
        return out * float("nan") if len(calls) == 2 else out

    adapter.model.register_forward_hook(second_forward_nan)
    with pytest.raises(AdaptationDivergedError, match="not applied"):
        adapter(_frames(4))
    assert len(calls) == 2
    assert all(torch.equal(p, theta[n]) for n, p in _trained(adapter).items())
    assert adapter.steps_taken == 0 and adapter.optimizer.state_dict()["state"] == {}
