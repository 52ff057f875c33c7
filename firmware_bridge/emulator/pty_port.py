"""The device end of a pseudo-terminal: the host opens the slave path like a serial port.

A reader thread drains the master side into a bounded buffer as a UART's DMA ring would, so
the host never blocks on a full pty while the device computes; what overflows the buffer is
lost and counted (an overrun), as on hardware. Faults apply to both directions.
"""

from __future__ import annotations

import contextlib
import os
import select
import threading
import tty

from ..errors import TransportError
from .faults import FaultyLine

__all__ = ["PtyPort"]

RX_BUFFER = 1 << 20  # bytes the device buffers before it starts losing input


class PtyPort:
    """`read`/`write`/`close` over the master side; `path` is what the host opens."""

    def __init__(self, line: FaultyLine | None = None, *, poll: float = 0.02) -> None:
        self.master, self._slave = os.openpty()
        # Raw before anyone can open it: no echo, no line editing, no CR/LF translation,
        # which would otherwise bounce the host's frames back or mangle 0x0D bytes.
        tty.setraw(self._slave)
        self.path = os.ttyname(self._slave)
        self.line = line or FaultyLine()
        self.poll = poll
        self.overruns = 0
        self._rx = bytearray()
        self._cond = threading.Condition()
        self._closed = False
        self._reader = threading.Thread(target=self._drain, name="pty-rx", daemon=True)
        self._reader.start()

    def _drain(self) -> None:
        while not self._closed:
            try:
                ready, _, _ = select.select([self.master], [], [], 0.1)
                data = os.read(self.master, 65536) if ready else b""
            except OSError:  # closed under us
                return
            if not data:
                continue
            data = self.line.apply(data)
            with self._cond:
                room = RX_BUFFER - len(self._rx)
                self.overruns += max(0, len(data) - room)
                self._rx += data[: max(room, 0)]
                self._cond.notify_all()

    def read(self, max_bytes: int = 65536) -> bytes:
        with self._cond:
            self._cond.wait_for(lambda: self._rx or self._closed, timeout=self.poll)
            data = bytes(self._rx[:max_bytes])
            del self._rx[:max_bytes]
            return data

    def discard_input(self) -> int:
        """Forget everything received so far (a reboot loses the UART buffer)."""
        with self._cond:
            n = len(self._rx)
            self._rx.clear()
            return n

    def write(self, data: bytes) -> None:
        data = self.line.apply(data)
        view = memoryview(data)
        try:
            while view:
                _, writable, _ = select.select([], [self.master], [], 2.0)
                if not writable:  # nobody reads the other end: lose it, as a UART would
                    self.overruns += len(view)
                    return
                view = view[os.write(self.master, view) :]
        except OSError as exc:
            raise TransportError(f"write to the pty failed: {exc}") from exc

    def close(self) -> None:
        self._closed = True
        self._reader.join(timeout=1.0)
        for fd in (self.master, self._slave):
            with contextlib.suppress(OSError):
                os.close(fd)
