"""Re-draw the table and plots of committed `edgeadapt bench --json` results.

python benchmarks/cifar10c/plot.py benchmarks/cifar10c/record_continual.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from edgeadapt.bench.report import markdown_table, plot_results, results_from_json


def main(path: str) -> None:
    src = Path(path)
    results = results_from_json(json.loads(src.read_text()))
    print(markdown_table(results))
    out = plot_results(
        results,
        src.with_suffix(".png"),
        "ResNet-20, CIFAR-10-C (JPEG) severity 5, continual, batch 64",
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main(sys.argv[1])
