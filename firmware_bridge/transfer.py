"""Multi-frame transfers: UPLOAD (chunked, resumable, committed atomically) and GET_ADAPTER."""

from __future__ import annotations

import zlib
from collections.abc import Callable

from .errors import CrcError, ProtocolError
from .link import Link
from .messages import (
    Ack,
    AdapterChunk,
    GetAdapter,
    UploadBegin,
    UploadChunk,
    UploadCommit,
    UploadStatus,
)
from .protocol import Target

__all__ = ["download_adapter", "upload"]


def upload(
    link: Link,
    blob: bytes,
    *,
    target: Target = Target.PROGRAM,
    progress: Callable[[int, int], None] | None = None,
) -> int:
    """UPLOAD_BEGIN, UPLOAD_CHUNKs from the offset the device asks for, UPLOAD_COMMIT.

    The device's `next_offset` is authoritative: it says where a cut-off upload of the same
    (size, CRC) resumes, and re-synchronises us if a chunk was lost. Returns the resume offset.
    """
    size, crc = len(blob), zlib.crc32(blob)
    chunk = link.max_payload - UploadChunk.LAYOUT.size
    status = link.request(UploadBegin(int(target), size, crc), UploadStatus)
    resumed_from = offset = _next_offset(status, size)
    stalls = 0
    while offset < size:
        status = link.request(UploadChunk(offset, blob[offset : offset + chunk]), UploadStatus)
        new_offset = _next_offset(status, size)
        stalls = stalls + 1 if new_offset <= offset else 0
        if stalls > link.retries:  # a device that never moves on would loop us forever
            raise ProtocolError(f"device keeps asking for offset {new_offset}; upload stalled")
        offset = new_offset
        if progress is not None:
            progress(offset, size)
    link.request(UploadCommit(int(target), crc), Ack)
    return resumed_from


def download_adapter(link: Link, *, max_blob: int) -> bytes:
    """GET_ADAPTER until the whole blob is here; its size is checked against `max_blob` first."""
    max_len = link.max_payload - AdapterChunk.LAYOUT.size
    blob = bytearray()
    first: AdapterChunk | None = None
    while True:
        part = link.request(GetAdapter(len(blob), max_len), AdapterChunk)
        if first is None:
            if part.total_size > max_blob:
                raise ProtocolError(
                    f"adapter of {part.total_size} bytes exceeds max_blob={max_blob}; "
                    "raise max_blob if that is expected"
                )
            first = part
        if (part.total_size, part.crc) != (first.total_size, first.crc):
            raise ProtocolError("the adapter changed while it was read; read it again")
        if part.offset != len(blob) or len(blob) + len(part.data) > first.total_size:
            raise ProtocolError(f"adapter chunk at offset {part.offset} does not fit")
        blob += part.data
        if len(blob) == first.total_size:
            break
        if not part.data:
            raise ProtocolError("device sent an empty adapter chunk before the end")
    if zlib.crc32(blob) != first.crc:
        raise CrcError("adapter blob CRC mismatch after reassembly; read it again")
    return bytes(blob)


def _next_offset(status: UploadStatus, size: int) -> int:
    if status.size != size or status.next_offset > size:
        raise ProtocolError(
            f"device reports offset {status.next_offset} of {status.size} for a {size}-byte upload"
        )
    return status.next_offset
