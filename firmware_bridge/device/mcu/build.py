"""Build and run the Cortex-M7 firmware: ExecuTorch's runtime, the portable kernels a set of
programs uses, and a self-test runner per (program, device profile), run in QEMU.

    python firmware_bridge/device/mcu/build.py --pte infer=prog.pte --profiles an500,stm32h743 --run

Stages, each cached under the build folder (default build/mcu/, env EA_MCU_BUILD) so a rerun
only redoes what changed:

1. unpack ../shared/deps (env EDGEADAPT_SHARED): ExecuTorch, flatbuffers, flatcc;
2. build `flatc` for the host from the flatbuffers sources (the Debian one is too old);
3. write a linker script per device profile from devices/<profile>.toml -- the part's own
   banks and sizes, placed where QEMU's mps2-an500 has RAM -- and per program the blob that
   links the .pte into flash, its inputs, and its planned arenas into the banks the exporter
   planned them for;
4. configure CMakeLists.txt here (the runtime, the kernels of the programs' operators only --
   selective build -- and the runners) and build each firmware; a program that does not fit
   a part fails its link, and the linker's overflow is reported, not raised;
5. with --run, run each firmware in `qemu-system-arm -M mps2-an500 -semihosting` and parse
   what it prints (outputs as float bits, the method allocator's used bytes, the planned
   arenas, the stack's high-water mark).

`build()` and `run_firmware()` are the library entry points (benchmarks/firmware/run.py,
tests/firmware); the CLI is a thin shell over them.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import itertools
import json
import math
import os
import re
import shutil
import struct
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import tomllib

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
DEPS = {  # name -> (tarball, sha256, where it goes under src/)
    "executorch": ("executorch-cff6f4dd32-runtime.tar.gz",
                   "ce58a45fa9206c91d89379761702e3e93664df3c35cc4ffedc4b4020137717e2", "."),
    "flatbuffers": ("flatbuffers-v24.3.25.tar.gz",
                    "a87a0629effb9303d47824b57981cae1b8788b90edf7a75373c1458d5659fbce",
                    "executorch/third-party"),
    "flatcc": ("flatcc-896db547.tar.gz",
               "e26d97d65a8b6aadc3283b27627101bca384808d0c95e88ab51ea7e47b746497",
               "executorch/third-party"),
}  # fmt: skip
QEMU_FLASH = (0x00000000, 4 << 20)  # mps2-an500: ZBT SSRAM1, where the firmware "flash" goes
QEMU_RAM = (0x20000000, 4 << 20)  # ZBT SSRAM2&3: every profile's banks are placed in it
# The stack the linker script reserves. Every program run here (benchmarks/firmware/results.md)
# paints a high-water mark of at most 1,864 B; 8 KiB leaves four times that. The runner
# reports the mark, so a program that came near it would show (qemu_server.py's bridge
# firmware, with the protocol's buffers on its stack, keeps its own 32 KiB).
STACK_BYTES = 8 * 1024
JOBS = int(os.environ.get("EA_MCU_JOBS", "2"))


class BuildError(RuntimeError):
    """A stage failed; the message says which and where its log is."""


def shared_dir() -> Path:
    return Path(os.environ.get("EDGEADAPT_SHARED", REPO.parent / "shared"))


def build_dir() -> Path:
    return Path(os.environ.get("EA_MCU_BUILD", REPO / "build" / "mcu"))


def missing_tools() -> list[str]:
    """The tools a build and a run need that this machine lacks (empty: all there)."""
    tools = ["arm-none-eabi-gcc", "arm-none-eabi-g++", "arm-none-eabi-size", "cmake", "ninja",
             "qemu-system-arm", "c++"]  # fmt: skip
    missing = [t for t in tools if shutil.which(t) is None]
    if "arm-none-eabi-g++" not in missing and not _arm_cxx_headers():
        missing.append("the C++ headers of arm-none-eabi-g++ (libstdc++-arm-none-eabi-newlib)")
    missing += [f"{shared_dir() / 'deps' / tar}" for tar, _, _ in DEPS.values()
                if not (shared_dir() / "deps" / tar).exists()]  # fmt: skip
    return missing


@functools.cache
def _arm_cxx_headers() -> bool:
    """Whether the cross compiler finds the C++ standard headers: Debian ships them apart from
    gcc-arm-none-eabi, and without them the runtime's first source fails on <cmath>."""
    probe = "#include <cmath>\n#include <cassert>\n"
    done = subprocess.run(["arm-none-eabi-g++", "-mcpu=cortex-m7", "-mthumb", "-fsyntax-only",
                           "-x", "c++", "-"], input=probe, capture_output=True, text=True)  # fmt: skip
    return done.returncode == 0


