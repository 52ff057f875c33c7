"""Build-on-first-use loader of the fast delta runtime's C++ kernels (`native/fast_delta.cpp`).

The kernels are plain C functions called through ctypes: no Python or torch headers, so the
build is one g++ call of about a second and does not depend on the torch ABI. The shared
library is cached under `user_cache_dir()/native` (or `$EDGEADAPT_NATIVE_CACHE`), keyed by
the source, the flags, the compiler and the CPU's feature flags (`-march=native` code must not
run on another CPU that shares the cache). Built atomically: concurrent first uses race
harmlessly. Set `$CXX` to pick the compiler.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

from edgeadapt._paths import user_cache_dir
from edgeadapt.errors import EdgeAdaptError

__all__ = ["NativeBuildError", "compiler_found", "load_kernels", "native_available"]

SOURCE = Path(__file__).resolve().parent / "native" / "fast_delta.cpp"
# -ffp-contract=off: the epilogue must round like the PyTorch reference (see the source).
BASE_FLAGS = ("-O3", "-ffp-contract=off", "-shared", "-fPIC", "-std=c++17", "-Wno-psabi")
# `-march=native` unless $EDGEADAPT_NATIVE_MARCH names another target (e.g. "haswell": the
# AVX2 code paths on an AVX-512 machine, to measure what a CPU without AVX-512 gets).
ARCH_FLAGS = (f"-march={os.environ.get('EDGEADAPT_NATIVE_MARCH') or 'native'}",)

_P = ctypes.c_void_p
_I = ctypes.c_int64
_SIGNATURES = {
    "ea_frame_delta_u8": (_I, [_P, _P, _I, _I, _P, _P, _I]),
    # pin, din, np, c, w, ho, wo, k, stride, pad, wt, wpack, o, acc, mask, all, scale, bias,
    # bias_map, border, sck, sc_c, sc_w, sc_stride, sc_front, scq, inv_step, kmax, kmap,
    # pix_out, delta_out, count
    "ea_conv_post": (
        _I,
        [_P, _P, *[_I] * 8, _P, _P, _I, _P, _P, ctypes.c_int32, _P, _P, _P, _I, _P]
        + [_I] * 4
        + [_P, _P, ctypes.c_float, _P, _P, _P, _P],
    ),
    "ea_mark_shortcut": (None, [_P, _I, _I, _I, _I, _I, _P]),
    # pin, din, np, c, w, ho, wo, k, stride, pad, wt, wpack, o, acc, mask
    "ea_conv_acc": (_I, [_P, _P, *[_I] * 8, _P, _P, _I, _P, _P]),
    # pin, np, src, h, w, c, k, stride, pad, ho, wo, mask, all, kmap, pix_out, delta_out, count
    "ea_maxpool_delta": (_I, [_P, _I, _P, *[_I] * 8, _P, ctypes.c_int32, _P, _P, _P, _P]),
}


class NativeBuildError(EdgeAdaptError, RuntimeError):
    """The C++ kernels could not be compiled or loaded; the message has the compiler output.

    Install a C++17 compiler (g++ or clang++; set `$CXX` to choose one), or use the exact
    pure-PyTorch `DeltaRuntime` (`to_delta_runtime`) instead.
    """


def _compiler() -> str:
    cxx = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")
    if not cxx:
        raise NativeBuildError(
            "no C++ compiler found (looked for $CXX, g++, c++); install g++ to build the fast "
            "delta runtime's kernels"
        )
    return cxx


def _cpu_flags() -> str:
    try:  # Linux; elsewhere the machine name has to do
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    return platform.processor()


def _cache_dir() -> Path:
    env = os.environ.get("EDGEADAPT_NATIVE_CACHE")
    return Path(env) if env else user_cache_dir() / "native"


def _compile(
    cxx: str, flags: tuple[str, ...], source: Path, out: Path
) -> subprocess.CompletedProcess:
    cmd = [cxx, *flags, str(source), "-o", str(out)]
    return subprocess.run(cmd, capture_output=True, text=True, check=False)


@functools.lru_cache(maxsize=4)
def load_kernels(source_file: Path = SOURCE) -> ctypes.CDLL:
    """The compiled kernels (built into the cache on first use); raises `NativeBuildError`.

    `source_file`: another version of `native/fast_delta.cpp` with the same ABI, for kernel
    work (`benchmarks/delta/ab_kernels.py` times two against each other)."""
    cxx = _compiler()
    try:
        version = subprocess.run([cxx, "--version"], capture_output=True, text=True).stdout
    except OSError as e:
        raise NativeBuildError(f"cannot run the C++ compiler {cxx!r}: {e}") from e
    source = source_file.read_bytes()
    key = hashlib.sha256(
        b"\0".join(
            [
                source,
                " ".join(BASE_FLAGS + ARCH_FLAGS).encode(),
                version.encode(),
                _cpu_flags().encode(),
                platform.machine().encode(),
            ]
        )
    ).hexdigest()[:16]
    target = _cache_dir() / f"fast_delta_{key}.so"
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
        os.close(fd)
        try:
            done = _compile(cxx, BASE_FLAGS + ARCH_FLAGS, source_file, Path(tmp))
            if done.returncode != 0:  # a compiler without -march=native: portable code
                done = _compile(cxx, BASE_FLAGS, source_file, Path(tmp))
            if done.returncode != 0:
                raise NativeBuildError(
                    f"building {source_file.name} with {cxx} failed:\n{done.stderr[-4000:]}"
                )
            os.replace(tmp, target)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    try:
        lib = ctypes.CDLL(str(target))
    except OSError as e:
        raise NativeBuildError(f"cannot load {target}: {e}; delete it to rebuild") from e
    for name, (restype, argtypes) in _SIGNATURES.items():
        fn = getattr(lib, name)
        fn.restype, fn.argtypes = restype, argtypes
    return lib


def compiler_found() -> bool:
    """Whether a C++ compiler is on this machine (the kernels can then be built: a failed
    build is a bug, not a missing tool, and `load_kernels` raises it)."""
    try:
        _compiler()
    except NativeBuildError:
        return False
    return True


def native_available() -> bool:
    """Whether the kernels build and load on this machine (builds them if needed)."""
    try:
        load_kernels()
    except NativeBuildError:
        return False
    return True
