"""The native device (firmware_bridge/device, C++ on the ExecuTorch runtime) for the bridge
tests: built once per test process by its build_host.py, then started like the emulator.

Without the toolchain (cmake, a C++ compiler, the executorch wheel) the native runs are
skipped, saying what is missing; with it, a failed build fails them.
"""

from __future__ import annotations

import atexit
import functools
import importlib.util
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO / "firmware_bridge" / "device" / "build_host.py"
KINDS = ("python", "native")  # the device kinds the integration tests run against


def _build_module():
    spec = importlib.util.spec_from_file_location("ea_device_build_host", BUILD_SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@functools.lru_cache(maxsize=1)
def _binary() -> tuple[Path | None, str]:
    build = _build_module()
    missing = build.toolchain_missing()
    if missing:
        return None, f"native device not built: missing {missing}"
    return build.build(), ""  # BuildError propagates: a broken build is a failure


def native_binary() -> Path:
    """The built binary; skips the calling test when the toolchain is absent."""
    binary, why = _binary()
    if binary is None:
        pytest.skip(why)
    return binary


@functools.lru_cache(maxsize=1)
def shared_native_device():
    """One native device process for every test module, closed at exit (as the emulator)."""
    from bridge.emulator_programs import LR

    from edgeadapt.firmware_bridge.emulator import EmulatorProcess

    dev = EmulatorProcess("stm32h743", f"--lr={LR}", executable=native_binary())
    atexit.register(dev.close)
    return dev


def shared_device(kind: str):
    """The shared device process of `kind` ("python": the emulator, "native")."""
    from bridge.emulator_programs import shared_emulator

    return shared_native_device() if kind == "native" else shared_emulator()
