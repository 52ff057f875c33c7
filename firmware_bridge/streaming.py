"""STREAM: frames in, predictions out, paced by the device's credits (back-pressure).

The host may have at most as many STREAM_FRAMEs in flight as it holds credits; each
STREAM_RESULT returns credits, and so does an ERROR answering a frame (a refused frame holds
no credit). So a slow device throttles the host instead of overflowing its own queue, and
the host's memory for in-flight frames is bounded by the window. However the stream ends --
results all in, an error, the caller stopping early -- the host sends STREAM_STOP.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator

from .errors import BridgeError, DeviceError, ProtocolError
from .link import Link, Reply
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
    request: Callable[..., object],
    link: Link,
    frames: Iterable[bytes],
    *,
    adapt: bool = False,
    window: int = 4,
) -> Iterator[StreamResult]:
    """Generator behind `BridgeClient.stream`; results come in frame order."""
    grant = request(StreamStart(window, int(adapt)), StreamCredit)
    credits = grant.credits
    if not 0 < credits <= window:
        raise ProtocolError(f"device granted {credits} stream credits for a window of {window}")
    pending: dict[int, int] = {}  # seq -> frame_id of frames in flight
    ready: list[tuple[int, StreamResult]] = []  # (frame index, result) not yet yielded
    refused: list[DeviceError] = []

    def take(reply: Reply) -> None:
        nonlocal credits
        if reply.msg_type == MsgType.IN_PROGRESS:
            return  # a keep-alive for a frame still in flight (exchange moved its deadline)
        frame_id = pending.pop(reply.seq, None)
        if frame_id is None:
            return  # a stale answer to something earlier
        if reply.msg_type == MsgType.ERROR:
            err = ErrorReport.unpack(reply.payload)
            credits += 1  # a refused frame holds no credit
            refused.append(DeviceError(err.code, err.arg, err.text))
            return
        if reply.msg_type != MsgType.STREAM_RESULT:
            raise ProtocolError(f"stream frame answered by type {reply.msg_type:#04x}")
        result = StreamResult.unpack(reply.payload)
        if result.frame_id != frame_id & 0xFFFFFFFF:
            raise ProtocolError(f"stream frame {frame_id} answered for frame {result.frame_id}")
        credits += result.credit
        ready.append((frame_id, result))

    stopped = False
    try:
        for frame_id, data in enumerate(frames):
            while credits == 0:  # back-pressure: wait for the device to hand credits back
                link.wait_other(take, what="stream result", pending=pending)
                yield from _drain(ready, refused)
            seq = link.next_seq()
            link.send(StreamFrame(frame_id & 0xFFFFFFFF, data), seq)
            pending[seq] = frame_id
            credits -= 1
            yield from _drain(ready, refused)
        request(StreamStop(), Ack, on_other=take, pending=pending)  # results come first
        stopped = True
        yield from _drain(ready, refused)
        if pending:
            raise ProtocolError(f"{len(pending)} stream frames were never answered")
    finally:
        if not stopped:  # an error or an abandoned generator: leave no stream open
            with contextlib.suppress(BridgeError):
                request(StreamStop(), Ack, on_other=lambda _reply: None)


def _drain(
    ready: list[tuple[int, StreamResult]], refused: list[DeviceError]
) -> Iterator[StreamResult]:
    """Yield the results received so far in frame order. The device answers in order, but
    a result lost at STREAM_STOP comes again in the cached answer to the repeated STOP
    (§3.3), after later results that got through the first time; all of them arrive
    within the STOP exchange and are yielded only after it, so sorting puts them right."""
    if refused:
        raise refused[0]
    ready.sort(key=lambda item: item[0])
    while ready:
        yield ready.pop(0)[1]
