"""Run inside an environment that has only the core install (`pip install edgeadapt`): it
adapts, and every feature of an extra fails with a typed error naming the extra.

    python .ci/core_install_check.py          # exits non-zero on the first failure

Prints the environment's package count and site-packages size, the figures the README gives.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

import torch

import edgeadapt
from edgeadapt.errors import MissingExtraError

EXTRA_FEATURES = {
    # CLI arguments -> the extra its message must name
    ("export", "--model", "tiny_resnet", "--random-weights"): "export",
    ("export", "--model", "tiny_resnet", "--random-weights", "--format", "onnx"): "export",
    ("device", "list"): "bridge",
    ("demo",): "bench",
    ("train-source", "--model", "tiny_resnet"): "bench",
}


def site_packages_size() -> tuple[int, int]:
    """(distributions installed, bytes under site-packages)."""
    root = Path(sysconfig.get_paths()["purelib"])
    size = sum(f.stat().st_size for f in root.rglob("*") if f.is_file() and not f.is_symlink())
    return len(list(importlib.metadata.distributions())), size


def check_adapts() -> None:
    """Every method wraps a tiny model and adapts one frame at a time; EcoTTA's meta weights move
    and its predictions differ across frames."""
    torch.manual_seed(0)
    frames = torch.randn(8, 1, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    for method in edgeadapt.list_methods():
        model = edgeadapt.create_model("tiny_resnet")
        config = edgeadapt.config_for(method)
        adapter = edgeadapt.wrap(model, config, example_input=frames[0].repeat(2, 1, 1, 1))
        before = {k: v.clone() for k, v in adapter.state_dict().items()}
        logits = torch.cat([adapter(f) for f in frames])
        assert torch.isfinite(logits).all(), method
        assert logits.std(0).max() > 0, f"{method}: constant predictions"
        if method == "ecotta":
            moved = [k for k, v in adapter.state_dict().items() if not torch.equal(v, before[k])]
            assert moved, "ecotta: no weight moved in 8 steps"
    print(f"adapts: {', '.join(edgeadapt.list_methods())} at batch 1")


def check_missing_extras() -> None:
    """Python API and CLI: a typed error that names the extra, exit 2, before any slow work."""
    from edgeadapt.export import to_executorch

    model = edgeadapt.create_model("tiny_resnet")
    with tempfile.TemporaryDirectory() as tmp:
        try:
            to_executorch(model, torch.randn(1, 3, 16, 16), Path(tmp) / "m.pte")
        except MissingExtraError as exc:
            assert "edgeadapt[export]" in str(exc), exc
        else:
            raise AssertionError("to_executorch ran without executorch")
        for argv, extra in EXTRA_FEATURES.items():
            cmd = [sys.executable, "-m", "edgeadapt.cli", *argv]
            if argv[0] == "export":
                cmd += ["--out", tmp]
            if argv[0] == "train-source":
                cmd += ["--out", str(Path(tmp) / "source.pt")]
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
            lines = done.stderr.strip().splitlines()
            assert done.returncode == 2, (argv, done.returncode, done.stderr[-2000:])
            assert len(lines) == 1 and f"edgeadapt[{extra}]" in lines[0], (argv, lines)
            print(f"edgeadapt {' '.join(argv)}: exit 2, {lines[0]}")


def main() -> int:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    present = [m for m in ("executorch", "onnx", "serial", "sklearn", "scipy", "matplotlib", "av")
               if importlib.util.find_spec(m) is not None]  # fmt: skip
    assert not present, f"not a core-only environment: {present} are installed"
    check_adapts()
    check_missing_extras()
    count, size = site_packages_size()
    print(f"core install: {count} distributions, {size / 2**20:.0f} MiB in site-packages")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
