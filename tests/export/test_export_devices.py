"""Device profiles load, and the fit check places arenas in banks and names shortfalls."""

from __future__ import annotations

import pytest

from edgeadapt.errors import EdgeAdaptError
from edgeadapt.export import (
    DeviceProfileError,
    DoesNotFitError,
    UnknownDeviceError,
    check_fit,
    list_profiles,
    load_profile,
    require_fit,
)

EXPECTED = {
    "stm32h743",
    "stm32f746",
    "stm32f746g_disco",
    "nrf52840",
    "esp32s3_n8r8",
    "nicla_vision",
    "rpi_zero_2w",
    "rpi4_4gb",
    "jetson_nano",
}


def test_f746_part_has_no_external_ram_and_the_board_adds_its_sdram():
    part, board = load_profile("stm32f746"), load_profile("stm32f746g_disco")
    assert part.external_ram == () and sum(b.usable_bytes for b in part.data_banks) == 320 * 1024
    assert board.ram == part.ram and board.flash_bytes == part.flash_bytes
    assert [b.name for b in board.external_ram] == ["SDRAM"]


def test_every_device_has_a_profile():
    assert set(list_profiles()) >= EXPECTED


@pytest.mark.parametrize("key", sorted(EXPECTED))
def test_profile_loads_with_sources(key):
    p = load_profile(key)
    assert p.key == key and p.source and p.cpu.mhz > 0 and p.serial.baud > 0
    assert p.data_banks and all(b.usable_bytes > 0 for b in p.data_banks)
    assert p.kind in ("mcu", "linux")
    assert load_profile(p.name).key == key  # by display name too


def test_h743_banks_are_the_reference_manual_ones():
    banks = {b.name: b.bytes for b in load_profile("STM32H743").ram}
    assert banks["AXI SRAM"] == 512 * 1024 and banks["DTCM"] == 128 * 1024
    # DS12110's "1 MB": 864 KB user SRAM + 192 KB TCM (ITCM + DTCM); backup SRAM not listed.
    assert sum(banks.values()) == (864 + 192) * 1024


def test_unknown_device_lists_the_known_ones():
    with pytest.raises(UnknownDeviceError, match="stm32h743") as info:
        load_profile("stm32h999")
    assert isinstance(info.value, EdgeAdaptError)


def test_malformed_profile_names_the_field(tmp_path):
    good = load_profile("nrf52840").path.read_text()
    bad = tmp_path / "bad.toml"
    bad.write_text(good.replace("mhz = 64", 'mhz = "fast"'))
    with pytest.raises(DeviceProfileError, match=r"cpu\.mhz"):
        load_profile(bad)
    bad.write_text(good.replace("[flash]\nbytes = 1048576", "[flash]"))
    with pytest.raises(DeviceProfileError, match=r"flash\.bytes"):
        load_profile(bad)
    bad.write_text("name = [")
    with pytest.raises(DeviceProfileError, match="not valid TOML"):
        load_profile(bad)


def test_fit_places_largest_buffer_in_largest_bank():
    fit = check_fit(
        {"arena_bytes": [300_000], "constant_bytes": 500_000}, "stm32h743", include_runtime=False
    )
    assert fit.fits
    assert {(p.item, p.where) for p in fit.placements} == {
        ("arena 0", "AXI SRAM"),
        ("constants", "flash"),
    }


def test_fit_reports_missing_bytes_and_bank():
    fit = check_fit({"arena_bytes": [300_000], "constant_bytes": 100}, "nrf52840")
    assert not fit.fits and fit.missing_bytes == 300_000 - 262_144
    assert "RAM is 37,856 B short" in fit.message
    with pytest.raises(DoesNotFitError, match="nRF52840"):
        require_fit({"arena_bytes": 300_000, "constant_bytes": 0}, "nrf52840")
    flash = check_fit({"arena_bytes": [10], "constant_bytes": 3_000_000}, "nrf52840")
    assert flash.shortfalls[0].where == "flash"


def test_external_ram_takes_what_internal_cannot_and_linux_counts_constants():
    arena = {"arena_bytes": [1_000_000], "constant_bytes": 0}
    fit = check_fit(arena, "stm32f746g_disco", include_runtime=False)
    assert fit.fits and fit.placements[-1].where == "SDRAM"
    assert not check_fit(arena, "stm32f746", include_runtime=False).fits  # the part alone
    linux = check_fit({"arena_bytes": [1000], "constant_bytes": 5000}, "rpi4_4gb")
    assert {p.item for p in linux.placements} == {"arena 0", "constants"}
