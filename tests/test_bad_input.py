"""Bad input gets a typed error that says what to do, or the documented fallback."""

from __future__ import annotations

import pytest
import torch
from tiny import METHODS, tiny_config

from edgeadapt.api import config_for, wrap
from edgeadapt.errors import BatchTooSmallError, ConfigError, InputError, UnknownNameError


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (torch.randn(3, 16, 16), "unsqueeze"),
        (torch.randn(4, 1, 16, 16), "3 input channels"),
        (torch.randint(0, 255, (4, 3, 16, 16), dtype=torch.uint8), "255"),
        (torch.randn(4, 3, 16, 16, dtype=torch.float64), "float64"),
        (torch.zeros(0, 3, 16, 16), "empty batch"),
        ([[1.0]], "torch.Tensor"),
    ],
)
def test_bad_batches(method, bad, message, tiny_model, example):
    adapter = wrap(tiny_model, tiny_config(method), example_input=example)
    with pytest.raises(InputError, match=message):
        adapter(bad)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_pixels(method, value, tiny_model, batch, example):
    adapter = wrap(tiny_model, tiny_config(method), example_input=example)
    before = {k: v.clone() for k, v in adapter.state_dict().items()}
    bad = batch.clone()
    bad[3, 0, 2, 2] = value
    with pytest.raises(InputError, match=r"samples \[3\]"):
        adapter(bad)
    for k, v in adapter.state_dict().items():
        assert torch.equal(v, before[k]), "a rejected batch must not change state"


@pytest.mark.parametrize("method", ["norm", "tent", "eata", "cotta", "ecotta"])
def test_batch_of_one_refused_or_predicted_when_asked(method, tiny_model, batch, example):
    refusing = wrap(tiny_model, tiny_config(method, small_batch="error"), example_input=example)
    with pytest.raises(BatchTooSmallError, match="small_batch='adapt'"):
        refusing(batch[:1])
    fallback = wrap(tiny_model, tiny_config(method, small_batch="predict"), example_input=example)
    before = {k: v.clone() for k, v in fallback.state_dict().items()}
    out = fallback(batch[:1])
    assert out.shape == (1, 10) and torch.isfinite(out).all()
    for k, v in fallback.state_dict().items():
        assert torch.equal(v, before[k])


def test_no_window_cannot_adapt_single_frames():
    with pytest.raises(ConfigError, match="stat_window=None"):
        config_for("tent", stat_window=None)
    with pytest.raises(ConfigError, match="stat_window"):
        config_for("tent", stat_window=0)
    config_for("tent", stat_window=None, small_batch="predict")  # the published rule, as asked


def test_source_accepts_batch_of_one(tiny_model, batch, example):
    assert wrap(tiny_model, tiny_config("source"), example_input=example)(batch[:1]).shape == (
        1,
        10,
    )


def test_bad_configs(tiny_model):
    with pytest.raises(ConfigError, match="lr"):
        config_for("tent", lr=-1.0)
    with pytest.raises(ConfigError, match="bad settings"):
        config_for("tent", no_such_field=1)
    with pytest.raises(UnknownNameError, match="available"):
        config_for("tentt")
    with pytest.raises(ConfigError, match="method config"):
        wrap(tiny_model, {"method": "tent"})
    with pytest.raises(ConfigError, match="meta_kernel_size"):
        config_for("ecotta", meta_kernel_size=2)