def _run(cmd: list[str], log: Path, cwd: Path | None = None, env: dict | None = None) -> None:
    with open(log, "a") as out:
        out.write(f"\n$ {' '.join(map(str, cmd))}\n")
        out.flush()
        rc = subprocess.call(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=cwd, env=env)
    if rc:
        tail = log.read_text(errors="replace")[-3000:]
        raise BuildError(f"{cmd[0]} failed (exit {rc}); log {log}:\n{tail}")


# -- 1, 2: sources and host flatc ----------------------------------------------------------


def unpack(build: Path) -> Path:
    """The ExecuTorch source tree under build/src, with its two submodules and stubs for the
    third-party folders its CMake adds unconditionally (json, gflags: unused here)."""
    src = build / "src"
    stamp = src / ".unpacked"
    want = json.dumps({k: v[1] for k, v in DEPS.items()})
    if stamp.exists() and stamp.read_text() == want:
        return src / "executorch"
    shutil.rmtree(src, ignore_errors=True)
    src.mkdir(parents=True)
    for name, (tar, sha, where) in DEPS.items():
        path = shared_dir() / "deps" / tar
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest != sha:
            raise BuildError(f"{path}: sha256 {digest}, expected {sha} (see ../shared/README.md)")
        dest = src / where
        dest.mkdir(parents=True, exist_ok=True)
        with tarfile.open(path) as t:
            t.extractall(dest, filter="data")
        top = dest / name
        if not top.exists():  # a tarball whose top folder has another name
            raise BuildError(f"{tar} did not unpack into {top}")
    for stub in ("json", "gflags"):
        folder = src / "executorch" / "third-party" / stub
        folder.mkdir(exist_ok=True)
        (folder / "CMakeLists.txt").touch()
    stamp.write_text(want)
    return src / "executorch"


def host_flatc(build: Path, et_root: Path) -> Path:
    """flatc for this machine, built once (-O0: its speed does not matter, its build time does)."""
    out = build / "flatc"
    exe = out / "flatc"
    if exe.exists():
        return exe
    log = build / "flatc.log"
    _run(["cmake", "-S", str(et_root / "third-party" / "flatbuffers"), "-B", str(out), "-G",
          "Ninja", "-DCMAKE_BUILD_TYPE=None", "-DCMAKE_CXX_FLAGS=-O0 -g0",
          "-DFLATBUFFERS_BUILD_FLATC=ON", "-DFLATBUFFERS_BUILD_TESTS=OFF",
          "-DFLATBUFFERS_BUILD_FLATLIB=OFF", "-DFLATBUFFERS_BUILD_FLATHASH=OFF",
          "-DFLATBUFFERS_INSTALL=OFF"], log)  # fmt: skip
    _run(["cmake", "--build", str(out), "--target", "flatc", f"-j{JOBS}"], log)
    return exe


# -- 3: programs, profiles, linker scripts --------------------------------------------------


@dataclass(frozen=True)
class Bank:
    name: str  # linker region name
    bytes: int
    origin: int  # where it sits in QEMU
    real: int | None  # where it sits on the part (None: not stated in the profile)


@dataclass(frozen=True)
class Profile:
    name: str  # file stem: stm32f746, or "an500" (QEMU's memories, no part's limits)
    flash: int
    banks: tuple[Bank, ...]

    @property
    def main(self) -> Bank:
        """The bank for .data, .bss, the stack and the method allocator: the largest."""
        return max(self.banks, key=lambda b: b.bytes)


def _region(name: str) -> str:
    return re.sub(r"\W", "_", name).upper()


