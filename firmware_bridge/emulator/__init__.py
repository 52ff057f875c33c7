"""A device emulator: the bridge protocol on a pseudo-terminal, backed by ExecuTorch.

    python -m edgeadapt.firmware_bridge.emulator --profile stm32h743 [--drop 0.001 ...]

prints `PTY /dev/pts/N`; open that path with `BridgeClient.open`. Programs uploaded to it are
checked against the profile's memory and run by the ExecuTorch runtime: INFER on the
inference program, ADAPT on the training program (`edgeadapt.export.to_training_program`).
Faults (`Faults`) are set on the command line or at run time with `set_faults(client, ...)`.

Modules: `device` (the protocol engine), `programs` (runtime + memory budget), `payloads`
(tensor layouts on the wire), `adapter_blob` (adapter weights as bytes), `faults`,
`pty_port`, `spawn` (start it as a process). Importing this package does not import torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .faults import Faults, SetFaults
from .spawn import EmulatorProcess, pty_supported

if TYPE_CHECKING:
    from ..client import BridgeClient

__all__ = ["EmulatorProcess", "Faults", "SetFaults", "pty_supported", "set_faults"]


def set_faults(
    client: BridgeClient,
    faults: Faults,
    *,
    timeout: float | None = None,
    retries: int | None = None,
) -> None:
    """Replace the emulator's faults at run time; the ACK travels on the cleaner line."""
    from ..messages import Ack

    client.link.request(faults.to_message(), Ack, timeout=timeout, retries=retries)
