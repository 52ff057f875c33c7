"""Build the API reference (HTML, from the docstrings) into build/api/ with pdoc.

    python docs/build_api_reference.py [--out DIR]

CI runs it: a docstring pdoc cannot render (a warning) fails the build.
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

# The public modules: what `import edgeadapt` users reach, and the namespaces the README names.
MODULES = [
    "edgeadapt",
    "edgeadapt.api",
    "edgeadapt.config",
    "edgeadapt.errors",
    "edgeadapt.memory",
    "edgeadapt.models",
    "edgeadapt.data",
    "edgeadapt.delta",
    "edgeadapt.video",
    "edgeadapt.export",
    "edgeadapt.firmware_bridge",
]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "build/api")
    args = ap.parse_args()
    import pdoc  # a dev dependency

    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # pdoc reports what it cannot render so
        warnings.filterwarnings("ignore", module=r"(torch|executorch|torchao|onnx)(\.|$)")
        pdoc.pdoc(*MODULES, output_directory=args.out)
    pages = sorted(args.out.rglob("*.html"))
    print(f"API reference: {len(pages)} pages in {args.out} (open {args.out / 'index.html'})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