def load_profile(name: str) -> Profile:
    """A device profile's flash and RAM banks (devices/<name>.toml), each at its real address
    where that address is QEMU RAM too (the STM32F746's all are) and otherwise placed after
    them in QEMU's SSRAM2&3; "an500" is QEMU's 4 MB with no part's limits, for measuring
    programs that fit no part."""
    if name == "an500":
        return Profile("an500", QEMU_FLASH[1], (Bank("RAM", QEMU_RAM[1], QEMU_RAM[0], None),))
    path = REPO / "devices" / f"{name}.toml"
    if not path.exists():
        found = sorted(p.stem for p in (REPO / "devices").glob("*.toml"))
        raise BuildError(f"no device profile {name!r}; profiles: {found} and 'an500'")
    spec = tomllib.loads(path.read_text())
    if "Cortex-M7" not in spec.get("cpu", {}).get("core", ""):
        raise BuildError(f"{name} is not a Cortex-M7 ({spec.get('cpu', {}).get('core')})")
    raw = []
    for ram in spec["ram"]:
        if ram.get("code_only"):
            continue  # ITCM: kept for code, which this build leaves in flash
        address = ram.get("address")
        if address is None:  # a profile that states it only in its notes
            m = re.search(r"0x[0-9A-Fa-f]{8}", ram.get("notes", ""))
            address = int(m.group(0), 16) if m else None
        raw.append((ram["name"], int(ram["bytes"]), address))
    lo, hi = QEMU_RAM[0], QEMU_RAM[0] + QEMU_RAM[1]
    inside = [(n, b, a) for n, b, a in raw if a is not None and lo <= a and a + b <= hi]
    free = max([a + b for _, b, a in inside] + [lo])
    banks = []
    for n, b, a in raw:
        if (n, b, a) in inside:
            banks.append(Bank(_region(n), b, a, a))
        else:
            free = (free + 0xFFFF) & ~0xFFFF
            banks.append(Bank(_region(n), b, free, a))
            free += b
    if free > hi:
        raise BuildError(f"{name}'s banks do not fit QEMU's RAM")
    return Profile(name, int(spec["flash"]["bytes"]), tuple(banks))


def home_bank(profile: Profile, arena_banks: list[str], sizes: list[int]) -> str:
    """The bank for .data, .bss, the stack and the method allocator's pool: the one with the
    most room left by the program's arenas (a plan may fill the largest bank to its end)."""
    used = dict.fromkeys((b.name for b in profile.banks), 0)
    for bank, size in zip(arena_banks, sizes):
        used[bank] += size
    return max(profile.banks, key=lambda b: b.bytes - used[b.name]).name


def linker_script(profile: Profile, arena_banks: list[str], main: str | None = None) -> str:
    """The part's memory map: flash and each RAM bank with its own size, so a program whose
    arena, tables or stack outgrow a bank fails the link (`region ... overflowed`). `main`
    holds .data, .bss, the stack and the pool (default: the largest bank)."""
    main = main or profile.main.name
    lines = [f"/* {profile.name}: written by firmware_bridge/device/mcu/build.py from "
             f"devices/{profile.name}.toml */", "MEMORY", "{",
             f"  FLASH (rx) : ORIGIN = 0x{QEMU_FLASH[0]:08X}, LENGTH = {profile.flash}"]  # fmt: skip
    for b in profile.banks:
        where = "" if b.real in (None, b.origin) else f" /* on the part: 0x{b.real:08X} */"
        lines.append(f"  {b.name} (rw) : ORIGIN = 0x{b.origin:08X}, LENGTH = {b.bytes}{where}")
    lines += ["}", "ENTRY(Reset_Handler)", "SECTIONS", "{",
              "  .text : { KEEP(*(.vectors)) *(.text*) *(.rodata*) . = ALIGN(4);",
              "    __init_array_start = .; KEEP(*(SORT(.init_array.*))) KEEP(*(.init_array))",
              "    __init_array_end = .; } > FLASH",
              "  .ARM.exidx : { *(.ARM.exidx*) } > FLASH",
              f"  .stack (NOLOAD) : ALIGN(8) {{ __stack_bottom = .; . += {STACK_BYTES};"
              f" __stack_top = .; }} > {main}",
              "  .data : ALIGN(4) { __data_start = .; *(.data*) *(.got*) . = ALIGN(4); __data_end = .; }"
              f" > {main} AT > FLASH",
              "  __data_load = LOADADDR(.data);",
              "  .bss (NOLOAD) : ALIGN(4) { __bss_start = .; *(.bss*) *(COMMON) . = ALIGN(4);"
              f" __bss_end = .; }} > {main}"]  # fmt: skip
    for bank in dict.fromkeys(arena_banks):
        if bank != main:
            lines.append(f"  .arena.{bank} (NOLOAD) : ALIGN(16) {{ *(.arena.{bank}) }} > {bank}")
    lines += [f"  .arena.{main} (NOLOAD) : ALIGN(16) {{ *(.arena.{main}) }} > {main}",
              f"  .pool (NOLOAD) : ALIGN(16) {{ __pool_start = .; }} > {main}",
              f"  __pool_end = ORIGIN({main}) + LENGTH({main});",
              "  ASSERT(__pool_end >= __pool_start + 8192, \"no room left for the method "
              f"allocator's pool in {main}\")",
              "  /DISCARD/ : { *(.ARM.attributes) *(.comment) }", "}", ""]  # fmt: skip
    return "\n".join(lines)


