"""Load a repository script (not a package module) by path, as the firmware tests need."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

MCU_DIR = Path(__file__).resolve().parents[2] / "firmware_bridge" / "device" / "mcu"


def load_script(name: str, path: Path) -> ModuleType:
    """The module in `path`, registered as `name` (dataclasses in it need sys.modules)."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module
