"""The Cortex-M7 firmware (firmware_bridge/device/mcu) built and run in QEMU on tiny programs:
an inference program's outputs equal the host's, a training program's SGD steps on the
device move the weights as the host's runtime does, and the memory figures are measured.

Needs arm-none-eabi-gcc, qemu-system-arm, cmake, ninja and ../shared/deps; skips, saying what
is missing, without them. The build folder (EA_MCU_BUILD, default build/mcu) is reused: a
cold one costs a few minutes (host flatc, the runtime), a warm one seconds.
"""

from __future__ import annotations

import itertools
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _scripts import MCU_DIR, load_script

mcu = load_script("ea_mcu_build", MCU_DIR / "build.py")


def test_linker_script_has_the_parts_banks() -> None:
    """No toolchain needed: the STM32F746's script is its flash and its three RAM banks at
    their real addresses (QEMU has RAM there), nothing bigger."""
    profile = mcu.load_profile("stm32f746")
    script = mcu.linker_script(profile, ["SRAM1"])
    assert "FLASH (rx) : ORIGIN = 0x00000000, LENGTH = 1048576" in script
    assert "SRAM1 (rw) : ORIGIN = 0x20010000, LENGTH = 245760" in script
    assert "DTCM (rw) : ORIGIN = 0x20000000, LENGTH = 65536" in script
    assert sum(b.bytes for b in profile.banks) == 320 * 1024
    h743 = mcu.load_profile("stm32h743")
    assert h743.main.name == "AXI_SRAM" and h743.main.bytes == 512 * 1024
    origins = sorted((b.origin, b.origin + b.bytes) for b in h743.banks)
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(origins)), "banks overlap in QEMU"


def test_a_plan_over_contiguous_banks_links_them_as_one_region() -> None:
    """No toolchain needed: a program the exporter planned into "DTCM+SRAM1+SRAM2" (the
    STM32F746's SRAM, one range in its address map) links against one 320 KB region there,
    which also holds the stack and the method allocator's pool; banks that do not follow each
    other are refused."""
    part = mcu.load_profile("stm32f746")
    merged = mcu.merged_banks(part, ["DTCM+SRAM1+SRAM2"])
    assert [(b.name, b.origin, b.bytes) for b in merged.banks] == [
        ("DTCM_SRAM1_SRAM2", 0x20000000, 320 * 1024)
    ]
    script = mcu.linker_script(merged, ["DTCM_SRAM1_SRAM2"])
    assert "DTCM_SRAM1_SRAM2 (rw) : ORIGIN = 0x20000000, LENGTH = 327680" in script
    assert "SRAM1 (rw)" not in script and "} > DTCM_SRAM1_SRAM2" in script
    assert mcu.merged_banks(part, ["SRAM1", "DTCM"]) == part  # nothing merged: as it was
    # The stack, statics and the method allocator's pool go where the arenas leave most room.
    h743 = mcu.merged_banks(mcu.load_profile("stm32h743"), ["AXI SRAM", "SRAM1+SRAM2+SRAM3"])
    assert mcu.home_bank(h743, ["AXI_SRAM"], [100]) == "AXI_SRAM"
    home = mcu.home_bank(h743, ["AXI_SRAM", "SRAM1_SRAM2_SRAM3"], [512 * 1024, 65600])
    assert home == "SRAM1_SRAM2_SRAM3"
    assert "__pool_start = .; } > SRAM1_SRAM2_SRAM3" in mcu.linker_script(h743, ["AXI_SRAM"], home)
    with pytest.raises(mcu.BuildError, match="do not follow each other"):
        mcu.merged_banks(mcu.load_profile("stm32h743"), ["AXI SRAM+SRAM4"])


def test_blob_changes_when_the_program_changes_in_place(tmp_path, monkeypatch) -> None:
    """No toolchain needed: ninja does not see through `.incbin`, so the blob's source must
    change when a .pte is re-exported to the same path, or the firmware keeps the old copy
    (it did: a benchmark measured a program the exporter had since replaced)."""
    monkeypatch.setattr(mcu, "input_numel", lambda pte: 4)
    pte, inputs = tmp_path / "p.pte", tmp_path / "inputs.bin"
    pte.write_bytes(b"first program")
    inputs.write_bytes(bytes(16))
    prog = mcu.Program("p", pte, ("an500",), inputs)
    profile = mcu.load_profile("stm32f746")
    before = mcu._blob(prog, profile, ["SRAM1"], [64])
    assert mcu._blob(prog, profile, ["SRAM1"], [64]) == before  # unchanged input, no rebuild
    pte.write_bytes(b"second program")
    assert mcu._blob(prog, profile, ["SRAM1"], [64]) != before
    after_pte = mcu._blob(prog, profile, ["SRAM1"], [64])
    inputs.write_bytes(bytes([1]) * 16)
    assert mcu._blob(prog, profile, ["SRAM1"], [64]) != after_pte


