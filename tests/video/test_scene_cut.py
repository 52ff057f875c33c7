"""Scene cuts are judged against the stream's own change: codec-like noise on a still scene is
never a cut, a frame of another scene is; an explicit changed-pixel fraction still overrides."""

from __future__ import annotations

import numpy as np
import pytest

from edgeadapt.cli import main
from edgeadapt.delta import DeltaRuntimeConfig
from edgeadapt.errors import ConfigError
from edgeadapt.video.scene_cut import SceneCutConfig, SceneCutDetector
from edgeadapt.video.streaming import stream

CUT = 14


def noisy_still(frames: int = 24, cut_at: int | None = None, noise: int = 3) -> np.ndarray:
    """A still textured scene, every frame with fresh noise of up to ±`noise` levels per
    pixel and channel (about what a codec does to a static camera: most pixels change a
    little); from `cut_at` on, an unrelated scene with the same noise."""
    rng = np.random.default_rng(0)
    scene = rng.integers(30, 226, (32, 32, 3)).astype(np.int16)
    other = rng.integers(30, 226, (32, 32, 3)).astype(np.int16)
    out = []
    for t in range(frames):
        base = other if cut_at is not None and t >= cut_at else scene
        out.append(base + rng.integers(-noise, noise + 1, base.shape))
    return np.clip(np.stack(out), 0, 255).astype(np.uint8)


def test_noise_on_a_still_scene_is_no_cut_though_it_changes_most_pixels():
    clip = noisy_still()
    changed = (clip[1:] != clip[:-1]).any(-1).mean((1, 2))
    assert changed.min() > 0.9  # what fired the old changed-pixel threshold (0.5)
    detector = SceneCutDetector()
    assert not any(detector(f) for f in clip)


def test_a_frame_of_another_scene_is_a_cut_and_only_that_frame():
    detector = SceneCutDetector()
    assert [t for t, f in enumerate(noisy_still(cut_at=CUT)) if detector(f)] == [CUT]


def test_a_cut_during_the_warm_up_is_found():
    for cut_at in (1, 2):  # no history yet (the floor decides), one change of history
        detector = SceneCutDetector()
        assert [t for t, f in enumerate(noisy_still(cut_at=cut_at)) if detector(f)] == [cut_at]


def test_a_noisier_camera_raises_its_own_bar():
    # Noise of ±40 levels: the median change (~44) is over the floor (16 levels), so the very
    # first change, with no history to compare, looks like a cut; from then on the bar is 2×
    # the camera's own change: noise never clears it again, another scene does.
    detector = SceneCutDetector()
    clip = noisy_still(frames=40, cut_at=30, noise=40)
    assert [t for t, f in enumerate(clip) if detector(f)] == [1, 30]
    assert detector.threshold() > 80


def test_stream_reanchors_at_the_detected_cut_and_nowhere_else(tiny_net):
    results = list(stream(noisy_still(cut_at=CUT), tiny_net, delta=True, calibration_frames=4))
    assert [r.index for r in results if r.scene_cut] == [CUT]
    assert [r.index for r in results if r.anchor] == [0, CUT]
    dense = list(stream(noisy_still(cut_at=CUT), tiny_net, delta=False))
    assert [r.index for r in dense if r.scene_cut] == [CUT]  # reported, nothing to re-anchor


def test_an_explicit_fraction_is_the_runtimes_test_as_before(tiny_net):
    clip = noisy_still(cut_at=CUT)
    results = list(stream(clip, tiny_net, delta=True, scene_cut=0.5, calibration_frames=4))
    # Noise changes over 90% of the pixels: at 0.5 every frame re-anchors (the reported bug).
    assert sum(r.scene_cut for r in results) == len(clip) - 1
    off = list(stream(clip, tiny_net, delta=True, scene_cut=None, calibration_frames=4))
    assert not any(r.scene_cut for r in off) and [r.index for r in off if r.anchor] == [0]


def test_a_callers_runtime_config_keeps_its_fraction_unless_scene_cut_says_otherwise(tiny_net):
    clip, fraction = noisy_still(cut_at=CUT), DeltaRuntimeConfig(scene_cut_threshold=0.5)
    kept = list(stream(clip, tiny_net, runtime_config=fraction, calibration_frames=4))
    assert sum(r.scene_cut for r in kept) == len(clip) - 1  # as before the relative rule
    rule = SceneCutConfig()
    chosen = list(stream(clip, tiny_net, runtime_config=fraction, scene_cut=rule,
                         calibration_frames=4))  # fmt: skip
    assert [r.index for r in chosen if r.scene_cut] == [CUT]


def test_bad_rules_are_refused(tiny_net):
    with pytest.raises(ConfigError, match="SceneCutConfig"):
        next(stream(noisy_still(), tiny_net, scene_cut="often"))
    with pytest.raises(ConfigError):
        next(stream(noisy_still(), tiny_net, scene_cut=1.5))
    with pytest.raises(ConfigError):
        SceneCutConfig(ratio=0.5)


@pytest.mark.parametrize("value, cuts", [(None, 1), ("auto", 1), ("0.5", 11)])
def test_cli_default_is_auto_and_a_number_overrides_it(
    tmp_path, tiny_checkpoint, capsys, value, cuts
):
    from PIL import Image

    (tmp_path / "still").mkdir()
    for t, frame in enumerate(noisy_still(frames=12, cut_at=6)):  # lossless: the noise stays
        Image.fromarray(frame).save(tmp_path / "still" / f"{t}.png")
    argv = ["stream", str(tmp_path / "still"), "--model", "tiny_resnet", "--checkpoint",
            str(tiny_checkpoint), "--delta", "--quiet"]  # fmt: skip
    if value is not None:
        argv += ["--scene-cut-threshold", value]
    assert main(argv) == 0
    assert f"scene cuts {cuts} detected" in capsys.readouterr().out


def test_cli_rejects_a_threshold_that_is_neither_auto_nor_a_number(capsys, mp4):
    with pytest.raises(SystemExit):
        main(["stream", str(mp4), "--model", "tiny_resnet", "--scene-cut-threshold", "often"])
    assert "--scene-cut-threshold" in capsys.readouterr().err
