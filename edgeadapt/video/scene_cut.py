"""Scene-cut detection measured against the stream's own frame-to-frame change.

Why not a fixed fraction of changed pixels (the runtime's `scene_cut_threshold`): codec noise
on a static camera nudges almost every pixel by a level or two on every frame, so the
changed-pixel fraction says "cut" on many frames (at the old CLI default of 0.5: 60% and 99%
of the frames of two real clips, as reported; 14-25% of the frames of the two shared
static-camera clips at 32x32 and 240x320). A cut is a frame that changed far more than this
stream usually changes, and changed almost everywhere.

The statistic is the median over pixels of |frame - previous frame| (levels 0-255, the
largest of the three channels): a person crossing part of the view moves the mean but not
the median; only a change over most of the frame does. Measured on the two static-camera
clips in ../shared/data/videos (fitted to 32x32 and 240x320): at most 6 levels between
consecutive frames, people walking in included; between a frame of one clip and a frame of
the other, at least 85. The threshold is `ratio` times the running median of that statistic
over the last `window` frames, and never below `min_change`, so a noisy or busy camera raises
its own bar, and a near-zero median on a still scene does not turn noise into cuts.

Warm-up: the median is over the changes seen so far, so it settles within a few frames; the
first change of a stream (or of a new frame shape) has no history, and `min_change` alone
judges it. Cuts enter the history too: a median shrugs off a cut now and then, and a stream
whose every change looked like a cut (a camera noisier than `min_change`) must set the bar
by them.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from edgeadapt.errors import ConfigError

__all__ = ["SceneCutConfig", "SceneCutDetector"]


@dataclass(frozen=True, kw_only=True)
class SceneCutConfig:
    """When `SceneCutDetector` calls a frame a scene cut (see the module docstring)."""

    # A cut's change is more than this many times the recent median change. The median of a
    # steady camera's change barely moves from frame to frame (sample-data's heavily corrupted
    # clip: 14-17 levels, its new digits 37-66), so twice it is already far out.
    ratio: float = 2.0
    min_change: float = 16.0  # ... and more than this many levels: a still scene's median is ~0
    window: int = 30  # frames of recent change the median is taken over

    def __post_init__(self) -> None:
        if self.ratio < 1.0:
            raise ConfigError(
                f"ratio must be >= 1 (a cut exceeds the usual change), got {self.ratio}"
            )
        if not 0.0 <= self.min_change < 255.0:
            raise ConfigError(f"min_change must be in [0, 255) levels, got {self.min_change}")
        if self.window < 1:
            raise ConfigError(f"window must be >= 1 frame, got {self.window}")


def frame_change(frame: np.ndarray, previous: np.ndarray) -> float:
    """Median over pixels of the largest per-channel |difference|, in levels (uint8 frames)."""
    diff = np.abs(frame.astype(np.int16) - previous.astype(np.int16)).max(axis=-1)
    return float(np.median(diff))


class SceneCutDetector:
    """Feed uint8 (H, W, 3) frames in order; `__call__` says whether each one is a cut.

    A frame of another shape restarts the comparison and the history without calling it a
    cut; whoever consumes the frames decides what a new shape means.
    """

    def __init__(self, config: SceneCutConfig | None = None) -> None:
        self.config = config or SceneCutConfig()
        self._previous: np.ndarray | None = None
        self._history: deque[float] = deque(maxlen=self.config.window)
        self.last_change = 0.0  # the latest frame's statistic (diagnostics)

    def threshold(self) -> float:
        """The change (levels) above which the next frame is a cut."""
        c = self.config
        if not self._history:
            return c.min_change
        return max(c.min_change, c.ratio * float(np.median(self._history)))

    def restart(self, frame: np.ndarray) -> None:
        """A cut the caller knows of: compare the next frame with this one, keep the history
        (it describes the camera and codec, which a cut does not change)."""
        self._previous = frame

    def __call__(self, frame: np.ndarray) -> bool:
        previous, self._previous = self._previous, frame
        if previous is None or previous.shape != frame.shape:
            self._history.clear()  # another size, another noise level
            return False
        self.last_change = frame_change(frame, previous)
        cut = self.last_change > self.threshold()
        self._history.append(self.last_change)
        return cut
