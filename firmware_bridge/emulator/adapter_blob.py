"""The adapter (meta-network weights) as bytes: what GET_ADAPTER returns and SET_ADAPTER takes.

A plain, deterministic layout a firmware can write from its parameter table without a
serialisation library, so a blob's CRC-32 only changes when a weight does:

    "EAAD" | u16 version (1) | u16 count | count x (u16 name_len | name UTF-8 | u8 ndim |
    ndim x u32 dim | float32 values, C order)

Names are the adapter's parameter names (`adapter.model.named_parameters()`), so a pulled
blob loads straight into the host's eager adapter (`blob_to_state`). Every length is checked
against the bytes actually present before anything is allocated.
"""

from __future__ import annotations

import math
import struct

import numpy as np
import torch
from torch import Tensor

from ..errors import MessageError

__all__ = ["MAGIC", "blob_to_state", "state_to_blob"]

MAGIC = b"EAAD"
_HEAD = struct.Struct("<4sHH")
_MAX_NDIM = 8


def state_to_blob(state: dict[str, Tensor]) -> bytes:
    out = [_HEAD.pack(MAGIC, 1, len(state))]
    for name, value in sorted(state.items()):
        raw = name.encode("utf-8")
        v = value.detach().to(torch.float32).contiguous()
        out.append(struct.pack("<H", len(raw)) + raw + struct.pack("<B", v.dim()))
        out.append(struct.pack(f"<{v.dim()}I", *v.shape))
        out.append(v.numpy().astype("<f4").tobytes())
    return b"".join(out)


def blob_to_state(blob: bytes) -> dict[str, Tensor]:
    """Parse a blob; MessageError saying where it is malformed."""
    if len(blob) < _HEAD.size:
        raise MessageError("adapter blob shorter than its header")
    magic, version, count = _HEAD.unpack_from(blob)
    if magic != MAGIC or version != 1:
        raise MessageError(f"not an adapter blob v1 (magic {magic!r}, version {version})")
    pos, state = _HEAD.size, {}
    for i in range(count):
        (n,) = _take(blob, pos, "<H", i)
        try:
            name = bytes(blob[pos + 2 : pos + 2 + n]).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise MessageError(f"adapter blob entry {i}: name is not UTF-8") from exc
        pos += 2 + n
        (ndim,) = _take(blob, pos, "<B", i)
        if ndim > _MAX_NDIM:
            raise MessageError(f"adapter blob entry {i} claims {ndim} dimensions")
        dims = _take(blob, pos + 1, f"<{ndim}I", i)
        pos += 1 + 4 * ndim
        size = 4 * math.prod(dims)
        if pos + size > len(blob):
            raise MessageError(f"adapter blob entry {i} ({name!r}) runs past the end")
        values = np.frombuffer(blob, dtype="<f4", count=size // 4, offset=pos)
        state[name] = torch.from_numpy(values.astype(np.float32)).view(tuple(dims))
        pos += size
    if pos != len(blob):
        raise MessageError(f"adapter blob has {len(blob) - pos} bytes after its last entry")
    return state


def _take(blob: bytes, pos: int, fmt: str, entry: int) -> tuple[int, ...]:
    size = struct.calcsize(fmt)
    if pos + size > len(blob):
        raise MessageError(f"adapter blob entry {entry} is truncated")
    return struct.unpack_from(fmt, blob, pos)
