"""Tiny footage for the video tests: an mp4 written with PyAV, an image sequence, an array.

Fixtures only (tests/conftest.py shadows this module's name for imports).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

SIZE = 32  # even: yuv420p needs even sides


def moving_square(frames: int = 12, cut_at: int | None = None) -> np.ndarray:
    """uint8 (T, 32, 32, 3): a bright square sliding right on a grey background; from
    `cut_at` on, a different scene (inverted colours), so that frame is a hard cut."""
    out = np.full((frames, SIZE, SIZE, 3), 90, dtype=np.uint8)
    for t in range(frames):
        out[t, 8:16, t : t + 8] = (240, 200, 40)
        if cut_at is not None and t >= cut_at:
            out[t] = 255 - out[t]
    return out


def write_mp4(path: Path, frames: np.ndarray, rate: int = 10) -> Path:
    import av

    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("mpeg4", rate=rate)
        stream.width, stream.height, stream.pix_fmt = SIZE, SIZE, "yuv420p"
        for img in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
        container.mux(stream.encode())  # flush the encoder
    return path


@pytest.fixture
def make_mp4():
    """The mp4 writer, for tests that need their own footage."""
    return write_mp4


@pytest.fixture
def make_clip():
    """The synthetic scene, for tests that need their own footage."""
    return moving_square


@pytest.fixture
def clip() -> np.ndarray:
    return moving_square()


@pytest.fixture
def mp4(tmp_path: Path, clip: np.ndarray) -> Path:
    return write_mp4(tmp_path / "clip.mp4", clip)


@pytest.fixture
def image_folder(tmp_path: Path, clip: np.ndarray) -> Path:
    from PIL import Image

    folder = tmp_path / "frames"
    folder.mkdir()
    for i, img in enumerate(clip):  # frame2 < frame10: natural order, not lexicographic
        Image.fromarray(img).save(folder / f"frame{i}.png")
    return folder


@pytest.fixture
def tiny_net() -> torch.nn.Module:
    from edgeadapt.models import create_model

    torch.manual_seed(0)
    return create_model("tiny_resnet").eval()


@pytest.fixture
def tiny_checkpoint(tmp_path: Path, tiny_net: torch.nn.Module) -> Path:
    """`tiny_net`'s weights as a --checkpoint file (`edgeadapt stream` refuses to run without
    trained weights; for the tests, seeded random ones stand in)."""
    path = tmp_path / "tiny_resnet.pt"
    torch.save(tiny_net.state_dict(), path)
    return path


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models: a thread pool only adds sync overhead on a busy 2-core box."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
