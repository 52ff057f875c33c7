"""Multi-frame transfers: UPLOAD (chunked, resumable, committed atomically) and GET_ADAPTER.

Both take `request(msg, expect)` -- the client's session-aware request -- and the `Link` (for
its negotiated payload and retry count).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable

from .errors import (
    BridgeTimeoutError,
    CrcError,
    DeviceError,
    DeviceRestartedError,
    FramingError,
    ProtocolError,
)
from .link import Link
from .message_base import ENVELOPE
from .messages import (
    Ack,
    AdapterChunk,
    GetAdapter,
    GetUpload,
    UploadBegin,
    UploadChunk,
    UploadCommit,
    UploadOutcome,
    UploadStatus,
)
from .protocol import Target, UploadState

__all__ = ["download_adapter", "upload"]

Request = Callable[..., object]


def upload(
    request: Request,
    link: Link,
    blob: bytes,
    *,
    target: Target = Target.PROGRAM,
    progress: Callable[[int, int], None] | None = None,
    request_id: int,
) -> int:
    """UPLOAD_BEGIN, UPLOAD_CHUNKs from the offset the device asks for, UPLOAD_COMMIT.

    The device's `next_offset` is authoritative: it says where a cut-off upload of the same
    (size, CRC) resumes, and re-synchronises us if a chunk was lost. A device restart
    mid-way (its staging is in flash) starts again at UPLOAD_BEGIN, which resumes. Returns the
    offset the first UPLOAD_BEGIN resumed from."""
    begun: list[int] = []  # where each UPLOAD_BEGIN found the device
    for restart in range(link.retries + 1):
        try:
            _send(request, link, blob, target, progress, begun)
            _commit(request, blob, target, request_id)
            return begun[0]
        except DeviceRestartedError:
            if restart == link.retries:
                raise
    raise AssertionError("unreachable")


def _send(request: Request, link: Link, blob: bytes, target: Target, progress,
          begun: list[int]) -> None:  # fmt: skip
    """BEGIN and every missing chunk."""
    size, crc = len(blob), zlib.crc32(blob)
    chunk = link.max_payload - ENVELOPE.size - UploadChunk.LAYOUT.size
    offset = _next_offset(request(UploadBegin(int(target), size, crc), UploadStatus), target, size)
    begun.append(offset)
    stalls = 0
    while offset < size:
        status = request(UploadChunk(offset, blob[offset : offset + chunk]), UploadStatus)
        new_offset = _next_offset(status, target, size)
        stalls = stalls + 1 if new_offset <= offset else 0
        if stalls > link.retries:  # a device that never moves on would loop us forever
            raise ProtocolError(f"device keeps asking for offset {new_offset}; upload stalled")
        offset = new_offset
        if progress is not None:
            progress(offset, size)


def _commit(request: Request, blob: bytes, target: Target, request_id: int) -> None:
    """UPLOAD_COMMIT; when its answer is lost, ask the device what became of it."""
    size, crc = len(blob), zlib.crc32(blob)
    commit = UploadCommit(int(target), crc, request_id)
    try:
        request(commit, Ack)
        return
    except (BridgeTimeoutError, FramingError, DeviceRestartedError) as exc:
        lost = exc
    # The commit may have run (flash kept its outcome across a restart) or not.
    outcome = request(GetUpload(), UploadOutcome)
    if outcome.request_id == request_id and outcome.state == UploadState.COMMITTED:
        return
    if outcome.request_id == request_id and outcome.state == UploadState.REFUSED:
        raise DeviceError(outcome.code, outcome.arg, "the commit was refused (UPLOAD_OUTCOME)")
    staged = (outcome.state, outcome.target, outcome.size, outcome.crc, outcome.next_offset)
    if staged == (UploadState.STAGING, int(target), size, crc, size):
        request(commit, Ack)  # it never ran: the same commit again
        return
    raise lost


def download_adapter(request: Request, link: Link, *, max_blob: int) -> bytes:
    """GET_ADAPTER until the whole blob is here; its size is checked against `max_blob` first."""
    max_len = link.max_payload - ENVELOPE.size - AdapterChunk.LAYOUT.size
    blob = bytearray()
    first: AdapterChunk | None = None
    while True:
        part = request(GetAdapter(len(blob), max_len), AdapterChunk)
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


def _next_offset(status: UploadStatus, target: Target, size: int) -> int:
    if status.target != int(target) or status.size != size or status.next_offset > size:
        raise ProtocolError(
            f"device reports offset {status.next_offset} of {status.size} (target "
            f"{status.target}) for a {size}-byte upload to target {int(target)}"
        )
    return status.next_offset