@dataclass(frozen=True)
class Program:
    """A .pte to build firmware for: its name, file, the profiles to link it for, the inputs
    it runs on (float32 samples back to back), and for training programs the SGD steps and
    lr. `report`: the exporter's JSON (its `arena_banks` and `planned_for` place the arenas)."""

    name: str
    pte: Path
    profiles: tuple[str, ...]
    inputs: Path
    steps: int = 0
    lr: float = 1e-4
    report: Path | None = None


def program_ops(pte: Path) -> list[str]:
    """Operator names (`aten::add.out`) of every method of a .pte."""
    from executorch.exir._serialize._program import deserialize_pte_binary

    program = deserialize_pte_binary(pte.read_bytes()).program
    return sorted({f"{o.name}.{o.overload}" if o.overload else o.name
                   for plan in program.execution_plan for o in plan.operators})  # fmt: skip


def planned_sizes(pte: Path) -> list[int]:
    from executorch.exir._serialize._program import deserialize_pte_binary

    plan = deserialize_pte_binary(pte.read_bytes()).program.execution_plan
    forward = next(p for p in plan if p.name == "forward")
    return [int(b) for b in forward.non_const_buffer_sizes[1:]]


def input_shapes(pte: Path) -> list[tuple[int, ...]]:
    """The shapes of `forward`'s inputs, in order."""
    from executorch.exir._serialize._program import deserialize_pte_binary

    plan = deserialize_pte_binary(pte.read_bytes()).program.execution_plan
    forward = next(p for p in plan if p.name == "forward")
    return [tuple(int(s) for s in forward.values[i].val.sizes) for i in forward.inputs]


def input_numel(pte: Path) -> int:
    return math.prod(input_shapes(pte)[0])


def view_draws(prog: Program, folder: Path) -> Path | None:
    """The inputs after the batch of a training program that takes more (EcoTTA's teacher
    step: its views' random numbers, `ViewDraws`), for each of its steps, float32 back to
    back in input order: drawn as the host's `TrainingRunner` draws them (a generator seeded
    0, one draw per step), so the device steps what the host steps. None for other programs."""
    if not prog.steps:  # inference: the self-test gives it the batch alone
        return None
    shapes = input_shapes(prog.pte)
    if len(shapes) < 2:
        return None
    import torch

    from edgeadapt.methods._augment import ViewDraws, draw_views

    if len(shapes) != 1 + len(ViewDraws._fields):
        raise BuildError(f"{prog.name} takes {len(shapes)} inputs; the firmware's self-test "
                         "knows only the batch and a teacher step's view draws")  # fmt: skip
    gen = torch.Generator().manual_seed(0)
    steps = []
    for _ in range(prog.steps):
        draws = draw_views(shapes[0], gen, shapes[1][0])
        if [tuple(d.shape) for d in draws] != shapes[1:]:
            raise BuildError(f"{prog.name}'s inputs {shapes[1:]} are not a teacher step's draws")
        steps.append(torch.cat([d.reshape(-1) for d in draws]))
    data = torch.cat(steps).numpy().astype("<f4").tobytes()
    path = folder / f"{prog.name}_draws_{prog.steps}.bin"
    if not path.exists() or path.read_bytes() != data:
        path.write_bytes(data)
    return path


def _kernel_sources(et_root: Path, yaml_path: Path, cpu_dir: Path, ops: list[str]) -> tuple:
    """(ops the yaml has, the source files defining their kernels)."""
    import yaml

    entries = yaml.safe_load(yaml_path.read_text())
    by_op = {}
    for e in entries:
        op = e.get("op") or e.get("func", "").split("(")[0]  # `func:` entries carry a schema
        if op:
            name = op if "::" in op else f"aten::{op}"
            by_op[name] = [k["kernel_name"].split("::")[-1] for k in e.get("kernels", [])]
    found = [op for op in ops if op in by_op]
    files = set()
    sources = {p: p.read_text(errors="replace") for p in sorted(cpu_dir.glob("op_*.cpp"))}
    for op in found:
        for fn in by_op[op]:
            # a definition (`Tensor& add_out(`, `void split_with_sizes_copy_out(`) or a macro
            # that defines it (`UFUNC(exp_out,`)
            name = re.escape(fn)
            pat = re.compile(rf"((?:[&>]|\bvoid)\s*{name}\s*\(|\(\s*{name}\s*,)")
            hits = [p for p, text in sources.items() if pat.search(text)]
            if not hits:
                raise BuildError(f"no source defines {fn} ({op}) in {cpu_dir}")
            files.update(hits)
    return found, sorted(files | _utils_outside_all_deps(et_root, files))


