"""CoTTA's teacher may see several augmented views in one forward: each view must keep its
own BN batch statistics, so the pseudo-labels and the whole run match one view at a time."""

from __future__ import annotations

import pytest
import torch
from tiny import tiny_config

from edgeadapt import wrap
from edgeadapt.config import CoTTAConfig
from edgeadapt.errors import ConfigError
from edgeadapt.methods._augment import augment, augmented_views
from edgeadapt.methods._state import per_group_batch_statistics, use_batch_statistics
from edgeadapt.normalization import IMAGENET_MEAN, IMAGENET_STD


def test_grouped_statistics_equal_separate_forwards(tiny_model, batch):
    for m in tiny_model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            use_batch_statistics(m)
    views = [batch + 0.3 * k for k in range(3)]
    separate = torch.cat([tiny_model(v) for v in views])
    with per_group_batch_statistics(tiny_model, 3):
        together = tiny_model(torch.cat(views))
    assert torch.allclose(together, separate, atol=1e-5)
    # One forward of the stack *without* grouping mixes the views' statistics: the test can fail.
    assert not torch.allclose(tiny_model(torch.cat(views)), separate, atol=1e-3)
    assert "forward" not in vars(
        next(m for m in tiny_model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    )


def test_views_per_pass_does_not_change_the_run(tiny_model, batch, example):
    outputs = []
    for per_pass in (1, 4):
        cfg = tiny_config("cotta", augmentations=4, views_per_pass=per_pass)
        adapter = wrap(tiny_model, cfg, example_input=example)
        outputs.append(torch.stack([adapter(batch + 0.1 * i) for i in range(3)]))
        adapter.unwrap()
    assert torch.allclose(outputs[0], outputs[1], atol=1e-4)


def test_views_per_pass_must_be_positive():
    with pytest.raises(ConfigError, match="views_per_pass"):
        CoTTAConfig(views_per_pass=0)


def test_views_of_normalised_input_are_augmented_pixels_normalised_back():
    mean, std = IMAGENET_MEAN, IMAGENET_STD
    m, s = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)
    pixels = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    gens = [torch.Generator().manual_seed(0) for _ in range(2)]
    views = augmented_views((pixels - m) / s, gens[0], 3, mean, std)
    expected = (torch.cat([augment(pixels, gens[1]) for _ in range(3)]) - m) / s
    assert views.shape == (12, 3, 16, 16)
    assert torch.allclose(views, expected, atol=1e-5)
    # Without mean/std the views are taken on x as given: not the same thing here.
    plain = augmented_views((pixels - m) / s, torch.Generator().manual_seed(0), 3)
    assert not torch.allclose(plain, expected, atol=1e-2)