def test_kernel_sources_find_void_kernels_and_utils_the_library_leaves_out(tmp_path) -> None:
    """No toolchain needed. A kernel returning void (`split_with_sizes_copy_out`, which the
    teacher step calls) is found like one returning a Tensor&, and a util source a kernel
    includes that ExecuTorch's kernels_util_all_deps leaves out (grid_sampler_2d_util.cpp)
    is compiled with it: both once failed the teacher step's firmware build."""
    et = tmp_path / "executorch"
    cpu, util = et / "kernels/portable/cpu", et / "kernels/portable/cpu/util"
    util.mkdir(parents=True)
    (et / "shim_et/xplat/executorch/build").mkdir(parents=True)
    (et / "shim_et/xplat/executorch/build/build_variables.bzl").write_text(
        'KERNELS_UTIL_ALL_DEPS_SRCS = [\n    "kernels/portable/cpu/util/copy_ops_util.cpp",\n]\n'
    )
    for name in ("copy_ops_util", "grid_sampler_2d_util"):
        (util / f"{name}.cpp").write_text("")
    include = "#include <executorch/kernels/portable/cpu/util/{}.h>\n"
    (cpu / "op_split.cpp").write_text(
        include.format("copy_ops_util") + "void split_with_sizes_copy_out(\n  ctx) {}\n"
    )
    (cpu / "op_grid.cpp").write_text(
        include.format("grid_sampler_2d_util") + "Tensor& grid_sampler_2d_out(ctx) {}\n"
    )
    yaml = tmp_path / "functions.yaml"
    yaml.write_text(
        "- op: split_with_sizes_copy.out\n  kernels:\n"
        "    - kernel_name: torch::executor::split_with_sizes_copy_out\n"
        "- op: grid_sampler_2d.out\n  kernels:\n"
        "    - kernel_name: torch::executor::grid_sampler_2d_out\n"
    )
    ops = ["aten::split_with_sizes_copy.out", "aten::grid_sampler_2d.out"]
    found, sources = mcu._kernel_sources(et, yaml, cpu, ops)
    assert found == ops
    assert sources == sorted([cpu / "op_grid.cpp", cpu / "op_split.cpp",
                              util / "grid_sampler_2d_util.cpp"])  # fmt: skip


def test_missing_cxx_headers_are_named(monkeypatch) -> None:
    """Debian's gcc-arm-none-eabi comes without the C++ headers (a separate package): a
    machine with the compiler but not them must be told so before a build, not fail on
    <cmath> in the runtime's first source (CI did)."""
    monkeypatch.setattr(mcu.shutil, "which", lambda tool: f"/usr/bin/{tool}")
    monkeypatch.setattr(mcu, "_arm_cxx_headers", lambda: False)
    assert any("libstdc++-arm-none-eabi-newlib" in m for m in mcu.missing_tools())
    monkeypatch.setattr(mcu, "_arm_cxx_headers", lambda: True)
    assert not any("libstdc++" in m for m in mcu.missing_tools())


MISSING = (
    f"firmware toolchain missing: {', '.join(mcu.missing_tools())} "
    "(apt-get install gcc-arm-none-eabi libnewlib-arm-none-eabi libstdc++-arm-none-eabi-newlib "
    "qemu-system-arm cmake ninja-build)"
)
# EDGEADAPT_REQUIRE_FIRMWARE=1 (a CI job with the toolchains): fail instead of skipping.
REQUIRED = os.environ.get("EDGEADAPT_REQUIRE_FIRMWARE") == "1"
needs_toolchain = pytest.mark.skipif(bool(mcu.missing_tools()) and not REQUIRED, reason=MISSING)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A tiny inference program, a tiny Tent training program and a tiny EcoTTA step with a
    2-view teacher, built for QEMU (an500) and the STM32F746, in their own CMake folder next
    to the benchmark's (sources shared)."""
    if mcu.missing_tools():
        pytest.fail(f"EDGEADAPT_REQUIRE_FIRMWARE=1 but {MISSING}")
    pytest.importorskip("executorch")
    from _tiny import export_tiny

    import edgeadapt
    from edgeadapt.api import config_for
    from edgeadapt.export import to_training_program
    from edgeadapt.models import create_model

    tmp = tmp_path_factory.mktemp("mcu")
    pte, x, expected = export_tiny(tmp / "tiny.pte")
    (tmp / "tiny_in.bin").write_bytes(x.numpy().astype("<f4").tobytes())

    torch.manual_seed(0)
    adapter = edgeadapt.wrap(
        create_model("tiny_resnet"), config_for("tent", optimizer="sgd", lr=0.05)
    )
    batches = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    to_training_program(adapter, batches[:1], tmp / "tent.pte")
    (tmp / "tent_in.bin").write_bytes(batches.numpy().astype("<f4").tobytes())

    # EcoTTA with a 2-view teacher: the step also takes the views' random numbers.
    torch.manual_seed(0)
    config = edgeadapt.EcoTTAConfig(
        optimizer="sgd", momentum=0.0, lr=0.05, lean=False, recompute=False,
        teacher_momentum=0.8, teacher_views=2, input_mean=(0.5,) * 3, input_std=(0.25,) * 3,
    )  # fmt: skip
    teacher = edgeadapt.wrap(create_model("tiny_resnet"), config, example_input=batches[:2])
    to_training_program(teacher, batches[:1], tmp / "teacher.pte")

    programs = [
        mcu.Program("t_infer", pte, ("an500", "stm32f746"), tmp / "tiny_in.bin"),
        mcu.Program("t_tent", tmp / "tent.pte", ("an500",), tmp / "tent_in.bin", steps=4, lr=0.05),
        mcu.Program(
            "t_teacher", tmp / "teacher.pte", ("an500",), tmp / "tent_in.bin", steps=3, lr=0.05
        ),
    ]
    results = {(b.program, b.profile): b for b in mcu.build(programs, fw="fw-tests")}
    return programs, results, expected, batches