def _utils_outside_all_deps(et_root: Path, files: set[Path]) -> set[Path]:
    """The portable util sources `files` include that ExecuTorch's kernels_util_all_deps
    library leaves out (1.x: grid_sampler_2d_util.cpp, which the teacher step's view
    augmentation calls, and stack_util.cpp): compiled with the kernels, else unresolved."""
    listed = et_root / "shim_et/xplat/executorch/build/build_variables.bzl"
    block = re.search(r"KERNELS_UTIL_ALL_DEPS_SRCS = \[(.*?)\]", listed.read_text(), re.S)
    in_library = set(re.findall(r'"([^"]+)"', block.group(1))) if block else set()
    util = "kernels/portable/cpu/util"
    extra = set()
    for path in files:
        for name in re.findall(rf"#include <executorch/{util}/(\w+)\.h>", path.read_text()):
            source = et_root / util / f"{name}.cpp"
            if source.exists() and f"{util}/{name}.cpp" not in in_library:
                extra.add(source)
    return extra


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _blob(
    prog: Program, profile: Profile, banks: list[str], sizes: list[int], draws: Path | None = None
) -> str:
    table = "\n".join(f"  .word ea_arena_{i}, {n}" for i, n in enumerate(sizes))
    arenas = "\n".join(f'  .section .arena.{bank},"aw",%nobits\n  .balign 16\nea_arena_{i}:'
                       f" .space {max(n, 16)}" for i, (bank, n) in enumerate(zip(banks, sizes)))  # fmt: skip
    # The digests make this file change when a .pte or its inputs change in place: ninja does
    # not see through .incbin, so without them a rebuilt program kept the firmware's old copy.
    digests = f"pte sha256 {_sha256(prog.pte)}, inputs sha256 {_sha256(prog.inputs)}"
    extra = ""
    if draws is not None:
        digests += f", draws sha256 {_sha256(draws)}"
        extra = f'ea_extra: .incbin "{draws.resolve()}"\n'
    else:
        extra = "ea_extra:\n"
    return f"""/* {prog.name} for {profile.name}: written by build.py; {digests} */
  .section .rodata.ea_pte,"a"
  .balign 64
  .global ea_pte, ea_pte_end
ea_pte: .incbin "{prog.pte.resolve()}"
ea_pte_end:
  .section .rodata.ea_inputs,"a"
  .balign 16
  .global ea_inputs, ea_inputs_end
ea_inputs: .incbin "{prog.inputs.resolve()}"
ea_inputs_end:
  .section .rodata.ea_extra,"a"
  .balign 16
  .global ea_extra, ea_extra_end
{extra}ea_extra_end:
  .section .rodata.ea_meta,"a"
  .balign 8
  .global ea_lr, ea_steps, ea_input_numel, ea_arena_count, ea_arena_table, ea_name
ea_lr: .double {prog.lr!r}
ea_steps: .word {prog.steps}
ea_input_numel: .word {input_numel(prog.pte)}
ea_arena_count: .word {len(sizes)}
ea_arena_table:
{table}
ea_name: .asciz "{prog.name}"
{arenas}
"""


def _planned_banks(prog: Program, profile: Profile) -> list[str]:
    """The exporter's `arena_banks` when it planned for this profile, else none (a plan for
    another part would not match this one's banks)."""
    if prog.report and profile.name != "an500":
        report = json.loads(prog.report.read_text())
        if report.get("planned_for") == profile.name:
            return list(report.get("arena_banks") or ())
    return []


