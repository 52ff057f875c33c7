"""Streaming video through a model: sources, per-frame delta inference, adaptation, summaries.

Layers, bottom up: `errors` → `preprocess` (fit frames to the model, input hysteresis, to
tensors) and `scene_cut` (cuts judged against the stream's own change) → `sources` (video
files via PyAV, image sequences via Pillow, cameras via OpenCV, arrays) and `synthetic`
(labelled clips from still images) → `_engines` (a dense and a delta per-frame predictor with
MAC accounting) → `streaming` (the loop: predict, adapt, scene cuts) → `summary` (a JSON-able
report) → `command` (`edgeadapt stream`).

Names are imported lazily, so `import edgeadapt.video` loads neither torch nor a decoder.
"""

from __future__ import annotations

import importlib
from typing import Any

# name -> submodule that defines it
_LAZY = {
    "FrameDecodeError": "errors",
    "MissingDependencyError": "errors",
    "PartialVideoError": "errors",
    "SourceNotFoundError": "errors",
    "InputHysteresis": "preprocess",
    "fit_frame": "preprocess",
    "to_model_input": "preprocess",
    "ArraySource": "sources",
    "CameraSource": "sources",
    "FrameSource": "sources",
    "ImageSequenceSource": "sources",
    "VideoFileSource": "sources",
    "InputReport": "sources",
    "open_frames": "sources",
    "SceneCutConfig": "scene_cut",
    "SceneCutDetector": "scene_cut",
    "ClipStyle": "synthetic",
    "synthesize_clip": "synthetic",
    "synthesize_clips": "synthetic",
    "FrameResult": "streaming",
    "stream": "streaming",
    "summarize": "summary",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'edgeadapt.video' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"edgeadapt.video.{module}"), name)
    globals()[name] = value
    return value
