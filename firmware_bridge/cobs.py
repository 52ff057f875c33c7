"""Consistent Overhead Byte Stuffing: frames contain no 0x00, so 0x00 can delimit them.

Written out rather than taken from the `cobs` package: it is thirty lines, needs no C
extension, and the C codec in `c/` mirrors it line by line. Byte-exact with the examples in
Cheshire & Baker (1999) and on Wikipedia, including the 254-byte-run cases.
"""

from __future__ import annotations

from .errors import FramingError

__all__ = ["decode", "encode"]


def encode(data: bytes) -> bytes:
    """COBS-encode `data`: no 0x00 in the result, which is at most 1 + len // 254 bytes longer."""
    out = bytearray([0])  # placeholder for the first code byte
    code_pos: int | None = 0
    code = 1
    last = len(data) - 1
    for i, byte in enumerate(data):
        if byte:
            out.append(byte)
            code += 1
        if byte == 0 or code == 0xFF:  # close the block; a full one (254 bytes) implies no zero
            out[code_pos] = code
            code = 1
            code_pos = len(out)
            if byte == 0 or i < last:
                out.append(0)
            else:  # data ended on a full block: no empty block after it (canonical form)
                code_pos = None
    if code_pos is not None:
        out[code_pos] = code
    return bytes(out)


def decode(data: bytes) -> bytes:
    """Invert `encode`; raise `FramingError(reason="cobs")` on a 0x00 or a block past the end."""
    out = bytearray()
    i, n = 0, len(data)
    while i < n:
        code = data[i]
        if code == 0:
            raise FramingError(f"COBS: zero byte at offset {i}", reason="cobs")
        end = i + code
        if end > n:
            raise FramingError(f"COBS: block at offset {i} runs past the end", reason="cobs")
        block = data[i + 1 : end]
        if 0 in block:
            raise FramingError(f"COBS: zero byte inside block at offset {i}", reason="cobs")
        out += block
        i = end
        if code != 0xFF and i < n:  # the implied zero, except after a full block or at the end
            out.append(0)
    return bytes(out)