def merged_banks(profile: Profile, planned: list[str]) -> Profile:
    """`profile` with each merged bank of the exporter's plan ("DTCM+SRAM1+SRAM2": banks that
    follow each other in the address map, export/memory_plan.py) as one region."""
    banks = list(profile.banks)
    for name in dict.fromkeys(b for b in planned if "+" in b):
        members = {_region(m) for m in name.split("+")}
        run = sorted((b for b in banks if b.name in members), key=lambda b: b.origin)
        if len(run) != len(members):
            raise BuildError(f"the plan's bank {name!r} is not made of {profile.name}'s banks")
        for a, b in itertools.pairwise(run):
            if a.origin + a.bytes != b.origin:
                raise BuildError(f"{a.name} and {b.name} do not follow each other: {name!r}")
        merged = Bank(_region(name), sum(b.bytes for b in run), run[0].origin, run[0].real)
        banks = [merged if b is run[0] else b for b in banks if b not in run[1:]]
    return Profile(profile.name, profile.flash, tuple(banks))


def _arena_banks(planned: list[str], profile: Profile, n: int) -> list[str]:
    """Each arena's bank: the exporter's plan, else the main bank. A bank this build does
    not have (the Discovery board's external SDRAM, which the part alone lacks) falls back
    to the main bank, where it overflows."""
    have = {b.name for b in profile.banks}
    if not planned:
        return [profile.main.name] * n
    return [_region(b) if _region(b) in have else profile.main.name for b in planned][:n]


# -- 4: configure and build -----------------------------------------------------------------


@dataclass
class Built:
    program: str
    profile: str
    elf: Path | None  # None: the link failed (the program does not fit)
    overflow: dict[str, int] = field(default_factory=dict)  # region -> bytes over
    sections: dict[str, int] = field(default_factory=dict)  # arm-none-eabi-size -A
    size: dict[str, int] = field(default_factory=dict)  # text/data/bss (Berkeley)
    pte_bytes: int = 0
    input_bytes: int = 0


def build(
    programs: list[Program], *, build: Path | None = None, fw: str = "fw", log=print
) -> list[Built]:
    """Build every program's firmware for each of its profiles; returns one Built per pair.
    `fw`: the CMake build folder's name under `build` (sources and flatc are shared)."""
    build = build or build_dir()
    build.mkdir(parents=True, exist_ok=True)
    missing = missing_tools()
    if missing:
        raise BuildError(f"missing: {', '.join(missing)}")
    t0 = time.perf_counter()
    et_root = unpack(build)
    flatc = host_flatc(build, et_root)
    log(f"sources and host flatc ready ({time.perf_counter() - t0:.0f} s)")

    gen = build / f"gen-{fw}"
    gen.mkdir(exist_ok=True)
    all_ops: set[str] = set()
    per_prog = {}
    for prog in programs:
        ops = program_ops(prog.pte)
        all_ops.update(ops)
        per_prog[prog.name] = ops
    portable_yaml = et_root / "kernels/portable/functions.yaml"
    quant_yaml = et_root / "kernels/quantized/quantized.yaml"
    p_ops, p_srcs = _kernel_sources(et_root, portable_yaml, et_root / "kernels/portable/cpu",
                                    sorted(all_ops))  # fmt: skip
    q_ops, q_srcs = _kernel_sources(et_root, quant_yaml, et_root / "kernels/quantized/cpu",
                                    sorted(all_ops))  # fmt: skip
    # the shared loops of the unary/binary ops (op_exp.cpp is one macro over them)
    p_srcs += sorted((et_root / "kernels/portable/cpu/pattern").glob("*.cpp"))
    cmake = ["set(EA_PORTABLE_SRCS", *map(str, p_srcs), ")",
             "set(EA_QUANTIZED_SRCS", *map(str, q_srcs), ")",
             # the registry's size: each program's kernels + prim ops, with room to spare
             f"set(EA_MAX_KERNELS {len(p_ops) + len(q_ops) + 96})", "macro(ea_programs)"]  # fmt: skip
    jobs = []
    draws_of: dict[str, Path | None] = {}
    for prog in programs:
        sizes = planned_sizes(prog.pte)
        draws = draws_of[prog.name] = view_draws(prog, gen)
        builds = []
        for name in prog.profiles:
            part = load_profile(name)
            planned = _planned_banks(prog, part)
            profile = merged_banks(part, planned)
            banks = _arena_banks(planned, profile, len(sizes))
            home = home_bank(profile, banks, sizes)
            # The script's stem names the firmware; one script per (profile, program) because
            # the arenas' banks depend on the program's plan, unless all sit in the main bank.
            alone = profile == part and set(banks) <= {home} and home == profile.main.name
            ld = gen / (f"{name}.ld" if alone else f"{name}__{prog.name}.ld")
            _write_if_changed(ld, linker_script(profile, banks, home))
            blob = gen / f"{prog.name}__{name}.S"
            _write_if_changed(blob, _blob(prog, profile, banks, sizes, draws))
            builds.append((name, ld, blob))
            jobs.append((prog, name))
        ops = [o for o in per_prog[prog.name] if o in p_ops]
        qops = [o for o in per_prog[prog.name] if o in q_ops]
        cmake.append(f"  ea_firmware(NAME {prog.name} OPS {';'.join(ops) or 'aten::add.out'}"
                     + (f" QOPS {';'.join(qops)}" if qops else "")
                     + " BUILDS " + " ".join(f"{n} {ld} {blob}" for n, ld, blob in builds) + ")")  # fmt: skip
    cmake.append("endmacro()")
    config = gen / "programs.cmake"
    _write_if_changed(config, "\n".join(cmake) + "\n")

    out = build / fw
    log_path = build / f"{fw}.log"
    log_path.write_text("")
    if (
        not (out / "build.ninja").exists()
        or config.stat().st_mtime > (out / "build.ninja").stat().st_mtime
    ):
        _run(["cmake", "-S", str(HERE), "-B", str(out), "-G", "Ninja",
              "-DCMAKE_BUILD_TYPE=MinSizeRel",
              f"-DCMAKE_TOOLCHAIN_FILE={HERE / 'toolchain-cortex-m7.cmake'}",
              f"-DEXECUTORCH_ROOT={et_root}", f"-DEA_CONFIG={config}",
              f"-DFLATC_EXECUTABLE={flatc}", f"-DPYTHON_EXECUTABLE={sys.executable}"], log_path)  # fmt: skip
    results = []
    for prog, name in jobs:
        target = f"{prog.name}_{name}"
        elf = out / target  # CMake leaves bare-metal executables without a suffix
        done = subprocess.run(["cmake", "--build", str(out), "--target", target, f"-j{JOBS}"],
                              capture_output=True, text=True)  # fmt: skip
        with open(log_path, "a") as f:
            f.write(done.stdout + done.stderr)
        text = done.stdout + done.stderr
        overflow = {m.group(1): int(m.group(2))
                    for m in re.finditer(r"region `(\w+)' overflowed by (\d+) bytes", text)}  # fmt: skip
        draws = draws_of[prog.name]  # linked beside the inputs
        linked = prog.inputs.stat().st_size + (draws.stat().st_size if draws else 0)
        b = Built(prog.name, name, elf if done.returncode == 0 else None, overflow,
                  pte_bytes=prog.pte.stat().st_size, input_bytes=linked)  # fmt: skip
        if done.returncode and not overflow:
            raise BuildError(f"building {target} failed; log {log_path}:\n{text[-3000:]}")
        if b.elf:
            b.sections, b.size = _sizes(b.elf)
        log(f"{target}: " + ("built" if b.elf else f"does not fit: {overflow}"))
        results.append(b)
    log(f"firmware built ({time.perf_counter() - t0:.0f} s in all)")
    return results


