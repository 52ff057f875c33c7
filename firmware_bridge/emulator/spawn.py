"""Start the emulator as a separate process and find its pseudo-terminal (tests, benchmarks)."""

from __future__ import annotations

import os
import selectors
import subprocess
import sys
import time
from pathlib import Path

from ..errors import BridgeTimeoutError, TransportError
from .faults import Faults

__all__ = ["EmulatorProcess", "pty_supported"]


def pty_supported() -> bool:
    """Pseudo-terminals exist on Linux and macOS, not on Windows."""
    return hasattr(os, "openpty") and sys.platform != "win32"


class EmulatorProcess:
    """`with EmulatorProcess("stm32h743") as emu: BridgeClient.open(emu.port)`.

    Extra command-line flags go in `args`; `faults` sets the line faults from the start.
    stderr goes to `log_path` (a temporary file by default) so a full pipe never stalls it.
    `executable` runs another device that announces its pty the same way instead, e.g. the
    native device (firmware_bridge/device, built by its build_host.py; no line faults).
    """

    def __init__(
        self,
        profile: str,
        *args: str,
        faults: Faults | None = None,
        start_timeout: float = 120.0,
        log_path: str | os.PathLike[str] | None = None,
        executable: str | os.PathLike[str] | None = None,
    ) -> None:
        if not pty_supported():
            raise TransportError("the emulator needs pseudo-terminals (Linux or macOS)")
        cmd = [sys.executable, "-m", "edgeadapt.firmware_bridge.emulator", "--profile", profile]
        if executable is not None:
            cmd = [os.fspath(executable), "--profile", profile]
        if faults is not None:
            cmd += [
                f"--drop={faults.drop}", f"--corrupt={faults.corrupt}", f"--delay={faults.delay}",
                f"--delay-ms={faults.delay_ms}", f"--reset-at={faults.reset_at}",
                f"--reboot={faults.reboot}", f"--boot-ms={faults.boot_ms}",
                f"--seed={faults.seed}",
            ]  # fmt: skip
        cmd += list(args)
        if log_path is None:
            import tempfile

            log_path = Path(tempfile.mkstemp(prefix="edgeadapt-emulator-", suffix=".log")[1])
        self.log_path = Path(log_path)
        env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, env=env)
        self._start_timeout = start_timeout
        self._port: str | None = None

    @property
    def port(self) -> str:
        """The pty path, waiting (up to `start_timeout`) for the emulator to announce it; the
        process starts at construction, so a caller can do other work in the meantime."""
        if self._port is None:
            self._port = self._wait_for_port(self._start_timeout)
        return self._port

    def _wait_for_port(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)  # type: ignore[arg-type]
        try:
            while time.monotonic() < deadline:
                if sel.select(timeout=0.2):
                    line = self.proc.stdout.readline().decode(errors="replace")  # type: ignore[union-attr]
                    if line.startswith("PTY "):
                        return line[4:].strip()
                    if not line:  # EOF: it exited
                        break
                if self.proc.poll() is not None:
                    break
        finally:
            sel.close()
        self.close()
        tail = self.log_path.read_text(errors="replace")[-2000:]
        raise BridgeTimeoutError(f"the emulator did not announce its pty; its log:\n{tail}")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()

    def __enter__(self) -> EmulatorProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
