"""Synthetic labelled clips: a slow camera over a still image, deterministic per seed."""

from __future__ import annotations

import numpy as np
import pytest

from edgeadapt.errors import ConfigError, InputError
from edgeadapt.video.synthetic import ClipStyle, synthesize_clip, synthesize_clips


@pytest.fixture
def image() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)


def test_clip_changes_slowly_and_is_deterministic(image):
    clip = synthesize_clip(image, ClipStyle(length=8), seed=3)
    assert clip.shape == (8, 32, 32, 3) and clip.dtype == np.uint8
    np.testing.assert_array_equal(clip, synthesize_clip(image, ClipStyle(length=8), seed=3))
    steps = np.abs(np.diff(clip.astype(np.int16), axis=0)).mean(axis=(1, 2, 3))
    whole = np.abs(clip[-1].astype(np.int16) - clip[0].astype(np.int16)).mean()
    assert (steps > 0).all() and steps.max() < whole  # small steps add up to a real drift


def test_noise_free_still_clip_is_static(image):
    style = ClipStyle(length=4, pan=0.0, zoom=0.0, light=0.0, noise=0.0)
    clip = synthesize_clip(image, style)
    assert (clip == clip[0]).all()


def test_batch_and_bad_input(image):
    clips = synthesize_clips(np.stack([image, image]), ClipStyle(length=3))
    assert clips.shape == (2, 3, 32, 32, 3)
    assert not np.array_equal(clips[0], clips[1])  # one seed per clip
    with pytest.raises(InputError):
        synthesize_clip(image.astype(np.float32))
    with pytest.raises(ConfigError):
        ClipStyle(zoom=1.0)
    with pytest.raises(ConfigError):
        synthesize_clip(image, ClipStyle(pan=40.0))