def _write_if_changed(path: Path, text: str) -> None:
    if not path.exists() or path.read_text() != text:
        path.write_text(text)


def _sizes(elf: Path) -> tuple[dict[str, int], dict[str, int]]:
    a = subprocess.run(["arm-none-eabi-size", "-A", str(elf)], capture_output=True, text=True)
    sections = {}
    for line in a.stdout.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0].startswith(".") and parts[1].isdigit():
            sections[parts[0]] = int(parts[1])
    b = subprocess.run(["arm-none-eabi-size", str(elf)], capture_output=True, text=True)
    row = b.stdout.splitlines()[-1].split()
    return sections, {"text": int(row[0]), "data": int(row[1]), "bss": int(row[2])}


# -- 5: run in QEMU -------------------------------------------------------------------------


@dataclass
class Run:
    ok: bool
    figures: dict[str, int]
    planned: list[int]
    outputs: list[list[float]]  # inference: per input; training: logits per step
    steps: list[dict]
    params: list[list[float]]
    text: str
    seconds: float
    error: str = ""  # "load 4 runtime_error 1": the stage, runner.h's Status, ExecuTorch's Error


def _floats(words: list[str]) -> list[float]:
    return [struct.unpack("<f", struct.pack("<I", int(w, 16)))[0] for w in words]


