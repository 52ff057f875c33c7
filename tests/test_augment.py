"""The test-time augmentations: drawing and applying are separate, and agree with each other."""

from __future__ import annotations

import torch

from edgeadapt.methods._augment import augment, augmented_views, draw_views, views_from_draws


def _gen(seed: int = 3) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_draws_have_the_documented_shapes_and_ranges():
    draws = draw_views((5, 3, 8, 8), _gen(), 4)
    assert draws.uniform.shape == (4, 5, 9) and draws.blur.shape == (4, 1)
    assert draws.noise.shape == (4, 5, 3, 8, 8)
    assert float(draws.uniform.min()) >= 0 and float(draws.uniform.max()) < 1


def test_views_from_draws_are_what_the_generator_gives():
    x = torch.rand(5, 3, 8, 8, generator=_gen(9))
    # One view per call of `augment`, in order: the same numbers as drawing all views at once.
    one_by_one = torch.cat([augment(x, g) for g in [_gen()] for _ in range(3)])
    assert torch.equal(one_by_one, augmented_views(x, _gen(), 3))
    assert torch.equal(one_by_one, views_from_draws(x, draw_views(x.shape, _gen(), 3)))
    assert not torch.equal(one_by_one[:5], one_by_one[5:10])  # views differ


def test_normalised_input_is_augmented_in_pixel_space():
    mean, std = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)
    pixels = torch.rand(4, 3, 8, 8, generator=_gen(5))
    m, s = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)
    normalised = augmented_views((pixels - m) / s, _gen(), 2, mean, std)
    assert torch.allclose(normalised * s + m, augmented_views(pixels, _gen(), 2), atol=1e-5)