@needs_toolchain
def test_inference_matches_host_and_reports_memory(built) -> None:
    programs, results, expected, _ = built
    for profile in ("an500", "stm32f746"):
        b = results[("t_infer", profile)]
        assert b.elf is not None, f"did not link: {b.overflow}"
        run = mcu.run_firmware(b.elf, timeout=60)
        assert run.ok, run.text[-500:]
        np.testing.assert_allclose(np.array(run.outputs), expected.numpy(), atol=1e-5)
        assert run.planned == mcu.planned_sizes(programs[0].pte)
        assert 0 < run.figures["method_used"] < run.figures["method_pool"]
        assert 0 < run.figures["stack_high_water"] < run.figures["stack_size"]
        assert b.size["text"] > b.pte_bytes  # the program is linked into flash
        _estimate_matches(programs[0].pte, run.figures["method_used"])


def _estimate_matches(pte, measured: int) -> None:
    """The 32-bit estimate of the runtime's tables (export/runtime_estimate.py) is what this
    32-bit build's method allocator measured, to within 1% (256 B on a tiny program; the
    ResNet-20 programs measure 36 to 234 B above it)."""
    from edgeadapt.export.runtime_estimate import estimate_runtime_bytes

    estimate = estimate_runtime_bytes(pte.read_bytes()).bytes
    assert abs(measured - estimate) <= max(256, measured // 100), (measured, estimate)


@needs_toolchain
def test_training_steps_match_host_sgd(built) -> None:
    from edgeadapt.export.training import TrainingRunner
    from edgeadapt.firmware_bridge.emulator.programs import program_parameters

    programs, results, _, batches = built
    prog = programs[1]
    run = mcu.run_firmware(results[("t_tent", "an500")].elf, timeout=120)
    assert run.ok, run.text[-500:]
    _estimate_matches(prog.pte, run.figures["method_used"])
    data = prog.pte.read_bytes()
    initial = program_parameters(data)
    host = TrainingRunner.from_bytes(data, lr=prog.lr, momentum=0.0)
    for step in range(prog.steps):
        logits, _, kept = host.step(batches[step % len(batches)][None])
        assert run.steps[step]["kept"] == kept
        np.testing.assert_allclose(run.outputs[step], logits.flatten().numpy(), atol=1e-4)
    final = host.parameters()
    for device, name in zip(run.params, initial):
        np.testing.assert_allclose(device, final[name].flatten().numpy(), atol=1e-5)
    moved = max(np.abs(np.array(d) - initial[n].flatten().numpy()).max()
                for d, n in zip(run.params, initial))  # fmt: skip
    assert moved > 1e-4, "the device's SGD did not move the weights"


@needs_toolchain
def test_a_teacher_step_steps_on_the_views_the_host_draws(built) -> None:
    """The teacher step's inputs after the batch (its views' random numbers) are linked in
    per step as the host's TrainingRunner draws them (seed 0): the device then steps what
    the host steps. Drawn from another seed, the host ends elsewhere: the draws are used."""
    from edgeadapt.export.training import TrainingRunner
    from edgeadapt.firmware_bridge.emulator.programs import program_parameters

    programs, results, _, batches = built
    prog = programs[2]
    run = mcu.run_firmware(results[("t_teacher", "an500")].elf, timeout=180)
    assert run.ok, run.text[-500:]
    data = prog.pte.read_bytes()
    initial = program_parameters(data)
    hosts = [TrainingRunner.from_bytes(data, lr=prog.lr, momentum=0.0, seed=s) for s in (0, 1)]
    for step in range(prog.steps):
        (logits, _, kept), _ = (h.step(batches[step % len(batches)][None]) for h in hosts)
        assert run.steps[step]["kept"] == kept
        np.testing.assert_allclose(run.outputs[step], logits.flatten().numpy(), atol=1e-4)
    same, other = (h.parameters() for h in hosts)
    for device, name in zip(run.params, initial):
        np.testing.assert_allclose(device, same[name].flatten().numpy(), atol=1e-5)
    apart = max(np.abs(np.array(d) - other[n].flatten().numpy()).max()
                for d, n in zip(run.params, initial))  # fmt: skip
    assert apart > 1e-4, "the device's step does not depend on the views' draws"
