"""Build the C99 reference codec with strict warnings and run it on the shared vectors.

Also cross-checks it against the Python decoder on a few thousand mutated frames: for every
one, both must reach the same verdict (the same fields, or the same rejection reason).
"""

from __future__ import annotations

import random
import shutil
import subprocess
from pathlib import Path

import pytest

C_DIR = Path(__file__).resolve().parents[2] / "firmware_bridge" / "c"
VECTORS = C_DIR / "test_vectors.txt"

CFLAGS = ["-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-O1"]
SANITIZE = ["-fsanitize=address,undefined", "-fno-sanitize-recover=all"]


def _compiler() -> str | None:
    return next((c for c in ("cc", "gcc", "clang") if shutil.which(c)), None)


@pytest.fixture(scope="module")
def driver(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cc = _compiler()
    if cc is None:
        pytest.skip("no C compiler (cc, gcc or clang) on PATH; the C codec is not checked")
    out = tmp_path_factory.mktemp("c") / "test_frame"
    sources = [str(C_DIR / "edgeadapt_frame.c"), str(C_DIR / "test_frame.c")]
    # With sanitizers when the toolchain has them (catches out-of-bounds the fuzz provokes).
    for extra in (SANITIZE, []):
        build = subprocess.run(
            [cc, *CFLAGS, *extra, *sources, "-o", str(out)], capture_output=True, text=True
        )
        if build.returncode == 0 and (not extra or _runs(out)):
            return out
    pytest.fail(f"the C codec does not compile cleanly:\n{build.stderr}")


def _runs(exe: Path) -> bool:
    """Some sandboxes build sanitizer binaries that cannot start (no ptrace, no shadow map)."""
    return subprocess.run([str(exe)], capture_output=True).returncode == 2


def _run(driver: Path, vectors: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(driver), str(vectors), *extra], capture_output=True, text=True, timeout=60
    )


def test_c_codec_passes_shared_vectors(driver: Path) -> None:
    result = _run(driver, VECTORS)
    assert result.returncode == 0, result.stdout + result.stderr
    assert ", 0 failed" in result.stdout


def test_c_driver_notices_a_wrong_vector(driver: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.txt"
    bad.write_text(VECTORS.read_text().replace(" magic\n", " crc\n", 1))
    assert _run(driver, bad).returncode == 1


def test_c_fuzz_loop(driver: Path) -> None:
    result = _run(driver, VECTORS, "--fuzz", "30000", "12345")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "fuzz: 30000 iterations" in result.stdout


def test_c_and_python_agree_on_mutated_frames(driver: Path, tmp_path: Path, gen_vectors) -> None:
    gen = gen_vectors
    rng = random.Random(99)
    seeds = [line.split(" ")[2] for line in VECTORS.read_text().splitlines()
             if line.startswith("valid ")]  # fmt: skip
    lines = []
    for _ in range(3000):
        data = bytearray(bytes.fromhex(rng.choice(seeds)))
        for _ in range(rng.randrange(1, 4)):
            pos = rng.randrange(len(data))
            op = rng.randrange(4)
            if op == 0:
                data[pos] ^= 1 << rng.randrange(8)
            elif op == 1:
                data[pos] = rng.randrange(256)
            elif op == 2:
                del data[pos:]
            else:
                data.insert(pos, rng.randrange(256))
            if not data:
                data.append(rng.randrange(256))
        lines.append(gen.frame_line("decodes", 4096, bytes(data)))
    mutated = tmp_path / "mutated.txt"
    mutated.write_text("\n".join(lines) + "\n")
    result = _run(driver, mutated)
    assert result.returncode == 0, result.stderr[-2000:]
