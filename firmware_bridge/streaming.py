"""STREAM: frames in, predictions out, paced by the device's credits (back-pressure).

The host may have at most as many STREAM_FRAMEs in flight as it holds credits; each
STREAM_RESULT returns credits. So a slow device throttles the host instead of overflowing its
own queue, and the host's memory for in-flight frames is bounded by the window.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from .errors import DeviceError, ProtocolError
from .framing import Frame
from .link import Link
from .messages import (
    Ack,
    ErrorReport,
    StreamCredit,
    StreamFrame,
    StreamResult,
    StreamStart,
    StreamStop,
)
from .protocol import MsgType

__all__ = ["run_stream"]


def run_stream(
    link: Link, frames: Iterable[bytes], *, adapt: bool = False, window: int = 4
) -> Iterator[StreamResult]:
    """Generator behind `BridgeClient.stream`; results come in the device's order."""
    grant = link.request(StreamStart(window, int(adapt)), StreamCredit)
    credits = grant.credits
    if not 0 < credits <= window:
        raise ProtocolError(f"device granted {credits} stream credits for a window of {window}")
    pending: dict[int, int] = {}  # seq -> frame_id of frames in flight
    ready: list[StreamResult] = []

    def take(frame: Frame) -> None:
        nonlocal credits
        if frame.seq not in pending:
            return  # a stale answer to something earlier
        if frame.msg_type == MsgType.ERROR:
            err = ErrorReport.unpack(frame.payload)
            raise DeviceError(err.code, err.arg, err.text)
        if frame.msg_type != MsgType.STREAM_RESULT:
            raise ProtocolError(f"stream frame answered by type {frame.msg_type:#04x}")
        result = StreamResult.unpack(frame.payload)
        pending.pop(frame.seq)
        credits += result.credit
        ready.append(result)

    for frame_id, data in enumerate(frames):
        while credits == 0:  # back-pressure: wait for the device to hand credits back
            link.wait_other(take, what="a stream result")
            yield from _drain(ready)
        seq = link.next_seq()
        link.send(StreamFrame(frame_id & 0xFFFFFFFF, data), seq)
        pending[seq] = frame_id
        credits -= 1
    link.request(StreamStop(), Ack, on_other=take)  # the device flushes its results first
    yield from _drain(ready)
    if pending:
        raise ProtocolError(f"{len(pending)} stream frames were never answered")


def _drain(ready: list[StreamResult]) -> Iterator[StreamResult]:
    while ready:
        yield ready.pop(0)
