"""The byte layouts of tensors on the wire, shared by the emulator and the host commands.

An INFER, ADAPT or STREAM_FRAME payload carries the program's input in one of three layouts,
told apart by length (docs/bridge-protocol.md, "Tensor payloads"):

- raw: exactly the input's bytes in the program's dtype (float32, little-endian, C order);
- u8-affine: per channel (dim 1) a float32 `scale` and `offset`, then one uint8 per value,
  x = q * scale[c] + offset[c]. A 32x32 RGB image is 3,096 bytes instead of 12,288, so it
  fits a frame; for camera pixels normalised by (mean, std) it is lossless;
- empty (INFER and ADAPT only): run on the input staged by an UPLOAD with target INPUT.

Outputs go back as raw float32. Only numpy and torch here, no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from ..errors import MessageError

__all__ = [
    "decode_input",
    "decode_output",
    "encode_output",
    "encode_raw",
    "encode_u8_affine",
    "pixels_to_u8_affine",
    "raw_size",
    "u8_affine_size",
]


def raw_size(shape: Sequence[int]) -> int:
    return 4 * math.prod(shape)


def u8_affine_size(shape: Sequence[int]) -> int:
    return 8 * _channels(shape) + math.prod(shape)


def _channels(shape: Sequence[int]) -> int:
    return int(shape[1]) if len(shape) > 1 else 1


def encode_raw(x: Tensor) -> bytes:
    return x.detach().to(torch.float32).contiguous().numpy().astype("<f4").tobytes()


def encode_u8_affine(x: Tensor) -> bytes:
    """Quantise `x` per channel onto its own [min, max] (lossy for arbitrary floats: decode
    the result with `decode_input` to get what the device will compute on)."""
    x = x.detach().to(torch.float32)
    c = _channels(x.shape)
    per_channel = x.transpose(0, 1).reshape(c, -1) if x.dim() > 1 else x.reshape(1, -1)
    lo, hi = per_channel.min(dim=1).values, per_channel.max(dim=1).values
    scale = torch.where(hi > lo, (hi - lo) / 255.0, torch.ones_like(lo))
    view = (1, c) + (1,) * (x.dim() - 2) if x.dim() > 1 else (1,)
    q = torch.round((x - lo.view(view)) / scale.view(view)).clamp(0, 255).to(torch.uint8)
    return _affine_bytes(scale, lo, q)


def pixels_to_u8_affine(pixels: Tensor, mean: Sequence[float], std: Sequence[float]) -> bytes:
    """uint8 pixels (N, C, H, W) as the u8-affine layout of ((p / 255) - mean) / std: exactly
    the normalised input a model trained with that normalisation expects."""
    if pixels.dtype != torch.uint8 or pixels.dim() != 4 or len(mean) != pixels.shape[1]:
        raise ValueError("pixels must be uint8 (N, C, H, W) with one mean/std per channel")
    std_t = torch.tensor(std, dtype=torch.float32)
    scale = 1.0 / (255.0 * std_t)
    offset = -torch.tensor(mean, dtype=torch.float32) / std_t
    return _affine_bytes(scale, offset, pixels)


def _affine_bytes(scale: Tensor, offset: Tensor, q: Tensor) -> bytes:
    params = torch.stack([scale, offset], dim=1).numpy().astype("<f4").tobytes()
    return params + q.contiguous().numpy().tobytes()


def decode_input(data: bytes, shape: Sequence[int]) -> Tensor:
    """The float32 tensor of `shape` that `data` encodes (raw or u8-affine); MessageError
    naming both sizes when the length fits neither."""
    shape = tuple(int(s) for s in shape)
    c = _channels(shape)
    if len(data) == raw_size(shape):  # raw wins the (impossible for images) tie
        return torch.from_numpy(np.frombuffer(data, dtype="<f4").astype(np.float32)).view(shape)
    if len(data) == u8_affine_size(shape):
        params = np.frombuffer(data, dtype="<f4", count=2 * c).reshape(c, 2)
        q = np.frombuffer(data, dtype=np.uint8, offset=8 * c).astype(np.float32).reshape(shape)
        view = (1, c) + (1,) * (len(shape) - 2) if len(shape) > 1 else (1,)
        scale = torch.from_numpy(params[:, 0].copy()).view(view)
        offset = torch.from_numpy(params[:, 1].copy()).view(view)
        return torch.from_numpy(q) * scale + offset
    raise MessageError(
        f"input of {len(data)} bytes fits neither layout for shape {list(shape)}: raw float32 "
        f"is {raw_size(shape)} bytes, u8-affine {u8_affine_size(shape)}"
    )


def encode_output(y: Tensor) -> bytes:
    return encode_raw(y)


def decode_output(data: bytes, shape: Sequence[int] | None = None) -> Tensor:
    """float32 output bytes as a tensor (flat, or viewed as `shape`)."""
    if len(data) % 4:
        raise MessageError(f"output of {len(data)} bytes is not float32 values")
    y = torch.from_numpy(np.frombuffer(data, dtype="<f4").astype(np.float32))
    return y.view(tuple(shape)) if shape is not None else y
