"""What real firmware builds measured, per CPU core, for the fit check to use instead of guesses.

`benchmarks/firmware/run.py` builds the ExecuTorch runtime for a core (today the Cortex-M7,
run in QEMU), loads each program and reads back the method allocator's used bytes, the stack
high-water mark and the firmware's code and .data+.bss. It writes those figures to
`devices/firmware_<core>.json`, which ships with the profiles. The fit check then:

- sizes the runtime's own tables as the 32-bit estimate (`runtime_estimate`) scaled by the
  largest measured/estimated ratio over the measured programs (at most 1.004: the estimate
  counts the same items, and misses a little padding);
- places the firmware's code in flash beside the constants, and its .data+.bss, stack and
  temp allocator pool in RAM: code and .data+.bss at the largest figures measured (over the
  measured programs' builds: a program needing more kernels has more code, which is not
  counted per program yet; EcoTTA's teacher step: 419,712 B against 302,860), the stack and the
  temp pool at what the build reserves for them (a device cannot lend out its stack reserve;
  the high-water marks are kept for the report: what a leaner build could reserve).

Where no build exists for a profile's core (Cortex-M4, Xtensa), the estimate stays, labelled
as such with its error measured on the cores that do have a build.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

__all__ = [
    "FirmwareMeasurement",
    "RuntimeFigure",
    "measurement_for",
    "measurement_path",
    "runtime_figure",
    "write_measurement",
]


@dataclass(frozen=True)
class FirmwareMeasurement:
    core: str  # the profile's cpu.core this build ran on, e.g. "Arm Cortex-M7"
    source: str  # what measured it, for the report: build, toolchain, where the table is
    programs: tuple[str, ...]  # the programs measured
    runtime_ratios: tuple[Fraction, ...]  # method allocator used / estimate, per program
    code_bytes: int  # largest .text of runtime + kernels + runner (without the .pte)
    data_bss_bytes: int  # largest .data + .bss (arenas and stack excluded)
    stack_bytes: int  # largest stack high-water mark
    temp_bytes: int  # largest temp-allocator use
    stack_reserved_bytes: int  # the stack the build reserves (its .stack section)
    temp_pool_bytes: int  # the temp allocator's pool the build reserves

    @property
    def runtime_ratio(self) -> Fraction:
        return max(self.runtime_ratios)

    @property
    def firmware_ram_bytes(self) -> int:
        """RAM the firmware holds besides the program's own memory, as built."""
        reserved = max(self.stack_reserved_bytes, self.stack_bytes)
        return self.data_bss_bytes + reserved + max(self.temp_pool_bytes, self.temp_bytes)


@dataclass(frozen=True)
class RuntimeFigure:
    bytes: int
    label: str  # the fit check's item name: says measured, calibrated or estimated
    note: str  # one sentence for the report: where the figure comes from


def _slug(core: str) -> str:
    """ "Arm Cortex-M7 (plus a Cortex-M4 ...)" -> "cortex_m7": the first core named is the one
    that runs the program; an M4F is an M4 to the runtime's build."""
    found = re.search(r"cortex-([amr]\d+)", core.lower())
    if found:
        return f"cortex_{found.group(1)}"
    return re.sub(r"[^a-z0-9]+", "_", core.lower()).strip("_")


def measurement_path(core: str) -> Path:
    from edgeadapt.export.devices import devices_dir

    return devices_dir() / f"firmware_{_slug(core)}.json"


def measurement_for(core: str) -> FirmwareMeasurement | None:
    """The committed measurement for this core, or None where no build exists."""
    path = measurement_path(core)
    if not path.is_file():
        return None
    d = json.loads(path.read_text())
    return FirmwareMeasurement(
        core=d["core"],
        source=d["source"],
        programs=tuple(p["program"] for p in d["programs"]),
        runtime_ratios=tuple(
            Fraction(p["method_allocator"], p["runtime_estimate"]) for p in d["programs"]
        ),
        code_bytes=max(p["code_bytes"] for p in d["programs"]),
        data_bss_bytes=max(p["data_bss_bytes"] for p in d["programs"]),
        stack_bytes=max(p["stack_high_water"] for p in d["programs"]),
        temp_bytes=max(p["temp_allocator"] for p in d["programs"]),
        stack_reserved_bytes=max(p["stack_reserved"] for p in d["programs"]),
        temp_pool_bytes=max(p["temp_pool"] for p in d["programs"]),
    )


def _all_measurements() -> list[FirmwareMeasurement]:
    from edgeadapt.export.devices import devices_dir

    out = []
    for path in sorted(devices_dir().glob("firmware_*.json")):
        core = json.loads(path.read_text())["core"]
        m = measurement_for(core)
        if m is not None:
            out.append(m)
    return out


def runtime_figure(estimate: int, core: str) -> RuntimeFigure:
    """The runtime tables' RAM for a program whose 32-bit estimate is `estimate`, on `core`."""
    m = measurement_for(core)
    if m is not None:
        scaled = math.ceil(estimate * m.runtime_ratio)  # exact: the ratio is a Fraction
        return RuntimeFigure(
            scaled,
            "runtime tables (calibrated)",
            f"runtime tables: the 32-bit estimate {estimate:,} B x {float(m.runtime_ratio):.3f}, the "
            f"largest method-allocator/estimate ratio measured on {m.core} "
            f"({', '.join(m.programs)}; {m.source})",
        )
    errors = [float(1 / r - 1) for other in _all_measurements() for r in other.runtime_ratios]
    error = (
        f"; where a build exists the estimate was off the measured figure by "
        f"{min(errors):+.1%} to {max(errors):+.1%}"
        if errors
        else ""
    )
    return RuntimeFigure(
        estimate,
        "runtime tables (est.)",
        f"runtime tables: estimated ({estimate:,} B), no firmware build for {core}{error}",
    )


def write_measurement(path: Path, core: str, source: str, rows: list[dict[str, Any]]) -> None:
    """Write the measurement file from benchmarks/firmware/run.py's rows (those that ran)."""
    programs = [
        {
            "program": r["program"],
            "method_allocator": r["method_used"],
            "runtime_estimate": r["runtime_estimate"],
            "temp_allocator": r["temp_used"],
            "stack_high_water": r["stack_high_water"],
            "code_bytes": r["code_bytes"],
            "data_bss_bytes": r["data_bytes"] + r["bss_bytes"],
            "stack_reserved": r["stack_reserved"],
            "temp_pool": r["temp_pool"],
        }
        for r in rows
    ]
    if not programs:
        raise ValueError("no program ran on the build: nothing measured to write")
    text = json.dumps({"core": core, "source": source, "programs": programs}, indent=1) + "\n"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(path)
