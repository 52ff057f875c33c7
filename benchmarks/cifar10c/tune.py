"""Tune EcoTTA on the four EXTRA corruptions only (speckle_noise, gaussian_blur, spatter,
saturate), never on the 15 of the benchmark. Baselines run on the same stream.

    python benchmarks/cifar10c/tune.py [--device cuda] [--n-images N]

Writes tune.json and tune.md beside this file.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from edgeadapt._paths import shared_dir
from edgeadapt.bench.cifar import run_cifar10c
from edgeadapt.data import EXTRA_CORRUPTIONS
from edgeadapt.models import create_model

HERE = Path(__file__).resolve().parent
# (label, ecotta overrides); every other setting is the library default.
VARIANTS = [
    ("default", {}),
    ("frozen_bn=batch", {"frozen_bn": "batch"}),
    ("frozen_bn=batch lr=3e-3", {"frozen_bn": "batch", "lr": 3e-3}),
    ("frozen_bn=batch lr=3e-4", {"frozen_bn": "batch", "lr": 3e-4}),
    ("frozen_bn=batch λ=0.1", {"frozen_bn": "batch", "reg_weight": 0.1}),
    ("frozen_bn=batch λ=2", {"frozen_bn": "batch", "reg_weight": 2.0}),
    ("frozen_bn=batch K=3", {"frozen_bn": "batch", "num_parts": 3}),
]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--n-images", type=int, default=None)
    ap.add_argument("--rounds", type=int, default=3, help="repeat the 4 domains to see drift")
    ap.add_argument("--warmup-steps", type=int, default=500)
    args = ap.parse_args()
    model = create_model("resnet20", checkpoint=shared_dir() / "models" / "resnet20_cifar10jpeg.pt")
    common = dict(corruptions=list(EXTRA_CORRUPTIONS), rounds=args.rounds, n_images=args.n_images,
                  warmup_steps=args.warmup_steps, device=args.device, progress=False)  # fmt: skip
    rows = []
    start = time.time()
    for r in run_cifar10c(model, ["source", "norm", "tent", "eata"], **common):
        rows.append({"label": r.method, "overrides": {}, **r.to_dict()})
    for label, ov in VARIANTS:
        (r,) = run_cifar10c(model, ["ecotta"], overrides={"ecotta": ov}, **common)
        rows.append({"label": f"ecotta {label}", "overrides": ov, **r.to_dict()})
    meta = {
        "corruptions": list(EXTRA_CORRUPTIONS),
        "severity": 5,
        "batch": 64,
        "protocol": "continual",
        **vars(args),
    }
    (HERE / "tune.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    lines = [
        f"Tuning on the extra corruptions only ({', '.join(EXTRA_CORRUPTIONS)}), severity 5, continual, "
        f"batch 64, {args.rounds} rounds, device {args.device}. Made by `python benchmarks/cifar10c/tune.py`.",
        "",
        "| setting | mean error (all rounds) | round 1 | last round | adapt MiB |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        by_round = r["mean_error_by_round"]
        lines.append(
            f"| {r['label']} | {r['mean_error']:.2f} | {by_round[0]:.2f} | {by_round[-1]:.2f} | {r['memory']['adaptation'] / 2**20:.1f} |"
        )
    (HERE / "tune.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"{time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
