"""The fit check uses what a firmware build measured where one exists for the profile's core,
and says so; elsewhere it keeps the estimate, labelled, with its error on measured builds."""

from __future__ import annotations

import json
import shutil

import pytest

from edgeadapt.export import check_fit
from edgeadapt.export.devices import devices_dir
from edgeadapt.export.firmware_measured import (
    measurement_for,
    measurement_path,
    runtime_figure,
    write_measurement,
)
from edgeadapt.export.fit import FIRMWARE_RAM_ITEM

SIZES = {"arena_bytes": [100_000], "constant_bytes": 200_000, "runtime_bytes_estimate": 50_000}


def _row(program, method_used, estimate, code=100_000):
    return {"program": program, "method_used": method_used, "runtime_estimate": estimate,
            "temp_used": 100, "stack_high_water": 2_000, "code_bytes": code,
            "data_bytes": 500, "bss_bytes": 1_500, "stack_reserved": 8_192,
            "temp_pool": 4_096}  # fmt: skip


@pytest.fixture()
def profiles(tmp_path, monkeypatch):
    """A copy of the shipped profiles with a made-up Cortex-M7 measurement."""
    for path in devices_dir().glob("*.toml"):
        shutil.copy(path, tmp_path)
    monkeypatch.setenv("EDGEADAPT_DEVICES", str(tmp_path))
    write_measurement(measurement_path("Arm Cortex-M7"), "Arm Cortex-M7", "a test build",
                      [_row("a", 110_000, 100_000), _row("b", 103_000, 100_000, code=150_000)])  # fmt: skip
    return tmp_path


def test_shipped_cortex_m7_measurement_loads_and_is_close_to_the_estimate():
    m = measurement_for("Arm Cortex-M7")
    assert m is not None and "results.md" in m.source and len(m.programs) >= 2
    # The estimate counts the right items: measured within 1% above it on every program.
    assert all(1.0 <= r < 1.01 for r in m.runtime_ratios)
    assert m.code_bytes > 100_000 and 0 < m.stack_bytes < 16_384


def test_mcu_with_a_build_uses_calibrated_tables_and_measured_firmware(profiles):
    fit = check_fit(SIZES, "stm32h743")
    placed = {p.item: p for p in fit.placements}
    assert placed["runtime tables (calibrated)"].bytes == 55_000  # 50,000 x the worst ratio 1.1
    assert placed["firmware code (measured)"].bytes == 150_000  # the largest build
    assert placed["firmware code (measured)"].where == "flash"
    # .data+.bss as measured; the stack and the temp pool as the build reserves them, not at
    # their high-water marks (2,000 and 100): a device cannot lend its stack reserve out.
    assert placed[FIRMWARE_RAM_ITEM].bytes == 500 + 1_500 + 8_192 + 4_096
    assert any("a test build" in line for line in fit.basis)
    assert fit.to_dict()["basis"] == list(fit.basis)


def test_tables_and_firmware_ram_share_the_bank_the_arenas_leave_most_of(profiles):
    """As the firmware places them (build.py home_bank): a plan that fills the AXI SRAM to
    its end puts the pool, stack and statics beside the arena with the most room left."""
    banked = {**SIZES, "arena_bytes": [524_288, 65_600], "planned_for": "stm32h743",
              "arena_banks": ["AXI SRAM", "SRAM1+SRAM2+SRAM3"]}  # fmt: skip
    fit = check_fit(banked, "stm32h743")
    assert fit.fits, fit.message
    placed = {p.item: p.where for p in fit.placements}
    assert placed["runtime tables (calibrated)"] == placed[FIRMWARE_RAM_ITEM]
    assert placed[FIRMWARE_RAM_ITEM] == "SRAM1+SRAM2+SRAM3"


def test_core_without_a_build_keeps_the_labelled_estimate_with_its_error(profiles):
    fit = check_fit(SIZES, "nrf52840")  # Cortex-M4F: no build
    assert "runtime tables (est.)" in {p.item for p in fit.placements + fit.shortfalls}
    assert not any("firmware" in p.item for p in fit.placements)
    (line,) = fit.basis
    assert "no firmware build for Arm Cortex-M4F" in line and "-9.1% to -2.9%" in line
    assert runtime_figure(50_000, "Arm Cortex-M4F").bytes == 50_000


def test_firmware_code_counts_against_flash(profiles):
    flash = check_fit({**SIZES, "constant_bytes": 2_097_152 - 100_000}, "stm32h743")
    assert not flash.fits
    (short,) = flash.shortfalls
    assert short.item == "firmware code (measured)" and short.missing_bytes == 50_000


def test_measurement_file_is_written_whole_and_needs_a_row(tmp_path):
    path = tmp_path / "firmware_x.json"
    with pytest.raises(ValueError, match="nothing measured"):
        write_measurement(path, "X", "nothing", [])
    assert not path.exists()
    write_measurement(path, "X", "src", [_row("a", 1, 1)])
    assert json.loads(path.read_text())["programs"][0]["method_allocator"] == 1
    assert not list(tmp_path.glob("*.tmp"))