def run_firmware(elf: Path, timeout: float = 900) -> Run:
    """Run a firmware in QEMU and parse what it prints."""
    t0 = time.perf_counter()
    try:
        done = subprocess.run(
            ["qemu-system-arm", "-M", "mps2-an500", "-nographic", "-monitor", "none",
             "-serial", "none", "-semihosting-config", "enable=on,target=native",
             "-kernel", str(elf)],
            capture_output=True, text=True, timeout=timeout)  # fmt: skip
        text = done.stdout + done.stderr
        Path(f"{elf}.out").write_text(text)  # what it printed, for a look afterwards
    except subprocess.TimeoutExpired as exc:
        text = (exc.stdout or b"").decode(errors="replace") + "\n[timed out]"
    figures, planned, outputs, steps, params, error = {}, [], [], [], [], ""
    for line in text.splitlines():
        w = line.split()
        if len(w) < 2 or w[0] != "EA":
            continue
        key = w[1]
        if key == "error":
            error = " ".join(w[2:])
        elif key == "planned":
            planned.append(int(w[3]))
        elif key in ("out", "logits"):
            outputs.append(_floats(w[4:]))
        elif key == "param":
            params.append(_floats(w[4:]))
        elif key == "step":
            steps.append({"step": int(w[2]), "kept": int(w[4]), "loss": _floats(w[6:7])[0]})
        elif len(w) == 3 and w[2].lstrip("-").isdigit():
            figures[key] = int(w[2])
    ok = "EA done" in text
    return Run(ok, figures, planned, outputs, steps, params, text, time.perf_counter() - t0, error)


# -- inputs ---------------------------------------------------------------------------------


def cifar_inputs(path: Path, count: int, seed: int = 0) -> Path:
    """`count` CIFAR-10 (JPEG) test images, shuffled once with `seed` (the i.i.d. protocol of
    ../shared/README.md), normalised as the models expect, as float32 NCHW back to back."""
    import numpy as np
    from PIL import Image

    if path.exists():
        return path
    archive = shared_dir() / "data" / "cifar10" / "cifar10-jpeg.tar.gz"
    with tarfile.open(archive) as t:
        names = sorted(m.name for m in t.getmembers() if "/test/" in f"/{m.name}" and
                       m.name.endswith(".jpg"))  # fmt: skip
        order = np.random.default_rng(seed).permutation(len(names))[:count]
        mean = np.array([0.485, 0.456, 0.406], dtype=np.float32).reshape(3, 1, 1)
        std = np.array([0.229, 0.224, 0.225], dtype=np.float32).reshape(3, 1, 1)
        xs = []
        for i in order:
            img = Image.open(t.extractfile(names[i])).convert("RGB")
            x = np.asarray(img, dtype=np.float32).transpose(2, 0, 1) / 255.0
            xs.append(((x - mean) / std).astype("<f4"))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(np.stack(xs).tobytes())
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pte", action="append", default=[], metavar="NAME=PATH",
                   help="a program to build (repeat)")  # fmt: skip
    p.add_argument(
        "--report",
        action="append",
        default=[],
        metavar="NAME=JSON",
        help="the exporter's --json for NAME (places its arenas in its banks)",
    )
    p.add_argument("--profiles", default="an500", help="comma-separated: an500, stm32f746, ...")
    p.add_argument("--inputs", type=int, default=4, help="CIFAR-10 test images linked in")
    p.add_argument("--steps", type=int, default=20, help="SGD steps of a training program")
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--run", action="store_true", help="run each firmware that links in QEMU")
    args = p.parse_args(argv)
    if not args.pte:
        p.error("give at least one --pte NAME=PATH")
    reports = dict(r.split("=", 1) for r in args.report)
    inputs = cifar_inputs(build_dir() / "inputs" / f"cifar_{args.inputs}.bin", args.inputs)
    progs = []
    for spec in args.pte:
        name, path = spec.split("=", 1)
        report = Path(reports[name]) if name in reports else None
        training = "__et_training" in Path(path).read_bytes().decode("latin-1")
        progs.append(Program(name, Path(path), tuple(args.profiles.split(",")), inputs,
                             args.steps if training else 0, args.lr, report))  # fmt: skip
    try:
        built = build(progs)
    except BuildError as exc:
        print(f"build.py: {exc}", file=sys.stderr)
        return 1
    for b in built:
        print(json.dumps({"program": b.program, "profile": b.profile, "overflow": b.overflow,
                          "size": b.size}))  # fmt: skip
        if args.run and b.elf:
            r = run_firmware(b.elf)
            print(f"  ran in {r.seconds:.1f} s, ok={r.ok}: {r.figures}, planned {r.planned}")
            if not r.ok:
                print(r.text[-2000:])
    return 0


if __name__ == "__main__":
    sys.exit(main())
